"""The one declared set of budget overrides for running a config in tests.

A test that runs a documented command or a paper config through the user's
door (`python -m affect_jax.main --config=FILE:VARIANT ...`) adds exactly
these `--config.KEY=VALUE` flags, and nothing else that changes what is
trained:

  model     width 4, ResNet-50 stage_sizes 1/1/1/1, FC 16, LSTM / GRU 8
            units (only where the config has the key: a key the config
            lacks cannot be overridden, e.g. configs/affwildnet.py's VGG-Face
            trunk has no width and stays full width);
  input     windows of WINDOW frames at stride WINDOW, IMAGE_SIZE crops
            (ALEXNET_SIZE for AlexNet, whose strides need it) resized from 4
            more, one loader thread; batch BATCH;
  schedule  every train stage (a cv stage's too, and the top-level defaults
            they inherit): NUM_STEPS steps, evaluated and checkpointed every
            EVAL_EVERY; where the config counts in epochs, EPOCHS (one
            step), evaluated (and checkpointed, where it counts those in
            epochs) once; logging every step;
  post      the post-processing grid search on GRID_SIZE values.

  from tests import budget
  cmd = [sys.executable, '-m', 'affect_jax.main',
         '--config=configs/affwildnet.py', *budget.flags(
             'configs/affwildnet.py'), '--workdir=' + workdir]

`flags` loads the config (configs/common.py + the config module, as
`affect_jax.main` does) and returns the overrides of the keys it has.
"""

from __future__ import annotations

import ml_collections

from affect_jax import cli
from configs import common

WINDOW = 8
IMAGE_SIZE = 32
ALEXNET_SIZE = 64  # AlexNet's 11x11/4 stem and three poolings need >= 63.
BATCH = 2
NUM_STEPS = 4
EVAL_EVERY = 2
GRID_SIZE = 8
EPOCHS = 1e-6  # -> max(1, ceil(EPOCHS * steps_per_epoch)) = 1 step.
MODEL = {'width': 4, 'stage_sizes': (1, 1, 1, 1), 'fc_features': (16,),
         'lstm_hidden': 8, 'gru_hidden': 8}


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of `--config=FILE[:VARIANT]`, as affect_jax.main builds it."""
  path, sep, variant = spec.partition(':')
  module = cli.load_config_module(cli.resolve_config_path(path))
  return module.get_config(variant) if sep else module.get_config()


def overrides(spec: str) -> dict[str, object]:
  """{dotted key: value} of the budget for the config `FILE[:VARIANT]`."""
  c = load(spec)
  out: dict[str, object] = {'batch_size': BATCH, 'log_every_steps': 1}
  for key, value in MODEL.items():
    if key in c.model:
      out[f'model.{key}'] = value
  arch = str(c.model.arch)
  trunk = str(c.model.get('trunk_arch') or arch)
  size = ALEXNET_SIZE if trunk.startswith('alexnet') else IMAGE_SIZE
  out.update({'input.window': WINDOW, 'input.train_stride': WINDOW,
              'input.image_size': size, 'input.resize_size': size + 4,
              'input.num_threads': 1})
  out.update(_schedule('', c, c))
  for name in c.keys():
    section = c[name]
    if not isinstance(section, ml_collections.ConfigDict):
      continue
    kind = section.get('kind')
    if kind == 'train':
      out.update(_schedule(f'{name}.', section, c))
    elif kind == 'cv':
      out.update(_schedule(f'{name}.train.', section.train, c))
    elif kind == 'postprocess':
      out[f'{name}.grid_size'] = GRID_SIZE
  return out


def _schedule(prefix: str, section, top) -> dict[str, object]:
  """The schedule keys of one train section (or the top level)."""
  def effective(key):
    value = section.get(key)
    return top.get(key) if value is None else value

  out = {f'{prefix}num_train_steps': NUM_STEPS,
         f'{prefix}eval_every_steps': EVAL_EVERY,
         f'{prefix}checkpoint_every_steps': EVAL_EVERY}
  # A config that counts in epochs: a tiny fraction of one, which the train
  # stage rounds up to a single step, evaluated (and checkpointed) once.
  for key in ('num_epochs', 'eval_every_epochs', 'checkpoint_every_epochs'):
    if effective(key):
      out[prefix + key] = EPOCHS
  return out


def _format(value) -> str:
  if isinstance(value, tuple):
    return '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1
                                                     else ')')
  return str(value)


def flags(spec: str) -> list[str]:
  """`--config.KEY=VALUE` flags of the budget for `--config=FILE[:VARIANT]`.

  Every key is one the config has (`affect_jax.main` refuses others).
  """
  return [f'--config.{k}={_format(v)}' for k, v in overrides(spec).items()]


def apply(config: ml_collections.ConfigDict, spec: str
          ) -> ml_collections.ConfigDict:
  """The same overrides set on a loaded config (in-process tests)."""
  for key, value in overrides(spec).items():
    node = config
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  common.validate(config)
  return config
