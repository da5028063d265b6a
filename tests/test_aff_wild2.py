"""Aff-Wild2 (ABAW layout) builder on a tiny generated copy."""

import io
import logging
import os
import pickle
import shutil

import numpy as np
from PIL import Image
import pytest

from affect_jax import features as F
from affect_jax import input_pipeline
from affect_jax.errors import AffectJaxError
from tfds_builders.aff_wild2 import aff_wild2
from tfds_builders.core import video as video_lib
from tests import builder_util
from tests import fake_datasets

H, W, FPS = 48, 64, 30
CROP = 40  # Side of the generated cropped_aligned JPEGs (112 in the release).
# CROPPED has cropped_aligned/ images 00001..00010 without 00003 and 00006
# for 8 annotation rows, and a 5-frame raw video that 'auto' must not use.
# RAW has only a raw video (12 frames, 10 rows). PAIR is a raw video with
# two people: PAIR_left / PAIR_right annotations.
CROPPED, RAW, PAIR = '1-30-1280x720', 'video2', '10-60-1280x720'
LEFT, RIGHT = f'{PAIR}_left', f'{PAIR}_right'
IMAGES, MISSING = 10, (3, 6)  # 1-based image numbers.
VIDEO_FRAMES = {CROPPED: 5, RAW: 12, PAIR: 6}
ROWS = {CROPPED: 8, RAW: 10, LEFT: 6, RIGHT: 6}
VA_SPLITS = {CROPPED: 'Train_Set', LEFT: 'Train_Set', RIGHT: 'Train_Set',
             RAW: 'Validation_Set'}
NO_VA_ROW = 4  # CROPPED's row 4 is "-5,-5".
# EXPR: video -> (split folder, header classes, one class per row).
EXPR = {CROPPED: ('Train_Set', 7, [0, 1, 2, -1, 4, 5, 6, 0]),
        LEFT: ('Train_Set', 8, [6, 7, 0, 1, 2, 3]),
        RAW: ('Validation_Set', 8, [7, 1, 1, 2, 2, 3, 3, 4, 4, 5])}


def _image_level(k):  # Grey level of cropped image k (1-based).
  return 20 * k


def _video_level(vid, j):  # Grey level of raw video frame j.
  return 250 if vid == CROPPED else 10 + 15 * j


def _va_rows(vid):
  k = sorted(ROWS).index(vid)
  rows = [(round(0.3 + 0.05 * k - 0.1 * i, 3),
           round(-0.2 - 0.05 * k + 0.08 * i, 3)) for i in range(ROWS[vid])]
  if vid == CROPPED:
    rows[NO_VA_ROW] = (-5, -5)
  return rows


def _write_copy(root):
  folder = os.path.join(root, 'cropped_aligned', CROPPED)
  os.makedirs(folder)
  for k in range(1, IMAGES + 1):
    if k not in MISSING:
      Image.fromarray(np.full((CROP, CROP, 3), _image_level(k), np.uint8)
                      ).save(os.path.join(folder, f'{k:05d}.jpg'), quality=95)
  os.makedirs(os.path.join(root, 'videos'))
  for vid, frames in VIDEO_FRAMES.items():
    video_lib.write_video(
        os.path.join(root, 'videos', f'{vid}.mp4'),
        (np.full((H, W, 3), _video_level(vid, j), np.uint8)
         for j in range(frames)), FPS)
  ann = os.path.join(root, 'Annotations')
  for vid, split in VA_SPLITS.items():
    fake_datasets.write_lines(
        os.path.join(ann, 'VA_Estimation_Challenge', split, f'{vid}.txt'),
        ['valence,arousal'] + [f'{v},{a}' for v, a in _va_rows(vid)])
  for vid, (split, classes, rows) in EXPR.items():
    fake_datasets.write_lines(
        os.path.join(ann, 'EXPR_Recognition_Challenge', split, f'{vid}.txt'),
        [','.join(aff_wild2.EXPR_CLASSES[:classes])] + [str(r) for r in rows])
  return root


@pytest.fixture(scope='module')
def copy_dir(tmp_path_factory):
  return _write_copy(str(tmp_path_factory.mktemp('aff_wild2_copy')))


def _builder(data_dir, **config):
  return aff_wild2.AffWild2(
      data_dir=str(data_dir), config=aff_wild2.AffWild2Config(
          name='t', detector='none', landmarks='none', image_size=32,
          **config))


def _build(root, data_dir, **config):
  return builder_util.build(aff_wild2.AffWild2, aff_wild2.AffWild2Config,
                            root, data_dir, **config)


def _load(builder):
  """{split: (SplitData, {video id: [record, ...]})}."""
  out = {}
  names = tuple(builder.info.metadata['emotion_names'])
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    data = input_pipeline.index_split(source, split, names)
    records = {}
    for i in range(len(source)):
      r = source[i]
      records.setdefault(r[F.RECORD_VIDEO_ID].decode(), []).append(r)
    out[split] = (data, records)
  return out


