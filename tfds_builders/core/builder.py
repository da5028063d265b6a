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
"""

import abc
import dataclasses
import io
import math
import multiprocessing
import os
import pickle
import tempfile
from typing import Callable, Iterator, Sequence

from absl import logging
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
    done: optional check called with the number of decoded frames (e.g. to
      warn that the label file is longer than the video).
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
    detect_every: run the detector on every N-th frame only and reuse its
      result in between (N times faster detection).
    image_size: side of the stored square crops, pixels.
    margin: context around the face box on each side, fraction of its side.
    max_gap: frames after a detection for which a missed face reuses the
      last box for the crop (has_face stays False).
    jpeg_quality: of the stored crops.
    skip_broken: False (default): a video that cannot be opened is an error,
      raised before any video is decoded. True: such videos are left out
      with a warning, and a video whose stream breaks while decoding keeps
      the frames decoded before the break.
    num_workers: 0 or 1 decodes in the building process, streaming frame by
      frame. N > 1 decodes N videos at a time in worker processes, which
      spool their records to temporary files in chunks (memory stays a
      chunk per worker whatever the video's length); the records are the
      same and written in the same order as with 0.
  """
  detector: str = 'dlib'
  landmarks: str = 'dlib'
  detect_every: int = 1
  # tzirakis2019 resizes face crops to 170 and random-crops 150 for training.
  image_size: int = 170
  margin: float = 0.2
  max_gap: int = 5
  jpeg_quality: int = 90
  skip_broken: bool = False
  num_workers: int = 0


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
        c.num_workers < 0 or c.detect_every < 1):
      raise AffectJaxError(
          f'{self.name} config {c.name!r}: image_size={c.image_size} (>= 16), '
          f'margin={c.margin} (0..2), max_gap={c.max_gap} (>= 0), '
          f'num_workers={c.num_workers} (>= 0) or detect_every='
          f'{c.detect_every} (>= 1) out of range.')
    if c.detector not in face.DETECTORS:
      raise AffectJaxError(f'{self.name} config {c.name!r}: unknown detector '
                           f'{c.detector!r}; use one of {face.DETECTORS}.')
    if c.landmarks not in face.LANDMARKERS:
      raise AffectJaxError(f'{self.name} config {c.name!r}: unknown landmarks '
                           f'{c.landmarks!r}; use one of {face.LANDMARKERS}.')
    default_to_array_record(self, file_format)
    # With skip_broken: one line per video left out or cut short, for the
    # summary at the end of the build (affect_jax.prepare prints it).
    self.broken_videos: list[str] = []

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
            margin=float(c.margin),
            fps=self.FPS,
        ),
    )

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
    face.make_detector(self.builder_config.detector)
    face.make_landmarker(self.builder_config.landmarks)
    splits = self._videos(manual_dir)
    for split, videos in splits.items():
      ids = [v.video_id for v in videos]
      if len(set(ids)) != len(ids):
        raise AffectJaxError(f'{self.name}: split {split!r} lists a video id '
                             f'twice; make the ids in {manual_dir} unique.')
      splits[split] = [v for v in videos if self._openable(v)]
    return {split: self._generate_examples(videos)
            for split, videos in splits.items() if videos}

  def _openable(self, spec: VideoSpec) -> bool:
    """Probes a video before decoding anything (see `skip_broken`)."""
    try:
      if spec.images is not None:
        video_lib.probe_images(spec.images, spec.path)
      else:
        video_lib.probe(spec.path)
    except AffectJaxError as e:
      if not self.builder_config.skip_broken:
        raise AffectJaxError(f'{e} (Or build with skip_broken=True to leave '
                             'broken videos out.)') from e
      logging.warning('Skipping video %s: %s', spec.video_id, e)
      self.broken_videos.append(f'{spec.video_id}: left out: {e}')
      return False
    return True

  def _generate_examples(
      self, videos: list[VideoSpec]) -> Iterator[tuple[int, dict]]:
    """Yields (record_key, record) for each kept frame of each video."""
    c = self.builder_config
    jobs = [(spec, ordinal,
             dataclasses.replace(c, detector=spec.detector) if spec.detector
             else c, len(self.EMOTION_NAMES))
            for ordinal, spec in enumerate(sorted(videos,
                                                  key=lambda v: v.video_id))]
    if c.num_workers <= 1 or len(jobs) < 2:
      for job in jobs:
        yield from video_records(*job, broken=self.broken_videos)
      return
    # 'spawn': PyAV and OpenCV start threads, which fork does not copy
    # safely. imap keeps the video order (records must stay sorted).
    ctx = multiprocessing.get_context('spawn')
    with tempfile.TemporaryDirectory(prefix=f'{self.name}_') as spool:
      with ctx.Pool(min(c.num_workers, len(jobs))) as pool:
        for path, broken in pool.imap(
            _spool_video_records,
            [(batch, spool) for batch in _batches(jobs)]):
          self.broken_videos.extend(broken)
          yield from _read_spool(path)


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


