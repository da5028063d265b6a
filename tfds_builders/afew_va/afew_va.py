"""TFDS builder of AFEW-VA (Kossaifi et al. 2017; protocol of kollias2019).

Layout of `manual_dir` (docs/data_formats.md): 600 clips, one folder each,

  <clip>/00000.png, 00001.png, ...   frames, 0-based, ~25 fps (feature films)
  <clip>/<clip>.json                 {"actor": ..., "video_id": ...,
                                      "frames": {"00000": {"valence": 3,
                                      "arousal": -2, "landmarks": [[x, y],
                                      ... 68]}, ...}}

as distributed in 12 zips (`01.zip ... 12.zip`, each holding `<clip>/`
folders), extracted nested (`01/<clip>/...`) or flat (`001/ ... 600/`); any
mix of the three is read. A clip folder is a folder that directly holds a
.png or .json file, found up to three levels below `manual_dir` (a wrapping
`AFEW-VA/` folder is fine). Zips are extracted once, with Python's zipfile,
to `<download_dir>/extracted/afew_va_manual/<zip name>/` (by default
`<data_dir>/downloads/...`) and reused by later builds (and by every config)
while the zip's size and date are unchanged; a zip next to a folder of the
same name (`01.zip` and `01/`) counts as already extracted and is skipped.

  python -m affect_jax.prepare --dataset=afew_va --manual_dir=DIR \
      --data_dir=OUT

Labels: integers in [-10, 10] divided by 10. Frame "00012" of the JSON labels
00012.png (matched by the number, so "12" would too). A PNG without a JSON
entry is kept with NaN valence/arousal (the losses mask it) and no shipped
landmarks; a JSON entry without its PNG is an error (an incomplete copy).

Crops: each labelled frame is cropped around the bounding box of its 68
shipped landmarks (detector 'none' with that box, plus the config's margin),
and the landmarks are stored in crop coordinates. Frames without a JSON entry
show the whole frame. Config `whole_frame` (shipped_boxes=False) crops whole
frames everywhere and still stores the landmarks.

Splits (kollias2019: 5-fold person-independent cross validation; report
Pearson and CCC): `fold_0 ... fold_{k-1}` (`num_folds`, default 5), no actor
in two folds. Actors (the JSON's "actor", compared ignoring case and repeated
spaces) are ranked by frame count, most first, ties by sha256 of the name,
and each goes to the fold with the fewest frames so far (ties: the lower
fold). The assignment depends only on the names and frame counts, not on file
order. Train on four folds, test on the fifth:
`builder.as_data_source('fold_0+fold_1+fold_2+fold_3')` reads a union.
"""

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
import zipfile

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax import folds as folds_lib
from affect_jax.errors import AffectJaxError
from tfds_builders import core

LABEL_SCALE = 10  # Labels are integers in [-LABEL_SCALE, LABEL_SCALE].
_FRAME = re.compile(r'^(\d+)\.png$', re.IGNORECASE)
_KEY = re.compile(r'^\d+$')
# Clip folders are looked for this many levels below manual_dir (and below
# an extracted zip): flat <clip>/, nested 01/<clip>/, or a wrapper above them.
_MAX_DEPTH = 3
_EXTRACT_DIR = 'afew_va_manual'


@dataclasses.dataclass(eq=False)
class AfewVaConfig(core.VideoFrameConfig):
  """Face-crop settings plus the folds.

  Attributes:
    num_folds: subject-disjoint splits fold_0 ... fold_{num_folds - 1}.
    shipped_boxes: crop around the box of the shipped landmarks (True) or
      keep whole frames (False, config 'whole_frame').
  """
  num_folds: int = 5
  shipped_boxes: bool = True


@dataclasses.dataclass(frozen=True, eq=False)
class Clip:
  """One parsed clip.

  Attributes:
    clip_id: the folder name (e.g. '001').
    actor: the JSON's "actor", spaces normalised.
    folder: the clip folder.
    images: [N] frame i's PNG or None (frames numbered 0..N-1).
    valence, arousal: float32 [N] in [-1, 1], NaN without a JSON entry.
    landmarks: float32 [N, 68, 2] (x, y) pixels, NaN without a JSON entry.
  """
  clip_id: str
  actor: str
  folder: str
  images: tuple[str | None, ...]
  valence: np.ndarray
  arousal: np.ndarray
  landmarks: np.ndarray

  @property
  def num_labelled(self) -> int:
    return int(np.isfinite(self.valence).sum())


