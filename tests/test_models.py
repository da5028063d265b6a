"""ResNet, LSTM and CNNRNN: parameter counts, shapes, BatchNorm modes,
masking, and the LSTM against a NumPy reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affect_jax import models
from affect_jax.errors import AffectJaxError
from affect_jax.models import CNNRNN, LSTM, ResNet
from affect_jax.models import recurrent

# Two 1-block stages at width 4: every code path (projection shortcuts,
# stride-2 blocks) at little compute.
TINY = dict(stage_sizes=(1, 1), width=4)


def _key(seed: int = 0):
  # XLA:CPU compiles a threefry draw per parameter in ~0.2 s; 'rbg' keys
  # compile ~3x faster and the tests do not care which numbers are drawn.
  return jax.random.key(seed, impl='rbg')


def _init(model, *args, **kwargs):
  """Jitted `model.init_with_output` (one compilation, not one per op)."""
  return jax.jit(functools.partial(model.init_with_output, **kwargs))(
      _key(), *args)


def _apply(model, variables, *args, **kwargs):
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, *args)


def _normal(shape, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape, np.float32)


def _num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(model, x_shape):
  """Variables as ShapeDtypeStructs: nothing is allocated or computed."""
  return jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.PRNGKey(0), jnp.zeros(x_shape))


# ----------------------------------------------------------------- ResNet ---


@pytest.mark.parametrize('num_classes, expected', [
    (None, 23_508_032),
    (1000, 25_557_032),  # torchvision resnet50.
])
def test_resnet50_parameter_count_matches_torchvision(num_classes, expected):
  variables = _abstract_init(ResNet(num_classes=num_classes), (1, 64, 64, 3))
  assert _num_params(variables['params']) == expected


def test_resnet50_names_follow_torchvision_state_dict():
  params = _abstract_init(ResNet(num_classes=10), (1, 64, 64, 3))['params']
  assert {'conv1', 'bn1', 'fc', 'layer1_0', 'layer4_2'} <= set(params)
  assert 'layer4_3' not in params and 'layer3_5' in params
  assert set(params['layer2_0']) == {
      'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample_conv',
      'downsample_bn'}
  assert 'downsample_conv' not in params['layer2_1']
  # v1.5: the stride sits on the 3x3; torch's [O, I, kh, kw] -> HWIO.
  assert params['layer2_0']['conv2']['kernel'].shape == (3, 3, 128, 128)
  assert params['conv1']['kernel'].shape == (7, 7, 3, 64)
  assert params['fc']['kernel'].shape == (2048, 10)


@pytest.mark.parametrize('stage_sizes', [(1, 1, 1, 1), (3, 4, 6, 3)])
def test_resnet_feature_shape_scales_with_width(stage_sizes):
  model = ResNet(stage_sizes=stage_sizes, width=8)
  out = jax.eval_shape(lambda x: model.init_with_output(_key(), x)[0],
                       jnp.zeros((2, 48, 48, 3)))
  assert out.shape == (2, 256)  # 32 * width.


def test_resnet_logits_and_zero_init_residual():
  model = ResNet(stage_sizes=(1,), width=4, num_classes=5,
                 zero_init_residual=True)
  x = _normal((2, 32, 32, 3), 1)
  logits, variables = _init(model, x)
  assert logits.shape == (2, 5)
  assert np.all(np.isfinite(logits))
  assert set(variables) == {'params', 'batch_stats'}
  block = variables['params']['layer1_0']
  assert np.all(block['bn3']['scale'] == 0)
  assert np.all(block['bn2']['scale'] == 1)
  assert np.all(block['downsample_bn']['scale'] == 1)


@pytest.fixture(scope='module')
def tiny_resnet():
  model = ResNet(**TINY)
  x = _normal((2, 32, 32, 3)) * 3.0 + 1.0
  _, variables = _init(model, x)
  return model, variables, x


def test_batchnorm_train_updates_stats(tiny_resnet):
  model, variables, x = tiny_resnet
  assert np.all(variables['batch_stats']['bn1']['mean'] == 0)
  _, updates = _apply(model, variables, x, train=True,
                      mutable=['batch_stats'])
  mean = updates['batch_stats']['bn1']['mean']
  # momentum 0.9 (torch's 0.1): running = 0.9 * 0 + 0.1 * batch mean.
  conv1 = jax.lax.conv_general_dilated(
      x, variables['params']['conv1']['kernel'], (2, 2), ((3, 3), (3, 3)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  assert not np.allclose(mean, 0.0)
  np.testing.assert_allclose(mean, 0.1 * conv1.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  assert not np.allclose(updates['batch_stats']['layer2_0']['bn3']['var'],
                         1.0)


def test_batchnorm_eval_has_no_cross_example_dependence(tiny_resnet):
  model, variables, x = tiny_resnet
  # Running statistics that differ from the initial 0 / 1.
  _, updates = _apply(model, variables, x, train=True,
                      mutable=['batch_stats'])
  variables = {'params': variables['params'], **updates}
  x_b = np.concatenate(
      [x[:1], _normal(x[1:].shape, 2)])
  # Train mode normalises over the batch: one example changes the other's.
  train_a = _apply(model, variables, x, train=True,
                   mutable=['batch_stats'])[0]
  train_b = _apply(model, variables, x_b, train=True,
                   mutable=['batch_stats'])[0]
  assert not np.allclose(train_a[0], train_b[0], rtol=1e-3)
  # Eval mode: running averages, each example on its own.
  eval_a = _apply(model, variables, x)
  eval_b = _apply(model, variables, x_b)
  eval_1 = _apply(model, variables, x[:1])
  np.testing.assert_allclose(eval_a[0], eval_b[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(eval_a[0], eval_1[0], rtol=1e-5, atol=1e-6)


def test_frozen_bn_never_updates_stats(tiny_resnet):
  _, variables, x = tiny_resnet
  model = ResNet(frozen_bn=True, **TINY)
  out, updates = _apply(model, variables, x, train=True,
                        mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, updates['batch_stats'],
               variables['batch_stats'])
  np.testing.assert_allclose(out, _apply(model, variables, x), rtol=1e-6)


# ------------------------------------------------------------------- LSTM ---


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_lstm(params, x, mask, num_layers):
  """torch.nn.LSTM's equations, step by step in float64 NumPy.

  Gate order i, f, g, o; padded steps keep the state and output zero.
  """
  h_in = np.asarray(x, np.float64)
  mask = np.asarray(mask, bool)
  for k in range(num_layers):
    w_ih = np.asarray(params[f'ih_l{k}']['kernel'], np.float64).T  # [4H, F]
    b = np.asarray(params[f'ih_l{k}']['bias'], np.float64)
    w_hh = np.asarray(params[f'hh_l{k}']['kernel'], np.float64).T  # [4H, H]
    hidden = w_hh.shape[1]
    batch, steps = h_in.shape[:2]
    out = np.zeros((batch, steps, hidden))
    for n in range(batch):
      h, c = np.zeros(hidden), np.zeros(hidden)
      for t in range(steps):
        if not mask[n, t]:
          continue
        z = w_ih @ h_in[n, t] + b + w_hh @ h
        i, f, g, o = np.split(z, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out[n, t] = h
    h_in = out
  return h_in


@pytest.mark.parametrize('num_layers', [1, 2, 3])
def test_lstm_shapes_and_param_layout(num_layers):
  model = LSTM(hidden_size=6, num_layers=num_layers)
  out, variables = _init(model, jnp.zeros((3, 5, 4)))
  assert out.shape == (3, 5, 6)
  params = variables['params']
  assert set(params) == ({f'ih_l{k}' for k in range(num_layers)}
                         | {f'hh_l{k}' for k in range(num_layers)})
  assert params['ih_l0']['kernel'].shape == (4, 24)
  assert params[f'ih_l{num_layers - 1}']['kernel'].shape == (
      (6 if num_layers > 1 else 4), 24)
  assert params['hh_l0']['kernel'].shape == (6, 24)
  # Forget-gate bias starts at 1, the other gates at 0.
  np.testing.assert_array_equal(params['ih_l0']['bias'],
                                np.repeat([0.0, 1.0, 0.0, 0.0], 6))


@pytest.mark.parametrize('num_layers, unroll', [(1, 1), (2, 3)])
def test_lstm_matches_numpy_reference(num_layers, unroll):
  model = LSTM(hidden_size=5, num_layers=num_layers, unroll=unroll)
  x = _normal((3, 7, 4))
  mask = np.ones((3, 7), np.float32)
  mask[1, 4:] = 0  # Padded tail.
  mask[2, 2] = 0  # A hole: the state must skip it.
  params = _init(model, x)[1]['params']
  # Non-trivial biases so the reference checks where they enter.
  params = jax.tree.map(lambda p: p + 0.1 * _normal(p.shape, 1), params)
  out = _apply(model, {'params': params}, x, mask=mask)
  ref = _reference_lstm(params, x, mask, num_layers)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
  # Without a mask every step is valid.
  out = _apply(model, {'params': params}, x)
  ref = _reference_lstm(params, x, np.ones((3, 7)), num_layers)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_lstm_valid_outputs_ignore_padding():
  model = LSTM(hidden_size=8, num_layers=2)
  x = _normal((2, 6, 3))
  lengths = np.array([6, 3])
  mask = (np.arange(6)[None] < lengths[:, None]).astype(np.float32)
  padded_zero = x * mask[..., None]
  garbage = 100.0 * _normal(x.shape, 1)
  padded_garbage = np.where(mask[..., None] > 0, x, garbage)
  variables = _init(model, x)[1]
  out_zero = _apply(model, variables, padded_zero, mask=mask)
  out_garbage = _apply(model, variables, padded_garbage, mask=mask)
  np.testing.assert_array_equal(out_zero, out_garbage)
  np.testing.assert_array_equal(out_zero[1, 3:], 0.0)
  assert np.all(np.abs(out_zero[1, :3]) > 0)
  # Row 0 (all valid) equals running it alone, unmasked.
  alone = _apply(model, variables, x[:1])
  np.testing.assert_allclose(out_zero[0], alone[0], rtol=1e-6, atol=1e-7)
  # ... and the valid prefix of row 1 equals running the prefix alone.
  prefix = _apply(model, variables, x[1:, :3])
  np.testing.assert_allclose(out_zero[1, :3], prefix[0], rtol=1e-6,
                             atol=1e-7)


def test_lstm_gradients_do_not_reach_padded_inputs():
  model = LSTM(hidden_size=4, num_layers=2)
  x = _normal((1, 5, 3))
  mask = jnp.array([[1, 1, 1, 0, 0]], jnp.float32)
  variables = _init(model, x)[1]
  grad = jax.jit(jax.grad(
      lambda x: model.apply(variables, x, mask=mask).sum()))(x)
  assert np.all(grad[0, 3:] == 0)
  assert np.all(np.any(grad[0, :3] != 0, axis=-1))


def _plain_recurrence(cell, params, kernel, carry, gates_x, valid):
  """`recurrent._recurrence` as a plain scan, differentiated by autodiff."""

  def body(carry, inputs):
    gx, v = inputs
    return recurrent._masked(cell, params, carry, gx,
                             recurrent._hh(carry[0], kernel), v)

  xs = (jnp.swapaxes(gates_x, 0, 1), jnp.swapaxes(valid, 0, 1))
  return jnp.swapaxes(jax.lax.scan(body, carry, xs)[1], 0, 1)


@pytest.mark.parametrize('kind, unroll', [
    ('lstm', 1), ('lstm', 3), ('peephole', 2), ('gru', 1), ('gru', 4)])
def test_recurrence_backward_equals_autodiff_of_the_plain_scan(kind, unroll):
  """The time loop's own backward: values and every gradient (cell params,
  recurrent kernel, input projections, initial state) as autodiff's,
  with a padded tail and a hole in the mask."""
  b, t, h = 3, 7, 5
  g = 3 if kind == 'gru' else 4
  cell = recurrent._gru_cell if kind == 'gru' else recurrent._lstm_cell
  params = {'lstm': (), 'gru': jnp.asarray(_normal((3 * h,), 1)),
            'peephole': tuple(jnp.asarray(_normal((h,), k)) for k in (2, 3, 4))
            }[kind]
  kernel = jnp.asarray(0.5 * _normal((h, g * h), 5))
  carry = tuple(jnp.asarray(0.3 * _normal((b, h), 6 + k))
                for k in range(1 if kind == 'gru' else 2))
  gates_x = jnp.asarray(_normal((b, t, g * h), 8))
  valid = np.ones((b, t), bool)
  valid[1, 4:] = False
  valid[2, 2] = False
  cot = jnp.asarray(_normal((b, t, h), 9))

  def loss(fn):
    return jax.jit(jax.value_and_grad(
        lambda *a: jnp.sum(fn(*a) * cot), argnums=(0, 1, 2, 3)))

  fast = loss(lambda p, k, c, gx: recurrent._recurrence(
      cell, p, k, c, gx, valid, unroll))
  plain = loss(lambda p, k, c, gx: _plain_recurrence(cell, p, k, c, gx, valid))
  (v_fast, g_fast), (v_plain, g_plain) = (
      fast(params, kernel, carry, gates_x),
      plain(params, kernel, carry, gates_x))
  np.testing.assert_allclose(v_fast, v_plain, rtol=1e-5, atol=1e-6)
  for a, e in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
  # Padding gets no gradient.
  assert np.all(g_fast[3][1, 4:] == 0) and np.all(g_fast[3][2, 2] == 0)


# ----------------------------------------------------------------- CNNRNN ---


def test_cnn_rnn_output_shape_and_top_level_names():
  model = models.build('resnet50_lstm', num_outputs=3, lstm_hidden=8,
                       lstm_layers=2, **TINY)
  assert isinstance(model, CNNRNN)
  frames = _normal((2, 3, 32, 32, 3))
  mask = jnp.array([[1, 1, 1], [1, 1, 0]], jnp.float32)
  out, variables = _init(model, frames, mask=mask)
  assert out.shape == (2, 3, 3)
  assert out.dtype == jnp.float32
  assert set(variables['params']) == {'trunk', 'rnn', 'head'}
  assert set(variables['batch_stats']) == {'trunk'}
  assert variables['params']['head']['kernel'].shape == (8, 3)
  assert variables['params']['trunk']['conv1']['kernel'].shape == (7, 7, 3, 4)

  # Train mode updates the trunk's statistics and differentiates end to end.
  def loss(params):
    out, new = model.apply({'params': params,
                            'batch_stats': variables['batch_stats']},
                           frames, mask=mask, train=True,
                           mutable=['batch_stats'])
    return jnp.sum(out**2), new
  grads, new = jax.jit(jax.grad(loss, has_aux=True))(variables['params'])
  assert set(new['batch_stats']) == {'trunk'}
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.any(grads['trunk']['conv1']['kernel'] != 0)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = models.build('resnet50_lstm', num_outputs=2, lstm_hidden=8,
                       dtype=jnp.bfloat16, **TINY)
  out, variables = jax.eval_shape(
      lambda x: model.init_with_output(_key(), x),
      jnp.zeros((1, 2, 32, 32, 3)))
  assert out.shape == (1, 2, 2) and out.dtype == jnp.float32
  dtypes = {x.dtype for x in jax.tree.leaves(variables)}
  assert dtypes == {jnp.dtype(jnp.float32)}


def test_cnn_only_applies_head_per_frame():
  model = models.build('resnet50_frames', num_outputs=2, **TINY)
  frames = _normal((2, 3, 32, 32, 3))
  out, variables = _init(model, frames)
  assert out.shape == (2, 3, 2)
  assert set(variables['params']) == {'trunk', 'head'}
  # Eval mode: each frame's output depends on that frame only.
  single = _apply(model, variables, frames[1:, 2:])
  np.testing.assert_allclose(out[1, 2], single[0, 0], rtol=1e-5, atol=1e-6)


def test_build_resnet_and_errors():
  assert isinstance(models.build('resnet50', num_classes=7, width=8), ResNet)
  with pytest.raises(AffectJaxError, match='resnet50_lstm'):
    models.build('resnet51')
  with pytest.raises(AffectJaxError, match='lstm_units'):
    models.build('resnet50_lstm', num_outputs=2, lstm_units=3)
  with pytest.raises(AffectJaxError, match='num_outputs'):
    models.build('resnet50_lstm')
  with pytest.raises(AffectJaxError, match='lstm_layers'):
    models.build('resnet50_lstm', num_outputs=2, lstm_layers=0)

