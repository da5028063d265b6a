"""Aff-Wild (kollias2019); importing registers the builder."""

from tfds_builders.aff_wild.aff_wild import AffWild
from tfds_builders.aff_wild.aff_wild import AffWildConfig
