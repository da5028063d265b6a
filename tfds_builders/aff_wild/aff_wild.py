"""TFDS builder of Aff-Wild (kollias2019).

Layout of `manual_dir` (docs/data_formats.md):

  videos/{train,test}/<id>.mp4|.avi                  ~30 fps
  annotations/train/{valence,arousal}/<id>.txt       one float in [-1, 1] per
                                                     line; line i = frame i
  annotations/test/{valence,arousal}/<id>.txt        optional (see below)
  bboxes/train/<id>/<frame>.pts   (or bboxs/)        optional, 4 corner points
  landmarks/train/<id>/<frame>.pts                   optional, 68 points

  python -m affect_jax.prepare --dataset=aff_wild --manual_dir=DIR \
      --data_dir=OUT

Splits:
- 'train': the distributed train videos minus the validation videos.
- 'validation': carved from train by video (Aff-Wild has one person per
  video; the subject id is the video id): videos ranked by sha256 of their
  id, the first `round(validation_fraction * n)` (default 0.1, at least one)
  are validation. Deterministic and independent of file order. kollias2019
  validated on a held-out part of train in the same way.
- 'test': written only when annotations/test/ exists (kollias2019 reports CCC
  over all test frames); then every test video needs both files. Without
  annotations/test/ the test videos are skipped with a log line (the labels
  are usually not distributed).

Labels are matched to decoded frames by index: frame i takes line i of both
files; frames past the end of either file are dropped (docs/data_formats.md). A
count difference up to `max_mismatch_frames` (30) is logged as a warning;
more is an error naming both files (`core.check_label_count`), or with
skip_broken the video is left out.

Shipped geometry: `<frame>.pts` names the 0-based frame index (leading zeros
allowed). Videos with a box folder are cropped around the shipped box of
each frame (detector 'none' with the box; frames without a box file get the
whole frame and has_face=False: the release ships no box where no face was
found); other videos use the configured detector. Landmarks (68 points)
are stored in crop coordinates where shipped, zeros elsewhere. .pts files are
listed before decoding but parsed as their frame is decoded.
"""

import dataclasses
import hashlib
import os
import re

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import annotations

_DIMS = ('valence', 'arousal')
_BOX_DIRS = ('bboxes', 'bboxs')


@dataclasses.dataclass(eq=False)
class AffWildConfig(core.VideoFrameConfig):
  """Face-crop settings plus the validation split.

  Attributes:
    validation_fraction: of the train videos held out as 'validation'.
  """
  validation_fraction: float = 0.1


def read_values(path: str) -> np.ndarray:
  """One float in [-1, 1] per line -> float32 [N] (trailing blanks ignored)."""
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  values = np.empty(len(lines), np.float32)
  for number, raw in enumerate(lines, start=1):
    try:
      values[number - 1] = annotations.affect_value(raw)
    except ValueError as e:
      raise AffectJaxError(f'{path} line {number}: {e}; fix or re-copy the '
                           'file.') from None
  return values


def read_pts(path: str, n_points: int) -> np.ndarray:
  """A .pts file (version, n_points, {, x y lines, }) -> float32 [N, 2]."""
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = [(i, l.strip()) for i, l in enumerate(f.read().splitlines(), 1)]
  lines = [(i, l) for i, l in lines if l]
  try:
    it = iter(lines)
    number, line = next(it)
    if not re.fullmatch(r'version:\s*\S+', line):
      raise ValueError(f'expected "version: 1", got "{line}"')
    number, line = next(it)
    m = re.fullmatch(r'n_points:\s*(\d+)', line)
    if not m or int(m.group(1)) != n_points:
      raise ValueError(f'expected "n_points: {n_points}", got "{line}"')
    number, line = next(it)
    if line != '{':
      raise ValueError(f'expected "{{", got "{line}"')
    points = []
    for number, line in it:
      if line == '}':
        break
      parts = line.split()
      if len(parts) != 2:
        raise ValueError(f'expected "x y", got "{line}"')
      points.append([float(parts[0]), float(parts[1])])
    else:
      number = len(lines) and lines[-1][0]
      raise ValueError('missing the closing "}"')
    if len(points) != n_points:
      raise ValueError(f'{len(points)} points instead of {n_points}')
  except StopIteration:
    raise AffectJaxError(f'{path}: truncated .pts file (version, n_points, '
                         '{, points, }); re-copy it.') from None
  except ValueError as e:
    raise AffectJaxError(f'{path} line {number}: {e}; malformed .pts file, '
                         're-copy it.') from None
  return np.asarray(points, np.float32)


def list_pts(folder: str) -> dict[int, str]:
  """{frame index: path} of the <frame>.pts files in `folder` (may not exist)."""
  if not os.path.isdir(folder):
    return {}
  out = {}
  for name in os.listdir(folder):
    if not name.endswith('.pts'):
      continue
    try:
      out[int(name[:-4])] = os.path.join(folder, name)
    except ValueError:
      raise AffectJaxError(f'{os.path.join(folder, name)}: the name must be '
                           'the frame number, e.g. 12.pts.') from None
  return out


def split_videos(video_ids: list[str],
                 validation_fraction: float) -> dict[str, list[str]]:
  """{'train': [...], 'validation': [...]} of train video ids (by sha256)."""
  if not 0 <= validation_fraction < 1:
    raise AffectJaxError(f'aff_wild: validation_fraction='
                         f'{validation_fraction} must be in [0, 1).')
  ranked = sorted(set(video_ids),
                  key=lambda v: (hashlib.sha256(v.encode()).hexdigest(), v))
  n = len(ranked)
  n_val = (max(1, int(np.floor(validation_fraction * n + 0.5)))
           if validation_fraction > 0 else 0)
  if n - n_val < 1:
    raise AffectJaxError(f'aff_wild: {n} train videos cannot fill train plus '
                         f'{n_val} validation videos; lower '
                         'validation_fraction.')
  out = {'train': sorted(ranked[n_val:]), 'validation': sorted(ranked[:n_val])}
  return {k: v for k, v in out.items() if v}


