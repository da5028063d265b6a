"""Tests of the synthetic_faces TFDS builder and its face renderer."""

import dataclasses
import io
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
import tfds_builders
from tfds_builders.synthetic_faces import faces
from tfds_builders.synthetic_faces import synthetic_faces as sf

tfds_builders.register_all()

SPLITS = ('train', 'validation', 'test')


def _read(builder, split):
  source = builder.as_data_source(split)
  return source.__getitems__(list(range(len(source))))


def _decode(jpeg: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB'))


def _str(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """The `tiny` config built once: (builder, {split: [record, ...]})."""
  builder = tfds.builder('synthetic_faces/tiny',
                         data_dir=str(tmp_path_factory.mktemp('tfds_a')))
  builder.download_and_prepare()
  return builder, {s: _read(builder, s) for s in SPLITS}


def test_writes_array_record_by_default_without_tensorflow(tiny):
  builder, _ = tiny
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert list(builder.data_path.glob('*.array_record-*'))
  assert builder.info.metadata['emotion_names'] == list(F.REALEYES_EMOTIONS)
  assert 'tensorflow' not in sys.modules


def test_record_fields_and_types(tiny):
  _, records = tiny
  r = records['train'][0]
  assert set(r) == {
      F.RECORD_IMAGE, F.RECORD_VALENCE, F.RECORD_AROUSAL, F.RECORD_EMOTIONS,
      F.RECORD_LANDMARKS, F.RECORD_BOX, F.RECORD_HAS_FACE, F.RECORD_TIME,
      F.RECORD_FRAME_INDEX, F.RECORD_VIDEO_ID, F.RECORD_SUBJECT_ID}
  assert isinstance(r[F.RECORD_IMAGE], bytes)
  assert _decode(r[F.RECORD_IMAGE]).shape == (32, 32, 3)
  assert r[F.RECORD_LANDMARKS].shape == (68, 2)
  assert r[F.RECORD_EMOTIONS].shape == (8,)
  assert r[F.RECORD_BOX].shape == (4,)
  assert bool(r[F.RECORD_HAS_FACE])


def test_two_builds_are_identical(tiny, tmp_path):
  _, records = tiny
  other = sf.SyntheticFaces(data_dir=str(tmp_path), config='tiny')
  other.download_and_prepare()
  for split in SPLITS:
    again = _read(other, split)
    assert len(again) == len(records[split])
    for a, b in zip(records[split], again):
      assert a[F.RECORD_IMAGE] == b[F.RECORD_IMAGE]
      for k in (F.RECORD_VALENCE, F.RECORD_AROUSAL, F.RECORD_EMOTIONS,
                F.RECORD_LANDMARKS, F.RECORD_BOX, F.RECORD_VIDEO_ID):
        np.testing.assert_array_equal(a[k], b[k])


def test_splits_are_subject_disjoint_and_non_empty(tiny):
  builder, records = tiny
  subjects = {s: {_str(r[F.RECORD_SUBJECT_ID]) for r in records[s]}
              for s in SPLITS}
  assert [len(subjects[s]) for s in SPLITS] == [4, 1, 1]
  assert not subjects['train'] & subjects['validation']
  assert not subjects['train'] & subjects['test']
  assert not subjects['validation'] & subjects['test']
  assert builder.info.splits['train'].num_examples == 4 * 2 * 24


def test_records_sorted_by_video_then_frame(tiny):
  _, records = tiny
  for split in SPLITS:
    vids = [_str(r[F.RECORD_VIDEO_ID]) for r in records[split]]
    frames = np.array([r[F.RECORD_FRAME_INDEX] for r in records[split]])
    times = np.array([r[F.RECORD_TIME] for r in records[split]])
    assert vids == sorted(vids)
    for vid in set(vids):
      idx = [i for i, v in enumerate(vids) if v == vid]
      assert idx == list(range(idx[0], idx[-1] + 1))  # Contiguous.
      np.testing.assert_array_equal(frames[idx], np.arange(24))
      np.testing.assert_allclose(times[idx], np.arange(24) / 10.0, atol=1e-6)
      assert vid.startswith(_str(records[split][idx[0]][F.RECORD_SUBJECT_ID]))


def test_labels_in_range_and_emotions_follow_the_rule(tiny):
  _, records = tiny
  rs = [r for s in SPLITS for r in records[s]]
  v = np.array([r[F.RECORD_VALENCE] for r in rs], np.float32)
  a = np.array([r[F.RECORD_AROUSAL] for r in rs], np.float32)
  e = np.stack([r[F.RECORD_EMOTIONS] for r in rs])
  assert np.all(np.abs(v) <= 1) and np.all(np.abs(a) <= 1)
  assert v.std() > 0.2 and a.std() > 0.2
  assert set(np.unique(e)) <= {0.0, 1.0}
  np.testing.assert_array_equal(e[:, 0], e[:, 1:].sum(-1) == 0)
  np.testing.assert_array_equal(e, faces.emotions_from_va(v, a))
  assert 0 < e[:, 0].mean() < 1  # Both neutral and other classes occur.


def test_landmarks_inside_frame_and_box(tiny):
  _, records = tiny
  for r in records['train'] + records['test']:
    lm, box = r[F.RECORD_LANDMARKS], r[F.RECORD_BOX]
    assert np.all((lm >= 0) & (lm <= 1))
    ymin, xmin, ymax, xmax = box
    assert 0 <= ymin < ymax <= 1 and 0 <= xmin < xmax <= 1
    assert np.all(lm[:, 0] >= xmin - 0.02) and np.all(lm[:, 0] <= xmax + 0.02)
    assert np.all(lm[:, 1] >= ymin - 0.02) and np.all(lm[:, 1] <= ymax + 0.02)
    # Eyes above the nose tip above the mouth above the chin (upright-ish).
    assert lm[36:48, 1].mean() < lm[33, 1] < lm[48:68, 1].mean() < lm[8, 1]


def _mouth_crop(r) -> np.ndarray:
  """The mouth region found from the landmarks, as a fixed-size grey crop."""
  image = _decode(r[F.RECORD_IMAGE]).astype(np.float32).mean(-1)
  h, w = image.shape
  lm = r[F.RECORD_LANDMARKS] * [w, h]
  cx, cy = lm[48:68].mean(0)
  half = 0.22 * (r[F.RECORD_BOX][3] - r[F.RECORD_BOX][1]) * w
  crop = Image.fromarray(image).crop(
      (cx - half, cy - half, cx + half, cy + half))
  return np.asarray(crop.resize((12, 12), Image.Resampling.BILINEAR))


def test_valence_is_visible_in_the_mouth_pixels(tiny):
  _, records = tiny
  rs = records['train']
  vids = np.array([_str(r[F.RECORD_VIDEO_ID]) for r in rs])
  v = np.array([r[F.RECORD_VALENCE] for r in rs])
  far, near = [], []
  for vid in np.unique(vids):
    idx = np.flatnonzero(vids == vid)
    hi, lo = idx[np.argmax(v[idx])], idx[np.argmin(v[idx])]
    if v[hi] - v[lo] < 0.3:
      continue
    # The frame next to the high-valence one whose valence is closest.
    others = idx[idx != hi]
    twin = others[np.argmin(np.abs(v[others] - v[hi]) + 0.01 *
                            np.abs(others - hi))]
    crop_hi = _mouth_crop(rs[hi])
    far.append(np.abs(crop_hi - _mouth_crop(rs[lo])).mean())
    near.append(np.abs(crop_hi - _mouth_crop(rs[twin])).mean())
  assert len(far) >= 2
  assert np.mean(far) > 2 * np.mean(near), (far, near)


def test_custom_config_keeps_each_subject_and_video(tiny, tmp_path):
  _, records = tiny
  config = sf.SyntheticFacesConfig(
      name='micro', num_subjects=3, videos_per_subject=1, frames_per_video=3,
      frame_size=32, seed=20)
  builder = sf.SyntheticFaces(data_dir=str(tmp_path), config=config)
  builder.download_and_prepare()
  micro = {s: _read(builder, s) for s in SPLITS}
  assert [len(micro[s]) for s in SPLITS] == [3, 3, 3]
  # Subject 0, video 0 is the same person and recording as in `tiny`: fewer
  # subjects/frames do not reshuffle the random streams.
  for a, b in zip(micro['train'], records['train'][:3]):
    assert _str(a[F.RECORD_VIDEO_ID]) == _str(b[F.RECORD_VIDEO_ID])
    assert a[F.RECORD_IMAGE] == b[F.RECORD_IMAGE]
    assert a[F.RECORD_VALENCE] == b[F.RECORD_VALENCE]


@pytest.mark.parametrize('overrides', [
    dict(num_subjects=2),
    dict(train_fraction=0.5),
    dict(frames_per_video=0),
])
def test_bad_config_is_a_user_error(overrides, tmp_path):
  config = sf.SyntheticFacesConfig(name='bad', **overrides)
  with pytest.raises(AffectJaxError, match='synthetic_faces config'):
    sf.SyntheticFaces(data_dir=str(tmp_path), config=config)


def test_emotions_from_va_on_hand_picked_points():
  names = F.REALEYES_EMOTIONS
  points = {
      (0.0, 0.0): {'neutral'},
      (0.9, 0.0): {'happy'},
      (0.9, 0.9): {'happy', 'surprise'},
      (0.2, 0.9): {'surprise'},
      (-0.9, 0.5): {'disgust'},
      (-0.8, -0.8): {'contempt'},
      (-0.3, 0.8): {'confusion'},
      (0.5, -0.85): {'empathy'},
      (0.0, -0.9): {'other'},
      (-0.6, -0.2): {'neutral'},
  }
  v = np.array([p[0] for p in points])
  a = np.array([p[1] for p in points])
  e = faces.emotions_from_va(v, a)
  assert e.shape == (len(points), 8) and e.dtype == np.float32
  for row, want in zip(e, points.values()):
    assert {names[i] for i in np.flatnonzero(row)} == want
  assert faces.emotions_from_va(np.zeros((2, 3)), np.zeros((2, 3))).shape == (
      2, 3, 8)
  with pytest.raises(AffectJaxError, match='same shape'):
    faces.emotions_from_va(np.zeros(2), np.zeros(3))


def _with_affect(video, valence, arousal):
  n = video.num_frames
  return dataclasses.replace(video, valence=np.full(n, valence, np.float32),
                             arousal=np.full(n, arousal, np.float32))


def test_expression_changes_the_right_regions_at_48_pixels():
  subject = faces.make_subject(np.random.default_rng(1))
  video = faces.make_video(np.random.default_rng(2), 2, 10.0)

  def render(v, a):
    image, lm, _ = faces.render_frame(subject, _with_affect(video, v, a), 0,
                                      48)
    return image.astype(np.float32).mean(-1), lm * 48

  neutral, lm = render(0.0, 0.0)
  smile, _ = render(1.0, 0.0)
  aroused, _ = render(0.0, 1.0)
  rows = np.arange(48)[:, None]
  mouth_top = int(lm[48:68, 1].min()) - 2
  eye_bottom = int(np.ceil(lm[36:48, 1].max())) + 2
  below, above = rows >= mouth_top, rows <= eye_bottom
  # Valence moves the mouth, barely the eyes; arousal the eyes and brows.
  d_smile, d_aroused = np.abs(smile - neutral), np.abs(aroused - neutral)
  assert d_smile[below[:, 0]].sum() > 3 * d_smile[above[:, 0]].sum()
  assert d_aroused[above[:, 0]].sum() > 200  # Grey levels over the region.
  assert d_smile[below[:, 0]].sum() > 200


def test_render_frame_is_deterministic_and_size_agnostic():
  subject = faces.make_subject(np.random.default_rng(3))
  video = faces.make_video(np.random.default_rng(4), 5, 25.0)
  a = faces.render_frame(subject, video, 4, (48, 64))
  b = faces.render_frame(subject, video, 4, (48, 64))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  image, lm, box = a
  assert image.shape == (48, 64, 3) and image.dtype == np.uint8
  assert lm.shape == (68, 2) and lm.dtype == np.float32
  assert box.shape == (4,) and box.dtype == np.float32
  # Normalised landmarks do not depend on the resolution.
  _, lm_big, _ = faces.render_frame(subject, video, 4, (96, 128))
  np.testing.assert_allclose(lm, lm_big, atol=1e-5)
  with pytest.raises(AffectJaxError, match='frame_index'):
    faces.render_frame(subject, video, 5, 48)


def test_realeyes_table4_rule_gives_the_papers_class_frequencies():
  vs, as_ = [], []
  for i in range(200):
    video = faces.make_video(np.random.default_rng([7, 1, i, 0]), 100, 10.0)
    vs.append(video.valence)
    as_.append(video.arousal)
  e = faces.emotions_from_va(np.concatenate(vs), np.concatenate(as_),
                             'realeyes_table4')
  freq = dict(zip(('neutral', 'happy', 'surprise', 'disgust', 'contempt',
                   'confusion', 'empathy', 'other'), e.mean(0)))
  # The frequencies the rule's docstring promises (tzirakis2019 Table 4).
  for name, want in (('happy', .23), ('surprise', .15), ('confusion', .18),
                     ('disgust', .04), ('other', .03), ('empathy', .02),
                     ('contempt', .02), ('neutral', .41)):
    assert abs(freq[name] - want) < 0.04, (name, freq[name])
  rare = faces.emotions_from_va(np.concatenate(vs), np.concatenate(as_))
  assert rare[:, 0].mean() > 0.65  # The default rule: mostly neutral.
  with pytest.raises(AffectJaxError, match='Unknown emotion rule'):
    faces.emotions_from_va(vs[0], as_[0], 'broad')
