"""Frame lists (affect4k_thesis); importing registers the builder."""

from tfds_builders.frame_list.frame_list import FrameList
from tfds_builders.frame_list.frame_list import FrameListConfig
