"""The zoo beyond ResNet/LSTM: parameter counts, CNN-M, GRU, peephole LSTM,
AffWildNet with landmarks, the 4K models, dropout modes, freezing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from affect_jax import models
from affect_jax.errors import AffectJaxError
from affect_jax.models import GRU, LSTM, ConvNet, convnet


def _key(seed: int = 0):
  return jax.random.key(seed, impl='rbg')  # Compiles faster (test_models).


def _normal(shape, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape, np.float32)


def _num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _shapes(model, *args, **kwargs):
  """Variables (and output) as ShapeDtypeStructs: nothing is computed."""
  return jax.eval_shape(
      lambda: model.init_with_output(_key(), *args, train=False, **kwargs))


# ------------------------------------------------------- parameter counts ---


@pytest.mark.parametrize('arch, num_classes, expected', [
    ('vgg16', 1000, 138_357_544),  # torchvision vgg16.
    ('vgg_face', 2622, 145_002_878),  # VGG-16 with 2,622 identities.
    ('alexnet', 1000, 61_100_840),  # torchvision alexnet.
    ('resnet50', 1000, 25_557_032),  # torchvision resnet50.
])
def test_torchvision_parameter_counts(arch, num_classes, expected):
  model = models.build(arch, num_classes=num_classes)
  # torchvision's adaptive pooling makes the count independent of the input.
  for size in (224, 112):
    _, variables = _shapes(model, jnp.zeros((1, size, size, 3)))
    assert _num_params(variables['params']) == expected


def test_vgg_face_is_vgg16_with_a_2622_way_last_layer():
  vgg16 = 138_357_544
  assert 145_002_878 == vgg16 - (4096 * 1000 + 1000) + (4096 * 2622 + 2622)


# kollias2019 Table 4 (TensorFlow notation). Conv layers carry no bias (none
# is listed, "biases in the fully connected layers"); each batch norm has a
# scale and an offset (2 x channels); fc 1's input is the flattened last
# pool, so the count depends on the input size:
#   96x96:  conv1 VALID s2 -> 45, pool 3/2 VALID -> 22, conv2 SAME s2 -> 11,
#           pool 3/2 SAME -> 6, conv3-5 -> 6, pool 2/2 SAME -> 3: 3*3*512
#   224x224: 109 -> 54 -> 27 -> 14 -> 14 -> 7: 7*7*512
_CNN_M_CONV = (7 * 7 * 3 * 96          # conv 1      14,112
               + 5 * 5 * 96 * 256      # conv 2     614,400
               + 3 * 3 * 256 * 512     # conv 3   1,179,648
               + 3 * 3 * 512 * 512     # conv 4   2,359,296
               + 3 * 3 * 512 * 512)    # conv 5   2,359,296 -> 6,526,752
_CNN_M_BN = 2 * (96 + 256 + 512 + 512 + 512)  # 3,776
_CNN_M_FC2 = 4096 * 2 + 2  # 8,194


@pytest.mark.parametrize('size, flat, expected', [
    (96, 3 * 3 * 512, 25_417_186),
    (224, 7 * 7 * 512, 109_303_266),
])
def test_cnn_m_parameter_count_from_table_4(size, flat, expected):
  fc1 = flat * 4096 + 4096
  assert _CNN_M_CONV == 6_526_752
  assert _CNN_M_CONV + _CNN_M_BN + fc1 + _CNN_M_FC2 == expected
  model = models.build('cnn_m', num_classes=2)
  (out, variables) = _shapes(model, jnp.zeros((1, size, size, 3)))
  assert out.shape == (1, 2)
  assert _num_params(variables['params']) == expected
  assert variables['params']['classifier_0']['kernel'].shape == (flat, 4096)
  # The Table 4 net as a per-frame video model: trunk, fc 1, head (fc 2).
  video = models.build('cnn_m_frames', num_outputs=2)
  (out, variables) = _shapes(video, jnp.zeros((1, 2, size, size, 3)))
  assert out.shape == (1, 2, 2)
  assert _num_params(variables['params']) == expected


def test_cnn_m_batchnorm_modes_and_tf_padding():
  model = ConvNet(features=convnet.cnn_m_features(width=8))
  x = _normal((2, 45, 45, 3)) * 2 + 1
  out, variables = jax.jit(model.init_with_output)(_key(), x)
  # 45 -> 20 -> 9 (VALID) -> 5 -> 3 (SAME) -> 2 (SAME); 512 * 8 // 96 = 42.
  assert out.shape == (2, 2 * 2 * 42)
  _, updates = jax.jit(functools.partial(
      model.apply, train=True, mutable=['batch_stats']))(variables, x)
  assert not np.allclose(updates['batch_stats']['features_1']['mean'], 0.0)
  frozen = ConvNet(features=convnet.cnn_m_features(width=8), frozen_bn=True)
  _, same = frozen.apply(variables, x, train=True, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, same['batch_stats'],
               variables['batch_stats'])


def test_adaptive_avg_pool_matches_torch_rule():
  x = _normal((1, 5, 3, 2))
  out = convnet.adaptive_avg_pool(x, 4)
  # torch: cell i covers floor(i*H/4) .. ceil((i+1)*H/4) - 1.
  rows = [(0, 2), (1, 3), (2, 4), (3, 5)]
  cols = [(0, 1), (0, 2), (1, 3), (2, 3)]
  for i, (a, b) in enumerate(rows):
    for j, (c, d) in enumerate(cols):
      np.testing.assert_allclose(out[0, i, j], x[0, a:b, c:d].mean((0, 1)),
                                 rtol=1e-6)
  np.testing.assert_allclose(convnet.adaptive_avg_pool(x[:, :4, :2], 2),
                             x[:, :4, :2].reshape(1, 2, 2, 2, 1, 2).mean(
                                 (2, 4)), rtol=1e-6)


# -------------------------------------------------------------- recurrent ---


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_peephole_lstm(p, x):
  """One-layer peephole LSTM (TF LSTMCell use_peepholes) in float64."""
  w_ih = np.asarray(p['ih_l0']['kernel'], np.float64)
  b = np.asarray(p['ih_l0']['bias'], np.float64)
  w_hh = np.asarray(p['hh_l0']['kernel'], np.float64)
  pi, pf, po = (np.asarray(p['hh_l0'][f'peephole_{g}'], np.float64)
                for g in 'ifo')
  hidden = w_hh.shape[0]
  out = np.zeros(x.shape[:2] + (hidden,))
  for n in range(x.shape[0]):
    h, c = np.zeros(hidden), np.zeros(hidden)
    for t in range(x.shape[1]):
      i, f, g, o = np.split(x[n, t] @ w_ih + b + h @ w_hh, 4)
      c = _sigmoid(f + pf * c) * c + _sigmoid(i + pi * c) * np.tanh(g)
      h = _sigmoid(o + po * c) * np.tanh(c)
      out[n, t] = h
  return out


def test_peephole_lstm_matches_reference():
  model = LSTM(hidden_size=4, peephole=True, unroll=2)
  x = _normal((2, 6, 3))
  params = model.init(_key(), x)['params']
  assert set(params['hh_l0']) == {'kernel', 'peephole_i', 'peephole_f',
                                  'peephole_o'}
  params = jax.tree.map(lambda p: p + 0.3 * _normal(p.shape, 1), params)
  out = jax.jit(model.apply)({'params': params}, x)
  np.testing.assert_allclose(out, _reference_peephole_lstm(params, x),
                             atol=1e-5)


def _reference_gru(p, x, mask):
  """torch.nn.GRU's equations (gates r, z, n), one layer, float64."""
  w_ih, b_ih, w_hh, b_hh = (np.asarray(a, np.float64) for a in (
      p['ih_l0']['kernel'], p['ih_l0']['bias'], p['hh_l0']['kernel'],
      p['hh_l0']['bias']))
  hidden = w_hh.shape[0]
  out = np.zeros(x.shape[:2] + (hidden,))
  for n in range(x.shape[0]):
    h = np.zeros(hidden)
    for t in range(x.shape[1]):
      if not mask[n, t]:
        continue
      xr, xz, xn = np.split(x[n, t] @ w_ih + b_ih, 3)
      hr, hz, hn = np.split(h @ w_hh + b_hh, 3)
      r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
      h = (1 - z) * np.tanh(xn + r * hn) + z * h
      out[n, t] = h
  return out


