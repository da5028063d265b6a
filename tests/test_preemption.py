"""SIGTERM / SIGINT: save `latest`, exit 143 / 130, resume to the same end."""

import os
import signal
import subprocess
import sys

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
