"""Tracking between detections: `FaceTracker(every=N, track='correlation')`
(dlib's correlation tracker) against 'hold' and per-frame detection; and
detection on a downscaled frame (`detect_max_side`)."""

import os
import subprocess
import sys

import cv2

import numpy as np
from PIL import Image
import pytest

from affect_jax import features as F
from affect_jax import prepare
from affect_jax.errors import AffectJaxError
from benchmarks.build_frames import moving_face
from tfds_builders import core
from tfds_builders.core import builder as builder_lib
from tfds_builders.core import face

H, W = 240, 480


@pytest.fixture(scope='module', name='moving')
def fixture_moving():
  """21 frames where subject 14's face (a dlib finds) moves right 14 px a
  frame, ~1/9 of its width; and dlib's box on each frame."""
  frames = moving_face(14, 21, H, W, speed=14, x_from=0.2, x_to=0.8)
  detect = face.make_detector('dlib')
  found = [face.pick_face(detect(image)) for image in frames]
  assert all(box is not None for box in found)  # The reference is complete.
  return frames, found


def _counting(detect):
  calls = []

  def counted(image):
    calls.append(1)
    return detect(image)
  return counted, calls


def _iou(box, other):
  return float(face.box_iou(box, other)[0, 0])


def test_correlation_follows_the_face_hold_falls_behind(moving):
  frames, found = moving
  iou = {}
  for track in face.TRACKS:
    detect, calls = _counting(face.make_detector('dlib'))
    tracker = face.FaceTracker(detect, max_gap=5, every=5, track=track)
    results = [tracker(image) for image in frames]
    assert len(calls) == 5  # Frames 0, 5, 10, 15, 20 only.
    assert all(has_face for _, has_face in results)
    for box, _ in results:  # Inside the frame.
      assert 0 <= box[0] < box[2] <= H and 0 <= box[1] < box[3] <= W
    iou[track] = np.array([_iou(box, f) for (box, _), f in
                           zip(results, found)])
  detected = np.arange(len(frames)) % 5 == 0
  for track in face.TRACKS:  # A detection frame is the detector's answer.
    np.testing.assert_array_equal(iou[track][detected], 1)
  # Measured: correlation 0.92-0.99 on every frame; hold 0.38-0.39 on the
  # frames just before a detection, where it is 4 frames (56 px) behind.
  assert iou['correlation'].min() > 0.7
  before = np.arange(len(frames)) % 5 == 4
  assert iou['hold'][before].max() < 0.5
  assert iou['correlation'][~detected].mean() > (
      iou['hold'][~detected].mean() + 0.2)


def test_a_lost_track_is_a_missed_face_until_the_next_detection(moving):
  frames, found = moving
  image = frames[0]
  blank = np.broadcast_to(image[:8, :8].mean((0, 1)).astype(np.uint8),
                          image.shape).copy()  # The face is gone.
  sequence = [frames[0], frames[1], blank, blank, blank, frames[5]]
  for max_gap in (5, 1):
    tracker = face.FaceTracker(face.make_detector('dlib'), max_gap=max_gap,
                               every=5, track='correlation')
    (b0, h0), (b1, h1), *lost, (b5, h5) = [tracker(f) for f in sequence]
    assert h0 and h1 and _iou(b1, found[1]) > 0.7
    # Below MIN_PSR: has_face False, the last tracked box for max_gap
    # frames (the max_gap rule), then None.
    expected = [(b1, False)] * max_gap + [(None, False)] * (3 - max_gap)
    assert [(None if b is None else tuple(b), h) for b, h in lost] == [
        (None if b is None else tuple(b), h) for b, h in expected[:3]]
    # The next detection starts again from the detector's answer.
    assert h5 and _iou(b5, found[5]) == 1


def test_the_tracked_box_is_clipped_to_the_frame():
  # The face leaves on the right: 15 px a frame from the centre at 75%.
  frames = moving_face(14, 6, H, W, speed=15, x_from=0.75, x_to=1.2)
  tracker = face.FaceTracker(face.make_detector('dlib'), every=6,
                             track='correlation')
  results = [tracker(image) for image in frames]
  assert all(has_face for _, has_face in results)
  assert results[0][0][3] < W - 30  # Detected well inside,
  assert results[-1][0][3] == W  # tracked past the edge: clipped.


def test_track_option_reaches_the_records_and_is_checked(moving, tmp_path):
  frames, _ = moving
  paths = []
  for i, image in enumerate(frames[:10]):
    paths.append(str(tmp_path / f'{i:05d}.png'))
    Image.fromarray(image).save(paths[-1])
  spec = core.VideoSpec('m', 's', str(tmp_path),
                        lambda i, t: core.FrameLabels(), images=paths, fps=25)
  images = {}
  for track in face.TRACKS:
    config = core.VideoFrameConfig(name='t', landmarks='none', image_size=32,
                                   detect_every=5, track=track)
    records = [r for _, r in builder_lib.video_records(spec, 0, config, 1)]
    assert len(records) == 10 and all(r[F.RECORD_HAS_FACE] for r in records)
    images[track] = [r[F.RECORD_IMAGE] for r in records]
  same = [a == b for a, b in zip(images['hold'], images['correlation'])]
  assert same[0] and same[5] and not any(same[1:5] + same[6:])
  # The option names the config (records made otherwise never mix) ...
  prepare.available()
  # pylint: disable-next=protected-access
  builder = prepare._builder('realeyes', str(tmp_path),
                             {'detect_every': 5, 'track': 'correlation'})
  assert builder.builder_config.name == (
      'default-detect_every_5-track_correlation')
  # ... and is checked, by the builder and by the tracker.
  with pytest.raises(AffectJaxError, match=(
      r"realeyes config 'default-track_kalman': unknown track 'kalman'; "
      r"use one of \('hold', 'correlation'\)")):
    prepare.prepare('realeyes', str(tmp_path), None, track='kalman')
  with pytest.raises(AffectJaxError, match="unknown track 'kalman'"):
    face.FaceTracker(face.make_detector('dlib'), track='kalman')
  assert not os.path.exists(tmp_path / 'realeyes')


