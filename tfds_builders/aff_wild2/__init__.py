"""Aff-Wild2 (ABAW); importing registers the builder."""

from tfds_builders.aff_wild2.aff_wild2 import AffWild2
from tfds_builders.aff_wild2.aff_wild2 import AffWild2Config
