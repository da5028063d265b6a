"""AFEW (EmotiW); importing registers the builder."""

from tfds_builders.afew.afew import Afew
from tfds_builders.afew.afew import AfewConfig
