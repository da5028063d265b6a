"""TFDS builder of frame-list datasets (the 4K datasets of affect4k_thesis).

Layout of `manual_dir` (docs/data_formats.md): one CSV per split at its top,

  train.csv                          -> 'train'
  validation.csv | val.csv | valid.csv -> 'validation'  (one of them)
  test.csv                           -> 'test'
  <video folder>/<frame image>       frames as listed in the CSVs

  python -m affect_jax.prepare --dataset=frame_list --manual_dir=DIR \
      --data_dir=OUT

At least one of the CSVs must exist; the splits written are those present.
Other files are ignored. Each CSV has one row per frame,

  frame_path,valence,arousal[,subject_id]

with an optional header line of exactly these names. `frame_path` is
relative to the CSV's folder (an absolute path is taken as it is); frames
are aligned face crops at 25 fps (config `fps`). The video id is the
frame's folder relative to the CSV's folder ('clips/v01' for
'clips/v01/00012.jpg'), so every frame must lie in a folder.

Rows are ordered by video, then frame: a video's rows must be contiguous
(a folder that reappears after another folder's rows is an error naming the
line), and frame i of a video is its i-th row (time i / fps); the CSV's
order is the frame order, file names are not sorted. Valence and arousal are
in [-1, 1]; an empty field marks a frame without that label (NaN,
unlabelled). The optional `subject_id` column names the person, the same on
every row of a video; without it (the 4K lists carry no identities) the
subject id is the video id. A video may appear in one split only; a subject
in several splits is logged as a warning (the CSVs define the splits).

Every listed frame must exist: the core checks them before decoding and its
error names a missing file; with `skip_broken=True` a video with a missing
frame is left out with a warning (a frame that does not decode ends its
video there).

Frames are taken as the face (`aligned=True`, no detection, box = the whole
image); config 'whole_frame' (`aligned=False`) hands them to the config's
detector instead ('none': the whole frame), for lists of uncropped frames.
"""

import csv
import dataclasses
import math
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import annotations

HEADER = ('frame_path', 'valence', 'arousal')
SUBJECT_COLUMN = 'subject_id'
# File name -> split. Several names for 'validation'; a copy may hold one.
SPLIT_FILES = {'train.csv': 'train', 'validation.csv': 'validation',
               'val.csv': 'validation', 'valid.csv': 'validation',
               'test.csv': 'test'}
_SPLIT_ORDER = ('train', 'validation', 'test')


@dataclasses.dataclass(eq=False)
class FrameListConfig(core.VideoFrameConfig):
  """Face-crop settings plus the frame rate and whether frames are crops.

  Attributes:
    fps: frame rate of the listed frames (frame i is at i / fps).
    aligned: the frames are aligned face crops (no detection); False runs
      the config's detector on them.
  """
  fps: float = 25.0
  aligned: bool = True
  detector: str = 'none'  # Aligned crops need no detector.


@dataclasses.dataclass(frozen=True, eq=False)
class Video:
  """One video of a frame list, T frames.

  Attributes:
    video_id: the frames' folder relative to the CSV's folder.
    subject_id: the subject column, or the video id.
    frames: [T] image paths (the CSV's folder joined with frame_path).
    valence, arousal: float32 [T] in [-1, 1]; NaN where the field is empty.
    csv_path: the CSV it came from; first_line: the line of its first row.
  """
  video_id: str
  subject_id: str
  frames: list[str]
  valence: np.ndarray
  arousal: np.ndarray
  csv_path: str
  first_line: int


def _error(path: str, line: int, what: str) -> AffectJaxError:
  return AffectJaxError(f'{path} line {line}: {what}; fix the frame list '
                        '(frame_path,valence,arousal, docs/data_formats.md).')


def _value(path: str, line: int, column: str, raw: str) -> float:
  if not raw.strip():
    return math.nan  # No label for this frame.
  try:
    return annotations.affect_value(raw, column)
  except ValueError as e:  # NaN too: write an empty field.
    raise _error(path, line, f'{e} (leave the field empty for a frame '
                 'without a label)') from None