def test_gru_matches_reference_with_masking():
  model = GRU(hidden_size=5)
  x = _normal((2, 7, 3))
  mask = np.ones((2, 7), bool)
  mask[1, 3:] = False
  mask[0, 1] = False
  params = model.init(_key(), x)['params']
  out = jax.jit(model.apply)({'params': params}, x, mask=mask)
  np.testing.assert_allclose(out, _reference_gru(params, x, mask), atol=1e-5)


@pytest.mark.parametrize('cls', [LSTM, GRU])
def test_rnn_inter_layer_dropout_only_in_training(cls):
  model = cls(hidden_size=6, num_layers=2, dropout_rate=0.5)
  x = _normal((2, 5, 4))
  variables = model.init(_key(), x)
  apply = jax.jit(model.apply, static_argnames='train')
  eval_a = apply(variables, x)
  np.testing.assert_array_equal(eval_a, apply(variables, x, train=False))
  train_a = apply(variables, x, train=True, rngs={'dropout': _key(1)})
  train_b = apply(variables, x, train=True, rngs={'dropout': _key(2)})
  assert not np.allclose(train_a, eval_a)
  assert not np.allclose(train_a, train_b)


# ------------------------------------------------------------- composites ---


def test_affwildnet_fuses_landmarks_into_fc_and_uses_dropout():
  model = models.build('affwildnet', width=4, fc_features=(16,),
                       gru_hidden=8)
  frames = _normal((2, 3, 32, 32, 3))
  landmarks = np.random.default_rng(0).uniform(size=(2, 3, 68, 2))
  landmarks = landmarks.astype(np.float32)
  mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  init = jax.jit(functools.partial(model.init_with_output, train=False))
  out, variables = init(_key(), frames, mask=mask, landmarks=landmarks)
  assert out.shape == (2, 3, 2)
  params = variables['params']
  assert set(params) == {'trunk', 'fc', 'rnn', 'head'}
  assert 'batch_stats' not in variables  # VGG has no BatchNorm.
  # VGG-Face conv part at 32 px: 1x1x(8*4) features, plus 68 * 2 landmarks.
  assert params['fc']['dense0']['kernel'].shape == (32 + 136, 16)
  assert params['rnn']['hh_l1']['kernel'].shape == (8, 24)

  apply = jax.jit(model.apply, static_argnames='train')
  moved = apply(variables, frames, mask=mask, landmarks=landmarks + 0.1)
  assert not np.allclose(moved, out)
  train = [apply(variables, frames, mask=mask, landmarks=landmarks,
                 train=True, rngs={'dropout': _key(s)}) for s in (1, 2)]
  assert not np.allclose(train[0], train[1])
  np.testing.assert_allclose(
      apply(variables, frames, mask=mask, landmarks=landmarks), out,
      rtol=1e-6)

  with pytest.raises(AffectJaxError, match='landmarks'):
    model.init(_key(), frames)
  plain = models.build('affwildnet', width=4, fc_features=(16,),
                       gru_hidden=8, use_landmarks=False)
  _, v = _shapes(plain, jnp.zeros((1, 2, 32, 32, 3)))
  assert v['params']['fc']['dense0']['kernel'].shape == (32, 16)


