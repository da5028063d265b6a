"""The config schema every experiment file builds on: each key and its default, once.

An experiment is a top-level section (seed, batch size, model, input, the
schedule defaults) plus one section per stage, run in the order of
`config.stages`. A stage's `kind` says what it does (the stage kinds of
`affect_jax.experiment`):

  train        trains a model on a task, keeps the best checkpoint by a
               validation metric (early stopping), writes metrics and plots;
  test         predicts splits with a checkpoint, scores them, writes
               results, per-frame prediction CSVs, tables and plots;
  postprocess  the tzirakis2019 chain (median filter, centring, scaling,
               time shift) chosen on one prediction file and applied to
               another;
  cv           K-fold subject-independent cross validation of a train
               section (kollias2019 on AFEW-VA): per-fold and mean results;
  cross_test   several trained models on several datasets, one table of
               all pairs (the affect4k thesis' cross-database evaluation).

Stages refer to each other by name: `init_from='stage:pretrain'`,
`checkpoint_from='stage:finetune'`, `predictions_from='stage:test'`; any
other value is a path (a workdir, a stage folder or a checkpoint folder).

Train-stage keys set to None take the top-level value (`INHERITED`), so an
experiment states its schedule once. `validate` refuses a misspelt or unknown
key anywhere, with the list of valid keys, before any work starts.
"""

from __future__ import annotations

import copy as _copy
import difflib
from typing import Any

import ml_collections
from ml_collections import config_dict

# Train-stage keys that fall back to the experiment's top-level value.
INHERITED = ('seed', 'num_train_steps', 'num_epochs', 'learning_rate',
             'schedule', 'warmup_steps', 'decay_steps', 'decay_rate',
             'eval_every_steps', 'eval_every_epochs', 'checkpoint_every_steps',
             'checkpoint_every_epochs', 'early_stopping_patience')

_INT, _FLOAT, _STR = int, float, str


def dataset(name: str, builder_config: str = '', *, train: str = 'train',
            eval_: str = 'validation', test: str = 'test',
            build_if_missing: bool = False) -> ml_collections.ConfigDict:
  """Where a stage's data lives: a TFDS builder (and config) and its splits.

  Empty `data_dir` and `prepared_with` take the experiment's
  `config.dataset` values (`dataset_defaults`).
  """
  return ml_collections.ConfigDict(dict(
      name=name, builder_config=builder_config, data_dir='',
      prepared_with='', train_split=train, eval_split=eval_, test_split=test,
      build_if_missing=build_if_missing))


def dataset_defaults() -> ml_collections.ConfigDict:
  """`config.dataset`: how every stage finds its prepared records.

  `data_dir`: where `prepare --data_dir` wrote them ('' = $TFDS_DATA_DIR or
  ~/tensorflow_datasets). `prepared_with`: the face options `prepare` was
  given, as it added them to the builder config's name (`prepare
  --image_size=112` writes `default-image_size_112`: pass
  `--config.dataset.prepared_with=image_size_112`); '' = the builder
  config's own defaults. Every stage's dataset section inherits both unless
  it sets its own (`--config.STAGE.dataset.data_dir=...`, or a full
  `--config.STAGE.dataset.builder_config=NAME`).
  """
  return ml_collections.ConfigDict(dict(data_dir='', prepared_with=''))


