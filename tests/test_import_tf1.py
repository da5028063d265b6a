"""The released Aff-Wild TF1 models: bundle reader, name mapping, TF1 GRU.

tests/data/affwild_tf1 holds tiny checkpoints of the four released networks
written by TensorFlow with the released variable names (widths scaled down,
input 96 px) and TensorFlow's own outputs of the same graphs on frames.npz
(scripts/make_affwild_tf1_checkpoints.py, the only part that needs TF).
"""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affect_jax import checkpointing
from affect_jax import export
from affect_jax import features as F
from affect_jax import import_weights
from affect_jax import inference
from affect_jax.errors import AffectJaxError
from affect_jax.models import recurrent
from affect_jax.models import tf1_import
from affect_jax.models import tf_bundle
from affect_jax.models.recurrent import GRU
from tests import tf_bundle_writer

DATA = os.path.join(os.path.dirname(__file__), 'data', 'affwild_tf1')
STEPS = {'affwildnet_vggface': 12000, 'affwildnet_resnet': 7000,
         'vggface_4096': 3000, 'vggface_2000': 4000}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prefix(network):
  return os.path.join(DATA, network, f'model.ckpt-{STEPS[network]}')


def _frames():
  with np.load(os.path.join(DATA, 'frames.npz')) as z:
    return z['frames']  # uint8 [1, 5, 96, 96, 3]


# ------------------------------------------------------------ the reader ---


