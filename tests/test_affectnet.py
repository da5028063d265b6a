"""AffectNet (official CSV layout) builder on a tiny generated copy."""

import io
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders.affectnet import affectnet
from tfds_builders.core import face
from tests import builder_util
from tests import fake_datasets

H, W = 40, 48
LISTS = 'Manually_Annotated_file_lists'
IMAGES = 'Manually_Annotated_Images'
FACE_COLOR = (200, 60, 30)
# (split, subDirectory_filePath, (x, y, w, h), expression, valence, arousal),
# as written in the CSV; '-2' means not available.
ROWS = [
    ('train', '12/b.png', (6, 4, 20, 24), 0, '-2', '0.3'),
    ('train', '12/a.jpg', (10, 8, 24, 22), 1, '0.5', '-0.25'),
    ('train', '7/c.jpg', (4, 10, 30, 26), 9, '0.1', '0.2'),
    ('train', '7/d.jpg', (14, 2, 18, 30), 7, '-1', '1'),
    ('validation', '3/e.jpg', (0, 0, 40, 40), 10, '-2', '-2'),
    ('validation', '3/f.jpg', (9, 9, 20, 20), 3, '0.75', '-0.5'),
]
CSVS = {'train': 'training.csv', 'validation': 'validation.csv'}


def _landmarks(k):
  """68 (x, y) image pixels of row k, inside its box."""
  x, y, w, h = ROWS[k][2]
  j = np.arange(F.NUM_LANDMARKS)
  return np.stack([x + (j % 17) * w / 17 + 0.25,
                   y + (j // 17) * h / 4 + 0.5], 1).astype(np.float32)


def _line(k, landmarks=None):
  _, name, box, expression, valence, arousal = ROWS[k]
  points = _landmarks(k) if landmarks is None else landmarks
  return fake_datasets.affectnet_line(name, box, points, expression, valence,
                                      arousal)


def _write_copy(root):
  os.makedirs(os.path.join(root, LISTS))
  for k, (split, name, (x, y, w, h), *_) in enumerate(ROWS):
    path = os.path.join(root, IMAGES, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.full((H, W, 3), 10 * k, np.uint8)
    image[y:y + h, x:x + w] = FACE_COLOR
    Image.fromarray(image).save(path)
  for split, csv_name in CSVS.items():
    lines = [','.join(affectnet.HEADER)]
    lines += [_line(k) for k, row in enumerate(ROWS) if row[0] == split]
    with open(os.path.join(root, LISTS, csv_name), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  return root


def _build(root, out, **config):
  return builder_util.build(affectnet.AffectNet, affectnet.AffectNetConfig,
                            root, out, **config)


_records = builder_util.records


def _by_id(records):
  return {r[F.RECORD_VIDEO_ID].decode(): r for r in records}


@pytest.fixture(scope='module')
def copy_dir(tmp_path_factory):
  return _write_copy(str(tmp_path_factory.mktemp('affectnet_copy')))


@pytest.fixture(scope='module')
def built(copy_dir, tmp_path_factory):
  return _records(_build(copy_dir, tmp_path_factory.mktemp('affectnet_tfds')))


def test_splits_counts_and_order(built):
  assert sorted(built) == ['train', 'validation']
  ids = [r[F.RECORD_VIDEO_ID].decode() for r in built['train']]
  # One record per image, sorted by id (the core sorts videos by id).
  assert ids == ['12/a.jpg', '12/b.png', '7/c.jpg', '7/d.jpg']
  assert [r[F.RECORD_VIDEO_ID].decode() for r in built['validation']] == [
      '3/e.jpg', '3/f.jpg']
  for r in built['train'] + built['validation']:
    assert int(r[F.RECORD_FRAME_INDEX]) == 0 and float(r[F.RECORD_TIME]) == 0
    assert r[F.RECORD_SUBJECT_ID] == r[F.RECORD_VIDEO_ID]
    # Every image shows a face but the no-face (10) one.
    assert bool(r[F.RECORD_HAS_FACE]) == (r[F.RECORD_VIDEO_ID] != b'3/e.jpg')


def test_labels_nan_and_one_hot(built):
  train, val = _by_id(built['train']), _by_id(built['validation'])
  a = train['12/a.jpg']
  assert a[F.RECORD_VALENCE] == pytest.approx(0.5)
  assert a[F.RECORD_AROUSAL] == pytest.approx(-0.25)
  np.testing.assert_array_equal(a[F.RECORD_EMOTIONS], np.eye(8)[1])
  b = train['12/b.png']
  assert np.isnan(b[F.RECORD_VALENCE])  # -2: not available.
  assert b[F.RECORD_AROUSAL] == pytest.approx(0.3)
  np.testing.assert_array_equal(b[F.RECORD_EMOTIONS], np.eye(8)[0])
  np.testing.assert_array_equal(train['7/d.jpg'][F.RECORD_EMOTIONS],
                                np.eye(8)[7])
  assert train['7/d.jpg'][F.RECORD_VALENCE] == -1
  # Expressions 9 (uncertain) and 10 (no-face): kept, no emotion.
  assert not train['7/c.jpg'][F.RECORD_EMOTIONS].any()
  e = val['3/e.jpg']
  assert not e[F.RECORD_EMOTIONS].any()
  assert not e[F.RECORD_HAS_FACE]  # No-face (10).
  assert np.isnan(e[F.RECORD_VALENCE]) and np.isnan(e[F.RECORD_AROUSAL])
  np.testing.assert_array_equal(val['3/f.jpg'][F.RECORD_EMOTIONS],
                                np.eye(8)[3])
  assert affectnet.AffectNet.EMOTION_NAMES[3] == 'surprise'


def test_shipped_box_and_landmarks_in_crop(built):
  train = _by_id(built['train'])
  k = 1  # 12/a.jpg
  r = train[ROWS[k][1]]
  x, y, w, h = ROWS[k][2]
  box = np.array([y, x, y + h, x + w], np.float32)
  crop = face.crop_face(np.zeros((H, W, 3), np.uint8), box, 32, 0.2)
  np.testing.assert_allclose(r[F.RECORD_BOX], crop.box_to_crop(box),
                             atol=1e-5)
  np.testing.assert_allclose(r[F.RECORD_LANDMARKS],
                             crop.to_crop(_landmarks(k)), atol=1e-3)
  assert 0.1 < r[F.RECORD_BOX][0] < r[F.RECORD_BOX][2] < 0.9
  # The crop is centred on the face (the coloured box), not the image.
  image = np.asarray(Image.open(io.BytesIO(r[F.RECORD_IMAGE])))
  assert image.shape == (32, 32, 3)
  np.testing.assert_allclose(image[16, 16], FACE_COLOR, atol=12)


def test_whole_frame_and_dropped_non_emotions(copy_dir, tmp_path):
  records = _records(_build(copy_dir, tmp_path / 'out', shipped_box=False,
                            keep_non_emotions=False))
  assert [r[F.RECORD_VIDEO_ID].decode() for r in records['train']] == [
      '12/a.jpg', '12/b.png', '7/d.jpg']
  assert [r[F.RECORD_VIDEO_ID].decode() for r in records['validation']] == [
      '3/f.jpg']
  r = records['train'][0]
  crop = face.crop_face(np.zeros((H, W, 3), np.uint8), None, 32, 0.0)
  np.testing.assert_allclose(r[F.RECORD_LANDMARKS],
                             crop.to_crop(_landmarks(1)), atol=1e-3)
  assert not r[F.RECORD_BOX].any()  # Whole image: no box.


def _corrupt(copy_dir, tmp_path, k, line):
  """A copy whose training.csv has row k (0-based in ROWS) replaced."""
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  path = root / LISTS / 'training.csv'
  lines = path.read_text().splitlines()
  lines[k + 1] = line
  path.write_text('\n'.join(lines) + '\n')
  return root, path


@pytest.mark.parametrize('k,edit,message', [
    (1, lambda l: l.replace(',0.5,', ',1.5,'),
     'line 3: valence 1.5 is outside \\[-1, 1\\]'),
    (1, lambda l: l.replace(',1,0.5,', ',11,0.5,'),
     'line 3: expression 11 is not a code 0-10'),
    (2, lambda l: l.replace('7/c.jpg,4,', '7/c.jpg,four,'),
     'line 4: face_x "four" is not a number'),
    (0, lambda l: l + ',extra', 'line 2: 10 columns instead of 9'),
    (3, lambda l: l.replace(';', ';x;', 1),
     'line 5: facial_landmarks has 137 values instead of 136'),
    (3, lambda l: l.replace(';', 'q;', 1),
     'line 5: facial_landmarks value 1 ".*q" is not a number'),
    (1, lambda l: l.replace(',-0.25', ',-2.5'),
     'line 3: arousal -2.5 is outside'),
])
def test_bad_rows_name_file_and_line(copy_dir, tmp_path, k, edit, message):
  root, path = _corrupt(copy_dir, tmp_path, k, edit(_line(k)))
  with pytest.raises(AffectJaxError, match=f'{path} {message}'):
    affectnet.read_csv(str(path))


def test_header_checked_or_absent(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  path = root / LISTS / 'validation.csv'
  lines = path.read_text().splitlines()
  path.write_text('\n'.join(lines[1:]) + '\n')  # No header: still read.
  rows = affectnet.read_csv(str(path))
  assert rows.images == ['3/e.jpg', '3/f.jpg']
  np.testing.assert_array_equal(rows.lines, [1, 2])
  np.testing.assert_allclose(rows.landmarks[1], _landmarks(5), atol=0.01)
  path.write_text('\n'.join(['path,x,y,w,h,marks,expr,v,a'] + lines[1:]))
  with pytest.raises(AffectJaxError,
                     match=f'{path} line 1: expected the header'):
    affectnet.read_csv(str(path))


def _videos(root, **config):
  builder = affectnet.AffectNet(
      data_dir=str(root / 'unused'), config=affectnet.AffectNetConfig(
          name='t', **config))
  return builder._videos(str(root))  # pylint: disable=protected-access


def test_image_listed_twice_is_an_error(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  path = root / LISTS / 'validation.csv'
  path.write_text(path.read_text() + _line(1) + '\n')
  with pytest.raises(AffectJaxError, match=(
      f'{path} line 4: image 12/a.jpg is listed already '
      f'\\({root / LISTS / "training.csv"} line 3\\)')):
    _videos(root)
  shutil.rmtree(root / IMAGES)
  with pytest.raises(AffectJaxError, match='holds none of Manually_Annot'):
    _videos(root)


def test_image_folder_variant_and_automatic_config(copy_dir, tmp_path):
  root = tmp_path / 'copy'
  shutil.copytree(os.path.join(copy_dir, IMAGES),
                  root / 'Manually_Annotated' / IMAGES)
  shutil.copytree(os.path.join(copy_dir, LISTS), root / LISTS)
  specs = _videos(root)
  assert specs['train'][1].images == [
      str(root / 'Manually_Annotated' / IMAGES / '12' / 'a.jpg')]
  auto = root / 'Automatically_Annotated_file_lists'
  auto.mkdir()
  shutil.copy(root / LISTS / 'training.csv',
              auto / 'automatically_annotated.csv')
  (root / 'Automatically_Annotated_Images').mkdir()
  specs = _videos(root, annotations='automatic')
  assert list(specs) == ['train'] and len(specs['train']) == 4


def test_missing_image_error_and_skip_broken(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  missing = root / IMAGES / '7' / 'c.jpg'
  missing.unlink()
  with pytest.raises(AffectJaxError, match=f'Image {missing} does not exist'):
    _build(root, tmp_path / 'a')
  records = _records(_build(root, tmp_path / 'b', skip_broken=True))
  assert [r[F.RECORD_VIDEO_ID].decode() for r in records['train']] == [
      '12/a.jpg', '12/b.png', '7/d.jpg']
