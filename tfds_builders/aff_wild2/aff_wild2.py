"""TFDS builder of Aff-Wild2 as distributed for the ABAW challenges.

Layout of `manual_dir` (docs/data_formats.md):

  cropped_aligned/<video>/00001.jpg ...      112x112 aligned faces, numbered
                                             from 1 by video frame; frames
                                             where the aligner found no face
                                             have no image
  videos/<video>.mp4|.avi                    raw videos, ~30 fps (also one
                                             level of subfolders, e.g.
                                             videos/batch1/)
  Annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<id>.txt
  Annotations/EXPR_Recognition_Challenge/{Train_Set,Validation_Set}/<id>.txt

Older releases spell the annotation folders `annotations/VA_Set/` and
`annotations/EXPR_Set/`; both spellings are accepted (the former wins where a
copy holds both). Only one of cropped_aligned/ and videos/ is needed.

  python -m affect_jax.prepare --dataset=aff_wild2/va --manual_dir=DIR \
      --data_dir=OUT

Configs (two label sets, one builder config each):
- 'va' (default): VA_Estimation_Challenge, header `valence,arousal`, one row
  per frame; a `-5` value (ABAW writes `-5,-5`) means no label: stored as
  NaN, the frame is kept (the losses and metrics mask NaN). No emotions.
- 'expr': EXPR_Recognition_Challenge, header
  `Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise` (7 classes) or,
  newer, the same plus `,Other` (8), one class index per row. Records carry
  the 8 EXPR_NAMES (`other` last; a 7-class file never sets it) as a one-hot
  vector; a `-1` row (no label) keeps the frame with all 8 entries NaN, which
  the emotion losses and metrics mask exactly like NaN valence. Valence and
  arousal are NaN.
- 'va_whole_frame', 'expr_whole_frame': the raw videos' whole frames
  (frames='videos', detector 'none').

Frames (config `frames`):
- 'auto' (default): per annotation, its cropped_aligned/<id>/ folder if that
  exists, else its raw video.
- 'cropped_aligned' / 'videos': only that source; an annotation without it is
  an error.
With cropped_aligned, annotation row i (0-based) is image `{i + 1:05d}.jpg`
(any zero padding is accepted); a missing image is a frame stored black with
has_face=False (never dropped); images past the last row are ignored. The
images are face crops already (no detection) at a nominal 30 fps; a last
image number more than `max_mismatch_frames` (30) away from the row count is
logged as a warning (the aligner leaves out frames without a face, often at
the ends). With a raw video, decoded frame i takes row i; frames past the
last row are dropped; a row/frame count difference up to
`max_mismatch_frames` is a warning, more is an error naming both files
(`core.check_label_count`), or with skip_broken the video is left out.

Two people in one video: the annotations `<video>_left.txt` and
`<video>_right.txt` belong to the folders cropped_aligned/<video>_left/ and
/<video>_right/, or to the raw video videos/<video>.mp4, where the detector
takes the left- or right-most face (`VideoSpec.pick`). The video id is the
annotation's file name without `.txt` (`10-60-1280x720_right`); the subject
id is the video id without `_left` / `_right`. (Aff-Wild2 ships no subject
list; people who appear in several videos cannot be linked.)

Splits: Train_Set -> 'train', Validation_Set -> 'validation', as the ABAW
organisers split them; the test labels are not distributed. A video id in
both is an error.
"""

import dataclasses
import os
import re

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.core import annotations

# EXPR classes in label order, as in the newer (8-class) header.
EXPR_CLASSES = F.ABAW_EXPR_CLASSES
EXPR_NAMES = tuple(name.lower() for name in EXPR_CLASSES)
_EXPR_HEADERS = (EXPR_CLASSES[:7], EXPR_CLASSES)
_VA_HEADER = ('valence', 'arousal')
_NO_VA = -5.0
_NO_EXPR = -1

# config.labels -> challenge folder names, primary spelling first.
_CHALLENGES = {'va': ('VA_Estimation_Challenge', 'VA_Set'),
               'expr': ('EXPR_Recognition_Challenge', 'EXPR_Set')}
