"""TFDS builder of RealEyes-format emotion videos (tzirakis2019).

Layout of `manual_dir` (docs/data_formats.md; the synthetic dataset is written in
it by `python -m tfds_builders.synthetic_faces.realeyes_layout OUT_DIR`):

  videos/<video_id>.mp4
  subjects.csv            video_id,subject_id
  labels/<video_id>.csv   frame,neutral,happy,surprise,disgust,contempt,
                          confusion,empathy,other   (0/1 per frame)
  or, one folder per annotator (same columns):
  labels/<annotator_id>/<video_id>.csv

  python -m affect_jax.prepare --dataset=realeyes --manual_dir=DIR \
      --data_dir=OUT

Splits are by subject, never by video: subjects are ranked by a hash of their
id (sha256, so the split is the same on every machine and does not depend on
file order) and the first `round(validation_fraction * n)` go to
'validation', the next `round(test_fraction * n)` to 'test' (default 0: the
RealEyes protocol is 80/20 train/validation), the rest to 'train'. Each
non-zero fraction gets at least one subject. Labels are matched to decoded
frames by frame index; valence and arousal are NaN (the layout has none).
Rows running more than `max_mismatch_frames` (30) past the video's last
frame mean a truncated video: an error (`core.check_label_count`), or with
skip_broken the video is left out.

With annotator folders, a video's labels fuse the files of the annotators
who have one for it (the others did not label that video), by the config's
`annotator_fusion`: 'union' (default; an emotion is set where any annotator
set it) or 'majority' (where strictly more than half of them did; a tie is
not set). The files of one video must list the same frames. A labels/ folder
holding both annotator folders and .csv files is an error.
"""

import csv
import dataclasses
import hashlib
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import annotations

_HEADER = ('frame',) + F.REALEYES_EMOTIONS


@dataclasses.dataclass(eq=False)
class RealEyesConfig(core.VideoFrameConfig):
  """Split fractions and label handling on top of the face-crop settings.

  Attributes:
    validation_fraction, test_fraction: of the subjects (see module doc).
    missing_labels: 'error' (default) raises when a decoded frame has no
      label row; 'skip' drops such frames with a warning.
    annotator_fusion: 'union' or 'majority' of the annotators' labels, with
      one label folder per annotator (see module doc); unused otherwise.
  """
  validation_fraction: float = 0.2
  test_fraction: float = 0.0
  missing_labels: str = 'error'
  annotator_fusion: str = 'union'


def split_subjects(subjects: list[str], validation_fraction: float,
                   test_fraction: float) -> dict[str, list[str]]:
  """{'train': [...], 'validation': [...], ('test': [...])} of subject ids."""
  if (validation_fraction < 0 or test_fraction < 0 or
      validation_fraction + test_fraction >= 1):
    raise AffectJaxError(
        f'realeyes: validation_fraction={validation_fraction} and '
        f'test_fraction={test_fraction} must be >= 0 and leave some subjects '
        'for train.')
  ranked = sorted(set(subjects),
                  key=lambda s: (hashlib.sha256(s.encode()).hexdigest(), s))
  n = len(ranked)

  def count(fraction):  # Round half up; a non-zero fraction gets >= 1.
    return max(1, int(np.floor(fraction * n + 0.5))) if fraction > 0 else 0

  n_val, n_test = count(validation_fraction), count(test_fraction)
  if n - n_val - n_test < 1:
    raise AffectJaxError(
        f'realeyes: {n} subjects cannot fill train plus {n_val} validation '
        f'and {n_test} test subjects; add subjects or lower the fractions.')
  out = {'validation': ranked[:n_val],
         'test': ranked[n_val:n_val + n_test],
         'train': ranked[n_val + n_test:]}
  return {k: sorted(v) for k, v in out.items() if v}


def read_subjects(path: str) -> dict[str, str]:
  """subjects.csv -> {video_id: subject_id}."""
  if not os.path.isfile(path):
    raise AffectJaxError(f'{path} is missing; the RealEyes layout needs a '
                         'subjects.csv with the header video_id,subject_id.')
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip() for c in rows[0]] != ['video_id', 'subject_id']:
    raise AffectJaxError(f'{path} line 1: header must be '
                         f'"video_id,subject_id", got {rows[:1]}.')
  out = {}
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) != 2 or not row[0].strip() or not row[1].strip():
      raise AffectJaxError(f'{path} line {line}: expected "video_id,"'
                           f'"subject_id", got {row}.')
    vid = row[0].strip()
    if vid in out:
      raise AffectJaxError(f'{path} line {line}: video {vid!r} listed twice.')
    out[vid] = row[1].strip()
  if not out:
    raise AffectJaxError(f'{path} lists no videos.')
  return out


