"""Tests of the shared builder core: decoding, face crops, records."""

import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import face
from tfds_builders.core import video as video_lib
from tests import builder_util


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
  # Variable frame rate: times are the stream's timestamps, not i / fps.
  times = [0.0, 0.04, 0.2, 0.21, 0.5, 0.9]
  core.write_video(path, images, fps=25, times=times)
  np.testing.assert_allclose([f.time for f in core.iter_frames(path)], times,
                             atol=1e-6)


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
  # Back to source pixels (what a prediction CSV reports).
  np.testing.assert_allclose(crop.to_frame([[0.5, 0.5]]), [[100, 50]])
  np.testing.assert_allclose(
      crop.box_to_frame(crop.box_to_crop(np.array([40, 90, 60, 110]))),
      [40, 90, 60, 110], atol=1e-4)
  assert crop.image[15, 15].min() == 255 and crop.image[1, 1].max() == 0


def test_crop_pads_outside_the_frame_and_whole_frame():
  image = np.full((40, 80, 3), 200, np.uint8)
  crop = core.crop_face(image, np.array([0, 0, 20, 20]), size=20, margin=0.5)
  assert crop.image[0, 0].max() == 0  # Above/left of the frame: black.
  assert crop.image[15, 15].min() == 200
  whole = core.crop_face(image, None, size=16, margin=0.2)
  assert whole.side == 80 and whole.origin == (0.0, -20.0)  # Letterboxed.


def test_tracker_reuses_last_box_for_a_short_gap():
  one = np.array([[1., 2, 3, 4]])
  found = iter([one, np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4))])
  tracker = face.FaceTracker(lambda image: next(found), max_gap=2)
  image = np.zeros((8, 8, 3), np.uint8)
  box, has = tracker(image)
  assert has and box[0] == 1
  assert [tracker(image)[1] for _ in range(2)] == [False, False]
  assert tracker(image) == (None, False)  # Gap longer than max_gap.
  box, has = face.FaceTracker(None)(image, given_box=np.ones(4))
  assert has and box.sum() == 4


def test_multi_face_tracker_keeps_ids_bridges_gaps_and_adds_faces():
  big, small = np.array([0., 0, 20, 20]), np.array([0., 50, 10, 60])
  shift = lambda box, dx, dy=0: box + [dy, dx, dy, dx]
  none = np.zeros((0, 4))
  frames = [
      [small, big],  # New ids, the larger first: big 0, small 1.
      [shift(small, 0, 1), shift(big, 2)],  # Both move; any order.
      [shift(big, 4), shift(small, 0, 2)],
      [shift(big, 6)],  # Small missed: its last box, has_face=False.
      [shift(small, 0, 3), shift(big, 8), np.array([50., 50, 70, 70])],
      [shift(big, 10)], [shift(big, 10)],  # Small and the third missed
      [shift(big, 10)],  # more than max_gap=2 frames: ended.
      [shift(big, 10), shift(small, 0, 3)],
      [none], [shift(big, 10)],  # Nobody, then big within the gap.
  ]
  found = iter(frames)
  tracker = face.MultiFaceTracker(
      lambda image: np.reshape(next(found), (-1, 4)), max_gap=2)
  image = np.zeros((8, 8, 3), np.uint8)
  got = [[(f.id, f.has_face, tuple(f.box)) for f in tracker(image)]
         for _ in frames]
  b = lambda dx: tuple(shift(big, dx))
  s = lambda dy: tuple(shift(small, 0, dy))
  assert got == [
      [(0, True, b(0)), (1, True, s(0))],
      [(0, True, b(2)), (1, True, s(1))],
      [(0, True, b(4)), (1, True, s(2))],
      [(0, True, b(6)), (1, False, s(2))],
      [(0, True, b(8)), (1, True, s(3)), (2, True, (50, 50, 70, 70))],
      [(0, True, b(10)), (1, False, s(3)), (2, False, (50, 50, 70, 70))],
      [(0, True, b(10)), (1, False, s(3)), (2, False, (50, 50, 70, 70))],
      [(0, True, b(10))],
      # The small face is back: a new id, 1 and 2 are never reused.
      [(0, True, b(10)), (3, True, s(3))],
      [(0, False, b(10)), (3, False, s(3))],
      [(0, True, b(10)), (3, False, s(3))],
  ]
  # Whole-frame models: one face, 0, every frame.
  whole = face.MultiFaceTracker(None)(image)
  assert [(f.id, f.box, f.has_face) for f in whole] == [(0, None, True)]
  np.testing.assert_allclose(face.box_iou(big, [shift(big, 10), small]),
                             [[200 / 600, 0]])


