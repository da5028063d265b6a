"""TFDS builder of AffectNet (mollahosseini2017): each image is one frame.

Layout of `manual_dir` (the official release, docs/data_formats.md):

  Manually_Annotated_file_lists/training.csv      -> 'train'
  Manually_Annotated_file_lists/validation.csv    -> 'validation'
  Manually_Annotated_Images/<subDirectory_filePath>
    (or Manually_Annotated/Manually_Annotated_Images/,
     Manually_Annotated_compressed/Manually_Annotated_Images/)

  With config `annotations='automatic'` (config 'automatic'):
  Automatically_Annotated_file_lists/automatically_annotated.csv -> 'train'
  Automatically_Annotated_Images/<subDirectory_filePath>  (same variants)

  python -m affect_jax.prepare --dataset=affectnet --manual_dir=DIR \
      --data_dir=OUT

Each CSV starts with the header

  subDirectory_filePath,face_x,face_y,face_width,face_height,
  facial_landmarks,expression,valence,arousal

(a file without it is read from its first line) and has one row per image:
the face box in image pixels (x, y, width, height), 68 landmarks as
`x;y;x;y;...` (136 numbers, image pixels), the expression code and valence
and arousal in [-1, 1] (-2: not available -> NaN, i.e. unlabelled). The
AffectNet test set is not distributed; its validation set is the usual test
set (cross-database evaluation in affect4k_thesis reports on it).

Expression codes (AffectNet's documentation): 0 neutral, 1 happy, 2 sad,
3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt -> one-hot over these
eight (EMOTION_NAMES); 8 none, 9 uncertain, 10 no-face -> all-zero emotions,
the frame kept for its valence/arousal (or dropped with
`keep_non_emotions=False`). A no-face (10) image is stored with
has_face=False.

Each image becomes a one-frame "video" whose id is its subDirectory_filePath;
AffectNet has no identities, so the subject id is the image id as well. The
crop is the shipped face box (no detection, `shipped_box=True`) or, with
`shipped_box=False` (config 'whole_frame'), whatever the config's detector
gives ('none': the whole image). The shipped landmarks are stored in crop
coordinates in every config.

CSVs are parsed strictly (header, 9 columns, numbers, ranges, 136 landmark
values, unique image paths within and across splits); every error names the
file and line. The core then checks that every listed image exists (and
decodes it), naming a missing one; with `skip_broken=True` such images are
left out with a warning.
"""

import csv
import dataclasses
import math
import os
import warnings

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import annotations

HEADER = ('subDirectory_filePath', 'face_x', 'face_y', 'face_width',
          'face_height', 'facial_landmarks', 'expression', 'valence',
          'arousal')
# Expression codes 0-7, in AffectNet's order.
EXPRESSIONS = ('neutral', 'happy', 'sad', 'surprise', 'fear', 'disgust',
               'anger', 'contempt')
# Codes 8-10 (none, uncertain, no-face) carry no emotion: all-zero emotions.
_NO_FACE = 10  # Stored with has_face=False.
NOT_AVAILABLE = -2.0  # Valence / arousal of an image without that label.
_NUM_COORDS = 2 * F.NUM_LANDMARKS
# Landmark fields converted per numpy call (bounds the joined string).
_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class _Release:
  """Where one AffectNet annotation set lives in manual_dir."""
  lists: str
  csv_splits: tuple[tuple[str, str], ...]  # (file name, split).
  image_roots: tuple[str, ...]  # Accepted folder names, first found wins.


RELEASES = {
    'manual': _Release(
        'Manually_Annotated_file_lists',
        (('training.csv', 'train'), ('validation.csv', 'validation')),
        ('Manually_Annotated_Images',
         'Manually_Annotated/Manually_Annotated_Images',
         'Manually_Annotated_compressed/Manually_Annotated_Images')),
    'automatic': _Release(
        'Automatically_Annotated_file_lists',
        (('automatically_annotated.csv', 'train'),),
        ('Automatically_Annotated_Images',
         'Automatically_Annotated/Automatically_Annotated_Images',
         'Automatically_Annotated_compressed/Automatically_Annotated_Images')),
}


@dataclasses.dataclass(eq=False)
class AffectNetConfig(core.VideoFrameConfig):
  """Face-crop settings plus which annotations and rows to use.

  Attributes:
    annotations: 'manual' (training.csv, validation.csv) or 'automatic'
      (automatically_annotated.csv, 'train' only).
    keep_non_emotions: keep rows with expression 8-10 (none, uncertain,
      no-face) with all-zero emotions; False drops them.
    shipped_box: crop the face box of the CSV (no detection); False leaves
      the crop to the config's detector ('none': the whole image).
  """
  annotations: str = 'manual'
  keep_non_emotions: bool = True
  shipped_box: bool = True
  # AffectNet ships a box and 68 landmarks for every image.
  detector: str = 'none'
  landmarks: str = 'none'


