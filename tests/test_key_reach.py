"""Every config key reaches what it configures (issue 32, item 2).

The keys are the schema's own list (`configs.common.key_paths`) and the
model keys of every network the repository's configs use, so a key added
to the schema or to a config without a probe here fails
`test_every_key_has_a_probe`. For each key, `test_key_reaches` runs the
real stage code twice on the tiny synthetic data, with the key at its
default and at another value, and asserts that a named observable differs:

  batches   the first batches the train step receives (a spy on
            `train.Stage.put`), as tests/test_train_data.py watches them;
  params    the parameter tree the train stage starts from (a spy on
            `train.Stage.create_state`);
  update    the parameters after three updates of the optimizer the stage
            built (`state.tx`) with the same gradients;
  steps     the loss and parameters after the first train steps (a spy on
            `train.Stage.train_step`);
  written   what the stages return and write: results, summaries, the
            metric rows and the files of each stage folder;
  tree / init / forward   for model keys: the network `inference.
            build_model` makes of `config.model`, as the train stage does:
            its parameter shapes, initial values, or training-mode output.

A run that ends in an error is an outcome too: a location key (data_dir,
prepared_with, ...) set to a folder without that dataset must make the
stage fail naming the value, where the default finds it. Keys the schema
declares inert (`common.INERT`, with the reason) must not change anything:
where it is cheap this test checks that they do not, and that the library
reads them at all. Spies stop a run (`_Enough`) as soon as they have seen
what the probe needs, so most probes cost no compilation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import importlib
import os
import re
from typing import Any, Callable
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from affect_jax import evaluate
from affect_jax import experiment
from affect_jax import features as F
from affect_jax import inference
from affect_jax import input_pipeline
from affect_jax import tasks
from affect_jax import train
from affect_jax.errors import AffectJaxError
from configs import common

from tests import conftest

pytestmark = pytest.mark.slow

KINDS = ('train', 'test', 'postprocess', 'cv', 'cross_test')
# Which section of the probe configs holds a stage of each kind.
_SECTION = {'train': 'finetune', 'test': 'test', 'postprocess': 'postprocess',
            'cv': 'cv', 'cross_test': 'cross_test'}
_CROSS_DATASET = 'tiny'


class _Enough(Exception):
  """A spy has seen what its probe needs: the run stops here."""


# ----------------------------------------------------------- the probes ---


@dataclasses.dataclass(frozen=True)
class Probe:
  """A non-default `value` and where its effect shows.

  `kind`: the stage kind whose run is observed (default: the path's own);
  `context`: settings of both runs (config paths relative to the
  experiment) in which the key matters, e.g. sampler_targets under
  sampler='va_quadrants'; `data`: a change of the data both runs read
  ('no_face': half the frames of each batch without a face; 'stills':
  every video one frame long).
  """
  value: Any
  observe: str
  kind: str = ''
  context: tuple[tuple[str, Any], ...] = ()
  data: str = ''


def P(value, observe, kind='', data='', **context):  # pylint: disable=invalid-name
  return Probe(value, observe, kind,
               tuple((k.replace('__', '.'), v) for k, v in context.items()),
               data)


# Placeholders resolved when a probe runs (folders of the session's run).
PRETRAIN, FINETUNE, TEST = '<pretrain>', '<finetune>', '<test>'
EMPTY = '<empty>'  # A fresh folder without any prepared dataset.
FT = 'finetune'

_LOCATION = {
    # Another prepared-or-not dataset: the stage must look for it.
    'name': P('aff_wild', 'outcome'),
    'builder_config': P('tiny_nonexistent', 'outcome'),
    'data_dir': P(EMPTY, 'outcome'),
    'prepared_with': P('image_size_99', 'outcome'),
}

PROBES: dict[str, Probe] = {
    # Top level.
    'batch_size': P(4, 'batches', 'train'),
    'log_every_steps': P(2, 'written', 'train'),
    'stages': P('test,postprocess', 'written', 'test',
                test__splits='validation,test',
                postprocess__predictions_from='stage:test'),
    # $TFDS_DATA_DIR (the default's fallback) holds no dataset here.
    'dataset.data_dir': P('<tiny>', 'outcome', 'train', data='no_env',
                          finetune__dataset__data_dir=''),
    'dataset.prepared_with': P('image_size_99', 'outcome', 'train'),
    # config.input.
    'input.window': P(6, 'batches', 'train'),
    'input.train_stride': P(3, 'batches', 'train'),
    'input.image_size': P(24, 'batches', 'train'),
    'input.resize_size': P(48, 'batches', 'train'),
    'input.brightness_delta': P(0.6, 'batches', 'train'),
    'input.saturation_range': P((0.1, 3.0), 'batches', 'train'),
    'input.normalization': P('symmetric', 'steps', 'train'),
    'input.train_without_face': P(True, 'steps', 'train', data='no_face'),
    'input.repeat_stills': P(False, 'written', 'test', data='stills'),
    # A train stage.
    'train.kind': P('test', 'outcome'),
    'train.task': P('emotions', 'params', finetune__loss='',
                    finetune__best_metric=''),
    'train.loss': P('mse', 'steps'),
    'train.init_from': P(PRETRAIN, 'params'),
    'train.init_keep': P('trunk', 'params', finetune__init_from=PRETRAIN),
    'train.freeze': P('trunk', 'update'),
    'train.augment': P(False, 'batches'),
    'train.rare_window_repeats': P(4, 'batches'),
    'train.sampler': P('va_quadrants', 'batches'),
    'train.sampler_targets': P('0.1,0.2,0.3,0.4', 'batches',
                               finetune__sampler='va_quadrants'),
    'train.best_metric': P('ccc_valence', 'written'),
    'train.best_mode': P('min', 'written'),
    # A learning rate that overflows the activations from step 2.
    'train.on_nonfinite': P('skip', 'steps', finetune__learning_rate=1e30),
    'train.grad_accum_steps': P(2, 'steps'),
    'train.seed': P(7, 'batches'),
    'train.num_train_steps': P(2, 'written'),
    'train.num_epochs': P(0.05, 'written'),  # 44 steps an epoch: 3 steps.
    'train.learning_rate': P(1e-2, 'update'),
    'train.schedule': P('cosine', 'update'),
    'train.warmup_steps': P(2, 'update'),
    'train.decay_steps': P(1, 'update', finetune__schedule='exponential'),
    'train.decay_rate': P(0.5, 'update', finetune__schedule='exponential',
                          finetune__decay_steps=1),
    'train.eval_every_steps': P(1, 'written'),
    'train.eval_every_epochs': P(0.03, 'written'),  # Every step.
    'train.checkpoint_every_steps': P(3, 'written'),
    'train.checkpoint_every_epochs': P(0.07, 'written'),  # Every 3 steps.
    # A metric that never improves (the frame count) stops it at once.
    'train.early_stopping_patience': P(1, 'written',
                                       finetune__best_metric='num_frames',
                                       finetune__eval_every_steps=1),
    'train.dataset.train_split': P('validation', 'batches'),
    'train.dataset.eval_split': P('test', 'written'),
    'train.dataset.build_if_missing': P(True, 'outcome',
                                        finetune__dataset__data_dir=EMPTY),
    # A test stage.
    'test.kind': P('train', 'outcome'),
    'test.checkpoint_from': P(PRETRAIN, 'written'),
    'test.splits': P('test', 'written'),
    'test.plots': P(True, 'written'),
    'test.aggregate': P('clip', 'written', test__checkpoint_from=PRETRAIN),
    'test.protocol': P('abaw', 'written'),
    'test.dataset.build_if_missing': P(True, 'outcome',
                                       test__dataset__data_dir=EMPTY),
    # A postprocess stage (on predictions that a median filter and a time
    # shift improve, so that their search ranges matter).
    'postprocess.kind': P('test', 'outcome'),
    'postprocess.predictions_from': P(TEST, 'written'),
    'postprocess.fit_split': P('test', 'written'),
    'postprocess.apply_split': P('validation', 'written'),
    'postprocess.steps': P('median', 'written'),
    'postprocess.median_min_s': P(3.0, 'written'),
    'postprocess.median_max_s': P(0.2, 'written'),
    'postprocess.shift_min_s': P(0.5, 'written', postprocess__steps='shift'),
    'postprocess.shift_max_s': P(0.1, 'written', postprocess__steps='shift'),
    'postprocess.grid_size': P(3, 'written'),
    # A cv stage.
    'cv.kind': P('train', 'outcome'),
    'cv.folds': P('4', 'section'),
    'cv.plots': P(True, 'first_fold'),
    'cv.train.kind': P('test', 'outcome'),
    'cv.train.dataset.train_split': P('train+validation', 'section'),
    'cv.train.dataset.build_if_missing': P(True, 'outcome',
                                           cv__train__dataset__data_dir=EMPTY),
    # A cross_test stage.
    'cross_test.kind': P('test', 'outcome'),
    'cross_test.checkpoints': P(PRETRAIN, 'written'),
    'cross_test.plots': P(True, 'written'),
    'cross_test.datasets.*.test_split': P('validation', 'written'),
    'cross_test.datasets.*.build_if_missing': P(
        True, 'outcome', cross_test__datasets__tiny__data_dir=EMPTY),
}
for _prefix in ('train.dataset', 'test.dataset', 'cv.train.dataset',
                'cross_test.datasets.*'):
  for _key, _probe in _LOCATION.items():
    PROBES[f'{_prefix}.{_key}'] = _probe
# A train key the experiment's top level sets for every train stage (the
# stage's own unset): the value must reach the section the train stage
# trains with, whose key is probed above.
for _key in common.INHERITED:
  _p = PROBES[f'train.{_key}']
  PROBES[_key] = dataclasses.replace(_p, kind='train', observe='section',
                                     context=_p.context + (('<inherit>',
                                                            _key),))

# Values for the inert keys' check that nothing changes (where it is cheap).
INERT_VALUES: dict[str, Probe] = {
    'input.num_threads': P(3, 'batches', 'train'),
    'input.prefetch_batches': P(1, 'batches', 'train'),
    'input.device_prefetch': P(0, 'batches', 'train'),
    'train.dataset.test_split': P('validation', 'batches'),
    'test.dataset.train_split': P('validation', 'written'),
    'test.dataset.eval_split': P('test', 'written'),
    'test.dataset.test_split': P('validation', 'written'),
    'cross_test.datasets.*.train_split': P('validation', 'written'),
    'cross_test.datasets.*.eval_split': P('test', 'written'),
}


def _kind(path: str, probe: Probe) -> str:
  return probe.kind or path.split('.')[0]


def _config_path(path: str) -> str:
  """A key path of the schema -> its place in the probe configs."""
  head, _, rest = path.partition('.')
  if head in _SECTION:
    return f'{_SECTION[head]}.{rest}'.replace('.*.', f'.{_CROSS_DATASET}.')
  return path


def _cv_train_passes_through(path: str) -> bool:
  """cv.train.KEY (not its dataset or kind) is the train stage's KEY: the cv
  stage hands its whole train section to `train.train`
  (`test_cv_hands_its_train_section_to_train`)."""
  return (path.startswith('cv.train.') and
          not path.startswith('cv.train.dataset.') and path != 'cv.train.kind')


# ------------------------------------------------- running the stage code ---


@pytest.fixture(scope='module')
def world(tiny_run, tiny_data_dir, tmp_path_factory):
  """What the probes read: the session's run and the placeholders."""
  root, _, _ = tiny_run
  tmp = tmp_path_factory.mktemp('key_reach')
  folders = {PRETRAIN: os.path.join(root, 'pretrain'),
             FINETUNE: os.path.join(root, 'finetune'),
             TEST: os.path.join(root, 'test'), '<tiny>': tiny_data_dir}
  return _World(tmp=str(tmp), data_dir=tiny_data_dir, folders=folders,
                shifted=_shifted_predictions(folders[TEST],
                                             str(tmp / 'shifted')))


def _shifted_predictions(test_dir: str, out: str) -> str:
  """A test stage folder whose predictions are the labels 3 frames early
  with frame-to-frame noise: median filtering and a delay both help."""
  names = None
  for split in ('validation', 'test'):
    table, names = evaluate.read_predictions(
        os.path.join(test_dir, 'predictions', f'{split}.csv'))
    outputs = np.array(table.outputs)
    for vid in table.videos():
      rows = table.rows_of(vid)
      gold = np.nan_to_num(table.targets[rows])
      early = np.concatenate([gold[3:], gold[-1:].repeat(3, 0)])
      noise = 0.4 * (np.arange(len(rows)) % 2 * 2 - 1)[:, None]
      outputs[rows] = early + noise
    evaluate.write_predictions(
        os.path.join(out, 'predictions'), split,
        dataclasses.replace(table, outputs=outputs),
        tasks.get('va').columns(names))
  return out


@dataclasses.dataclass
class _World:
  tmp: str
  data_dir: str
  folders: dict[str, str]
  shifted: str
  runs: int = 0
  cache: dict[str, Any] = dataclasses.field(default_factory=dict)

  def resolve(self, value, path: str):
    """A placeholder's folder; EMPTY is one folder for each probed key."""
    if value == EMPTY:
      folder = os.path.join(self.tmp, 'empty', path.replace('*', 'any'))
      os.makedirs(folder, exist_ok=True)
      return folder
    return self.folders.get(value, value) if isinstance(value, str) else value

  def workdir(self) -> str:
    self.runs += 1
    return os.path.join(self.tmp, f'run_{self.runs}')


def base_config(kind: str, world: _World) -> ml_collections.ConfigDict:
  """The session's experiment (conftest.tiny_config) with one stage of
  `kind` to run, reading the session run's checkpoints and predictions."""
  c = conftest.tiny_config(world.data_dir)
  c.finetune.init_from = ''
  c.test.checkpoint_from = world.folders[FINETUNE]
  c.test.splits = 'validation'
  c.test.plots = False
  c.postprocess.predictions_from = world.shifted
  # 4 training subjects: each fold trains on 1, validates and tests on 1.
  c.cv = common.cv_stage(common.copy(c.finetune), folds='3', plots=False)
  for key in ('num_train_steps', 'eval_every_steps',
              'checkpoint_every_steps'):
    c.cv.train[key] = 1
  data = common.copy(c.test.dataset)
  c.cross_test = common.cross_test_stage(
      world.folders[FINETUNE], ml_collections.ConfigDict({
          _CROSS_DATASET: data}))
  c.stages = _SECTION[kind]
  return c


def _set(config, path: str, value) -> None:
  node = config
  *parents, last = path.split('.')
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[last] = value


def probe_config(path: str, probe: Probe, world: _World, value=None
                 ) -> ml_collections.ConfigDict:
  """The probe's context; with `value`, the key set to it."""
  c = base_config(_kind(path, probe), world)
  inherit = None
  for key, v in probe.context:
    if key == '<inherit>':
      inherit = v
    else:
      _set(c, key, world.resolve(v, path))
  if inherit is not None:  # Move the stage's value to the top level.
    _set(c, inherit, common.resolve_stage(c, FT)[inherit])
    _set(c, f'{FT}.{inherit}', None)
  if value is not None:
    _set(c, _config_path(path), world.resolve(value, path))
  return c


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def _with_data(data: str, world: _World):
  """Patches what the stages read for a probe's `data` setting."""
  if data == 'no_env':
    return mock.patch.dict(os.environ, {
        'TFDS_DATA_DIR': world.resolve(EMPTY, 'TFDS_DATA_DIR')})
  if data == 'stills':
    real = input_pipeline.load_split

    def stills(dataset_cfg, split):
      s = real(dataset_cfg, split)
      return dataclasses.replace(s, lengths=np.ones_like(s.lengths))

    return mock.patch.object(input_pipeline, 'load_split', stills)
  return mock.patch.dict({})  # Nothing.


def _no_face(batch):
  """Half the frames of a host batch without a face."""
  has_face = np.array(batch[F.HAS_FACE])
  has_face[:, ::2] = 0.0
  return dict(batch, **{F.HAS_FACE: has_face})


def observe_train(config, workdir: str, what: str, data: str = ''):
  """Runs the config's train stage as far as `what` needs; its digest."""
  seen: dict[str, Any] = {'batches': [], 'loss': []}
  real_put = train.Stage.put
  real_create = train.Stage.create_state
  real_step = train.Stage.train_step

  def put(self, batch):
    if F.VIDEO_INDEX in batch:  # A host batch, not one put already.
      if data == 'no_face':
        batch = _no_face(batch)
      seen['batches'].append({k: np.asarray(v) for k, v in batch.items()})
      if what in ('batches', 'params', 'update') and len(seen['batches']) == 2:
        raise _Enough
    return real_put(self, batch)

  def create_state(self, variables):
    state = real_create(self, variables)
    seen['params'] = _host(state.params)
    if what == 'update':
      params, opt = state.params, state.opt_state
      grads = jax.tree.map(jnp.ones_like, params)
      for _ in range(3):
        updates, opt = state.tx.update(grads, opt, params)
        params = optax.apply_updates(params, updates)
      seen['update'] = _host(params)
    return state

  def train_step(self, state, batch):
    state, m = real_step(self, state, batch)
    seen['loss'].append(float(m.compute()['loss']))
    if len(seen['loss']) == 3:
      seen['steps'] = {'loss': seen['loss'], 'params': _host(state.params)}
      raise _Enough
    return state, m

  _run_until(config, workdir,
             mock.patch.object(train.Stage, 'put', put),
             mock.patch.object(train.Stage, 'create_state', create_state),
             mock.patch.object(train.Stage, 'train_step', train_step))
  return seen[what]


def _run_until(config, workdir: str, *spies) -> None:
  """experiment.run with the spies installed, until one has seen enough."""
  with contextlib.ExitStack() as stack:
    for spy in spies:
      stack.enter_context(spy)
    try:
      experiment.run(config, workdir)
    except _Enough:
      pass


def observe_section(config, workdir: str) -> dict[str, Any]:
  """Runs the config's train (or cv) stage up to its first `train.train`
  call: the section it trains with, the videos of its splits, and what
  the stage wrote before (a cv stage's folds.json)."""
  seen = {}

  def spy(config_, cfg, workdir_, train_split, eval_split, **kwargs):
    del config_, kwargs
    seen.update(section=cfg.to_dict(), train=list(train_split.video_ids),
                eval=list(eval_split.video_ids))
    folds = os.path.join(os.path.dirname(workdir_), 'folds.json')
    if os.path.exists(folds):
      with open(folds) as f:
        seen['folds'] = f.read()
    raise _Enough

  _run_until(config, workdir, mock.patch.object(train, 'train', spy))
  return seen


def observe_first_fold(config, workdir: str) -> dict[str, Any]:
  """Runs a cv stage until its first fold is scored: what it wrote."""
  real = evaluate.score_split

  def spy(*args, **kwargs):
    real(*args, **kwargs)
    raise _Enough

  _run_until(config, workdir, mock.patch.object(evaluate, 'score_split', spy))
  return written(workdir, {name: {} for name in common.stage_names(config)})


_TIMING = ('train/steps_per_sec', 'train/frames_per_sec')


def written(workdir: str, results: dict[str, Any]) -> dict[str, Any]:
  """What the stages returned and wrote: results without timings, every
  file of each stage folder, the (step, metric) rows and their values."""
  out = {'results': {n: {k: v for k, v in r.items() if k != 'seconds'}
                     for n, r in results.items()}}
  for stage in results:
    folder = os.path.join(workdir, stage)
    files = []
    for dirpath, _, names in os.walk(folder):
      files += [os.path.relpath(os.path.join(dirpath, n), folder)
                for n in names
                if n != 'config.json' and not n.startswith('events.')]
    out[f'{stage}/files'] = sorted(files)
    for name in files:  # Results, summaries, predictions (not timings).
      if (name.endswith(('.csv', '.json', '.md')) and
          not name.startswith('checkpoints') and
          os.path.basename(name) not in ('metrics.csv', 'DONE.json')):
        with open(os.path.join(folder, name)) as f:
          out[f'{stage}/{name}'] = f.read()
    for csv_path in sorted(glob.glob(os.path.join(folder, '**', 'metrics.csv'),
                                     recursive=True)):
      with open(csv_path) as f:
        rows = [line.split(',')[:3] for line in f.read().splitlines()[1:]]
      out[csv_path[len(workdir):]] = [r if r[1] not in _TIMING else r[:2]
                                      for r in rows]
  return out


def observe(path: str, probe: Probe, world: _World, value=None):
  """The probe's observable of one run: ('ok', digest) or ('error', msg)."""
  config = probe_config(path, probe, world, value)
  key = repr((probe.observe, probe.data, config.to_dict()))
  if key in world.cache:
    return world.cache[key]
  workdir = world.workdir()
  try:
    with _with_data(probe.data, world):
      what = probe.observe
      if what == 'outcome' and _kind(path, probe) in ('train', 'cv'):
        what = 'section'  # As far as the training: it ran.
      if what == 'section':
        out = ('ok', observe_section(config, workdir))
      elif what == 'first_fold':
        out = ('ok', observe_first_fold(config, workdir))
      elif what in ('batches', 'params', 'update', 'steps'):
        out = ('ok', observe_train(config, workdir, what, probe.data))
      else:
        out = ('ok', written(workdir, experiment.run(config, workdir)))
  except AffectJaxError as e:
    out = ('error', str(e))
  world.cache[key] = out
  return out


def same(a, b) -> bool:
  """Exact equality of nested digests (NaN equals NaN)."""
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
  if isinstance(a, (np.ndarray, np.generic, float)) or isinstance(
      b, (np.ndarray, np.generic, float)):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        np.array_equal(a, b, equal_nan=a.dtype.kind in 'fc'))
  return a == b


