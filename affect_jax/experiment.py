"""Runs an experiment's stages in order: e.g. pretrain -> finetune -> test.

Each stage works in `<workdir>/<stage>/` and writes `DONE.json` when it
finishes, so rerunning the same command after an interrupt resumes the
unfinished stage from its latest checkpoint and never redoes a finished one.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections

from affect_jax import writers
from affect_jax.errors import AffectJaxError

# Stage keys that fall back to the experiment's top-level value when unset.
INHERITED = ('num_train_steps', 'learning_rate', 'schedule', 'warmup_steps',
             'decay_steps', 'decay_rate', 'eval_every_steps',
             'checkpoint_every_steps', 'early_stopping_patience')


def stage_names(config) -> list[str]:
  names = [s.strip() for s in str(config.stages).split(',') if s.strip()]
  for n in names:
    if n not in config:
      raise AffectJaxError(
          f'config.stages names {n!r} but the config has no such section; '
          f'sections: {sorted(k for k in config if isinstance(config[k], ml_collections.ConfigDict))}.')
  return names


def resolve_stage(config: ml_collections.ConfigDict,
                  name: str) -> ml_collections.ConfigDict:
  """The stage's section with unset keys filled from the top level."""
  cfg = ml_collections.ConfigDict(config[name].to_dict())
  for key in INHERITED:
    if key in cfg and cfg[key] is None:
      cfg[key] = config.get(key)
  if 'dataset' in cfg and cfg.dataset is None:
    cfg.dataset = ml_collections.ConfigDict(config.dataset.to_dict())
  return cfg


def _init_source(workdir: str, init_from: str) -> str | None:
  """'' -> None; 'stage:NAME' -> that stage's checkpoints; else a path."""
  if not init_from:
    return None
  if init_from.startswith('stage:'):
    src = init_from[len('stage:'):]
    path = os.path.join(workdir, src, 'checkpoints')
    if not os.path.exists(os.path.join(workdir, src, 'DONE.json')):
      raise AffectJaxError(
          f'init_from={init_from!r} but stage {src!r} has not finished in '
          f'{workdir}; run it first (list it before this stage in '
          'config.stages).')
    return path
  return os.path.expanduser(init_from)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) every stage of `config.stages` under `workdir`."""
  # Imported here so that `--help` and config errors need no JAX warm-up.
  from affect_jax import evaluate  # pylint: disable=g-import-not-at-top
  from affect_jax import train  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  names = stage_names(config)
  _record_run(config, workdir)
  results = {}
  for name in names:
    stage_dir = os.path.join(workdir, name)
    done = os.path.join(stage_dir, 'DONE.json')
    if os.path.exists(done):
      print(f'[{name}] already finished ({done}); skipping.', flush=True)
      results[name] = writers.read_json(done)
      continue
    cfg = resolve_stage(config, name)
    writers.write_json(os.path.join(stage_dir, 'config.json'), cfg.to_dict())
    t0 = time.time()
    if cfg.kind == 'train':
      out = train.train_and_evaluate(
          config, cfg, stage_dir,
          init_source=_init_source(workdir, cfg.init_from))
    elif cfg.kind == 'test':
      src = _init_source(workdir, cfg.checkpoint_from)
      out = evaluate.test_stage(config, cfg, src, stage_dir)
    else:
      raise AffectJaxError(
          f'config.{name}.kind={cfg.kind!r}; use "train" or "test".')
    out['seconds'] = round(time.time() - t0, 1)
    writers.write_json(done, out)
    results[name] = out
  return results


def _record_run(config, workdir: str):
  """Resolved config, versions and seed of this invocation, for the record."""
  info = {'seed': config.seed, 'versions': writers.versions(),
          'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
          'jax_process_count': jax.process_count()}
  path = os.path.join(workdir, 'config.json')
  new = config.to_dict()
  if os.path.exists(path) and writers.read_json(path) != _jsonable(new):
    print(f'Note: {path} differs from this run\'s config; finished stages '
          'are kept as they are. Use a new --workdir for a new experiment.',
          flush=True)
  writers.write_json(path, new)
  runs = os.path.join(workdir, 'runs')
  writers.write_json(os.path.join(runs, time.strftime('%Y%m%d-%H%M%S') +
                                  '.json'), info)


def _jsonable(obj):
  import json  # pylint: disable=g-import-not-at-top
  return json.loads(json.dumps(obj, default=str))
