"""AFEW-VA (kollias2019 protocol); importing registers the builder."""

from tfds_builders.afew_va.afew_va import AfewVa
from tfds_builders.afew_va.afew_va import AfewVaConfig
