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
          options=ocp.CheckpointManagerOptions(create=False))
      step = mgr.latest_step()
      if step is not None:
        restored = mgr.restore(step, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(),
            meta=ocp.args.JsonRestore()))
        mgr.close()
        return jax.device_get(restored.variables), dict(restored.meta or {})
      mgr.close()
  raise AffectJaxError(
      f'No checkpoint with model variables found in {directory!r}: expected '
      'a stage checkpoint folder (<workdir>/<stage>/checkpoints) or an '
      'imported-weights folder. Check config init_from, or run the stage '
      'that produces it first.')
