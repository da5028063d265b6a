"""model.remat: the trunk recomputed in the backward pass, same numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affect_jax import models
from affect_jax.errors import AffectJaxError


def _tiny(**kw):
  return models.build('resnet50_lstm', num_outputs=2, width=4,
                      stage_sizes=(1, 1, 1, 1), lstm_hidden=8, **kw)


def test_remat_gives_the_same_loss_and_gradients():
  frames = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 32, 32, 3))
  targets = jax.random.normal(jax.random.PRNGKey(2), (2, 2, 2))
  plain, remat = _tiny(), _tiny(remat=True)
  variables = jax.jit(plain.init)(jax.random.PRNGKey(0), frames)
  # Same parameter names and shapes: checkpoints work either way.
  assert (jax.tree.structure(jax.eval_shape(remat.init, jax.random.PRNGKey(0),
                                            frames)) ==
          jax.tree.structure(variables))

  def loss_and_grads(model):
    def loss(params):
      out, new = model.apply(
          {'params': params, 'batch_stats': variables['batch_stats']},
          frames, train=True, mutable=['batch_stats'])
      return jnp.mean((out - targets) ** 2), new['batch_stats']
    fn = jax.value_and_grad(loss, has_aux=True)
    return jax.jit(fn)(variables['params']), str(
        jax.make_jaxpr(fn)(variables['params']))

  ((loss_p, stats_p), grads_p), jaxpr_p = loss_and_grads(plain)
  ((loss_r, stats_r), grads_r), jaxpr_r = loss_and_grads(remat)
  # The remat model's backward pass has the recomputed region; the plain not.
  assert 'remat' in jaxpr_r and 'remat' not in jaxpr_p
  assert float(loss_r) == pytest.approx(float(loss_p), rel=1e-6)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  jax.tree.map(close, grads_r, grads_p)
  jax.tree.map(close, stats_r, stats_p)


def test_remat_of_an_image_network_is_refused():
  with pytest.raises(AffectJaxError, match='model.remat applies to the video'):
    models.build('resnet50', remat=True)
