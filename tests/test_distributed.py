"""Multi-process runs: start-up, per-process data, 2 processes = 1 process."""

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys

import grain
import jax
import numpy as np
import pytest

from affect_jax import distributed
from affect_jax import input_pipeline as ip
from affect_jax.errors import AffectJaxError
from configs import common
from tests.conftest import QUICK_XLA_FLAGS
from tests.test_preemption import _final_params
from tests.test_preemption import write_config
from tests.test_train import _losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SRUN_TASK = {'SLURM_JOB_ID': '77', 'SLURM_STEP_ID': '0',
              'SLURM_STEP_NODELIST': 'node[01-02]', 'SLURM_STEP_NUM_TASKS': '4',
              'SLURM_NTASKS': '4', 'SLURM_PROCID': '3', 'SLURM_LOCALID': '1'}


def test_detect_is_conservative():
  assert distributed.detect({}) is None
  assert distributed.detect({'HOME': '/root'}) is None
  assert distributed.detect(_SRUN_TASK) == 'slurm'
  # One task, or the batch script itself (no job step): one process.
  assert distributed.detect(dict(_SRUN_TASK, SLURM_STEP_NUM_TASKS='1',
                                 SLURM_NTASKS='1')) is None
  batch_script = {k: v for k, v in _SRUN_TASK.items()
                  if not k.startswith('SLURM_STEP')}
  assert distributed.detect(batch_script) is None
  assert distributed.detect({'TPU_WORKER_HOSTNAMES': 'w0'}) is None
  assert distributed.detect({'TPU_WORKER_HOSTNAMES': 'w0,w1'}) == 'tpu'
  assert distributed.detect({'MEGASCALE_COORDINATOR_ADDRESS': 'w0'}) == 'tpu'


@pytest.fixture
def calls(monkeypatch):
  """What `initialize` passes to jax.distributed.initialize (not called)."""
  got = []
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda *a, **kw: got.append((a, kw)))
  for k in list(os.environ):
    if k.startswith(('SLURM_', 'TPU_', 'MEGASCALE_')):
      monkeypatch.delenv(k)
  return got


def test_initialize_from_flags_from_slurm_or_not_at_all(calls, monkeypatch):
  assert distributed.initialize() is None
  assert distributed.initialize(mode='off') is None
  assert calls == []
  assert distributed.initialize('10.0.0.1:1234', 2, 1) == 'flags'
  assert calls.pop() == (('10.0.0.1:1234', 2, 1),
                         {'cluster_detection_method': 'deactivate'})
  for k, v in _SRUN_TASK.items():
    monkeypatch.setenv(k, v)
  assert distributed.initialize() == 'slurm'
  assert calls.pop() == ((), {'num_processes': 4, 'process_id': 3,
                              'cluster_detection_method': 'slurm'})
  assert distributed.initialize(mode='off') is None
  assert distributed.initialize(mode='on') == 'jax'
  assert calls.pop() == ((None, None, None), {})
  assert calls == []


def test_incomplete_flags_are_one_clear_error(calls):
  with pytest.raises(AffectJaxError, match='--num_processes, --process_id '
                     'missing'):
    distributed.initialize('10.0.0.1:1234')
  with pytest.raises(AffectJaxError, match=r'--process_id=2 must be in '
                     r'\[0, 2\)'):
    distributed.initialize('10.0.0.1:1234', 2, 2)
  with pytest.raises(AffectJaxError, match='--distributed=off but '
                     '--coordinator_address given'):
    distributed.initialize('10.0.0.1:1234', mode='off')
  assert calls == []


def test_the_batch_must_divide_by_processes_and_devices():
  assert ip.local_batch_size(8, process_count=2, device_count=4) == 4
  with pytest.raises(AffectJaxError, match=r'batch_size=6 must be divisible '
                     r'by the number of processes \(4\)'):
    ip.local_batch_size(6, process_count=4, device_count=4)
  with pytest.raises(AffectJaxError, match=r'batch_size=8 must be divisible '
                     r'by the number of devices \(16\)'):
    ip.local_batch_size(8, process_count=2, device_count=16)


def test_process_rows_are_contiguous_blocks_of_each_global_batch():
  ds = grain.MapDataset.range(12)
  rows = [ip.process_batches(ds, 6, p, 3) for p in range(3)]
  assert [list(r[1]) for r in rows] == [[6, 7], [8, 9], [10, 11]]
  assert all(len(r) == 2 for r in rows)


@pytest.fixture
def as_process(monkeypatch):
  """Makes the pipeline believe it is process `p` of `n` (one device)."""
  def become(p, n):
    monkeypatch.setattr(jax, 'process_index', lambda: p)
    monkeypatch.setattr(jax, 'process_count', lambda: n)
  return become


def _batches(ds, n):
  return [ds[i] for i in range(n)]


