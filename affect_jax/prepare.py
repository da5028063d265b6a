"""Turns a dataset copy into TFDS array_record records, without TensorFlow.

  python -m affect_jax.prepare --dataset=synthetic_faces --data_dir=DIR
  python -m affect_jax.prepare --dataset=NAME --manual_dir=YOUR_COPY \
      --data_dir=DIR   # NAME: see tfds_builders/ and docs/datasets.md

(The `tfds build` CLI imports TensorFlow; this goes through the TFDS Python
API instead.) `--dataset` takes a builder name, optionally with its config
(`synthetic_faces/tiny`). Face options of the video builders override the
named config:

  python -m affect_jax.prepare --dataset=recola --manual_dir=DIR \
      --face_detector=haar --image_size=112

and change the config's name to say so (`default-detector_haar-image_size_112`),
so records built with other options never mix; train on them with
`--config.dataset.prepared_with=detector_haar-image_size_112` (every stage
inherits `config.dataset`; prepare prints the flag). `--num_workers` (default: the cores
this process may use, at most the number of videos of a split) and
`--skip_broken` do not change the name.

With the `beam` extra (`pip install -e '.[beam]'`), a video builder runs as
an Apache Beam pipeline through TFDS (`DownloadConfig(beam_runner=...,
beam_options=...)`), with the same records:

  python -m affect_jax.prepare --dataset=recola --manual_dir=DIR \
      --data_dir=DIR --beam_runner=DirectRunner \
      --beam_options=direct_num_workers=2,direct_running_mode=multi_processing

(docs/datasets.md: Dataflow, Spark and Flink runners.)
"""

import dataclasses
import os
import time

from absl import flags

from affect_jax import cli
from affect_jax.errors import AffectJaxError

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset', None, 'Builder name, e.g. synthetic_faces.')
flags.DEFINE_string('manual_dir', None,
                    'Folder with your copy of the dataset in its owners\' '
                    'layout (docs/data_formats.md); not needed for synthetic_faces.')
flags.DEFINE_string('data_dir', None,
                    'Where to write records (default $TFDS_DATA_DIR or '
                    '~/tensorflow_datasets).')
flags.DEFINE_enum('face_detector', None, ['dlib', 'haar', 'none'],
                  'Face detector (default: the config\'s, dlib).')
flags.DEFINE_enum('landmarks', None, ['dlib', 'none'],
                  'Landmarks where the dataset ships none (default: dlib).')
flags.DEFINE_integer('image_size', None, 'Side of the stored face crops.')
flags.DEFINE_float('margin', None, 'Context around the face box, fraction '
                   'of its side on each side.')
flags.DEFINE_integer('detect_every', None,
                     'Run the detector on every N-th frame only.')
flags.DEFINE_enum('track', None, ['hold', 'correlation'],
                  'Frames between two detections (--detect_every > 1): '
                  'hold reuses the last detection (default), correlation '
                  'follows the face with dlib\'s correlation tracker.')
flags.DEFINE_integer('detect_max_side', None,
                     'Run the detector on the frame scaled down so its long '
                     'side is at most this many pixels (>= 64; faster, '
                     'misses faces under ~80 px there); 0: the full frame '
                     '(default).')
flags.DEFINE_integer('num_workers', None,
                     'Videos decoded in parallel (worker processes; 0 or 1: '
                     'in this process). Default: the cores this process may '
                     'use, at most the number of videos of a split.')
flags.DEFINE_bool('skip_broken', None, 'Leave out videos that cannot be '
                  'decoded, end early or do not fit their labels, listing '
                  'them at the end and in the metadata, instead of '
                  'stopping.')
flags.DEFINE_string('beam_runner', None,
                    'Generate through Apache Beam with this runner '
                    '(DirectRunner, DataflowRunner, FlinkRunner, SparkRunner; '
                    'needs the beam extra). Video builders only.')
flags.DEFINE_string('beam_options', None,
                    'Beam pipeline options, comma-separated key=value (as '
                    'tfds build --beam_pipeline_options), e.g. '
                    '"runner=DataflowRunner,project=P,region=R,temp_location='
                    'gs://B/tmp"; implies Beam.')
flags.mark_flag_as_required('dataset')

