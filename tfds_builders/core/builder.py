"""Per-frame records shared by every builder, and the base video builder.

A dataset builder subclasses `VideoFrameBuilder` and writes only its parser:

  class MyData(VideoFrameBuilder):
    EMOTION_NAMES = ('neutral', 'happy')
    def _videos(self, manual_dir) -> dict[str, list[VideoSpec]]:
      ...  # {'train': [VideoSpec(video_id, subject_id, path, labels), ..]}

A video may also be a folder of frames (`VideoSpec.images`) or a single
image. The base class decodes each video (PyAV), finds and crops the face, encodes
the crop as JPEG and yields one record per frame keyed by
`record_key(video_ordinal, frame_index)`, with shuffling disabled so that
records are stored sorted by (video, frame) as the input pipeline expects.

With a Beam runner in TFDS's `DownloadConfig` (`beam_runner` or
`beam_options`; `affect_jax.prepare --beam_runner=...`), the same per-video
code runs as an Apache Beam pipeline instead: one element per video (or per
group of short image sequences), spread over the runner's workers, the
records written by TFDS's Beam writer in the same key order.
"""

import abc
import dataclasses
import functools
import io
import json
import math
import multiprocessing
import os
import pickle
import re
import tempfile
from typing import Callable, Iterator, Sequence

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders.core import face
from tfds_builders.core import video as video_lib


def frame_features(num_emotions: int) -> tfds.features.FeaturesDict:
  """The per-frame record of every builder (affect_jax.features.RECORD_*)."""

  def scalar(dtype):
    return tfds.features.Tensor(shape=(), dtype=dtype)

  text = scalar(np.object_)  # str or bytes, read back as bytes.
  return tfds.features.FeaturesDict({
      F.RECORD_IMAGE: scalar(np.object_),  # JPEG bytes.
      F.RECORD_VALENCE: scalar(np.float32),
      F.RECORD_AROUSAL: scalar(np.float32),
      F.RECORD_EMOTIONS: tfds.features.Tensor(shape=(num_emotions,),
                                              dtype=np.float32),
      F.RECORD_LANDMARKS: tfds.features.Tensor(shape=(F.NUM_LANDMARKS, 2),
                                               dtype=np.float32),
      F.RECORD_BOX: tfds.features.Tensor(shape=(4,), dtype=np.float32),
      F.RECORD_HAS_FACE: scalar(np.bool_),
      F.RECORD_TIME: scalar(np.float32),
      F.RECORD_FRAME_INDEX: scalar(np.int32),
      F.RECORD_VIDEO_ID: text,
      F.RECORD_SUBJECT_ID: text,
  })


def record_key(video_ordinal: int, frame_index: int) -> int:
  """(video_ordinal << 32) | frame_index: TFDS stores records in key order."""
  if not (0 <= video_ordinal < 2**31 and 0 <= frame_index < 2**32):
    raise AffectJaxError(
        f'Video {video_ordinal} / frame {frame_index} do not fit the '
        '(video << 32 | frame) record keys; split the dataset.')
  return (video_ordinal << 32) | frame_index


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
  """JPEG bytes of a uint8 [H, W, 3] image (deterministic)."""
  buf = io.BytesIO()
  # 4:4:4 chroma: at 32-64 pixels 4:2:0 would smear the lips into the skin.
  Image.fromarray(image).save(buf, format='JPEG', quality=quality,
                              subsampling=0)
  return buf.getvalue()


def default_to_array_record(builder: tfds.core.DatasetBuilder,
                            file_format) -> None:
  """Makes array_record (random access, no TensorFlow) the default format.

  Call from `__init__` after `super().__init__`. A dataset already prepared
  on disk keeps the format it was written in.
  """
  if file_format is None and not (builder.data_path /
                                  'dataset_info.json').exists():
    builder.info.set_file_format(tfds.core.FileFormat.ARRAY_RECORD,
                                 override=True)


@dataclasses.dataclass(frozen=True, eq=False)
class FrameLabels:
  """Labels (and optional shipped geometry) of one frame.

  Attributes:
    valence, arousal: in [-1, 1]; NaN where unlabelled.
    emotions: float32 [C] multi-hot, or None for all zeros.
    box: (ymin, xmin, ymax, xmax) frame pixels the dataset ships, or None.
    landmarks: float32 [68, 2] (x, y) frame pixels the dataset ships, or None.
    has_face: False where the dataset says the frame shows no face (e.g.
      AffectNet's "No-Face" expression); overrides the detector's flag.
  """
  valence: float = math.nan
  arousal: float = math.nan
  emotions: np.ndarray | None = None
  box: np.ndarray | None = None
  landmarks: np.ndarray | None = None
  has_face: bool | None = None