def test_tracker_picks_a_side_and_detects_every_nth_frame():
  calls = []
  two = np.array([[0., 50, 10, 60], [0, 10, 30, 40]])  # Right small, left big.

  def detect(image):
    calls.append(1)
    return two
  image = np.zeros((8, 8, 3), np.uint8)
  assert face.FaceTracker(detect, pick='left')(image)[0][1] == 10
  assert face.FaceTracker(detect, pick='right')(image)[0][1] == 50
  assert face.FaceTracker(detect)(image)[0][1] == 10  # Largest.
  calls.clear()
  tracker = face.FaceTracker(detect, every=3)
  results = [tracker(image) for _ in range(7)]
  assert len(calls) == 3  # Frames 0, 3 and 6.
  assert all(r[1] and r[0][1] == 10 for r in results)
  with pytest.raises(AffectJaxError, match='pick'):
    face.FaceTracker(detect, pick='middle')


def _synthetic_face(seed, size=(240, 320)):
  from tfds_builders.synthetic_faces import faces  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  image, landmarks, box = faces.render_frame(
      faces.make_subject(rng), faces.make_video(rng, 2, 10.0), 0, size=size)
  h, w = size
  return image, landmarks * [w, h], box * [h, w, h, w]


def _iou(a, b):
  y0, x0 = max(a[0], b[0]), max(a[1], b[1])
  y1, x1 = min(a[2], b[2]), min(a[3], b[3])
  inter = max(0, y1 - y0) * max(0, x1 - x0)
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  return inter / (area(a) + area(b) - inter)


def test_dlib_finds_a_drawn_face_and_its_landmarks():
  image, landmarks, box = _synthetic_face(3)  # A subject dlib finds.
  found = face.make_detector('dlib')(image)
  assert len(found) == 1 and _iou(found[0], box) > 0.5
  points = face.make_landmarker('dlib')(image, found[0])
  assert points.shape == (68, 2)
  side = box[2] - box[0]
  assert np.abs(points - landmarks).mean() < 0.05 * side
  # The same scene without the face (its background): nothing found.
  background = np.broadcast_to(image[:8, :8].mean((0, 1)).astype(np.uint8),
                               image.shape).copy()
  for name in ('dlib', 'haar'):
    assert face.make_detector(name)(background).shape == (0, 4)
    noise = np.random.default_rng(0).integers(0, 255, image.shape, np.uint8)
    assert face.make_detector(name)(noise).shape == (0, 4)


def test_detectors_on_a_real_photo():
  data = pytest.importorskip('skimage.data')
  # Eileen Collins' face in scikit-image's astronaut photo (checked by eye).
  face_box = (60, 170, 190, 280)
  found = face.pick_face(face.make_detector('dlib')(data.astronaut()))
  assert found is not None and _iou(found, face_box) > 0.4
  for photo in (data.coffee(), data.chelsea()):  # No face.
    assert face.make_detector('dlib')(photo).shape == (0, 4)


