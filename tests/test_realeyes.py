"""End to end: synthetic videos in the RealEyes layout -> records -> pipeline."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from affect_jax import features as F
from affect_jax import input_pipeline
from affect_jax import prepare
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import video as video_lib
from tfds_builders.realeyes import realeyes
from tfds_builders.synthetic_faces import realeyes_layout
from tests import builder_util

NUM_SUBJECTS, FRAMES, FPS, H, W = 3, 20, 30.0, 120, 160
BLANK = 's0000_v01'  # A second video of subject 0 with no face in it.


def _write(root: str) -> str:
  realeyes_layout.write_realeyes_layout(
      root, num_subjects=NUM_SUBJECTS, frames_per_video=FRAMES, fps=FPS,
      height=H, width=W)
  grey = np.full((H, W, 3), 128, np.uint8)
  video_lib.write_video(os.path.join(root, 'videos', f'{BLANK}.mp4'),
                        (grey for _ in range(FRAMES)), FPS)
  shutil.copy(os.path.join(root, 'labels', 's0000_v00.csv'),
              os.path.join(root, 'labels', f'{BLANK}.csv'))
  with open(os.path.join(root, 'subjects.csv'), 'a') as f:
    f.write(f'{BLANK},s0000\n')
  return root


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
  return _write(str(tmp_path_factory.mktemp('realeyes_copy')))


@pytest.fixture(scope='module')
def built(manual_dir, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('realeyes_tfds'))
  prepare.prepare('realeyes', data_dir, manual_dir)
  return builder_util.load_splits('realeyes', data_dir,
                                  splits=('train', 'validation'))


def _records(split):
  return split.source.__getitems__(list(range(len(split.source))))


def test_counts_and_subject_disjoint_splits(built):
  expected = realeyes.split_subjects(
      [f's{i:04d}' for i in range(NUM_SUBJECTS)], 0.2, 0.0)
  assert {s: sorted(set(d.subject_ids)) for s, d in built.items()} == expected
  assert not set(built['train'].subject_ids) & set(
      built['validation'].subject_ids)
  videos = [v for d in built.values() for v in d.video_ids]
  assert sorted(videos) == sorted([BLANK] + [f's{i:04d}_v00'
                                             for i in range(NUM_SUBJECTS)])
  for d in built.values():
    assert list(d.lengths) == [FRAMES] * len(d.video_ids)


def test_labels_time_and_fields_match_the_written_files(built):
  labels = realeyes_layout.labels_of(NUM_SUBJECTS, 1, FRAMES, FPS)
  labels[BLANK] = labels['s0000_v00']
  for d in built.values():
    records = _records(d)
    for start, vid in zip(d.starts, d.video_ids):
      for i in (0, 7, FRAMES - 1):
        r = records[start + i]
        assert int(r[F.RECORD_FRAME_INDEX]) == i
        assert r[F.RECORD_TIME] == pytest.approx(i / FPS, abs=1e-4)
        np.testing.assert_array_equal(r[F.RECORD_EMOTIONS], labels[vid][i])
      np.testing.assert_array_equal(d.emotions[start:start + FRAMES],
                                    labels[vid])
    assert np.isnan(d.valence).all() and np.isnan(d.arousal).all()
    assert input_pipeline._decode_jpeg(records[0][F.RECORD_IMAGE]).shape == (
        170, 170, 3)


def test_has_face_flags_and_boxes(built):
  records = {}
  for d in built.values():
    for start, vid in zip(d.starts, d.video_ids):
      records[vid] = _records(d)[start:start + FRAMES]
  blank = records.pop(BLANK)
  assert not any(bool(r[F.RECORD_HAS_FACE]) for r in blank)
  assert all(not r[F.RECORD_BOX].any() for r in blank)
  faces = [r for rs in records.values() for r in rs
           if bool(r[F.RECORD_HAS_FACE])]
  assert faces  # Haar finds the cartoon face in some frames.
  for r in faces:
    y0, x0, y1, x1 = r[F.RECORD_BOX]
    # The crop has a 0.2 margin around the box on each side.
    assert 0.1 < y0 < y1 < 0.9 and 0.1 < x0 < x1 < 0.9


def _build_error(root, tmp_path, **config):
  return builder_util.build(realeyes.RealEyes, realeyes.RealEyesConfig, root,
                            tmp_path / 'out', **config)


def test_truncated_video_names_the_file(manual_dir, tmp_path):
  root = shutil.copytree(manual_dir, tmp_path / 'copy')
  path = root / 'videos' / 's0001_v00.mp4'
  path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  with pytest.raises(AffectJaxError, match='s0001_v00.mp4.*skip_broken'):
    _build_error(str(root), tmp_path / 'a')
  builder = _build_error(str(root), tmp_path / 'b', skip_broken=True)
  source = builder.as_data_source('train')
  videos = {r[F.RECORD_VIDEO_ID] for r in source.__getitems__(
      list(range(len(source))))}
  assert b's0002_v00' in videos and b's0001_v00' not in videos
  assert [(b['split'], b['video_id'], b['status'])
          for b in builder.broken_videos] == [('train', 's0001_v00',
                                               'left out')]
  assert core.skipped_videos(builder) == builder.broken_videos


def _faststart_cut(path, keep: int):
  """Rewrites `path` with its index first, then cuts it after `keep` frames.

  As a "faststart" download interrupted part way: the file opens (its
  header declares every frame) and decodes its first frames.
  """
  images = [f.image for f in video_lib.iter_frames(str(path))]
  video_lib.write_video(str(path), images, FPS,
                        options={'movflags': 'faststart'})
  builder_util.cut_after_frames(path, keep)


def test_truncated_faststart_video_fails_prepare_or_is_listed(manual_dir,
                                                              tmp_path,
                                                              capsys):
  root = shutil.copytree(manual_dir, tmp_path / 'copy')
  _faststart_cut(root / 'videos' / 's0001_v00.mp4', keep=FRAMES // 2)
  data_dir = str(tmp_path / 'data')
  with pytest.raises(AffectJaxError, match=(
      r's0001_v00.mp4 ends early: decoded \d+ frames but its header declares '
      rf'{FRAMES} frames.*re-download.*--skip_broken')):
    prepare.prepare('realeyes', data_dir, str(root), detector='none',
                    landmarks='none', image_size=32)
  assert not any('array_record' in f or f == 'dataset_info.json'
                 for _, _, fs in os.walk(data_dir) for f in fs)
  builder = prepare.prepare('realeyes', data_dir, str(root), detector='none',
                            landmarks='none', image_size=32, skip_broken=True)
  out = capsys.readouterr().out
  assert 'skip_broken: 1 video(s) left out or cut short' in out
  assert 'train/s0001_v00: left out: Video ' in out
  assert 'ends early' in out
  name = builder.builder_config.name
  splits = builder_util.load_splits('realeyes', data_dir, name)
  assert 's0001_v00' not in [v for d in splits.values() for v in d.video_ids]
  # Loading the splits (as training does) says what the dataset lacks.
  loaded = capsys.readouterr().out
  assert 'was prepared with skip_broken' in loaded
  assert 'train/s0001_v00: left out' in loaded
  # A rerun reuses the dataset and still reports what it lacks.
  again = prepare.prepare('realeyes', data_dir, str(root), detector='none',
                          landmarks='none', image_size=32, skip_broken=True)
  out = capsys.readouterr().out
  assert out.startswith('Reusing ') and 'train/s0001_v00: left out' in out
  assert core.skipped_videos(again)[0]['video_id'] == 's0001_v00'


def _labels_with_rows(root, vid, num_rows):
  """labels/<vid>.csv with `num_rows` rows (the written ones, repeated)."""
  path = root / 'labels' / f'{vid}.csv'
  header, *rows = path.read_text().splitlines()
  body = [f'{i},' + rows[i % len(rows)].split(',', 1)[1]
          for i in range(num_rows)]
  path.write_text('\n'.join([header] + body) + '\n')


def test_labels_far_past_the_video_are_an_error(manual_dir, tmp_path,
                                                caplog):
  root = shutil.copytree(manual_dir, tmp_path / 'copy')
  _labels_with_rows(root, 's0002_v00', FRAMES + 30)  # The slack: a warning.
  with caplog.at_level('WARNING'):
    builder = _build_error(str(root), tmp_path / 'a')
  assert (f'{FRAMES} decoded frames, ' in caplog.text and
          f's0002_v00.csv covers {FRAMES + 30} frames' in caplog.text)
  assert sum(builder.info.splits[s].num_examples
             for s in builder.info.splits) == (NUM_SUBJECTS + 1) * FRAMES
  _labels_with_rows(root, 's0002_v00', FRAMES + 31)
  with pytest.raises(AffectJaxError, match=(
      r'the labels run 31 frames past the end of the video: .*s0002_v00.csv '
      rf'covers {FRAMES + 31} frames but .*s0002_v00.mp4 decodes {FRAMES} '
      r'frames.*--skip_broken')):
    _build_error(str(root), tmp_path / 'b')
  builder = _build_error(str(root), tmp_path / 'c', skip_broken=True)
  assert [b['video_id'] for b in core.skipped_videos(builder)] == [
      's0002_v00']
  # A video far longer than its labels (missing_labels='skip' drops the
  # frames without a row; far too many is the same error).
  _labels_with_rows(root, 's0002_v00', FRAMES - 15)
  builder = _build_error(str(root), tmp_path / 'd', missing_labels='skip',
                         max_mismatch_frames=15)
  assert core.skipped_videos(builder) == []
  with pytest.raises(AffectJaxError, match=(
      rf's0002_v00.mp4 decodes {FRAMES} frames but .*s0002_v00.csv covers '
      rf'only {FRAMES - 15} frames \(15 fewer\)')):
    _build_error(str(root), tmp_path / 'e', missing_labels='skip',
                 max_mismatch_frames=14)


def test_wrong_label_header_names_file_and_line(manual_dir, tmp_path):
  root = shutil.copytree(manual_dir, tmp_path / 'copy')
  path = root / 'labels' / 's0002_v00.csv'
  path.write_text(path.read_text().replace('happy', 'joy', 1))
  with pytest.raises(AffectJaxError, match=r's0002_v00.csv line 1'):
    _build_error(str(root), tmp_path)


def test_missing_video_names_the_file(manual_dir, tmp_path):
  root = shutil.copytree(manual_dir, tmp_path / 'copy')
  (root / 'videos' / 's0001_v00.mp4').unlink()
  with pytest.raises(AffectJaxError, match=r'videos/s0001_v00.mp4 is missing'):
    _build_error(str(root), tmp_path)


def test_missing_label_rows_error_or_skip(manual_dir, tmp_path):
  root = shutil.copytree(manual_dir, tmp_path / 'copy')
  path = root / 'labels' / 's0001_v00.csv'
  lines = path.read_text().splitlines()
  del lines[5 + 1]  # The row of frame 5.
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(AffectJaxError,
                     match=r's0001_v00.csv has no row for frame 5 .*line 7'):
    _build_error(str(root), tmp_path / 'a')
  builder = _build_error(str(root), tmp_path / 'b', missing_labels='skip')
  source = builder.as_data_source('train')
  frames = [int(r[F.RECORD_FRAME_INDEX]) for r in source.__getitems__(
      list(range(len(source)))) if r[F.RECORD_VIDEO_ID] == b's0001_v00']
  assert frames == [i for i in range(FRAMES) if i != 5]


ANNOTATORS = ('ann_a', 'ann_b', 'ann_c')
PARTIAL = 's0001_v00'  # Labelled by ann_a and ann_b only.


def _votes(annotator: int) -> np.ndarray:
  """[FRAMES, 8] 0/1 of annotator j: emotion e at frame i iff (i+e)%(j+2)==0."""
  i, e = np.ogrid[:FRAMES, :len(F.REALEYES_EMOTIONS)]
  return ((i + e) % (annotator + 2) == 0).astype(np.float32)


def _to_annotator_folders(manual_dir, root):
  """A copy of manual_dir with labels/<annotator>/<video>.csv instead."""
  root = shutil.copytree(manual_dir, root)
  for path in (root / 'labels').iterdir():
    vid = path.stem
    path.unlink()
    for j, name in enumerate(ANNOTATORS):
      if vid == PARTIAL and name == 'ann_c':
        continue
      os.makedirs(root / 'labels' / name, exist_ok=True)
      realeyes_layout.write_labels(str(root / 'labels' / name / f'{vid}.csv'),
                                   _votes(j))
  return root


def _emotions_by_video(builder):
  out = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    for r in source.__getitems__(list(range(len(source)))):
      out.setdefault(r[F.RECORD_VIDEO_ID].decode(), []).append(
          r[F.RECORD_EMOTIONS])
  return {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope='module')
def annotator_copy(manual_dir, tmp_path_factory):
  return _to_annotator_folders(manual_dir,
                               tmp_path_factory.mktemp('ann') / 'copy')


@pytest.mark.parametrize('fusion', ['union', 'majority'])
def test_annotator_folders_fused(annotator_copy, tmp_path, fusion):
  emotions = _emotions_by_video(_build_error(str(annotator_copy), tmp_path,
                                             annotator_fusion=fusion))
  assert sorted(emotions) == sorted([BLANK, PARTIAL, 's0000_v00',
                                     's0002_v00'])
  full, partial = emotions['s0000_v00'], emotions[PARTIAL]
  assert full.shape == partial.shape == (FRAMES, 8)
  # (frame, emotion): votes of ann_a, ann_b, ann_c -> union, majority.
  #   (0, 0): 1 1 1 -> 1 1    (1, 1): 1 0 0 -> 1 0    (2, 2): 1 0 1 -> 1 1
  #   (1, 2): 0 1 0 -> 1 0    (0, 1): 0 0 0 -> 0 0
  expected = {'union': {(0, 0): 1, (1, 1): 1, (2, 2): 1, (1, 2): 1,
                        (0, 1): 0},
              'majority': {(0, 0): 1, (1, 1): 0, (2, 2): 1, (1, 2): 0,
                           (0, 1): 0}}[fusion]
  for (i, e), value in expected.items():
    assert full[i, e] == value, (i, e)
  # PARTIAL has two annotators: a majority needs both, a tie is not set.
  #   (0, 0): 1 1 -> 1 1    (2, 0): 1 0 -> 1 0    (2, 2): 1 0 -> 1 0
  expected = {'union': {(0, 0): 1, (2, 0): 1, (2, 2): 1},
              'majority': {(0, 0): 1, (2, 0): 0, (2, 2): 0}}[fusion]
  for (i, e), value in expected.items():
    assert partial[i, e] == value, (i, e)
  votes = np.stack([_votes(j) for j in range(3)])
  if fusion == 'union':
    np.testing.assert_array_equal(full, votes.max(axis=0))
    np.testing.assert_array_equal(partial, votes[:2].max(axis=0))
  else:
    np.testing.assert_array_equal(full, votes.sum(axis=0) >= 2)
    np.testing.assert_array_equal(partial, votes[:2].min(axis=0))


def test_annotator_folder_errors(annotator_copy, tmp_path):
  root = shutil.copytree(annotator_copy, tmp_path / 'copy')
  first = root / 'labels' / 'ann_a' / 's0002_v00.csv'
  other = root / 'labels' / 'ann_b' / 's0002_v00.csv'
  other.write_text('\n'.join(other.read_text().splitlines()[:-1]) + '\n')
  with pytest.raises(AffectJaxError,
                     match=f'{first} has {FRAMES} frame rows and {other} has '
                     f'{FRAMES - 1}'):
    _build_error(str(root), tmp_path / 'a')
  for name in ANNOTATORS:
    (root / 'labels' / name / 's0002_v00.csv').unlink(missing_ok=True)
  with pytest.raises(AffectJaxError, match='has s0002_v00.csv; add'):
    _build_error(str(root), tmp_path / 'b')
  (root / 'labels' / 's0002_v00.csv').write_text('frame\n')
  with pytest.raises(AffectJaxError, match='both annotator folders'):
    _build_error(str(root), tmp_path / 'c')
  with pytest.raises(AffectJaxError, match="annotator_fusion='vote'"):
    _build_error(str(root), tmp_path / 'd', annotator_fusion='vote')


def test_split_by_subject_hash_is_stable_and_proportional():
  subjects = [f'p{i}' for i in range(50)]
  split = realeyes.split_subjects(subjects, 0.2, 0.1)
  assert {k: len(v) for k, v in split.items()} == dict(
      train=35, validation=10, test=5)
  assert split == realeyes.split_subjects(subjects[::-1], 0.2, 0.1)
  with pytest.raises(AffectJaxError, match='leave some subjects for train'):
    realeyes.split_subjects(subjects, 0.6, 0.4)


def test_prepare_command_line(manual_dir, built, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'affect_jax.prepare',
       '--dataset=realeyes/whole_frame', f'--manual_dir={manual_dir}',
       f'--data_dir={tmp_path}'], capture_output=True, text=True, timeout=120,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  counts = {s: len(d.source) for s, d in built.items()}
  assert (f"validation={counts['validation']}" in result.stdout and
          f"train={counts['train']}" in result.stdout)
  bad = subprocess.run(
      [sys.executable, '-m', 'affect_jax.prepare', '--dataset=realeyes',
       f'--manual_dir={tmp_path / "nope"}', f'--data_dir={tmp_path}'],
      capture_output=True, text=True, timeout=120, check=False)
  assert bad.returncode == 2 and 'is not a folder' in bad.stderr
