"""grain input pipeline: per-frame TFDS records -> windows of T frames -> batches.

Every builder writes one record per frame, sorted by (video, frame) (TFDS keeps
the key order when shuffling is disabled), so a window of T consecutive frames
of a video is a contiguous run of record indices. The pipeline:

1. `load_split` opens the prepared records (array_record, no TensorFlow) and
   indexes them once: where each video starts, how long it is, and its
   per-frame labels (kept in memory for class counts and resampling).
2. `make_windows` cuts every video into windows (start, valid length).
3. `train_batches` (the train stage's one call: batches and steps per
   epoch from the same windows) / `eval_dataset` turn windows into batches of
   `{'frames': uint8 [B, T, H, W, 3], 'valence': [B, T], 'arousal': [B, T],
   'emotions': [B, T, C], 'landmarks': [B, T, 68, 2], 'mask': [B, T],
   'frame_index': [B, T], 'video_index': [B], 't0': [B]}`. Frames stay uint8
   until they are on the device; `normalize` maps them to floats there.

Training batches are a deterministic function of the step (grain `MapDataset`
with a seeded shuffle and per-index augmentation rngs), so resuming at step s
continues with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any, Iterator, NamedTuple, Sequence

from absl import logging
import grain
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from affect_jax import features as F
from affect_jax import samplers
from affect_jax import writers
from affect_jax.errors import AffectJaxError

# Batch keys of per-frame float labels read straight from the records.
_FRAME_LABELS = (F.VALENCE, F.AROUSAL)
FRAME_INDEX = 'frame_index'  # int32 [B, T]; -1 at padded steps.

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


@dataclasses.dataclass
class SplitData:
  """A prepared split, indexed by video.

  Attributes:
    source: random-access per-frame records (TFDS array_record data source).
    name: `dataset/split` for messages.
    video_ids: [V] video id strings, in record order.
    subject_ids: [V] subject id strings.
    starts: int64 [V] index of each video's first record.
    lengths: int64 [V] number of frames of each video.
    valence, arousal: float32 [N] per-frame labels of the whole split.
    emotions: float32 [N, C] per-frame multi-hot emotions (C may be 0).
    emotion_names: the C class names.
  """
  source: Any
  name: str
  video_ids: list[str]
  subject_ids: list[str]
  starts: np.ndarray
  lengths: np.ndarray
  valence: np.ndarray
  arousal: np.ndarray
  emotions: np.ndarray
  emotion_names: tuple[str, ...]
  # The builder's metadata (fps, face-crop settings: detector, image_size,
  # margin, landmarks) and full name, saved with the checkpoints trained on it.
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_frames(self) -> int:
    return int(self.lengths.sum())

  def frame_rows(self) -> np.ndarray:
    """Record indices of this split's frames (all of them, in order)."""
    if not len(self.starts):
      return np.zeros(0, np.int64)
    return np.concatenate([np.arange(s, s + n) for s, n in
                           zip(self.starts, self.lengths)]).astype(np.int64)

  def emotion_counts(self) -> np.ndarray:
    """Frames per emotion class, [C]."""
    return (self.emotions[self.frame_rows()] > 0.5).sum(axis=0).astype(
        np.int64)

  def subset(self, videos: Sequence[int], name: str) -> 'SplitData':
    """The split restricted to the videos at indices `videos` (a CV fold).

    The records and per-frame label arrays are shared (indexed through
    `starts`), so a subset costs nothing.
    """
    idx = np.asarray(sorted(int(v) for v in videos), np.int64)
    return dataclasses.replace(
        self, name=name, video_ids=[self.video_ids[i] for i in idx],
        subject_ids=[self.subject_ids[i] for i in idx],
        starts=self.starts[idx], lengths=self.lengths[idx])


