"""RECOLA (AVEC 2016 layout) builder on a tiny generated copy."""

import multiprocessing
import os
import shutil

import numpy as np
import pytest

from affect_jax import features as F
from affect_jax import input_pipeline
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import annotations
from tfds_builders.core import video as video_lib
from tfds_builders.recola import recola
from tests import builder_util
from tests import fake_datasets

# Recording -> (fps, frames). train_2 runs at 50 fps so that every other frame
# falls half-way between two 40 ms label rows.
VIDEOS = {'train_1': (25, 10), 'train_2': (50, 20), 'dev_1': (25, 10)}
ROWS = 11  # 0.00 .. 0.40 s.


def _gold(rec: str, dim: str) -> np.ndarray:
  """The rating written for row r: distinct per recording and dimension."""
  base = {'train_1': 0.1, 'train_2': -0.3, 'dev_1': 0.5, 'test_1': 0.0}[rec]
  return (base + (0.01 if dim == 'arousal' else -0.02) *
          np.arange(ROWS)).round(6)


def _raters(rec: str, dim: str) -> np.ndarray:
  """[ROWS, 6] ratings: FM3 and FF1 follow the gold standard closely, FM1
  and FF3 with large wiggles, FM2 and FF2 are noise uncorrelated with it."""
  g = _gold(rec, dim)
  wiggle = 0.015 * np.resize([1, -1, -1, 1], ROWS)
  noise = 0.3 * np.resize([1, -1], ROWS), 0.3 * np.resize([1, 1, -1, -1],
                                                         ROWS)
  return np.stack([g + 4 * wiggle, noise[0], g, 0.5 * g + 0.5 * wiggle,
                   noise[1], g - 3 * wiggle], axis=1).round(6)


# Raters of _raters in order of agreement: the correlated four, then noise.
CORRELATED = [0, 2, 3, 5]  # FM1, FM3, FF1, FF3.
TOP_TWO = [2, 3]  # FM3, FF1.


def _write_copy(root, videos=VIDEOS, labelled=VIDEOS):
  os.makedirs(os.path.join(root, 'recordings_video'), exist_ok=True)
  for folder in ('ratings_gold_standard', 'ratings_individual'):
    for dim in ('arousal', 'valence'):
      os.makedirs(os.path.join(root, folder, dim), exist_ok=True)
  for rec, (fps, n) in videos.items():
    rng = np.random.default_rng(len(rec))
    video_lib.write_video(
        os.path.join(root, 'recordings_video', f'{rec}.mp4'),
        (rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(n)), fps)
  for rec in labelled:
    for dim in ('arousal', 'valence'):
      fake_datasets.write_arff(
          os.path.join(root, 'ratings_gold_standard', dim, f'{rec}.arff'),
          rec, _gold(rec, dim))
      fake_datasets.write_raters(
          os.path.join(root, 'ratings_individual', dim, f'{rec}.csv'),
          _raters(rec, dim))
  return root


@pytest.fixture(scope='module')
def copy_dir(tmp_path_factory):
  return _write_copy(str(tmp_path_factory.mktemp('recola_copy')))


def _build(root, out, **config):
  return builder_util.build(recola.Recola, recola.RecolaConfig, root, out,
                            **config)


@pytest.fixture(scope='module')
def built(copy_dir, tmp_path_factory):
  builder = _build(copy_dir, tmp_path_factory.mktemp('recola_tfds'))
  return builder, {
      s: input_pipeline.index_split(builder.as_data_source(s), s, ())
      for s in builder.info.splits}


def test_splits_map_train_and_dev(built):
  builder, splits = built
  assert sorted(builder.info.splits) == ['train', 'validation']
  assert splits['train'].video_ids == ['train_1', 'train_2']
  assert splits['validation'].video_ids == ['dev_1']
  assert list(splits['train'].lengths) == [10, 20]
  # Each recording is its own subject.
  assert splits['validation'].subject_ids == ['dev_1']
  assert splits['train'].emotions.shape == (30, 0)