def test_detector_names():
  assert core.make_detector('none') is None
  detect = core.make_detector('haar')
  assert detect(np.zeros((60, 80, 3), np.uint8)).shape == (0, 4)
  with pytest.raises(AffectJaxError, match='Unknown face detector'):
    core.make_detector('retina')
  with pytest.raises(AffectJaxError, match='Unknown landmarker'):
    face.make_landmarker('retina')


def test_image_sequences_and_missing_or_corrupt_images(tmp_path):
  paths = []
  for i in range(3):
    paths.append(str(tmp_path / f'{i:05d}.png'))
    Image.fromarray(np.full((8, 6), 40 * i, np.uint8)).save(paths[-1])
  frames = list(core.iter_images([paths[0], None, paths[2]], fps=25))
  assert [f.index for f in frames] == [0, 1, 2]
  np.testing.assert_allclose([f.time for f in frames], [0, 0.04, 0.08])
  assert frames[1].image is None and frames[2].image.shape == (8, 6, 3)
  assert frames[2].image.max() == 80  # Grey expanded to RGB, lossless.
  video_lib.probe_images(paths + [None])
  with pytest.raises(AffectJaxError, match='00009.png does not exist'):
    video_lib.probe_images(paths + [str(tmp_path / '00009.png')])
  with open(paths[1], 'wb') as f:
    f.write(b'\x89PNG\r\n broken')
  with pytest.raises(AffectJaxError, match='Cannot decode image .*00001.png'):
    list(core.iter_images(paths, fps=25))


def _label(index, unused_time):
  return core.FrameLabels(valence=0.1 * index, arousal=-0.1 * index)


def _frames_of(manual_dir):
  folder = os.path.join(manual_dir, 'frames')
  return folder, sorted(os.path.join(folder, f) for f in os.listdir(folder))


class CoreTestFrames(core.VideoFrameBuilder):
  """Image sequences and a video, to test the core without a dataset."""
  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [core.VideoFrameConfig(name='default')]
  EMOTION_NAMES = ('a',)
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Generated by the test.'

  def _videos(self, manual_dir):
    folder, images = _frames_of(manual_dir)
    label = _label  # Picklable: workers get it.
    return {'train': [
        core.VideoSpec('aligned', 's0', folder, label,
                       images=images[:2] + [None], aligned=True, fps=10),
        core.VideoSpec('video', 's1', os.path.join(manual_dir, 'v.mp4'),
                       label),
        core.VideoSpec('whole', 's2', folder, label, images=images,
                       detector='none'),
    ]}


def _build_core_test(tmp_path, name, **config):
  root = tmp_path / 'copy'
  if not root.exists():
    (root / 'frames').mkdir(parents=True)
    image, _, _ = _synthetic_face(3, size=(64, 64))
    for i in range(3):
      Image.fromarray(image).save(root / 'frames' / f'{i:05d}.png')
    core.write_video(str(root / 'v.mp4'), [image] * 5, fps=25)
  builder = CoreTestFrames(
      data_dir=str(tmp_path / name),
      config=core.VideoFrameConfig(name='t', image_size=32, landmarks='none',
                                   **config))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  source = builder.as_data_source('train')
  return [source[i] for i in range(len(source))]


def test_builder_image_sequences_and_spooled_workers(tmp_path):
  records = _build_core_test(tmp_path, 'a', detector='haar')
  ids = [r[F.RECORD_VIDEO_ID].decode() for r in records]
  assert ids == ['aligned'] * 3 + ['video'] * 5 + ['whole'] * 3
  aligned = records[:3]
  assert [bool(r[F.RECORD_HAS_FACE]) for r in aligned] == [True, True, False]
  np.testing.assert_allclose(aligned[1][F.RECORD_BOX], [0, 0, 1, 1])
  np.testing.assert_allclose(aligned[2][F.RECORD_TIME], 0.2)
  np.testing.assert_allclose(aligned[2][F.RECORD_VALENCE], 0.2)
  blank = np.asarray(Image.open(io.BytesIO(aligned[2][F.RECORD_IMAGE])))
  assert blank.shape == (32, 32, 3) and blank.max() == 0
  whole = np.asarray(Image.open(io.BytesIO(records[8][F.RECORD_IMAGE])))
  assert whole.mean() > 20  # The image itself, not black.
  # Two workers spooling to files: the same records in the same order.
  spooled = _build_core_test(tmp_path, 'b', detector='haar', num_workers=2)
  assert len(spooled) == len(records)
  for a, b in zip(records, spooled):
    assert a[F.RECORD_IMAGE] == b[F.RECORD_IMAGE]
    assert a[F.RECORD_VIDEO_ID] == b[F.RECORD_VIDEO_ID]


