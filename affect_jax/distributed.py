"""Starting a multi-process run: `jax.distributed.initialize`, in one place.

Every multi-process entry point (`affect_jax.main`) calls `initialize`
before any JAX computation. What it does depends on `mode` (the
`--distributed` flag):

- 'auto' (the default): the explicit `--coordinator_address`,
  `--num_processes`, `--process_id` if given (all three; JAX guesses
  nothing else: every device the process sees is used); else the
  scheduler's environment where it unmistakably describes a job of several
  processes (`detect`): a SLURM step started by `srun` with more than one
  task, or a multi-host TPU slice whose worker list is in the environment
  (GKE). Anything else (a laptop, a one-task SLURM job, the batch script
  itself, `salloc`) runs as one process.
- 'on': `jax.distributed.initialize` with whatever flags are given, the
  rest detected by JAX itself (Cloud TPU metadata, SLURM, Open MPI, ...);
  for TPU VM pod slices, where the worker list is only in the metadata.
- 'off': never, whatever the environment says.

Under SLURM, JAX's own detection gives task i on a node the node's i-th
visible GPU (one task per GPU, every task seeing all of the node's GPUs:
`--ntasks-per-node=G --gpus-per-node=G`); set `JAX_LOCAL_DEVICE_IDS`
(e.g. `0,1,2,3`) for one task per node driving all its GPUs, and
`JAX_COORDINATOR_PORT` if the port JAX derives from the job id is taken.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
from jax.experimental import multihost_utils
import numpy as np

from affect_jax.errors import AffectJaxError

MODES = ('auto', 'on', 'off')

# Set in the tasks of an `srun` job step (not in the batch script itself).
_SLURM_STEP = ('SLURM_JOB_ID', 'SLURM_STEP_ID', 'SLURM_STEP_NODELIST',
               'SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS', 'SLURM_PROCID',
               'SLURM_LOCALID')
# A TPU slice's worker list (GKE sets it; JAX reads the same variables).
_TPU_WORKERS = ('TPU_PROCESS_ADDRESSES', 'TPU_WORKER_HOSTNAMES')


def detect(environ: Mapping[str, str] | None = None) -> str | None:
  """'slurm' or 'tpu' if the environment is one process of several, else None.

  Conservative: only an `srun` step with more than one task, or a TPU
  worker list with more than one host (or a multislice coordinator).
  """
  env = os.environ if environ is None else environ
  if all(k in env for k in _SLURM_STEP):
    try:
      if int(env['SLURM_STEP_NUM_TASKS']) > 1:
        return 'slurm'
    except ValueError:
      pass
  for key in _TPU_WORKERS:
    if len([h for h in env.get(key, '').split(',') if h.strip()]) > 1:
      return 'tpu'
  if env.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return 'tpu'
  return None


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None, mode: str = 'auto'
               ) -> str | None:
  """Starts `jax.distributed` as `mode` says (module docstring).

  Returns:
    How the processes were found ('flags', 'slurm', 'tpu' or 'jax'), or
    None for a one-process run.

  Raises:
    AffectJaxError: an unknown mode, or explicit flags that are incomplete
      or inconsistent.
  """
  if mode not in MODES:
    raise AffectJaxError(f'--distributed={mode!r}; use one of {MODES}.')
  given = {'coordinator_address': coordinator_address,
           'num_processes': num_processes, 'process_id': process_id}
  named = ', '.join(f'--{k}' for k, v in given.items() if v is not None)
  if mode == 'off':
    if named:
      raise AffectJaxError(f'--distributed=off but {named} given; drop them '
                           'or use --distributed=auto.')
    return None
  if mode == 'on':
    jax.distributed.initialize(coordinator_address, num_processes,
                               process_id)
    return 'jax'
  if named:
    missing = ', '.join(f'--{k}' for k, v in given.items() if v is None)
    if missing:
      raise AffectJaxError(
          'A multi-process run needs --coordinator_address, --num_processes '
          f'and --process_id together; {missing} missing (or leave all '
          'three out under SLURM / on a TPU slice, or pass '
          '--distributed=on to let JAX find them).')
    if not 0 <= process_id < num_processes:
      raise AffectJaxError(
          f'--process_id={process_id} must be in [0, {num_processes}) '
          f'(--num_processes={num_processes}).')
    # Explicit means explicit: no scheduler guesses (e.g. SLURM's one
    # device per task); the process uses every device it sees.
    jax.distributed.initialize(coordinator_address, num_processes,
                               process_id,
                               cluster_detection_method='deactivate')
    return 'flags'
  found = detect()
  if found == 'slurm':
    env = os.environ
    # The step's task count and rank (SLURM_NTASKS is the job's; srun -n
    # may start fewer); JAX derives the coordinator from the node list.
    jax.distributed.initialize(
        num_processes=int(env['SLURM_STEP_NUM_TASKS']),
        process_id=int(env['SLURM_PROCID']),
        cluster_detection_method='slurm')
  elif found == 'tpu':
    jax.distributed.initialize()
  return found


def max_over_processes(value: int) -> int:
  """The largest of every process's `value` (a collective: every process
  calls it at the same point); `value` itself in a one-process run."""
  if jax.process_count() == 1:
    return int(value)
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def barrier(name: str) -> None:
  """Every process waits here for the others (no-op in one process), e.g.
  until process 0 has written a file that all of them read next."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