def test_crc32c_matches_the_standard_and_the_bytewise_form():
  assert tf_bundle.crc32c(b'123456789') == 0xE3069283  # The check value.
  data = np.random.default_rng(0).integers(0, 256, 70001, np.uint8)
  bytewise = tf_bundle._raw_crc_bytes(data.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
  assert tf_bundle.crc32c(data) == bytewise  # The NumPy lanes path.


def test_reader_reads_what_tensorflow_wrote():
  reader = tf_bundle.BundleReader(_prefix('affwildnet_vggface'))
  e = reader.entries
  assert e['conv_1/weights'].shape == (3, 3, 3, 2)
  assert e['conv_13/biases'].shape == (16,)
  assert e['linear_1/weights'].shape == (3 * 3 * 16, 16)
  gru = 'rnn_1/rnn/multi_rnn_cell/cell_0/gru_cell'
  assert e[f'{gru}/gates/kernel'].shape == (16 + 8, 16)
  assert e[f'{gru}/candidate/kernel'].shape == (16 + 8, 8)
  assert e['rnn_1/weights_rnn'].shape == (8, 2)
  # Training state TF's Adam leaves in a checkpoint.
  assert {'global_step', 'beta1_power', 'rnn_1/weights_rnn/Adam_1'} <= set(e)
  assert reader.read('global_step') == 12000
  assert e['global_step'].dtype_name == 'int64'
  w = reader.read('conv_1/weights')  # CRC-checked.
  assert w.dtype == np.float32 and np.std(w) > 0.1
  # The prefix, its .index, or its folder (TF's `checkpoint` file).
  for path in (_prefix('affwildnet_vggface') + '.index',
               os.path.join(DATA, 'affwildnet_vggface')):
    np.testing.assert_array_equal(tf_bundle.BundleReader(path).read(
        'conv_1/weights'), w)


def test_test_writer_round_trips_a_tensorflow_checkpoint(tmp_path):
  tensors = tf_bundle_writer.read_all(_prefix('vggface_4096'))
  tf_bundle_writer.write_bundle(str(tmp_path / 'c'), tensors)
  again = tf_bundle_writer.read_all(str(tmp_path / 'c'))
  assert sorted(again) == sorted(tensors)
  for k in tensors:
    np.testing.assert_array_equal(again[k], tensors[k])


def test_damaged_files_are_one_error_each(tmp_path):
  tensors = tf_bundle_writer.read_all(_prefix('vggface_4096'))
  prefix = str(tmp_path / 'model.ckpt-1')
  tf_bundle_writer.write_bundle(prefix, tensors)
  data = prefix + '.data-00000-of-00001'
  raw = bytearray(open(data, 'rb').read())
  raw[100] ^= 0x01
  open(data, 'wb').write(bytes(raw))
  with pytest.raises(AffectJaxError, match='CRC-32C.*download it again'):
    tf1_import.load_checkpoint('vggface_4096', prefix)
  open(data, 'wb').write(bytes(raw[:1000]))
  with pytest.raises(AffectJaxError, match='truncated'):
    tf1_import.load_checkpoint('vggface_4096', prefix)
  open(prefix + '.index', 'wb').write(b'not a table')
  with pytest.raises(AffectJaxError, match='not a TensorFlow checkpoint'):
    tf1_import.load_checkpoint('vggface_4096', prefix)
  with pytest.raises(AffectJaxError, match=r'No TensorFlow checkpoint .*'
                     r'nope\.index'):
    tf1_import.load_checkpoint('vggface_4096', str(tmp_path / 'nope'))


# --------------------------------------------------------- the TF1 GRU ---


def _numpy_tf1_gru_cell(x, h, gates_kernel, gates_bias, cand_kernel,
                        cand_bias):
  """TF1's GRUCell.call, in NumPy (float64)."""
  sig = lambda v: 1 / (1 + np.exp(-v))
  value = sig(np.concatenate([x, h], -1) @ gates_kernel + gates_bias)
  r, u = np.split(value, 2, axis=-1)
  c = np.tanh(np.concatenate([x, r * h], -1) @ cand_kernel + cand_bias)
  return u * h + (1 - u) * c


def test_gru_reset_before_equals_a_numpy_tf1_gru_cell():
  rng = np.random.default_rng(0)
  b, t, f, h = 2, 6, 5, 4
  x = rng.standard_normal((b, t, f)).astype(np.float32)
  layers = [(rng.standard_normal((fi + h, 2 * h)) * 0.6,
             1.0 + 0.3 * rng.standard_normal(2 * h),
             rng.standard_normal((fi + h, h)) * 0.6,
             0.2 * rng.standard_normal(h)) for fi in (f, h)]
  params = {}
  for k, (gk, gb, ck, cb) in enumerate(layers):
    fi = gk.shape[0] - h
    params[f'ih_l{k}'] = {'kernel': np.concatenate([gk[:fi], ck[:fi]], 1),
                          'bias': np.concatenate([gb, cb])}
    params[f'hh_l{k}'] = {'kernel': gk[fi:], 'candidate_kernel': ck[fi:]}
  model = GRU(hidden_size=h, num_layers=2, reset_after=False)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)['params']
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(
      lambda a: a.shape, params)
  out = np.asarray(model.apply({'params': params}, x))
  seq = x.astype(np.float64)
  for gk, gb, ck, cb in layers:
    state, outs = np.zeros((b, h)), []
    for i in range(t):
      state = _numpy_tf1_gru_cell(seq[:, i], state, gk, gb, ck, cb)
      outs.append(state)
    seq = np.stack(outs, 1)
  np.testing.assert_allclose(out, seq, rtol=1e-5, atol=1e-6)
  # The torch-style GRU is another function of the same inputs.
  torch_style = GRU(hidden_size=h, num_layers=2)
  v = torch_style.init(jax.random.PRNGKey(0), x)
  assert v['params']['hh_l0']['kernel'].shape == (h, 3 * h)