def read_labels(path: str) -> dict[int, np.ndarray]:
  """labels/<video_id>.csv -> {frame: float32 [8] multi-hot}."""
  if not os.path.isfile(path):
    raise AffectJaxError(f'Label file {path} is missing; every video needs '
                         'labels/<video_id>.csv (docs/data_formats.md).')
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  header = tuple(c.strip().lower() for c in rows[0]) if rows else ()
  if header != _HEADER:
    raise AffectJaxError(f'{path} line 1: header must be '
                         f'"{",".join(_HEADER)}", got "{",".join(header)}".')
  out = {}
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    try:
      if len(row) != len(_HEADER):
        raise ValueError(f'{len(row)} columns instead of {len(_HEADER)}')
      frame = int(row[0])
      values = np.array([int(v) for v in row[1:]], np.float32)
      if frame < 0 or not np.all((values == 0) | (values == 1)):
        raise ValueError('frame must be >= 0 and emotions 0 or 1')
    except ValueError as e:
      raise AffectJaxError(f'{path} line {line}: {e} in {row}; fix the row.'
                           ) from None
    if frame in out:
      raise AffectJaxError(f'{path} line {line}: frame {frame} appears twice.')
    out[frame] = values
  return out


def list_annotators(label_dir: str) -> list[str] | None:
  """The annotator folders of labels/, or None for one file per video."""
  if not os.path.isdir(label_dir):
    return None  # read_labels names the missing file.
  entries = [e for e in os.listdir(label_dir) if not e.startswith('.')]
  folders = sorted(e for e in entries
                   if os.path.isdir(os.path.join(label_dir, e)))
  files = sorted(e for e in entries if e.endswith('.csv'))
  if folders and files:
    raise AffectJaxError(
        f'{label_dir} holds both annotator folders (e.g. {folders[0]}/) and '
        f'label files (e.g. {files[0]}); use one layout, labels/<video_id>.csv '
        'or labels/<annotator_id>/<video_id>.csv (docs/datasets.md).')
  return folders or None


def read_annotator_labels(label_dir: str, annotators: list[str],
                          video_id: str, fusion: str
                          ) -> tuple[list[str], dict[int, np.ndarray]]:
  """Fuses labels/<annotator>/<video_id>.csv of the annotators who have it.

  Args:
    label_dir: the labels/ folder.
    annotators: its annotator folders (`list_annotators`).
    video_id: the video.
    fusion: 'union' or 'majority' (`core.annotations.fuse_multilabel`).

  Returns:
    The files read, and {frame: float32 [8] fused multi-hot}.

  Raises:
    AffectJaxError: no annotator has the video, a malformed file, or two
      files of the video that list different frames (naming both).
  """
  paths = [os.path.join(label_dir, a, f'{video_id}.csv') for a in annotators]
  paths = [p for p in paths if os.path.isfile(p)]
  if not paths:
    raise AffectJaxError(
        f'No annotator folder of {label_dir} ({", ".join(annotators[:3])}'
        f'{", ..." if len(annotators) > 3 else ""}) has {video_id}.csv; add '
        'the labels or remove the video from subjects.csv.')
  per_file = [read_labels(p) for p in paths]
  frames = sorted(per_file[0])
  for path, labels in zip(paths[1:], per_file[1:]):
    if sorted(labels) != frames:
      only = sorted(set(labels) ^ set(frames))
      raise AffectJaxError(
          f'{paths[0]} has {len(frames)} frame rows and {path} has '
          f'{len(labels)}, with different frames (e.g. frame {only[0]} is in '
          'only one); annotators of one video must label the same frames, '
          'fix or remove one of the files.')
  stacked = np.array([[labels[f] for f in frames] for labels in per_file],
                     np.float32).reshape(len(paths), len(frames),
                                         len(F.REALEYES_EMOTIONS))
  fused = annotations.fuse_multilabel(stacked, fusion)
  return paths, dict(zip(frames, fused))