# -------------------------------------------------------- the model keys ---

# The network families of the configs.
FAMILIES = ('affwildnet', '*_lstm', '*_gru', '*_frames', 'cnn_m')


def family(arch: str) -> str:
  if arch == 'affwildnet':
    return arch
  if arch.startswith('cnn_m'):
    return 'cnn_m'
  return '*' + arch[arch.rindex('_'):]


@functools.lru_cache(maxsize=None)
def config_models() -> dict[str, tuple[ml_collections.ConfigDict, int]]:
  """Each network the repository's configs use, at test size, once for
  each set of keys its configs give it: 'arch (file:variant)' ->
  (config.model, frame size), from the first variant of each."""
  out, seen = {}, set()
  for path in sorted(glob.glob(os.path.join(os.path.dirname(
      common.__file__), '*.py'))):
    name = os.path.basename(path)[:-3]
    module = importlib.import_module(f'configs.{name}')
    for variant in getattr(module, 'VARIANTS', ()):
      c = module.get_config(variant)
      keys = (c.model.arch, tuple(sorted(c.model.keys())))
      if keys not in seen:
        seen.add(keys)
        conftest.shrink_model(c)
        out[f'{c.model.arch} ({name}.py:{variant})'] = (c.model,
                                                         c.input.image_size)
  return out


