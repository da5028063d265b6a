"""TFDS builder of RECOLA as released for AVEC 2016.

Layout of `manual_dir` (docs/data_formats.md):

  recordings_video/{train,dev,test}_<n>.mp4                 25 fps
  ratings_gold_standard/{arousal,valence}/<split>_<n>.arff  one row / 40 ms
  ratings_individual/{arousal,valence}/<split>_<n>.csv      one row / 40 ms,
                                                            six raters

  python -m affect_jax.prepare --dataset=recola --manual_dir=DIR --data_dir=OUT

Splits: AVEC's 'train' -> TFDS 'train', 'dev' -> 'validation'. The test
labels are usually not distributed, so 'test' is written only when every
test_<n>.mp4 has both label files; test videos without labels are
skipped with a log line. As in the AVEC literature, train on 'train', select
on 'validation' (or a split of train) and report on 'validation' -- say so.
Every recording is a different person, so the subject id is the recording id.

Labels are matched to decoded frames by time: each frame takes the row whose
frameTime is nearest to its presentation time, and the mean of the two rows
when it lies half-way between them (kollias2019). A video that runs past its
last label row by more than `max_unlabelled_s` means a truncated label file
and raises an error naming the file. Labels that run past the video's last
frame (beyond the one row at its end) by more than `max_mismatch_frames`
(30) rows mean a truncated video: an error (`core.check_label_count`), or
with skip_broken the video is left out; fewer is a warning.

Labels come from the gold standard (config `labels='gold_standard'`, AVEC's
own fusion of the six raters) or, with `labels='raters'` (config 'raters'),
from the individual ratings `time;FM1 ;FM2 ;FM3 ;FF1 ;FF2 ;FF3` fused as
kollias2019 fused Aff-Wild's annotators: per recording and dimension, the
mean of the `num_raters` (4) raters with the highest mean Pearson
correlation with the other raters (`core.annotations.fuse_raters`). Frames
take the fused rows by time exactly as they take gold-standard rows.
"""

import dataclasses
import os
import re

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import annotations

# AVEC 2016 label step; rows are frameTime = 0.00, 0.04, ...
_STEP = 0.04
_HEADER = ('@relation', '@attribute instance_name string',
           '@attribute frametime numeric', '@attribute goldstandard numeric',
           '@data')
_RATERS = ('FM1', 'FM2', 'FM3', 'FF1', 'FF2', 'FF3')
_RATER_HEADER = 'time;FM1 ;FM2 ;FM3 ;FF1 ;FF2 ;FF3'  # As distributed.
# config.labels -> (folder, extension) of the label files.
_LABEL_FILES = {'gold_standard': ('ratings_gold_standard', '.arff'),
                'raters': ('ratings_individual', '.csv')}
_SPLITS = {'train': 'train', 'dev': 'validation', 'test': 'test'}
_VIDEO = re.compile(r'^(train|dev|test)_(\d+)\.mp4$')


@dataclasses.dataclass(eq=False)
class RecolaConfig(core.VideoFrameConfig):
  """Face-crop settings plus label source and matching tolerance.

  Attributes:
    max_unlabelled_s: how far (seconds) a video may run past its last label
      row; frames there are dropped with a warning, beyond it is an error.
    labels: 'gold_standard' (ratings_gold_standard/*.arff) or 'raters'
      (ratings_individual/*.csv fused per recording, see module doc).
    num_raters: with labels='raters', how many of the six raters to average
      (the most correlated ones), 1..6; 6 is the plain mean.
  """
  max_unlabelled_s: float = 0.1
  labels: str = 'gold_standard'
  num_raters: int = 4


@dataclasses.dataclass(frozen=True, eq=False)
class LabelTrack:
  """One dimension of one recording: a gold-standard file or fused raters.

  Attributes:
    path: the file.
    times: float64 [N] row times in seconds, increasing.
    values: float32 [N] rating.
    last_line: line number of the last data row (for messages).
  """
  path: str
  times: np.ndarray
  values: np.ndarray
  last_line: int