def train_stage(task: str, data: ml_collections.ConfigDict, *, loss: str = '',
                best_metric: str = '', best_mode: str = 'max',
                init_from: str = '', init_keep: str = 'trunk,fc,rnn',
                freeze: str = '', augment: bool = True,
                rare_window_repeats: int = 1, sampler: str = 'shuffle',
                sampler_targets: str = '', on_nonfinite: str = 'stop',
                grad_accum_steps: int = 1) -> ml_collections.ConfigDict:
  """A `train` stage. Empty `loss` / `best_metric` take the task's defaults.

  `on_nonfinite`: a step with a NaN / inf loss or gradient stops the run
  with an error naming the step and its videos, before that state is saved
  ('stop'), or is skipped, leaving the state as it was ('skip').
  `grad_accum_steps` k: each step's batch runs as k micro-batches of
  batch_size / k windows and their gradients are averaged (the memory of a
  k-times smaller batch; the rules are in `affect_jax.train.train_step`).

  `sampler` (affect_jax.samplers): 'shuffle', 'va_quadrants' (kollias2019;
  `sampler_targets` = the four quadrant shares, default 43/24/19/14 %) or
  'distinct_videos' (affect4k: each batch's windows from different videos).
  """
  c = ml_collections.ConfigDict(dict(
      kind='train', task=task, loss=loss, dataset=data,
      init_from=init_from, init_keep=init_keep, freeze=freeze,
      augment=augment, rare_window_repeats=rare_window_repeats,
      sampler=sampler, sampler_targets=sampler_targets,
      best_metric=best_metric, best_mode=best_mode,
      on_nonfinite=on_nonfinite, grad_accum_steps=grad_accum_steps))
  # Unset (None) keys take the experiment's top-level value.
  for key, kind in (('seed', _INT), ('num_train_steps', _INT),
                    ('num_epochs', _FLOAT), ('learning_rate', _FLOAT),
                    ('schedule', _STR), ('warmup_steps', _INT),
                    ('decay_steps', _INT), ('decay_rate', _FLOAT),
                    ('eval_every_steps', _INT), ('eval_every_epochs', _FLOAT),
                    ('checkpoint_every_steps', _INT),
                    ('checkpoint_every_epochs', _FLOAT),
                    ('early_stopping_patience', _INT)):
    c[key] = config_dict.placeholder(kind)
  return c


def test_stage(checkpoint_from: str, data: ml_collections.ConfigDict, *,
               splits: str = 'test', plots: bool = True, aggregate: str = '',
               protocol: str = '') -> ml_collections.ConfigDict:
  """A `test` stage: scores `checkpoint_from` on each of `splits` (comma list).

  The task, model and input settings come from the checkpoint itself.
  `aggregate='clip'` also scores one class per clip (AFEW, kollias2019).
  `protocol='abaw'` adds the Aff-Wild2 challenge's score (`abaw_score`:
  P_VA or P_EXPR, affect_jax.abaw); '' = the task's metrics only.
  """
  return ml_collections.ConfigDict(dict(
      kind='test', checkpoint_from=checkpoint_from, dataset=data,
      splits=splits, plots=plots, aggregate=aggregate, protocol=protocol))


def cv_stage(train: ml_collections.ConfigDict, *, folds: str = '5',
             plots: bool = True) -> ml_collections.ConfigDict:
  """A `cv` stage: K-fold subject-independent cross validation.

  `train` is a train stage section. `folds`: a number K (its
  `dataset.train_split` is cut into K subject-disjoint folds) or the
  dataset's fold splits ('fold_0,fold_1,...', as AFEW-VA is prepared).
  Fold k trains on the others but one, keeps the best checkpoint on fold
  k+1 and is tested on fold k; results per fold, mean and std, pooled
  (affect_jax.cross_validation).
  """
  return ml_collections.ConfigDict(dict(kind='cv', train=train, folds=folds,
                                        plots=plots))


def cross_test_stage(checkpoints: str, datasets: ml_collections.ConfigDict, *,
                     plots: bool = False) -> ml_collections.ConfigDict:
  """A `cross_test` stage: every model of `checkpoints` on every dataset.

  `checkpoints`: comma list of 'stage:NAME' or paths; `datasets`: a section
  of named dataset sections, each scored on its `test_split`. One table of
  all (trained on, tested on) pairs (the affect4k thesis' cross-database
  evaluation).
  """
  return ml_collections.ConfigDict(dict(
      kind='cross_test', checkpoints=checkpoints, datasets=datasets,
      plots=plots))


def postprocess_stage(predictions_from: str, *, fit_split: str = 'validation',
                      apply_split: str = 'test',
                      steps: str = 'median,centre,scale,shift',
                      median_min_s: float = 0.04, median_max_s: float = 20.0,
                      shift_min_s: float = 0.04, shift_max_s: float = 10.0,
                      grid_size: int = 40) -> ml_collections.ConfigDict:
  """A `postprocess` stage (tzirakis2019's chain, affect_jax.postprocess)."""
  return ml_collections.ConfigDict(dict(
      kind='postprocess', predictions_from=predictions_from,
      fit_split=fit_split, apply_split=apply_split, steps=steps,
      median_min_s=median_min_s, median_max_s=median_max_s,
      shift_min_s=shift_min_s, shift_max_s=shift_max_s, grid_size=grid_size))