def read_frame_list(path: str) -> list[Video]:
  """Parses one split's CSV into its videos, in file order (see module doc).

  Raises:
    AffectJaxError: naming the file and line of the first bad row.
  """
  folder = os.path.dirname(os.path.abspath(path))
  columns = None  # 3 or 4, fixed by the header or the first row.
  # Per video: [video_id, subject, first_line, frames, valence, arousal].
  videos: list[list] = []
  first_line: dict[str, int] = {}
  frame_lines: dict[str, int] = {}  # Frame path -> line, current video.
  ids: dict[str, str] = {}  # Frame folder -> video id (relpath is slow).
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    for row in reader:
      line = reader.line_num
      if not row or (len(row) == 1 and not row[0].strip()):
        continue  # Blank line (e.g. at the end).
      if columns is None:
        names = tuple(c.strip().lower() for c in row)
        if names in (HEADER, HEADER + (SUBJECT_COLUMN,)):
          columns = len(names)
          continue
        if names[0] == HEADER[0]:
          raise _error(path, line, f'the header must be {",".join(HEADER)}'
                       f'[,{SUBJECT_COLUMN}]')
        columns = len(row)
        if columns not in (3, 4):
          raise _error(path, line, f'{columns} columns; expected '
                       f'{",".join(HEADER)}[,{SUBJECT_COLUMN}]')
      if len(row) != columns:
        raise _error(path, line, f'{len(row)} columns instead of {columns}')
      frame = row[0].strip()
      if not frame:
        raise _error(path, line, 'frame_path is empty')
      full = os.path.normpath(os.path.join(folder, frame))
      parent = os.path.dirname(full)
      video_id = ids.get(parent)
      if video_id is None:
        video_id = ids[parent] = os.path.relpath(parent, folder).replace(
            os.sep, '/')
      if video_id == '.':
        raise _error(path, line, f'frame {frame} is not inside a video '
                     'folder (the video id is the frame\'s folder)')
      valence = _value(path, line, 'valence', row[1])
      arousal = _value(path, line, 'arousal', row[2])
      subject = row[3].strip() if columns == 4 else video_id
      if not subject:
        raise _error(path, line, 'subject_id is empty')
      if not videos or videos[-1][0] != video_id:
        if video_id in first_line:
          raise _error(path, line, f'video {video_id} (rows from line '
                       f'{first_line[video_id]}) continues after rows of '
                       f'{videos[-1][0]}; a video\'s rows must be contiguous')
        first_line[video_id] = line
        frame_lines = {}
        videos.append([video_id, subject, line, [], [], []])
      current = videos[-1]
      if subject != current[1]:
        raise _error(path, line, f'subject_id {subject} differs from '
                     f'{current[1]} on line {current[2]} of the same video '
                     f'{video_id}')
      if full in frame_lines:
        raise _error(path, line, f'frame {frame} is listed already (line '
                     f'{frame_lines[full]})')
      frame_lines[full] = line
      current[3].append(full)
      current[4].append(valence)
      current[5].append(arousal)
  if not videos:
    raise AffectJaxError(f'{path} lists no frame; fill it or remove it.')
  return [Video(video_id=v, subject_id=s, frames=frames,
                valence=np.asarray(val, np.float32),
                arousal=np.asarray(aro, np.float32), csv_path=path,
                first_line=line)
          for v, s, line, frames, val, aro in videos]


@dataclasses.dataclass(frozen=True, eq=False)
class _Labels:
  """Label lookup by frame index (core.LabelLookup; picklable)."""
  valence: np.ndarray
  arousal: np.ndarray

  def __call__(self, index: int, time: float) -> core.FrameLabels:
    del time  # Frame i is row i of the video.
    return core.FrameLabels(valence=float(self.valence[index]),
                            arousal=float(self.arousal[index]))


def split_files(manual_dir: str) -> dict[str, str]:
  """{split: CSV path} of the split files at the top of manual_dir.

  In the order train, validation, test (the order videos are checked in).
  """
  out: dict[str, str] = {}
  for name in sorted(os.listdir(manual_dir)):
    split = SPLIT_FILES.get(name.lower())
    path = os.path.join(manual_dir, name)
    if split is None or not os.path.isfile(path):
      continue
    if split in out:
      raise AffectJaxError(
          f'{out[split]} and {path} both define split {split!r}; keep one.')
    out[split] = path
  if not out:
    raise AffectJaxError(
        f'{manual_dir} holds none of {", ".join(SPLIT_FILES)}; put one '
        'frame list per split there (docs/data_formats.md).')
  return {split: out[split] for split in _SPLIT_ORDER if split in out}


class FrameList(core.VideoFrameBuilder):
  """Frame lists: aligned face crops with per-frame valence and arousal."""

  name = 'frame_list'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  EMOTION_NAMES = ()
  FPS = 25.0
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put train.csv, validation.csv (or val.csv / valid.csv) and/or '
      'test.csv (rows frame_path,valence,arousal, paths relative to the '
      'CSV) and the frame folders in manual_dir (docs/data_formats.md).')
  BUILDER_CONFIGS = [
      FrameListConfig(name='default', description=(
          'Frames are aligned face crops, resized to 170x170.')),
      FrameListConfig(name='whole_frame', aligned=False, description=(
          'Whole frames (detector none), 170x170.')),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    c = self.builder_config
    if not c.fps > 0:
      raise AffectJaxError(f'frame_list config {c.name!r}: fps={c.fps} must '
                           'be > 0.')

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    c = self.builder_config
    seen: dict[str, Video] = {}
    subjects: dict[str, str] = {}  # Subject -> first split.
    warned: set[str] = set()
    out = {}
    for split, path in split_files(manual_dir).items():
      specs = []
      for video in read_frame_list(path):
        if video.video_id in seen:
          other = seen[video.video_id]
          raise AffectJaxError(
              f'{path} line {video.first_line}: video {video.video_id} is '
              f'in {other.csv_path} too (line {other.first_line}); a video '
              'may be in one split only.')
        seen[video.video_id] = video
        first = subjects.setdefault(video.subject_id, split)
        if first != split and video.subject_id not in warned:
          warned.add(video.subject_id)
          logging.warning('frame_list: subject %s is in splits %s and %s '
                          '(%s); the splits are not person-independent.',
                          video.subject_id, first, split, path)
        specs.append(core.VideoSpec(
            video.video_id, video.subject_id,
            os.path.dirname(video.frames[0]),
            _Labels(video.valence, video.arousal),
            images=video.frames, fps=c.fps, aligned=c.aligned))
      out[split] = specs
    return out
