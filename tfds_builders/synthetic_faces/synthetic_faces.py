"""TFDS builder of the embedded synthetic face-video dataset (SPEC section 3).

Cartoon faces whose mouth, eyes and brows follow smooth valence/arousal
trajectories (see `faces.py`), with RealEyes-style multi-label emotions
derived from them and a large "neutral" class. Nothing is downloaded: the
records are rendered from `config.seed`, identically on every machine.

Build and read it without TensorFlow (the `tfds build` CLI imports TF, so go
through the Python API; `python -m affect_jax.prepare
--dataset=synthetic_faces` does the same):

  import tensorflow_datasets as tfds
  import tfds_builders

  tfds_builders.register_all()
  builder = tfds.builder('synthetic_faces', data_dir=DIR)  # or '.../tiny'
  builder.download_and_prepare()  # array_record files, ~15 s on 2 CPU cores
  source = builder.as_data_source('train')  # random access, no TensorFlow
  record = source[0]  # dict keyed by affect_jax.features.RECORD_*
  jpeg = record['image']  # bytes; decode with PIL.Image.open(io.BytesIO(..))

A custom size is a config instance:
`SyntheticFaces(data_dir=DIR, config=SyntheticFacesConfig(name='big',
num_subjects=200))`.

Records are one per frame and come out sorted by (video, frame) in every
split, which the input pipeline relies on to cut windows of consecutive
frames. Splits are by subject: nobody appears in two splits.
"""

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax import folds as folds_lib
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.synthetic_faces import faces

_SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
  """Size and seed of a synthetic dataset.

  Subjects are split in index order: the first ones go to train, then
  validation, then test (subjects are i.i.d., so this is an unbiased split
  that does not change when `num_subjects` grows). A split with fraction 0 is
  not written; any other split gets at least one subject.
  """
  num_subjects: int = 40
  videos_per_subject: int = 2
  frames_per_video: int = 100
  fps: float = 10.0
  frame_size: int = 64  # Square frames, pixels.
  seed: int = 0
  train_fraction: float = 0.7
  validation_fraction: float = 0.15
  test_fraction: float = 0.15
  jpeg_quality: int = 90
  # Subjects are numbered from here: datasets with different offsets share
  # no subject (ids and identities differ), as a pretraining set and a
  # fine-tuning set must.
  subject_offset: int = 0
  # faces.EMOTION_RULES: 'rare' (~75% neutral) or 'realeyes_table4'.
  emotion_rule: str = 'rare'
  # 'realeyes': 8 multi-label emotions per frame from valence/arousal;
  # 'afew': one of AFEW's 7 expressions per clip (every frame labelled with
  # it; valence/arousal follow the class and are not stored: NaN, as AFEW).
  classes: str = 'realeyes'
  # > 0: valence/arousal stored on this many levels of [-1, 1] (AFEW-VA's
  # integer -10..10 scaled: 21); the face still shows the exact value.
  label_levels: int = 0
  # > 0: splits fold_0 .. fold_{K-1} of subject-disjoint folds
  # (affect_jax.folds, as AFEW-VA is prepared) instead of train/val/test.
  num_folds: int = 0