def test_labels_matched_by_time(built):
  _, splits = built
  train = splits['train']
  for name, split in (('train_1', train), ('dev_1', splits['validation'])):
    start = split.starts[split.video_ids.index(name)]
    for i in (0, 3, 9):  # 25 fps: frame i is exactly row i.
      assert split.arousal[start + i] == pytest.approx(
          _gold(name, 'arousal')[i], abs=1e-6)
      assert split.valence[start + i] == pytest.approx(
          _gold(name, 'valence')[i], abs=1e-6)
  # 50 fps: even frames sit on row i / 2, odd frames half-way -> the mean.
  start = train.starts[1]
  a = _gold('train_2', 'arousal')
  assert train.arousal[start + 4] == pytest.approx(a[2], abs=1e-6)
  assert train.arousal[start + 5] == pytest.approx((a[2] + a[3]) / 2,
                                                   abs=1e-6)
  r = train.source[int(start + 5)]
  assert r[F.RECORD_TIME] == pytest.approx(0.1, abs=1e-5)
  assert bool(r[F.RECORD_HAS_FACE])  # detector 'none': the whole frame.


def test_match_by_time_nearest_and_ties():
  gold = recola.LabelTrack('x.arff', np.arange(3) * 0.04,
                             np.array([0., 1., 3.], np.float32), 8)
  assert recola.match_by_time(gold, 0.015) == 0.0
  assert recola.match_by_time(gold, 0.025) == 1.0
  assert recola.match_by_time(gold, 0.06) == 2.0  # Tie: mean of 1 and 3.
  assert recola.match_by_time(gold, 0.5) == 3.0


def test_test_split_only_with_labels(tmp_path):
  videos = {'train_1': (25, 4), 'test_1': (25, 4)}
  root = _write_copy(str(tmp_path / 'a'), videos, labelled=['train_1'])
  assert sorted(_build(root, tmp_path / 'oa').info.splits) == ['train']
  root = _write_copy(str(tmp_path / 'b'), videos, labelled=videos)
  assert sorted(_build(root, tmp_path / 'ob').info.splits) == ['test',
                                                               'train']


def _corrupt(copy_dir, tmp_path, rec, dim, edit,
             file='ratings_gold_standard/{dim}/{rec}.arff'):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  path = root / file.format(dim=dim, rec=rec)
  path.write_text(edit(path.read_text()))
  return root, str(path)


def test_wrong_header_names_file_and_line(copy_dir, tmp_path):
  root, path = _corrupt(copy_dir, tmp_path, 'dev_1', 'valence',
                        lambda s: s.replace('frameTime', 'time'))
  with pytest.raises(AffectJaxError, match=f'{path} line 3: expected'):
    _build(root, tmp_path / 'out')


def test_missing_row_names_file_and_line(copy_dir, tmp_path):
  def drop_row(text):
    lines = text.splitlines()
    del lines[5 + 3]  # Header is 5 lines; drop the row of 0.12 s.
    return '\n'.join(lines)
  root, path = _corrupt(copy_dir, tmp_path, 'train_1', 'arousal', drop_row)
  with pytest.raises(AffectJaxError,
                     match=f'{path} line 9: frameTime 0.16 instead of 0.12'):
    _build(root, tmp_path / 'out')


def test_truncated_arff_is_an_error(copy_dir, tmp_path):
  def truncate(text):
    return '\n'.join(text.splitlines()[:5 + 6])  # Rows up to 0.20 s.
  root, path = _corrupt(copy_dir, tmp_path, 'dev_1', 'arousal', truncate)
  # Arousal and valence disagree in length.
  with pytest.raises(AffectJaxError, match=f'{path} has 6 rows'):
    _build(root, tmp_path / 'out')
  valence = root / 'ratings_gold_standard' / 'valence' / 'dev_1.arff'
  valence.write_text(truncate(valence.read_text()))
  # Both truncated: the video runs past the labels.
  with pytest.raises(AffectJaxError,
                     match=f'end at 0.20s \\({path} line 11\\).*truncated'):
    _build(root, tmp_path / 'out2')


def _reference_fusion(ratings, k):
  """np.corrcoef ranking: mean correlation with the other raters."""
  corr = np.corrcoef(ratings.T)
  agreement = (corr.sum(axis=1) - 1) / (ratings.shape[1] - 1)
  chosen = np.argsort(-agreement, kind='stable')[:k]
  return ratings[:, chosen].mean(axis=1), chosen


