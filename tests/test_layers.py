"""The fast layer forms against the plain Flax layers: values and gradients.

`Conv1x1` (a matmul) against `nn.Conv(k, (1, 1))`, the pools against
`nn.max_pool`, the strided convolution's input gradient by phases against
lax's, and the XLA flag's handling of `XLA_FLAGS`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affect_jax import xla_flags
from affect_jax.models import pooling
from affect_jax.models import resnet
from affect_jax.models import strided_conv


def _normal(shape, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape, np.float32)


def _value_and_grad(f, x):
  # A non-uniform cotangent, so a gradient routed to the wrong place shows.
  w = _normal(jax.eval_shape(f, x).shape, 1)
  return jax.jit(jax.value_and_grad(lambda x: jnp.sum(f(x) * w)))(x)


def _max_pool(k, s, p):
  return lambda x: nn.max_pool(x, (k, k), strides=(s, s),
                               padding=((p, p), (p, p)))


@pytest.mark.parametrize('shape', [(2, 7, 8, 3), (1, 6, 6, 2), (1, 1, 1, 1),
                                   (2, 12, 9, 4)])
@pytest.mark.parametrize('padding', [1, 0])
def test_max_pool_3x3_s2_values_and_grads(shape, padding):
  if padding == 0 and min(shape[1:3]) < 3:
    pytest.skip('no 3x3 window fits')
  x = _normal(shape)
  fast = lambda x: pooling.max_pool_3x3_s2(x, padding)
  got, got_dx = _value_and_grad(fast, x)
  want, want_dx = _value_and_grad(_max_pool(3, 2, padding), x)
  np.testing.assert_array_equal(fast(x), _max_pool(3, 2, padding)(x))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(got_dx, want_dx, rtol=1e-6, atol=1e-6)


def test_max_pool_3x3_s2_tie_goes_to_first_position():
  # torch's MaxPool2d: the first maximum in window order gets the gradient.
  x = jnp.zeros((1, 3, 3, 1))
  dx = jax.grad(lambda x: pooling.max_pool_3x3_s2(x, 0).sum())(x)
  np.testing.assert_array_equal(dx[0, :, :, 0],
                                [[1, 0, 0], [0, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize('shape', [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_max_pool_2x2_values_and_grads(shape):
  x = _normal(shape)
  got, got_dx = _value_and_grad(pooling.max_pool_2x2, x)
  want, want_dx = _value_and_grad(_max_pool(2, 2, 0), x)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(got_dx, want_dx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('strides', [1, 2])
def test_conv1x1_values_and_grads_match_nn_conv(strides):
  x = _normal((2, 7, 8, 5))
  conv = resnet.Conv1x1(6, strides=strides)
  ref = nn.Conv(6, (1, 1), strides=strides, padding='VALID', use_bias=False)
  variables = conv.init(jax.random.PRNGKey(0), x)
  w = _normal(ref.apply(variables, x).shape, 1)

  def loss(module):
    return jax.jit(jax.value_and_grad(
        lambda v, x: jnp.sum(module.apply(v, x) * w), argnums=(0, 1)))

  (got, (gv, gx)), (want, (wv, wx)) = (loss(conv)(variables, x),
                                       loss(ref)(variables, x))
  # The loss sums N*H*W*6 products of order 1 (|terms| ~ 300): float32
  # rounding of such a sum, in an order that depends on the thread split.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(gx, wx, rtol=1e-5, atol=1e-6)
  # A sum over N*H*W products, in a different order: float32 rounding.
  np.testing.assert_allclose(gv['params']['kernel'], wv['params']['kernel'],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('hw,kernel,strides,padding', [
    ((38, 38), (3, 3), (2, 2), ((1, 1), (1, 1))),  # ResNet's strided 3x3.
    ((19, 19), (3, 3), (2, 2), ((1, 1), (1, 1))),  # Odd: phases of 10 and 9.
    ((15, 12), (7, 7), (2, 2), ((3, 3), (3, 3))),  # The stem.
    ((13, 11), (5, 3), (3, 2), ((2, 0), (0, 1))),  # CNN-M-like, asymmetric.
    ((9, 8), (3, 3), (4, 1), ((0, 0), (1, 1))),  # Stride > kernel: no taps.
    ((7, 9), (3, 3), (2, 2), ((5, 0), (0, 0))),  # pad_lo > kernel - 1.
    ((9, 7), (3, 2), (2, 2), 'SAME'),
    ((8, 8), (3, 3), (1, 1), ((1, 1), (1, 1))),  # Unstrided: lax itself.
])
def test_strided_conv_values_and_grads_match_lax(hw, kernel, strides,
                                                 padding):
  x = _normal((2,) + hw + (3,))
  w = _normal(kernel + (3, 4), 2)
  dn = ('NHWC', 'HWIO', 'NHWC')
  fast = lambda x, w: strided_conv.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=dn)
  ref = lambda x, w: jax.lax.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=dn)
  cot = _normal(jax.eval_shape(ref, x, w).shape, 1)

  def grads(f):
    return jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) * cot),
                            argnums=(0, 1)))(x, w)

  np.testing.assert_array_equal(jax.jit(fast)(x, w), jax.jit(ref)(x, w))
  (gx, gw), (wx, ww) = grads(fast), grads(ref)
  # Sums of up to 3 * 4 * taps products of order 1, in another order.
  np.testing.assert_allclose(gx, wx, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(gw, ww)  # lax's own weight gradient.
  # Where no kernel tap meets an input pixel, its gradient is exactly 0.
  if strides[0] > kernel[0]:
    assert not np.any(gx[:, kernel[0]::strides[0]])


def test_strided_conv_in_nn_conv_keeps_its_parameters_and_values():
  x = _normal((2, 10, 9, 3))
  ref = nn.Conv(5, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  fast = nn.Conv(5, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                 conv_general_dilated=strided_conv.conv_general_dilated)
  variables = ref.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(fast.init(jax.random.PRNGKey(0), x)) == (
      jax.tree.structure(variables))
  np.testing.assert_array_equal(fast.apply(variables, x),
                                ref.apply(variables, x))
  cot = _normal(ref.apply(variables, x).shape, 1)
  grad = lambda m: jax.grad(
      lambda v, x: jnp.sum(m.apply(v, x) * cot), argnums=(0, 1))(
          variables, x)
  for got, want in zip(jax.tree.leaves(grad(fast)),
                       jax.tree.leaves(grad(ref))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_xla_flag_appended_to_users_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  assert xla_flags.apply(env)
  assert env['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=4 '
                              + xla_flags.FLAG)
  assert not xla_flags.apply(env)  # Idempotent.
  env = {}
  assert xla_flags.apply(env)
  assert env['XLA_FLAGS'] == xla_flags.FLAG


def test_xla_flag_keeps_users_own_setting_and_opt_out():
  own = '--xla_cpu_experimental_ynn_fusion_type=individual_dot'
  env = {'XLA_FLAGS': own}
  assert not xla_flags.apply(env)
  assert env['XLA_FLAGS'] == own
  env = {xla_flags.OPT_OUT_ENV: '0'}
  assert not xla_flags.apply(env)
  assert 'XLA_FLAGS' not in env


def test_xla_flag_is_in_effect_after_import():
  # conftest / the test run imported affect_jax before any JAX computation.
  import os  # pylint: disable=g-import-not-at-top
  if os.environ.get(xla_flags.OPT_OUT_ENV) == '0':
    pytest.skip('opted out')
  assert xla_flags.FLAG_NAME in os.environ.get('XLA_FLAGS', '')


def test_fast_layers_work_on_batch_sharded_arrays():
  # The trainer shards the batch over an explicit `data` mesh axis, where
  # every reshape of a sharded array needs its output sharding.
  mesh = jax.make_mesh((1,), ('data',))
  sharding = jax.sharding.NamedSharding(mesh,
                                        jax.sharding.PartitionSpec('data'))
  x = _normal((2, 9, 8, 4))
  conv = resnet.Conv1x1(3)
  variables = conv.init(jax.random.PRNGKey(0), x)

  def loss(x):
    return (jnp.sum(pooling.max_pool_3x3_s2(x)**2)
            + jnp.sum(pooling.max_pool_2x2(x)**2)
            + jnp.sum(conv.apply(variables, x)**2))

  got = jax.jit(jax.grad(loss))(jax.device_put(x, sharding))
  np.testing.assert_allclose(got, jax.grad(loss)(x), rtol=1e-5, atol=1e-6)