@pytest.mark.parametrize('unroll', [1, 3])
def test_gru_reset_before_backward_equals_autodiff_of_the_plain_scan(unroll):
  """The time loop's own backward with the TF1 cell (its candidate kernel
  a cell parameter): values and every gradient as autodiff's, with a
  padded tail and a hole in the mask."""
  rng = np.random.default_rng(1)
  b, t, h = 3, 7, 5
  cell = recurrent._gru_cell_reset_before
  cand = jnp.asarray(0.5 * rng.standard_normal((h, h)), jnp.float32)
  kernel = jnp.asarray(0.5 * rng.standard_normal((h, 2 * h)), jnp.float32)
  carry = (jnp.asarray(0.3 * rng.standard_normal((b, h)), jnp.float32),)
  gates_x = jnp.asarray(rng.standard_normal((b, t, 3 * h)), jnp.float32)
  valid = np.ones((b, t), bool)
  valid[1, 4:] = False
  valid[2, 2] = False
  cot = jnp.asarray(rng.standard_normal((b, t, h)), jnp.float32)

  def plain(p, k, c, gx):
    def body(c, inputs):
      g, v = inputs
      return recurrent._masked(cell, p, c, g, recurrent._hh(c[0], k), v)
    xs = (jnp.swapaxes(gx, 0, 1), jnp.swapaxes(valid, 0, 1))
    return jnp.swapaxes(jax.lax.scan(body, c, xs)[1], 0, 1)

  def loss(fn):
    return jax.jit(jax.value_and_grad(
        lambda *a: jnp.sum(fn(*a) * cot), argnums=(0, 1, 2, 3)))

  fast = loss(lambda p, k, c, gx: recurrent._recurrence(
      cell, p, k, c, gx, valid, unroll))
  (v_fast, g_fast), (v_plain, g_plain) = (
      fast(cand, kernel, carry, gates_x),
      loss(plain)(cand, kernel, carry, gates_x))
  np.testing.assert_allclose(v_fast, v_plain, rtol=1e-5, atol=1e-6)
  for a, e in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain)):
    assert np.any(np.asarray(e) != 0)
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
  assert np.all(g_fast[3][1, 4:] == 0) and np.all(g_fast[3][2, 2] == 0)


# ------------------------------------------------------------ the import ---


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """Each network imported by the command's function into a model folder."""
  root = tmp_path_factory.mktemp('imported')
  out = {}
  for network in STEPS:
    out[network] = str(root / network)
    import_weights.import_affwild_tf1(network, _prefix(network),
                                      out[network])
  return out


@pytest.mark.parametrize('network', list(STEPS))
def test_imported_model_equals_tensorflows_forward(imported, network):
  """The model folder as predict / test stages load it (record, symmetric
  normalisation, head order) gives TensorFlow's outputs to 1e-5."""
  predictor = inference.Predictor.load(imported[network])
  meta = predictor.meta
  assert meta['step'] == STEPS[network]
  assert meta['task'] == 'va' and meta['outputs'] == ['arousal', 'valence']
  assert meta['input'] == {'window': 80, 'image_size': 96,
                           'resize_size': 96, 'normalization': 'symmetric'}
  assert meta['data']['detector'] == 'dlib'
  assert meta['imported_from']['network'] == network
  frames = _frames()
  b, t = frames.shape[:2]
  batch = {F.FRAMES: frames, F.MASK: np.ones((b, t), np.float32),
           F.LANDMARKS: np.zeros((b, t, 68, 2), np.float32)}
  ours = np.asarray(predictor.logits(batch))  # [B, T, (arousal, valence)]
  tf_out = np.load(os.path.join(DATA, network, 'tf_outputs.npy'))
  tf_out = tf_out.reshape(b, t, 2)  # (valence, arousal), TF's order.
  np.testing.assert_allclose(ours[..., 1], tf_out[..., 0], atol=1e-5)
  np.testing.assert_allclose(ours[..., 0], tf_out[..., 1], atol=1e-5)
  # The frames matter: outputs vary far beyond the tolerance.
  assert np.ptp(tf_out[0, :, 0]) > 1e-2
  with open(os.path.join(imported[network], 'model.json')) as f:
    assert json.load(f)['model'] == meta['model']


def test_released_layouts_are_the_affect_jax_models(imported):
  cfg = {n: checkpointing.load_model(p)[1]['model']
         for n, p in imported.items()}
  assert cfg['affwildnet_vggface']['arch'] == 'affwildnet'
  assert cfg['affwildnet_vggface']['trunk_arch'] == 'vgg_face'
  assert cfg['affwildnet_resnet']['trunk_arch'] == 'resnet_v1_50'
  assert cfg['affwildnet_resnet']['fc_features'] == []
  assert cfg['affwildnet_resnet']['stage_sizes'] == [3, 4, 6, 3]
  for n in ('affwildnet_vggface', 'affwildnet_resnet'):
    assert cfg[n]['gru_reset_after'] is False
    assert cfg[n]['gru_layers'] == 2 and not cfg[n]['use_landmarks']
  assert cfg['vggface_4096']['fc_features'] == [16, 16]
  assert cfg['vggface_2000']['fc_features'] == [16, 10]