def test_fuse_raters_averages_the_most_correlated():
  for rec, dim in (('train_1', 'arousal'), ('dev_1', 'valence')):
    ratings = _raters(rec, dim)
    for k, expected in ((4, CORRELATED), (2, TOP_TWO), (6, range(6))):
      fused, chosen = annotations.fuse_raters(ratings, k)
      assert sorted(chosen) == list(expected)
      want, want_chosen = _reference_fusion(ratings, k)
      assert list(chosen) == list(want_chosen)
      np.testing.assert_allclose(fused, want, atol=1e-6)
      np.testing.assert_allclose(fused, ratings[:, expected].mean(axis=1),
                                 atol=1e-6)
  # A rater who never moves has no correlation: it ranks last.
  ratings = _raters('train_1', 'arousal')
  ratings[:, 2] = 0.25
  with np.errstate(all='raise'):
    fused, chosen = annotations.fuse_raters(ratings, 6)
  assert chosen[-1] == 2
  np.testing.assert_allclose(fused, ratings.mean(axis=1), atol=1e-6)
  with pytest.raises(AffectJaxError, match='k=7 raters out of range'):
    annotations.fuse_raters(ratings, 7)


@pytest.fixture(scope='module')
def built_raters(copy_dir, tmp_path_factory):
  out = {}
  for k in (4, 2):
    builder = _build(copy_dir, tmp_path_factory.mktemp(f'recola_r{k}'),
                     labels='raters', num_raters=k)
    out[k] = {s: input_pipeline.index_split(builder.as_data_source(s), s, ())
              for s in builder.info.splits}
  return out


def test_rater_labels_fused_and_matched_by_time(built_raters):
  for k, raters in ((4, CORRELATED), (2, TOP_TWO)):
    splits = built_raters[k]
    for name, split in (('train_1', splits['train']),
                        ('dev_1', splits['validation'])):
      start = split.starts[split.video_ids.index(name)]
      for i in (0, 3, 9):  # 25 fps: frame i is exactly row i.
        for dim in ('arousal', 'valence'):
          assert getattr(split, dim)[start + i] == pytest.approx(
              _raters(name, dim)[i, raters].mean(), abs=1e-6)
    # 50 fps: odd frames are half-way between rows -> mean of the fused rows.
    train = splits['train']
    fused = _raters('train_2', 'arousal')[:, raters].mean(axis=1)
    assert train.arousal[train.starts[1] + 5] == pytest.approx(
        (fused[2] + fused[3]) / 2, abs=1e-6)
  # The number of raters changes the labels (the gold standard is unused).
  assert not np.allclose(built_raters[4]['train'].arousal,
                         built_raters[2]['train'].arousal)


def test_rater_file_errors_name_file_and_line(copy_dir, tmp_path):
  csv = 'ratings_individual/{dim}/{rec}.csv'
  root, path = _corrupt(copy_dir, tmp_path / 'a', 'dev_1', 'valence',
                        lambda s: s.replace('FF2 ', 'FF4 '), csv)
  with pytest.raises(AffectJaxError,
                     match=f'{path} line 1: header must be "time;FM1 ;'):
    _build(root, tmp_path / 'oa', labels='raters')

  def truncate_row(text):
    lines = text.splitlines()
    lines[4] = ';'.join(lines[4].split(';')[:4])  # The row of 0.12 s.
    return '\n'.join(lines)
  root, path = _corrupt(copy_dir, tmp_path / 'b', 'train_2', 'arousal',
                        truncate_row, csv)
  with pytest.raises(AffectJaxError,
                     match=f'{path} line 5: 4 fields instead of 7'):
    _build(root, tmp_path / 'ob', labels='raters')


@pytest.mark.parametrize('cell, error', [
    ('abc', 'FF1 "abc" is not a number'),
    ('nan', r'FF1 nan is outside \[-1, 1\]'),
    ('1.5', r'FF1 1.5 is outside \[-1, 1\]'),
])
def test_read_raters_rejects_bad_cells(tmp_path, cell, error):
  path = tmp_path / 'dev_1.csv'
  fake_datasets.write_raters(path, _raters('dev_1', 'arousal'))
  lines = path.read_text().splitlines()
  cells = lines[3].split(';')
  cells[4] = cell
  lines[3] = ';'.join(cells)
  path.write_text('\n'.join(lines))
  with pytest.raises(AffectJaxError, match=f'{path} line 4: {error}'):
    recola.read_raters(str(path))
  with pytest.raises(AffectJaxError, match='missing.*ratings_individual'):
    recola.read_raters(str(tmp_path / 'nope.csv'))