_ANNOTATION_DIRS = ('Annotations', 'annotations')
_SPLITS = {'Train_Set': 'train', 'Validation_Set': 'validation'}
_CROPPED = 'cropped_aligned'
_FRAMES = ('auto', 'cropped_aligned', 'videos')
_SIDES = ('left', 'right')
_IMAGE = re.compile(r'(\d+)\.jpe?g', re.IGNORECASE)


@dataclasses.dataclass(eq=False)
class AffWild2Config(core.VideoFrameConfig):
  """Face-crop settings plus the label set and frame source.

  Attributes:
    labels: 'va' (VA_Estimation_Challenge) or 'expr'
      (EXPR_Recognition_Challenge).
    frames: 'auto' (cropped_aligned/<id>/ where it exists, else the raw
      video), 'cropped_aligned' or 'videos' (see module doc).
  """
  labels: str = 'va'
  frames: str = 'auto'


def _read_rows(path: str, headers: tuple[tuple[str, ...], ...]
               ) -> tuple[int, list[tuple[int, str, list[str]]]]:
  """Checks the header of a label file and splits its rows.

  Args:
    path: the file.
    headers: the accepted headers (names); spaces around names are ignored.

  Returns:
    The index of the file's header in `headers`, and per data row its line
    number, its text and its comma-separated fields (stripped).

  Raises:
    AffectJaxError: missing or empty file, wrong header, empty row.
  """
  if not os.path.isfile(path):
    raise AffectJaxError(f'Annotation {path} is missing; re-copy it.')
  with open(path, encoding='utf-8-sig', errors='replace') as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  header = tuple(''.join(lines[0].split()).split(',')) if lines else ()
  if header not in headers:
    expected = ' or '.join(f'"{",".join(h)}"' for h in headers)
    got = lines[0].strip() if lines else ''
    raise AffectJaxError(
        f'{path} line 1: the header must be {expected} (Aff-Wild2, '
        f'docs/data_formats.md), got "{got}". Use the files as distributed.')
  if len(lines) < 2:
    raise AffectJaxError(f'{path}: a header but no rows (truncated); re-copy '
                         'the file.')
  rows = []
  for number, raw in enumerate(lines[1:], start=2):
    line = raw.strip()
    if not line:  # Would shift every later row to the wrong frame.
      raise AffectJaxError(f'{path} line {number}: empty row (every row is '
                           'one frame); fix or re-copy the file.')
    rows.append((number, line, [c.strip() for c in line.split(',')]))
  return headers.index(header), rows


def read_va(path: str) -> np.ndarray:
  """Parses a VA_Estimation_Challenge file (header `valence,arousal`).

  Args:
    path: the file.

  Returns:
    float32 [N, 2] (valence, arousal) of frames 0..N-1, NaN where the file
    has -5 (no label).

  Raises:
    AffectJaxError: wrong header, a row without exactly 2 fields, a value
      neither in [-1, 1] nor -5, naming file and line.
  """
  _, rows = _read_rows(path, (_VA_HEADER,))
  out = np.empty((len(rows), 2), np.float32)
  for i, (number, line, fields) in enumerate(rows):
    try:
      if len(fields) != 2:
        raise ValueError(f'{len(fields)} field(s) instead of 2 '
                         '(valence,arousal)')
      for j, (name, cell) in enumerate(zip(_VA_HEADER, fields)):
        out[i, j] = annotations.affect_value(cell, name, _NO_VA)
    except ValueError as e:
      raise AffectJaxError(f'{path} line {number}: {e}: "{line}"; fix or '
                           're-copy the file.') from None
  return out


def read_expr(path: str) -> tuple[np.ndarray, int]:
  """Parses an EXPR_Recognition_Challenge file (7- or 8-class header).

  Args:
    path: the file.

  Returns:
    int8 [N] class index of frames 0..N-1 (EXPR_CLASSES order), -1 where
    the frame has no label; and the number of classes of the header (7/8).

  Raises:
    AffectJaxError: wrong header, a row without exactly one field, a value
      not an integer in 0..C-1 or -1, naming file and line.
  """
  k, rows = _read_rows(path, _EXPR_HEADERS)
  num_classes = len(_EXPR_HEADERS[k])
  out = np.empty(len(rows), np.int8)
  for i, (number, line, fields) in enumerate(rows):
    try:
      if len(fields) != 1:
        raise ValueError(f'{len(fields)} fields instead of 1 (one class '
                         'index per row)')
      try:
        value = int(fields[0])
      except ValueError:
        raise ValueError(f'{fields[0]!r} is not an integer class '
                         'index') from None
      if value != _NO_EXPR and not 0 <= value < num_classes:
        raise ValueError(f'class {value} is outside 0..{num_classes - 1} of '
                         f'the {num_classes}-class header (and not -1, "no '
                         'label")')
      out[i] = value
    except ValueError as e:
      raise AffectJaxError(f'{path} line {number}: {e}: "{line}"; fix or '
                           're-copy the file.') from None
  return out, num_classes