def _check_time(t: float, times: list[float], column: str) -> None:
  """Raises ValueError unless `t` is the next row time (every 40 ms from 0)."""
  if times and t <= times[-1]:
    raise ValueError(f'{column} {t} does not increase')
  if abs(t - len(times) * _STEP) > _STEP / 4:
    raise ValueError(f'{column} {t} instead of {len(times) * _STEP:.2f} '
                     '(rows every 40 ms; a row is missing or repeated)')


def read_arff(path: str, instance: str) -> LabelTrack:
  """Parses an AVEC 2016 gold-standard .arff file (see module doc).

  Args:
    path: the file.
    instance: the expected Instance_name of every row, e.g. 'dev_1'.

  Raises:
    AffectJaxError: missing file, wrong header, malformed row, wrong
      instance name or non-increasing / irregular times, naming file and line.
  """
  if not os.path.isfile(path):
    raise AffectJaxError(f'Gold-standard file {path} is missing; copy '
                         'ratings_gold_standard/ from the AVEC 2016 release.')
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().splitlines()
  header, times, values, last_line = [], [], [], 0
  for number, raw in enumerate(lines, start=1):
    line = raw.strip()
    if not line or line.startswith('%'):  # ARFF comments and blank lines.
      continue
    if len(header) < len(_HEADER):
      words = ' '.join(line.split()).lower()
      expected = _HEADER[len(header)]
      ok = (words.split(' ')[0] == expected and len(words.split(' ')) == 2
            if expected == '@relation' else words == expected)
      if not ok:
        raise AffectJaxError(
            f'{path} line {number}: expected "{expected}" (AVEC 2016 '
            f'gold-standard header, docs/data_formats.md), got "{line}". Use the '
            'files as distributed.')
      header.append(line)
      continue
    parts = [p.strip() for p in line.split(',')]
    try:
      if len(parts) != 3:
        raise ValueError(f'{len(parts)} fields instead of 3')
      if parts[0].strip("'\"") != instance:
        raise ValueError(f'Instance_name {parts[0]!r} is not {instance!r}')
      t, v = float(parts[1]), float(parts[2])
      if not np.isfinite(v):
        raise ValueError('rating is not finite')
      _check_time(t, times, 'frameTime')
    except ValueError as e:
      raise AffectJaxError(f'{path} line {number}: {e}: "{line}"; fix or '
                           're-copy the file.') from None
    times.append(t)
    values.append(v)
    last_line = number
  if len(header) < len(_HEADER) or not times:
    raise AffectJaxError(f'{path}: no data rows (truncated after line '
                         f'{len(lines)}); re-copy the file.')
  return LabelTrack(path, np.asarray(times, np.float64),
                    np.asarray(values, np.float32), last_line)


