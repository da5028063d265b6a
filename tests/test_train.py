"""Train step, sharding, resume, the stage chain and the missing-data error."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from affect_jax import experiment
from affect_jax import input_pipeline as ip
from affect_jax import train
from affect_jax.errors import AffectJaxError
from configs import common
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _losses(csv_path):
  out = {}
  with open(csv_path) as f:
    for row in csv.DictReader(f):
      if row['name'] == 'train/loss':
        out[int(row['step'])] = float(row['value'])
  return out


def test_train_steps_lower_the_loss(make_tiny_config):
  config = make_tiny_config()
  cfg = common.resolve_stage(config, 'finetune')
  cfg.learning_rate = 3e-3
  split = ip.load_split(cfg.dataset, 'train')
  stage = train.Stage(config, cfg, n_out=2)
  state = stage.create_state(stage.init_variables(0))
  batch = next(ip.iterate(ip.train_dataset(split, config.input,
                                           config.batch_size, seed=0,
                                           augment=False), config.input))
  losses = []
  for _ in range(25):
    state, m = stage.train_step(state, batch)
    losses.append(float(m.compute()['loss']))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.6 * losses[0], losses


_DEVICE_SCRIPT = r'''
import json, sys
import jax
import numpy as np
from affect_jax import checkpointing, input_pipeline as ip, losses, train
from configs import common
from tests.conftest import tiny_config
out = {'devices': jax.device_count()}
for data, model in json.loads(sys.argv[2]):
  config = tiny_config(sys.argv[1])
  config.batch_size = 8
  config.mesh.data, config.mesh.model = data, model
  config.mesh.min_sharded_size = 64  # The tiny model's LSTM/FC kernels.
  cfg = common.resolve_stage(config, 'pretrain')
  split = ip.load_split(cfg.dataset, 'train')
  cw = np.asarray(losses.class_weights_from_counts(split.emotion_counts()))
  stage = train.Stage(config, cfg, n_out=8, class_weights=cw)
  state = stage.create_state(stage.init_variables(0))
  it = ip.iterate(ip.train_dataset(split, config.input, 8, seed=0),
                  config.input)
  got = {'losses': []}
  for _ in range(3):
    state, m = stage.train_step(state, next(it))
    got['losses'].append(float(m.compute()['loss']))
  batch = next(it)
  got['logits'] = np.asarray(stage.logits_fn(state)(batch)).tolist()
  flat = jax.tree_util.tree_flatten_with_path(state.params)[0]
  got['params'] = {jax.tree_util.keystr(k): np.asarray(v).ravel().tolist()
                   for k, v in flat}
  got['model_sharded'] = sorted(
      jax.tree_util.keystr(k) for k, v in flat
      if 'model' in tuple(v.sharding.spec))
  # The sharded state goes through an Orbax checkpoint unchanged.
  ckpts = checkpointing.StageCheckpoints(
      f'{sys.argv[3]}/{jax.device_count()}_{data}x{model}')
  ckpts.save_latest(3, state, {})
  ckpts.wait()
  fresh = stage.create_state(stage.init_variables(1))
  restored, _ = ckpts.restore_latest(fresh)
  got['restored_equal'] = all(jax.tree.leaves(jax.tree.map(
      lambda a, b: bool(np.array_equal(a, b)) and a.sharding == b.sharding,
      restored.params, state.params)))
  ckpts.close()
  out[f'{data}x{model}'] = got
# A batch that does not split over the data axis: refused before compiling
# (the stage) and at the copy to the devices (evaluation, prediction).
from affect_jax import inference
from affect_jax.errors import AffectJaxError
config.batch_size = 6
try:
  train.Stage(config, cfg, n_out=8)
except AffectJaxError as e:
  out['stage_error'] = str(e)
try:
  inference.to_device({'frames': np.zeros((6, 1))}, stage.data_sharding,
                      ['frames'])
except AffectJaxError as e:
  out['put_error'] = str(e)
print(json.dumps(out))
'''


def _run_on_devices(n, data_dir, meshes, workdir):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}',
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', _DEVICE_SCRIPT, data_dir,
                        json.dumps(meshes), str(workdir)],
                       cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_same_training_on_1_device_8_devices_and_a_model_axis(
    tiny_data_dir, tmp_path):
  one = _run_on_devices(1, tiny_data_dir, [(-1, 1)], tmp_path)
  eight = _run_on_devices(8, tiny_data_dir, [(-1, 1), (4, 2)], tmp_path)
  assert one['devices'] == 1 and eight['devices'] == 8
  ref = one['-1x1']
  assert ref['losses'][0] != ref['losses'][2]
  # Pure data parallelism replicates everything; a model axis of 2 splits
  # the recurrent and dense kernels (the trunk's convolutions stay whole).
  assert eight['-1x1']['model_sharded'] == []
  sharded = eight['4x2']['model_sharded']
  assert any('lstm' in k.lower() or 'rnn' in k.lower() for k in sharded), (
      sharded)
  assert not any('conv' in k.lower() for k in sharded), sharded
  for got in (eight['-1x1'], eight['4x2']):
    # BatchNorm statistics and the loss are over the global batch whatever
    # the mesh; float32 sums in another order: rtol 2e-4.
    np.testing.assert_allclose(got['losses'], ref['losses'], rtol=2e-4)
    np.testing.assert_allclose(got['logits'], ref['logits'], rtol=2e-3,
                               atol=1e-4)
    for k, v in ref['params'].items():
      np.testing.assert_allclose(got['params'][k], v, rtol=2e-3, atol=1e-5,
                                 err_msg=k)
    assert got['restored_equal']
  # (The last mesh of the 8-device run: data 4 x model 2.)
  assert 'batch_size=6 must be divisible by the number of devices (4) ' \
      'along the data axis' in eight['stage_error']
  assert eight['put_error'] == eight['stage_error']  # One check, one text.


def test_a_mesh_that_does_not_fit_the_devices_is_one_clear_error():
  from affect_jax import inference  # pylint: disable=g-import-not-at-top
  n = jax.device_count()
  with pytest.raises(AffectJaxError, match='config.mesh.model=0 must be'):
    inference.make_mesh(model=0)
  with pytest.raises(AffectJaxError, match=f'config.mesh.model={n + 1} must'):
    inference.make_mesh(model=n + 1)
  with pytest.raises(AffectJaxError,
                     match=rf'data={n + 4} x model=1 = {n + 4} devices'):
    inference.make_mesh(data=n + 4, model=1)
  config = common.experiment('x', '')
  config.mesh.modle = 2
  with pytest.raises(common.ConfigError, match="did you mean 'model'"):
    common.validate(config)


def test_prefetch_to_device_keeps_order_and_runs_ahead():
  from affect_jax import inference  # pylint: disable=g-import-not-at-top
  put = []

  def record(batch):
    put.append(batch)
    return batch * 10

  it = inference.prefetch_to_device(iter(range(5)), record, 2)
  assert next(it) == 0 and put == [0, 1, 2]  # Two batches in flight.
  assert list(it) == [10, 20, 30, 40] and put == [0, 1, 2, 3, 4]
  assert list(inference.prefetch_to_device(iter(range(3)), record, 0)) == [
      0, 10, 20]


def test_resume_continues_with_the_same_losses(make_tiny_config, tmp_path):
  """... also with batches copied to the device ahead or not."""
  def run(workdir, steps):
    config = make_tiny_config(stages='finetune')
    config.input.device_prefetch = 0 if workdir.name == 'straight' else 3
    config.finetune.init_from = ''
    config.finetune.num_train_steps = steps
    config.finetune.eval_every_steps = 3
    config.finetune.checkpoint_every_steps = 3
    return experiment.run(config, str(workdir))

  run(tmp_path / 'straight', 6)
  run(tmp_path / 'resumed', 3)
  # Simulate an interrupt after step 3: the stage is not marked done.
  os.remove(tmp_path / 'resumed' / 'finetune' / 'DONE.json')
  run(tmp_path / 'resumed', 6)
  straight = _losses(tmp_path / 'straight' / 'finetune' / 'metrics.csv')
  resumed = _losses(tmp_path / 'resumed' / 'finetune' / 'metrics.csv')
  assert sorted(resumed) == list(range(1, 7))
  for step in range(4, 7):
    assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6)


def test_freeze_trunk_keeps_trunk_params(make_tiny_config):
  config = make_tiny_config()
  cfg = common.resolve_stage(config, 'finetune')
  cfg.freeze = 'trunk'
  split = ip.load_split(cfg.dataset, 'train')
  stage = train.Stage(config, cfg, n_out=2)
  state = stage.create_state(stage.init_variables(0))
  before = jax.device_get(state.params)
  batch = next(ip.iterate(ip.train_dataset(split, config.input, 2, seed=0),
                          config.input))
  for _ in range(2):
    state, _ = stage.train_step(state, batch)
  after = jax.device_get(state.params)
  same = jax.tree.map(np.array_equal, before['trunk'], after['trunk'])
  assert all(jax.tree.leaves(same))
  assert not np.array_equal(before['head']['kernel'], after['head']['kernel'])


@pytest.mark.slow
def test_chain_runs_resumes_and_skips_finished_stages(tiny_run, capsys):
  workdir, config, results = tiny_run
  tmp_path = pathlib.Path(workdir)
  for stage in ('pretrain', 'finetune', 'test'):
    assert os.path.exists(tmp_path / stage / 'DONE.json')
  test = results['test']
  for k in ('ccc_valence', 'ccc_arousal', 'mse_valence', 'mse_arousal'):
    assert np.isfinite(test[k])
  with open(tmp_path / 'test' / 'results.md') as f:
    assert 'valence' in f.read()
  with open(tmp_path / 'test' / 'predictions' / 'test.csv') as f:
    rows = list(csv.DictReader(f))
  split = ip.load_split(config.test.dataset, 'test')
  assert len(rows) == split.num_frames
  info = json.load(open(tmp_path / 'config.json'))
  assert info['seed'] == 0 and info['model']['width'] == 4
  runs = os.listdir(tmp_path / 'runs')
  assert runs and 'jax' in json.load(open(tmp_path / 'runs' / runs[0]))[
      'versions']
  # Rerun: every stage is skipped.
  again = experiment.run(config, str(tmp_path))
  assert 'already finished' in capsys.readouterr().out
  assert again['test']['ccc_valence'] == test['ccc_valence']


def test_missing_real_dataset_is_one_clear_error(tmp_path):
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / 'tfds'))
  out = subprocess.run(
      [sys.executable, '-m', 'affect_jax.main',
       '--config=configs/realeyes.py', f'--workdir={tmp_path / "w"}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert 'Traceback' not in out.stderr
  err = out.stderr.strip().splitlines()[-1]
  assert err.startswith("error: config.pretrain.dataset: No prepared 'realeyes' dataset found")
  assert str(tmp_path / 'tfds' / 'realeyes') in err
  assert 'python -m affect_jax.prepare --dataset=realeyes' in err


def test_unknown_config_key_is_rejected(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'affect_jax.main',
       '--config=configs/realeyes.py:synthetic', f'--workdir={tmp_path}',
       '--config.num_trian_steps=3'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert 'num_trian_steps' in out.stderr


def test_tiny_config_helper_matches_fixture(tiny_data_dir):
  c = tiny_config(tiny_data_dir)
  assert c.pretrain.dataset.data_dir == tiny_data_dir


def test_init_from_trunk_only_checkpoint_keeps_head_and_rnn_fresh(
    make_tiny_config, tmp_path):
  # A checkpoint that holds only a trunk, as `affect_jax.import_weights`
  # writes it for ImageNet weights.
  from affect_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from affect_jax.errors import AffectJaxError  # pylint: disable=g-import-not-at-top
  config = make_tiny_config()
  cfg = common.resolve_stage(config, 'finetune')
  stage = train.Stage(config, cfg, n_out=2)
  donor = jax.device_get(stage.init_variables(seed=7))
  ckpts = checkpointing.StageCheckpoints(str(tmp_path / 'imported'))
  ckpts.save_best(0, {c: {'trunk': donor[c]['trunk']} for c in donor},
                  {'arch': 'resnet50'})
  ckpts.wait()
  fresh = stage.init_variables(seed=0)
  out = train.init_from_checkpoint(fresh, str(tmp_path / 'imported'),
                                   ('trunk', 'fc', 'rnn'))
  got = jax.device_get(out)
  for c in ('params', 'batch_stats'):
    same = jax.tree.map(np.array_equal, got[c]['trunk'], donor[c]['trunk'])
    assert all(jax.tree.leaves(same))
  np.testing.assert_array_equal(got['params']['head']['kernel'],
                                jax.device_get(fresh['params']['head']['kernel']))
  assert not np.array_equal(got['params']['rnn']['ih_l0']['kernel'],
                            donor['params']['rnn']['ih_l0']['kernel'])
  # A trunk of another width is refused with a message, not a crash.
  narrow = make_tiny_config(**{'model.width': 2})
  other = train.Stage(narrow, common.resolve_stage(narrow, 'finetune'), 2)
  with pytest.raises(AffectJaxError, match='not fit this model'):
    train.init_from_checkpoint(other.init_variables(0),
                               str(tmp_path / 'imported'), ('trunk',))
  with pytest.raises(AffectJaxError, match='holds none of'):
    train.init_from_checkpoint(fresh, str(tmp_path / 'imported'), ('rnn',))