def _label(value, path: str, key: str, name: str) -> float:
  """An integer label in [-10, 10] -> float in [-1, 1]."""
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and
        math.isfinite(value) and float(value).is_integer() and
        -LABEL_SCALE <= value <= LABEL_SCALE)
  if not ok:
    raise AffectJaxError(
        f'{path}: frame "{key}" has {name} {json.dumps(value)}; AFEW-VA '
        f'labels are integers in [-{LABEL_SCALE}, {LABEL_SCALE}]. Fix or '
        're-copy the file.')
  return float(value) / LABEL_SCALE


def _landmarks(value, path: str, key: str) -> np.ndarray:
  """68 [x, y] pixel points -> float32 [68, 2]."""
  try:
    points = np.asarray(value, np.float64)
  except (TypeError, ValueError):  # Ragged lists, text.
    points = None
  if points is None or points.ndim != 2 or points.shape[1:] != (2,):
    problem = 'not a list of [x, y] number pairs'
  elif len(points) != F.NUM_LANDMARKS:
    problem = f'{len(points)} points'
  elif not np.isfinite(points).all():
    problem = 'not all finite'
  else:
    return points.astype(np.float32)
  raise AffectJaxError(
      f'{path}: frame "{key}" landmarks are {problem}; expected '
      f'{F.NUM_LANDMARKS} [x, y] points. Fix or re-copy the file.')


def normalize_actor(name: str) -> str:
  """Collapses runs of whitespace (the name as stored as subject id)."""
  return ' '.join(name.split())


def read_clip(folder: str) -> Clip:
  """Parses one clip folder (its PNGs and `<clip>.json`).

  Raises:
    AffectJaxError: naming the file, for a missing or unparseable JSON, a
      missing key, a label out of [-10, 10] or not an integer, landmarks
      that are not 68 points, a frame name that is not a number, or a JSON
      frame without its PNG.
  """
  clip_id = os.path.basename(folder)
  path = os.path.join(folder, f'{clip_id}.json')
  if not os.path.isfile(path):
    raise AffectJaxError(
        f'Clip folder {folder} has no {clip_id}.json; copy the clip\'s JSON '
        'there (re-extract its zip) or remove the folder.')
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise AffectJaxError(f'{path} line {e.lineno} column {e.colno}: not '
                         f'valid JSON ({e.msg}); re-copy the file.') from None
  except UnicodeDecodeError as e:
    raise AffectJaxError(f'{path}: not UTF-8 text ({e}); re-copy the '
                         'file.') from None
  if not isinstance(data, dict):
    raise AffectJaxError(f'{path}: expected a JSON object with "actor" and '
                         '"frames"; re-copy the file.')
  for key in ('actor', 'frames'):
    if key not in data:
      raise AffectJaxError(f'{path}: missing key "{key}"; re-copy the file.')
  actor = data['actor']
  if not isinstance(actor, str) or not normalize_actor(actor):
    raise AffectJaxError(f'{path}: "actor" must be a non-empty name, got '
                         f'{json.dumps(actor)}; the folds are split by it.')
  if not isinstance(data['frames'], dict):
    raise AffectJaxError(f'{path}: "frames" must be an object keyed by frame '
                         'number ("00000"); re-copy the file.')
  if str(data.get('video_id', clip_id)) != clip_id:
    logging.warning('%s: video_id %r differs from the folder name; the '
                    'folder name is the video id.', path, data['video_id'])

  entries = {}
  for key, entry in data['frames'].items():
    if not _KEY.match(key):
      raise AffectJaxError(f'{path}: frame key "{key}" is not a frame number '
                           '(e.g. "00012" for 00012.png); re-copy the file.')
    index = int(key)
    if index in entries:
      raise AffectJaxError(f'{path}: frame {index} is listed twice (keys '
                           f'"{entries[index][0]}" and "{key}"); keep one.')
    if not isinstance(entry, dict):
      raise AffectJaxError(f'{path}: frame "{key}" must be an object with '
                           'valence, arousal and landmarks.')
    for name in ('valence', 'arousal', 'landmarks'):
      if name not in entry:
        raise AffectJaxError(f'{path}: frame "{key}" has no "{name}"; '
                             're-copy the file.')
    entries[index] = (key, _label(entry['valence'], path, key, 'valence'),
                      _label(entry['arousal'], path, key, 'arousal'),
                      _landmarks(entry['landmarks'], path, key))

  pngs = {}
  for name in os.listdir(folder):
    if not name.lower().endswith('.png'):
      continue
    m = _FRAME.match(name)
    if not m:
      raise AffectJaxError(f'{os.path.join(folder, name)}: frame images are '
                           'named by their number (00012.png); rename or '
                           'remove it.')
    index = int(m.group(1))
    if index in pngs:
      raise AffectJaxError(f'{folder} holds two images of frame {index} '
                           f'({os.path.basename(pngs[index])}, {name}); keep '
                           'one.')
    pngs[index] = os.path.join(folder, name)
  missing = sorted(set(entries) - set(pngs))
  if missing:
    key = entries[missing[0]][0]
    raise AffectJaxError(
        f'{path}: frame "{key}" has no image {os.path.join(folder, key)}.png '
        f'({len(missing)} labelled frames lack one); re-extract the clip.')
  if not pngs:
    raise AffectJaxError(f'Clip folder {folder} holds no frames '
                         '(00000.png, ...); re-extract the clip.')
  n = max(pngs) + 1
  valence = np.full(n, np.nan, np.float32)
  arousal = np.full(n, np.nan, np.float32)
  landmarks = np.full((n, F.NUM_LANDMARKS, 2), np.nan, np.float32)
  for index, (_, v, a, points) in entries.items():
    valence[index], arousal[index], landmarks[index] = v, a, points
  unlabelled = len(pngs) - len(entries)
  if unlabelled:
    logging.warning('%s: %d of %d frames have no entry in %s; they are kept '
                    'with NaN valence/arousal.', folder, unlabelled, len(pngs),
                    os.path.basename(path))
  return Clip(clip_id, normalize_actor(actor), folder,
              tuple(pngs.get(i) for i in range(n)), valence, arousal,
              landmarks)


