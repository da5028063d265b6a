"""Every stage's preconditions, checked before the first stage starts.

An hour of training must never end in a configuration error. Before any
stage runs, `check` goes through the stages that have not finished yet and
refuses, with one error naming the key and the fix:

  - a dataset that is not prepared (or prepared with other options), or
    lacks a split a stage reads (e.g. the AVEC 2016 RECOLA release has no
    `test` labels), labels for the stage's task, or landmarks for a model
    that fuses them;
  - an `init_from` / `checkpoint_from` / `predictions_from` / `checkpoints`
    source that is missing, names a stage that does not run before it, or
    (for `init_from`) holds weights that do not fit the model (naming the
    `init_keep` that would work);
  - a post-processing split that its test stage does not predict;
  - a workdir that cannot be written.
"""

from __future__ import annotations

import os
import tempfile

import jax
import jax.numpy as jnp

from affect_jax import abaw
from affect_jax import features as F
from affect_jax import input_pipeline
from affect_jax.errors import AffectJaxError
from configs import common


def check(config, workdir: str, names: list[str]) -> None:
  """Raises AffectJaxError for the first unmet precondition of any stage."""
  _writable(workdir)
  earlier: dict[str, object] = {}  # Stages that run (or ran) before.
  for name in names:
    cfg = common.resolve_stage(config, name)
    if not os.path.exists(os.path.join(workdir, name, 'DONE.json')):
      _CHECKS[cfg.kind](config, cfg, name, earlier, workdir)
    earlier[name] = cfg


def _writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_check'):
      pass
  except OSError as e:
    raise AffectJaxError(f'--workdir={workdir} cannot be written ({e}); '
                         'pick a folder you can write to.') from None


def _source(ref: str, key: str, earlier, workdir: str, *, required: bool,
            checkpoint: bool) -> str | None:
  """Checks a stage reference; returns a path to check further, or None."""
  if not ref:
    if required:
      raise AffectJaxError(f'{key} is empty; name a stage ("stage:NAME") or '
                           f'a path: --{key}=...')
    return None
  if ref.startswith('REQUIRED:'):
    raise AffectJaxError(
        f'{key} must be set for this variant: '
        f'{ref[len("REQUIRED:"):].strip()}; pass --{key}=PATH.')
  if ref.startswith('stage:'):
    src = ref[len('stage:'):]
    if src not in earlier:
      raise AffectJaxError(
          f'{key}={ref!r} but stage {src!r} does not run before it (stages: '
          f'{", ".join(earlier) or "none before"}); list it earlier in '
          'config.stages, or point at another run\'s folder.')
    return None
  path = os.path.abspath(os.path.expanduser(ref))
  if not os.path.exists(path):
    raise AffectJaxError(f'{key}={ref!r} does not exist; give a workdir, a '
                         'stage folder or a checkpoint folder.')
  if checkpoint:
    from affect_jax import checkpointing  # pylint: disable=g-import-not-at-top
    checkpointing.find_checkpoints(path)  # Raises when there is none.
  return path


def _builder(data_cfg, key: str):
  try:
    return input_pipeline.get_builder(data_cfg)
  except AffectJaxError as e:
    raise AffectJaxError(f'{key}: {e}') from None


def _splits(data_cfg, splits: list[str], key: str, split_key: str):
  builder = _builder(data_cfg, key)
  have = set(builder.info.splits)
  for split in splits:
    missing = [s for s in split.split('+') if s not in have]
    if missing:
      hint = (' Challenge releases publish no test labels (AVEC 2016 '
              'RECOLA; Aff-Wild until its test annotations are in '
              'annotations/test/; Aff-Wild2): score validation only.'
              if missing[0] == 'test' else '')
      raise AffectJaxError(
          f'{key}: dataset {builder.info.full_name} has no split '
          f'{missing[0]!r} (it has {sorted(have)}); set --{split_key} to '
          f'one of them.{hint}')
  return builder


def _train(config, cfg, name, earlier, workdir, key=None):
  from affect_jax import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  from affect_jax import train  # pylint: disable=g-import-not-at-top
  key = key or f'config.{name}'
  data = cfg.dataset
  _splits(data, [data.train_split], f'{key}.dataset',
          f'{key}.dataset.train_split')
  _splits(data, [data.eval_split], f'{key}.dataset',
          f'{key}.dataset.eval_split')
  split = input_pipeline.load_split(data, data.train_split)
  task = tasks_lib.get(cfg.task)
  task.check_dataset(split)
  _options(config, cfg, task, split, key)
  if train.uses_landmarks(config.model):
    input_pipeline.check_landmarks(split)
  source = _source(cfg.init_from, f'{key}.init_from', earlier, workdir,
                   required=False, checkpoint=True)
  if source:
    _init_fits(config, cfg, task, split, source, f'{key}.init_keep')


def _options(config, cfg, task, split, key: str) -> None:
  """The train section's option values, and `freeze` against the model."""
  from affect_jax import models  # pylint: disable=g-import-not-at-top
  from affect_jax import train  # pylint: disable=g-import-not-at-top
  try:
    train.check_options(config, cfg, task.output_names(split.emotion_names))
    frozen = train._as_tuple(cfg.get('freeze'))  # pylint: disable=protected-access
    if frozen:
      models.trainable_labels(_shapes(config, task, split)['params'], frozen)
  except AffectJaxError as e:
    raise AffectJaxError(f'{key}: {e}') from None


