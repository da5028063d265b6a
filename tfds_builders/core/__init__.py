"""What every builder shares: decoding, face crops, records, the base builder."""

from tfds_builders.core.builder import broken_entry
from tfds_builders.core.builder import check_label_count
from tfds_builders.core.builder import check_prepared
from tfds_builders.core.builder import default_to_array_record
from tfds_builders.core.builder import encode_jpeg
from tfds_builders.core.builder import frame_features
from tfds_builders.core.builder import FrameLabels
from tfds_builders.core.builder import leftover_builds
from tfds_builders.core.builder import format_broken
from tfds_builders.core.builder import record_key
from tfds_builders.core.builder import skipped_videos
from tfds_builders.core.builder import VideoFrameBuilder
from tfds_builders.core.builder import VideoFrameConfig
from tfds_builders.core.builder import VideoSpec
from tfds_builders.core.face import crop_face
from tfds_builders.core.face import FaceTracker
from tfds_builders.core.face import make_detector
from tfds_builders.core.video import find_videos
from tfds_builders.core.video import check_complete
from tfds_builders.core.video import iter_frames
from tfds_builders.core.video import iter_images
from tfds_builders.core.video import probe
from tfds_builders.core.video import read_image
from tfds_builders.core.video import VideoInfo
from tfds_builders.core.video import write_video
