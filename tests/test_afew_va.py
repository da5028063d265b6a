"""AFEW-VA builder on tiny generated copies (flat, nested and zipped)."""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders.afew_va import afew_va
from tfds_builders.core import face
from tests import builder_util
from tests import fake_datasets

H, W = 48, 64
# Clip -> (actor, PNG frame numbers, frames without a JSON entry). The two
# spellings of Ann Lee are one actor; 002's last PNG has no JSON entry; 003
# has no frame 2 at all (neither PNG nor entry).
CLIPS = {'001': ('Ann Lee', (0, 1, 2, 3), ()),
         '002': ('Bob', (0, 1, 2, 3, 4), (4,)),
         '003': ('Cid', (0, 1, 3), ()),
         '004': ('ann  lee', (0, 1, 2), ())}
# Nested layout: which zip part holds which clip.
PARTS = {'01': ('001', '002'), '02': ('003', '004')}
# Ann Lee 7 labelled frames, Bob 4, Cid 3: Ann -> fold 0, then Bob and Cid
# to the lighter fold 1.
FOLDS = {'fold_0': ['001', '004'], 'fold_1': ['002', '003']}


def _valence(k, i):
  return 3 - 2 * i + k


def _arousal(k, i):
  return -2 + i - k


def _landmarks(k, i):
  j = np.arange(F.NUM_LANDMARKS)
  return np.stack([10 + i + k + (j % 17) * 1.5, 8 + (j // 17) * 7.0], 1)


def _write_clip(folder, clip):
  k = sorted(CLIPS).index(clip)
  actor, pngs, unlabelled = CLIPS[clip]
  fake_datasets.write_afew_va_clip(
      folder, actor,
      {i: np.full((H, W, 3), 30 * i + 10 * k, np.uint8) for i in pngs},
      {i: (_valence(k, i), _arousal(k, i), _landmarks(k, i))
       for i in pngs if i not in unlabelled})


def _write_copy(root, layout):
  os.makedirs(root)
  for part, clips in PARTS.items():
    for clip in clips:
      if layout == 'flat':
        _write_clip(os.path.join(root, clip), clip)
      else:
        _write_clip(os.path.join(root, part, clip), clip)
    if layout == 'zip':
      fake_datasets.zip_clips(os.path.join(root, part))
  return root


def _build(root, out, **config):
  config.setdefault('num_folds', 2)
  return builder_util.build(afew_va.AfewVa, afew_va.AfewVaConfig, root, out,
                            **config)


_records = builder_util.records


@pytest.fixture(scope='module')
def flat_dir(tmp_path_factory):
  return _write_copy(str(tmp_path_factory.mktemp('afew_va') / 'flat'), 'flat')


@pytest.fixture(scope='module')
def built(flat_dir, tmp_path_factory):
  builder = _build(flat_dir, tmp_path_factory.mktemp('afew_va_tfds'))
  return builder, _records(builder)


def _ids(records):
  return list(dict.fromkeys(r[F.RECORD_VIDEO_ID].decode() for r in records))


def _frame(records, clip, index):
  for r in records:
    if (r[F.RECORD_VIDEO_ID].decode() == clip and
        int(r[F.RECORD_FRAME_INDEX]) == index):
      return r
  raise KeyError((clip, index))


def test_folds_counts_and_subjects(built):
  builder, records = built
  assert sorted(builder.info.splits) == ['fold_0', 'fold_1']
  for split, clips in FOLDS.items():
    assert _ids(records[split]) == clips
    # Every PNG is a record; the frame without a PNG is not.
    assert len(records[split]) == sum(len(CLIPS[c][1]) for c in clips)
  subjects = {r[F.RECORD_VIDEO_ID].decode(): r[F.RECORD_SUBJECT_ID].decode()
              for rs in records.values() for r in rs}
  assert subjects == {'001': 'Ann Lee', '002': 'Bob', '003': 'Cid',
                      '004': 'Ann Lee'}
  frames = [int(r[F.RECORD_FRAME_INDEX]) for r in records['fold_1']
            if r[F.RECORD_VIDEO_ID] == b'003']
  assert frames == [0, 1, 3]
  assert builder.info.metadata['fps'] == 25.0


def test_labels_by_frame_name(built):
  _, records = built
  every = records['fold_0'] + records['fold_1']
  r = _frame(every, '001', 0)
  assert r[F.RECORD_VALENCE] == pytest.approx(0.3)  # 3 / 10.
  assert r[F.RECORD_AROUSAL] == pytest.approx(-0.2)
  for clip, (_, pngs, unlabelled) in CLIPS.items():
    k = sorted(CLIPS).index(clip)
    for i in pngs:
      r = _frame(every, clip, i)
      if i in unlabelled:
        assert np.isnan(r[F.RECORD_VALENCE]) and np.isnan(r[F.RECORD_AROUSAL])
        assert not r[F.RECORD_LANDMARKS].any()
        continue
      assert r[F.RECORD_VALENCE] == pytest.approx(_valence(k, i) / 10)
      assert r[F.RECORD_AROUSAL] == pytest.approx(_arousal(k, i) / 10)
      assert r[F.RECORD_TIME] == pytest.approx(i / 25)


def test_crop_around_shipped_landmarks(built):
  builder, records = built
  c = builder.builder_config
  k, i = sorted(CLIPS).index('002'), 2
  r = _frame(records['fold_1'], '002', i)
  points = _landmarks(k, i)
  (x0, y0), (x1, y1) = points.min(0), points.max(0)
  box = np.array([y0, x0, y1, x1], np.float32)
  crop = face.crop_face(np.zeros((H, W, 3), np.uint8), box, c.image_size,
                        c.margin)
  assert bool(r[F.RECORD_HAS_FACE])
  np.testing.assert_allclose(r[F.RECORD_LANDMARKS], crop.to_crop(points),
                             atol=1e-4)
  np.testing.assert_allclose(r[F.RECORD_BOX], crop.box_to_crop(box),
                             atol=1e-5)
  assert 0.1 < r[F.RECORD_BOX][1] < r[F.RECORD_BOX][3] < 0.9


def test_nested_and_zipped_layouts_give_the_same_records(built, tmp_path):
  _, flat = built
  for layout in ('nested', 'zip'):
    root = _write_copy(str(tmp_path / layout), layout)
    records = _records(_build(root, tmp_path / f'{layout}_out'))
    assert sorted(records) == sorted(flat)
    for split, rs in records.items():
      assert len(rs) == len(flat[split])
      for a, b in zip(rs, flat[split]):
        for key in (F.RECORD_VIDEO_ID, F.RECORD_SUBJECT_ID, F.RECORD_IMAGE,
                    F.RECORD_FRAME_INDEX):
          assert a[key] == b[key]
        np.testing.assert_array_equal(a[F.RECORD_VALENCE], b[F.RECORD_VALENCE])
        np.testing.assert_array_equal(a[F.RECORD_LANDMARKS],
                                      b[F.RECORD_LANDMARKS])
  # Zips were extracted once, next to TFDS's downloads.
  extracted = tmp_path / 'zip_out' / 'downloads' / 'extracted'
  assert (extracted / 'afew_va_manual' / '01' / '001' / '00000.png').exists()


def test_split_union_reads_several_folds(built):
  builder, records = built
  union = builder.as_data_source('fold_0+fold_1')
  assert len(union) == len(records['fold_0']) + len(records['fold_1'])
  assert union[len(records['fold_0'])][F.RECORD_VIDEO_ID] == b'002'


def test_assign_folds_disjoint_balanced_deterministic():
  rng = np.random.default_rng(0)
  frames = {f'actor {i}': int(rng.integers(50, 500)) for i in range(23)}
  folds = afew_va.assign_folds(frames, 5)
  assert sorted(folds) == sorted(frames) and set(folds.values()) == set(
      range(5))
  shuffled = dict(sorted(frames.items(), key=lambda kv: rng.random()))
  assert afew_va.assign_folds(shuffled, 5) == folds
  load = np.zeros(5)
  for actor, fold in folds.items():
    load[fold] += frames[actor]
  assert load.max() - load.min() <= max(frames.values())
  with pytest.raises(AffectJaxError, match='num_folds=5 needs 2 to 3'):
    afew_va.assign_folds({'a': 1, 'b': 2, 'c': 3}, 5)


def test_extract_zip_once(tmp_path):
  folder = tmp_path / 'c' / '001'
  folder.mkdir(parents=True)
  (folder / '00000.png').write_bytes(b'x')
  zip_path = tmp_path / '01.zip'
  with zipfile.ZipFile(zip_path, 'w') as z:
    z.write(folder / '00000.png', '001/00000.png')
  out = afew_va.extract_zip(str(zip_path), str(tmp_path / 'ex'))
  sentinel = tmp_path / 'ex' / '01' / 'sentinel'
  sentinel.write_text('kept')
  assert afew_va.extract_zip(str(zip_path), str(tmp_path / 'ex')) == out
  assert sentinel.exists()  # Reused, not extracted again.
  os.utime(zip_path, ns=(1, 1))  # A changed zip is extracted again.
  afew_va.extract_zip(str(zip_path), str(tmp_path / 'ex'))
  assert not sentinel.exists()
  zip_path.write_bytes(b'not a zip' * 10)
  with pytest.raises(AffectJaxError, match=r'Cannot extract .*01.zip.*unzip'):
    afew_va.extract_zip(str(zip_path), str(tmp_path / 'ex2'))


def _edit_json(folder, edit):
  path = os.path.join(folder, f'{os.path.basename(folder)}.json')
  with open(path) as f:
    data = json.load(f)
  edit(data)
  with open(path, 'w') as f:
    json.dump(data, f)
  return path


@pytest.mark.parametrize('edit, message', [
    (lambda d: d['frames']['00001'].update(valence=11),
     'frame "00001" has valence 11; AFEW-VA labels are integers in '
     r'\[-10, 10\]'),
    (lambda d: d['frames']['00003'].update(arousal=2.5),
     'frame "00003" has arousal 2.5'),
    (lambda d: d['frames']['00000'].update(
        landmarks=d['frames']['00000']['landmarks'][:67]),
     'frame "00000" landmarks are 67 points; expected 68'),
    (lambda d: d['frames']['00000'].pop('arousal'),
     'frame "00000" has no "arousal"'),
    (lambda d: d.pop('actor'), 'missing key "actor"'),
    (lambda d: d['frames'].update({'00009': d['frames']['00000']}),
     r'frame "00009" has no image .*003/00009.png'),
])
def test_bad_json_content_names_the_file(flat_dir, tmp_path, edit, message):
  folder = shutil.copytree(os.path.join(flat_dir, '003'), tmp_path / '003')
  path = _edit_json(str(folder), edit)
  with pytest.raises(AffectJaxError, match=f'{path}: {message}'):
    afew_va.read_clip(str(folder))


def test_unparseable_or_missing_json(flat_dir, tmp_path):
  folder = shutil.copytree(os.path.join(flat_dir, '003'), tmp_path / '003')
  path = folder / '003.json'
  path.write_text(path.read_text()[:50])
  with pytest.raises(AffectJaxError,
                     match=f'{path} line 1 column \\d+: not valid JSON'):
    afew_va.read_clip(str(folder))
  path.unlink()
  with pytest.raises(AffectJaxError,
                     match=f'Clip folder {folder} has no 003.json'):
    afew_va.read_clip(str(folder))


def test_builder_errors_name_the_file(flat_dir, tmp_path):
  root = shutil.copytree(flat_dir, tmp_path / 'copy')
  path = _edit_json(str(root / '002'),
                    lambda d: d['frames']['00003'].update(valence=-11))
  with pytest.raises(AffectJaxError, match=f'{path}: frame "00003" has '
                     'valence -11'):
    _build(root, tmp_path / 'a')
  shutil.rmtree(root / '002')
  _write_clip(str(root / '07' / '001'), '001')  # Also flat as 001/.
  with pytest.raises(AffectJaxError, match='Clip 001 is in two places'):
    _build(root, tmp_path / 'b')
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('not a clip')
  with pytest.raises(AffectJaxError, match='holds no AFEW-VA clip'):
    _build(tmp_path / 'empty', tmp_path / 'c')


def test_whole_frame_keeps_landmarks(flat_dir, tmp_path):
  builder = _build(flat_dir, tmp_path / 'out', shipped_boxes=False)
  r = _frame(_records(builder)['fold_1'], '002', 2)
  crop = face.crop_face(np.zeros((H, W, 3), np.uint8), None, 32, 0.2)
  np.testing.assert_allclose(r[F.RECORD_LANDMARKS],
                             crop.to_crop(_landmarks(1, 2)), atol=1e-4)
  assert not r[F.RECORD_BOX].any()  # No box: the whole frame.