def test_downscaled_detection_finds_the_same_face(moving):
  frames, found = moving
  # pylint: disable-next=protected-access
  hog = face._import_dlib().get_frontal_face_detector()
  for image, box in zip(frames[::5], found[::5]):
    # The default is dlib on the full frame, as before the option existed.
    reference = [(r.top(), r.left(), r.bottom(), r.right())
                 for r in hog(image, 0)]
    np.testing.assert_array_equal(face.make_detector('dlib')(image),
                                  np.float32(reference).reshape(-1, 4))
    assert face.make_detector('dlib', 0) is face.make_detector('dlib')
    # A frame no larger than max_side is detected as it is.
    np.testing.assert_array_equal(face.make_detector('dlib', W)(image),
                                  face.make_detector('dlib')(image))
    # Twice the size (each pixel 2x2): INTER_AREA scales it back to the
    # frame exactly, so the boxes are exactly twice the frame's.
    big = cv2.resize(image, (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(
        face.pick_face(face.make_detector('dlib', W)(big)), 2 * box)
    # Against full-resolution detection of the big frame: the same face;
    # measured IoU 0.75-0.82, dlib's box steps between pyramid scales.
    full = face.pick_face(face.make_detector('dlib')(big))
    assert _iou(full, 2 * box) > 0.7


def test_the_tracker_follows_on_the_downscaled_frame(moving):
  frames, _ = moving
  # Twice the size (each pixel 2x2): the tracker on it with max_side W sees
  # exactly the original frames, so its boxes are exactly twice theirs.
  big = [cv2.resize(f, (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
         for f in frames[:10]]
  small = face.make_tracker('dlib', 5, every=5, track='correlation')
  scaled = face.make_tracker('dlib', 5, every=5, track='correlation',
                             detect_max_side=W)
  full = face.make_tracker('dlib', 5, every=5, track='correlation')
  for image, image2 in zip(frames[:10], big):
    (box, has), (box2, has2) = small(image), scaled(image2)
    assert has and has2
    np.testing.assert_array_equal(box2, 2 * box)
    # On the full-size frame: the same face, followed there.
    assert _iou(full(image2)[0], box2) > 0.6
  with pytest.raises(AffectJaxError, match=r'^FaceTracker: detect_max_side'):
    face.FaceTracker(face.make_detector('dlib'), track_max_side=10)


def test_detect_max_side_names_the_config_and_is_recorded(tmp_path):
  prepare.available()
  # pylint: disable=protected-access
  default = prepare._builder('realeyes', str(tmp_path), {})
  assert prepare._builder('realeyes', str(tmp_path), {
      'detect_max_side': 0}).builder_config.name == 'default'
  small = prepare._builder('realeyes', str(tmp_path),
                           {'detect_max_side': 320, 'detect_every': 5})
  # pylint: enable=protected-access
  assert default.builder_config.name == 'default'
  assert small.builder_config.name == (
      'default-detect_every_5-detect_max_side_320')
  for builder, every, side in ((default, 1, 0), (small, 5, 320)):
    meta = builder.info.metadata
    assert (meta['detector'], meta['detect_every'], meta['track'],
            meta['detect_max_side']) == ('dlib', every, 'hold', side)


@pytest.mark.parametrize('value', [30, -1])
def test_detect_max_side_out_of_range_is_an_error(tmp_path, value):
  with pytest.raises(AffectJaxError, match=(
      rf'realeyes config \'default-detect_max_side_{value}\': '
      rf'detect_max_side={value} \(--detect_max_side\) is out of range: use '
      r'0 \(detect on the full frame, the default\) or at least 64')):
    prepare.prepare('realeyes', str(tmp_path), None, detect_max_side=value)
  with pytest.raises(AffectJaxError, match=rf'^detect_max_side={value} '):
    face.make_detector('dlib', value)
  assert not os.path.exists(tmp_path / 'realeyes')


def test_build_frames_tracking_prints_its_table():
  """CI smoke run of `benchmarks/build_frames.py --tracking` (no timing)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, os.path.join(root, 'benchmarks', 'build_frames.py'),
       '--tracking', '--frames', '6', '--height', '240', '--width', '320',
       '--speed', '8', '--repeats', '1', '--every', '1,5', '--max_side',
       '0,160', '--tracks', 'correlation', '--image_size', '32'],
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert lines[1].startswith('| face px/frame | detect_max_side |')
  rows = [[c.strip() for c in line.strip('|').split('|')]
          for line in lines[3:]]
  assert [r[1:4] for r in rows] == [['full', '1', 'correlation'],
                                    ['full', '5', 'correlation'],
                                    ['160', '1', 'correlation'],
                                    ['160', '5', 'correlation']]
  # Full-resolution detection on every frame is the reference itself.
  assert rows[0][5:] == ['1.00', '1.00', '100%']
