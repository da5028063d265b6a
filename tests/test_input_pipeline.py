"""Windowing, masking, indexing and augmentation of the grain pipeline."""

import io
import shutil

import ml_collections
import numpy as np
from PIL import Image
import pytest

from affect_jax import features as F
from affect_jax import input_pipeline as ip
from affect_jax.errors import AffectJaxError


class ListSource(list):
  """An in-memory stand-in for TFDS's random-access data source."""

  def __getitems__(self, keys):
    return [self[k] for k in keys]


def _jpeg(value: int, size: int = 20) -> bytes:
  img = np.full((size, size, 3), value, np.uint8)
  img[: size // 2, : size // 2] = 255 - value  # A corner to see crops.
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format='JPEG', quality=95)
  return buf.getvalue()


def _records(lengths, size=20):
  recs = []
  for v, n in enumerate(lengths):
    for i in range(n):
      emo = np.zeros(8, np.float32)
      emo[0 if i % 3 else 1] = 1.0
      recs.append({
          F.RECORD_IMAGE: _jpeg(10 * i % 250, size),
          F.RECORD_VIDEO_ID: f'vid{v}'.encode(),
          F.RECORD_SUBJECT_ID: f'subj{v}'.encode(),
          F.RECORD_FRAME_INDEX: np.int32(i),
          F.RECORD_VALENCE: np.float32(i / 100),
          F.RECORD_AROUSAL: np.float32(-i / 100),
          F.RECORD_EMOTIONS: emo,
          F.RECORD_LANDMARKS: np.full((68, 2), 0.5, np.float32),
      })
  return ListSource(recs)


def _input_cfg(window=4, image_size=16, resize_size=18):
  return ml_collections.ConfigDict(dict(
      window=window, train_stride=2, image_size=image_size,
      resize_size=resize_size, brightness_delta=0.1,
      saturation_range=(0.8, 1.2), normalization='unit', num_threads=1,
      prefetch_batches=2, num_workers=0))


def test_make_windows_eval_covers_every_frame_once():
  w = ip.make_windows(np.array([10, 3, 8]), window=4)
  covered = {}
  for v, s, n in w:
    for f in range(s, s + n):
      covered[(v, f)] = covered.get((v, f), 0) + 1
  assert len(covered) == 21 and set(covered.values()) == {1}
  # Last window of the 10-frame video holds 2 real frames; the short video 3.
  assert [tuple(r) for r in w if r[0] == 0] == [(0, 0, 4), (0, 4, 4),
                                                (0, 8, 2)]
  assert [tuple(r) for r in w if r[0] == 1] == [(1, 0, 3)]


def test_make_windows_train_overlap_and_tail():
  w = ip.make_windows(np.array([11]), window=4, stride=3)
  assert [tuple(r) for r in w] == [(0, 0, 4), (0, 3, 4), (0, 6, 4),
                                   (0, 7, 4)]


def test_index_split_finds_videos_and_rejects_unsorted():
  src = _records([5, 3])
  split = ip.index_split(src, 'fake/train')
  assert split.video_ids == ['vid0', 'vid1']
  np.testing.assert_array_equal(split.starts, [0, 5])
  np.testing.assert_array_equal(split.lengths, [5, 3])
  assert split.emotion_counts()[1] == 2 + 1  # frames 0, 3 and 0.
  shuffled = ListSource([src[0], src[5], src[1]])
  with pytest.raises(AffectJaxError, match='not grouped by video'):
    ip.index_split(shuffled, 'fake/train')
  backwards = ListSource([src[1], src[0]])
  with pytest.raises(AffectJaxError, match='increasing frame order'):
    ip.index_split(backwards, 'fake/train')


