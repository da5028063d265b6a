"""Gradient accumulation: k micro-batches give the big batch's update."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from affect_jax import input_pipeline as ip
from affect_jax import losses
from affect_jax import train
from affect_jax.errors import AffectJaxError
from configs import common


def _sgd_state(stage, variables):
  """A state whose one step moves params by exactly -grad (SGD, lr 1)."""
  variables = jax.tree.map(jnp.copy, variables)  # The step donates it.
  return train.TrainState.create(
      apply_fn=stage.model.apply, params=variables['params'],
      tx=optax.sgd(1.0), batch_stats=variables['batch_stats'])


def test_accumulated_step_equals_the_big_batch_step(make_tiny_config):
  # Frozen BatchNorm (running statistics) and no dropout: nothing in the
  # model depends on which windows share a batch, so the weighted BCE and
  # its gradient over 2 micro-batches of 2 are those over the batch of 4.
  config = make_tiny_config(**{'model.frozen_bn': True, 'batch_size': 4})
  cfg = common.resolve_stage(config, 'pretrain')
  split = ip.load_split(cfg.dataset, 'train')
  cw = np.asarray(losses.class_weights_from_counts(split.emotion_counts()))
  batch = ip.train_dataset(split, config.input, 4, seed=0, augment=False)[0]
  got = {}
  for k in (1, 2):
    cfg.grad_accum_steps = k
    stage = train.Stage(config, cfg, n_out=8, class_weights=cw)
    if k == 1:
      variables = stage.init_variables(0)
    state = _sgd_state(stage, variables)
    if k == 2:  # The accumulation loop is there (a scan: an XLA while).
      lowered = stage._train_step.lower(
          state, ip_device(stage, batch)).as_text()
      assert 'while' in lowered
    new, m = stage.train_step(state, batch)
    grads = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b),
                         jax.device_get(variables['params']),
                         jax.device_get(new.params))
    got[k] = (float(m.compute()['loss']), grads)
  assert got[2][0] == pytest.approx(got[1][0], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                       atol=1e-6),
               got[2][1], got[1][1])
  assert max(np.abs(g).max() for g in jax.tree.leaves(got[1][1])) > 1e-3


def ip_device(stage, batch):
  from affect_jax import inference  # pylint: disable=g-import-not-at-top
  return inference.to_device(batch, stage.data_sharding, train._TRAIN_KEYS)


def test_training_with_accumulation_runs_and_checks_the_batch(
    make_tiny_config, tmp_path):
  config = make_tiny_config(batch_size=4)
  cfg = common.resolve_stage(config, 'finetune')
  cfg.init_from = ''
  cfg.num_train_steps = 3
  cfg.eval_every_steps = 3
  cfg.grad_accum_steps = 2
  split = ip.load_split(cfg.dataset, 'train')
  summary = train.train(config, cfg, str(tmp_path), split, split,
                        name='finetune')
  assert summary['final_step'] == 3 and summary['best_step'] == 3
  with open(tmp_path / 'metrics.csv') as f:
    logged = {int(r['step']): float(r['value']) for r in csv.DictReader(f)
              if r['name'] == 'train/loss'}
  assert sorted(logged) == [1, 2, 3]
  assert all(0 <= v <= 2 for v in logged.values())  # 1 - CCC.
  cfg.grad_accum_steps = 3
  with pytest.raises(AffectJaxError, match='divide batch_size=4'):
    train.Stage(config, cfg, n_out=2)
