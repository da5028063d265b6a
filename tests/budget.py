"""The one place for the test suite's budget overrides of documented commands.

`flags(config_arg)` -> the `--config.KEY=VALUE` flags that shrink an
experiment (`configs/FILE.py[:VARIANT]`) to seconds on 2 CPU cores: every
train stage a few steps, the network at test size (tests/conftest.py's
`shrink_model`: width 4, one block a ResNet stage, FC 16, RNN 8 units),
windows of 4 frames of 32x32 (64x64 for AlexNet). Nothing else changes: the
datasets, splits, stages and init paths are the command's own.

(A minimal version written by the `docs` branch; the `fakes` branch owns it.)
"""

from __future__ import annotations

import ml_collections

from affect_jax import cli
from configs import common

STEPS = 2


def _flat(c, prefix=''):
  out = {}
  for k in c.keys():
    v = c[k]
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _value(v) -> str:
  if isinstance(v, (tuple, list)):
    return '(' + ','.join(str(x) for x in v) + (',)' if len(v) == 1 else ')')
  return str(v)


def _train_sections(c):
  for name in c.keys():
    s = c[name]
    if not isinstance(s, ml_collections.ConfigDict) or 'kind' not in s:
      continue
    if s.kind == 'train':
      yield name, s
    elif s.kind == 'cv':
      yield f'{name}.train', s.train


def flags(config_arg: str) -> list[str]:
  """Budget flags for `--config=config_arg` (appended after the doc's own)."""
  from tests import conftest  # pylint: disable=g-import-not-at-top
  path, sep, arg = config_arg.partition(':')
  module = cli.load_config_module(cli.resolve_config_path(path))
  config = module.get_config(arg) if sep else module.get_config()
  before = _flat(config)
  shrunk = conftest.shrink_model(common.copy(config))
  shrunk.log_every_steps = 1
  out = [f'--config.{k}={_value(v)}' for k, v in _flat(shrunk).items()
         if k in before and before[k] != v]  # keys the config has
  for where in [''] + [f'{n}.' for n, _ in _train_sections(config)]:
    out += [f'--config.{where}num_train_steps={STEPS}',
            f'--config.{where}num_epochs=0',
            f'--config.{where}eval_every_steps={STEPS}',
            f'--config.{where}eval_every_epochs=0',
            f'--config.{where}checkpoint_every_steps={STEPS}',
            f'--config.{where}checkpoint_every_epochs=0',
            f'--config.{where}early_stopping_patience=0']
  return out
