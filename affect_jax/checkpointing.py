"""Orbax checkpoints of a training stage: `latest` for resuming, `best` for use.

`<stage>/checkpoints/latest/<step>` holds the full `TrainState` (params, batch
statistics, optimizer state, step) plus a JSON record of the loop's own state
(early-stopping counters, best metric so far): with the deterministic input
pipeline that is all an exact resume needs. `<stage>/checkpoints/best/<step>`
holds only the model variables of the best evaluation, which is what the next
stage initialises from and what the test stage evaluates.
"""

from __future__ import annotations

import os
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import orbax.checkpoint as ocp

from affect_jax.errors import AffectJaxError


def _manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))


class StageCheckpoints:
  """The `latest` and `best` checkpoint managers of one stage."""

  def __init__(self, directory: str):
    self.directory = directory
    self.latest = _manager(os.path.join(directory, 'latest'))
    self.best = _manager(os.path.join(directory, 'best'))

  def save_latest(self, step: int, state: Any, meta: dict[str, Any]):
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, state: Any) -> tuple[Any, dict[str, Any]] | None:
    """Restores into the structure (and shardings) of `state`, or None."""
    step = self.latest.latest_step()
    if step is None:
      return None
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta

  def save_best(self, step: int, variables: dict[str, Any],
                meta: dict[str, Any]):
    if step in self.best.all_steps():
      # A run killed between this step's best and latest saves resumes
      # from an earlier `latest` and replays the step: the same state.
      self.best.delete(step)
    self.best.save(step, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables),
        meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def restore_best_variables(directory: str) -> tuple[dict[str, Any],
                                                      dict[str, Any]]:
  """Reads the model variables of a stage's best checkpoint.

  Args:
    directory: a stage's `checkpoints` folder, its `best` folder, or a folder
      holding Orbax steps with `variables` (e.g. the weight importer's output).

  Returns:
    (variables {'params': ..., 'batch_stats': ...} as host arrays, meta).
  """
  for candidate in (os.path.join(directory, 'best'), directory):
    if os.path.isdir(candidate):
      mgr = ocp.CheckpointManager(
          os.path.abspath(candidate),
          options=ocp.CheckpointManagerOptions(create=False),
          item_handlers={'variables': ocp.StandardCheckpointHandler(),
                         'meta': ocp.JsonCheckpointHandler()})
      step = mgr.latest_step()
      if step is not None:
        restored = mgr.restore(step, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(replicated_targets(
                mgr.item_metadata(step)['variables'])),
            meta=ocp.args.JsonRestore()))
        mgr.close()
        return jax.device_get(restored.variables), dict(restored.meta or {})
      mgr.close()
  raise AffectJaxError(
      f'No checkpoint with model variables found in {directory!r}: expected '
      'a stage checkpoint folder (<workdir>/<stage>/checkpoints) or an '
      'imported-weights folder. Check config init_from, or run the stage '
      'that produces it first.')


def replicated_targets(metadata):
  """Restore targets for an item's `item_metadata`: the saved shapes and
  dtypes, replicated on this run's devices, whatever devices and processes
  wrote the checkpoint (a model trained on many hosts loads on a laptop)."""
  devices = np.asarray(jax.devices())
  replicated = NamedSharding(Mesh(devices, ('devices',)), P())
  return jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated),
      metadata)


# Version of the self-contained model record saved with `best` checkpoints.
MODEL_FORMAT = 'affect_jax.model/1'


def find_checkpoints(path: str) -> str:
  """The checkpoint folder behind a workdir, a stage folder or itself.

  A workdir resolves to its last stage that has a best checkpoint (in
  `config.stages` order as recorded in its config.json, else by name).
  """
  path = os.path.abspath(os.path.expanduser(path))
  for candidate in (path, os.path.join(path, 'checkpoints')):
    if os.path.isdir(os.path.join(candidate, 'best')):
      return candidate
  if os.path.isdir(path):
    stages = sorted(d for d in os.listdir(path)
                    if os.path.isdir(os.path.join(path, d, 'checkpoints',
                                                  'best')))
    order = _stage_order(path)
    stages.sort(key=lambda d: order.index(d) if d in order else -1)
    if stages:
      return os.path.join(path, stages[-1], 'checkpoints')
  return path


def _stage_order(workdir: str) -> list[str]:
  import json  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return [s.strip() for s in json.load(f)['stages'].split(',')]
  except (OSError, KeyError, ValueError, AttributeError):
    return []


def load_model(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Variables and model record of a self-contained best checkpoint.

  Args:
    path: a training workdir, a stage folder, or a checkpoint folder.

  Returns:
    (variables, meta) where meta holds everything needed to rebuild and
    feed the network: `model` (the config.model section), `input` (window,
    image size, normalisation), `task`, `outputs`, `label_names`, `data`
    (the dataset's name, fps and face-crop settings), `step`, and the
    selection metric.

  Raises:
    AffectJaxError: no checkpoint there, or one that holds weights only
      (an ImageNet import) or was written by an incompatible version.
  """
  directory = find_checkpoints(path)
  variables, meta = restore_best_variables(directory)
  fmt = meta.get('format')
  if fmt != MODEL_FORMAT:
    what = ('holds weights only (e.g. imported ImageNet weights): use it '
            'as a train stage\'s init_from' if fmt is None else
            f'was written in format {fmt!r}; this version of affect_jax '
            f'reads {MODEL_FORMAT!r}: retrain or use the version that '
            'wrote it')
    raise AffectJaxError(f'The checkpoint in {directory} {what}.')
  return variables, meta
