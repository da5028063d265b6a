"""Shared fixtures: a tiny synthetic dataset and a tiny experiment config."""

import os
import tempfile

# One persistent XLA compilation cache for the session (a fresh folder, as
# on CI), shared by the test processes and the commands they start: the many
# tests that compile the same tiny networks compile them once.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      tempfile.mkdtemp(prefix='affect_jax_xla_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
# Most of the suite's time is XLA compiling small networks that then run a
# few steps: XLA:CPU's quick mode compiles them in ~40% less CPU time
# (measured on tests/test_paper_experiments.py). The few tests that train
# for minutes (tests/test_main_job.py) run with `ORIGINAL_XLA_FLAGS`.
# AFFECT_JAX_TEST_FULL_XLA=1 keeps XLA's normal optimisation everywhere.
QUICK_XLA_FLAGS = ('--xla_backend_optimization_level=0 '
                   '--xla_llvm_disable_expensive_passes=true')
# The user's own XLA_FLAGS, kept in the environment: this module may be
# imported twice (by pytest and as tests.conftest), and the commands the
# tests start inherit it.
os.environ.setdefault('AFFECT_JAX_TEST_ORIGINAL_XLA_FLAGS',
                      os.environ.get('XLA_FLAGS', ''))
ORIGINAL_XLA_FLAGS = os.environ['AFFECT_JAX_TEST_ORIGINAL_XLA_FLAGS'] or None
if (os.environ.get('AFFECT_JAX_TEST_FULL_XLA', '0') in ('0', '') and
    QUICK_XLA_FLAGS not in os.environ.get('XLA_FLAGS', '')):
  os.environ['XLA_FLAGS'] = (
      f"{os.environ.get('XLA_FLAGS', '')} {QUICK_XLA_FLAGS}".strip())

import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from configs import common
from configs import realeyes


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """The `tiny` synthetic_faces config built once for the whole session."""
  from affect_jax import prepare  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  prepare.prepare('synthetic_faces/tiny', data_dir, None)
  return data_dir


def shrink(c: ml_collections.ConfigDict, data_dir: str,
           steps: int = 4) -> ml_collections.ConfigDict:
  """Any experiment config, shrunk to run in seconds on the tiny dataset."""
  for name in c:
    section = c[name]
    if isinstance(section, ml_collections.ConfigDict) and 'kind' in section:
      if 'dataset' in section:
        section.dataset = common.dataset('synthetic_faces', 'tiny')
        section.dataset.data_dir = data_dir
      if section.kind == 'train':
        section.num_epochs = None
        section.eval_every_epochs = None
        section.early_stopping_patience = 0
        section.num_train_steps = steps
        section.eval_every_steps = max(1, steps // 2)
        section.checkpoint_every_steps = max(1, steps // 2)
  shrink_model(c)
  c.log_every_steps = 1
  return c


def shrink_model(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config's network at test size, same structure: every trunk at
  width 4 (ResNet-50 with one block a stage), FC 16, RNN 8 units, windows
  of 4 frames of 32x32 (64x64 for AlexNet, whose strides need it), batch 2.
  """
  from affect_jax import models  # pylint: disable=g-import-not-at-top
  m = c.model
  trunk = m.get('trunk_arch') if m.arch == 'affwildnet' else next(
      t for t in models.TRUNKS if m.arch.startswith(t))
  m.width = 4
  if trunk == 'resnet50':
    m.stage_sizes = (1, 1, 1, 1)
  if trunk != 'resnet50' or m.get('fc_features'):
    m.fc_features = (16,)
  for key in ('lstm_hidden', 'gru_hidden'):
    if key in m or m.arch.endswith(key.split('_')[0]) or (
        key == 'gru_hidden' and m.arch == 'affwildnet'):
      m[key] = 8
  size = 64 if trunk == 'alexnet' else 32
  c.batch_size = 2
  c.input.window = 4
  c.input.train_stride = 2
  c.input.image_size = size
  c.input.resize_size = size + 4
  c.input.num_threads = 1
  return c


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """configs/realeyes.py:synthetic shrunk to run in seconds in tests."""
  c = shrink(realeyes.get_config('synthetic'), data_dir)
  for k, v in overrides.items():
    node = c
    *path, last = k.split('.')
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.fixture
def make_tiny_config(tiny_data_dir):
  return lambda **kw: tiny_config(tiny_data_dir, **kw)



@pytest.fixture(scope='session')
def tiny_run(tiny_data_dir, tmp_path_factory):
  """configs/realeyes.py:synthetic shrunk, run once for the session:
  pretrain, finetune, test, postprocess. Returns (workdir, config, results).
  """
  from affect_jax import experiment  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('run'))
  config = tiny_config(tiny_data_dir)
  results = experiment.run(config, workdir)
  return workdir, config, results


def pytest_collection_modifyitems(items):
  """The README job's test (tests/test_main_job.py, ~10 minutes) first: with
  `-n 2 --dist loadfile` one worker runs it while the other runs all the
  rest, instead of it starting last and running alone."""
  items.sort(key=lambda item: not item.nodeid.startswith(
      'tests/test_main_job.py'))