def test_bad_label_config_is_an_error(tmp_path):
  with pytest.raises(AffectJaxError, match="labels='rater'"):
    _build(tmp_path, tmp_path / 'a', labels='rater')
  with pytest.raises(AffectJaxError, match='num_raters=7; use 1 to 6'):
    _build(tmp_path, tmp_path / 'b', labels='raters', num_raters=7)


def test_missing_recordings_folder(tmp_path):
  with pytest.raises(AffectJaxError, match='recordings_video is missing'):
    _build(tmp_path, tmp_path / 'out')


def test_worker_processes_write_the_same_records(copy_dir, built, tmp_path,
                                                 monkeypatch):
  builder, splits = built
  contexts = []
  get_context = multiprocessing.get_context
  monkeypatch.setattr(multiprocessing, 'get_context',
                      lambda m: contexts.append(m) or get_context(m))
  parallel = _build(copy_dir, tmp_path / 'out', num_workers=2)
  assert contexts == ['spawn']  # train has 2 videos: decoded in workers.
  for split in splits:
    a, b = builder.as_data_source(split), parallel.as_data_source(split)
    assert len(a) == len(b)
    for x, y in zip(a.__getitems__(list(range(len(a)))),
                    b.__getitems__(list(range(len(b))))):
      assert x[F.RECORD_IMAGE] == y[F.RECORD_IMAGE]
      for k in (F.RECORD_VIDEO_ID, F.RECORD_FRAME_INDEX, F.RECORD_AROUSAL):
        assert x[k] == y[k]


def test_variable_frame_rate_video_is_labelled_by_its_timestamps(tmp_path):
  # Frames at irregular times (ms): nearest row, a tie at 0.30 s averages
  # rows 7 (0.28) and 8 (0.32). An index / fps guess would be wrong here.
  times = [0.0, 0.04, 0.13, 0.30, 0.40]
  root = _write_copy(str(tmp_path / 'copy'), videos={},
                     labelled={'train_1': None})
  video_lib.write_video(
      os.path.join(root, 'recordings_video', 'train_1.mp4'),
      [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(len(times))],
      fps=25, times=times)
  builder = _build(root, tmp_path / 'out')
  source = builder.as_data_source('train')
  records = [source[i] for i in range(len(source))]
  np.testing.assert_allclose([r[F.RECORD_TIME] for r in records], times,
                             atol=1e-6)
  gold = _gold('train_1', 'valence')
  expected = [gold[0], gold[1], gold[3], (gold[7] + gold[8]) / 2, gold[10]]
  np.testing.assert_allclose([r[F.RECORD_VALENCE] for r in records],
                             expected, atol=1e-6)


def test_labels_far_past_the_video_are_an_error(copy_dir, tmp_path):
  # dev_1: 10 frames at 25 fps (0.00 .. 0.36 s); ROWS = 11 is the normal one
  # row at the video's end.
  root = shutil.copytree(copy_dir, tmp_path / 'copy')

  def rows(n):
    for dim in ('arousal', 'valence'):
      values = np.resize(_gold('dev_1', dim), n)
      fake_datasets.write_arff(
          str(root / 'ratings_gold_standard' / dim / 'dev_1.arff'), 'dev_1',
          values)
  rows(ROWS + 30)
  builder = _build(root, tmp_path / 'a')
  assert builder.info.splits['validation'].num_examples == 10
  rows(ROWS + 31)  # The video cut short under full labels.
  with pytest.raises(AffectJaxError, match=(
      r'labels run 31 frames past the end of the video: .*dev_1.arff covers '
      r'41 frames \(rows of 40 ms\) but .*dev_1.mp4 decodes 10 frames')):
    _build(root, tmp_path / 'b')
  # dev_1 is the only validation video: an empty split is an error too.
  with pytest.raises(AffectJaxError, match=(
      r"skip_broken left out every video of split 'validation', so it would "
      r'be empty: validation/dev_1: left out: the labels run 31 frames')):
    _build(root, tmp_path / 'c', skip_broken=True)
  assert not any('dataset_info' in f for _, _, fs in os.walk(tmp_path / 'c')
                 for f in fs)
