"""RealEyes-format emotion videos; importing registers the builder."""

from tfds_builders.realeyes.realeyes import RealEyes
from tfds_builders.realeyes.realeyes import RealEyesConfig