def input_section(**overrides) -> ml_collections.ConfigDict:
  """Windows, crops, augmentation, normalisation and loader threads."""
  c = ml_collections.ConfigDict(dict(
      window=150, train_stride=75, image_size=150, resize_size=170,
      brightness_delta=0.125, saturation_range=(0.5, 1.5),
      normalization='imagenet', num_threads=2, prefetch_batches=4,
      num_workers=0,
      # Training batches copied to the devices ahead of the step using them.
      device_prefetch=2,
      # Evaluation: a still image (a one-frame video) is repeated over the
      # window and its last step reported (affect4k thesis).
      repeat_stills=True,
      # Frames where the builder found no face are left out of the training
      # loss (they are still predicted and scored in evaluation).
      train_without_face=False))
  c.update(overrides)
  return c


def experiment(name: str, stages: str) -> ml_collections.ConfigDict:
  """The top-level section with every key at its default."""
  c = ml_collections.ConfigDict()
  c.name = name
  c.seed = 0
  c.stages = stages
  c.batch_size = 2
  c.log_every_steps = 50
  # Defaults every train stage inherits unless it sets its own.
  c.num_train_steps = 100_000
  c.num_epochs = config_dict.placeholder(float)  # Overrides num_train_steps.
  c.learning_rate = 4e-5
  c.schedule = 'constant'
  c.warmup_steps = 0
  c.decay_steps = 400
  c.decay_rate = 0.97
  c.eval_every_steps = 2_000
  c.eval_every_epochs = config_dict.placeholder(float)  # Overrides the above.
  c.checkpoint_every_steps = 1_000
  c.checkpoint_every_epochs = config_dict.placeholder(float)  # Overrides.
  c.early_stopping_patience = 0  # Evaluations without gain; 0 = never stop.
  c.model = ml_collections.ConfigDict(dict(arch='resnet50_lstm'))
  c.input = input_section()
  # Where every stage's prepared records are (stages may override).
  c.dataset = dataset_defaults()
  # Device mesh of the train stages: the batch is split over `data`
  # (-1 = every device / model); `model` > 1 splits the dense and recurrent
  # kernels of at least `min_sharded_size` elements over that many devices
  # (docs/cluster.md; the default is inference.MIN_SHARDED_SIZE).
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1,
                                          min_sharded_size=2 ** 16))
  return c


# ------------------------------------------------------------- validation ---

_TOP_KEYS = set(experiment('', '').keys())
_SECTION_KEYS = {
    'train': set(train_stage('va', dataset('x')).keys()),
    'test': set(test_stage('', dataset('x')).keys()),
    'postprocess': set(postprocess_stage('').keys()),
    'cv': set(cv_stage(train_stage('va', dataset('x'))).keys()),
    'cross_test': set(cross_test_stage('', ml_collections.ConfigDict()).keys()),
}
_DATASET_KEYS = set(dataset('x').keys())
_INPUT_KEYS = set(input_section().keys())
_MESH_KEYS = {'data', 'model', 'min_sharded_size'}
_DATASET_DEFAULT_KEYS = set(dataset_defaults().keys())


# Keys that by design change no value a stage computes, with the reason:
# dotted paths as `key_paths` names them ('<kind>.KEY' is that key in a stage
# section of that kind; '*' any dataset name). Every other key of the schema
# must change what its stage computes (the first batches, the parameter
# tree, the optimizer update, the loss, the evaluation output or the files
# written): tests/test_key_reach.py checks both, key by key.
INERT = {
    'name': 'the experiment\'s label: plot titles and the run record only',
    'input.num_threads': 'loader threads: the same batches in the same '
                         'order, by design (each batch is a function of its '
                         'step)',
    'input.prefetch_batches': 'how many batches the loader reads ahead: the '
                              'same batches',
    'input.num_workers': 'loader processes: the same batches (each batch is '
                         'a function of its step)',
    'input.device_prefetch': 'batches copied to the devices ahead of their '
                             'step: the same batches and steps',
    'mesh.data': 'how the batch is split over devices: the same values on '
                 'any mesh (tests/test_distributed.py)',
    'mesh.model': 'how large kernels are split over devices: the same '
                  'values (tests/test_distributed.py)',
    'mesh.min_sharded_size': 'which kernels a model axis splits: the same '
                             'values',
    # config.model: the network's arguments (affect_jax.models.build).
    'model.unroll': 'RNN time steps one loop iteration runs: speed only, '
                    'the same values',
    'train.dataset.test_split': 'a train stage reads train_split and '
                                'eval_split; the test stage names its splits',
    'test.dataset.train_split': 'a test stage scores its `splits`',
    'test.dataset.eval_split': 'a test stage scores its `splits`',
    'test.dataset.test_split': 'a test stage scores its `splits` (set '
                               'splits=..., not dataset.test_split)',
    'cv.train.dataset.eval_split': 'each fold validates on the next fold',
    'cv.train.dataset.test_split': 'each fold is tested on its own fold',
    'cross_test.datasets.*.train_split': 'cross_test scores each dataset\'s '
                                         'test_split',
    'cross_test.datasets.*.eval_split': 'cross_test scores each dataset\'s '
                                        'test_split',
}