def test_each_process_loads_its_disjoint_share_of_the_same_batches(
    make_tiny_config, as_process):
  config = make_tiny_config()
  cfg = common.resolve_stage(config, 'finetune')
  split = ip.load_split(cfg.dataset, 'train')
  val = ip.load_split(cfg.dataset, 'validation')

  def datasets():
    return (ip.train_dataset(split, config.input, 4, seed=3, augment=True),
            ip.eval_dataset(val, config.input, 4))

  train_one, eval_one = datasets()
  as_process(0, 2)
  train0, eval0 = datasets()
  as_process(1, 2)
  train1, eval1 = datasets()
  num_eval = len(eval_one)
  assert len(eval0) == len(eval1) == num_eval
  for one, zero, first in ((_batches(train_one, 5), _batches(train0, 5),
                            _batches(train1, 5)),
                           (_batches(eval_one, num_eval),
                            _batches(eval0, num_eval),
                            _batches(eval1, num_eval))):
    for b, b0, b1 in zip(one, zero, first):
      assert len(b0[ip.F.VIDEO_INDEX]) == len(b1[ip.F.VIDEO_INDEX]) == 2
      # Process 0's rows, then process 1's: the one-process global batch,
      # frames and augmentation included.
      for key in b:
        np.testing.assert_array_equal(
            np.concatenate([b0[key], b1[key]]), b[key], err_msg=key)
  # Evaluation: the two shares are disjoint and cover every frame once.
  seen = []
  for ds in (eval0, eval1):
    for b in _batches(ds, num_eval):
      real = b[ip.F.MASK] > 0
      vids = np.broadcast_to(b[ip.F.VIDEO_INDEX][:, None], real.shape)
      seen += list(zip(vids[real], b[ip.FRAME_INDEX][real]))
  assert len(seen) == len(set(seen)) == val.num_frames


def test_a_batch_that_does_not_split_over_processes_is_refused(
    make_tiny_config, as_process):
  config = make_tiny_config()
  split = ip.load_split(common.resolve_stage(config, 'finetune').dataset,
                        'train')
  as_process(0, 2)
  with pytest.raises(AffectJaxError, match='batch_size=3 must be divisible'):
    ip.train_dataset(split, config.input, 3, seed=0)


STEPS = 6


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _main(config_file, workdir, *flags, devices=1):
  """`python -m affect_jax.main` on `devices` CPU devices (not waited for)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} '
             + QUICK_XLA_FLAGS)
  return subprocess.Popen(
      [sys.executable, '-m', 'affect_jax.main', f'--config={config_file}',
       f'--workdir={workdir}', *flags],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)


def _two_processes(config_file, workdir):
  address = f'127.0.0.1:{_free_port()}'
  return [_main(config_file, workdir, f'--coordinator_address={address}',
                '--num_processes=2', f'--process_id={i}') for i in (0, 1)]


def _finish(procs, timeout=300):
  """(returncode, stdout, stderr) of each process; none is left running."""
  out = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=timeout)
      out.append((p.returncode, stdout, stderr))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return out


@pytest.mark.slow
def test_two_processes_train_as_one_and_stop_together_on_sigterm(
    tiny_data_dir, tmp_path):
  config_file = write_config(tmp_path / 'tiny.py', tiny_data_dir, STEPS,
                             eval_every=3, checkpoint_every=3,
                             stages='finetune,test', batch_size=4)
  # The reference: one process with the same two (simulated) devices.
  ref = concurrent.futures.ThreadPoolExecutor(1).submit(
      _finish, [_main(config_file, tmp_path / 'one', devices=2)])
  two = tmp_path / 'two'
  procs = _two_processes(config_file, two)
  lines = []
  for line in procs[0].stdout:  # Only process 0 logs.
    lines.append(line)
    if '] step 2/' in line:
      procs[1].send_signal(signal.SIGTERM)  # One process gets the signal.
      break
  (rc0, out0, err0), (rc1, out1, err1) = _finish(procs)
  out0 = ''.join(lines) + out0
  assert (rc0, rc1) == (143, 143), (err0[-2000:], err1[-2000:])
  stage = two / 'finetune'
  stopped_at, _ = _final_params(stage)
  assert 2 <= stopped_at < STEPS, out0
  # Both stopped after the same step, saved together (one checkpoint).
  assert (f'[finetune] SIGTERM: saved the latest checkpoint at step '
          f'{stopped_at} in {stage / "checkpoints" / "latest"}.') in out0
  for err in (err0, err1):
    assert err.strip().splitlines()[-1] == (
        f'Stopped by SIGTERM at step {stopped_at}; rerun the same command '
        'to resume from there.')
  assert 'process 0 of 2, 1 of 2 devices here' in out0
  assert [l for l in out1.splitlines() if not l.startswith('[Gloo]')] == [
      'jax.distributed (flags): process 1 of 2, 1 of 2 devices here.']

  # The same command resumes; the finished run equals the one-process run.
  ((rc0, out0, err0), (rc1, _, err1)), ((rc, _, err),) = (
      _finish(_two_processes(config_file, two)), ref.result())
  assert (rc0, rc1, rc) == (0, 0, 0), (err0[-2000:], err1[-2000:],
                                       err[-2000:])
  assert f'[finetune] resuming from step {stopped_at}.' in out0
  one = tmp_path / 'one'
  step, got = _final_params(stage)
  step_ref, want = _final_params(one / 'finetune')
  assert step == step_ref == STEPS
  # Bitwise: each device holds the same rows and computes the same sums
  # (gloo's all-reduce of two shards = the in-process one).
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert _losses(stage / 'metrics.csv') == _losses(
      one / 'finetune' / 'metrics.csv')  # Logged once, by process 0.
  assert _scalars(stage / 'metrics.csv', 'val/') == _scalars(
      one / 'finetune' / 'metrics.csv', 'val/')
  # Evaluation gathered every process's windows: the same predictions.
  for name in ('test.csv', 'validation.csv'):
    assert ((two / 'test' / 'predictions' / name).read_text() ==
            (one / 'test' / 'predictions' / name).read_text())
  assert not (two / 'RUNNING.lock').exists()


def _scalars(csv_path, prefix):
  import csv  # pylint: disable=g-import-not-at-top
  with open(csv_path) as f:
    return {(r['step'], r['name']): r['value'] for r in csv.DictReader(f)
            if r['name'].startswith(prefix)}