def test_eval_batches_pad_and_mask_the_tail():
  split = ip.index_split(_records([6, 3]), 'fake/validation')
  cfg = _input_cfg(window=4)
  ds = ip.eval_dataset(split, cfg, batch_size=2)
  batches = list(ip.iterate(ds, cfg))
  # Windows: (0,0,4) (0,4,2) (1,0,3) + one empty pad window -> 2 batches.
  assert len(batches) == 2
  b = batches[0]
  assert b[F.FRAMES].shape == (2, 4, 16, 16, 3)
  assert b[F.FRAMES].dtype == np.uint8
  np.testing.assert_array_equal(b[F.MASK], [[1, 1, 1, 1], [1, 1, 0, 0]])
  np.testing.assert_array_equal(b[ip.FRAME_INDEX][1], [4, 5, -1, -1])
  np.testing.assert_allclose(b[F.VALENCE][1, :2], [0.04, 0.05], atol=1e-6)
  assert np.isnan(b[F.VALENCE][1, 2:]).all()
  assert (b[F.FRAMES][1, 2:] == 0).all()
  last = batches[1]
  np.testing.assert_array_equal(last[F.MASK], [[1, 1, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(last[F.VIDEO_INDEX], [1, 0])
  total = sum(float(b[F.MASK].sum()) for b in batches)
  assert total == split.num_frames


def test_train_batches_deterministic_and_resumable():
  split = ip.index_split(_records([12, 9]), 'fake/train')
  cfg = _input_cfg(window=4)
  ds = ip.train_dataset(split, cfg, batch_size=2, seed=3)
  it = ip.iterate(ds, cfg)
  first = [next(it) for _ in range(5)]
  again = list(zip(range(3), ip.iterate(ds, cfg, start=2)))
  for (_, b), ref in zip(again, first[2:]):
    for k in ref:
      np.testing.assert_array_equal(b[k], ref[k])
  assert first[0][F.FRAMES].shape == (2, 4, 16, 16, 3)
  assert (first[0][F.MASK] == 1).all()
  other = next(ip.iterate(ip.train_dataset(split, cfg, 2, seed=4), cfg))
  assert not np.array_equal(other[F.FRAMES], first[0][F.FRAMES])


def test_augmentation_same_for_all_frames_of_a_window():
  src = ListSource(_records([4]))
  for r in src:  # identical frames: any difference comes from augmentation.
    r[F.RECORD_IMAGE] = _jpeg(100)
  split = ip.index_split(src, 'fake/train')
  loader = ip.LoadWindow(split, window=4, image_size=16, resize_size=20,
                         augment=True, brightness_delta=0.2,
                         saturation_range=(0.5, 1.5))
  out = loader(np.array([0, 0, 4]), np.random.default_rng(0))
  for i in range(1, 4):
    np.testing.assert_array_equal(out[F.FRAMES][i], out[F.FRAMES][0])
  plain = ip.LoadWindow(split, 4, 16, 20, augment=False)(np.array([0, 0, 4]))
  assert plain[F.FRAMES].shape == (4, 16, 16, 3)
  assert not np.array_equal(plain[F.FRAMES][0], out[F.FRAMES][0])


def test_rare_window_resampling():
  split = ip.index_split(_records([12]), 'fake/train')
  split.emotions[:] = 0
  split.emotions[:, 0] = 1  # all neutral
  split.emotions[4:8, 0] = 0
  split.emotions[4:8, 2] = 1  # frames 4..7: surprise only
  windows = ip.make_windows(split.lengths, 4)
  out = ip.rare_window_repeats(split, windows, repeats=4)
  starts = [int(s) for _, s, _ in out]
  assert starts.count(4) == 4 and starts.count(0) == 1 and starts.count(8) == 1


def test_missing_dataset_error_names_place_and_fix(tmp_path):
  cfg = ml_collections.ConfigDict(dict(
      name='realeyes', builder_config='', data_dir=str(tmp_path),
      train_split='train', eval_split='validation', test_split='test',
      build_if_missing=False))
  with pytest.raises(AffectJaxError) as e:
    ip.load_split(cfg, 'train')
  msg = str(e.value)
  assert str(tmp_path / 'realeyes') in msg
  assert 'affect_jax.prepare --dataset=realeyes' in msg


def test_normalize_modes():
  x = np.array([[0, 128, 255]], np.uint8)
  np.testing.assert_allclose(ip.normalize(x, 'symmetric'),
                             [[-1.0, 0.0, 127 / 128]])
  np.testing.assert_allclose(ip.normalize(x, 'unit'), [[0, 128 / 255, 1.0]])
  with pytest.raises(AffectJaxError, match='normalization'):
    ip.normalize(x, 'bogus')


def test_load_split_joins_splits_with_plus(tiny_data_dir):
  cfg = ml_collections.ConfigDict(dict(
      name='synthetic_faces', builder_config='tiny', data_dir=tiny_data_dir,
      build_if_missing=False))
  train = ip.load_split(cfg, 'train')
  validation = ip.load_split(cfg, 'validation')
  both = ip.load_split(cfg, 'train+validation')
  assert both.video_ids == train.video_ids + validation.video_ids
  assert both.starts[len(train.video_ids)] == len(train.source)
  np.testing.assert_array_equal(
      both.valence, np.concatenate([train.valence, validation.valence]))
  with pytest.raises(AffectJaxError, match="no split 'fold_9'"):
    ip.load_split(cfg, 'train+fold_9')


def test_split_index_is_cached_next_to_the_records(tiny_data_dir, tmp_path,
                                                   monkeypatch):
  data_dir = tmp_path / 'tfds'
  shutil.copytree(tiny_data_dir, data_dir)
  cfg = ml_collections.ConfigDict(dict(
      name='synthetic_faces', builder_config='tiny', data_dir=str(data_dir),
      build_if_missing=False))
  first = ip.load_split(cfg, 'validation')
  cached = list(data_dir.glob('synthetic_faces/tiny/*/index-validation.npz'))
  assert len(cached) == 1

  def no_scan(*args, **kwargs):
    raise AssertionError('the records were scanned again')
  monkeypatch.setattr(ip, 'index_split', no_scan)
  again = ip.load_split(cfg, 'validation')
  assert again.video_ids == first.video_ids
  assert again.subject_ids == first.subject_ids
  assert again.emotion_names == first.emotion_names
  for field in ('starts', 'lengths', 'valence', 'arousal', 'emotions'):
    np.testing.assert_array_equal(getattr(again, field),
                                  getattr(first, field))
  # A stale cache (other record count) is redone, not trusted.
  with np.load(cached[0]) as z:
    stale = dict(z)
  stale['num_records'] = 1
  np.savez(cached[0], **stale)
  with pytest.raises(AssertionError, match='scanned again'):
    ip.load_split(cfg, 'validation')