class _Labels:
  """Label lookup by frame index for one video (see core.LabelLookup).

  A class rather than a closure so that it pickles to build workers.
  """

  def __init__(self, video_path: str, paths: tuple[str, str],
               valence: np.ndarray, arousal: np.ndarray,
               boxes: dict[int, str], landmarks: dict[int, str],
               config: AffWildConfig):
    if len(valence) != len(arousal):
      logging.warning('%s has %d lines but %s has %d; frames past the '
                      'shorter are dropped.', paths[0], len(valence),
                      paths[1], len(arousal))
    self.video_path, self.paths = video_path, paths
    self.valence, self.arousal = valence, arousal
    self.boxes, self.landmarks = boxes, landmarks
    self.max_frames = config.max_mismatch_frames
    self.num_labels = min(len(valence), len(arousal))

  def __call__(self, index: int, time: float) -> core.FrameLabels | None:
    del time  # Aff-Wild labels are per frame index.
    if index >= self.num_labels:
      return None  # Dropped; core logs the count, done() checks it.
    box = landmarks = has_face = None
    if index in self.boxes:
      corners = read_pts(self.boxes[index], 4)
      (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
      box = np.array([y0, x0, y1, x1], np.float32)
    elif self.boxes:
      # The release's boxes skip the frames where no face was found.
      has_face = False
    if index in self.landmarks:
      landmarks = read_pts(self.landmarks[index], F.NUM_LANDMARKS)
    return core.FrameLabels(valence=float(self.valence[index]),
                            arousal=float(self.arousal[index]),
                            box=box, landmarks=landmarks, has_face=has_face)

  def done(self, num_frames: int) -> None:
    core.check_label_count(self.video_path, self.paths[0], num_frames,
                           self.num_labels, self.max_frames, 'lines')


class AffWild(core.VideoFrameBuilder):
  """Aff-Wild: in-the-wild videos with per-frame valence and arousal."""

  name = 'aff_wild'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  EMOTION_NAMES = ()
  FPS = 30.0
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put videos/, annotations/ and optionally bboxes/ (or bboxs/) and '
      'landmarks/ of the Aff-Wild release in manual_dir (docs/data_formats.md).')
  BUILDER_CONFIGS = [
      AffWildConfig(name='default', description=(
          'Shipped boxes, else dlib face crops, 170x170; 10% of train '
          'videos as validation.')),
      AffWildConfig(name='whole_frame', detector='none',
                    description='Whole frames (or shipped boxes), 170x170.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def _video_paths(self, manual_dir: str, split: str) -> dict[str, str]:
    folder = os.path.join(manual_dir, 'videos', split)
    return core.find_videos([folder]) if os.path.isdir(folder) else {}

  def _specs(self, manual_dir: str, split: str) -> list[core.VideoSpec]:
    videos = self._video_paths(manual_dir, split)
    ann = os.path.join(manual_dir, 'annotations', split)
    for dim in _DIMS:
      folder = os.path.join(ann, dim)
      if not os.path.isdir(folder):
        raise AffectJaxError(f'{folder} is missing; manual_dir must hold the '
                             'Aff-Wild layout (docs/data_formats.md).')
      for name in sorted(os.listdir(folder)):
        if name.endswith('.txt') and name[:-4] not in videos:
          raise AffectJaxError(
              f'{os.path.join(folder, name)} has no video '
              f'{os.path.join(manual_dir, "videos", split, name[:-4])}'
              '.mp4|.avi; copy the video or remove the annotation.')
    box_root = next((os.path.join(manual_dir, d, split) for d in _BOX_DIRS
                     if os.path.isdir(os.path.join(manual_dir, d, split))),
                    None)
    specs = []
    for vid, path in videos.items():
      paths = tuple(os.path.join(ann, dim, f'{vid}.txt') for dim in _DIMS)
      for p in paths:
        if not os.path.isfile(p):
          raise AffectJaxError(f'{p} is missing for video {path}; copy it or '
                               'remove the video.')
      boxes = list_pts(os.path.join(box_root, vid)) if box_root else {}
      landmarks = list_pts(os.path.join(manual_dir, 'landmarks', split, vid))
      labels = _Labels(path, paths, read_values(paths[0]),
                       read_values(paths[1]), boxes, landmarks,
                       self.builder_config)
      # Shipped boxes make detection unnecessary for this video.
      specs.append(core.VideoSpec(vid, vid, path, labels, labels.done,
                                  detector='none' if labels.boxes else None))
    return specs

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    c = self.builder_config
    if not os.path.isdir(os.path.join(manual_dir, 'annotations')):
      raise AffectJaxError(f'{os.path.join(manual_dir, "annotations")} is '
                           'missing; manual_dir must hold the Aff-Wild layout '
                           '(docs/data_formats.md).')
    train = self._specs(manual_dir, 'train')
    if not train:
      raise AffectJaxError(f'{os.path.join(manual_dir, "videos", "train")} '
                           'holds no <id>.mp4|.avi videos.')
    members = split_videos([s.video_id for s in train], c.validation_fraction)
    out = {name: [s for s in train if s.video_id in set(ids)]
           for name, ids in members.items()}
    if os.path.isdir(os.path.join(manual_dir, 'annotations', 'test')):
      out['test'] = self._specs(manual_dir, 'test')
    elif self._video_paths(manual_dir, 'test'):
      logging.info('No annotations/test/ (as usually distributed): the test '
                   'videos are skipped.')
    return {k: v for k, v in out.items() if v}