def test_record_key_orders_by_video_then_frame():
  assert core.record_key(1, 0) > core.record_key(0, 2**32 - 1)
  with pytest.raises(AffectJaxError):
    core.record_key(0, 2**32)


def test_worker_tasks_group_short_image_sequences_in_order():
  from tfds_builders.core import builder as builder_lib  # pylint: disable=g-import-not-at-top
  photo = lambda: (core.VideoSpec('p', 's', 'p.jpg', _label,
                                  images=['p.jpg']),)
  video = (core.VideoSpec('v', 's', 'v.mp4', _label),)
  jobs = [photo() for _ in range(300)] + [video] + [photo() for _ in range(3)]
  batches = list(builder_lib._batches(jobs))  # pylint: disable=protected-access
  assert [len(b) for b in batches] == [256, 44, 1, 3]
  assert [job for b in batches for job in b] == jobs  # Order kept.


def test_an_image_sequence_breaking_keeps_earlier_frames_and_is_noted():
  from tfds_builders.core import builder as builder_lib  # pylint: disable=g-import-not-at-top

  def frames():
    for i in range(3):
      yield video_lib.Frame(i, i / 25, np.zeros((4, 4, 3), np.uint8))
    raise AffectJaxError('Cannot decode image f/00003.png')
  broken = []
  spec = core.VideoSpec('v', 's', 'f', _label, images=['f/00000.png'] * 4)
  kept = list(builder_lib._until_broken(frames(), spec, broken))  # pylint: disable=protected-access
  assert len(kept) == 3
  assert broken == [{'video_id': 'v', 'path': 'f', 'status': 'cut short',
                     'reason': 'kept the 3 frames before an error: Cannot '
                     'decode image f/00003.png'}]
  assert core.format_broken(dict(broken[0], split='train')) == (
      'train/v: cut short: kept the 3 frames before an error: Cannot decode '
      'image f/00003.png')


# Containers the builders accept, with the index at the end (the default)
# and, for .mp4/.mov, at the start ("faststart").
_CONTAINERS = [('mp4', None), ('mp4', {'movflags': 'faststart'}),
               ('mov', None), ('mov', {'movflags': 'faststart'}),
               ('avi', None)]


def _textured(n, h=48, w=64):
  """Frames that do not compress to nothing (packets of some size)."""
  rng = np.random.default_rng(0)
  base = rng.integers(0, 255, (h, w, 3), np.uint8)
  return [np.roll(base, 3 * i, axis=1) for i in range(n)]


