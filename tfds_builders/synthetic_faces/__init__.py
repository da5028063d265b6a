"""The embedded synthetic face-video dataset; importing registers it."""

from tfds_builders.synthetic_faces.synthetic_faces import SyntheticFaces
from tfds_builders.synthetic_faces.synthetic_faces import SyntheticFacesConfig