def _skip(name: str) -> bool:
  return name.startswith('.') or name == '__MACOSX'


def find_clip_folders(root: str, depth: int = _MAX_DEPTH) -> list[str]:
  """Clip folders (holding a .png or .json file) up to `depth` levels down."""
  out = []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if _skip(name) or not os.path.isdir(path):
      continue
    files = os.listdir(path)
    if any(f.lower().endswith(('.png', '.json')) for f in files):
      out.append(path)
    elif depth > 1:
      out.extend(find_clip_folders(path, depth - 1))
  return out


def extract_zip(path: str, extract_root: str) -> str:
  """Extracts a zip once to `extract_root/<zip name>/`; returns that folder.

  A marker file with the zip's path, size and modification time makes later
  calls reuse the folder; an interrupted extraction is redone.
  """
  stem = os.path.splitext(os.path.basename(path))[0]
  out = os.path.join(extract_root, stem)
  marker = out + '.done'
  st = os.stat(path)
  stamp = f'{os.path.abspath(path)} {st.st_size} {st.st_mtime_ns}'
  if os.path.isdir(out) and os.path.isfile(marker):
    with open(marker) as f:
      if f.read() == stamp:
        return out
  logging.info('Extracting %s to %s (once).', path, out)
  tmp = out + '.tmp'
  for stale in (out, tmp):
    shutil.rmtree(stale, ignore_errors=True)
  os.makedirs(tmp)
  try:
    with zipfile.ZipFile(path) as z:
      z.extractall(tmp)  # Strips absolute and '..' member paths.
  except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
    shutil.rmtree(tmp, ignore_errors=True)
    raise AffectJaxError(
        f'Cannot extract {path}: {e}. The zip is corrupt or truncated '
        '(re-download it), or extract it yourself into manual_dir '
        f'(cd {os.path.dirname(path)} && unzip {os.path.basename(path)} '
        f'-d {stem}).') from e
  os.rename(tmp, out)
  with open(marker, 'w') as f:
    f.write(stamp)
  return out


def find_clips(manual_dir: str, extract_root: str) -> dict[str, str]:
  """{clip id: folder} of every clip in manual_dir, its subfolders and zips."""
  roots = [manual_dir]
  for name in sorted(os.listdir(manual_dir)):
    path = os.path.join(manual_dir, name)
    if not (name.lower().endswith('.zip') and os.path.isfile(path)):
      continue
    if os.path.isdir(os.path.join(manual_dir, name[:-4])):
      logging.info('%s: the folder %s/ is there, reading that instead.',
                   path, name[:-4])
      continue
    roots.append(extract_zip(path, extract_root))
  clips = {}
  for root in roots:
    for folder in find_clip_folders(root):
      clip_id = os.path.basename(folder)
      if clip_id in clips:
        raise AffectJaxError(
            f'Clip {clip_id} is in two places: {clips[clip_id]} and {folder}; '
            'keep one copy.')
      clips[clip_id] = folder
  return clips


def assign_folds(frames_per_actor: dict[str, int],
                 num_folds: int) -> dict[str, int]:
  """{actor: fold} balancing frames, deterministic (affect_jax.folds)."""
  try:
    return folds_lib.assign_folds(frames_per_actor, num_folds, 'actors')
  except AffectJaxError as e:
    raise AffectJaxError(f'afew_va: {e}') from None