@pytest.mark.parametrize('ext,options', _CONTAINERS)
def test_truncated_videos_are_errors_in_every_container(tmp_path, ext,
                                                        options):
  path = str(tmp_path / f'v.{ext}')
  assert core.write_video(path, _textured(60), fps=25, options=options) == 60
  assert len(list(core.iter_frames(path))) == 60  # Intact: passes.
  info = core.probe(path)
  assert (info.frames, info.fps) == (60, 25.0)
  assert info.duration == pytest.approx(2.4, abs=0.05)
  data = open(path, 'rb').read()
  cut = str(tmp_path / f'cut.{ext}')
  # Cut in the middle of the data, at 30%, 50%, 80% of the file.
  for point in [int(len(data) * f) for f in (0.3, 0.5, 0.8)]:
    with open(cut, 'wb') as f:
      f.write(data[:point])
    with pytest.raises(AffectJaxError) as e:
      list(core.iter_frames(cut))
    message = str(e.value)
    assert f'cut.{ext}' in message and '--skip_broken' in message
    assert any(k in message for k in ('ends early', 'failed after',
                                      'Cannot open')), message
  # As an interrupted download usually ends: right after a frame's packet.
  with open(cut, 'wb') as f:
    f.write(data)
  builder_util.cut_after_frames(cut, 30)
  with pytest.raises(AffectJaxError, match=f'cut.{ext}'):
    list(core.iter_frames(cut))
  if options or ext == 'avi':  # The header survives: it opens, then ends.
    assert core.probe(cut).frames == 60
    with pytest.raises(AffectJaxError, match=(
        r'cut\.' + ext + r' ends early: decoded \d+ frames but its header '
        r'declares 60 frames.*re-download.*--skip_broken')):
      list(core.iter_frames(cut))


def _avi_declaring(path, out, frames):
  """A copy of an .avi whose headers declare `frames` frames."""
  import struct  # pylint: disable=g-import-not-at-top
  data = bytearray(open(path, 'rb').read())
  i = data.find(b'avih') + 8 + 16  # dwTotalFrames.
  j = data.find(b'strh') + 8 + 32  # dwLength of the video stream.
  data[i:i + 4] = data[j:j + 4] = struct.pack('<I', frames)
  with open(out, 'wb') as f:
    f.write(data)


def test_intact_videos_with_slightly_wrong_header_counts_pass(tmp_path):
  path = str(tmp_path / 'v.avi')
  core.write_video(path, _textured(60), fps=25, codec='mpeg4')
  for declared in (58, 63, 65):  # At most TRUNCATION_FRAMES = 5 missing.
    _avi_declaring(path, str(tmp_path / 'w.avi'), declared)
    assert core.probe(str(tmp_path / 'w.avi')).frames == declared
    assert len(list(core.iter_frames(str(tmp_path / 'w.avi')))) == 60
  _avi_declaring(path, str(tmp_path / 'w.avi'), 66)
  with pytest.raises(AffectJaxError, match='decoded 60 frames but its header '
                     'declares 66 frames'):
    list(core.iter_frames(str(tmp_path / 'w.avi')))


def test_the_truncation_rule():
  # max(5 frames, 2% of the declared count), in frames and in seconds.
  assert video_lib.allowed_shortfall(98) == 5
  assert video_lib.allowed_shortfall(1000) == 20
  ok = [(98, 95), (98, 93), (1000, 980), (7500, 7350)]
  short = [(98, 92), (1000, 979), (7500, 7349), (60, 27)]
  for declared, decoded in ok:
    core.check_complete(core.VideoInfo('v.mp4', 25, declared, None), decoded,
                        None)
  for declared, decoded in short:
    with pytest.raises(AffectJaxError, match=f'v.mp4 ends early: decoded '
                       f'{decoded} frames but its header declares '
                       f'{declared} frames'):
      core.check_complete(core.VideoInfo('v.mp4', 25, declared, None),
                          decoded, None)
  # Duration only (no frame count in the header): 4 s at 25 fps = 100
  # frames, 5 frames = 0.2 s of slack.
  info = core.VideoInfo('v.mkv', 25, None, 4.0)
  core.check_complete(info, 95, 3.8)
  core.check_complete(info, 200, 8.0)  # Longer than declared: fine.
  with pytest.raises(AffectJaxError, match=r'decoded 94 frames \(3.76 s\) '
                     r'but its header declares 4.00 s'):
    core.check_complete(info, 94, 3.76)


