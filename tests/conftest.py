"""Shared fixtures: a tiny synthetic dataset and a tiny experiment config."""

import ml_collections
import pytest

from configs import realeyes


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """The `tiny` synthetic_faces config built once for the whole session."""
  from affect_jax import prepare  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  prepare.prepare('synthetic_faces/tiny', data_dir, None)
  return data_dir


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """configs/realeyes.py:synthetic shrunk to run in seconds in tests."""
  c = realeyes.get_config('synthetic')
  for stage in ('pretrain', 'finetune', 'test'):
    c[stage].dataset.builder_config = 'tiny'
    c[stage].dataset.data_dir = data_dir
    c[stage].dataset.build_if_missing = False
  c.batch_size = 2
  c.log_every_steps = 1
  c.model.width = 4
  c.model.stage_sizes = (1, 1, 1, 1)
  c.model.lstm_hidden = 8
  c.input.window = 4
  c.input.train_stride = 2
  c.input.image_size = 32
  c.input.resize_size = 36
  c.input.num_threads = 1
  for stage in ('pretrain', 'finetune'):
    c[stage].num_train_steps = 4
    c[stage].eval_every_steps = 2
    c[stage].checkpoint_every_steps = 2
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