@dataclasses.dataclass(frozen=True, eq=False)
class RowLabels:
  """Labels of one annotation file by frame index (a core.LabelLookup).

  A dataclass rather than a closure so that it pickles to build workers.

  Attributes:
    valence_arousal: float32 [N, 2], NaN = no label ('va'); or None.
    expression: int8 [N] class index, -1 = no label ('expr'); or None.
  """
  valence_arousal: np.ndarray | None = None
  expression: np.ndarray | None = None

  @property
  def num_rows(self) -> int:
    rows = (self.expression if self.valence_arousal is None else
            self.valence_arousal)
    return len(rows)

  def __call__(self, index: int, time: float) -> core.FrameLabels | None:
    del time  # Aff-Wild2 labels are per frame index.
    if index >= self.num_rows:
      return None  # Past the last row: dropped (RowCheck checks the count).
    if self.valence_arousal is not None:
      valence, arousal = self.valence_arousal[index]
      return core.FrameLabels(valence=float(valence), arousal=float(arousal))
    label = int(self.expression[index])
    if label == _NO_EXPR:  # NaN: masked by the emotion losses and metrics.
      return core.FrameLabels(
          emotions=np.full(len(EXPR_NAMES), np.nan, np.float32))
    emotions = np.zeros(len(EXPR_NAMES), np.float32)
    emotions[label] = 1.0
    return core.FrameLabels(emotions=emotions)


@dataclasses.dataclass(frozen=True)
class RowCheck:
  """A raw video's frame count against its annotation's rows (core)."""
  video_path: str
  annotation_path: str
  num_rows: int
  max_frames: int

  def __call__(self, num_frames: int) -> None:
    core.check_label_count(self.video_path, self.annotation_path, num_frames,
                           self.num_rows, self.max_frames, 'rows')


def split_side(video_id: str) -> tuple[str, str | None]:
  """('10-60-1280x720', 'right') of '10-60-1280x720_right'; (id, None)."""
  for side in _SIDES:
    if video_id.endswith(f'_{side}'):
      return video_id[:-len(side) - 1], side
  return video_id, None


def frame_images(folder: str, num_rows: int, annotation: str,
                 config: AffWild2Config) -> list[str | None]:
  """Image of each annotation row in a cropped_aligned/<id>/ folder.

  Args:
    folder: the folder of `<n>.jpg` files, n = 1-based frame number.
    num_rows: rows of the annotation.
    annotation: the annotation file (for messages).
    config: for the mismatch warning (`max_mismatch_frames`).

  Returns:
    [num_rows] path of image `row + 1`, or None where it is missing.

  Raises:
    AffectJaxError: a frame number twice, a frame 0 (0-based numbering, not
      the ABAW release), or no image for any row.
  """
  numbered = {}
  for name in os.listdir(folder):
    m = _IMAGE.fullmatch(name)
    if not m:
      continue
    n = int(m.group(1))
    if n in numbered:
      raise AffectJaxError(
          f'{folder} holds two images of frame {n} ({name}, '
          f'{os.path.basename(numbered[n])}); keep one.')
    numbered[n] = os.path.join(folder, name)
  if 0 in numbered:
    raise AffectJaxError(
        f'{numbered[0]}: Aff-Wild2 numbers cropped_aligned frames from '
        '00001.jpg; this folder was extracted differently. Use the '
        "release's cropped_aligned/ or build with frames='videos'.")
  images = [numbered.get(i + 1) for i in range(num_rows)]
  if not any(images):
    raise AffectJaxError(
        f'{folder} holds no image 00001.jpg..{num_rows:05d}.jpg for the '
        f'{num_rows} rows of {annotation}; re-extract it or build with '
        "frames='videos'.")
  last = max(numbered)
  if abs(last - num_rows) > config.max_mismatch_frames:
    logging.warning('%s: last image is frame %d but %s has %d rows; check '
                    'that the annotation belongs to this folder.', folder,
                    last, annotation, num_rows)
  return images