def test_affwildnet_on_resnet50_defaults_to_fc_1500():
  model = models.build('affwildnet', trunk_arch='resnet50')
  _, v = _shapes(model, jnp.zeros((1, 2, 96, 96, 3)),
                 landmarks=jnp.zeros((1, 2, 68, 2)))
  assert v['params']['fc']['dense0']['kernel'].shape == (2048 + 136, 1500)
  assert v['params']['rnn']['ih_l0']['kernel'].shape == (1500, 384)
  assert v['params']['head']['kernel'].shape == (128, 2)


@pytest.mark.parametrize('arch, fc_in, fc', [
    ('alexnet_gru', 256 * 2 * 2, (4096, 4096)),  # 112 px -> 2x2x256.
    ('vgg16_gru', 512 * 3 * 3, (4096,)),  # 112 px -> 3x3x512.
    ('resnet50_gru', None, ()),
])
def test_4k_models(arch, fc_in, fc):
  model = models.build(arch, num_outputs=2)
  out, v = _shapes(model, jnp.zeros((4, 2, 112, 112, 3)))
  assert out.shape == (4, 2, 2)
  params = v['params']
  if fc:
    assert set(params) == {'trunk', 'fc', 'rnn', 'head'}
    assert params['fc']['dense0']['kernel'].shape == (fc_in, fc[0])
    assert len(params['fc']) == len(fc)
  else:
    assert set(params) == {'trunk', 'rnn', 'head'}
    assert params['rnn']['ih_l0']['kernel'].shape == (2048, 384)


