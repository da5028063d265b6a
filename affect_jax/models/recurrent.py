"""Recurrent layers over per-frame features, with padding masks.

Every recurrent module here takes `x [B, T, F]`, an optional `mask [B, T]`
and `train` (inter-layer dropout) and returns `[B, T, hidden]`, so `CNNRNN`
can hold any of them.

Speed: per layer the input projection of all T steps is one [B*T, F] x
[F, G*H] matmul outside the time loop (G = 4 gates for the LSTM, 3 for the
GRU); only the recurrent [B, H] x [H, G*H] matmul and the gate
nonlinearities run inside `jax.lax.scan`, which `unroll` steps per
iteration. The time loop has its own backward (`_recurrence`): a reverse
scan that carries only the state's gradient and stacks the recurrent
matmul's output gradients, so that the recurrent kernel's gradient is one
[H, B*T] x [B*T, G*H] matmul after the loop. Autodiff of the scan instead
adds an [H, G*H] outer product into the kernel's gradient at every step,
~3x the time of this loop's backward on a CPU (benchmarks/layers.py).

Parameter names and gate order follow torch.nn.LSTM / torch.nn.GRU, so
their weights import by transposing (`lstm_params_from_torch`,
`gru_params_from_torch`):

  LSTM (gates i, f, g, o along the 4H axis, as torch):
    ih_l{k}/kernel [F_k, 4H] = weight_ih_l{k}.T     (F_0 = F, else H)
    ih_l{k}/bias   [4H]      = bias_ih_l{k} + bias_hh_l{k}
    hh_l{k}/kernel [H, 4H]   = weight_hh_l{k}.T
    hh_l{k}/peephole_{i,f,o} [H]   (peephole variant only; torch has none)
  GRU (gates r, z, n along the 3H axis, as torch):
    ih_l{k}/kernel [F_k, 3H] = weight_ih_l{k}.T
    ih_l{k}/bias   [3H]      = bias_ih_l{k}
    hh_l{k}/kernel [H, 3H]   = weight_hh_l{k}.T
    hh_l{k}/bias   [3H]      = bias_hh_l{k}

The LSTM's two torch biases are only ever summed, so one is kept; the GRU
keeps both because torch's b_hn sits inside the reset gate's product.

`GRU(reset_after=False)` is TensorFlow 1's `tf.nn.rnn_cell.GRUCell` (Keras's
`reset_after=False`): the reset gate scales the state BEFORE the candidate's
recurrent matmul, n = tanh(x W_in + (r * h) U_n + b_n), which no choice of
torch-layout weights reproduces. Its parameters:

    ih_l{k}/kernel [F_k, 3H]            x's part of r, z, n (gates r, z, n)
    ih_l{k}/bias   [3H]                 TF's gates/bias [r, u] + candidate/bias
    hh_l{k}/kernel [H, 2H]              h's part of r, z
    hh_l{k}/candidate_kernel [H, H]     (r * h)'s part of n

(TF's update gate u is z here: both give h' = z * h + (1 - z) * n.)
`models.tf1_import` maps GRUCell's `gates/kernel` [F + H, 2H] and
`candidate/kernel` [F + H, H] onto these rows and columns.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from affect_jax.errors import AffectJaxError


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


def _masked(cell: Callable, params, carry, gx, gh, v):
  """One time step of `cell`; where `v` [B] is False (padding) the carry
  is kept and the output is zero."""
  new_carry, h = cell(params, carry, gx, gh)
  v = v[:, None]
  # Padded steps keep the state, so later valid steps never see them.
  return (tuple(jnp.where(v, n, o) for n, o in zip(new_carry, carry)),
          jnp.where(v, h, 0.0))


def _hh(h, kernel):
  """The recurrent matmul h [B, H] x kernel [H, G*H], in the kernel's dtype
  with float32 results."""
  return jnp.dot(h.astype(kernel.dtype), kernel,
                 preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 6))
def _recurrence(cell: Callable, params, kernel, carry, gates_x, valid,
                unroll: int):
  """Runs `cell` over time; padded steps keep the carry and output zeros.

  Args:
    cell: (params, carry, gx_t [B, G*H] float32, gh_t [B, G*H] float32)
      -> (new_carry, h_t [B, H] float32), where gh_t = h_{t-1} x kernel,
      a pure function of its arguments.
    params: the cell's other parameters (a pytree of arrays; may be empty).
    kernel: [H, G*H], the recurrent weights (W_hh^T).
    carry: initial carry, a tuple of [B, H] float32 arrays whose first
      element is the hidden state.
    gates_x: [B, T, G*H] input projections.
    valid: [B, T] bool.
    unroll: time steps per scan iteration.

  Returns:
    [B, T, H] float32 outputs.
  """
  return _forward_scan(cell, params, kernel, carry, gates_x, valid, unroll,
                       save=False)[0]


def _forward_scan(cell, params, kernel, carry, gates_x, valid, unroll,
                  save: bool):
  """The time loop: outputs [B, T, H] and, if `save`, what the backward
  needs (each step's incoming carry and gh_t, time-major)."""

  def body(carry, inputs):
    gx, v = inputs
    gh = _hh(carry[0], kernel)
    new_carry, h = _masked(cell, params, carry, gx.astype(jnp.float32), gh, v)
    return new_carry, ((h, carry, gh) if save else (h,))

  # lax.scan walks the leading axis, so go time-major.
  xs = (jnp.swapaxes(gates_x, 0, 1), jnp.swapaxes(valid, 0, 1))
  _, ys = jax.lax.scan(body, carry, xs, unroll=unroll)
  return jnp.swapaxes(ys[0], 0, 1), ys[1:], xs


def _recurrence_fwd(cell, params, kernel, carry, gates_x, valid, unroll):
  hs, (carries, ghs), xs = _forward_scan(
      cell, params, kernel, carry, gates_x, valid, unroll, save=True)
  return hs, (params, kernel, carries, ghs, xs)


def _recurrence_bwd(cell, unroll, saved, d_hs):
  """The reverse scan: the state's gradient through each step's cell (its
  vjp, the cell recomputed from the saved carry), the matmul's output
  gradients stacked; the kernel's gradient from them in one matmul."""
  params, kernel, carries, ghs, (gxs, valid) = saved
  kernel_t = kernel.T

  def body(acc, inputs):
    d_carry, d_params = acc
    d_h, carry, gx, gh, v = inputs
    _, vjp = jax.vjp(
        lambda p, c, gx, gh: _masked(cell, p, c, gx, gh, v),
        params, carry, gx.astype(jnp.float32), gh)
    dp, dc, dgx, dgh = vjp((d_carry, d_h))
    # gh_t = h_{t-1} x kernel: its gradient flows back into h_{t-1}.
    dc = (dc[0] + _hh(dgh, kernel_t),) + tuple(dc[1:])
    return (dc, jax.tree.map(jnp.add, d_params, dp)), (dgx, dgh)

  zeros = tuple(jnp.zeros_like(c[0]) for c in carries)
  (d_carry, d_params), (d_gxs, d_ghs) = jax.lax.scan(
      body, (zeros, jax.tree.map(jnp.zeros_like, params)),
      (jnp.swapaxes(d_hs, 0, 1), carries, gxs, ghs, valid),
      reverse=True, unroll=unroll)
  # d kernel = sum over t of h_{t-1}^T dgh_t, as one matmul.
  d_kernel = jnp.einsum('tbh,tbg->hg', carries[0].astype(kernel.dtype),
                        d_ghs.astype(kernel.dtype),
                        preferred_element_type=jnp.float32)
  return (d_params, d_kernel.astype(kernel.dtype), d_carry,
          jnp.swapaxes(d_gxs, 0, 1).astype(gxs.dtype), None)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class _LSTMRecurrence(nn.Module):
  """The time loop of one LSTM layer: owns `kernel` [H, 4H] (W_hh^T).

  Attributes:
    hidden_size: H.
    peephole: add diagonal cell-to-gate weights (Gers & Schmidhuber 2000,
      TensorFlow's `use_peepholes=True`, kollias2019's CNN-LSTM).
    unroll: time steps per scan iteration (`jax.lax.scan(unroll=...)`).
    dtype: dtype of the recurrent matmul; gates and cell state are float32.
  """
  hidden_size: int
  peephole: bool = False
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, gates_x, valid):
    """gates_x [B, T, 4H] (x W_ih^T + b), valid [B, T] bool -> [B, T, H]."""
    h_size = self.hidden_size
    kernel = self.param('kernel', _torch_rnn_init(h_size), (h_size, 4 * h_size))
    kernel = jnp.asarray(kernel, self.dtype)
    if self.peephole:
      # Small uniform start, as the other recurrent weights.
      peep = tuple(self.param(f'peephole_{g}', _torch_rnn_init(h_size),
                              (h_size,)) for g in 'ifo')
    else:
      peep = ()
    zeros = jnp.zeros((gates_x.shape[0], h_size), jnp.float32)
    hs = _recurrence(_lstm_cell, peep, kernel, (zeros, zeros), gates_x, valid,
                     self.unroll)
    return hs.astype(self.dtype)