def _other(current, options):
  return next(o for o in options if o != current)


# Model keys by name: a value from the current one, and where it shows:
# 'tree', the parameter shapes and dtypes; 'init', the computation that
# initialises them; 'forward', the computation of the training-mode output
# (with dropout). All three are traced, not compiled (jax.eval_shape,
# jax.make_jaxpr): a key that changes no traced operation, constant or
# dtype cannot change a value.
MODEL_PROBES: dict[str, tuple[Callable[[Any], Any], str]] = {
    'arch': (lambda a: _other(a, ('cnn_m_frames', 'vgg16_frames')), 'tree'),
    'width': (lambda w: 2 * w, 'tree'),
    'stage_sizes': (lambda s: (1, 1, 2, 1), 'tree'),
    'fc_features': (lambda f: _other(tuple(f or ()), ((8,), (16,))), 'tree'),
    'lstm_hidden': (lambda h: h + 4, 'tree'),
    'gru_hidden': (lambda h: h + 4, 'tree'),
    'lstm_layers': (lambda n: _other(n, (1, 2)), 'tree'),
    'gru_layers': (lambda n: _other(n, (1, 2)), 'tree'),
    'use_landmarks': (lambda u: not u, 'tree'),
    'peephole': (lambda p: not p, 'tree'),
    'trunk_arch': (lambda t: _other(t, ('resnet50', 'vgg16')), 'tree'),
    'dtype': (lambda d: _other(d, ('bfloat16', 'float32')), 'forward'),
    'zero_init_residual': (lambda z: not z, 'init'),
    'fc_dropout': (lambda r: _other(r, (0.5, 0.0)), 'forward'),
    'rnn_dropout': (lambda r: _other(r, (0.5, 0.0)), 'forward'),
}
# Model keys declared inert (common.INERT 'model.KEY'): unrolling changes
# the traced loop, not its values, so the check that nothing changes would
# need compiled values; it is not run here.
MODEL_INERT = ('unroll',)