def key_paths() -> list[str]:
  """Every key of the schema as a dotted path (the names `INERT` uses).

  'KEY' (top level), 'input.KEY', 'mesh.KEY', 'dataset.KEY' (what every
  stage inherits), '<kind>.KEY' (a stage section of that kind),
  '<kind>.dataset.KEY', 'cv.train.KEY', 'cv.train.dataset.KEY' and
  'cross_test.datasets.*.KEY'. Sections are listed by their keys, and
  `config.model` not at all: its keys are the arguments of the network
  (`affect_jax.models.build`).
  """
  sections = {'model', 'input', 'mesh', 'dataset'}
  out = sorted(_TOP_KEYS - sections)
  for prefix, keys in (('input', _INPUT_KEYS), ('mesh', _MESH_KEYS),
                       ('dataset', _DATASET_DEFAULT_KEYS)):
    out += [f'{prefix}.{k}' for k in sorted(keys)]

  def section(prefix, keys):
    for k in sorted(keys):
      if k == 'dataset':
        out.extend(f'{prefix}.dataset.{d}' for d in sorted(_DATASET_KEYS))
      elif k == 'datasets':
        out.extend(f'{prefix}.datasets.*.{d}' for d in sorted(_DATASET_KEYS))
      elif k == 'train' and prefix == 'cv':
        section('cv.train', _SECTION_KEYS['train'])
      else:
        out.append(f'{prefix}.{k}')

  for kind in sorted(_SECTION_KEYS):
    section(kind, _SECTION_KEYS[kind])
  return out


class ConfigError(ValueError):
  """A config key that is not in the schema (a typo, or a wrong section)."""


def _unknown(where: str, got, allowed) -> None:
  bad = sorted(set(got) - set(allowed))
  if not bad:
    return
  hints = []
  for key in bad:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hints.append(f'{key!r}' + (f' (did you mean {close[0]!r}?)' if close
                               else ''))
  raise ConfigError(
      f'Unknown config key(s) in {where}: {", ".join(hints)}. Valid keys: '
      f'{", ".join(sorted(allowed))}.')


def stage_names(config) -> list[str]:
  return [s.strip() for s in str(config.stages).split(',') if s.strip()]


def validate(config) -> None:
  """Raises ConfigError for any key outside the schema, naming where it is."""
  sections = {k for k in config.keys()
              if isinstance(config[k], ml_collections.ConfigDict) and
              'kind' in config[k]}
  _unknown('the top level', set(config.keys()) - sections, _TOP_KEYS)
  _unknown('config.input', config.input.keys(), _INPUT_KEYS)
  if 'mesh' in config:
    _unknown('config.mesh', config.mesh.keys(), _MESH_KEYS)
  if 'dataset' in config:
    _unknown('config.dataset (what every stage inherits)',
             config.dataset.keys(), _DATASET_DEFAULT_KEYS)
  for name in stage_names(config):
    if name not in sections:
      raise ConfigError(
          f'config.stages names {name!r} but the config has no such stage '
          f'section; stage sections: {sorted(sections)}.')
  for name in sorted(sections):
    kind = config[name].kind
    if kind not in _SECTION_KEYS:
      raise ConfigError(f'config.{name}.kind={kind!r}; use one of '
                        f'{sorted(_SECTION_KEYS)}.')
    _unknown(f'config.{name} (a {kind} stage)', config[name].keys(),
             _SECTION_KEYS[kind])
    if 'dataset' in config[name] and config[name].dataset is not None:
      _unknown(f'config.{name}.dataset', config[name].dataset.keys(),
               _DATASET_KEYS)
    if kind == 'cv':
      _unknown(f'config.{name}.train (a train section)',
               config[name].train.keys(), _SECTION_KEYS['train'])
      if config[name].train.get('kind', 'train') != 'train':
        raise ConfigError(
            f'config.{name}.train.kind={config[name].train.kind!r}: the '
            "section a cv stage trains each fold with is a train section; "
            "set kind='train' (or leave it out).")
      _unknown(f'config.{name}.train.dataset',
               config[name].train.dataset.keys(), _DATASET_KEYS)
    if kind == 'cross_test':
      for key in config[name].datasets.keys():
        _unknown(f'config.{name}.datasets.{key}',
                 config[name].datasets[key].keys(), _DATASET_KEYS)