def test_label_count_slack_warns_and_beyond_it_errors():
  core.check_label_count('v.mp4', 'v.csv', 100, 100, 30)
  core.check_label_count('v.mp4', 'v.csv', 100, 130, 30)  # Warning only.
  core.check_label_count('v.mp4', 'v.csv', 100, 70, 30)
  with pytest.raises(AffectJaxError, match=(
      r'the labels run 31 frames past the end of the video: v.csv covers 131 '
      r'frames but v.mp4 decodes 100 frames.*re-download.*--skip_broken')):
    core.check_label_count('v.mp4', 'v.csv', 100, 131, 30)
  with pytest.raises(AffectJaxError, match=(
      r'v.mp4 decodes 100 frames but v.csv covers only 69 rows \(31 fewer\)'
      r'.*re-copy.*--skip_broken')):
    core.check_label_count('v.mp4', 'v.csv', 100, 69, 30, 'rows')


def test_left_and_right_pick_the_two_people_of_a_video(tmp_path):
  from tfds_builders.core import builder as builder_lib  # pylint: disable=g-import-not-at-top
  # Two different people side by side (subjects dlib finds), as in
  # Aff-Wild2's <video>_left / <video>_right annotations.
  left, _, left_box = _synthetic_face(3)
  right, _, right_box = _synthetic_face(6)
  frame = np.concatenate([left, right], axis=1)  # 240 x 640.
  boxes = {'left': left_box, 'right': right_box + [0, 320, 0, 320]}
  for pick, box in boxes.items():
    found, has_face = face.FaceTracker(face.make_detector('dlib'),
                                       pick=pick)(frame)
    assert has_face and _iou(found, box) > 0.5
  # Through the builder path: every frame of each person's video has a face.
  path = str(tmp_path / 'two.mp4')
  core.write_video(path, [frame] * 3, fps=25)
  config = core.VideoFrameConfig(name='t', landmarks='none', image_size=32)
  for pick in boxes:
    spec = core.VideoSpec('two', 's', path, _label, pick=pick)
    records = [r for _, r in builder_lib.video_records(spec, 0, config, 1)]
    assert len(records) == 3 and all(r[F.RECORD_HAS_FACE] for r in records)


def test_affect_value_parses_one_cell_for_every_builder():
  from tfds_builders.core import annotations  # pylint: disable=g-import-not-at-top
  assert annotations.affect_value(' -0.25 ', 'valence') == -0.25
  assert np.isnan(annotations.affect_value('-5', 'valence', no_label=-5))
  with pytest.raises(ValueError, match='^arousal "x" is not a number$'):
    annotations.affect_value('x', 'arousal')
  with pytest.raises(ValueError, match=r'^1.5 is outside \[-1, 1\]$'):
    annotations.affect_value('1.5')
  with pytest.raises(ValueError, match=r'nan is outside .*not -2, "no lab'):
    annotations.affect_value('nan', 'valence', no_label=-2)


class CoreTestVideos(CoreTestFrames):
  """Two decoded videos and an image sequence; 'b_cut' may be truncated."""

  def _videos(self, manual_dir):
    folder, images = _frames_of(manual_dir)
    return {'train': [
        core.VideoSpec(vid, vid, os.path.join(manual_dir, f'{vid}.mp4'),
                       _label) for vid in ('a_good', 'b_cut')
    ] + [core.VideoSpec('c_frames', 'c', folder, _label, images=images)]}


def _videos_copy(root, truncate: bool):
  (root / 'frames').mkdir(parents=True, exist_ok=True)
  for i in range(3):
    Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(
        root / 'frames' / f'{i:05d}.png')
  faststart = {'movflags': 'faststart'}
  for vid in ('a_good', 'b_cut'):
    core.write_video(str(root / f'{vid}.mp4'), _textured(40), fps=25,
                     options=faststart)
  if truncate:  # An interrupted download: the index is there, 16 frames.
    builder_util.cut_after_frames(root / 'b_cut.mp4', 16)
  return root


