"""TFDS builder of RECOLA as released for AVEC 2016.

Layout of `manual_dir` (DATA_FORMATS.md):

  recordings_video/{train,dev,test}_<n>.mp4                 25 fps
  ratings_gold_standard/{arousal,valence}/<split>_<n>.arff  one row / 40 ms

  python -m affect_jax.prepare --dataset=recola --manual_dir=DIR --data_dir=OUT

Splits: AVEC's 'train' -> TFDS 'train', 'dev' -> 'validation'. The test
labels are usually not distributed, so 'test' is written only when every
test_<n>.mp4 has both gold-standard files; test videos without labels are
skipped with a log line. As in the AVEC literature, train on 'train', select
on 'validation' (or a split of train) and report on 'validation' -- say so.
Every recording is a different person, so the subject id is the recording id.

Labels are matched to decoded frames by time: each frame takes the row whose
frameTime is nearest to its presentation time, and the mean of the two rows
when it lies half-way between them (kollias2019). A video that runs past its
last label row by more than `max_unlabelled_s` means a truncated ARFF and
raises an error naming the file.

The per-rater ratings (ratings_individual/) are not read yet; the gold
standard is AVEC's own fusion of the six raters.
"""

import dataclasses
import os
import re

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax.errors import AffectJaxError
from tfds_builders import core

# AVEC 2016 label step; rows are frameTime = 0.00, 0.04, ...
_STEP = 0.04
_HEADER = ('@relation', '@attribute instance_name string',
           '@attribute frametime numeric', '@attribute goldstandard numeric',
           '@data')
_SPLITS = {'train': 'train', 'dev': 'validation', 'test': 'test'}
_VIDEO = re.compile(r'^(train|dev|test)_(\d+)\.mp4$')


@dataclasses.dataclass(eq=False)
class RecolaConfig(core.VideoFrameConfig):
  """Face-crop settings plus label matching tolerance.

  Attributes:
    max_unlabelled_s: how far (seconds) a video may run past its last label
      row; frames there are dropped with a warning, beyond it is an error.
  """
  max_unlabelled_s: float = 0.1


@dataclasses.dataclass(frozen=True, eq=False)
class GoldStandard:
  """One gold-standard ARFF file.

  Attributes:
    path: the file.
    times: float64 [N] frameTime in seconds, increasing.
    values: float32 [N] rating.
    last_line: line number of the last data row (for messages).
  """
  path: str
  times: np.ndarray
  values: np.ndarray
  last_line: int


def read_arff(path: str, instance: str) -> GoldStandard:
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
            f'gold-standard header, DATA_FORMATS.md), got "{line}". Use the '
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
      if times and t <= times[-1]:
        raise ValueError(f'frameTime {t} does not increase')
      if abs(t - len(times) * _STEP) > _STEP / 4:
        raise ValueError(f'frameTime {t} instead of '
                         f'{len(times) * _STEP:.2f} (rows every 40 ms; a '
                         'row is missing or repeated)')
    except ValueError as e:
      raise AffectJaxError(f'{path} line {number}: {e}: "{line}"; fix or '
                           're-copy the file.') from None
    times.append(t)
    values.append(v)
    last_line = number
  if len(header) < len(_HEADER) or not times:
    raise AffectJaxError(f'{path}: no data rows (truncated after line '
                         f'{len(lines)}); re-copy the file.')
  return GoldStandard(path, np.asarray(times, np.float64),
                      np.asarray(values, np.float32), last_line)


def match_by_time(gold: GoldStandard, t: float) -> float:
  """Rating at time `t`: nearest row; the mean of two rows at a tie."""
  i = int(np.searchsorted(gold.times, t))
  if i == 0:
    return float(gold.values[0])
  if i == len(gold.times):
    return float(gold.values[-1])
  left, right = t - gold.times[i - 1], gold.times[i] - t
  if abs(left - right) < 1e-6:  # Half-way (e.g. 30 fps video): average.
    return float((gold.values[i - 1] + gold.values[i]) / 2)
  return float(gold.values[i - 1] if left < right else gold.values[i])


