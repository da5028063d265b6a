"""Recurrent layers over per-frame features, with padding masks.

Every recurrent module here takes `x [B, T, F]` and an optional `mask [B, T]`
and returns `[B, T, hidden]`, so `CNNRNN` can hold any of them.

Speed: per layer the input projection of all T steps is one [B*T, F] x
[F, 4H] matmul outside the time loop; only the recurrent [B, H] x [H, 4H]
matmul and the gate nonlinearities run inside `jax.lax.scan`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _torch_rnn_init(hidden_size: int):
  """torch.nn.LSTM/GRU's U(-1/sqrt(H), 1/sqrt(H)) for every weight."""
  bound = hidden_size**-0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _lstm_bias_init(forget_bias: float):
  """Zeros, except `forget_bias` on the forget gate (second quarter)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    hidden = shape[-1] // 4
    return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(forget_bias)

  return init


class _LSTMRecurrence(nn.Module):
  """The time loop of one LSTM layer: owns `kernel` [H, 4H] (W_hh^T).

  Attributes:
    hidden_size: H.
    unroll: time steps per scan iteration (`jax.lax.scan(unroll=...)`).
    dtype: dtype of the recurrent matmul; gates and cell state are float32.
  """
  hidden_size: int
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, gates_x, valid):
    """gates_x [B, T, 4H] (x W_ih^T + b), valid [B, T] bool -> [B, T, H]."""
    h_size = self.hidden_size
    kernel = self.param('kernel', _torch_rnn_init(h_size), (h_size, 4 * h_size))
    kernel = jnp.asarray(kernel, self.dtype)
    batch = gates_x.shape[0]

    def step(carry, inputs):
      h, c = carry
      gx, v = inputs
      gates = gx.astype(jnp.float32) + jnp.dot(
          h.astype(self.dtype), kernel, preferred_element_type=jnp.float32)
      i, f, g, o = jnp.split(gates, 4, axis=-1)  # torch's gate order.
      c_new = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
      h_new = nn.sigmoid(o) * jnp.tanh(c_new)
      v = v[:, None]
      # Padded steps keep the state, so later valid steps never see them.
      carry = (jnp.where(v, h_new, h), jnp.where(v, c_new, c))
      return carry, jnp.where(v, h_new, 0.0)

    zeros = jnp.zeros((batch, h_size), jnp.float32)
    # lax.scan walks the leading axis, so go time-major.
    xs = (jnp.swapaxes(gates_x, 0, 1), jnp.swapaxes(valid, 0, 1))
    _, hs = jax.lax.scan(step, (zeros, zeros), xs, unroll=self.unroll)
    return jnp.swapaxes(hs, 0, 1).astype(self.dtype)


class LSTM(nn.Module):
  """Stacked unidirectional LSTM (torch.nn.LSTM semantics, batch-first).

  Parameters of layer k, and their torch.nn.LSTM counterparts (gate order
  i, f, g, o along the 4H axis in both):

    params/ih_l{k}/kernel [F_k, 4H]  = weight_ih_l{k}.T  (F_0 = F, else H)
    params/ih_l{k}/bias   [4H]       = bias_ih_l{k} + bias_hh_l{k}
    params/hh_l{k}/kernel [H, 4H]    = weight_hh_l{k}.T

  torch's two biases are only ever summed, so one bias (on the input
  projection, outside the time loop) is kept; exporting to torch writes the
  sum to bias_ih and zeros to bias_hh. Weights start as torch's
  U(-1/sqrt(H), 1/sqrt(H)); the bias starts at zero except `forget_bias` on
  the forget gate (1.0 by default, Jozefowicz et al. 2015; torch instead draws
  it from the same uniform).

  Attributes:
    hidden_size: H.
    num_layers: stacked layers (tzirakis2019 and kollias2019 use 2).
    unroll: time steps per scan iteration; larger compiles slower, may run
      faster on accelerators.
    forget_bias: initial forget-gate bias.
    dtype: computation dtype of the matmuls; parameters, gates and the cell
      state stay float32.
  """
  hidden_size: int
  num_layers: int = 1
  unroll: int = 1
  forget_bias: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    """Runs all layers over the sequence.

    Args:
      x: [B, T, F] inputs.
      mask: optional [B, T], nonzero (True/1) for valid steps, 0 for padding.
        At padded steps the state is carried over unchanged and the output is
        zero, so outputs at valid steps do not depend on padded inputs.

    Returns:
      [B, T, hidden_size] outputs of the last layer, in `dtype`.
    """
    if mask is None:
      valid = jnp.ones(x.shape[:2], bool)
    else:
      valid = jnp.asarray(mask) > 0
    h = x
    for k in range(self.num_layers):
      gates_x = nn.Dense(
          4 * self.hidden_size, dtype=self.dtype,
          kernel_init=_torch_rnn_init(self.hidden_size),
          bias_init=_lstm_bias_init(self.forget_bias), name=f'ih_l{k}')(h)
      h = _LSTMRecurrence(self.hidden_size, unroll=self.unroll,
                          dtype=self.dtype, name=f'hh_l{k}')(gates_x, valid)
    return h