class _Labels:
  """Label lookup by frame index for one video (see core.LabelLookup).

  A class rather than a closure so that it pickles to build workers.
  """

  def __init__(self, paths: list[str], labels: dict[int, np.ndarray],
               skip: bool, video_path: str, max_mismatch_frames: int):
    self.labels, self.skip = labels, skip
    self.video_path, self.max_mismatch_frames = video_path, max_mismatch_frames
    # For messages: the file, or the first of the annotators' files.
    self.path = paths[0] + (f" (and {len(paths) - 1} other annotators' "
                            'files)' if len(paths) > 1 else '')

  def __call__(self, index: int, time: float) -> core.FrameLabels | None:
    del time  # RealEyes labels are per frame index.
    emotions = self.labels.get(index)
    if emotions is None:
      if self.skip:
        return None
      line = sum(f < index for f in self.labels) + 2
      raise AffectJaxError(
          f'{self.path} has no row for frame {index} (expected at line '
          f'{line}); add the row, or build with missing_labels="skip" to drop '
          'frames without labels.')
    return core.FrameLabels(emotions=emotions)

  def done(self, num_frames: int) -> None:
    core.check_label_count(self.video_path, self.path, num_frames,
                           max(self.labels, default=-1) + 1,
                           self.max_mismatch_frames)


class RealEyes(core.VideoFrameBuilder):
  """RealEyes-format videos with per-frame multi-label emotions."""

  name = 'realeyes'  # Not TFDS's default 'real_eyes', as in the docs.
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  EMOTION_NAMES = F.REALEYES_EMOTIONS
  FPS = 30.0
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put videos/<video_id>.mp4, subjects.csv and labels/<video_id>.csv '
      '(docs/data_formats.md) in manual_dir.')
  BUILDER_CONFIGS = [
      RealEyesConfig(name='default',
                     description='dlib face crops, 170x170, 80/20 by subject.'),
      RealEyesConfig(name='whole_frame', detector='none',
                     description='Whole frames, 170x170, 80/20 by subject.'),
      RealEyesConfig(name='majority', annotator_fusion='majority',
                     description='Face crops, 170x170, 80/20 by subject; '
                     'majority of the annotators (one folder each).'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    c = self.builder_config
    if c.missing_labels not in ('error', 'skip'):
      raise AffectJaxError(f'realeyes config {c.name!r}: missing_labels='
                           f'{c.missing_labels!r}; use "error" or "skip".')
    if c.annotator_fusion not in annotations.MULTILABEL_FUSIONS:
      raise AffectJaxError(
          f'realeyes config {c.name!r}: annotator_fusion='
          f'{c.annotator_fusion!r}; use one of '
          f'{annotations.MULTILABEL_FUSIONS}.')

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    c = self.builder_config
    label_dir = os.path.join(manual_dir, 'labels')
    annotators = list_annotators(label_dir)
    subjects = read_subjects(os.path.join(manual_dir, 'subjects.csv'))
    video_dir = os.path.join(manual_dir, 'videos')
    if os.path.isdir(video_dir):
      unlisted = sorted(
          f for f in os.listdir(video_dir)
          if f.endswith('.mp4') and f[:-4] not in subjects)
      if unlisted:
        logging.warning('%d videos in %s are not in subjects.csv and are '
                        'skipped, e.g. %s.', len(unlisted), video_dir,
                        unlisted[:3])
    specs = {}
    for vid, subject in subjects.items():
      path = os.path.join(video_dir, f'{vid}.mp4')
      if not os.path.isfile(path):
        raise AffectJaxError(
            f'{path} is missing but subjects.csv lists video {vid!r}; copy '
            'the video or remove its row from subjects.csv.')
      if annotators:
        paths, frames = read_annotator_labels(label_dir, annotators, vid,
                                              c.annotator_fusion)
      else:
        paths = [os.path.join(label_dir, f'{vid}.csv')]
        frames = read_labels(paths[0])
      labels = _Labels(paths, frames, c.missing_labels == 'skip', path,
                       c.max_mismatch_frames)
      specs[vid] = core.VideoSpec(vid, subject, path, labels, labels.done)
    split = split_subjects(list(subjects.values()), c.validation_fraction,
                           c.test_fraction)
    return {name: [s for s in specs.values() if s.subject_id in set(members)]
            for name, members in split.items()}