def model_keys() -> list[tuple[str, str]]:
  """(network, key) pairs to probe: each key of each family once, on the
  first of the family's networks whose configs set it."""
  out, done = [], set()
  for label, (m, _) in config_models().items():
    for key in sorted(m.keys()):
      if (family(label.split()[0]), key) not in done:
        done.add((family(label.split()[0]), key))
        out.append((label, key))
  return out


def model_observable(model_cfg, size: int, level: str):
  """The network of `model_cfg` (as the train stage builds it, with
  `inference.build_model`) at `level` (MODEL_PROBES) on fixed frames."""
  key = (repr(sorted(model_cfg.to_dict().items())), size, level)
  if key not in _MODEL_CACHE:
    _MODEL_CACHE[key] = _model_observable(model_cfg, size, level)
  return _MODEL_CACHE[key]


_MODEL_CACHE: dict[tuple[str, int, str], Any] = {}


def _model_observable(model_cfg, size: int, level: str):
  try:
    model = inference.build_model(model_cfg, 2)
  except AffectJaxError as e:
    return ('error', str(e))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(1, 2, size, size, 3)), jnp.float32)
  landmarks = jnp.asarray(rng.uniform(size=(1, 2, F.NUM_LANDMARKS, 2)),
                          jnp.float32)
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
  init = functools.partial(model.init, landmarks=landmarks, train=False)

  def forward(variables):
    return model.apply(variables, x, landmarks=landmarks, train=True,
                       mutable=['batch_stats'],
                       rngs={'dropout': jax.random.PRNGKey(2)})[0]

  if level == 'tree':
    return ('ok', jax.tree.map(lambda s: (s.shape, str(s.dtype)),
                               jax.eval_shape(init, rngs, x)))
  if level == 'init':
    return ('ok', str(jax.make_jaxpr(init)(rngs, x)))
  variables = jax.eval_shape(init, rngs, x)
  return ('ok', str(jax.make_jaxpr(forward)(variables)))


