"""TFDS builder of AFEW (EmotiW's Acted Facial Expressions in the Wild).

Layout of `manual_dir` (docs/data_formats.md):

  Train_AFEW/<Emotion>/<clip>.avi    773 clips
  Val_AFEW/<Emotion>/<clip>.avi      383 clips

with <Emotion> one of Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise
(any letter case). `Train`/`Val` are accepted for the split folders too
(any case). The aligned faces and LBP-TOP features some releases ship inside
the split folders (`AlignedFaces_LBPTOP_Points*`) are ignored, as are hidden
folders and `__MACOSX`; any other folder is an error naming it (a typo would
drop a class silently). A missing emotion folder is logged as a warning.

  python -m affect_jax.prepare --dataset=afew --manual_dir=DIR --data_dir=OUT

Splits: Train_AFEW -> 'train', Val_AFEW -> 'validation' (the test clips have
no public labels; EmotiW papers report on validation).

Labels: one emotion per clip. Every decoded frame gets the clip's one-hot
label over EMOTION_NAMES (in the order above); valence and arousal are NaN.
The task is clip classification (accuracy, total and per class): aggregate
the per-frame predictions over each video id in the evaluation code.

Ids: the video id is the clip's file stem (unique within a split: a clip in
two emotion folders of one split is an error; Train and Val may share a
stem: a video can give segments to both). AFEW does not identify
actors, so the subject id is the video id. Videos are decoded by the core
and cropped with the config's detector (clips are ~25 fps film excerpts).
"""

import dataclasses
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax.errors import AffectJaxError
from tfds_builders import core

# Folder names as distributed, in label order.
EMOTION_FOLDERS = ('Angry', 'Disgust', 'Fear', 'Happy', 'Neutral', 'Sad',
                   'Surprise')
# Accepted split folder names (compared in lower case) -> TFDS split.
_SPLIT_FOLDERS = {'train_afew': 'train', 'train': 'train',
                  'val_afew': 'validation', 'val': 'validation'}
# Extras of some EmotiW releases inside Train_AFEW/ and Val_AFEW/.
_IGNORED_PREFIX = 'alignedfaces_lbptop_points'


@dataclasses.dataclass(eq=False)
class AfewConfig(core.VideoFrameConfig):
  """Face-crop settings (AFEW has no options of its own)."""


@dataclasses.dataclass(frozen=True, eq=False)
class _ClipLabel:
  """Every frame of a clip gets its one-hot label (picklable, see core)."""
  emotions: np.ndarray

  def __call__(self, index: int, time: float) -> core.FrameLabels:
    del index, time
    return core.FrameLabels(emotions=self.emotions)


def _ignored(name: str) -> bool:
  return (name.startswith('.') or name == '__MACOSX' or
          name.lower().startswith(_IGNORED_PREFIX))


def find_split_folders(manual_dir: str) -> dict[str, str]:
  """{TFDS split: folder} of the Train_AFEW / Val_AFEW folders present."""
  out = {}
  for name in sorted(os.listdir(manual_dir)):
    path = os.path.join(manual_dir, name)
    split = _SPLIT_FOLDERS.get(name.lower())
    if split is None or not os.path.isdir(path):
      continue
    if split in out:
      raise AffectJaxError(f'{manual_dir} holds two {split} folders '
                           f'({os.path.basename(out[split])}, {name}); keep '
                           'one.')
    out[split] = path
  return out


def list_clips(split_dir: str) -> list[tuple[str, str, int]]:
  """[(video id, path, emotion index)] of one split folder, sorted by id.

  Raises:
    AffectJaxError: an unknown or duplicated emotion folder, or one clip in
      two emotion folders, naming them. A missing emotion folder is logged.
  """
  by_emotion = {}
  lower = [e.lower() for e in EMOTION_FOLDERS]
  for name in sorted(os.listdir(split_dir)):
    path = os.path.join(split_dir, name)
    if not os.path.isdir(path):
      continue
    if _ignored(name):
      logging.info('Ignoring %s (not an emotion folder).', path)
      continue
    if name.lower() not in lower:
      raise AffectJaxError(
          f'{path}: unknown emotion folder {name!r}; AFEW has '
          f'{", ".join(EMOTION_FOLDERS)}. Rename or remove it.')
    k = lower.index(name.lower())
    if k in by_emotion:
      raise AffectJaxError(f'{split_dir} holds two {EMOTION_FOLDERS[k]} '
                           f'folders ({os.path.basename(by_emotion[k])}, '
                           f'{name}); merge them.')
    by_emotion[k] = path
  missing = [EMOTION_FOLDERS[k] for k in range(len(EMOTION_FOLDERS))
             if k not in by_emotion]
  if missing:
    logging.warning('%s has no %s folder(s): those classes have no clips.',
                    split_dir, ', '.join(missing))
  clips = {}
  for k, folder in sorted(by_emotion.items()):
    for stem, path in core.find_videos([folder]).items():
      if stem in clips:
        raise AffectJaxError(
            f'Clip {stem} is in two places, {clips[stem][0]} and {path}; a '
            'clip has one label: remove the wrong copy.')
      clips[stem] = (path, k)
  return [(stem, path, k) for stem, (path, k) in sorted(clips.items())]


class Afew(core.VideoFrameBuilder):
  """AFEW (EmotiW): film clips with one of 7 emotions per clip."""

  name = 'afew'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  EMOTION_NAMES = tuple(e.lower() for e in EMOTION_FOLDERS)
  FPS = 25.0
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put Train_AFEW/<Emotion>/<clip>.avi and Val_AFEW/<Emotion>/<clip>.avi '
      'of the EmotiW AFEW release in manual_dir (docs/data_formats.md).')
  BUILDER_CONFIGS = [
      AfewConfig(name='default',
                 description='dlib face crops, 170x170; train / validation.'),
      AfewConfig(name='whole_frame', detector='none',
                 description='Whole frames, 170x170; train / validation.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    folders = find_split_folders(manual_dir)
    if not folders:
      raise AffectJaxError(f'{manual_dir} holds no Train_AFEW/ or Val_AFEW/ '
                           'folder; see docs/data_formats.md.')
    eye = np.eye(len(EMOTION_FOLDERS), dtype=np.float32)
    out = {}
    for split, folder in folders.items():
      clips = list_clips(folder)
      if not clips:
        raise AffectJaxError(f'{folder} holds no <Emotion>/<clip>.avi; copy '
                             'the clips.')
      out[split] = [core.VideoSpec(vid, vid, path, _ClipLabel(eye[k]))
                    for vid, path, k in clips]
    return out