def test_export_takes_the_imported_folder(imported, tmp_path):
  out = str(tmp_path / 'exported')
  record = export.export(imported['affwildnet_resnet'], out)
  assert record['imported_from']['network'] == 'affwildnet_resnet'
  v1, _ = checkpointing.load_model(imported['affwildnet_resnet'])
  v2, _ = checkpointing.load_model(out)
  for a, b in zip(jax.tree.leaves(v1), jax.tree.leaves(v2)):
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------- name-mapping errors ---


def _broken(tmp_path, network, edit):
  tensors = tf_bundle_writer.read_all(_prefix(network))
  edit(tensors)
  prefix = str(tmp_path / 'model.ckpt-5')
  tf_bundle_writer.write_bundle(prefix, tensors)
  return prefix


GRU0 = 'rnn/rnn/multi_rnn_cell/cell_0/gru_cell'


@pytest.mark.parametrize('network, edit, message', [
    ('affwildnet_resnet',
     lambda t: t.update({f'{GRU0}/candidate/kernl':
                         t.pop(f'{GRU0}/candidate/kernel')}),
     rf"no tensor '{GRU0}/candidate/kernel'"),
    ('affwildnet_resnet',
     lambda t: t.update({'resnet_v1_50/block3/unit_6/bottleneck_v1/conv2/'
                         'weights': np.zeros((3, 3, 8, 9), np.float32)}),
     r"tensor 'resnet_v1_50/block3/unit_6/bottleneck_v1/conv2/weights' has "
     r'shape \[3, 3, 8, 9\]; affwildnet_resnet needs \[3, 3, 8, 8\]'),
    ('affwildnet_resnet',
     lambda t: t.update({'resnet_v1_50/conv1/BatchNorm/moving_variance':
                         t['resnet_v1_50/conv1/BatchNorm/moving_variance']
                         .astype(np.float64)}),
     r"tensor 'resnet_v1_50/conv1/BatchNorm/moving_variance' is float64, "
     'not float32'),
    ('affwildnet_vggface',
     lambda t: t.update({'linear_1/weights': t['linear_1/weights'][:100]}),
     r"tensor 'linear_1/weights' has shape \[100, 16\]; affwildnet_vggface "
     r'needs \[144, 16\]'),
    ('affwildnet_vggface',
     lambda t: t.update({'conv_14/weights': t['conv_13/weights']}),
     r"tensors \['conv_14/weights'\] are not part of affwildnet_vggface"),
    ('vggface_2000', lambda t: t.pop('conv_7/biases'),
     r"no tensor 'conv_7/biases'"),
])
def test_name_shape_dtype_errors_name_the_tensor(tmp_path, network, edit,
                                                 message):
  prefix = _broken(tmp_path, network, edit)
  with pytest.raises(AffectJaxError, match=message) as info:
    import_weights.import_affwild_tf1(network, prefix, str(tmp_path / 'out'))
  assert f'is not the released {network} checkpoint' in str(info.value)
  assert not os.path.exists(tmp_path / 'out')


def test_wrong_network_is_one_error(tmp_path):
  with pytest.raises(AffectJaxError, match='--network=vggface_2000'):
    tf1_import.load_checkpoint('vggface_4096', _prefix('vggface_2000'))
  with pytest.raises(AffectJaxError, match="no tensor 'conv_1/weights'"):
    tf1_import.load_checkpoint('vggface_4096', _prefix('affwildnet_resnet'))
  with pytest.raises(AffectJaxError, match="no tensor 'linear2_1/weights'"):
    tf1_import.load_checkpoint('vggface_4096', _prefix('affwildnet_vggface'))
  with pytest.raises(AffectJaxError, match="no tensor 'rnn_1/rnn/multi_rnn_"
                     "cell/cell_0/gru_cell/candidate/kernel'"):
    tf1_import.load_checkpoint('affwildnet_vggface', _prefix('vggface_4096'))


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], capture_output=True,
                        text=True, env=env, cwd=ROOT, timeout=300)


def test_command_error_is_one_line_and_exit_2(tmp_path):
  prefix = _broken(tmp_path, 'vggface_4096',
                   lambda t: t.pop('linear3_1/biases'))
  r = _cli('-m', 'affect_jax.import_weights', '--from=affwild-tf1',
           '--network=vggface_4096', f'--checkpoint={prefix}',
           f'--output={tmp_path / "out"}')
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and "no tensor 'linear3_1/biases'" in lines[0]
  r = _cli('-m', 'affect_jax.import_weights', '--from=affwild-tf1',
           '--network=vggface_4096', f'--output={tmp_path / "out"}')
  assert r.returncode == 2 and 'needs --checkpoint' in r.stderr


