"""Tests of the shared builder core: decoding, face crops, records."""

import numpy as np
import pytest

from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import face


def test_video_round_trip_with_timestamps(tmp_path):
  path = str(tmp_path / 'v.mp4')
  images = [np.full((32, 48, 3), 20 * i, np.uint8) for i in range(6)]
  assert core.write_video(path, images, fps=25) == 6
  frames = list(core.iter_frames(path))
  assert [f.index for f in frames] == list(range(6))
  np.testing.assert_allclose([f.time for f in frames],
                             np.arange(6) / 25, atol=1e-6)
  assert frames[3].image.shape == (32, 48, 3)
  assert abs(int(frames[3].image.mean()) - 60) <= 3  # Lossy, but close.


def test_unreadable_video_names_the_file(tmp_path):
  bad = tmp_path / 'bad.mp4'
  bad.write_bytes(b'not a video at all' * 10)
  with pytest.raises(AffectJaxError, match='bad.mp4'):
    list(core.iter_frames(str(bad)))
  with pytest.raises(AffectJaxError, match='nope.mp4 does not exist'):
    list(core.iter_frames(str(tmp_path / 'nope.mp4')))


def test_crop_maps_box_and_points_to_crop_coordinates():
  image = np.zeros((100, 200, 3), np.uint8)
  image[40:60, 90:110] = 255  # A 20x20 "face".
  crop = core.crop_face(image, np.array([40, 90, 60, 110]), size=30,
                        margin=0.25)
  # Square of 20 * 1.5 = 30 pixels around the box centre (100, 50).
  assert crop.side == 30 and crop.origin == (85.0, 35.0)
  np.testing.assert_allclose(crop.box_to_crop(np.array([40, 90, 60, 110])),
                             [1 / 6, 1 / 6, 5 / 6, 5 / 6], atol=1e-6)
  np.testing.assert_allclose(crop.to_crop([[100, 50]]), [[0.5, 0.5]])
  assert crop.image[15, 15].min() == 255 and crop.image[1, 1].max() == 0


def test_crop_pads_outside_the_frame_and_whole_frame():
  image = np.full((40, 80, 3), 200, np.uint8)
  crop = core.crop_face(image, np.array([0, 0, 20, 20]), size=20, margin=0.5)
  assert crop.image[0, 0].max() == 0  # Above/left of the frame: black.
  assert crop.image[15, 15].min() == 200
  whole = core.crop_face(image, None, size=16, margin=0.2)
  assert whole.side == 80 and whole.origin == (0.0, -20.0)  # Letterboxed.


def test_tracker_reuses_last_box_for_a_short_gap():
  found = iter([np.array([1., 2, 3, 4]), None, None, None])
  tracker = face.FaceTracker(lambda image: next(found), max_gap=2)
  image = np.zeros((8, 8, 3), np.uint8)
  box, has = tracker(image)
  assert has and box[0] == 1
  assert [tracker(image)[1] for _ in range(2)] == [False, False]
  assert tracker(image) == (None, False)  # Gap longer than max_gap.
  box, has = face.FaceTracker(None)(image, given_box=np.ones(4))
  assert has and box.sum() == 4


def test_detector_names():
  assert core.make_detector('none') is None
  detect = core.make_detector('haar')
  assert detect(np.zeros((60, 80, 3), np.uint8)) is None
  with pytest.raises(AffectJaxError, match='Unknown face detector'):
    core.make_detector('retina')
  try:
    import dlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    with pytest.raises(AffectJaxError, match='needs the dlib package'):
      core.make_detector('dlib')


def test_record_key_orders_by_video_then_frame():
  assert core.record_key(1, 0) > core.record_key(0, 2**32 - 1)
  with pytest.raises(AffectJaxError):
    core.record_key(0, 2**32)