def read_raters(path: str) -> tuple[np.ndarray, np.ndarray, int]:
  """Parses an AVEC 2016 ratings_individual .csv file (see module doc).

  Args:
    path: the file.

  Returns:
    times: float64 [N] in seconds (0.00, 0.04, ...).
    ratings: float32 [N, 6] in [-1, 1], columns FM1 FM2 FM3 FF1 FF2 FF3.
    last_line: line number of the last data row (for messages).

  Raises:
    AffectJaxError: missing file, wrong header, wrong column count,
      non-numeric or NaN cell, rating outside [-1, 1] or irregular times,
      naming file and line.
  """
  if not os.path.isfile(path):
    raise AffectJaxError(
        f'Rater file {path} is missing; copy ratings_individual/ from the '
        "AVEC 2016 release, or build with labels='gold_standard'.")
  with open(path, encoding='utf-8-sig', errors='replace') as f:
    lines = f.read().splitlines()
  names = ('time',) + _RATERS
  header, times, ratings, last_line = False, [], [], 0
  for number, raw in enumerate(lines, start=1):
    line = raw.strip()
    if not line:
      continue
    cells = line.split(';')
    if not header:
      if tuple(c.strip() for c in cells) != names:
        raise AffectJaxError(
            f'{path} line {number}: header must be "{_RATER_HEADER}" (AVEC '
            f'2016 individual ratings, docs/data_formats.md), got "{line}". Use '
            'the files as distributed.')
      header = True
      continue
    try:
      if len(cells) != len(names):
        raise ValueError(f'{len(cells)} fields instead of {len(names)}')
      try:
        row = [float(cells[0])]
      except ValueError:
        raise ValueError(f'time "{cells[0].strip()}" is not a number'
                         ) from None
      if not np.isfinite(row[0]):
        raise ValueError(f'time is {cells[0].strip()}')
      row += [annotations.affect_value(cell, name)
              for name, cell in zip(names[1:], cells[1:])]
      _check_time(row[0], times, 'time')
    except ValueError as e:
      raise AffectJaxError(f'{path} line {number}: {e}: "{line}"; fix or '
                           're-copy the file.') from None
    times.append(row[0])
    ratings.append(row[1:])
    last_line = number
  if not times:
    raise AffectJaxError(f'{path}: no data rows (truncated after line '
                         f'{len(lines)}); re-copy the file.')
  return (np.asarray(times, np.float64), np.asarray(ratings, np.float32),
          last_line)


def read_fused_raters(path: str, num_raters: int) -> LabelTrack:
  """The mean of the `num_raters` most correlated raters of a .csv file."""
  times, ratings, last_line = read_raters(path)
  fused, chosen = annotations.fuse_raters(ratings, num_raters)
  logging.info('%s: mean of raters %s.', path,
               ', '.join(_RATERS[i] for i in chosen))
  return LabelTrack(path, times, fused, last_line)


def match_by_time(track: LabelTrack, t: float) -> float:
  """Rating at time `t`: nearest row; the mean of two rows at a tie."""
  i = int(np.searchsorted(track.times, t))
  if i == 0:
    return float(track.values[0])
  if i == len(track.times):
    return float(track.values[-1])
  left, right = t - track.times[i - 1], track.times[i] - t
  if abs(left - right) < 1e-6:  # Half-way (e.g. 30 fps video): average.
    return float((track.values[i - 1] + track.values[i]) / 2)
  return float(track.values[i - 1] if left < right else track.values[i])


class _Labels:
  """Label lookup by time for one recording (see core.LabelLookup).

  A class rather than a closure so that it pickles to build workers.
  """

  def __init__(self, arousal: LabelTrack, valence: LabelTrack,
               video_path: str, max_unlabelled_s: float,
               max_mismatch_frames: int):
    if len(arousal.times) != len(valence.times):
      raise AffectJaxError(
          f'{arousal.path} has {len(arousal.times)} rows but {valence.path} '
          f'has {len(valence.times)}; one of them is truncated, re-copy it.')
    self.arousal, self.valence = arousal, valence
    self.video_path = video_path
    self.max_unlabelled_s = max_unlabelled_s
    self.max_mismatch_frames = max_mismatch_frames
    self.end = float(arousal.times[-1])
    self.last_time = 0.0

  def __call__(self, index: int, time: float) -> core.FrameLabels | None:
    del index
    self.last_time = max(self.last_time, time)
    if time > self.end + _STEP / 2:
      if time > self.end + self.max_unlabelled_s:
        raise AffectJaxError(
            f'{self.video_path} runs to {time:.2f}s or more but the labels '
            f'end at {self.end:.2f}s ({self.arousal.path} line '
            f'{self.arousal.last_line}); the label files look truncated, '
            're-copy them.')
      return None  # Within tolerance: dropped (core logs the count).
    return core.FrameLabels(valence=match_by_time(self.valence, time),
                            arousal=match_by_time(self.arousal, time))

  def done(self, num_frames: int) -> None:
    # Rows past the last frame, beyond the row at its end (7,501 rows for
    # 7,500 frames is the release's normal); a row is a 25 fps frame.
    times = self.arousal.times
    extra = len(times) - int(np.searchsorted(
        times, self.last_time + 1.25 * _STEP, side='right'))
    core.check_label_count(self.video_path, self.arousal.path, num_frames,
                           num_frames + extra, self.max_mismatch_frames,
                           'frames (rows of 40 ms)')