def _spool_video_records(batch_and_dir) -> tuple[str, list[str]]:
  """Worker: writes some videos' records to a spool file.

  Returns:
    The file's path, and the notes on videos cut short (`broken_videos`).
  """
  batch, spool = batch_and_dir
  broken = []
  fd, path = tempfile.mkstemp(suffix='.pkl', dir=spool)
  with os.fdopen(fd, 'wb') as f:
    chunk = []
    for job in batch:
      for record in video_records(*job, broken=broken):
        chunk.append(record)
        if len(chunk) == _SPOOL_CHUNK:
          pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
          chunk = []
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
                  num_emotions: int, broken: list[str] | None = None
                  ) -> Iterator[tuple[int, dict]]:
  """Decodes one video into keyed per-frame records (see VideoFrameBuilder).

  With `config.skip_broken`, a video whose decoding fails keeps the frames
  before the failure, and a note on it is appended to `broken`.
  """
  tracker = face.FaceTracker(
      None if spec.aligned else face.make_detector(config.detector),
      config.max_gap, spec.pick, config.detect_every)
  landmarker = face.make_landmarker(config.landmarks)
  no_emotions = np.zeros(num_emotions, np.float32)
  no_landmarks = np.zeros((F.NUM_LANDMARKS, 2), np.float32)
  blank = np.zeros((config.image_size, config.image_size, 3), np.uint8)
  num_frames = kept = 0
  if spec.images is not None:
    frames = video_lib.iter_images(spec.images, spec.fps)
  else:
    frames = video_lib.iter_frames(spec.path)
  if config.skip_broken:
    frames = _until_broken(frames, spec.video_id,
                           [] if broken is None else broken)
  for frame in frames:
    num_frames += 1
    labels = spec.labels(frame.index, frame.time)
    if labels is None:
      continue
    box, has_face, crop = None, False, None
    if frame.image is not None:
      h, w = frame.image.shape[:2]
      box, has_face = tracker(
          frame.image,
          np.array([0, 0, h, w], np.float32) if spec.aligned else labels.box)
      if labels.has_face is not None:
        has_face = has_face and labels.has_face
      margin = 0.0 if spec.aligned or box is None else config.margin
      crop = face.crop_face(frame.image, box, config.image_size, margin)
    if labels.landmarks is not None and crop is not None:
      landmarks = crop.to_crop(labels.landmarks)
    elif landmarker is not None and has_face and box is not None:
      landmarks = crop.to_crop(landmarker(frame.image, box))
    else:
      landmarks = no_landmarks
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


def _until_broken(frames: Iterator[video_lib.Frame], video_id: str,
                  broken: list[str]) -> Iterator[video_lib.Frame]:
  """The frames decoded before a decoding error, with a warning (skip_broken)."""
  n = 0
  try:
    for frame in frames:
      n += 1
      yield frame
  except AffectJaxError as e:
    logging.warning('Keeping the frames before the decoding error: %s', e)
    broken.append(f'{video_id}: cut short, kept the {n} frames decoded '
                  f'before an error: {e}')