# (frame index, frame time in seconds) -> labels, or None to drop the frame.
LabelLookup = Callable[[int, float], FrameLabels | None]


@dataclasses.dataclass(frozen=True, eq=False)
class VideoSpec:
  """One video of a split, as a parser found it.

  Attributes:
    video_id: unique within the dataset; records are sorted by it.
    subject_id: the person (splits never share one).
    path: the video file; for an image sequence its folder (for messages).
    labels: label lookup per decoded frame.
    done: optional check called with the number of decoded frames after
      the last one, e.g. `check_label_count` (raise to reject the video:
      the build stops, or with skip_broken the video is left out).
    detector: overrides the config's face detector for this video (e.g.
      'none' where the dataset ships a box for every frame).
    pick: which face when a frame shows several (face.PICKS): 'largest', or
      'left' / 'right' (Aff-Wild2's `_left` / `_right` annotations).
    images: instead of decoding `path`, frame i is the image file
      `images[i]`; None marks a frame without an image (stored black with
      has_face=False, e.g. where Aff-Wild2's aligner found no face).
    fps: frame rate of `images` (frame i is at time i / fps).
    aligned: the frames are face crops already (Aff-Wild2 `cropped_aligned`,
      the 4K frame lists): no detection, the whole image is the face box.
  """
  video_id: str
  subject_id: str
  path: str
  labels: LabelLookup
  done: Callable[[int], None] | None = None
  detector: str | None = None
  pick: str = 'largest'
  images: Sequence[str | None] | None = None
  fps: float = 25.0
  aligned: bool = False


@dataclasses.dataclass(eq=False)
class VideoFrameConfig(tfds.core.BuilderConfig):
  """How frames become face crops; shared by every video builder.

  Attributes:
    detector: 'dlib' (HOG, default: best measured recall, see face.py),
      'haar' (OpenCV's cascade) or 'none' (the whole frame, or the box the
      dataset ships).
    landmarks: where the dataset ships no landmarks, 'dlib' (default)
      predicts the 68 points inside each detected (or shipped) face box;
      'none' stores zeros.
    detect_every: run the detector on every N-th frame only and fill the
      frames in between by `track` (N times faster detection).
    track: how frames between two detections get their box
      (face.FaceTracker, face.TRACKS): 'hold' (default) reuses the last
      detection's result; 'correlation' follows the face with dlib's
      correlation tracker started on the last detected box, has_face=True
      while its peak-to-side-lobe ratio is at least face.MIN_PSR. No effect
      with detect_every=1.
    detect_max_side: 0 (default) runs the detector on the full frame; N
      (>= face.MIN_DETECT_MAX_SIDE) on the frame scaled down so its long
      side is at most N pixels, boxes scaled back (face.make_detector):
      faster, and faces under ~80 pixels of that smaller frame are missed.
    image_size: side of the stored square crops, pixels.
    margin: context around the face box on each side, fraction of its side.
    max_gap: frames after a detection for which a missed face reuses the
      last box for the crop (has_face stays False).
    jpeg_quality: of the stored crops.
    skip_broken: False (default): a video that cannot be opened, breaks
      while decoding, ends early (`video.check_complete`) or does not fit
      its labels (`check_label_count`) stops the build with an error naming
      it (one that cannot be opened is found before any video is decoded).
      True: such a video is left out with a warning (its records are spooled
      and only written once it passed), and an image sequence with an
      unreadable image keeps the images before it ("cut short"). Each is
      listed at the end of `affect_jax.prepare` and in the dataset's
      metadata (`skipped_videos`).
    max_mismatch_frames: labels matched to frames by index or time may
      cover up to this many frames more or fewer than the decoded video
      (a warning); a larger difference is an error (`check_label_count`).
    num_workers: 0 or 1 decodes in the building process, streaming frame by
      frame. N > 1 decodes N videos at a time in worker processes, which
      spool their records to temporary files in chunks (memory stays a
      chunk per worker whatever the video's length); the records are the
      same and written in the same order as with 0. Not used with a Beam
      runner (the runner's workers decode the videos).
  """
  detector: str = 'dlib'
  landmarks: str = 'dlib'
  detect_every: int = 1
  track: str = 'hold'
  detect_max_side: int = 0
  # tzirakis2019 resizes face crops to 170 and random-crops 150 for training.
  image_size: int = 170
  margin: float = 0.2
  max_gap: int = 5
  jpeg_quality: int = 90
  skip_broken: bool = False
  num_workers: int = 0
  # ~1 s at 30 fps: counts that differ by a few frames are normal (decoders
  # and annotation tools disagree on the last frames), a second is not.
  max_mismatch_frames: int = 30


class VideoFrameBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the builders that read videos from `manual_dir`.

  Subclasses set VERSION, BUILDER_CONFIGS (of a `VideoFrameConfig` subclass),
  EMOTION_NAMES and MANUAL_DOWNLOAD_INSTRUCTIONS, and implement `_videos`.
  """

  EMOTION_NAMES: tuple[str, ...] = ()
  FPS: float | None = None  # Nominal, for the metadata only.

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    c = self.builder_config
    if (c.image_size < 16 or not 0 <= c.margin <= 2 or c.max_gap < 0 or
        c.num_workers < 0 or c.detect_every < 1 or c.max_mismatch_frames < 0):
      raise AffectJaxError(
          f'{self.name} config {c.name!r}: image_size={c.image_size} (>= 16), '
          f'margin={c.margin} (0..2), max_gap={c.max_gap} (>= 0), '
          f'num_workers={c.num_workers} (>= 0), detect_every='
          f'{c.detect_every} (>= 1) or max_mismatch_frames='
          f'{c.max_mismatch_frames} (>= 0) out of range.')
    if c.detector not in face.DETECTORS:
      raise AffectJaxError(f'{self.name} config {c.name!r}: unknown detector '
                           f'{c.detector!r}; use one of {face.DETECTORS}.')
    if c.landmarks not in face.LANDMARKERS:
      raise AffectJaxError(f'{self.name} config {c.name!r}: unknown landmarks '
                           f'{c.landmarks!r}; use one of {face.LANDMARKERS}.')
    if c.track not in face.TRACKS:
      raise AffectJaxError(f'{self.name} config {c.name!r}: unknown track '
                           f'{c.track!r}; use one of {face.TRACKS}.')
    face.check_detect_max_side(c.detect_max_side,
                               f'{self.name} config {c.name!r}')
    default_to_array_record(self, file_format)
    # With skip_broken: one entry per video left out or cut short
    # (`broken_entry`), stored in the metadata at the end of the build.
    self.broken_videos: list[dict[str, str]] = []
    # Set per build from the DownloadConfig: generate through Apache Beam.
    self._beam = False
    self._beam_splits: list[str] = []

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or '').split('\n\n')[0],
        features=frame_features(len(self.EMOTION_NAMES)),
        # Keys are (video << 32 | frame): with shuffling disabled TFDS writes
        # records in key order, i.e. sorted by video then frame.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(
            emotion_names=list(self.EMOTION_NAMES),
            image_size=int(c.image_size),
            detector=c.detector,
            landmarks=c.landmarks,
            # How the faces were found (FaceTracker): say so, as the
            # config's name does when they are not the defaults.
            detect_every=int(c.detect_every),
            track=c.track,
            detect_max_side=int(c.detect_max_side),
            margin=float(c.margin),
            fps=self.FPS,
            # Filled at the end of the build (skipped_videos).
            broken_videos=[],
        ),
    )

  def _download_and_prepare(self, dl_manager, download_config=None):
    self.broken_videos = []
    # TFDS runs a split through Beam when its generator is a PTransform;
    # the runner in the DownloadConfig says that the user wants one.
    self._beam = uses_beam(download_config)
    self._beam_splits = []
    try:
      super()._download_and_prepare(dl_manager, download_config)
    except Exception as e:  # pylint: disable=broad-except
      # TFDS's Beam writer refuses an empty split (the runner may wrap the
      # error): say why, as `_read_spools` does without Beam.
      empty = re.search(r'generated examples is 0 for split (\S+?)\.', str(e))
      if not (self._beam and empty):
        raise
      raise self._empty_split_error(empty.group(1), _read_beam_broken(
          self._beam_path('broken', empty.group(1)), empty.group(1))) from e
    # The pipeline has run: what its workers left out, split by split (the
    # probes' entries came first, as without Beam).
    for split in self._beam_splits:
      self._beam_path('tasks', split).unlink()
      self.broken_videos.extend(_read_beam_broken(
          self._beam_path('broken', split), split))
    # TFDS writes the metadata after this returns.
    self.info.metadata['broken_videos'] = list(self.broken_videos)

  # TFDS's own lines speak of downloads ("Downloading and preparing dataset
  # Unknown size ...") though nothing is downloaded: say what happens.
  def _log_download_bytes(self) -> None:
    print(f'Preparing {self.name}/{self.builder_config.name} from your copy '
          f'(manual_dir) into {self.data_dir} ...', flush=True)

  def _log_download_done(self) -> None:
    pass  # affect_jax.prepare prints what was written.

  # Abstract: TFDS registers only concrete builders.
  @abc.abstractmethod
  def _videos(self, manual_dir: str) -> dict[str, list[VideoSpec]]:
    """Parses the dataset's layout: {split: [VideoSpec, ...]}."""

  def _split_generators(self, dl_manager):
    try:
      manual_dir = str(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS asserts that the folder exists.
      raise AffectJaxError(
          f'{self.name} needs your copy of the dataset: pass --manual_dir '
          '(python -m affect_jax.prepare --dataset=... --manual_dir=DIR).'
      ) from e
    if not os.path.isdir(manual_dir):
      raise AffectJaxError(f'manual_dir {manual_dir} is not a folder; point '
                           f'it at your copy of {self.name}.')
    # Fail before decoding when a model is missing.
    face.make_detector(self.builder_config.detector,
                       self.builder_config.detect_max_side)
    face.make_landmarker(self.builder_config.landmarks)
    splits = self._videos(manual_dir)
    for split, videos in splits.items():
      ids = [v.video_id for v in videos]
      if len(set(ids)) != len(ids):
        raise AffectJaxError(f'{self.name}: split {split!r} lists a video id '
                             f'twice; make the ids in {manual_dir} unique.')
      splits[split] = [v for v in videos if self._openable(v, split)]
    return {split: self._generate_examples(videos, split)
            for split, videos in splits.items() if videos}

  def _openable(self, spec: VideoSpec, split: str) -> bool:
    """Probes a video before decoding anything (see `skip_broken`)."""
    try:
      if spec.images is not None:
        video_lib.probe_images(spec.images, spec.path)
      else:
        video_lib.probe(spec.path)
    except AffectJaxError as e:
      if not self.builder_config.skip_broken:
        if 'skip_broken' in str(e):
          raise
        raise AffectJaxError(f'{e} (Or build with --skip_broken to leave '
                             'broken videos out.)') from e
      self.broken_videos.append(
          dict(broken_entry(spec, 'left out', str(e)), split=split))
      return False
    return True

  def _generate_examples(self, videos: list[VideoSpec], split: str = ''):
    """(record_key, record) for each kept frame of each video.

    Returns:
      An iterator of them; with a Beam runner in the DownloadConfig, the
      `beam.PTransform` that makes them on the runner's workers (the same
      `video_records` per video, see `_beam_task_records`).
    """
    c = self.builder_config
    jobs = [(spec, ordinal,
             dataclasses.replace(c, detector=spec.detector) if spec.detector
             else c, len(self.EMOTION_NAMES))
            for ordinal, spec in enumerate(sorted(videos,
                                                  key=lambda v: v.video_id))]
    if self._beam:
      return self._beam_examples(jobs, split)
    return self._local_examples(jobs, split)

  def _local_examples(self, jobs: list, split: str
                      ) -> Iterator[tuple[int, dict]]:
    """The records of `jobs`, made here (and in worker processes)."""
    c = self.builder_config
    parallel = c.num_workers > 1 and len(jobs) > 1
    if not (parallel or c.skip_broken):
      # Streamed: an error stops the build, nothing needs taking back.
      for job in jobs:
        yield from video_records(*job)
      return
    with tempfile.TemporaryDirectory(prefix=f'{self.name}_') as spool:
      tasks = [(batch, spool) for batch in _batches(jobs)]
      if parallel:
        # 'spawn': PyAV and OpenCV start threads, which fork does not copy
        # safely. imap keeps the video order (records must stay sorted).
        ctx = multiprocessing.get_context('spawn')
        with ctx.Pool(min(c.num_workers, len(jobs))) as pool:
          yield from self._read_spools(pool.imap(_spool_video_records, tasks),
                                       split)
      else:
        yield from self._read_spools(map(_spool_video_records, tasks), split)

  def _beam_path(self, what: str, split: str) -> epath.Path:
    # In the build's folder (TFDS's incomplete.* one, on the storage that
    # the workers write the shards to); removed when the pipeline is done.
    suffix = 'pkl' if what == 'tasks' else 'json'
    return self.data_path / f'{_BEAM_PREFIX}{what}-{split}.{suffix}'

  def _beam_examples(self, jobs: list, split: str):
    """`beam.PTransform` of the records of `jobs` (see `_beam_task_records`).

    One element per worker task of `_batches` (a video, or a group of short
    image sequences). The tasks (video specs with their labels, ~60 bytes a
    frame) are pickled to one file per split that each worker reads once,
    rather than put in the pipeline itself, which runners limit in size
    (Dataflow: 20 MB a job request). The `broken_entry`s of the videos
    skip_broken leaves out are gathered into one file per split, read back
    after the run.
    """
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
    if self.builder_config.num_workers > 1:
      logging.info('%s: num_workers=%d is not used with Beam (the runner\'s '
                   'workers decode the videos).', self.name,
                   self.builder_config.num_workers)
    tasks = list(_batches(jobs))
    tasks_path = self._beam_path('tasks', split)
    # Plain pickle, as for the worker processes of num_workers.
    tasks_path.write_bytes(pickle.dumps(tasks,
                                        protocol=pickle.HIGHEST_PROTOCOL))
    self._beam_splits.append(split)
    tasks_file = os.fspath(tasks_path)
    broken_file = os.fspath(self._beam_path('broken', split))

    @beam.ptransform_fn
    def examples(pipeline):
      out = (pipeline
             | 'Tasks' >> beam.Create(range(len(tasks)))
             | 'Records' >> beam.FlatMap(
                 _beam_task_records, tasks_file).with_outputs(
                     _BEAM_BROKEN_TAG, main='records'))
      _ = (out[_BEAM_BROKEN_TAG]
           | 'GatherBroken' >> beam.combiners.ToList()
           | 'WriteBroken' >> beam.Map(_write_beam_broken, broken_file))
      return out.records

    return examples()  # pylint: disable=no-value-for-parameter

  def _read_spools(self, results, split: str) -> Iterator[tuple[int, dict]]:
    written = 0
    for path, broken in results:
      self.broken_videos.extend(dict(b, split=split) for b in broken)
      for record in _read_spool(path):
        written += 1
        yield record
    if not written:  # TFDS cannot write an empty split: say why instead.
      raise self._empty_split_error(split, self.broken_videos)

  def _empty_split_error(self, split: str,
                         broken: list[dict[str, str]]) -> AffectJaxError:
    left = [format_broken(b) for b in broken if b['split'] == split]
    return AffectJaxError(
        f'{self.name}: skip_broken left out every video of split {split!r}, '
        'so it would be empty: ' + ('; '.join(left) or 'see the warnings '
                                    "in the runner's worker logs") +
        '. Fix or re-download these videos.')


def broken_entry(spec: VideoSpec, status: str, reason: str) -> dict[str, str]:
  """One video left out or cut short under skip_broken, with a warning.

  Args:
    spec: the video.
    status: 'left out' (no record of it is written) or 'cut short' (the
      frames before the failure are kept).
    reason: the error message.
  """
  logging.warning('skip_broken: %s %s: %s', status, spec.video_id, reason)
  return {'video_id': spec.video_id, 'path': spec.path, 'status': status,
          'reason': reason}


def format_broken(entry: dict[str, str]) -> str:
  """'split/video_id: left out: reason', one line of prepare's summary."""
  split = entry.get('split')
  where = f'{split}/' if split else ''
  return f'{where}{entry["video_id"]}: {entry["status"]}: {entry["reason"]}'


def skipped_videos(builder: tfds.core.DatasetBuilder) -> list[dict[str, str]]:
  """The videos a prepared dataset lacks, from its metadata.

  Every video that skip_broken left out or cut short, as dicts with keys
  'split', 'video_id', 'path', 'status' ('left out' or 'cut short') and
  'reason'; [] for a dataset built without skip_broken or with nothing
  broken (and for datasets built before this list existed).
  """
  return list((builder.info.metadata or {}).get('broken_videos') or [])


def uses_beam(download_config) -> bool:
  """Whether a TFDS `DownloadConfig` asks for an Apache Beam runner."""
  return download_config is not None and (
      download_config.beam_runner is not None or
      download_config.beam_options is not None)


# Beam mode: the side output of `_beam_task_records` with the videos left
# out, and the prefix of the per-split files in the build's folder.
_BEAM_BROKEN_TAG = 'broken'
_BEAM_PREFIX = 'beam_'


@functools.lru_cache(maxsize=4)
def _beam_tasks(path: str) -> list:
  """A split's pickled `_batches` tasks, read once per worker process."""
  return pickle.loads(epath.Path(path).read_bytes())


def _beam_task_records(index: int, tasks_file: str):
  """Task `index` of a split (a `_batches` task) -> its records (FlatMap).

  The per-video code of the plain build: streamed, or under skip_broken
  spooled to the worker's local disk and taken back for a video that fails,
  exactly as the worker processes of `num_workers` do. Entries of videos
  left out or cut short go to the `_BEAM_BROKEN_TAG` output as
  (first video ordinal, [broken_entry, ...]).
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  task = _beam_tasks(tasks_file)[index]
  if not task[0][2].skip_broken:
    for job in task:
      yield from video_records(*job)
    return
  with tempfile.TemporaryDirectory(prefix='affect_jax_beam_') as spool:
    path, broken = _spool_video_records((task, spool))
    if broken:
      yield beam.pvalue.TaggedOutput(_BEAM_BROKEN_TAG, (task[0][1], broken))
    yield from _read_spool(path)


def _write_beam_broken(gathered: list, path: str) -> None:
  """Writes a split's broken entries, in video order, to `path` (JSON)."""
  entries = [e for _, batch in sorted(gathered, key=lambda g: g[0])
             for e in batch]
  epath.Path(path).write_text(json.dumps(entries))


def _read_beam_broken(path: epath.Path, split: str) -> list[dict[str, str]]:
  """The entries `_write_beam_broken` wrote (with their split); removes it."""
  if not path.exists():
    return []
  entries = json.loads(path.read_text())
  path.unlink()
  return [dict(e, split=split) for e in entries]


# TFDS builds into `<parent>/incomplete.<random>_<version>/` and renames it
# to `<version>/` on success (tensorflow_datasets.core.constants).
_INCOMPLETE_PREFIX = 'incomplete.'


def check_prepared(builder: tfds.core.DatasetBuilder) -> None:
  """Raises unless `builder.data_dir` holds a complete prepared dataset.

  A failed build leaves nothing that TFDS would take for a dataset (it
  writes into an `incomplete.*` folder, removed on error, and renames it
  when done); a build killed outright or an interrupted copy of a prepared
  folder can leave one. This checks that the folder is not such a leftover
  and that every shard of every split in its `dataset_info.json` exists and
  holds the records the info lists (array_record: read from each file's
  footer, no decoding). The `index-<split>.npz` caches next to the records
  are checked against the record count when read, so they cannot make a
  half-built folder look prepared.

  Raises:
    AffectJaxError: naming the folder, what is missing and the fix.
  """
  data_dir = str(builder.data_dir)
  fix = ('it was left by an interrupted build or copy: delete the folder and '
         'run python -m affect_jax.prepare again')
  if os.path.basename(data_dir.rstrip('/')).startswith(_INCOMPLETE_PREFIX):
    raise AffectJaxError(f'{data_dir} is an unfinished build, not a '
                         f'prepared dataset; {fix}.')
  if not os.path.exists(os.path.join(data_dir, 'dataset_info.json')):
    raise AffectJaxError(f'{data_dir} holds no dataset_info.json: not a '
                         f'prepared dataset; {fix}.')
  array_record = (builder.info.file_format ==
                  tfds.core.FileFormat.ARRAY_RECORD)
  for split, info in builder.info.splits.items():
    for path, expected in zip(info.filepaths, info.shard_lengths):
      path = str(path)
      if not os.path.exists(path):
        raise AffectJaxError(f'{data_dir} is half-built: split {split!r} '
                             f'lacks {os.path.basename(path)}; {fix}.')
      if not array_record:
        continue
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      try:
        reader = array_record_module.ArrayRecordReader(path)
        count = reader.num_records()
        reader.close()
      except (OSError, RuntimeError, ValueError) as e:
        raise AffectJaxError(f'{data_dir} is half-built: {path} does not '
                             f'read ({e}); {fix}.') from e
      if count != expected:
        raise AffectJaxError(f'{data_dir} is half-built: {path} holds '
                             f'{count} records, its dataset_info.json says '
                             f'{expected}; {fix}.')


def leftover_builds(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Folders of interrupted builds of `builder`'s version (never read)."""
  parent = os.path.dirname(str(builder.data_dir).rstrip('/'))
  version = str(builder.version)
  if not os.path.isdir(parent):
    return []
  return sorted(os.path.join(parent, d) for d in os.listdir(parent)
                if d.startswith(_INCOMPLETE_PREFIX) and
                d.endswith(f'_{version}'))


def check_label_count(video_path: str, label_path: str, num_frames: int,
                      num_labels: int, max_mismatch_frames: int,
                      unit: str = 'frames') -> None:
  """Checks that labels matched to frames cover the decoded video.

  Up to `max_mismatch_frames` more or fewer labels than frames is normal
  (a warning naming both counts); more is an error: a truncated video
  (labels run past its end), or labels of another or truncated video.

  Args:
    video_path, label_path: for the messages.
    num_frames: frames decoded.
    num_labels: frames the labels cover (rows, or the last labelled frame
      index + 1, or the labels' duration in frames).
    max_mismatch_frames: the slack (config `max_mismatch_frames`).
    unit: what a label is, for the messages ('rows', 'lines', 'frames').

  Raises:
    AffectJaxError: naming both files, both counts and the fix.
  """
  diff = num_labels - num_frames
  if diff == 0:
    return
  if abs(diff) <= max_mismatch_frames:
    logging.warning('%s: %d decoded frames, %s covers %d %s (within the '
                    '%d-frame slack).', video_path, num_frames, label_path,
                    num_labels, unit, max_mismatch_frames)
    return
  if diff > 0:
    what = (f'the labels run {diff} frames past the end of the video: '
            f'{label_path} covers {num_labels} {unit} but {video_path} '
            f'decodes {num_frames} frames. The video is truncated or the '
            'labels belong to another video: re-download or re-copy the '
            'video')
  else:
    what = (f'{video_path} decodes {num_frames} frames but {label_path} '
            f'covers only {num_labels} {unit} ({-diff} fewer). The label '
            'file is truncated or belongs to another video: re-copy it')
  raise AffectJaxError(
      f'{what}, or build with --skip_broken (skip_broken=True) to leave the '
      f'video out (up to max_mismatch_frames={max_mismatch_frames} frames of '
      'difference are accepted).')


# Records per pickled chunk of a worker's spool file (~2.5 MB at 170 pixels).
_SPOOL_CHUNK = 256


def _batches(jobs: list) -> Iterator[list]:
  """Groups consecutive jobs into worker tasks, in order.

  A video is a task of its own; short image sequences (AffectNet's one-image
  "videos") are grouped up to _SPOOL_CHUNK frames, so that 290k photos are
  ~1k tasks and spool files rather than 290k.
  """
  batch, frames = [], 0
  for job in jobs:
    images = job[0].images
    if images is None or len(images) >= _SPOOL_CHUNK:
      if batch:
        yield batch
        batch, frames = [], 0
      yield [job]
      continue
    batch.append(job)
    frames += len(images)
    if frames >= _SPOOL_CHUNK:
      yield batch
      batch, frames = [], 0
  if batch:
    yield batch


def _spool_video_records(batch_and_dir) -> tuple[str, list[dict[str, str]]]:
  """Writes some videos' records to a spool file (in a worker or in process).

  With skip_broken, a video that fails (`video_records` raises) is taken
  back out of the file: no record of it is written.

  Returns:
    The file's path, and the `broken_entry`s of videos left out or cut
    short.
  """
  batch, spool = batch_and_dir
  broken = []
  fd, path = tempfile.mkstemp(suffix='.pkl', dir=spool)
  with os.fdopen(fd, 'wb') as f:
    chunk = []
    for job in batch:
      # Where this video starts: restored if it fails.
      prefix, offset = list(chunk), f.tell()
      try:
        for record in video_records(*job, broken=broken):
          chunk.append(record)
          if len(chunk) == _SPOOL_CHUNK:
            pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
            chunk = []
      except AffectJaxError as e:
        if not job[2].skip_broken:
          raise
        f.seek(offset)
        f.truncate()
        chunk = prefix
        broken.append(broken_entry(job[0], 'left out', str(e)))
    pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
  return path, broken


def _read_spool(path: str) -> Iterator[tuple[int, dict]]:
  """Yields a spool file's records chunk by chunk, then deletes it."""
  try:
    with open(path, 'rb') as f:
      while True:
        try:
          chunk = pickle.load(f)
        except EOFError:
          break
        yield from chunk
  finally:
    os.remove(path)


def video_records(spec: VideoSpec, ordinal: int, config: VideoFrameConfig,
                  num_emotions: int, broken: list[dict] | None = None
                  ) -> Iterator[tuple[int, dict]]:
  """Decodes one video into keyed per-frame records (see VideoFrameBuilder).

  Raises (after yielding the frames before the problem) when the video is
  corrupt, ends early or does not fit its labels (`spec.done`); the caller
  stops the build or, with skip_broken, takes the video back out. With
  `config.skip_broken`, an image sequence with an unreadable image keeps
  the images before it, and a `broken_entry` is appended to `broken`.
  """
  tracker = face.make_tracker(
      'none' if spec.aligned else config.detector, config.max_gap, spec.pick,
      config.detect_every, config.track, config.detect_max_side)
  landmarker = face.make_landmarker(config.landmarks)
  no_emotions = np.zeros(num_emotions, np.float32)
  no_landmarks = np.zeros((F.NUM_LANDMARKS, 2), np.float32)
  blank = np.zeros((config.image_size, config.image_size, 3), np.uint8)
  num_frames = kept = 0
  if spec.images is not None:
    frames = video_lib.iter_images(spec.images, spec.fps)
  else:
    frames = video_lib.iter_frames(spec.path)
  if config.skip_broken and spec.images is not None:
    frames = _until_broken(frames, spec, [] if broken is None else broken)
  for frame in frames:
    num_frames += 1
    labels = spec.labels(frame.index, frame.time)
    if labels is None:
      continue
    box, has_face, crop, landmarks = None, False, None, no_landmarks
    if frame.image is not None:
      found = face.crop_frame(
          frame.image, tracker, config.image_size, config.margin, landmarker,
          given_box=labels.box, given_landmarks=labels.landmarks,
          given_has_face=labels.has_face, aligned=spec.aligned)
      box, has_face = found.box, found.has_face
      crop, landmarks = found.crop, found.landmarks
    emotions = (no_emotions if labels.emotions is None else
                np.asarray(labels.emotions, np.float32))
    kept += 1
    yield record_key(ordinal, frame.index), {
        F.RECORD_IMAGE: encode_jpeg(blank if crop is None else crop.image,
                                    config.jpeg_quality),
        F.RECORD_VALENCE: np.float32(labels.valence),
        F.RECORD_AROUSAL: np.float32(labels.arousal),
        F.RECORD_EMOTIONS: emotions,
        F.RECORD_LANDMARKS: landmarks,
        # Zeros where no face was found: the crop is then the whole frame.
        F.RECORD_BOX: (crop.box_to_crop(box) if box is not None else
                       np.zeros(4, np.float32)),
        F.RECORD_HAS_FACE: bool(has_face),
        F.RECORD_TIME: np.float32(frame.time),
        F.RECORD_FRAME_INDEX: np.int32(frame.index),
        F.RECORD_VIDEO_ID: spec.video_id,
        F.RECORD_SUBJECT_ID: spec.subject_id,
    }
  if spec.done is not None:
    spec.done(num_frames)
  if kept < num_frames:
    logging.warning('%s: kept %d of %d frames (the others have no label).',
                    spec.path, kept, num_frames)


def _until_broken(frames: Iterator[video_lib.Frame], spec: VideoSpec,
                  broken: list[dict]) -> Iterator[video_lib.Frame]:
  """The images read before an unreadable one, with a note (skip_broken)."""
  n = 0
  try:
    for frame in frames:
      n += 1
      yield frame
  except AffectJaxError as e:
    broken.append(broken_entry(
        spec, 'cut short', f'kept the {n} frames before an error: {e}'))