class Recola(core.VideoFrameBuilder):
  """RECOLA (AVEC 2016): 25 fps recordings with valence/arousal ratings."""

  name = 'recola'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  EMOTION_NAMES = ()
  FPS = 25.0
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put recordings_video/ and ratings_gold_standard/ (or, for the '
      "'raters' config, ratings_individual/) of the AVEC 2016 RECOLA release "
      'in manual_dir (docs/data_formats.md).')
  BUILDER_CONFIGS = [
      RecolaConfig(name='default', description='dlib face crops, 170x170.'),
      RecolaConfig(name='whole_frame', detector='none',
                   description='Whole frames, 170x170.'),
      RecolaConfig(name='raters', labels='raters', description=(
          'Face crops, 170x170; labels: mean of the 4 most correlated of the '
          'six raters.')),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    c = self.builder_config
    if c.labels not in _LABEL_FILES:
      raise AffectJaxError(f'recola config {c.name!r}: labels={c.labels!r}; '
                           f'use one of {tuple(_LABEL_FILES)}.')
    if c.labels == 'raters' and not 1 <= c.num_raters <= len(_RATERS):
      raise AffectJaxError(f'recola config {c.name!r}: num_raters='
                           f'{c.num_raters}; use 1 to {len(_RATERS)}.')

  def _track(self, path: str, rec: str) -> LabelTrack:
    c = self.builder_config
    if c.labels == 'raters':
      return read_fused_raters(path, c.num_raters)
    return read_arff(path, rec)

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    video_dir = os.path.join(manual_dir, 'recordings_video')
    if not os.path.isdir(video_dir):
      raise AffectJaxError(f'{video_dir} is missing; manual_dir must hold '
                           'the AVEC 2016 RECOLA layout (docs/data_formats.md).')
    found = sorted(f for f in os.listdir(video_dir) if _VIDEO.match(f))
    if not found:
      raise AffectJaxError(f'{video_dir} holds no {{train,dev,test}}_<n>.mp4 '
                           'videos.')
    out = {split: [] for split in _SPLITS.values()}
    folder, ext = _LABEL_FILES[self.builder_config.labels]
    for name in found:
      rec = name[:-4]
      avec_split = _VIDEO.match(name).group(1)
      paths = [os.path.join(manual_dir, folder, dim, rec + ext)
               for dim in ('arousal', 'valence')]
      have = [os.path.isfile(p) for p in paths]
      if avec_split == 'test' and not any(have):
        logging.info('%s has no %s (as distributed); skipped.', name, folder)
        continue
      if not all(have):
        missing = [p for p, h in zip(paths, have) if not h]
        raise AffectJaxError(f'{missing[0]} is missing for video '
                             f'{os.path.join(video_dir, name)}; copy it or '
                             'remove the video.')
      arousal, valence = (self._track(p, rec) for p in paths)
      labels = _Labels(arousal, valence, os.path.join(video_dir, name),
                       self.builder_config.max_unlabelled_s,
                       self.builder_config.max_mismatch_frames)
      out[_SPLITS[avec_split]].append(core.VideoSpec(
          rec, rec, os.path.join(video_dir, name), labels, labels.done))
    if not out['train']:
      raise AffectJaxError(f'{video_dir} has no labelled train_<n>.mp4.')
    return {k: v for k, v in out.items() if v}