def split_subjects(config: SyntheticFacesConfig) -> dict[str, list[int]]:
  """Subject indices of each written split, e.g. {'train': [0, .., 19], ..}.

  With `num_folds`, the splits are fold_0 .. fold_{K-1} instead.

  Raises:
    AffectJaxError: when the fractions or sizes cannot give a valid split.
  """
  if config.num_folds:
    ids = range(config.subject_offset,
                config.subject_offset + config.num_subjects)
    frames = {subject_id(s): config.videos_per_subject *
              config.frames_per_video for s in ids}
    try:
      assigned = folds_lib.assign_folds(frames, config.num_folds)
    except AffectJaxError as e:
      raise AffectJaxError(f'synthetic_faces config {config.name!r}: {e}'
                           ) from None
    return {f'fold_{k}': [s for s in ids if assigned[subject_id(s)] == k]
            for k in range(config.num_folds)}
  fractions = dict(train=config.train_fraction,
                   validation=config.validation_fraction,
                   test=config.test_fraction)
  if (min(fractions.values()) < 0 or
      abs(sum(fractions.values()) - 1) > 1e-6 or config.train_fraction <= 0):
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: split fractions {fractions} '
        'must be >= 0, sum to 1, with train_fraction > 0.')
  n = config.num_subjects
  # Round half up (Python's round() would give 4 of 30 at 0.15).
  counts = {s: (max(1, int(np.floor(fractions[s] * n + 0.5)))
                if fractions[s] > 0 else 0)
            for s in ('validation', 'test')}
  counts['train'] = n - counts['validation'] - counts['test']
  if counts['train'] < 1:
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: num_subjects={n} leaves no '
        f'subject for train after validation/test took {counts}; use more '
        'subjects (at least one per split with a non-zero fraction).')
  out, start = {}, config.subject_offset
  for s in _SPLITS:
    if counts[s]:
      out[s] = list(range(start, start + counts[s]))
      start += counts[s]
  return out


def _check_config(config: SyntheticFacesConfig) -> None:
  for field in ('num_subjects', 'videos_per_subject', 'frames_per_video'):
    value = getattr(config, field)
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise AffectJaxError(
          f'synthetic_faces config {config.name!r}: {field}={value!r} must be '
          'a positive integer.')
  if config.frame_size < 16:
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: frame_size='
        f'{config.frame_size} is too small to show a face; use >= 16.')
  if config.fps <= 0:
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: fps={config.fps} must be '
        '> 0.')
  if not 1 <= config.jpeg_quality <= 100:
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: jpeg_quality='
        f'{config.jpeg_quality} must be in [1, 100].')
  if config.videos_per_subject >= 2**16 or config.frames_per_video >= 2**32:
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: too many videos or frames '
        'for the (video << 32 | frame) record keys.')
  if config.classes not in CLASS_NAMES:
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: classes={config.classes!r};'
        f' use one of {sorted(CLASS_NAMES)}.')
  if config.label_levels == 1 or config.label_levels < 0:
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: label_levels='
        f'{config.label_levels}; use 0 (continuous) or >= 2.')
  if config.emotion_rule not in faces.EMOTION_RULES:
    raise AffectJaxError(
        f'synthetic_faces config {config.name!r}: emotion_rule='
        f'{config.emotion_rule!r}; use one of {sorted(faces.EMOTION_RULES)}.')
  split_subjects(config)


CLASS_NAMES = {'realeyes': F.REALEYES_EMOTIONS,
               'afew': faces.AFEW_EXPRESSIONS}


def subject_id(subject_index: int) -> str:
  return f's{subject_index:04d}'


def video_id(subject_index: int, video_index: int) -> str:
  # Zero-padded so that sorting the ids as strings sorts them by number.
  return f'{subject_id(subject_index)}_v{video_index:02d}'


def subject_rng(seed: int, subject_index: int) -> np.random.Generator:
  # Own stream per subject (tag 0) and per video (tag 1): changing the number
  # of subjects, videos or frames does not change the others.
  return np.random.default_rng([seed, 0, subject_index])


def video_rng(seed: int, subject_index: int,
              video_index: int) -> np.random.Generator:
  return np.random.default_rng([seed, 1, subject_index, video_index])


