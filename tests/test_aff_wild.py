"""Aff-Wild (kollias2019 layout) builder on a tiny generated copy."""

import os
import shutil

import numpy as np
import pytest

from affect_jax import features as F
from affect_jax import prepare
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.aff_wild import aff_wild
from tfds_builders.core import face
from tfds_builders.core import video as video_lib
from tests import builder_util
from tests import fake_datasets

H, W, FPS = 48, 64, 30
# Video id -> (split, file extension, frames, label lines). v2's annotation
# is 2 lines shorter than the video; v3 ships boxes (as bboxs/) and landmarks.
VIDEOS = {'v1': ('train', '.mp4', 12, 12), 'v2': ('train', '.mp4', 12, 10),
          'v3': ('train', '.avi', 10, 10), 't1': ('test', '.mp4', 8, 8)}
BOXED = 'v3'
NO_BOX = 7  # v3's frame without a box file (no face found).


def _values(vid, dim, videos=VIDEOS):
  k = sorted(videos).index(vid)
  i = np.arange(videos[vid][3])
  v = (0.1 * k - 0.02 * i if dim == 'valence' else -0.1 * k + 0.03 * i)
  return v.round(4)


def _box(i):  # (x0, y0, x1, y1) of frame i.
  return 10 + i, 8, 40 + i, 38