def _lstm_cell(peep, carry, gx, gh):
  """One LSTM step from gx + gh = x W_ih^T + b + h W_hh^T; `peep` () or the
  peephole weights (i, f, o)."""
  h, c = carry
  i, f, g, o = jnp.split(gx + gh, 4, axis=-1)  # torch's gate order.
  p_i, p_f, p_o = peep or (0.0, 0.0, 0.0)
  # Input and forget gates peek at the old cell, the output gate at the
  # new one (TensorFlow's LSTMCell).
  c_new = nn.sigmoid(f + p_f * c) * c + nn.sigmoid(i + p_i * c) * jnp.tanh(g)
  h_new = nn.sigmoid(o + p_o * c_new) * jnp.tanh(c_new)
  return (h_new, c_new), h_new


class _GRURecurrence(nn.Module):
  """The time loop of one GRU layer: owns W_hh^T [H, 3H] and b_hh [3H], or
  with `reset_after=False` the r, z part [H, 2H] and the candidate's [H, H].

  Attributes:
    hidden_size: H.
    reset_after: torch / cuDNN placement of the reset gate (after the
      recurrent matmul); False: TF1 GRUCell's (before it).
    unroll: time steps per scan iteration.
    dtype: dtype of the recurrent matmul; gates and state are float32.
  """
  hidden_size: int
  reset_after: bool = True
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, gates_x, valid):
    """gates_x [B, T, 3H] (x W_ih^T + b_ih), valid [B, T] -> [B, T, H]."""
    h_size = self.hidden_size
    init = _torch_rnn_init(h_size)
    zeros = jnp.zeros((gates_x.shape[0], h_size), jnp.float32)
    if self.reset_after:
      kernel = jnp.asarray(self.param('kernel', init, (h_size, 3 * h_size)),
                           self.dtype)
      cell, params = _gru_cell, self.param('bias', init, (3 * h_size,))
    else:
      # The recurrence's kernel is the gates' part (its gradient is the one
      # matmul after the loop); the candidate's, applied to r * h inside
      # the step, is a cell parameter.
      kernel = jnp.asarray(self.param('kernel', init, (h_size, 2 * h_size)),
                           self.dtype)
      cell = _gru_cell_reset_before
      params = jnp.asarray(self.param('candidate_kernel', init,
                                      (h_size, h_size)), self.dtype)
    hs = _recurrence(cell, params, kernel, (zeros,), gates_x, valid,
                     self.unroll)
    return hs.astype(self.dtype)