def group_actors(clips: list[Clip]) -> dict[str, str]:
  """{clip id: subject id}: one spelling per actor, ignoring case."""
  spellings: dict[str, set[str]] = {}
  for clip in clips:
    spellings.setdefault(clip.actor.casefold(), set()).add(clip.actor)
  canonical = {}
  for key, names in spellings.items():
    canonical[key] = min(names)
    if len(names) > 1:
      logging.warning('afew_va: actor spelled %s; treated as one subject '
                      '%r.', sorted(names), canonical[key])
  return {c.clip_id: canonical[c.actor.casefold()] for c in clips}


@dataclasses.dataclass(frozen=True, eq=False)
class _Labels:
  """Label lookup by frame index for one clip (picklable, see core)."""
  has_image: np.ndarray
  valence: np.ndarray
  arousal: np.ndarray
  landmarks: np.ndarray
  shipped_boxes: bool

  def __call__(self, index: int, time: float) -> core.FrameLabels | None:
    del time  # Labels are per frame number.
    if index >= len(self.valence) or not self.has_image[index]:
      return None  # A gap in the PNG numbering: no record.
    if not np.isfinite(self.valence[index]):
      return core.FrameLabels()  # A PNG without a JSON entry.
    points = self.landmarks[index]
    box = None
    if self.shipped_boxes:
      (x0, y0), (x1, y1) = points.min(0), points.max(0)
      box = np.array([y0, x0, y1, x1], np.float32)
    return core.FrameLabels(valence=float(self.valence[index]),
                            arousal=float(self.arousal[index]),
                            box=box, landmarks=points)


class AfewVa(core.VideoFrameBuilder):
  """AFEW-VA: 600 film clips with per-frame valence, arousal and landmarks."""

  name = 'afew_va'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  EMOTION_NAMES = ()
  FPS = 25.0
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put the AFEW-VA zips 01.zip ... 12.zip, or their extracted clip '
      'folders (01/<clip>/ or <clip>/ with 00000.png ... and <clip>.json), '
      'in manual_dir (docs/data_formats.md).')
  BUILDER_CONFIGS = [
      AfewVaConfig(name='default', detector='none', landmarks='none',
                   description='Crops around the shipped landmarks, 170x170; '
                   '5 actor-disjoint folds.'),
      AfewVaConfig(name='whole_frame', detector='none', landmarks='none',
                   shipped_boxes=False,
                   description='Whole frames, 170x170, shipped landmarks; 5 '
                   'actor-disjoint folds.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._extract_root = None

  def _split_generators(self, dl_manager):
    # Zips are extracted next to TFDS's own downloads (see module doc).
    self._extract_root = os.path.join(str(dl_manager.download_dir),
                                      'extracted', _EXTRACT_DIR)
    return super()._split_generators(dl_manager)

  def _videos(self, manual_dir: str) -> dict[str, list[core.VideoSpec]]:
    c = self.builder_config
    # Set by _split_generators; a direct call extracts to the temp folder.
    extract_root = self._extract_root or os.path.join(tempfile.gettempdir(),
                                                      _EXTRACT_DIR)
    folders = find_clips(manual_dir, extract_root)
    if not folders:
      raise AffectJaxError(
          f'{manual_dir} holds no AFEW-VA clip (a folder with 00000.png ... '
          'and <clip>.json) and no 01.zip ... 12.zip; see docs/data_formats.md.')
    clips = [read_clip(folders[k]) for k in sorted(folders)]
    subjects = group_actors(clips)
    frames: dict[str, int] = {}
    for clip in clips:
      subject = subjects[clip.clip_id]
      frames[subject] = frames.get(subject, 0) + clip.num_labelled
    folds = assign_folds(frames, c.num_folds)
    out = {f'fold_{k}': [] for k in range(c.num_folds)}
    for clip in clips:
      subject = subjects[clip.clip_id]
      labels = _Labels(np.array([p is not None for p in clip.images]),
                       clip.valence, clip.arousal, clip.landmarks,
                       c.shipped_boxes)
      out[f'fold_{folds[subject]}'].append(core.VideoSpec(
          clip.clip_id, subject, clip.folder, labels, detector='none',
          images=clip.images, fps=self.FPS))
    logging.info('afew_va: %d clips of %d actors in %d folds of %s labelled '
                 'frames.', len(clips), len(frames), c.num_folds,
                 [sum(frames[a] for a in frames if folds[a] == k)
                  for k in range(c.num_folds)])
    return out