def _landmarks(i):
  x0, y0, _, _ = _box(i)
  j = np.arange(F.NUM_LANDMARKS)
  return np.stack([x0 + (j % 17) * 1.5, y0 + (j // 17) * 7.0], 1)


def _write_copy(root, videos=VIDEOS):
  for vid, (split, ext, frames, lines) in videos.items():
    folder = os.path.join(root, 'videos', split)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(len(vid) + frames)
    video_lib.write_video(
        os.path.join(folder, vid + ext),
        (rng.integers(0, 255, (H, W, 3), np.uint8) for _ in range(frames)),
        FPS, codec='mpeg4' if ext == '.avi' else 'libx264')
    for dim in ('valence', 'arousal'):
      folder = os.path.join(root, 'annotations', split, dim)
      os.makedirs(folder, exist_ok=True)
      fake_datasets.write_lines(os.path.join(folder, f'{vid}.txt'),
                                _values(vid, dim, videos))
    if vid == BOXED:
      boxes = os.path.join(root, 'bboxs', split, vid)
      marks = os.path.join(root, 'landmarks', split, vid)
      os.makedirs(boxes)
      os.makedirs(marks)
      for i in range(frames):
        if i == NO_BOX:
          continue
        x0, y0, x1, y1 = _box(i)
        fake_datasets.write_pts(os.path.join(boxes, f'{i}.pts'),
                                fake_datasets.box_corners((y0, x0, y1, x1)))
        fake_datasets.write_pts(os.path.join(marks, f'{i}.pts'),
                                _landmarks(i))
  return root


@pytest.fixture(scope='module')
def copy_dir(tmp_path_factory):
  return _write_copy(str(tmp_path_factory.mktemp('aff_wild_copy')))


@pytest.fixture(scope='module')
def built(copy_dir, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('aff_wild_tfds'))
  builder = prepare.prepare('aff_wild', data_dir, copy_dir)
  return builder, builder_util.load_splits('aff_wild', data_dir)


def test_splits_counts_and_membership(built):
  builder, splits = built
  assert sorted(builder.info.splits) == ['test', 'train', 'validation']
  expected = aff_wild.split_videos(['v1', 'v2', 'v3'], 0.1)
  assert len(expected['validation']) == 1
  for name in ('train', 'validation'):
    assert splits[name].video_ids == expected[name]
    assert splits[name].subject_ids == expected[name]
  assert splits['test'].video_ids == ['t1']
  for split in splits.values():
    for vid, n in zip(split.video_ids, split.lengths):
      # Frames without a label line are dropped (v2: 12 frames, 10 lines).
      assert n == min(VIDEOS[vid][2], VIDEOS[vid][3])
  assert aff_wild.split_videos(['v3', 'v1', 'v2'], 0.1) == expected


def _find(splits, vid):
  for split in splits.values():
    if vid in split.video_ids:
      return split, split.starts[split.video_ids.index(vid)]
  raise KeyError(vid)


def test_labels_by_frame_index(built):
  _, splits = built
  for vid in VIDEOS:
    split, start = _find(splits, vid)
    for i in (0, 3, VIDEOS[vid][3] - 1):
      assert split.valence[start + i] == pytest.approx(
          _values(vid, 'valence')[i], abs=1e-6)
      assert split.arousal[start + i] == pytest.approx(
          _values(vid, 'arousal')[i], abs=1e-6)
  split, start = _find(splits, 'v2')
  frames = [int(split.source[int(start + i)][F.RECORD_FRAME_INDEX])
            for i in range(10)]
  assert frames == list(range(10))


def test_shipped_boxes_and_landmarks_in_crop(built):
  builder, splits = built
  split, start = _find(splits, BOXED)
  c = builder.builder_config
  i = 4
  r = split.source[int(start + i)]
  assert int(r[F.RECORD_FRAME_INDEX]) == i and bool(r[F.RECORD_HAS_FACE])
  x0, y0, x1, y1 = _box(i)
  box = np.array([y0, x0, y1, x1], np.float32)
  crop = face.crop_face(np.zeros((H, W, 3), np.uint8), box, c.image_size,
                        c.margin)
  np.testing.assert_allclose(r[F.RECORD_LANDMARKS],
                             crop.to_crop(_landmarks(i)), atol=1e-3)
  np.testing.assert_allclose(r[F.RECORD_BOX], crop.box_to_crop(box),
                             atol=1e-5)
  # The 0.2 margin puts the box inside the crop.
  assert 0.1 < r[F.RECORD_BOX][0] < r[F.RECORD_BOX][2] < 0.9
  # The frame the release ships no box for: the whole frame, no face.
  r = split.source[int(start + NO_BOX)]
  assert int(r[F.RECORD_FRAME_INDEX]) == NO_BOX
  assert not bool(r[F.RECORD_HAS_FACE])
  assert not r[F.RECORD_LANDMARKS].any()
  assert bool(split.source[int(start + NO_BOX - 1)][F.RECORD_HAS_FACE])
  # Videos without shipped geometry: zero landmarks.
  split, start = _find(splits, 'v1')
  assert not split.source[int(start)][F.RECORD_LANDMARKS].any()


def test_read_pts_and_values(tmp_path):
  p = tmp_path / 'a.pts'
  fake_datasets.write_pts(str(p), [(1, 2), (3, 4), (5, 6), (7, 8)])
  np.testing.assert_array_equal(aff_wild.read_pts(str(p), 4)[3], [7, 8])
  with pytest.raises(AffectJaxError, match='a.pts line 2: expected "n_poin'):
    aff_wild.read_pts(str(p), 68)
  p.write_text(p.read_text().replace('}', ''))
  with pytest.raises(AffectJaxError, match='a.pts line 7: missing the closi'):
    aff_wild.read_pts(str(p), 4)
  t = tmp_path / 'v.txt'
  t.write_text('0.1\nfoo\n')
  with pytest.raises(AffectJaxError,
                     match='v.txt line 2: "foo" is not a number'):
    aff_wild.read_values(str(t))


def _build(root, out, **config):
  return builder_util.build(aff_wild.AffWild, aff_wild.AffWildConfig, root,
                            out, **config)


def _copy(copy_dir, tmp_path):
  return shutil.copytree(copy_dir, tmp_path / 'copy')


def test_value_out_of_range_names_file_and_line(copy_dir, tmp_path):
  root = _copy(copy_dir, tmp_path)
  path = root / 'annotations' / 'train' / 'arousal' / 'v2.txt'
  lines = path.read_text().splitlines()
  lines[3] = '1.5'
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(AffectJaxError,
                     match=f'{path} line 4: 1.5 is outside \\[-1, 1\\]'):
    _build(root, tmp_path / 'out')


def test_malformed_pts_names_the_file(copy_dir, tmp_path):
  root = _copy(copy_dir, tmp_path)
  path = root / 'landmarks' / 'train' / BOXED / '2.pts'
  path.write_text(path.read_text().replace('n_points: 68', 'n_points: 67'))
  with pytest.raises(AffectJaxError,
                     match=f'{path} line 2: expected "n_points: 68"'):
    _build(root, tmp_path / 'out')


def test_annotation_without_video_and_missing_folder(copy_dir, tmp_path):
  root = _copy(copy_dir, tmp_path)
  (root / 'videos' / 'train' / 'v1.mp4').unlink()
  with pytest.raises(AffectJaxError, match=r'valence/v1.txt has no video'):
    _build(root, tmp_path / 'a')
  shutil.rmtree(root / 'annotations')
  with pytest.raises(AffectJaxError, match=r'annotations is missing'):
    _build(root, tmp_path / 'b')


def test_test_split_skipped_without_test_annotations(tmp_path):
  videos = {'a': ('train', '.mp4', 4, 4), 'b': ('train', '.mp4', 4, 4),
            't1': ('test', '.mp4', 4, 4)}
  root = _write_copy(str(tmp_path / 'copy'), videos)
  shutil.rmtree(os.path.join(root, 'annotations', 'test'))
  builder = _build(root, tmp_path / 'out', validation_fraction=0.0)
  assert sorted(builder.info.splits) == ['train']


def test_label_lines_far_past_the_video_are_an_error(copy_dir, tmp_path):
  root = _copy(copy_dir, tmp_path)
  frames = VIDEOS['v2'][2]  # v2 is in train (v1, validation, is alone).

  def lines(n):
    for dim in ('valence', 'arousal'):
      path = root / 'annotations' / 'train' / dim / 'v2.txt'
      path.write_text('0.1\n' * n)
  lines(frames + 30)  # Within the slack: built, with a warning.
  builder = _build(root, tmp_path / 'a')
  assert core.skipped_videos(builder) == []
  lines(frames + 31)  # As if the video were cut short.
  with pytest.raises(AffectJaxError, match=(
      rf'labels run 31 frames past the end of the video: .*v2.txt covers '
      rf'{frames + 31} lines but .*v2.mp4 decodes {frames} frames')):
    _build(root, tmp_path / 'b')
  builder = _build(root, tmp_path / 'c', skip_broken=True)
  assert [(b['video_id'], b['status']) for b in core.skipped_videos(
      builder)] == [('v2', 'left out')]
  ids = {r[F.RECORD_VIDEO_ID] for rs in builder_util.records(builder).values()
         for r in rs}
  assert b'v2' not in ids and b'v1' in ids and b'v3' in ids
