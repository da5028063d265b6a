"""Frame-list (affect4k_thesis) builder on a tiny generated copy."""

import io
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders.frame_list import frame_list
from tests import builder_util

SIZE = 40
# CSV file -> rows (frame_path, valence, arousal[, subject_id]) in file order.
# clips/v02 is listed before clips/v01 and its frames out of name order: the
# CSV order is the frame order. val.csv has no header, a subject column and
# an unlabelled valence.
LISTS = {
    'train.csv': [
        ('frame_path', 'valence', 'arousal'),
        ('clips/v02/00010.jpg', '0.5', '-0.5'),
        ('clips/v02/00002.jpg', '0.4', '-0.4'),
        ('clips/v02/00003.jpg', '0.3', '-0.3'),
        ('clips/v01/00000.png', '-1', '1'),
        ('clips/v01/00001.png', '-0.1', '0.1'),
        ('clips/v01/00002.png', '-0.2', '0.2'),
        ('clips/v01/00003.png', '-0.3', '0.3'),
    ],
    'val.csv': [
        ('other/v03/a.jpg', '0.25', '0', 's1'),
        ('other/v03/b.jpg', '', '0.5', 's1'),
        ('other/v03/c.jpg', '0.75', '0.5', 's1'),
        ('v04/0.png', '0', '-0.75', 's2'),
        ('v04/1.png', '0.1', '-0.7', 's2'),
        ('v04/2.png', '0.2', '-0.6', 's2'),
    ],
}


def _grey(csv_name, k):
  """Distinct grey level of the frame on row k of a CSV."""
  return 20 + 10 * k + (100 if csv_name == 'val.csv' else 0)


def _write_copy(root):
  for csv_name, rows in LISTS.items():
    for k, row in enumerate(rows):
      if row[0] == 'frame_path':
        continue
      path = os.path.join(root, row[0])
      os.makedirs(os.path.dirname(path), exist_ok=True)
      Image.fromarray(np.full((SIZE, SIZE, 3), _grey(csv_name, k),
                              np.uint8)).save(path, quality=95)
    with open(os.path.join(root, csv_name), 'w') as f:
      f.write(''.join(','.join(row) + '\n' for row in rows))
  return root


def _build(root, out, **config):
  return builder_util.build(frame_list.FrameList, frame_list.FrameListConfig,
                            root, out, **config)


@pytest.fixture(scope='module')
def copy_dir(tmp_path_factory):
  return _write_copy(str(tmp_path_factory.mktemp('frame_list_copy')))


@pytest.fixture(scope='module')
def built(copy_dir, tmp_path_factory):
  return builder_util.records(
      _build(copy_dir, tmp_path_factory.mktemp('frame_list_tfds')))


def _ids(records, key=F.RECORD_VIDEO_ID):
  return [r[key].decode() for r in records]


def test_splits_grouping_and_order(built):
  assert sorted(built) == ['train', 'validation']
  train = built['train']
  # Videos sorted by id; frames in CSV order within each video.
  assert _ids(train) == ['clips/v01'] * 4 + ['clips/v02'] * 3
  assert [int(r[F.RECORD_FRAME_INDEX]) for r in train] == [0, 1, 2, 3,
                                                           0, 1, 2]
  np.testing.assert_allclose([r[F.RECORD_TIME] for r in train[4:]],
                             [0, 0.04, 0.08], atol=1e-6)
  assert _ids(train, F.RECORD_SUBJECT_ID) == _ids(train)
  assert _ids(built['validation']) == ['other/v03'] * 3 + ['v04'] * 3
  assert _ids(built['validation'], F.RECORD_SUBJECT_ID) == (['s1'] * 3 +
                                                           ['s2'] * 3)