@pytest.fixture(scope='module')
def va(copy_dir, tmp_path_factory):
  builder = _build(copy_dir, tmp_path_factory.mktemp('va'), labels='va')
  return builder, _load(builder)


@pytest.fixture(scope='module')
def expr(copy_dir, tmp_path_factory):
  builder = _build(copy_dir, tmp_path_factory.mktemp('expr'), labels='expr')
  return builder, _load(builder)


def _pixels(record):
  return np.asarray(Image.open(io.BytesIO(record[F.RECORD_IMAGE])))


def test_va_splits_counts_and_subjects(va):
  builder, splits = va
  assert sorted(splits) == ['train', 'validation']
  assert builder.info.metadata['emotion_names'] == []
  train, _ = splits['train']
  assert train.video_ids == [CROPPED, LEFT, RIGHT]
  # Rows, not images (10) or decoded frames (5) of CROPPED.
  assert list(train.lengths) == [8, 6, 6]
  assert train.subject_ids == [CROPPED, PAIR, PAIR]
  validation, records = splits['validation']
  assert validation.video_ids == [RAW]
  # 12 decoded frames, 10 rows: the frames past the last row are dropped.
  assert list(validation.lengths) == [10]
  assert [int(r[F.RECORD_FRAME_INDEX]) for r in records[RAW]] == list(
      range(10))
  assert validation.emotions.shape == (10, 0)


def test_va_values_and_no_label_rows(va):
  _, splits = va
  for split, vid in (('train', CROPPED), ('train', RIGHT),
                     ('validation', RAW)):
    data, _ = splits[split]
    start = data.starts[data.video_ids.index(vid)]
    rows = _va_rows(vid)
    for i in range(ROWS[vid]):
      if vid == CROPPED and i == NO_VA_ROW:
        # "-5,-5": no label, the frame is kept with NaN.
        assert np.isnan(data.valence[start + i])
        assert np.isnan(data.arousal[start + i])
        continue
      assert data.valence[start + i] == pytest.approx(rows[i][0], abs=1e-6)
      assert data.arousal[start + i] == pytest.approx(rows[i][1], abs=1e-6)


def test_cropped_aligned_images_by_row(va):
  _, splits = va
  records = splits['train'][1][CROPPED]
  assert len(records) == ROWS[CROPPED]
  for i, r in enumerate(records):
    pixels = _pixels(r)
    assert pixels.shape == (32, 32, 3)
    if i + 1 in MISSING:
      # No image: stored black without a face, not dropped.
      assert not r[F.RECORD_HAS_FACE] and pixels.max() == 0
      continue
    assert r[F.RECORD_HAS_FACE]
    # Frame i is image i + 1 (not the raw video, whose frames are 250).
    assert abs(pixels.mean() - _image_level(i + 1)) < 4, i
    np.testing.assert_allclose(r[F.RECORD_BOX], [0, 0, 1, 1])
    assert r[F.RECORD_TIME] == pytest.approx(i / 30)


def test_raw_video_frames_by_index(va):
  _, splits = va
  for split, vid, video in (('validation', RAW, RAW), ('train', LEFT, PAIR)):
    records = splits[split][1][vid]
    for j, r in enumerate(records):
      assert r[F.RECORD_HAS_FACE]
      # The centre: the whole 48x64 frame is padded black to a square.
      centre = _pixels(r)[10:22, 10:22]
      assert abs(centre.mean() - _video_level(video, j)) < 6, (vid, j)


def test_expr_one_hot_and_unlabelled_rows(expr):
  builder, splits = expr
  assert tuple(builder.info.metadata['emotion_names']) == aff_wild2.EXPR_NAMES
  assert aff_wild2.EXPR_NAMES[-1] == 'other'
  assert splits['train'][0].video_ids == [CROPPED, LEFT]
  assert splits['validation'][0].video_ids == [RAW]
  for vid, (folder, _, rows) in EXPR.items():
    data, _ = splits[aff_wild2._SPLITS[folder]]
    start = data.starts[data.video_ids.index(vid)]
    assert data.lengths[data.video_ids.index(vid)] == len(rows)
    for i, label in enumerate(rows):
      emotions = data.emotions[start + i]
      assert emotions.shape == (8,)
      if label == -1:
        assert np.isnan(emotions).all()  # Kept, masked as unlabelled.
      else:
        np.testing.assert_array_equal(emotions, np.eye(8)[label])
    assert np.isnan(data.valence[start:start + len(rows)]).all()
  # 'other' (7) from the 8-class header; the 7-class file never sets it.
  counts = splits['train'][0].emotion_counts()
  assert counts[7] == 1 and counts[0] == 3