def _gru_cell(bias, carry, gx, gh):
  """One GRU step from gx = x W_ih^T + b_ih and gh + bias = h W_hh^T + b_hh
  (torch's gate order r, z, n; the reset gate scales h's part of n)."""
  (h,) = carry
  xr, xz, xn = jnp.split(gx, 3, axis=-1)
  hr, hz, hn = jnp.split(gh + bias, 3, axis=-1)
  r = nn.sigmoid(xr + hr)
  z = nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  h_new = (1.0 - z) * n + z * h
  return (h_new,), h_new


def _gru_cell_reset_before(candidate_kernel, carry, gx, gh):
  """One TF1 GRUCell step from gx = x W_ih^T + b (r, z, n) and gh = h x
  (h's part of r, z): the reset gate scales h before the candidate's
  recurrent matmul."""
  (h,) = carry
  xr, xz, xn = jnp.split(gx, 3, axis=-1)
  hr, hz = jnp.split(gh, 2, axis=-1)
  r = nn.sigmoid(xr + hr)
  z = nn.sigmoid(xz + hz)
  n = jnp.tanh(xn + _hh(r * h, candidate_kernel))
  h_new = (1.0 - z) * n + z * h
  return (h_new,), h_new


def _valid(x, mask):
  if mask is None:
    return jnp.ones(x.shape[:2], bool)
  return jnp.asarray(mask) > 0


