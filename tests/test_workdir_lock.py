"""One run per workdir: a live holder refuses a second run, a dead one not."""

import json
import os
import socket
import subprocess
import sys

import pytest

from affect_jax import experiment
from affect_jax import workdir_lock
from affect_jax.errors import AffectJaxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLD = ('import sys, time\n'
         'from affect_jax import workdir_lock\n'
         'workdir_lock.acquire(sys.argv[1])\n'
         'print("held", flush=True)\n'
         'time.sleep(120)\n')


@pytest.fixture
def holder(tmp_path):
  """A live process (sleeping) that holds the lock of tmp_path / 'w'."""
  workdir = tmp_path / 'w'
  workdir.mkdir()
  proc = subprocess.Popen([sys.executable, '-c', _HOLD, str(workdir)],
                          cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  yield workdir, proc
  proc.kill()
  proc.wait()


def test_second_run_on_a_workdir_is_refused_naming_the_holder(holder):
  workdir, proc = holder
  out = subprocess.run(
      [sys.executable, '-m', 'affect_jax.main',
       '--config=configs/realeyes.py:synthetic', f'--workdir={workdir}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert 'Traceback' not in out.stderr
  err = out.stderr.strip().splitlines()[-1]
  assert err.startswith(f'error: Workdir {workdir} is in use by pid '
                        f'{proc.pid} on host {socket.gethostname()} (started ')
  assert 'delete the lock file' in err
  # The refused run leaves the holder's lock alone.
  held = json.load(open(workdir / workdir_lock.LOCK_NAME))
  assert held['pid'] == proc.pid


def test_lock_of_a_dead_process_does_not_block(make_tiny_config, tmp_path,
                                               capsys):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  workdir = tmp_path / 'w'
  workdir.mkdir()
  lock = workdir / workdir_lock.LOCK_NAME
  lock.write_text(json.dumps({'pid': dead.pid, 'host': socket.gethostname(),
                              'started': '2026-01-01T00:00:00+0000'}))
  # A finished stage: the run takes the lock, skips the stage, releases.
  (workdir / 'finetune').mkdir()
  (workdir / 'finetune' / 'DONE.json').write_text('{"final_step": 1}')
  results = experiment.run(make_tiny_config(stages='finetune'), str(workdir))
  assert results == {'finetune': {'final_step': 1}}
  out = capsys.readouterr().out
  assert (f'Note: removed a stale lock {lock} of pid {dead.pid} on '
          f'{socket.gethostname()}') in out
  assert f'pid {dead.pid} is not running' in out
  assert not lock.exists()  # Released at the end of the run.


def test_a_requeued_slurm_job_takes_over_its_own_lock(tmp_path):
  me = workdir_lock.owner_record()
  other_host = {'pid': 1, 'host': 'node-that-died', 'slurm_job_id': '42',
                'slurm_restart_count': 0, 'started': 'x'}
  assert workdir_lock.why_stale(
      other_host, dict(me, slurm_job_id='42', slurm_restart_count=1)) == (
          'SLURM job 42 was requeued (restart 1)')
  # Another job, or the same instance: it may be alive, so it blocks.
  assert workdir_lock.why_stale(other_host, dict(me, slurm_job_id='43',
                                                 slurm_restart_count=1)) is None
  assert workdir_lock.why_stale(other_host, dict(me, slurm_job_id='42',
                                                 slurm_restart_count=0)) is None
  # This very process is alive: its own lock blocks a second run in it.
  path = workdir_lock.acquire(str(tmp_path))
  with pytest.raises(AffectJaxError, match=f'in use by pid {os.getpid()} '):
    workdir_lock.acquire(str(tmp_path))
  workdir_lock.release(path)
  assert not os.path.exists(path)


def test_an_unreadable_old_lock_is_stale(tmp_path, capsys):
  lock = tmp_path / workdir_lock.LOCK_NAME
  lock.write_text('')  # A writer that died between creating and writing it.
  os.utime(lock, (0, 0))
  path = workdir_lock.acquire(str(tmp_path))
  assert capsys.readouterr().out == (
      f'Note: removed a stale lock {lock}: the lock file is unreadable (its '
      'writer died while writing it).\n')
  assert json.load(open(path))['pid'] == os.getpid()
  workdir_lock.release(path)
