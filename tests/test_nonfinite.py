"""A NaN / inf loss or gradient: stop naming the step and videos, or skip."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from affect_jax import input_pipeline as ip
from affect_jax import train
from affect_jax.errors import AffectJaxError
from configs import common

# Adam moves every weight by ~lr at step 1: activations overflow from step 2.
_DIVERGING_LR = 1e30


def _setup(make_tiny_config, on_nonfinite):
  config = make_tiny_config(stages='finetune')
  config.log_every_steps = 4
  cfg = common.resolve_stage(config, 'finetune')
  cfg.init_from = ''
  cfg.learning_rate = _DIVERGING_LR
  cfg.on_nonfinite = on_nonfinite
  cfg.num_train_steps = 4
  cfg.eval_every_steps = 4
  cfg.checkpoint_every_steps = 1
  split = ip.load_split(cfg.dataset, 'train')
  return config, cfg, split


def _latest(workdir):
  """(steps kept, the latest state as a host tree) of a stage's checkpoints."""
  mgr = ocp.CheckpointManager(str(workdir / 'checkpoints' / 'latest'))
  steps = list(mgr.all_steps())
  state = mgr.restore(steps[-1], args=ocp.args.Composite(
      state=ocp.args.StandardRestore())).state
  mgr.close()
  return steps, jax.device_get(state)


def test_nonfinite_step_stops_before_saving_then_skip_resumes_past_it(
    make_tiny_config, tmp_path, capsys):
  config, cfg, split = _setup(make_tiny_config, 'stop')
  ds = ip.train_dataset(split, config.input, config.batch_size, seed=cfg.seed,
                        augment=cfg.augment)
  videos = [split.video_ids[int(i)] for i in ds[1]['video_index']]
  with pytest.raises(AffectJaxError) as e:
    train.train(config, cfg, str(tmp_path), split, split, name='finetune')
  msg = str(e.value)
  # Step 1 starts from the initial weights; from step 2 on they are ~1e30.
  # Found at step 2 although the next log line is at step 4: the check
  # runs before the step-2 checkpoint, which is not written.
  assert msg.startswith(f'The loss or gradient was not finite at step 2 in '
                        f'{tmp_path} (batch of videos {videos}; 1 such')
  assert 'the latest checkpoint is of step 1' in msg
  assert "on_nonfinite='skip'" in msg
  assert _latest(tmp_path)[0] == [1]

  # Rerun with 'skip': resumes at step 1, and steps 2-4 change nothing.
  cfg.on_nonfinite = 'skip'
  _, at_1 = _latest(tmp_path)
  summary = train.train(config, cfg, str(tmp_path), split, split,
                        name='finetune')
  assert summary['final_step'] == 4 and summary['skipped_steps'] == 3
  assert 'skipped 3 step(s) with a non-finite loss or gradient' in (
      capsys.readouterr().out)
  steps, at_4 = _latest(tmp_path)
  assert steps == [4] and int(at_4['step']) == 4
  for part in ('params', 'opt_state', 'batch_stats'):
    same = jax.tree.map(np.array_equal, at_4[part], at_1[part])
    assert all(jax.tree.leaves(same)), part


def test_on_nonfinite_must_be_stop_or_skip(make_tiny_config):
  config = make_tiny_config()
  cfg = common.resolve_stage(config, 'finetune')
  cfg.on_nonfinite = 'ignore'
  with pytest.raises(AffectJaxError, match="on_nonfinite='ignore'"):
    train.Stage(config, cfg, n_out=2)