def _shapes(config, task, split):
  """The model's variables, shapes only (nothing computed)."""
  from affect_jax import inference  # pylint: disable=g-import-not-at-top
  n_out = len(task.output_names(split.emotion_names))
  model = inference.build_model(config.model, n_out)
  inp = config.input
  x = jnp.zeros((1, 2, inp.image_size, inp.image_size, 3), jnp.float32)
  landmarks = jnp.zeros((1, 2, F.NUM_LANDMARKS, 2), jnp.float32)
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
  return jax.eval_shape(
      lambda: dict(model.init(rngs, x, landmarks=landmarks, train=False)))


def _init_fits(config, cfg, task, split, source: str, key: str) -> None:
  """The checkpoint's kept submodules against the model's shapes."""
  from affect_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from affect_jax import train  # pylint: disable=g-import-not-at-top
  shapes = _shapes(config, task, split)
  ckpt = checkpointing.find_checkpoints(source)
  loaded, meta = checkpointing.restore_best_variables(ckpt)
  keep = tuple(k.strip() for k in str(cfg.init_keep).split(',') if k.strip())
  train.check_init_fits(shapes, loaded, meta, ckpt, keep, key=key)


def _test(config, cfg, name, earlier, workdir):
  _source(cfg.checkpoint_from, f'config.{name}.checkpoint_from', earlier,
          workdir, required=True, checkpoint=True)
  _splits(cfg.dataset, _names(cfg.splits), f'config.{name}.dataset',
          f'config.{name}.splits')
  if cfg.get('aggregate', '') not in ('', 'clip'):
    raise AffectJaxError(f'config.{name}.aggregate={cfg.aggregate!r}; use '
                         "'' or 'clip' (one class per clip).")
  protocol = cfg.get('protocol', '')
  if protocol not in abaw.PROTOCOLS:
    raise AffectJaxError(f'config.{name}.protocol={protocol!r}; use one of '
                         f'{", ".join(map(repr, abaw.PROTOCOLS))}.')
  src = cfg.checkpoint_from
  if protocol and src.startswith('stage:') and src[6:] in config:
    task = config[src[6:]].get('task')
    if task not in (None, 'va', 'expression'):
      raise AffectJaxError(
          f"config.{name}.protocol='abaw' needs a 'va' or 'expression' "
          f'model; {src} trains task {task!r}.')
    if task == 'expression':  # The model's classes are the dataset's.
      split = input_pipeline.load_split(cfg.dataset, _names(cfg.splits)[0])
      abaw.check(task, split.emotion_names, f'config.{name}.protocol')


def _postprocess(config, cfg, name, earlier, workdir):
  del config
  from affect_jax import postprocess  # pylint: disable=g-import-not-at-top
  bad = [s for s in _names(cfg.steps) if s not in postprocess.STEPS]
  if bad:
    raise AffectJaxError(f'config.{name}.steps names {", ".join(map(repr, bad))}'
                         f'; use a comma list of {", ".join(postprocess.STEPS)}.')
  key = f'config.{name}.predictions_from'
  path = _source(cfg.predictions_from, key, earlier, workdir, required=True,
                 checkpoint=False)
  ref = cfg.predictions_from
  if ref.startswith('stage:'):
    src = earlier[ref[len('stage:'):]]
    predicted = _names(src.get('splits', '')) if src.kind == 'test' else []
    for which in ('fit_split', 'apply_split'):
      if predicted and cfg[which] not in predicted:
        raise AffectJaxError(
            f'config.{name}.{which}={cfg[which]!r} but stage '
            f'{ref[len("stage:"):]!r} predicts only {predicted}; set '
            f'--config.{name}.{which} to one of them (fit_split = '
            'apply_split post-processes each recording with the chain '
            'fitted on the others).')
  elif path:
    for which in ('fit_split', 'apply_split'):
      csv = os.path.join(path, 'predictions', f'{cfg[which]}.csv')
      if not os.path.exists(csv):
        raise AffectJaxError(f'{key}: {csv} does not exist; set '
                             f'--config.{name}.{which} to a split that '
                             'stage predicted.')


def _cv(config, cfg, name, earlier, workdir):
  key = f'config.{name}.train'
  data = cfg.train.dataset
  folds = str(cfg.folds)
  if not folds.strip().isdigit():
    _splits(data, _names(folds), f'{key}.dataset', f'config.{name}.folds')
  else:
    _splits(data, [data.train_split], f'{key}.dataset',
            f'{key}.dataset.train_split')
  from affect_jax import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  split_name = data.train_split if folds.strip().isdigit() else '+'.join(
      _names(folds))
  split = input_pipeline.load_split(data, split_name)
  task = tasks_lib.get(cfg.train.task)
  task.check_dataset(split)
  _options(config, cfg.train, task, split, f'{key}')
  source = _source(cfg.train.init_from, f'{key}.init_from', earlier, workdir,
                   required=False, checkpoint=True)
  if source:
    _init_fits(config, cfg.train, task, split, source, f'{key}.init_keep')


def _cross_test(config, cfg, name, earlier, workdir):
  del config
  for ref in _names(cfg.checkpoints):
    _source(ref, f'config.{name}.checkpoints', earlier, workdir,
            required=True, checkpoint=True)
  for d in cfg.datasets.keys():
    data = cfg.datasets[d]
    _splits(data, [data.test_split], f'config.{name}.datasets.{d}',
            f'config.{name}.datasets.{d}.test_split')


def _names(value) -> list[str]:
  return [s.strip() for s in str(value or '').split(',') if s.strip()]


_CHECKS = {'train': _train, 'test': _test, 'postprocess': _postprocess,
           'cv': _cv, 'cross_test': _cross_test}