@dataclasses.dataclass(frozen=True, eq=False)
class Rows:
  """The rows of one AffectNet CSV, N of them, in file order.

  Attributes:
    path: the CSV file.
    images: [N] subDirectory_filePath values.
    lines: int64 [N] line number of each row in the file (1-based).
    boxes: float32 [N, 4] (ymin, xmin, ymax, xmax) image pixels.
    landmarks: float32 [N, 68, 2] (x, y) image pixels.
    expressions: int64 [N] codes 0-10.
    valence, arousal: float32 [N] in [-1, 1]; NaN where not available (-2).
  """
  path: str
  images: list[str]
  lines: np.ndarray
  boxes: np.ndarray
  landmarks: np.ndarray
  expressions: np.ndarray
  valence: np.ndarray
  arousal: np.ndarray


def _error(path: str, line: int, what: str) -> AffectJaxError:
  return AffectJaxError(f'{path} line {line}: {what}; fix or re-copy the '
                        'file (AffectNet CSV, docs/data_formats.md).')


def _number(path: str, line: int, column: str, raw: str) -> float:
  try:
    v = float(raw)
  except ValueError:
    raise _error(path, line, f'{column} "{raw}" is not a number') from None
  if not math.isfinite(v):
    raise _error(path, line, f'{column} is {raw}')
  return v


def _affect(path: str, line: int, column: str, raw: str) -> float:
  try:
    return annotations.affect_value(raw, column, NOT_AVAILABLE)
  except ValueError as e:
    raise _error(path, line, str(e)) from None


def _parse_landmarks(path: str, lines: list[int],
                     fields: list[str]) -> np.ndarray:
  """`x;y;...` fields (136 values each) -> float32 [N, 68, 2]."""
  n = len(fields)
  try:
    with warnings.catch_warnings():
      # Unparsable text ends np.fromstring early with a DeprecationWarning.
      warnings.simplefilter('error', DeprecationWarning)
      values = np.fromstring(';'.join(fields), dtype=np.float32, sep=';')
    if values.size == n * _NUM_COORDS and np.isfinite(values).all():
      return values.reshape(n, F.NUM_LANDMARKS, 2)
  except (ValueError, DeprecationWarning):
    pass
  # Slow path, only to find the offending row (counts are checked already).
  for line, field in zip(lines, fields):
    for k, raw in enumerate(field.split(';')):
      _number(path, line, f'facial_landmarks value {k + 1}', raw)
  raise _error(path, lines[0], 'unreadable facial_landmarks')  # Unreachable.


def _is_header(row: list[str]) -> bool:
  return (tuple(c.strip().lower() for c in row) ==
          tuple(c.lower() for c in HEADER))


def _looks_like_data(row: list[str]) -> bool:
  """A headerless file's first row: 9 columns, the box numeric."""
  if len(row) != len(HEADER):
    return False
  try:
    for v in row[1:5]:
      float(v)
  except ValueError:
    return False
  return True


