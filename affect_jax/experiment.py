"""Runs an experiment's stages in order: e.g. pretrain -> finetune -> test.

The stage kinds are a table (`STAGE_KINDS`): a kind is one function that
takes a `StageContext` and returns a JSON-able summary. Adding a kind (e.g.
cross validation) is adding one entry.

Each stage works in `<workdir>/<stage>/` and writes `DONE.json` when it
finishes, so rerunning the same command after an interrupt resumes the
unfinished stage from its latest checkpoint and never redoes a finished one.
A run holds `<workdir>/RUNNING.lock` (affect_jax.workdir_lock): a second run
on the same workdir is refused while the first lives.
A stage uses another's outputs by name: `stage:NAME` is that stage's folder
(its checkpoints, its prediction files); it must have finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections

from affect_jax import workdir_lock
from affect_jax import writers
from affect_jax.errors import AffectJaxError
from configs import common


@dataclasses.dataclass
class StageContext:
  """What a stage function gets: the configs, its folder, other stages."""
  config: ml_collections.ConfigDict  # The whole experiment.
  cfg: ml_collections.ConfigDict  # This stage's resolved section.
  name: str
  workdir: str  # This stage's folder.
  root: str  # The experiment's workdir.

  def source(self, ref: str) -> str | None:
    """'' -> None; 'stage:NAME' -> that finished stage's folder; else a path."""
    if not ref:
      return None
    if ref.startswith('REQUIRED:'):
      key = {'train': 'init_from', 'cv': 'train.init_from',
             'cross_test': 'checkpoints'}.get(self.cfg.kind,
                                              'checkpoint_from')
      raise AffectJaxError(
          f'config.{self.name}.{key} must be set for this variant: '
          f'{ref[len("REQUIRED:"):].strip()}; pass '
          f'--config.{self.name}.{key}=PATH.')
    if ref.startswith('stage:'):
      src = ref[len('stage:'):]
      if not os.path.exists(os.path.join(self.root, src, 'DONE.json')):
        raise AffectJaxError(
            f'config.{self.name} refers to {ref!r} but stage {src!r} has not '
            f'finished in {self.root}; list it before {self.name!r} in '
            'config.stages (or point at another run\'s folder).')
      return os.path.join(self.root, src)
    path = os.path.abspath(os.path.expanduser(ref))
    if not os.path.exists(path):
      raise AffectJaxError(f'config.{self.name} refers to {ref!r}, which does '
                           'not exist; give a workdir, a stage folder or a '
                           'checkpoint folder.')
    return path


def stage_kinds() -> dict[str, Callable[[StageContext], dict[str, Any]]]:
  # Imported here so that `--help` and config errors need no JAX warm-up.
  from affect_jax import cross_validation  # pylint: disable=g-import-not-at-top
  from affect_jax import evaluate  # pylint: disable=g-import-not-at-top
  from affect_jax import postprocess  # pylint: disable=g-import-not-at-top
  from affect_jax import train  # pylint: disable=g-import-not-at-top
  return {'train': train.train_and_evaluate,
          'test': evaluate.test_stage,
          'postprocess': postprocess.postprocess_stage,
          'cv': cross_validation.cv_stage,
          'cross_test': evaluate.cross_test_stage}


def check(config) -> list[str]:
  """Validates the config against the schema; returns the stage names."""
  try:
    common.validate(config)
  except common.ConfigError as e:
    raise AffectJaxError(str(e)) from None
  return common.stage_names(config)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) every stage of `config.stages` under `workdir`."""
  names = check(config)
  kinds = stage_kinds()
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  # The processes of a multi-process run share the workdir: one lock.
  with workdir_lock.held(workdir, take=jax.process_index() == 0):
    return _run_stages(config, workdir, names, kinds)


def _run_stages(config, workdir: str, names: list[str], kinds
                ) -> dict[str, Any]:
  # Every stage's data, sources and splits, before an hour of training.
  from affect_jax import preflight  # pylint: disable=g-import-not-at-top
  preflight.check(config, workdir, names)
  _record_run(config, workdir)
  results = {}
  for name in names:
    stage_dir = os.path.join(workdir, name)
    done = os.path.join(stage_dir, 'DONE.json')
    if os.path.exists(done):
      print(f'[{name}] already finished ({done}); skipping.', flush=True)
      results[name] = writers.read_json(done)
      continue
    cfg = common.resolve_stage(config, name)
    writers.write_json(os.path.join(stage_dir, 'config.json'), cfg.to_dict())
    t0 = time.time()
    out = kinds[cfg.kind](StageContext(config=config, cfg=cfg, name=name,
                                       workdir=stage_dir, root=workdir))
    out['seconds'] = round(time.time() - t0, 1)
    writers.write_json(done, out)
    results[name] = out
  return results


_RECORDED_ENV = ('XLA_FLAGS', 'GLIBC_TUNABLES', 'OMP_NUM_THREADS',
                 'JAX_PLATFORMS', 'CUDA_VISIBLE_DEVICES')


def _record_run(config, workdir: str):
  """Resolved config, versions and seed of this invocation, for the record."""
  info = {'seed': config.seed, 'versions': writers.versions(),
          'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
          'jax_process_count': jax.process_count(),
          # What changes speed or float rounding without being config.
          'environment': {k: os.environ.get(k) for k in _RECORDED_ENV}}
  path = os.path.join(workdir, 'config.json')
  new = config.to_dict()
  finished = [d for d in os.listdir(workdir)
              if os.path.exists(os.path.join(workdir, d, 'DONE.json'))]
  if (finished and os.path.exists(path) and
      writers.read_json(path) != _jsonable(new)):
    print(f'Note: {path} differs from this run\'s config; finished stages '
          'are kept as they are. Use a new --workdir for a new experiment.',
          flush=True)
  writers.write_json(path, new)
  runs = os.path.join(workdir, 'runs')
  writers.write_json(os.path.join(runs, time.strftime('%Y%m%d-%H%M%S') +
                                  '.json'), info)


def _jsonable(obj):
  return json.loads(json.dumps(obj, default=str))