class SyntheticFaces(tfds.core.GeneratorBasedBuilder):
  """Procedural face videos with valence, arousal and emotion labels."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      # ~15 s on 2 CPU cores: 28/6/6 subjects -> 5600/1200/1200 frames.
      SyntheticFacesConfig(
          name='default',
          description='40 subjects x 2 videos x 100 frames, 64x64, 10 fps.'),
      # For tests: builds in about a second, 4/1/1 subjects. Seed 20 is one
      # where every split holds some non-neutral emotion, so that per-class
      # metrics are defined on each split.
      # The transfer experiments (configs/recola_finetune.py, the quick
      # start): a large RealEyes-like pretraining set, 120 subjects (96 train)
      # x 2 videos x 100 frames, ~45 s to build ...
      SyntheticFacesConfig(
          name='realeyes_like', num_subjects=120, videos_per_subject=2,
          frames_per_video=100, seed=0, train_fraction=0.8,
          validation_fraction=0.1, test_fraction=0.1,
          emotion_rule='realeyes_table4',
          description='Pretraining set: 120 subjects x 2 videos x 100 '
          'frames, 64x64, 10 fps.'),
      # ... and a small RECOLA-like fine-tuning set: as few people as RECOLA
      # (9 train, 9 validation, 9 test), one 30-s recording each, none of
      # them in the large set (subjects 1000-1026, another seed).
      SyntheticFacesConfig(
          name='recola_like', num_subjects=27, videos_per_subject=1,
          frames_per_video=300, seed=1, subject_offset=1000,
          train_fraction=1 / 3, validation_fraction=1 / 3,
          test_fraction=1 / 3,
          description='Fine-tuning set: 27 subjects (9/9/9) x 1 video x 300 '
          'frames, 64x64, 10 fps, no subject shared with realeyes_like.'),
      # The quick start's fine-tuning set (configs/realeyes.py:synthetic):
      # as many frames as recola_like, in 10-s recordings of 4x as many
      # people (27 train, 27 validation, 54 test; subjects 7000-7107, none
      # in the other sets). On 9 test subjects, a model's per-person
      # offsets (a face's resting eye size read as arousal) decide the
      # pooled CCC, and which persons a model happens to misread changes
      # with the seed and the CPU's float rounding; more people in every
      # split make the number a property of the recipe. ~35 s to build.
      SyntheticFacesConfig(
          name='recola_like_many', num_subjects=108, videos_per_subject=1,
          frames_per_video=100, seed=7, subject_offset=7000,
          train_fraction=0.25, validation_fraction=0.25, test_fraction=0.5,
          description='Quick-start fine-tuning set: 108 subjects '
          '(27/27/54) x 1 video x 100 frames, 64x64, 10 fps.'),
      SyntheticFacesConfig(
          name='tiny', num_subjects=6, videos_per_subject=2,
          frames_per_video=24, frame_size=32, seed=20,
          description='6 subjects x 2 videos x 24 frames, 32x32, 10 fps.'),
      # For tests of cross validation and of clip labels: seconds to build.
      SyntheticFacesConfig(
          name='tiny_folds', num_subjects=6, videos_per_subject=1,
          frames_per_video=24, frame_size=32, seed=21, num_folds=3,
          label_levels=21,
          description='6 subjects x 1 video x 24 frames, 3 folds.'),
      SyntheticFacesConfig(
          name='tiny_afew', num_subjects=6, videos_per_subject=2,
          frames_per_video=16, frame_size=32, seed=22, classes='afew',
          description='6 subjects x 2 clips x 16 frames, one of 7 '
          'expressions per clip.'),
      # The Aff-Wild experiments (configs/affwildnet.py, cnn_m_baseline.py):
      # an in-the-wild-like VA set, 28/6/6 subjects x 2 videos x 100 frames.
      SyntheticFacesConfig(
          name='affwild_like', num_subjects=40, seed=2, subject_offset=2000,
          description='Aff-Wild-like: 40 subjects x 2 videos x 100 frames, '
          '64x64, 10 fps.'),
      # AFEW-VA-like (configs/transfer.py): 30 subjects x 2 clips x 50
      # frames in 5 subject-disjoint folds, labels on 21 levels.
      SyntheticFacesConfig(
          name='afew_va_like', num_subjects=30, videos_per_subject=2,
          frames_per_video=50, seed=3, subject_offset=3000, num_folds=5,
          label_levels=21,
          description='AFEW-VA-like: 30 subjects x 2 clips x 50 frames, 5 '
          'folds, valence/arousal on 21 levels.'),
      # AFEW-like (configs/transfer.py): one of 7 expressions per clip,
      # 50 subjects (36/7/7) x 4 clips x 32 frames.
      SyntheticFacesConfig(
          name='afew_like', num_subjects=50, videos_per_subject=4,
          frames_per_video=32, seed=6, subject_offset=6000, classes='afew',
          train_fraction=0.72, validation_fraction=0.14, test_fraction=0.14,
          description='AFEW-like: 50 subjects x 4 clips x 32 frames, one of '
          '7 expressions per clip.'),
      # Two differently drawn databases for cross-database evaluation
      # (configs/affect4k.py): B has smaller, heavily compressed frames.
      SyntheticFacesConfig(
          name='crossdb_a', num_subjects=24, seed=4, subject_offset=4000,
          description='Database A: 24 subjects x 2 videos x 100 frames, '
          '64x64, JPEG quality 90.'),
      SyntheticFacesConfig(
          name='crossdb_b', num_subjects=24, seed=5, subject_offset=5000,
          frame_size=40, jpeg_quality=35,
          description='Database B: 24 subjects x 2 videos x 100 frames, '
          '40x40, JPEG quality 35.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    _check_config(self.builder_config)
    core.default_to_array_record(self, file_format)

  # Rendered here, nothing downloaded: no TFDS "Downloading ..." lines (the
  # callers print what they build and where).
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split('\n\n')[0] + ' ' + (c.description or ''),
        features=core.frame_features(len(CLASS_NAMES[c.classes])),
        # Keys are (video << 32 | frame): with shuffling disabled TFDS writes
        # records in key order, i.e. sorted by video then frame, which the
        # input pipeline needs to cut windows of consecutive frames.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(
            emotion_names=list(CLASS_NAMES[c.classes]),
            fps=float(c.fps),
            frame_size=int(c.frame_size),
            seed=int(c.seed),
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(subjects)
            for split, subjects in split_subjects(self.builder_config).items()}

  def _generate_examples(
      self, subjects: list[int]) -> Iterator[tuple[int, dict[str, object]]]:
    """Yields ((video_ordinal << 32) | frame_index, record) for each frame."""
    c = self.builder_config
    # Video ordinal = position in the sorted list of the split's video ids.
    videos = sorted((video_id(s, v), s, v) for s in subjects
                    for v in range(c.videos_per_subject))
    for ordinal, (vid, s, v) in enumerate(videos):
      subject = faces.make_subject(subject_rng(c.seed, s))
      rng = video_rng(c.seed, s, v)
      if c.classes == 'afew':
        video, k = faces.make_expression_clip(rng, c.frames_per_video, c.fps)
        emotions = np.zeros((c.frames_per_video, 7), np.float32)
        emotions[:, k] = 1.0
        valence = arousal = np.full(c.frames_per_video, np.nan, np.float32)
      else:
        video = faces.make_video(rng, c.frames_per_video, c.fps)
        emotions = faces.emotions_from_va(video.valence, video.arousal,
                                          c.emotion_rule)
        valence, arousal = video.valence, video.arousal
        if c.label_levels:
          valence = faces.quantize(valence, c.label_levels)
          arousal = faces.quantize(arousal, c.label_levels)
      for i in range(c.frames_per_video):
        image, landmarks, box = faces.render_frame(subject, video, i,
                                                   c.frame_size)
        yield core.record_key(ordinal, i), {
            F.RECORD_IMAGE: core.encode_jpeg(image, c.jpeg_quality),
            F.RECORD_VALENCE: valence[i],
            F.RECORD_AROUSAL: arousal[i],
            F.RECORD_EMOTIONS: emotions[i],
            F.RECORD_LANDMARKS: landmarks,
            F.RECORD_BOX: box,
            F.RECORD_HAS_FACE: True,
            F.RECORD_TIME: np.float32(i / c.fps),
            F.RECORD_FRAME_INDEX: np.int32(i),
            F.RECORD_VIDEO_ID: vid,
            F.RECORD_SUBJECT_ID: subject_id(s),
        }