def test_specs_sources_and_pick(copy_dir, tmp_path):
  specs = {s.video_id: s for split in _builder(tmp_path / 'a')._videos(
      copy_dir).values() for s in split}
  cropped = specs[CROPPED]
  assert cropped.aligned and cropped.path.endswith(f'cropped_aligned/'
                                                   f'{CROPPED}')
  assert len(cropped.images) == ROWS[CROPPED]
  assert [p is None for p in cropped.images] == [
      i + 1 in MISSING for i in range(ROWS[CROPPED])]
  assert cropped.images[7].endswith('00008.jpg')
  for vid, pick in ((LEFT, 'left'), (RIGHT, 'right')):
    assert specs[vid].pick == pick and specs[vid].images is None
    assert specs[vid].path == os.path.join(copy_dir, 'videos', f'{PAIR}.mp4')
    assert specs[vid].subject_id == PAIR
  assert specs[RAW].pick == 'largest' and not specs[RAW].aligned
  # Build workers are spawned: the specs (labels, checks) must pickle.
  again = pickle.loads(pickle.dumps(specs[RAW]))
  assert again.labels(3, 0.1).valence == pytest.approx(_va_rows(RAW)[3][0])
  assert again.labels(ROWS[RAW], 0.0) is None  # Past the last row: dropped.
  # frames='videos': the raw video of CROPPED.
  specs = {s.video_id: s for split in _builder(
      tmp_path / 'b', frames='videos')._videos(copy_dir).values()
           for s in split}
  assert specs[CROPPED].images is None
  assert specs[CROPPED].path.endswith(f'videos/{CROPPED}.mp4')
  # frames='cropped_aligned': the raw-video-only annotations are errors.
  with pytest.raises(AffectJaxError, match=f'{LEFT}.txt has no frames: .*'
                     f'cropped_aligned/{LEFT}/ is missing'):
    _builder(tmp_path / 'c', frames='cropped_aligned')._videos(copy_dir)


def _copy(copy_dir, tmp_path):
  return shutil.copytree(copy_dir, tmp_path / 'copy')


def _replace_line(path, number, text):
  lines = path.read_text().splitlines()
  lines[number - 1] = text
  path.write_text('\n'.join(lines) + '\n')


def test_parse_errors_name_file_and_line(copy_dir, tmp_path):
  root = _copy(copy_dir, tmp_path)
  va_path = (root / 'Annotations' / 'VA_Estimation_Challenge' / 'Train_Set' /
             f'{CROPPED}.txt')
  cases = [
      (1, 'valence;arousal', 'line 1: the header must be "valence,arousal"'),
      (3, '0.2,1.5', 'line 3: arousal 1.5 is outside \\[-1, 1\\]'),
      (4, '0.2', 'line 4: 1 field\\(s\\) instead of 2'),
      (5, '0.2,nan', 'line 5: arousal nan is outside'),
      (5, '', 'line 5: empty row'),
  ]
  original = va_path.read_text()
  for number, text, message in cases:
    _replace_line(va_path, number, text)
    with pytest.raises(AffectJaxError, match=f'{va_path} {message}'):
      aff_wild2.read_va(str(va_path))
    va_path.write_text(original)
  expr_dir = root / 'Annotations' / 'EXPR_Recognition_Challenge' / 'Train_Set'
  seven, eight = expr_dir / f'{CROPPED}.txt', expr_dir / f'{LEFT}.txt'
  assert aff_wild2.read_expr(str(seven))[1] == 7
  labels, classes = aff_wild2.read_expr(str(eight))
  assert classes == 8 and list(labels) == EXPR[LEFT][2]
  _replace_line(seven, 2, '7')  # 'Other' without the 8-class header.
  with pytest.raises(AffectJaxError,
                     match=f'{seven} line 2: class 7 is outside 0..6'):
    aff_wild2.read_expr(str(seven))
  _replace_line(eight, 3, '1,2')
  with pytest.raises(AffectJaxError,
                     match=f'{eight} line 3: 2 fields instead of 1'):
    aff_wild2.read_expr(str(eight))
  _replace_line(eight, 1, 'Neutral,Anger,Disgust')
  with pytest.raises(AffectJaxError, match=f'{eight} line 1: the header'):
    aff_wild2.read_expr(str(eight))
  # Through the builder: the build stops before decoding anything.
  va_path.write_text(original)
  _replace_line(va_path, 6, '1.5,0.1')
  with pytest.raises(AffectJaxError, match=f'{va_path} line 6: valence 1.5 '
                     'is outside'):
    _build(root, tmp_path / 'out', labels='va')