def test_command_then_predict_on_a_video(tmp_path):
  """The user's path: import with the command, then predict, plot and
  overlay a real face clip (scikit-image's astronaut, with frames of a
  faceless picture between): the imported model predicts where dlib finds
  her face, has_face=0 and empty values elsewhere; no synthetic warning."""
  data = pytest.importorskip('skimage.data')
  import cv2  # pylint: disable=g-import-not-at-top
  from tfds_builders import core  # pylint: disable=g-import-not-at-top
  from tfds_builders.core import video as video_lib  # pylint: disable=g-import-not-at-top
  astronaut = np.ascontiguousarray(data.astronaut()[:320])
  coffee = cv2.resize(data.coffee(), astronaut.shape[1::-1])
  with_face = (0, 1, 2, 5, 6)
  frames = [np.roll(astronaut, 3 * i, axis=1) if i in with_face else coffee
            for i in range(7)]
  path = str(tmp_path / 'astronaut.mp4')
  core.write_video(path, frames, fps=25, quality=18)
  model = str(tmp_path / 'model')
  r = _cli('-m', 'affect_jax.import_weights', '--from=affwild-tf1',
           '--network=affwildnet_vggface',
           f'--checkpoint={os.path.join(DATA, "affwildnet_vggface")}',
           f'--output={model}')
  assert r.returncode == 0, r.stderr
  assert 'step 12000' in r.stdout
  out = str(tmp_path / 'out.csv')
  overlay = str(tmp_path / 'out.mp4')
  r = _cli('-m', 'affect_jax.predict', f'--model={model}', f'--input={path}',
           f'--output={out}', f'--plot={tmp_path / "out.png"}',
           f'--overlay={overlay}')
  assert r.returncode == 0, r.stderr
  assert 'synthetic' not in r.stderr
  with open(out) as f:
    header, *rows = f.read().splitlines()
  assert header == ('frame,time_s,has_face,x0,y0,x1,y1,valence,arousal')
  cells = [row.split(',') for row in rows]
  assert [c[2] for c in cells] == ['1' if i in with_face else '0'
                                   for i in range(7)]
  values = np.array([[float(v) for v in c[-2:]] for c in cells
                     if c[2] == '1'])
  assert values.shape == (5, 2) and np.all(np.isfinite(values))
  assert all(c[-2:] == ['', ''] for c in cells if c[2] == '0')
  assert os.path.getsize(tmp_path / 'out.png') > 0
  drawn = [f.image for f in video_lib.iter_frames(overlay)]
  assert len(drawn) == 7 and drawn[0].shape == astronaut.shape
  # The gauge and box are drawn on the frames with a face only.
  assert np.abs(drawn[0].astype(int) - astronaut).mean() > np.abs(
      drawn[3].astype(int) - coffee).mean()


def test_tensorflow_is_never_imported():
  assert 'tensorflow' not in sys.modules


def test_a_test_stage_scores_the_imported_model(imported, make_tiny_config,
                                                tmp_path):
  """`checkpoint_from` = the imported folder, as for a trained run."""
  from affect_jax import experiment  # pylint: disable=g-import-not-at-top
  from affect_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  config = make_tiny_config()
  config.stages = 'test'
  config.test.checkpoint_from = imported['affwildnet_vggface']
  config.test.plots = False
  results = experiment.run(config, str(tmp_path))
  with open(tmp_path / 'test' / 'results.json') as f:
    scored = json.load(f)
  assert scored['checkpoint_step'] == STEPS['affwildnet_vggface']
  assert np.isfinite(scored['ccc_valence'])
  assert np.isfinite(scored['mse_arousal'])
  split = input_pipeline.load_split(config.test.dataset, 'test')
  with open(tmp_path / 'test' / 'predictions' / 'test.csv') as f:
    assert len(f.read().splitlines()) == split.num_frames + 1
  assert results['test']['ccc_valence'] == scored['ccc_valence']
