"""SIGTERM / SIGINT: save `latest`, exit 143 / 130, resume to the same end;
SIGKILL at any moment: the rerun ends the same."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from affect_jax import checkpointing
from affect_jax import experiment
from affect_jax import train
from affect_jax.errors import Interrupted
from tests.test_train import _losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 16

_CONFIG = '''
import sys
sys.path.insert(0, {repo!r})
from tests.conftest import tiny_config


def get_config():
  c = tiny_config({data_dir!r}, stages={stages!r})
  c.batch_size = {batch_size}
  c.finetune.init_from = ''
  c.finetune.num_train_steps = {steps}
  c.finetune.eval_every_steps = {eval_every}
  c.finetune.checkpoint_every_steps = {checkpoint_every}
  return c
'''


def write_config(path, data_dir, steps, eval_every=None, checkpoint_every=None,
                 stages='finetune', batch_size=2):
  """A config file of the tiny fine-tuning stage (evaluated and saved
  every `steps` unless told), for `python -m affect_jax.main`."""
  path.write_text(_CONFIG.format(
      repo=REPO, data_dir=data_dir, steps=steps, stages=stages,
      batch_size=batch_size, eval_every=eval_every or steps,
      checkpoint_every=checkpoint_every or steps))
  return path


def _final_params(stage_dir):
  """(step, params) of a stage's latest checkpoint, whatever devices and
  processes wrote it."""
  mgr = ocp.CheckpointManager(
      os.path.join(stage_dir, 'checkpoints', 'latest'),
      item_handlers={'state': ocp.StandardCheckpointHandler()})
  step = mgr.latest_step()
  targets = checkpointing.replicated_targets(
      mgr.item_metadata(step)['state'])
  state = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(targets))).state
  mgr.close()
  return step, jax.device_get(state['params'])


def _start(config_file, workdir):
  return subprocess.Popen(
      [sys.executable, '-m', 'affect_jax.main', f'--config={config_file}',
       f'--workdir={workdir}'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_after_step(proc, signum, step):
  """Sends `signum` once the run has logged `step`; returns its stdout."""
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if f'] step {step}/' in line:
      proc.send_signal(signum)
      break
  out, err = proc.communicate(timeout=300)
  return ''.join(lines) + out, err


@pytest.mark.slow
def test_sigterm_saves_exits_143_and_resumes_to_the_same_params(
    tiny_data_dir, tmp_path):
  config_file = write_config(tmp_path / 'tiny.py', tiny_data_dir, STEPS)
  workdir = tmp_path / 'stopped'
  proc = _start(config_file, workdir)
  out, err = _signal_after_step(proc, signal.SIGTERM, 2)
  assert proc.returncode == 143, err[-3000:]
  assert 'Traceback' not in err
  stage = workdir / 'finetune'
  stopped_at, _ = _final_params(stage)
  assert 2 <= stopped_at < STEPS, out
  assert (f'[finetune] SIGTERM: saved the latest checkpoint at step '
          f'{stopped_at} in {stage / "checkpoints" / "latest"}.') in out
  assert err.strip().splitlines()[-1] == (
      f'Stopped by SIGTERM at step {stopped_at}; rerun the same command to '
      'resume from there.')
  assert not (stage / 'DONE.json').exists()
  assert not (workdir / 'RUNNING.lock').exists()
  # The run recorded the environment that changes speed or rounding.
  (run,) = [json.loads(p.read_text()) for p in (workdir / 'runs').iterdir()]
  # (This process imported affect_jax too: the same XLA_FLAGS.)
  assert sorted((run['environment']['XLA_FLAGS'] or '').split()) == sorted(
      os.environ.get('XLA_FLAGS', '').split())
  assert 'GLIBC_TUNABLES' in run['environment']

  # The same command resumes (here in-process: same code, same batches).
  config = _load(config_file)
  experiment.run(config, str(workdir))
  experiment.run(config, str(tmp_path / 'straight'))
  step, resumed = _final_params(stage)
  step_s, straight = _final_params(tmp_path / 'straight' / 'finetune')
  assert step == step_s == STEPS
  # Bitwise on CPU: the resumed run replays the same batches from the step.
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)
  got = _losses(stage / 'metrics.csv')
  want = _losses(tmp_path / 'straight' / 'finetune' / 'metrics.csv')
  assert {s: got[s] for s in range(stopped_at + 1, STEPS + 1)} == {
      s: want[s] for s in range(stopped_at + 1, STEPS + 1)}


KILL_STEPS = 24


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_rerun_ends_as_an_uninterrupted_run(
    tiny_data_dir, tmp_path):
  # Saved every step (so a kill often lands in the middle of a checkpoint
  # write), evaluated every 4 (best checkpoints too).
  config_file = write_config(tmp_path / 'tiny.py', tiny_data_dir,
                             KILL_STEPS, eval_every=4, checkpoint_every=1)
  seed = random.randrange(1 << 30)
  after = random.Random(seed).randrange(2, 12)
  workdir = tmp_path / 'killed'
  latest = workdir / 'finetune' / 'checkpoints' / 'latest'
  proc = _start(config_file, workdir)
  logged = []  # Steps the run has logged, read by a thread.
  reader = threading.Thread(target=lambda: logged.extend(
      int(line.split('] step ')[1].split('/')[0]) for line in proc.stdout
      if '] step ' in line), daemon=True)
  reader.start()
  mid_write = False
  while proc.poll() is None:
    done = max(logged, default=0)
    if done >= after:
      # The first moment a checkpoint is being written, else 3 steps on.
      mid_write = latest.is_dir() and any(
          'tmp' in name for name in os.listdir(latest))
      if mid_write or done >= after + 3:
        proc.kill()
        break
    time.sleep(0.001)
  proc.wait(timeout=300)
  moment = (f'killed after step {max(logged, default=0)} '
            f'(seed {seed}){" mid-checkpoint-write" if mid_write else ""}')
  assert proc.returncode == -signal.SIGKILL, (moment, proc.stderr.read())
  print(moment)

  # Rerun (in-process): the dead run's lock is stale, the stage resumes
  # from the last complete checkpoint and replays the same batches.
  config = _load(config_file)
  experiment.run(config, str(workdir))
  experiment.run(config, str(tmp_path / 'straight'))
  stage, straight = workdir / 'finetune', tmp_path / 'straight' / 'finetune'
  step, got = _final_params(stage)
  step_s, want = _final_params(straight)
  assert step == step_s == KILL_STEPS, moment
  jax.tree.map(np.testing.assert_array_equal, got, want)  # Bitwise (CPU).
  # Steps logged twice (after the last checkpoint, before the kill) keep
  # the rerun's value: the same.
  assert _losses(stage / 'metrics.csv') == _losses(
      straight / 'metrics.csv'), moment
  assert ((stage / 'summary.json').read_text() ==
          (straight / 'summary.json').read_text()), moment


def _load(config_file):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('tiny_config_file',
                                                config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_signals_set_the_stop_flag_and_the_handlers_come_back():
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  with train.stop_on_signals() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop == {'signum': signal.SIGINT}
    assert Interrupted('x', stop['signum']).exit_code == 130
    os.kill(os.getpid(), signal.SIGTERM)  # The first signal is kept.
    assert stop == {'signum': signal.SIGINT}
    with pytest.raises(KeyboardInterrupt):  # A second Ctrl-C: stop now.
      os.kill(os.getpid(), signal.SIGINT)
  assert {s: signal.getsignal(s) for s in before} == before
  assert Interrupted('x', signal.SIGTERM).exit_code == 143


def test_a_replayed_step_writes_its_best_checkpoint_again(tmp_path):
  # Killed after step 6's best save and before its latest one: the rerun
  # resumes from an earlier step and saves step 6's best again.
  variables = {'params': {'w': jax.numpy.ones(3)}}
  first = checkpointing.StageCheckpoints(str(tmp_path))
  first.save_best(6, variables, {'step': 6, 'run': 'killed'})
  first.wait()
  first.close()
  again = checkpointing.StageCheckpoints(str(tmp_path))
  again.save_best(6, variables, {'step': 6, 'run': 'rerun'})
  again.wait()
  again.close()
  loaded, meta = checkpointing.restore_best_variables(str(tmp_path))
  assert meta == {'step': 6, 'run': 'rerun'}
  np.testing.assert_array_equal(loaded['params']['w'], np.ones(3))