def test_layout_errors_and_old_spelling(copy_dir, tmp_path):
  root = _copy(copy_dir, tmp_path)
  ann = root / 'Annotations'
  # Older releases: annotations/VA_Set/.
  os.rename(ann, root / 'annotations')
  os.rename(root / 'annotations' / 'VA_Estimation_Challenge',
            root / 'annotations' / 'VA_Set')
  splits = _builder(tmp_path / 'a')._videos(str(root))
  assert [s.video_id for s in splits['validation']] == [RAW]
  shutil.rmtree(root / 'annotations' / 'VA_Set' / 'Validation_Set')
  with pytest.raises(AffectJaxError, match='Validation_Set is missing'):
    _builder(tmp_path / 'a')._videos(str(root))
  shutil.rmtree(root / 'annotations' / 'VA_Set')
  with pytest.raises(AffectJaxError,
                     match='Annotations/VA_Estimation_Challenge is missing'):
    _builder(tmp_path / 'a')._videos(str(root))
  # Annotations one folder too deep: named in the message.
  os.rename(root / 'annotations', root / 'ABAW')
  with pytest.raises(AffectJaxError, match='but .*ABAW/EXPR_Recognition_'
                     'Challenge exists; move it there'):
    _builder(tmp_path / 'a', labels='expr')._videos(str(root))


def test_frame_source_errors(copy_dir, tmp_path):
  root = _copy(copy_dir, tmp_path)
  (root / 'videos' / f'{RAW}.mp4').unlink()
  ann = root / 'Annotations' / 'VA_Estimation_Challenge' / 'Validation_Set'
  with pytest.raises(AffectJaxError, match=f'{ann}/{RAW}.txt has no frames: '
                     f'neither .*cropped_aligned/{RAW}/ nor .*videos/{RAW}'):
    _builder(tmp_path / 'a')._videos(str(root))
  (root / 'videos' / f'{PAIR}.mp4').rename(root / 'videos' / f'{RAW}.mp4')
  with pytest.raises(AffectJaxError, match=f'{LEFT}.txt has no frames'):
    _builder(tmp_path / 'a')._videos(str(root))
  # cropped_aligned/ under a parent folder, or nested in itself.
  shutil.copy(root / 'videos' / f'{RAW}.mp4', root / 'videos' / f'{PAIR}.mp4')
  os.makedirs(root / 'AffWild2')
  os.rename(root / 'cropped_aligned', root / 'AffWild2' / 'cropped_aligned')
  with pytest.raises(AffectJaxError, match='cropped_aligned is missing but '
                     '.*AffWild2/cropped_aligned exists'):
    _builder(tmp_path / 'a')._videos(str(root))
  assert _builder(tmp_path / 'a', frames='videos')._videos(str(root))
  os.makedirs(root / 'cropped_aligned')
  os.rename(root / 'AffWild2' / 'cropped_aligned',
            root / 'cropped_aligned' / 'cropped_aligned')
  with pytest.raises(AffectJaxError, match='cropped_aligned is nested'):
    _builder(tmp_path / 'a')._videos(str(root))
  # 0-based frame names are not the release's numbering.
  os.rename(root / 'cropped_aligned' / 'cropped_aligned' / CROPPED,
            root / 'cropped_aligned' / CROPPED)
  shutil.rmtree(root / 'cropped_aligned' / 'cropped_aligned')
  shutil.copy(root / 'cropped_aligned' / CROPPED / '00001.jpg',
              root / 'cropped_aligned' / CROPPED / '00000.jpg')
  with pytest.raises(AffectJaxError, match='00000.jpg: Aff-Wild2 numbers'):
    _builder(tmp_path / 'a')._videos(str(root))


def test_config_checks(tmp_path):
  with pytest.raises(AffectJaxError, match="labels='au'"):
    _builder(tmp_path, labels='au')
  with pytest.raises(AffectJaxError, match="frames='raw'"):
    _builder(tmp_path, frames='raw')
  assert [c.name for c in aff_wild2.AffWild2.BUILDER_CONFIGS] == [
      'va', 'expr', 'va_whole_frame', 'expr_whole_frame']


def test_row_count_mismatch_warning_and_error(caplog):
  check = aff_wild2.RowCheck('v.mp4', 'v.txt', 1000, 30)
  with caplog.at_level(logging.WARNING):
    check(1000)
    assert not caplog.records
    check(1030)  # Up to 30 frames off: a warning, as in the release.
  assert ('v.mp4: 1030 decoded frames, v.txt covers 1000 rows (within the '
          '30-frame slack)') in caplog.text
  # A video far longer than its rows, or rows far past the video's end.
  with pytest.raises(AffectJaxError, match=r'v.mp4 decodes 1031 frames but '
                     r'v.txt covers only 1000 rows \(31 fewer\)'):
    check(1031)
  with pytest.raises(AffectJaxError, match=r'the labels run 500 frames past '
                     r'the end of the video: v.txt covers 1000 rows but '
                     r'v.mp4 decodes 500 frames.*--skip_broken'):
    check(500)