@pytest.mark.parametrize('num_outputs', [8, 7, 2])
def test_heads_for_multilabel_softmax_and_regression(num_outputs):
  model = models.build('vgg16_frames', num_outputs=num_outputs, width=4,
                       fc_features=(8,))
  out, _ = _shapes(model, jnp.zeros((1, 3, 32, 32, 3)))
  assert out.shape == (1, 3, num_outputs) and out.dtype == jnp.float32


def test_lstm_composite_peephole_and_dropout_options():
  model = models.build('cnn_m_lstm', num_outputs=2, width=8, fc_features=(),
                       lstm_hidden=4, peephole=True, rnn_dropout=0.5)
  _, v = _shapes(model, jnp.zeros((1, 2, 48, 48, 3)))
  assert 'peephole_o' in v['params']['rnn']['hh_l1']
  assert 'batch_stats' in v and set(v['batch_stats']) == {'trunk'}


def test_build_errors():
  with pytest.raises(AffectJaxError, match='num_outputs, not num_classes'):
    models.build('vgg16_gru', num_outputs=2, num_classes=3)
  with pytest.raises(AffectJaxError, match='gru_layers'):
    models.build('alexnet_gru', num_outputs=2, gru_layers=4)
  with pytest.raises(AffectJaxError, match='stage_sizes'):
    models.build('vgg16_lstm', num_outputs=2, stage_sizes=(1,))
  with pytest.raises(AffectJaxError, match='trunk_arch'):
    models.build('affwildnet', trunk_arch='alexnet')
  with pytest.raises(AffectJaxError, match='num_outputs'):
    models.build('alexnet_frames')


# --------------------------------------------------------------- freezing ---


def test_trainable_labels_freeze_chosen_layers():
  model = models.build('resnet50_lstm', num_outputs=2, width=4,
                       stage_sizes=(1, 1), lstm_hidden=4)
  _, v = _shapes(model, jnp.zeros((1, 2, 32, 32, 3)))
  labels = models.trainable_labels(v['params'],
                                   ('trunk/conv1', 'trunk/bn1',
                                    'trunk/layer1_0'))
  assert labels['trunk']['conv1']['kernel'] == 'frozen'
  assert labels['trunk']['layer1_0']['bn3']['scale'] == 'frozen'
  assert labels['trunk']['layer2_0']['conv1']['kernel'] == 'train'
  assert labels['rnn']['ih_l0']['kernel'] == 'train'
  # Usable as optax labels: frozen parameters get no update.
  params = jax.tree.map(lambda s: jnp.ones(s.shape), v['params'])
  tx = optax.multi_transform(
      {'train': optax.sgd(0.1), 'frozen': optax.set_to_zero()}, labels)
  updates, _ = tx.update(params, tx.init(params), params)
  assert np.all(updates['trunk']['conv1']['kernel'] == 0)
  assert np.all(updates['trunk']['layer2_0']['conv1']['kernel'] != 0)
  with pytest.raises(AffectJaxError, match='trunk/layer1'):
    models.trainable_labels(v['params'], ('trunk/layer1',))