class LSTM(nn.Module):
  """Stacked unidirectional LSTM (torch.nn.LSTM semantics, batch-first).

  See the module docstring for the parameter names and their torch
  counterparts. Weights start as torch's U(-1/sqrt(H), 1/sqrt(H)); the bias
  starts at zero except `forget_bias` on the forget gate (1.0 by default,
  Jozefowicz et al. 2015; torch instead draws it from the same uniform).

  Attributes:
    hidden_size: H.
    num_layers: stacked layers (tzirakis2019 and kollias2019 use 2).
    peephole: peephole connections (kollias2019's CNN-LSTM ablation).
    dropout_rate: dropout on the outputs of every layer but the last, in
      training (torch's `dropout`; kollias2019 Table 8 after RNN layer 1).
    unroll: time steps per scan iteration; larger compiles slower, may run
      faster.
    forget_bias: initial forget-gate bias.
    dtype: computation dtype of the matmuls; parameters, gates and the cell
      state stay float32.
  """
  hidden_size: int
  num_layers: int = 1
  peephole: bool = False
  dropout_rate: float = 0.0
  unroll: int = 1
  forget_bias: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    """Runs all layers over the sequence.

    Args:
      x: [B, T, F] inputs.
      mask: optional [B, T], nonzero (True/1) for valid steps, 0 for padding.
        At padded steps the state is carried over unchanged and the output is
        zero, so outputs at valid steps do not depend on padded inputs.
      train: apply inter-layer dropout (needs the 'dropout' rng).

    Returns:
      [B, T, hidden_size] outputs of the last layer, in `dtype`.
    """
    valid = _valid(x, mask)
    h = x
    for k in range(self.num_layers):
      if k > 0:
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
      gates_x = nn.Dense(
          4 * self.hidden_size, dtype=self.dtype,
          kernel_init=_torch_rnn_init(self.hidden_size),
          bias_init=_lstm_bias_init(self.forget_bias), name=f'ih_l{k}')(h)
      h = _LSTMRecurrence(self.hidden_size, peephole=self.peephole,
                          unroll=self.unroll, dtype=self.dtype,
                          name=f'hh_l{k}')(gates_x, valid)
    return h


