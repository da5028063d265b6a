"""The README job end to end: it must learn, and a frozen random trunk must
not (the synthetic dataset's signal is in the faces, not in who or where
they are). Two of the slow tests of the suite.

The README job (configs/realeyes.py:synthetic, 54 test subjects, a
learning-rate drop for the last 330 of 1,440 fine-tuning steps) reached
test CCC valence 0.534-0.602 and arousal 0.708-0.769 over seeds 0-2 on the
pinned packages (constraints.txt), 2 AMD EPYC cores (one thread, seed 0:
0.535 / 0.815). Another processor or thread count is in effect another
seed (float32 rounding, docs/cluster.md), so the bars sit one observed seed
range (~0.06) below the lowest seed: room for rounding, far above the frozen
control (< 0.3)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ORIGINAL_XLA_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def default_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds_default'))


def _main(config, workdir, data_dir, *overrides):
  # These train for minutes: XLA's normal optimisation, not the suite's
  # quick compile mode (tests/conftest.py).
  env = dict(os.environ, TFDS_DATA_DIR=data_dir)
  env.pop('XLA_FLAGS', None)
  if ORIGINAL_XLA_FLAGS is not None:
    env['XLA_FLAGS'] = ORIGINAL_XLA_FLAGS
  out = subprocess.run(
      [sys.executable, '-m', 'affect_jax.main', f'--config={config}',
       f'--workdir={workdir}', *overrides],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  with open(os.path.join(workdir, 'test', 'results.json')) as f:
    return json.load(f), out.stdout


@pytest.mark.slow
def test_readme_main_job_learns(tmp_path, default_data_dir):
  results, stdout = _main('configs/realeyes.py:synthetic', str(tmp_path),
                          default_data_dir)
  assert results['ccc_valence'] >= 0.47, results
  assert results['ccc_arousal'] >= 0.65, results
  assert 'Test results' in stdout and 'frames/s' in stdout
  for stage in ('pretrain', 'finetune'):
    assert os.path.exists(tmp_path / stage / 'metrics.csv')
    assert os.path.exists(tmp_path / stage / 'learning_curves.png')
    assert any(n.startswith('events.out.tfevents')
               for n in os.listdir(tmp_path / stage))
  post = json.load(open(tmp_path / 'postprocess' / 'results.json'))
  assert post['test']['before']['ccc_valence'] == pytest.approx(
      results['ccc_valence'])


@pytest.mark.slow
def test_frozen_random_trunk_does_clearly_worse(tmp_path, default_data_dir):
  results, _ = _main('configs/realeyes.py:synthetic_frozen', str(tmp_path),
                     default_data_dir, '--config.finetune.num_epochs=5')
  assert results['ccc_valence'] < 0.3, results
  assert results['ccc_arousal'] < 0.3, results
