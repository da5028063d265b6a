"""AffectNet (mollahosseini2017); importing registers the builder."""

from tfds_builders.affectnet.affectnet import AffectNet
from tfds_builders.affectnet.affectnet import AffectNetConfig