class GRU(nn.Module):
  """Stacked unidirectional GRU (torch.nn.GRU semantics, batch-first).

  AffWildNet's recurrent part (kollias2019 Table 8: 2 layers of 128) and the
  4K models'. Parameters as torch.nn.GRU (module docstring), initialised as
  torch does: every weight and bias U(-1/sqrt(H), 1/sqrt(H)).

  Attributes:
    hidden_size: H.
    num_layers: stacked layers.
    dropout_rate: dropout on the outputs of every layer but the last, in
      training.
    unroll: time steps per scan iteration.
    dtype: computation dtype of the matmuls; parameters and state float32.
    reset_after: True (torch, cuDNN): n = tanh(x W_in + b_in + r * (h W_hn
      + b_hn)); False (TensorFlow 1's GRUCell, the released AffWildNet
      weights): n = tanh(x W_in + b_n + (r * h) U_n), no recurrent bias
      (module docstring).
  """
  hidden_size: int
  num_layers: int = 1
  dropout_rate: float = 0.0
  unroll: int = 1
  dtype: Any = jnp.float32
  reset_after: bool = True

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    """[B, T, F] (mask [B, T]) -> [B, T, hidden_size]; see `LSTM`."""
    valid = _valid(x, mask)
    init = _torch_rnn_init(self.hidden_size)
    h = x
    for k in range(self.num_layers):
      if k > 0:
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
      gates_x = nn.Dense(3 * self.hidden_size, dtype=self.dtype,
                         kernel_init=init, bias_init=init, name=f'ih_l{k}')(h)
      h = _GRURecurrence(self.hidden_size, reset_after=self.reset_after,
                         unroll=self.unroll, dtype=self.dtype,
                         name=f'hh_l{k}')(gates_x, valid)
    return h


# ------------------------------------------------------ torch weight import ---


def _torch_layers(state_dict, kind: str) -> int:
  """Number of layers of a torch.nn.LSTM/GRU state dict; checks its keys."""
  sd = {k: np.asarray(v) for k, v in state_dict.items()}
  layers = sorted({int(k.rsplit('_l', 1)[1]) for k in sd
                   if k.startswith('weight_ih_l')})
  expected = {f'{p}_{m}_l{k}' for k in layers for p in ('weight', 'bias')
              for m in ('ih', 'hh')}
  if not layers or set(sd) != expected or layers != list(range(len(layers))):
    raise AffectJaxError(
        f'Not a unidirectional torch.nn.{kind} state dict with biases: got '
        f'keys {sorted(sd)}, expected {sorted(expected) or "weight_ih_l0..."}'
        ' (bidirectional and proj_size variants are not supported).')
  return len(layers)


def lstm_params_from_torch(state_dict) -> dict[str, Any]:
  """`LSTM` params from a torch.nn.LSTM state dict (gate order i, f, g, o).

  Args:
    state_dict: {'weight_ih_l0': [4H, F], 'weight_hh_l0': [4H, H],
      'bias_ih_l0': [4H], 'bias_hh_l0': [4H], ...}, torch tensors or arrays.

  Returns:
    The `params` collection of `LSTM(hidden_size=H, num_layers=...)`.
  """
  n = _torch_layers(state_dict, 'LSTM')
  sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  params = {}
  for k in range(n):
    params[f'ih_l{k}'] = {'kernel': sd[f'weight_ih_l{k}'].T,
                          'bias': sd[f'bias_ih_l{k}'] + sd[f'bias_hh_l{k}']}
    params[f'hh_l{k}'] = {'kernel': sd[f'weight_hh_l{k}'].T}
  return params


def gru_params_from_torch(state_dict) -> dict[str, Any]:
  """`GRU` params from a torch.nn.GRU state dict (gate order r, z, n)."""
  n = _torch_layers(state_dict, 'GRU')
  sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  params = {}
  for k in range(n):
    params[f'ih_l{k}'] = {'kernel': sd[f'weight_ih_l{k}'].T,
                          'bias': sd[f'bias_ih_l{k}']}
    params[f'hh_l{k}'] = {'kernel': sd[f'weight_hh_l{k}'].T,
                          'bias': sd[f'bias_hh_l{k}']}
  return params