def resolve_stage(config, name: str) -> ml_collections.ConfigDict:
  """The stage's section with unset keys filled from the top level.

  A cv stage's nested train section is resolved the same way.
  """
  cfg = ml_collections.ConfigDict(config[name].to_dict())
  for section in (cfg, cfg.get('train')):
    if not isinstance(section, ml_collections.ConfigDict):
      continue
    for key in INHERITED:
      if key in section and section[key] is None:
        section[key] = config.get(key)
  defaults = config.get('dataset') or dataset_defaults()
  for data in dataset_sections(cfg):
    for key in ('data_dir', 'prepared_with'):
      if not data.get(key):
        data[key] = defaults.get(key, '')
  return cfg


def dataset_sections(cfg) -> list[ml_collections.ConfigDict]:
  """Every dataset section of a stage section (cv's train, cross_test's)."""
  out = []
  for section in (cfg, cfg.get('train')):
    if isinstance(section, ml_collections.ConfigDict) and isinstance(
        section.get('dataset'), ml_collections.ConfigDict):
      out.append(section.dataset)
  datasets = cfg.get('datasets')
  if isinstance(datasets, ml_collections.ConfigDict):
    out.extend(datasets[k] for k in datasets.keys())
  return out


def synthetic(builder_config: str) -> ml_collections.ConfigDict:
  """A named config of the embedded synthetic dataset, built on first use."""
  return dataset('synthetic_faces', builder_config, build_if_missing=True)


def train_and_test_on(c: ml_collections.ConfigDict,
                      data: ml_collections.ConfigDict, *,
                      splits: str = 'validation,test', steps: int = 0,
                      eval_every: int = 0) -> None:
  """Points `c.train` at `data`, and `c.test` at the same dataset's `splits`
  with the train stage's best checkpoint; optionally a fixed step budget
  (`steps`, evaluating and checkpointing every `eval_every`, no early
  stopping)."""
  c.train.dataset = data
  c.test = test_stage('stage:train', copy(data), splits=splits)
  if steps:
    c.num_train_steps = steps
    c.eval_every_steps = eval_every
    c.checkpoint_every_steps = eval_every
    c.early_stopping_patience = 0


def copy(section: Any) -> ml_collections.ConfigDict:
  """A deep copy of a section (so variants can change one stage's dataset).

  Unset keys stay typed placeholders (`to_dict()` would make them plain
  None, which `--config.STAGE.KEY=VALUE` on the command line cannot set).
  """
  return _copy.deepcopy(section)


def required(what: str) -> str:
  """A path the user must give on the command line (clear error if not)."""
  return f'REQUIRED: {what}'


def synthetic_resnet_lstm(c: ml_collections.ConfigDict) -> None:
  """The ResNet-50 + LSTM experiments at a size for 2 CPU cores.

  Same 3/4/6/3 layout at width 8, 48x48 crops (resize 54 -> crop 48),
  windows of 16 frames, batch 8, Adam 1e-3.
  """
  c.batch_size = 8
  c.log_every_steps = 25
  c.learning_rate = 1e-3
  c.model.width = 8
  c.model.zero_init_residual = True
  c.input.window = 16
  c.input.train_stride = 8
  c.input.image_size = 48
  c.input.resize_size = 54
  c.input.num_threads = 2


def resnet50_lstm() -> ml_collections.ConfigDict:
  """tzirakis2019's network: ResNet-50 -> 2-layer LSTM 256 -> FC."""
  return ml_collections.ConfigDict(dict(
      arch='resnet50_lstm', width=64, stage_sizes=(3, 4, 6, 3),
      lstm_hidden=256, lstm_layers=2, dtype='float32', unroll=1,
      zero_init_residual=False))
