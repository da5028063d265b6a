"""AFEW (EmotiW) builder on a tiny generated copy."""

import os
import shutil

import numpy as np
import pytest

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.afew import afew
from tests import builder_util

# (split folder, emotion folder as spelled on disk, clip, frames). Folder
# names in any case; the same stem may be in Train and Val.
CLIPS = [('Train_AFEW', 'Angry', 'a1', 4), ('Train_AFEW', 'Happy', 'h1', 3),
         ('Train_AFEW', 'surprise', 's1', 5), ('Val_AFEW', 'Sad', 'a1', 3),
         ('Val_AFEW', 'NEUTRAL', 'n1', 2)]
SPLITS = {'Train_AFEW': 'train', 'Val_AFEW': 'validation'}


def _write_copy(root):
  for k, (split, emotion, clip, n) in enumerate(CLIPS):
    folder = os.path.join(root, split, emotion)
    os.makedirs(folder, exist_ok=True)
    core.write_video(os.path.join(folder, f'{clip}.avi'),
                     [np.full((32, 48, 3), 20 * k + 10 * i, np.uint8)
                      for i in range(n)], 25, codec='mpeg4')
  # Extras of the EmotiW release, and an empty class folder: both fine.
  extra = os.path.join(root, 'Train_AFEW', 'AlignedFaces_LBPTOP_Points',
                       'Faces', 'a1')
  os.makedirs(extra)
  open(os.path.join(extra, 'frame_001.png'), 'wb').close()
  os.makedirs(os.path.join(root, 'Train_AFEW', 'Fear'))
  return root


def _build(root, out):
  return builder_util.build(afew.Afew, afew.AfewConfig, root, out)


@pytest.fixture(scope='module')
def copy_dir(tmp_path_factory):
  return _write_copy(str(tmp_path_factory.mktemp('afew') / 'copy'))


@pytest.fixture(scope='module')
def built(copy_dir, tmp_path_factory):
  builder = _build(copy_dir, tmp_path_factory.mktemp('afew_tfds'))
  return builder, builder_util.records(builder)


def test_splits_ids_and_counts(built):
  builder, records = built
  assert sorted(records) == ['train', 'validation']
  for folder, split in SPLITS.items():
    clips = sorted((c, n) for s, _, c, n in CLIPS if s == folder)
    ids = [r[F.RECORD_VIDEO_ID].decode() for r in records[split]]
    assert ids == [c for c, n in clips for _ in range(n)]
    assert [r[F.RECORD_SUBJECT_ID] for r in records[split]] == [
        r[F.RECORD_VIDEO_ID] for r in records[split]]
  assert builder.info.metadata['emotion_names'] == [
      'angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise']
  assert afew.Afew.BUILDER_CONFIGS[0].detector == 'dlib'


def test_clip_label_on_every_frame(built):
  _, records = built
  names = afew.Afew.EMOTION_NAMES
  for folder, emotion, clip, n in CLIPS:
    frames = [r for r in records[SPLITS[folder]]
              if r[F.RECORD_VIDEO_ID].decode() == clip]
    assert [int(r[F.RECORD_FRAME_INDEX]) for r in frames] == list(range(n))
    expected = np.eye(len(names))[names.index(emotion.lower())]
    for r in frames:
      np.testing.assert_array_equal(r[F.RECORD_EMOTIONS], expected)
      assert np.isnan(r[F.RECORD_VALENCE]) and np.isnan(r[F.RECORD_AROUSAL])


def test_unknown_emotion_folder_names_it(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  os.rename(root / 'Train_AFEW' / 'Happy', root / 'Train_AFEW' / 'Happpy')
  with pytest.raises(AffectJaxError, match=f"{root / 'Train_AFEW' / 'Happpy'}"
                     ": unknown emotion folder 'Happpy'"):
    _build(root, tmp_path / 'a')


def test_clip_in_two_emotion_folders(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  shutil.copy(root / 'Train_AFEW' / 'Angry' / 'a1.avi',
              root / 'Train_AFEW' / 'Fear' / 'a1.avi')
  with pytest.raises(AffectJaxError, match=r'Clip a1 is in two places, .*'
                     r'Angry/a1.avi and .*Fear/a1.avi'):
    _build(root, tmp_path / 'a')


def test_no_split_folder(tmp_path):
  (tmp_path / 'copy' / 'Test_AFEW').mkdir(parents=True)
  with pytest.raises(AffectJaxError, match='no Train_AFEW/ or Val_AFEW/'):
    _build(tmp_path / 'copy', tmp_path / 'out')


def test_truncated_clip_is_an_error_or_left_out(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  path = str(root / 'Train_AFEW' / 'Angry' / 'long.avi')
  rng = np.random.default_rng(0)
  core.write_video(path, [rng.integers(0, 255, (32, 48, 3), np.uint8)
                          for _ in range(40)], 25, codec='mpeg4')
  builder_util.cut_after_frames(path, 20)  # Header, half the data.
  with pytest.raises(AffectJaxError, match=(
      r'long.avi ends early: decoded 20 frames but its header declares 40 '
      r'frames.*--skip_broken')):
    _build(root, tmp_path / 'a')
  builder = builder_util.build(afew.Afew, afew.AfewConfig, root,
                               tmp_path / 'b', skip_broken=True)
  assert [(b['split'], b['video_id'], b['status'])
          for b in core.skipped_videos(builder)] == [
              ('train', 'long', 'left out')]
  ids = {r[F.RECORD_VIDEO_ID] for r in builder_util.records(builder)['train']}
  assert ids == {b'a1', b'h1', b's1'}
