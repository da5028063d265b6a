"""RECOLA (AVEC 2016 release); importing registers the builder."""

from tfds_builders.recola.recola import Recola
from tfds_builders.recola.recola import RecolaConfig