def test_labels_and_images_follow_the_rows(built):
  for split, csv_name, order in (('train', 'train.csv', [4, 5, 6, 7, 1, 2, 3]),
                                 ('validation', 'val.csv', range(6))):
    rows = LISTS[csv_name]
    for r, k in zip(built[split], order):
      for key, column in ((F.RECORD_VALENCE, 1), (F.RECORD_AROUSAL, 2)):
        if rows[k][column]:
          assert r[key] == pytest.approx(float(rows[k][column]))
        else:
          assert np.isnan(r[key])  # Empty field: unlabelled.
      image = np.asarray(Image.open(io.BytesIO(r[F.RECORD_IMAGE])))
      assert image.shape == (32, 32, 3)
      assert abs(float(image.mean()) - _grey(csv_name, k)) < 3
      # Aligned crops: the whole image is the face.
      assert bool(r[F.RECORD_HAS_FACE])
      np.testing.assert_allclose(r[F.RECORD_BOX], [0, 0, 1, 1])
      assert not r[F.RECORD_EMOTIONS].size


def _edit(copy_dir, tmp_path, csv_name, k, row):
  """A copy whose csv_name has line k (0-based) replaced (None: removed)."""
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  path = root / csv_name
  lines = path.read_text().splitlines()
  if row is None:
    del lines[k]
  else:
    lines[k] = ','.join(row)
  path.write_text('\n'.join(lines) + '\n')
  return root, path


@pytest.mark.parametrize('csv_name,k,row,message', [
    ('train.csv', 5, ('clips/v02/00011.jpg', '0', '0'),
     'line 6: video clips/v02 \\(rows from line 2\\) continues after rows '
     'of clips/v01'),
    ('train.csv', 2, ('clips/v02/00002.jpg', '1.2', '0'),
     'line 3: valence 1.2 is outside \\[-1, 1\\]'),
    ('train.csv', 2, ('clips/v02/00002.jpg', '0', 'nan'),
     'line 3: arousal nan is outside'),
    ('train.csv', 2, ('clips/v02/00002.jpg', '0', 'high'),
     'line 3: arousal "high" is not a number'),
    ('train.csv', 3, ('clips/v02/00003.jpg', '0'),
     'line 4: 2 columns instead of 3'),
    ('train.csv', 0, ('frame_path', 'v', 'a'),
     'line 1: the header must be frame_path,valence,arousal'),
    ('train.csv', 3, ('00003.jpg', '0', '0'),
     'line 4: frame 00003.jpg is not inside a video folder'),
    ('train.csv', 3, ('clips/v02/00010.jpg', '0', '0'),
     'line 4: frame clips/v02/00010.jpg is listed already \\(line 2\\)'),
    ('val.csv', 2, ('other/v03/c.jpg', '0', '0', 's9'),
     'line 3: subject_id s9 differs from s1 on line 1'),
])
def test_bad_rows_name_file_and_line(copy_dir, tmp_path, csv_name, k, row,
                                     message):
  _, path = _edit(copy_dir, tmp_path, csv_name, k, row)
  with pytest.raises(AffectJaxError, match=f'{path} {message}'):
    frame_list.read_frame_list(str(path))


def _videos(root):
  builder = frame_list.FrameList(
      data_dir=str(root / 'unused'),
      config=frame_list.FrameListConfig(name='t'))
  return builder._videos(str(root))  # pylint: disable=protected-access


def test_split_files(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  (root / 'notes.csv').write_text('ignored\n')
  assert {s: [v.video_id for v in specs]
          for s, specs in _videos(root).items()} == {
              'train': ['clips/v02', 'clips/v01'],
              'validation': ['other/v03', 'v04']}
  # The same video in two splits.
  (root / 'test.csv').write_text('v04/1.png,0,0\n')
  with pytest.raises(AffectJaxError, match=(
      f'{root / "test.csv"} line 1: video v04 is in {root / "val.csv"} too '
      '\\(line 4\\)')):
    _videos(root)
  # Two files for one split.
  (root / 'test.csv').unlink()
  shutil.copy(root / 'val.csv', root / 'validation.csv')
  with pytest.raises(AffectJaxError, match='both define split .validation.'):
    _videos(root)
  for name in ('train.csv', 'val.csv', 'validation.csv'):
    (root / name).unlink()
  with pytest.raises(AffectJaxError, match='holds none of train.csv'):
    _videos(root)


def test_missing_frame_names_the_file(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  missing = root / 'v04' / '1.png'
  missing.unlink()
  with pytest.raises(AffectJaxError, match=f'Image {missing} does not exist'):
    _build(root, tmp_path / 'out')