# ---------------------------------------------------------------- tests ---


def _all_paths() -> list[str]:
  return common.key_paths()


def test_every_key_has_a_probe():
  paths = set(_all_paths())
  inert = set(common.INERT)
  model_inert = {k for k in inert if k.startswith('model.')}
  assert not (inert - model_inert) - paths, 'INERT names keys not in the schema'
  assert not inert & set(PROBES), 'a key is both probed and declared inert'
  assert not set(PROBES) - paths, 'PROBES names keys not in the schema'
  missing = sorted(p for p in paths - set(PROBES) - inert
                   if not _cv_train_passes_through(p))
  assert not missing, f'keys without a probe or an INERT entry: {missing}'
  for path in paths:
    if _cv_train_passes_through(path):
      assert f'train.{path[len("cv.train."):]}' in set(PROBES) | inert
  used = {key for m, _ in config_models().values() for key in m.keys()}
  unprobed = sorted(used - set(MODEL_PROBES) - set(MODEL_INERT))
  assert not unprobed, f'model keys without a probe: {unprobed}'
  assert {f'model.{k}' for k in MODEL_INERT} == model_inert
  # The configs use every family.
  assert {family(label.split()[0]) for label in config_models()} == set(
      FAMILIES)


def _check_reaches(path, probe, world):
  default = observe(path, probe, world)
  changed = observe(path, probe, world, probe.value)
  assert default[0] != changed[0] or not same(default[1], changed[1]), (
      f'{path}={probe.value!r} changed nothing the stage computes '
      f'({probe.observe}): a dead key (make it reach the code, remove it, or '
      'declare it in configs.common.INERT with the reason)')
  for outcome, value in ((default, None), (changed, probe.value)):
    if outcome[0] == 'error' and value is not None:
      # The stage failed on the value: it must have read that value.
      assert str(world.resolve(value, path)) in outcome[1], outcome[1]
  return default, changed