class _Labels:
  """Label lookup by time for one recording (see core.LabelLookup).

  A class rather than a closure so that it pickles to build workers.
  """

  def __init__(self, arousal: GoldStandard, valence: GoldStandard,
               video_path: str, max_unlabelled_s: float):
    if len(arousal.times) != len(valence.times):
      raise AffectJaxError(
          f'{arousal.path} has {len(arousal.times)} rows but {valence.path} '
          f'has {len(valence.times)}; one of them is truncated, re-copy it.')
    self.arousal, self.valence = arousal, valence
    self.video_path = video_path
    self.max_unlabelled_s = max_unlabelled_s
    self.end = float(arousal.times[-1])

  def __call__(self, index: int, time: float) -> core.FrameLabels | None:
    del index
    if time > self.end + _STEP / 2:
      if time > self.end + self.max_unlabelled_s:
        raise AffectJaxError(
            f'{self.video_path} runs to {time:.2f}s or more but the gold '
            f'standard ends at {self.end:.2f}s ({self.arousal.path} line '
            f'{self.arousal.last_line}); the ARFF files look truncated, '
            're-copy them.')
      return None  # Within tolerance: dropped (core logs the count).
    return core.FrameLabels(valence=match_by_time(self.valence, time),
                            arousal=match_by_time(self.arousal, time))

  def done(self, num_frames: int) -> None:
    extra = self.end - (num_frames - 1) * _STEP
    if num_frames and extra > 1.0:
      logging.warning('%s: the gold standard runs %.1fs past the last of the '
                      '%d frames of %s.', self.arousal.path, extra,
                      num_frames, self.video_path)


class Recola(core.VideoFrameBuilder):
  """RECOLA (AVEC 2016): 25 fps recordings with gold-standard valence/arousal."""

  name = 'recola'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  EMOTION_NAMES = ()
  FPS = 25.0
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put recordings_video/ and ratings_gold_standard/ of the AVEC 2016 '
      'RECOLA release in manual_dir (DATA_FORMATS.md).')
  BUILDER_CONFIGS = [
      RecolaConfig(name='default', description='Haar face crops, 170x170.'),
      RecolaConfig(name='whole_frame', detector='none',
                   description='Whole frames, 170x170.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    video_dir = os.path.join(manual_dir, 'recordings_video')
    if not os.path.isdir(video_dir):
      raise AffectJaxError(f'{video_dir} is missing; manual_dir must hold '
                           'the AVEC 2016 RECOLA layout (DATA_FORMATS.md).')
    found = sorted(f for f in os.listdir(video_dir) if _VIDEO.match(f))
    if not found:
      raise AffectJaxError(f'{video_dir} holds no {{train,dev,test}}_<n>.mp4 '
                           'videos.')
    out = {split: [] for split in _SPLITS.values()}
    gold_dir = os.path.join(manual_dir, 'ratings_gold_standard')
    for name in found:
      rec = name[:-4]
      avec_split = _VIDEO.match(name).group(1)
      paths = [os.path.join(gold_dir, dim, f'{rec}.arff')
               for dim in ('arousal', 'valence')]
      have = [os.path.isfile(p) for p in paths]
      if avec_split == 'test' and not any(have):
        logging.info('%s has no gold standard (as distributed); skipped.',
                     name)
        continue
      if not all(have):
        missing = [p for p, h in zip(paths, have) if not h]
        raise AffectJaxError(f'{missing[0]} is missing for video '
                             f'{os.path.join(video_dir, name)}; copy it or '
                             'remove the video.')
      arousal, valence = (read_arff(p, rec) for p in paths)
      labels = _Labels(arousal, valence, os.path.join(video_dir, name),
                       self.builder_config.max_unlabelled_s)
      out[_SPLITS[avec_split]].append(core.VideoSpec(
          rec, rec, os.path.join(video_dir, name), labels, labels.done))
    if not out['train']:
      raise AffectJaxError(f'{video_dir} has no labelled train_<n>.mp4.')
    return {k: v for k, v in out.items() if v}