def _build_videos(root, data_dir, **config):
  builder = CoreTestVideos(
      data_dir=str(data_dir),
      config=core.VideoFrameConfig(name='t', detector='none',
                                   landmarks='none', image_size=16, **config))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return builder


def test_a_truncated_video_stops_the_build_and_leaves_no_dataset(tmp_path):
  root = _videos_copy(tmp_path / 'copy', truncate=True)
  data_dir = tmp_path / 'data'
  with pytest.raises(AffectJaxError, match=(
      r'b_cut.mp4 ends early: decoded 16 frames but its header declares 40 '
      r'frames.*--skip_broken')):
    _build_videos(root, data_dir)
  # Nothing a later run or the pipeline could take for a prepared dataset.
  left = [os.path.relpath(os.path.join(d, f), data_dir)
          for d, _, fs in os.walk(data_dir) for f in fs]
  assert not [f for f in left if 'array_record' in f or 'dataset_info' in f]
  builder = CoreTestVideos(data_dir=str(data_dir),
                           config=core.VideoFrameConfig(name='t'))
  assert not builder.is_prepared()
  assert not core.leftover_builds(builder)
  with pytest.raises(AffectJaxError, match='holds no dataset_info.json'):
    core.check_prepared(builder)


@pytest.mark.parametrize('num_workers', [0, 2])
def test_skip_broken_leaves_truncated_videos_out_and_lists_them(tmp_path,
                                                               num_workers):
  root = _videos_copy(tmp_path / 'copy', truncate=True)
  builder = _build_videos(root, tmp_path / 'data', skip_broken=True,
                          num_workers=num_workers)
  source = builder.as_data_source('train')
  ids = [source[i][F.RECORD_VIDEO_ID] for i in range(len(source))]
  assert ids == [b'a_good'] * 40 + [b'c_frames'] * 3  # No frame of b_cut.
  skipped = core.skipped_videos(builder)
  assert [(s['split'], s['video_id'], s['status']) for s in skipped] == [
      ('train', 'b_cut', 'left out')]
  assert 'ends early: decoded 16 frames' in skipped[0]['reason']
  # The list is in the prepared dataset's metadata, for training to report.
  reloaded = tfds.builder_from_directory(str(builder.data_dir))
  assert core.skipped_videos(reloaded) == skipped
  core.check_prepared(reloaded)
  # An intact copy lists nothing.
  intact = _build_videos(_videos_copy(tmp_path / 'intact', truncate=False),
                         tmp_path / 'data2', skip_broken=True)
  assert core.skipped_videos(intact) == []
  assert len(intact.as_data_source('train')) == 83


def test_check_prepared_refuses_half_built_folders(tmp_path):
  root = _videos_copy(tmp_path / 'copy', truncate=False)
  builder = _build_videos(root, tmp_path / 'data')
  core.check_prepared(builder)
  shard = str(builder.info.splits['train'].filepaths[0])
  data = open(shard, 'rb').read()
  with open(shard, 'wb') as f:  # An interrupted copy of the folder.
    f.write(data[:len(data) // 2])
  with pytest.raises(AffectJaxError, match=r'is half-built: .*array_record.*'
                     r'delete the folder and run python -m affect_jax.prepare'):
    core.check_prepared(builder)
  os.remove(shard)
  with pytest.raises(AffectJaxError, match=r"half-built: split 'train' lacks"):
    core.check_prepared(builder)
  # A killed build's folder (TFDS renames it only when done).
  incomplete = os.path.join(os.path.dirname(str(builder.data_dir)),
                            'incomplete.ABC123_1.0.0')
  os.makedirs(incomplete)
  assert core.leftover_builds(builder) == [incomplete]


  class Unfinished:  # Only data_dir is read before the name is refused.
    data_dir = incomplete
  with pytest.raises(AffectJaxError, match='is an unfinished build'):
    core.check_prepared(Unfinished())