def _dirs_named(root: str, names: tuple[str, ...], depth: int) -> list[str]:
  """Folders called one of `names` 1..`depth` levels below `root` (sorted).

  Never descends into a cropped_aligned/ folder (thousands of images per
  video would make this slow).
  """
  found, level = [], [root]
  for _ in range(depth):
    below = []
    for folder in level:
      try:
        with os.scandir(folder) as it:  # is_dir() without a stat per file.
          entries = sorted((e.name, e.path) for e in it if e.is_dir())
      except OSError:
        continue
      for name, path in entries:
        if name in names:
          found.append(path)
        elif name != _CROPPED:
          below.append(path)
    level = below
  return found


def index_videos(manual_dir: str) -> dict[str, str]:
  """{stem: path} of videos/<stem>.mp4|.avi and videos/<folder>/<stem>.*."""
  root = os.path.join(manual_dir, 'videos')
  if not os.path.isdir(root):
    return {}
  folders = [root] + [os.path.join(root, d) for d in sorted(os.listdir(root))
                      if os.path.isdir(os.path.join(root, d))]
  return core.find_videos(folders)


class AffWild2(core.VideoFrameBuilder):
  """Aff-Wild2 (ABAW): per-frame valence/arousal or basic expressions."""

  name = 'aff_wild2'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  FPS = 30.0
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put Annotations/ (VA_Estimation_Challenge/, EXPR_Recognition_'
      'Challenge/) and cropped_aligned/ and/or videos/ of the Aff-Wild2 '
      'ABAW release in manual_dir (docs/data_formats.md).')
  BUILDER_CONFIGS = [
      AffWild2Config(name='va', labels='va', description=(
          'Valence/arousal; cropped_aligned faces, else dlib face crops of '
          'the raw video; 170x170.')),
      AffWild2Config(name='expr', labels='expr', description=(
          '8 basic expressions (one-hot, NaN = no label); cropped_aligned '
          'faces, else dlib face crops of the raw video; 170x170.')),
      AffWild2Config(name='va_whole_frame', labels='va', frames='videos',
                     detector='none', description=(
                         'Valence/arousal; whole raw video frames, '
                         '170x170.')),
      AffWild2Config(name='expr_whole_frame', labels='expr', frames='videos',
                     detector='none', description=(
                         '8 basic expressions; whole raw video frames, '
                         '170x170.')),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'va'

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    c = self.builder_config
    if c.labels not in _CHALLENGES or c.frames not in _FRAMES:
      raise AffectJaxError(
          f'aff_wild2 config {c.name!r}: labels={c.labels!r} (one of '
          f'{tuple(_CHALLENGES)}) or frames={c.frames!r} (one of {_FRAMES}).')

  @property
  def EMOTION_NAMES(self) -> tuple[str, ...]:  # pylint: disable=invalid-name
    # The label set differs per config, so the record spec does too.
    return EXPR_NAMES if self.builder_config.labels == 'expr' else ()

  def _annotation_dir(self, manual_dir: str) -> str:
    """The challenge folder of the config's label set (either spelling)."""
    names = _CHALLENGES[self.builder_config.labels]
    for name in names:
      for parent in _ANNOTATION_DIRS:
        folder = os.path.join(manual_dir, parent, name)
        if os.path.isdir(folder):
          return folder
    expected = os.path.join(manual_dir, _ANNOTATION_DIRS[0], names[0])
    found = _dirs_named(manual_dir, names, depth=3)
    if found:
      raise AffectJaxError(
          f'{expected} is missing but {found[0]} exists; move it there '
          f'(manual_dir/Annotations/{names[0]}/Train_Set/..., '
          'docs/data_formats.md).')
    raise AffectJaxError(
        f'{expected} is missing (nor annotations/{names[1]}/); manual_dir '
        'must hold the Aff-Wild2 annotations (docs/data_formats.md).')

  def _cropped_root(self, manual_dir: str) -> str | None:
    """manual_dir/cropped_aligned, None where unused; errors if misplaced."""
    c = self.builder_config
    if c.frames == 'videos':
      return None
    root = os.path.join(manual_dir, _CROPPED)
    if os.path.isdir(root):
      nested = os.path.join(root, _CROPPED)
      if os.path.isdir(nested):
        raise AffectJaxError(
            f'{nested} is nested in {root}: move its <video>/ folders up to '
            f'{root}/ (cropped_aligned/<video>/00001.jpg, docs/data_formats.md).')
      return root
    # Rather than silently use the raw videos (or fail per video) when the
    # crops are there but one folder down.
    found = _dirs_named(manual_dir, (_CROPPED,), depth=2)
    if found:
      raise AffectJaxError(
          f'{root} is missing but {found[0]} exists; move it to {root} '
          "(docs/data_formats.md), or build with frames='videos'.")
    if c.frames == _CROPPED:
      raise AffectJaxError(
          f"{root} is missing (config frames='cropped_aligned'); copy it "
          "from the Aff-Wild2 release or build with frames='auto'.")
    return None

  def _read(self, path: str) -> RowLabels:
    if self.builder_config.labels == 'va':
      return RowLabels(valence_arousal=read_va(path))
    return RowLabels(expression=read_expr(path)[0])

  def _spec(self, manual_dir: str, annotation: str, cropped_root: str | None,
            videos: dict[str, str]) -> core.VideoSpec:
    """The frames and labels of one annotation file."""
    c = self.builder_config
    vid = os.path.basename(annotation)[:-len('.txt')]
    base, side = split_side(vid)
    labels = self._read(annotation)
    if cropped_root is not None:
      folder = os.path.join(cropped_root, vid)
      if os.path.isdir(folder):
        images = frame_images(folder, labels.num_rows, annotation, c)
        return core.VideoSpec(vid, base, folder, labels, images=images,
                              fps=self.FPS, aligned=True)
      if c.frames == _CROPPED:
        raise AffectJaxError(
            f'{annotation} has no frames: {folder}/ is missing; copy it '
            "from the release, remove the annotation or build with "
            "frames='auto'.")
    path, pick = videos.get(vid), 'largest'
    if path is None and side is not None:
      path, pick = videos.get(base), side
    if path is None:
      where = os.path.join(manual_dir, 'videos', base)
      also = (f'{cropped_root}/{vid}/ nor ' if cropped_root is not None
              else '')
      raise AffectJaxError(
          f'{annotation} has no frames: neither {also}{where}.mp4|.avi '
          'exists; copy the frames (cropped_aligned/ or videos/, '
          'docs/data_formats.md) or remove the annotation.')
    return core.VideoSpec(
        vid, base, path, labels,
        RowCheck(path, annotation, labels.num_rows, c.max_mismatch_frames),
        pick=pick)

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    challenge = self._annotation_dir(manual_dir)
    cropped_root = self._cropped_root(manual_dir)
    videos = ({} if self.builder_config.frames == _CROPPED else
              index_videos(manual_dir))
    out, seen = {}, {}
    for folder_name, split in _SPLITS.items():
      folder = os.path.join(challenge, folder_name)
      if not os.path.isdir(folder):
        raise AffectJaxError(f'{folder} is missing; copy it from the '
                             'Aff-Wild2 release (docs/data_formats.md).')
      names = sorted(n for n in os.listdir(folder) if n.endswith('.txt'))
      if not names:
        raise AffectJaxError(f'{folder} holds no <video>.txt annotation; '
                             're-copy it.')
      specs = []
      for name in names:
        path = os.path.join(folder, name)
        if name[:-4] in seen:
          raise AffectJaxError(f'{path} and {seen[name[:-4]]} annotate the '
                               'same video in two splits; remove one.')
        seen[name[:-4]] = path
        specs.append(self._spec(manual_dir, path, cropped_root, videos))
      aligned = sum(s.aligned for s in specs)
      logging.info('aff_wild2 %s: %d videos (%d from %s, %d raw).', split,
                   len(specs), aligned, _CROPPED, len(specs) - aligned)
      out[split] = specs
    return out