def read_csv(path: str) -> Rows:
  """Parses one AffectNet CSV strictly (see module doc).

  Raises:
    AffectJaxError: naming the file and line of the first bad row.
  """
  images, lines, boxes, expressions, valence, arousal = [], [], [], [], [], []
  landmarks, marks, mark_lines = [], [], []
  first = True
  with open(path, newline='', encoding='utf-8-sig', errors='replace') as f:
    reader = csv.reader(f)
    for row in reader:
      line = reader.line_num
      if not row or (len(row) == 1 and not row[0].strip()):
        continue  # Blank line (e.g. at the end).
      if first:
        first = False
        if _is_header(row):
          continue
        if not _looks_like_data(row):
          raise _error(path, line, 'expected the header '
                       f'{",".join(HEADER)} (or a first data row)')
      if len(row) != len(HEADER):
        raise _error(path, line, f'{len(row)} columns instead of '
                     f'{len(HEADER)} ({",".join(HEADER)})')
      name = row[0].strip()
      if not name:
        raise _error(path, line, 'subDirectory_filePath is empty')
      x, y, w, h = (_number(path, line, c, v)
                    for c, v in zip(HEADER[1:5], row[1:5]))
      if w < 0 or h < 0:
        raise _error(path, line, f'negative face size {w:g}x{h:g}')
      try:
        expression = int(row[6])
      except ValueError:
        raise _error(path, line, f'expression "{row[6]}" is not an integer '
                     '0-10') from None
      if not 0 <= expression <= 10:
        raise _error(path, line, f'expression {expression} is not a code '
                     '0-10')
      if row[5].count(';') != _NUM_COORDS - 1:
        raise _error(path, line, 'facial_landmarks has '
                     f'{row[5].count(";") + 1} values instead of '
                     f'{_NUM_COORDS} (68 points as x;y;x;y;...)')
      valence.append(_affect(path, line, 'valence', row[7]))
      arousal.append(_affect(path, line, 'arousal', row[8]))
      images.append(name)
      lines.append(line)
      boxes.append((y, x, y + h, x + w))
      expressions.append(expression)
      marks.append(row[5])
      mark_lines.append(line)
      if len(marks) == _CHUNK:
        landmarks.append(_parse_landmarks(path, mark_lines, marks))
        marks, mark_lines = [], []
  if marks:
    landmarks.append(_parse_landmarks(path, mark_lines, marks))
  if not images:
    raise AffectJaxError(f'{path} lists no image; re-copy the file.')
  return Rows(path=path, images=images, lines=np.asarray(lines, np.int64),
              boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
              landmarks=np.concatenate(landmarks),
              expressions=np.asarray(expressions, np.int64),
              valence=np.asarray(valence, np.float32),
              arousal=np.asarray(arousal, np.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class _OneImage:
  """Label lookup of a one-image video (core.LabelLookup; picklable)."""
  labels: core.FrameLabels

  def __call__(self, index: int, time: float) -> core.FrameLabels | None:
    del time
    return self.labels if index == 0 else None


class AffectNet(core.VideoFrameBuilder):
  """AffectNet: in-the-wild face images with expression, valence, arousal."""

  name = 'affectnet'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  EMOTION_NAMES = EXPRESSIONS
  FPS = None  # Still images.
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put Manually_Annotated_file_lists/ and Manually_Annotated_Images/ of '
      'the AffectNet release (or, for the \'automatic\' config, '
      'Automatically_Annotated_file_lists/ and '
      'Automatically_Annotated_Images/) in manual_dir (docs/data_formats.md).')
  BUILDER_CONFIGS = [
      AffectNetConfig(name='default', description=(
          'Manually annotated set, crops of the shipped face boxes, '
          '170x170.')),
      AffectNetConfig(name='whole_frame', shipped_box=False, description=(
          'Manually annotated set, whole images, 170x170.')),
      AffectNetConfig(name='automatic', annotations='automatic',
                      description=('Automatically annotated set (train '
                                   'only), shipped face boxes, 170x170.')),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    c = self.builder_config
    if c.annotations not in RELEASES:
      raise AffectJaxError(f'affectnet config {c.name!r}: annotations='
                           f'{c.annotations!r}; use one of '
                           f'{sorted(RELEASES)}.')

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    c = self.builder_config
    release = RELEASES[c.annotations]
    lists = os.path.join(manual_dir, release.lists)
    root = next((os.path.join(manual_dir, r) for r in release.image_roots
                 if os.path.isdir(os.path.join(manual_dir, r))), None)
    if root is None:
      raise AffectJaxError(
          f'{manual_dir} holds none of {", ".join(release.image_roots)}; '
          'put the AffectNet images there (docs/data_formats.md).')
    one_hot = np.eye(len(EXPRESSIONS), dtype=np.float32)
    seen: dict[str, tuple[str, int]] = {}  # Image -> (CSV, line).
    out = {}
    for csv_name, split in release.csv_splits:
      path = os.path.join(lists, csv_name)
      if not os.path.isfile(path):
        raise AffectJaxError(f'{path} is missing; copy {release.lists}/ of '
                             'the AffectNet release into manual_dir.')
      rows = read_csv(path)
      specs, dropped = [], 0
      # Python scalars: indexing numpy arrays per row is several times slower.
      sized = ((rows.boxes[:, 2] > rows.boxes[:, 0]) &
               (rows.boxes[:, 3] > rows.boxes[:, 1])).tolist()
      no_box = len(sized) - sum(sized)
      for i, (image, line, expression, v, a) in enumerate(zip(
          rows.images, rows.lines.tolist(), rows.expressions.tolist(),
          rows.valence.tolist(), rows.arousal.tolist())):
        if image in seen:
          first, first_line = seen[image]
          raise AffectJaxError(
              f'{path} line {line}: image {image} is listed already '
              f'({first} line {first_line}); an image may appear once.')
        seen[image] = (path, line)
        if expression >= len(EXPRESSIONS) and not c.keep_non_emotions:
          dropped += 1
          continue
        labels = core.FrameLabels(
            valence=v, arousal=a,
            emotions=(one_hot[expression] if expression < len(EXPRESSIONS)
                      else None),
            # A zero-sized box: the whole image.
            box=rows.boxes[i] if c.shipped_box and sized[i] else None,
            landmarks=rows.landmarks[i],
            has_face=False if expression == _NO_FACE else None)
        file = os.path.join(root, image)
        specs.append(core.VideoSpec(
            image, image, file, _OneImage(labels),
            detector='none' if c.shipped_box else None, images=[file]))
      if dropped:
        logging.info('%s: left out %d rows with expression 8-10 '
                     '(keep_non_emotions=False).', path, dropped)
      if no_box and c.shipped_box:
        logging.warning('%s: %d rows have a zero-sized face box; their '
                        'crop is the whole image.', path, no_box)
      if not specs:
        raise AffectJaxError(f'{path}: no row left to build (all have '
                             'expression 8-10 and keep_non_emotions=False).')
      out[split] = specs
    return out