# Options that change the records, and so the config's name (the others
# only change how they are made).
_CONTENT_OPTIONS = ('detector', 'landmarks', 'image_size', 'margin',
                    'detect_every', 'track', 'detect_max_side')


# `prepare(num_workers=AUTO_WORKERS)`, what the command passes without
# --num_workers: `default_num_workers()` for the builders that have workers.
AUTO_WORKERS = 'auto'


def default_num_workers() -> int:
  """`--num_workers` when not given: the cores this process may use.

  The builder caps it by the number of videos of each split (one video is
  decoded in this process). Measured on 2 cores, dlib detection, 4 videos:
  2 workers are 17-19% faster than none (docs/BENCHMARKS.md, "Dataset
  preparation"). The Python API (`prepare(...)` without num_workers,
  builders) keeps the config's default of 0.
  """
  if hasattr(os, 'sched_getaffinity'):  # Linux: honours taskset / cgroups.
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def available() -> list[str]:
  import tfds_builders  # pylint: disable=g-import-not-at-top
  return tfds_builders.register_all()


def _builder(dataset: str, data_dir: str, options: dict):
  """The TFDS builder of `dataset` (name[/config]) with `options` applied."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, _, config_name = dataset.partition('/')
  cls = tfds.builder_cls(name)
  if options.get('num_workers') == AUTO_WORKERS:
    options = dict(options)
    del options['num_workers']
    if any(hasattr(c, 'num_workers') for c in cls.BUILDER_CONFIGS):
      options['num_workers'] = default_num_workers()
  if not options:
    return tfds.builder(dataset, data_dir=data_dir)
  configs = {c.name: c for c in cls.BUILDER_CONFIGS}
  base = configs.get(config_name or next(iter(configs), None))
  if base is None:
    raise AffectJaxError(f'{name} has no config {config_name!r}; it has '
                         f'{sorted(configs)}.')
  fields = ({f.name for f in dataclasses.fields(base)} -
            {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)})
  unknown = sorted(set(options) - fields)
  if unknown:
    raise AffectJaxError(f'{name} takes no option {unknown}; its options: '
                         f'{sorted(fields)}.')
  changed = {k: v for k, v in options.items() if getattr(base, k) != v}
  suffix = ''.join(f'-{k}_{changed[k]}' for k in _CONTENT_OPTIONS
                   if k in changed)
  if suffix:
    config = dataclasses.replace(base, name=base.name + suffix, **changed)
    return cls(data_dir=data_dir, config=config)
  builder = cls(data_dir=data_dir, config=base.name)
  # Same records, same name: only how they are made changes.
  builder._builder_config = dataclasses.replace(base, **changed)  # pylint: disable=protected-access
  return builder


def beam_pipeline_options(options: str | None):
  """Beam `PipelineOptions` of 'key=value,key=value' (or a bare 'flag').

  Always explicit: Beam's default would parse this process's command line.
  """
  try:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise AffectJaxError(
        '--beam_runner/--beam_options need Apache Beam: pip install -e '
        "'.[beam]' (see docs/datasets.md).") from e
  flags_ = [f'--{o.strip()}' for o in (options or '').split(',') if o.strip()]
  parsed = pipeline_options.PipelineOptions(flags=flags_)
  # Beam only warns about an option it does not know (a typo would go
  # unnoticed until the cluster run): refuse it here.
  unknown = sorted(set(parsed.get_all_options(retain_unknown_options=True)) -
                   set(parsed.get_all_options()))
  if unknown:
    raise AffectJaxError(f'--beam_options: Apache Beam has no option '
                         f'{unknown}; check the spelling (Beam\'s pipeline '
                         'options: apache_beam/options/pipeline_options.py).')
  return parsed


def prepare(dataset: str, data_dir: str | None, manual_dir: str | None,
            beam_runner: str | None = None, beam_options: str | None = None,
            **options):
  """Builds `dataset` (name[/config]) into `data_dir`; returns the builder.

  Args:
    dataset: builder name, optionally with a config name.
    data_dir: where records go (default $TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    manual_dir: the user's copy of the dataset.
    beam_runner, beam_options: generate through Apache Beam (video builders
      only): a runner name and/or 'key=value,...' pipeline options.
    **options: overrides of config fields (detector, image_size, ...; None
      values are ignored); num_workers=AUTO_WORKERS ('auto'):
      `default_num_workers()` where the builder has workers.
  """
  names = available()
  name = dataset.split('/')[0]
  if name not in names:
    raise AffectJaxError(
        f'No builder for dataset {name!r}; available: {names}.')
  data_dir = os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR')
                                or '~/tensorflow_datasets')
  builder = _builder(dataset, data_dir,
                     {k: v for k, v in options.items() if v is not None})
  from tfds_builders import core  # pylint: disable=g-import-not-at-top
  download = {}
  if manual_dir:
    if not os.path.isdir(manual_dir):
      raise AffectJaxError(
          f'--manual_dir={manual_dir!r} is not a folder; point it at your '
          f'copy of {name} in the layout of docs/data_formats.md.')
    if not os.listdir(manual_dir):
      raise AffectJaxError(
          f'--manual_dir={manual_dir!r} is an empty folder; it must hold your '
          f'copy of {name} in the layout of docs/data_formats.md.')
    download['manual_dir'] = manual_dir
  if beam_runner or beam_options:
    if not isinstance(builder, core.VideoFrameBuilder):
      raise AffectJaxError(
          f'{name} has no Beam path (it is rendered in seconds on one '
          'machine): drop --beam_runner/--beam_options.')
    download.update(beam_runner=beam_runner or None,
                    beam_options=beam_pipeline_options(beam_options))
  config = None
  if download:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    config = tfds.download.DownloadConfig(**download)
  for leftover in core.leftover_builds(builder):
    print(f'Ignoring {leftover}: left by an interrupted build, never read '
          '(delete it to free the space).')
  reused = builder.is_prepared()
  if reused:  # A folder that only looks prepared is refused, not reused.
    core.check_prepared(builder)
  t0 = time.time()
  builder.download_and_prepare(download_config=config)
  print(f'{"Reusing" if reused else "Prepared"} {builder.info.full_name} in '
        f'{builder.data_dir} ({time.time() - t0:.1f}s): ' + ', '.join(
            f'{s}={v.num_examples}' for s, v in builder.info.splits.items()))
  # Index every split now (reads the records once), so that training starts
  # without scanning them (input_pipeline.indexed_split).
  from affect_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  for split in builder.info.splits:
    input_pipeline.indexed_split(builder, split)
  print(training_hint(builder, data_dir))
  broken = core.skipped_videos(builder)
  if broken:
    print(f'skip_broken: {len(broken)} video(s) left out or cut short (also '
          'in the dataset\'s metadata, broken_videos):\n  ' +
          '\n  '.join(core.format_broken(b) for b in broken))
  return builder


def training_hint(builder, data_dir: str) -> str:
  """How a config selects these records (`config.dataset`)."""
  flags_ = []
  default_dir = os.path.expanduser(os.environ.get('TFDS_DATA_DIR') or
                                   '~/tensorflow_datasets')
  if os.path.abspath(data_dir) != os.path.abspath(default_dir):
    flags_.append(f'--config.dataset.data_dir={data_dir}')
  config = builder.builder_config.name if builder.builder_config else ''
  if '-' in config:
    flags_.append(f'--config.dataset.prepared_with={config.split("-", 1)[1]}')
  if not flags_:
    return 'Train on it with the configs as they are (docs/experiments.md).'
  return ('Train on it with ' + ' '.join(flags_) + ' (every stage inherits '
          'config.dataset; docs/experiments.md).')


def main(argv):
  del argv
  prepare(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir,
          detector=FLAGS.face_detector, landmarks=FLAGS.landmarks,
          image_size=FLAGS.image_size, margin=FLAGS.margin,
          detect_every=FLAGS.detect_every, track=FLAGS.track,
          detect_max_side=FLAGS.detect_max_side,
          num_workers=(AUTO_WORKERS if FLAGS.num_workers is None
                       else FLAGS.num_workers),
          skip_broken=FLAGS.skip_broken, beam_runner=FLAGS.beam_runner,
          beam_options=FLAGS.beam_options)


if __name__ == '__main__':
  cli.run(main)