@pytest.mark.parametrize('path', sorted(PROBES))
def test_key_reaches(path, world):
  probe = PROBES[path]
  default, changed = _check_reaches(path, probe, world)
  if probe.observe != 'outcome':
    assert default[0] == 'ok' or changed[0] == 'ok', (default, changed)


@pytest.mark.parametrize('arch,key', model_keys())
def test_model_key_reaches(arch, key):
  model_cfg, size = config_models()[arch]
  if key in MODEL_INERT:
    pytest.skip(f'model.{key}: {common.INERT[f"model.{key}"]}')
  make, level = MODEL_PROBES[key]
  changed_cfg = ml_collections.ConfigDict(model_cfg.to_dict())
  with changed_cfg.ignore_type():
    changed_cfg[key] = make(model_cfg[key])
  default = model_observable(model_cfg, size, level)
  changed = model_observable(changed_cfg, size, level)
  assert default[0] == 'ok', default
  assert default[0] != changed[0] or not same(default[1], changed[1]), (
      f'model.{key}={changed_cfg[key]!r} ({arch}) changed nothing: a dead '
      'model key')
  if changed[0] == 'error':
    assert key in changed[1] or str(changed_cfg[key]) in changed[1], changed


_SOURCES = None


def _library_source() -> str:
  global _SOURCES
  if _SOURCES is None:
    root = os.path.dirname(inference.__file__)
    _SOURCES = '\n'.join(
        open(p).read() for p in glob.glob(os.path.join(root, '**', '*.py'),
                                          recursive=True))
  return _SOURCES


@pytest.mark.parametrize('path', sorted(common.INERT))
def test_inert_key_is_read_and_changes_nothing(path, world):
  leaf = path.rsplit('.', 1)[-1]
  assert re.search(rf"[.'\"]{leaf}\b", _library_source()), (
      f'{path} is declared inert, and nothing in affect_jax/ reads it: '
      'remove it from the schema')
  probe = INERT_VALUES.get(path)
  if probe is None:
    return  # Not cheap to run here (processes, devices, a whole cv stage).
  default = observe(path, probe, world)
  changed = observe(path, probe, world, probe.value)
  assert default[0] == 'ok', default
  assert same(default, changed), (
      f'{path}={probe.value!r} changed {probe.observe}, but '
      'configs.common.INERT says it cannot')


def test_cv_hands_its_train_section_to_train(world):
  """So every train key probed above reaches a cv stage's folds too."""
  config = base_config('cv', world)
  seen = observe_section(config, world.workdir())
  resolved = common.resolve_stage(config, 'cv').train.to_dict()
  assert seen['section'] == resolved
