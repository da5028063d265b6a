"""One run per workdir: `<workdir>/RUNNING.lock` names the process using it.

Two runs writing the same checkpoints would corrupt each other, so a second
run on a workdir is refused at start, naming the process that holds it. A lock
left by a process that died without releasing it (SIGKILL, a node crash) does
not block the next run when its death can be seen:

  * same host, and that pid is not alive (or is another process now: its
    start time differs);
  * a requeued SLURM job: same SLURM_JOB_ID, lower SLURM_RESTART_COUNT (SLURM
    runs one instance of a job at a time, so the earlier one is gone).

Otherwise (another host, no SLURM) the message says to delete the file once
that process is known to be gone. Only process 0 of a multi-process run takes
the lock (the processes of one run share the workdir).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any, Iterator

from affect_jax import distributed
from affect_jax.errors import AffectJaxError

LOCK_NAME = 'RUNNING.lock'


def _pid_start(pid: int) -> str | None:
  """The kernel's start time of `pid` (Linux /proc), to tell pid reuse."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # Field 22; the command name (field 2) may hold spaces, so split after it.
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def alive(pid: int) -> bool:
  """Whether process `pid` exists on this host."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, owned by another user.
    return True
  return True


def owner_record() -> dict[str, Any]:
  """What the lock says about the process taking it."""
  pid = os.getpid()
  return {'pid': pid, 'host': socket.gethostname(), 'pid_start': _pid_start(pid),
          'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
          'slurm_job_id': os.environ.get('SLURM_JOB_ID'),
          'slurm_restart_count': int(os.environ.get('SLURM_RESTART_COUNT', 0))}


def why_stale(held: dict[str, Any], me: dict[str, Any]) -> str | None:
  """Why the lock `held` belongs to a dead process, or None if it may live."""
  if held.get('host') == me['host']:
    pid = int(held.get('pid', -1))
    if not alive(pid):
      return f'pid {pid} is not running on {me["host"]}'
    start = _pid_start(pid)
    if held.get('pid_start') and start and start != held['pid_start']:
      return f'pid {pid} on {me["host"]} is another process now'
  job = held.get('slurm_job_id')
  if job and job == me['slurm_job_id'] and (
      int(held.get('slurm_restart_count') or 0) < me['slurm_restart_count']):
    return (f'SLURM job {job} was requeued (restart '
            f'{me["slurm_restart_count"]})')
  return None


def acquire(workdir: str) -> str:
  """Takes `<workdir>/RUNNING.lock`; returns its path.

  Raises:
    AffectJaxError: a live (or not provably dead) process holds it.
  """
  path = os.path.join(workdir, LOCK_NAME)
  me = owner_record()
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      held = _read(path)
      if held is None:  # Vanished or half-written: look again.
        time.sleep(0.1)
        continue
      reason = why_stale(held, me) if held else (
          'the lock file is unreadable (its writer died while writing it)')
      if reason is None:
        raise AffectJaxError(
            f'Workdir {workdir} is in use by pid {held.get("pid")} on host '
            f'{held.get("host")} (started {held.get("started")}, lock '
            f'{path}). Wait for that run to finish, use another --workdir, '
            'or, if that process is gone, delete the lock file.') from None
      who = (f' of pid {held.get("pid")} on {held.get("host")} (started '
             f'{held.get("started")})' if held else '')
      print(f'Note: removed a stale lock {path}{who}: {reason}.', flush=True)
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, 'w') as f:
      json.dump(me, f)
    return path
  raise AffectJaxError(f'Could not take the lock {path} (another run keeps '
                       'taking it); check for concurrent runs on this workdir.')


def _read(path: str, settle_s: float = 2.0) -> dict[str, Any] | None:
  """The lock's record; None while it is missing or being written; {} if
  it has stayed unreadable for `settle_s` (a writer that died mid-write)."""
  try:
    with open(path) as f:
      text = f.read()
    age = time.time() - os.path.getmtime(path)
  except OSError:
    return None
  try:
    return json.loads(text)
  except ValueError:
    return {} if age > settle_s else None


def release(path: str) -> None:
  """Removes the lock if this process holds it."""
  held = _read(path)
  if held and held.get('pid') == os.getpid() and (
      held.get('host') == socket.gethostname()):
    os.remove(path)


@contextlib.contextmanager
def held(workdir: str, take: bool = True) -> Iterator[None]:
  """The lock for the body's duration (`take=False`: no lock, e.g. on
  processes other than 0).

  A collective in a multi-process run: if process 0 is refused the lock,
  every process stops (the others with an error pointing at process 0's).
  """
  path, refused = None, None
  if take:
    try:
      path = acquire(workdir)
    except AffectJaxError as e:
      refused = e
  if distributed.max_over_processes(refused is not None):
    raise refused or AffectJaxError(
        f'Process 0 could not take the lock of workdir {workdir} (its error '
        'says why); stopped.')
  try:
    yield
  finally:
    if path is not None:
      release(path)