def _str(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _prepared_dir(data_dir: str, name: str, builder_config: str | None) -> str:
  base = os.path.join(data_dir, name)
  if builder_config:
    base = os.path.join(base, builder_config)
  return base


def data_dir_of(dataset_cfg) -> str:
  return os.path.expanduser(dataset_cfg.get('data_dir') or
                            os.environ.get('TFDS_DATA_DIR', '') or
                            '~/tensorflow_datasets')


def builder_config_name(dataset_cfg, default_config: str | None
                        ) -> str | None:
  """The builder config a dataset section names, `prepared_with` applied.

  `prepare` appends the face options it was given to the config's name
  (`default` + `--image_size=112` -> `default-image_size_112`);
  `prepared_with='image_size_112'` selects those records. A full name in
  `builder_config` (or in `prepared_with`) is taken as it is.
  """
  base = dataset_cfg.get('builder_config') or default_config
  options = (dataset_cfg.get('prepared_with') or '').strip().strip('-')
  if not options:
    return base or None
  if not base or (base and options.startswith(base + '-')):
    return options
  if '-' in (dataset_cfg.get('builder_config') or ''):
    return base  # A full name given for this stage wins.
  return f'{base}-{options}'


def prepared_variants(data_dir: str, name: str) -> list[str]:
  """The builder configs of `name` with finished records under data_dir."""
  root = os.path.join(data_dir, name)
  if not os.path.isdir(root):
    return []
  out = []
  for config in sorted(os.listdir(root)):
    folder = os.path.join(root, config)
    if not os.path.isdir(folder):
      continue
    if any(os.path.exists(os.path.join(folder, v, 'dataset_info.json'))
           for v in os.listdir(folder) if not v.startswith('incomplete.')):
      out.append(config)
  return out


def get_builder(dataset_cfg) -> Any:
  """Returns the TFDS builder of a prepared dataset (building the synthetic one).

  Args:
    dataset_cfg: ConfigDict with `name`, `builder_config`, `data_dir`,
      `prepared_with` and `build_if_missing` (only the embedded synthetic
      dataset can be built without the user's files).

  Raises:
    AffectJaxError: when the dataset is not prepared under `data_dir`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tfds_builders  # pylint: disable=g-import-not-at-top
  tfds_builders.register_all()

  data_dir = data_dir_of(dataset_cfg)
  name = dataset_cfg.name
  try:
    cls = tfds.builder_cls(name)
    default_config = (cls.BUILDER_CONFIGS[0].name if cls.BUILDER_CONFIGS
                      else None)
  except Exception:  # pylint: disable=broad-except
    cls, default_config = None, None
  builder_config = builder_config_name(dataset_cfg, default_config)
  full_name = f'{name}/{builder_config}' if builder_config else name
  known = cls is not None and (
      builder_config is None or
      builder_config in {c.name for c in cls.BUILDER_CONFIGS})
  if not known:
    # Not a registered builder or config (e.g. one `prepare` named after its
    # options): read the prepared records from their directory.
    builder = None
    base = _prepared_dir(data_dir, name, builder_config)
    if os.path.isdir(base):
      # An interrupted build's `incomplete.*` folder is never a dataset.
      versions = sorted(v for v in os.listdir(base)
                        if not v.startswith('incomplete.') and
                        os.path.exists(os.path.join(base, v,
                                                    'dataset_info.json')))
      if versions:
        builder = tfds.builder_from_directory(os.path.join(base, versions[-1]))
    if builder is None:
      raise _not_prepared_error(name, data_dir, builder_config,
                                default_config) from None
    tfds_builders.core.check_prepared(builder)
    return builder

  builder = tfds.builder(full_name, data_dir=data_dir)
  if not _is_prepared(builder):
    if dataset_cfg.get('build_if_missing', False):
      logging.info('Building %s into %s (first run only).', full_name,
                   data_dir)
      print(f'Building dataset {full_name} into {data_dir} (first run only)...',
            flush=True)
      builder.download_and_prepare()
    else:
      raise _not_prepared_error(name, data_dir, builder_config,
                                default_config)
  # Refuses a half-written folder (missing or short shards) with the fix.
  tfds_builders.core.check_prepared(builder)
  return builder


def _is_prepared(builder) -> bool:
  return os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json'))


def _not_prepared_error(name: str, data_dir: str, builder_config: str | None,
                        default_config: str | None = None) -> AffectJaxError:
  where = _prepared_dir(data_dir, name, builder_config)
  present = [v for v in prepared_variants(data_dir, name)
             if v != builder_config]
  if present:
    base = builder_config.split('-')[0] if builder_config else default_config
    picks = []
    for v in present:
      if base and v.startswith(base + '-'):
        picks.append(f'{v}: --config.dataset.prepared_with='
                     f'{v[len(base) + 1:]}')
      elif v == base:
        picks.append(f'{v}: --config.dataset.prepared_with= (the default)')
      else:
        picks.append(f'{v}: --config.STAGE.dataset.builder_config={v}')
    return AffectJaxError(
        f'No prepared {name!r} records named {builder_config or name!r} '
        f'under {data_dir} (looked for {where}); {data_dir} holds other '
        f'prepared variants of {name!r}, each selected by: '
        + '; '.join(picks) + '. Or prepare the one asked for with '
        f'`python -m affect_jax.prepare --dataset={name} ...`.')
  return AffectJaxError(
      f'No prepared {name!r} dataset found: looked for TFDS records under '
      f'{where} (data_dir={data_dir!r}, set with --config.dataset.data_dir or '
      f'$TFDS_DATA_DIR). {name!r} is a licensed dataset that you must supply: '
      f'put your copy in the layout of docs/data_formats.md and prepare it with '
      f'`python -m affect_jax.prepare --dataset={name} --manual_dir=YOUR_COPY '
      f'--data_dir={data_dir}` (see README, "Real datasets"). To try the '
      f'system without it, run --config=configs/realeyes.py:synthetic.')


def load_split(dataset_cfg, split: str) -> SplitData:
  """Opens and indexes one split (or splits joined by '+') of a dataset.

  Raises:
    AffectJaxError: dataset missing, split missing, or records not sorted by
      (video, frame).
  """
  builder = get_builder(dataset_cfg)
  # 'fold_1+fold_2+fold_3' reads several splits as one (cross validation).
  missing = [s for s in split.split('+') if s not in builder.info.splits]
  if missing:
    raise AffectJaxError(
        f'Dataset {builder.info.full_name} has no split {missing[0]!r} (it '
        f'has {sorted(builder.info.splits)}); fix the split name in the '
        'config (several splits: "a+b").')
  parts = [indexed_split(builder, s) for s in split.split('+')]
  _report_skipped(builder, split.split('+'))
  if len(parts) == 1:
    return parts[0]
  joined = _join(parts, builder.as_data_source(split),
                 f'{builder.info.full_name}/{split}')
  joined.metadata = parts[0].metadata
  return joined


def _report_skipped(builder, splits: list[str]) -> None:
  """Says which videos `prepare --skip_broken` left out of these splits."""
  from tfds_builders import core  # pylint: disable=g-import-not-at-top
  missing = [e for e in core.skipped_videos(builder)
             if e.get('split') in splits]
  if missing:
    print(f'Note: {builder.info.full_name} was prepared with skip_broken; '
          f'{len(missing)} video(s) of {"+".join(splits)} are missing or cut '
          'short:\n  ' + '\n  '.join(core.format_broken(e) for e in missing),
          flush=True)


def check_landmarks(split: SplitData, sample: int = 64) -> None:
  """Refuses a split whose records hold no landmarks (all zeros).

  For models that fuse the 68 landmarks (AffWildNet): reads up to `sample`
  frames with a face, spread over the split; zeros everywhere mean the
  dataset was prepared without landmarks, and training on them would
  silently learn from zeros.

  Raises:
    AffectJaxError: naming the dataset and the `prepare` option to rebuild.
  """
  rows = split.frame_rows()
  if not rows.size:
    return
  pick = rows[np.linspace(0, rows.size - 1, min(sample, rows.size)).astype(
      np.int64)]
  records = split.source.__getitems__([int(i) for i in pick])
  for r in records:
    lm = np.asarray(r.get(F.RECORD_LANDMARKS, 0.0), np.float32)
    if bool(r.get(F.RECORD_HAS_FACE, True)) and np.any(
        np.nan_to_num(lm) != 0):
      return
  dataset = split.metadata.get('dataset', split.name).split('/')[0]
  how = split.metadata.get('landmarks')
  raise AffectJaxError(
      f'The model fuses facial landmarks (model.use_landmarks; AffWildNet '
      f'does by default) but {split.name} holds none: the {len(records)} '
      f'sampled frames with a face all have zero landmarks'
      + (f' (it was prepared with --landmarks={how})' if how else '') +
      f'. Rebuild it with landmarks: python -m affect_jax.prepare '
      f'--dataset={dataset} --landmarks=dlib --manual_dir=... (the dlib '
      '68-point model ships with face_recognition_models), or train without '
      'them: --config.model.use_landmarks=False.')


# Bump when SplitData or index_split changes: older cached indexes are redone.
_INDEX_VERSION = 1


def indexed_split(builder, split: str) -> SplitData:
  """`index_split` of one split of a prepared builder, cached on disk.

  Indexing reads every record (JPEG bytes included): minutes for a
  million-frame split. The result is kept next to the records
  (`index-<split>.npz` in the builder's data_dir; written by
  `affect_jax.prepare` right after building, else on first use when the
  folder is writable) and reused while the split's record count matches.
  """
  source = builder.as_data_source(split)
  name = f'{builder.info.full_name}/{split}'
  emotion_names = tuple(
      (builder.info.metadata or {}).get('emotion_names', F.REALEYES_EMOTIONS))
  path = os.path.join(str(builder.data_dir), f'index-{split}.npz')
  data = _read_index(path, source, name) if os.path.exists(path) else None
  if data is None:
    logging.info('Indexing %s (%d records).', name, len(source))
    data = index_split(source, name, emotion_names)
    _write_index(path, data)
  data.metadata = dataset_metadata(builder)
  return data


def dataset_metadata(builder) -> dict[str, Any]:
  """JSON-able builder metadata plus the dataset's full name."""
  meta = {k: (list(v) if isinstance(v, tuple) else v)
          for k, v in dict(builder.info.metadata or {}).items()}
  meta['dataset'] = builder.info.full_name
  return meta


def _read_index(path: str, source, name: str) -> SplitData | None:
  """The cached index at `path`, or None when stale or unreadable."""
  try:
    with np.load(path, allow_pickle=False) as z:
      if (int(z['version']) != _INDEX_VERSION or
          int(z['num_records']) != len(source)):
        return None
      return SplitData(
          source=source, name=name, video_ids=z['video_ids'].tolist(),
          subject_ids=z['subject_ids'].tolist(), starts=z['starts'],
          lengths=z['lengths'], valence=z['valence'], arousal=z['arousal'],
          emotions=z['emotions'],
          emotion_names=tuple(z['emotion_names'].tolist()))
  except (OSError, KeyError, ValueError) as e:
    logging.warning('Ignoring the unreadable index cache %s: %s', path, e)
    return None


def _write_index(path: str, data: SplitData) -> None:
  """Writes the index atomically; a read-only dataset folder is fine."""
  try:
    with writers.atomic_open(path, 'wb') as f:
      np.savez(f, version=_INDEX_VERSION, num_records=len(data.source),
               video_ids=np.array(data.video_ids, dtype=str),
               subject_ids=np.array(data.subject_ids, dtype=str),
               starts=data.starts, lengths=data.lengths, valence=data.valence,
               arousal=data.arousal, emotions=data.emotions,
               emotion_names=np.array(data.emotion_names, dtype=str))
  except OSError as e:
    logging.info('Not caching the index of %s (%s): %s', data.name, path, e)


def _join(parts: list[SplitData], source, name: str) -> SplitData:
  """Indexes of consecutive splits as the index of their concatenation."""
  video_ids = [v for p in parts for v in p.video_ids]
  if len(set(video_ids)) != len(video_ids):
    raise AffectJaxError(f'{name}: a video is in two of the joined splits; '
                         'join splits that share no video.')
  offsets = np.cumsum([0] + [len(p.source) for p in parts[:-1]])
  return SplitData(
      source=source, name=name, video_ids=video_ids,
      subject_ids=[s for p in parts for s in p.subject_ids],
      starts=np.concatenate([p.starts + o for p, o in zip(parts, offsets)]),
      lengths=np.concatenate([p.lengths for p in parts]),
      valence=np.concatenate([p.valence for p in parts]),
      arousal=np.concatenate([p.arousal for p in parts]),
      emotions=np.concatenate([p.emotions for p in parts]),
      emotion_names=parts[0].emotion_names)


def index_split(source: Sequence[dict[str, Any]], name: str,
                emotion_names: tuple[str, ...] = F.REALEYES_EMOTIONS,
                chunk: int = 4096) -> SplitData:
  """Finds the videos of a per-frame record source sorted by (video, frame)."""
  n = len(source)
  if n == 0:
    raise AffectJaxError(f'{name} has no records; rebuild the dataset.')
  vids, frame_idx = [], np.empty(n, np.int64)
  valence = np.full(n, np.nan, np.float32)
  arousal = np.full(n, np.nan, np.float32)
  emotions = None
  subjects: dict[str, str] = {}
  for lo in range(0, n, chunk):
    records = source.__getitems__(list(range(lo, min(n, lo + chunk))))
    for j, r in enumerate(records):
      i = lo + j
      vid = _str(r[F.RECORD_VIDEO_ID])
      vids.append(vid)
      subjects.setdefault(vid, _str(r.get(F.RECORD_SUBJECT_ID, vid)))
      frame_idx[i] = int(r[F.RECORD_FRAME_INDEX])
      if F.RECORD_VALENCE in r:
        valence[i] = r[F.RECORD_VALENCE]
        arousal[i] = r[F.RECORD_AROUSAL]
      if F.RECORD_EMOTIONS in r:
        if emotions is None:
          emotions = np.zeros((n, len(r[F.RECORD_EMOTIONS])), np.float32)
        emotions[i] = r[F.RECORD_EMOTIONS]
  if emotions is None:
    emotions = np.zeros((n, 0), np.float32)
    emotion_names = ()

  vids_arr = np.asarray(vids)
  new_video = np.ones(n, bool)
  new_video[1:] = vids_arr[1:] != vids_arr[:-1]
  starts = np.flatnonzero(new_video)
  lengths = np.diff(np.append(starts, n))
  video_ids = [vids[s] for s in starts]
  if len(set(video_ids)) != len(video_ids):
    raise AffectJaxError(
        f'Records of {name} are not grouped by video (a video appears in '
        'several runs); the builder must set disable_shuffling=True with keys '
        'ordered by (video, frame). Rebuild the dataset.')
  for s, length, vid in zip(starts, lengths, video_ids):
    if np.any(np.diff(frame_idx[s:s + length]) <= 0):
      raise AffectJaxError(
          f'Frames of video {vid!r} in {name} are not in increasing frame '
          'order; rebuild the dataset with a builder that keys records by '
          '(video, frame).')
  return SplitData(
      source=source, name=name, video_ids=video_ids,
      subject_ids=[subjects[v] for v in video_ids], starts=starts,
      lengths=lengths, valence=valence, arousal=arousal, emotions=emotions,
      emotion_names=tuple(emotion_names))


def make_windows(lengths: np.ndarray, window: int, stride: int | None = None,
                 cover_tail: bool = True) -> np.ndarray:
  """Cuts videos into windows of `window` consecutive frames.

  Args:
    lengths: [V] frames per video.
    window: T, the window length.
    stride: step between window starts; None means `window` (non-overlapping,
      used for evaluation so that every frame is predicted exactly once).
    cover_tail: with overlapping windows, add a last window ending at the
      video's last frame so the tail is seen in training too.

  Returns:
    int64 [N, 3] rows of (video, start frame, valid length). Windows of
    videos shorter than `window`, and the last non-overlapping window of a
    video, have valid length < window: the pipeline pads them and masks the
    padding.
  """
  stride = stride or window
  rows = []
  for v, length in enumerate(np.asarray(lengths)):
    length = int(length)
    starts = list(range(0, max(length - window, 0) + 1, stride))
    if stride == window:
      # Non-overlapping: continue until every frame is covered.
      starts = list(range(0, length, window))
    elif cover_tail and length > window and starts[-1] != length - window:
      starts.append(length - window)
    for s in starts:
      rows.append((v, s, min(window, length - s)))
  return np.asarray(rows, np.int64).reshape(-1, 3)


def rare_window_repeats(split: SplitData, windows: np.ndarray,
                        repeats: int, neutral: str = 'neutral') -> np.ndarray:
  """Resamples windows that hold rare emotions (tzirakis2019, Sec. 4.2).

  A window whose frames carry a non-neutral emotion and never the neutral
  label is repeated `repeats` times; windows mixing both are repeated
  `max(1, repeats // 2)` times. Returns the new window rows.
  """
  if repeats <= 1 or split.emotions.shape[1] == 0:
    return windows
  names = list(split.emotion_names)
  neutral_col = names.index(neutral) if neutral in names else None
  rare_cols = [i for i in range(len(names)) if i != neutral_col]
  out = []
  for row in windows:
    v, s, n = (int(x) for x in row)
    lo = int(split.starts[v]) + s
    emo = split.emotions[lo:lo + n] > 0.5
    has_rare = emo[:, rare_cols].any()
    has_neutral = neutral_col is not None and emo[:, neutral_col].any()
    k = 1
    if has_rare:
      k = max(1, repeats // 2) if has_neutral else repeats
    out.extend([row] * k)
  return np.asarray(out, np.int64).reshape(-1, 3)


def _decode_jpeg(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert('RGB'))


def decode_resized(data: bytes, size: int) -> np.ndarray:
  """A record's JPEG as uint8 [size, size, 3], resized as training does.

  Evaluation (and `affect_jax.predict`, which makes the records' JPEGs
  itself) feeds the network exactly this.
  """
  img = _decode_jpeg(data)
  if img.shape[:2] != (size, size):
    img = np.asarray(Image.fromarray(img).resize((size, size),
                                                 Image.BILINEAR))
  return img


@dataclasses.dataclass
class LoadWindow:
  """Reads one window's records, decodes and augments its frames.

  Augmentation draws one set of parameters per window so that the frames of a
  window stay temporally consistent: resize to `resize_size`, random crop of
  `image_size` (tzirakis2019: 170 -> 150), random brightness and saturation.
  Without augmentation frames are resized to `image_size` directly.
  """
  split: SplitData
  window: int
  image_size: int
  resize_size: int
  augment: bool
  brightness_delta: float = 0.0  # in [0, 1] of the 255 range.
  saturation_range: tuple[float, float] = (1.0, 1.0)
  num_emotions: int | None = None
  # A still image (a video of one frame) fills the whole window with
  # repeats (affect4k thesis Sec. 6.7.1); only the last step is reported
  # and scored (the other steps have frame index -1 and no labels).
  repeat_stills: bool = False

  def __call__(self, row: np.ndarray, rng: np.random.Generator | None = None
               ) -> dict[str, np.ndarray]:
    v, s, n = (int(x) for x in row)
    lo = int(self.split.starts[v]) + s
    records = self.split.source.__getitems__(list(range(lo, lo + n)))
    t, size = self.window, self.image_size
    c = self.num_emotions
    if c is None:
      c = self.split.emotions.shape[1]
    out = {
        F.FRAMES: np.zeros((t, size, size, 3), np.uint8),
        F.VALENCE: np.full((t,), np.nan, np.float32),
        F.AROUSAL: np.full((t,), np.nan, np.float32),
        F.EMOTIONS: np.zeros((t, c), np.float32),
        F.LANDMARKS: np.zeros((t, F.NUM_LANDMARKS, 2), np.float32),
        F.MASK: np.zeros((t,), np.float32),
        FRAME_INDEX: np.full((t,), -1, np.int32),
        F.VIDEO_INDEX: np.int32(v),
        F.T0: np.int32(s),
        F.TIME: np.full((t,), np.nan, np.float32),
        F.HAS_FACE: np.zeros((t,), np.float32),
    }
    if self.augment:
      crop = self.resize_size - size
      oy, ox = (rng.integers(0, crop + 1, size=2) if crop > 0 else (0, 0))
      scale = self.resize_size
      bright = rng.uniform(-self.brightness_delta, self.brightness_delta) * 255
      sat = rng.uniform(*self.saturation_range)
    else:
      oy = ox = 0
      scale = size
      bright, sat = 0.0, 1.0

    still = (self.repeat_stills and n == 1 and t > 1 and
             int(self.split.lengths[v]) == 1)
    for i, r in enumerate(records):
      if still:  # Reported at the last step, after T - 1 repeats.
        i = t - 1
      try:
        img = decode_resized(r[F.RECORD_IMAGE], scale)
      except Exception as e:  # pylint: disable=broad-except
        raise AffectJaxError(
            f'Frame {i + s} of video {self.split.video_ids[v]!r} in '
            f'{self.split.name} is not a decodable JPEG ({e}); rebuild the '
            'dataset.') from e
      img = img[oy:oy + size, ox:ox + size]
      if self.augment and (bright != 0.0 or sat != 1.0):
        img = _color_jitter(img, bright, sat)
      out[F.FRAMES][i] = img
      out[F.MASK][i] = 1.0
      out[FRAME_INDEX][i] = int(r[F.RECORD_FRAME_INDEX])
      out[F.TIME][i] = r.get(F.RECORD_TIME, np.nan)
      out[F.HAS_FACE][i] = float(r.get(F.RECORD_HAS_FACE, True))
      if F.RECORD_VALENCE in r:
        out[F.VALENCE][i] = r[F.RECORD_VALENCE]
        out[F.AROUSAL][i] = r[F.RECORD_AROUSAL]
      if c and F.RECORD_EMOTIONS in r:
        out[F.EMOTIONS][i] = r[F.RECORD_EMOTIONS]
      if F.RECORD_LANDMARKS in r:
        # Landmarks are normalised to the stored frame; follow the crop.
        lm = np.asarray(r[F.RECORD_LANDMARKS], np.float32)
        out[F.LANDMARKS][i] = (lm * scale - np.array([ox, oy])) / size
    if still and records:
      for key in (F.FRAMES, F.LANDMARKS, F.HAS_FACE):
        out[key][:] = out[key][t - 1]
      out[F.MASK][:] = 1.0
    return out


def _color_jitter(img: np.ndarray, bright: float, sat: float) -> np.ndarray:
  x = img.astype(np.float32)
  gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
  x = gray[..., None] + sat * (x - gray[..., None]) + bright
  return np.clip(x, 0, 255).astype(np.uint8)


def _loader(split: SplitData, input_cfg, augment: bool,
            num_emotions: int | None,
            repeat_stills: bool = False) -> LoadWindow:
  return LoadWindow(
      split=split, window=input_cfg.window, image_size=input_cfg.image_size,
      resize_size=input_cfg.resize_size, augment=augment,
      brightness_delta=input_cfg.brightness_delta,
      saturation_range=tuple(input_cfg.saturation_range),
      num_emotions=num_emotions, repeat_stills=repeat_stills)


def local_batch_size(batch_size: int, process_count: int | None = None,
                     device_count: int | None = None) -> int:
  """Windows each process loads of a global batch: batch_size / processes.

  `device_count`: devices along the mesh's data axis (default: all
  devices).

  Raises:
    AffectJaxError: `batch_size` does not divide by the process count or
      by the device count (data parallelism gives every device the same
      number of windows).
  """
  processes = jax.process_count() if process_count is None else process_count
  devices = jax.device_count() if device_count is None else device_count
  if batch_size % processes:
    raise AffectJaxError(
        f'batch_size={batch_size} must be divisible by the number of '
        f'processes ({processes}): each process loads batch_size / '
        f'{processes} windows of every batch; fix --config.batch_size.')
  if batch_size % devices:
    raise AffectJaxError(
        f'batch_size={batch_size} must be divisible by the number of devices '
        f'({devices}) along the data axis for data parallelism; fix '
        '--config.batch_size (or config.mesh).')
  return batch_size // processes


def process_batches(ds: grain.MapDataset, batch_size: int,
                    process_index: int | None = None,
                    process_count: int | None = None) -> grain.MapDataset:
  """This process's rows of every global batch of `ds`'s elements.

  Global batch s is elements [s * B, (s + 1) * B) of `ds`; process p of P
  gets its contiguous block [s * B + p * B / P, s * B + (p + 1) * B / P),
  which is where `jax.make_array_from_process_local_data` puts p's rows on
  the process-major `data` mesh (`inference.make_mesh`). So the global
  batch is the one-process batch row for row, and each process loads
  (decodes, augments) only its own windows. Elements are indexed in `ds`
  before the split, so random maps draw the same per window whatever P.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  # The split over devices is checked where the mesh is known (the train
  # stage before compiling, `inference.to_device` at every batch): a
  # `model` mesh axis leaves fewer devices on the data axis.
  local = local_batch_size(batch_size, count, device_count=1)
  return ds.batch(local, drop_remainder=True)[index::count]


def check_sampler(sampler: str, sampler_targets='') -> None:
  """Raises for an unknown sampler or malformed sampler_targets."""
  if sampler not in samplers.SAMPLERS:
    raise AffectJaxError(f'Unknown sampler {sampler!r} (config '
                         f'<stage>.sampler); use one of {samplers.SAMPLERS}.')
  if sampler_targets:
    samplers.parse_targets(sampler_targets)


def train_windows(split: SplitData, input_cfg, rare_repeats: int = 1,
                  sampler: str = 'shuffle', sampler_targets='',
                  seed: int = 0) -> np.ndarray:
  """The training windows of a split (one epoch), [N, 3] rows.

  `rare_repeats` (tzirakis2019) and `sampler='va_quadrants'` (kollias2019)
  change which windows an epoch holds; see `affect_jax.samplers`.
  """
  check_sampler(sampler, sampler_targets)
  windows = make_windows(split.lengths, input_cfg.window,
                         input_cfg.train_stride)
  windows = rare_window_repeats(split, windows, rare_repeats)
  if sampler == 'va_quadrants':
    quadrants = samplers.window_quadrants(split.valence, split.arousal,
                                          split.starts, windows)
    windows = samplers.oversample_quadrants(
        windows, quadrants, samplers.parse_targets(sampler_targets), seed)
  return windows


class TrainBatches(NamedTuple):
  """A train stage's data: the batches and the epoch they were cut from."""
  dataset: grain.MapDataset  # Element s: this process's rows of step s.
  steps_per_epoch: int
  windows: np.ndarray  # [N, 3] one epoch's windows, in sampler order.


def train_batches(split: SplitData, input_cfg, batch_size: int, stage_cfg,
                  num_emotions: int | None = None) -> TrainBatches:
  """The one call that assembles a train stage's data from its config.

  `stage_cfg` is the resolved train section: its `seed`, `augment`,
  `rare_window_repeats`, `sampler` and `sampler_targets` all reach the
  windows the batches are cut from, and the steps per epoch are counted on
  those same windows, so the two cannot disagree.
  """
  windows = train_windows(split, input_cfg, stage_cfg.rare_window_repeats,
                          stage_cfg.sampler, stage_cfg.sampler_targets,
                          stage_cfg.seed)
  ds = _train_dataset(windows, split, input_cfg, batch_size, stage_cfg.seed,
                      stage_cfg.augment, num_emotions, stage_cfg.sampler)
  return TrainBatches(ds, max(1, len(windows) // batch_size), windows)


def train_dataset(split: SplitData, input_cfg, batch_size: int, seed: int,
                  augment: bool = True, rare_repeats: int = 1,
                  num_emotions: int | None = None, sampler: str = 'shuffle',
                  sampler_targets='') -> grain.MapDataset:
  """An infinite, deterministic `MapDataset` of this process's train batches.

  Element s is the batch of step s, so `ds[start:]` resumes exactly.
  Under several processes each loads only its rows of every global batch
  (`process_batches`). The train stage goes through `train_batches`.
  """
  windows = train_windows(split, input_cfg, rare_repeats, sampler,
                          sampler_targets, seed)
  return _train_dataset(windows, split, input_cfg, batch_size, seed, augment,
                        num_emotions, sampler)


def _train_dataset(windows: np.ndarray, split: SplitData, input_cfg,
                   batch_size: int, seed: int, augment: bool,
                   num_emotions: int | None, sampler: str) -> grain.MapDataset:
  if sampler == 'distinct_videos':
    # A new arrangement each epoch; batch b of the epoch has B videos.
    per_epoch = (len(windows) // batch_size) * batch_size
    if not per_epoch:
      raise AffectJaxError(
          f'{split.name} has {len(windows)} training windows, fewer than '
          f'batch_size={batch_size}; lower --config.batch_size.')
    orders: dict[int, np.ndarray] = {}

    def pick(index, position):
      epoch = int(index) // per_epoch
      if epoch not in orders:
        orders.clear()
        orders[epoch] = samplers.distinct_video_order(
            windows[:, 0], batch_size, seed=seed * 100_003 + epoch)
      return windows[orders[epoch][int(position)]]

    ds = grain.MapDataset.range(per_epoch).repeat().map_with_index(pick)
  else:
    ds = grain.MapDataset.source(windows).shuffle(seed=seed).repeat()
  loader = _loader(split, input_cfg, augment, num_emotions)
  if augment:
    ds = ds.random_map(loader, seed=seed + 1)
  else:
    ds = ds.map(loader)
  return process_batches(ds, batch_size)


def eval_dataset(split: SplitData, input_cfg, batch_size: int,
                 num_emotions: int | None = None) -> grain.MapDataset:
  """Non-overlapping windows covering every frame once, padded last batch.

  Every process gets the same number of batches (the last global batch is
  padded with fully masked windows), as the sharded eval step needs; each
  loads its rows of every global batch (`process_batches`).
  """
  windows = make_windows(split.lengths, input_cfg.window)
  num_steps = -(-len(windows) // batch_size)
  # Pad with "empty" windows (valid length 0) to fill the last global batch.
  pad = num_steps * batch_size - len(windows)
  windows = np.concatenate([windows, np.zeros((pad, 3), np.int64)])
  windows[len(windows) - pad:, 2] = 0
  ds = grain.MapDataset.source(windows).map(
      _loader(split, input_cfg, False, num_emotions,
              repeat_stills=input_cfg.get('repeat_stills', True)))
  return process_batches(ds, batch_size)


def iterate(ds: grain.MapDataset, input_cfg, start: int = 0
            ) -> Iterator[dict[str, np.ndarray]]:
  """Iterates `ds[start:]` with threaded prefetch (and worker processes)."""
  ds = ds[start:]
  it_ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=input_cfg.num_threads,
      prefetch_buffer_size=input_cfg.prefetch_batches))
  if input_cfg.get('num_workers', 0) > 0:
    it_ds = it_ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=input_cfg.num_workers))
  return iter(it_ds)


def normalize(frames: jnp.ndarray, mode: str) -> jnp.ndarray:
  """uint8 frames -> float32 network input, on the device.

  Modes: 'imagenet' ((x/255 - mean) / std, torchvision's statistics, for
  ImageNet-initialised trunks), 'symmetric' ((x - 128) / 128, in [-1, 1],
  kollias2019 / affect4k), 'unit' (x / 255), and the affect4k thesis' other
  two (Sec. 6.1): 'mean_subtraction' (x - the mean pixel of the VGG-16
  model the thesis started from, ImageNet's RGB mean) and 'whitening'
  (per image: (x - mean) / max(std, 1/sqrt(pixels x 3)), as
  tf.image.per_image_standardization).
  """
  x = frames.astype(jnp.float32)
  if mode == 'imagenet':
    return (x - IMAGENET_MEAN) / IMAGENET_STD
  if mode == 'symmetric':
    return (x - 128.0) / 128.0
  if mode == 'unit':
    return x / 255.0
  if mode == 'mean_subtraction':
    return x - IMAGENET_MEAN
  if mode == 'whitening':
    axes = (-3, -2, -1)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    std = jnp.std(x, axis=axes, keepdims=True)
    n = x.shape[-3] * x.shape[-2] * x.shape[-1]
    return (x - mean) / jnp.maximum(std, 1.0 / np.sqrt(n))
  raise AffectJaxError(
      f'Unknown input.normalization {mode!r}; use one of '
      f'{", ".join(NORMALIZATIONS)}.')


NORMALIZATIONS = ('imagenet', 'symmetric', 'unit', 'mean_subtraction',
                  'whitening')
