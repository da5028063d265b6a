"""Max-pools with fast gradients on XLA:CPU, equal to `nn.max_pool`.

`nn.max_pool`'s gradient is XLA's select-and-scatter, which runs several
times slower on CPU than PyTorch's max-pool backward. These compute the same
values; only their gradients are written differently:

- `max_pool_3x3_s2` (ResNet's stem, AlexNet): the forward pass also keeps
  which of the 9 window positions won, as int8, and the backward pass
  routes each output gradient there with dense selects, pads and one
  reshape (no scatter, and one int8 tensor saved instead of the
  intermediate maxima).
- `max_pool_2x2` (VGG): non-overlapping windows, a max over a reshape.

Ties: `max_pool_3x3_s2` gives the gradient to the first maximal position in
row-major window order, as torch's MaxPool2d does; `max_pool_2x2` splits it
between tied positions. `nn.max_pool` also picks one position. Ties only
happen where equal values meet, e.g. zeros after a ReLU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


# The name scope of the pools' HLO (op_name `.../max_pool/...`), by which
# benchmarks/profile_step.py counts their time.
SCOPE = 'max_pool'


def reshape_keep_batch(x, shape):
  """`jnp.reshape` whose leading (batch) axis keeps its sharding.

  Under explicit sharding (the trainer's `data` mesh axis) JAX asks every
  reshape of a sharded array for its output sharding; these reshapes only
  regroup the other axes (or fold them into the batch axis), so the
  batch axis's sharding carries over and the rest is unsharded.
  """
  sharding = jax.typeof(x).sharding
  spec = getattr(sharding, 'spec', None)
  if not spec or all(s is None for s in spec):
    return jnp.reshape(x, shape)
  return jnp.reshape(x, shape, out_sharding=jax.sharding.NamedSharding(
      sharding.mesh,
      jax.sharding.PartitionSpec(spec[0], *([None] * (len(shape) - 1)))))


def _out_size(n: int, padding: int) -> int:
  return (n + 2 * padding - 3) // 2 + 1


def _phases(x, padding: int):
  """-inf padded x as [N, ho + 1, 2, wo + 1, 2, C]: rows/columns by parity.

  Window position (r, s) of output (a, b) reads padded pixel
  (2a + r, 2b + s) = phase (r % 2, s % 2) at (a + r // 2, b + s // 2), so
  every window position is a dense, unstrided slice of one phase.
  """
  n, h, w, c = x.shape
  ho, wo = _out_size(h, padding), _out_size(w, padding)
  x = jnp.pad(x, ((0, 0), (padding, 2 * ho + 2 - h - padding),
                  (padding, 2 * wo + 2 - w - padding), (0, 0)),
              constant_values=-jnp.inf)
  return reshape_keep_batch(x, (n, ho + 1, 2, wo + 1, 2, c)), ho, wo


def _max_and_argmax(x, padding: int):
  """([N, ho, wo, C] maxima, int8 winning position 3 * r + s)."""
  xp, ho, wo = _phases(x, padding)
  best = idx = None
  for r in range(3):
    for s in range(3):
      win = xp[:, r // 2:r // 2 + ho, r % 2, s // 2:s // 2 + wo, s % 2, :]
      if best is None:
        best, idx = win, jnp.zeros(win.shape, jnp.int8)
      else:
        better = win > best  # Strict: the first maximum keeps the gradient.
        best = jnp.where(better, win, best)
        idx = jnp.where(better, jnp.int8(3 * r + s), idx)
  return best, idx


def max_pool_3x3_s2(x, padding: int = 1):
  """torch's MaxPool2d(3, stride=2, padding=padding) on [N, H, W, C].

  The same values as `nn.max_pool(x, (3, 3), (2, 2), ((p, p), (p, p)))`;
  its gradient is ~3x faster on XLA:CPU (module docstring).

  Args:
    x: [N, H, W, C] float.
    padding: implicit -inf padding on each side (1 for ResNet, 0 for
      AlexNet).

  Returns:
    [N, (H + 2p - 3) // 2 + 1, (W + 2p - 3) // 2 + 1, C].
  """
  with jax.named_scope(SCOPE):
    return _max_pool_3x3_s2(x, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_3x3_s2(x, padding: int):
  return _max_and_argmax(x, padding)[0]


def _pool_fwd(x, padding):
  out, idx = _max_and_argmax(x, padding)
  return out, (idx, x.shape)


def _pool_bwd(padding, res, g):
  idx, (n, h, w, c) = res
  ho, wo = g.shape[1:3]
  zero = jnp.zeros((), g.dtype)
  phase = {}
  for r in range(3):
    for s in range(3):
      part = jnp.where(idx == 3 * r + s, g, zero)
      # Back to the phase's (ho + 1, wo + 1) grid, shifted by (r//2, s//2).
      part = jnp.pad(part, ((0, 0), (r // 2, 1 - r // 2),
                            (s // 2, 1 - s // 2), (0, 0)))
      key = (r % 2, s % 2)
      phase[key] = part if key not in phase else phase[key] + part
  rows = [jnp.stack([phase[(p, 0)], phase[(p, 1)]], axis=3) for p in (0, 1)]
  grad = reshape_keep_batch(jnp.stack(rows, axis=2),
                            (n, 2 * ho + 2, 2 * wo + 2, c))
  return (grad[:, padding:padding + h, padding:padding + w, :],)


_max_pool_3x3_s2.defvjp(_pool_fwd, _pool_bwd)


def max_pool_2x2(x):
  """MaxPool2d(2, stride=2) on [N, H, W, C] (odd edges dropped, as torch).

  A max over a [N, H/2, 2, W/2, 2, C] view: the same values as
  `nn.max_pool(x, (2, 2), (2, 2))` with a gradient that needs no
  select-and-scatter.
  """
  n, h, w, c = x.shape
  with jax.named_scope(SCOPE):
    x = x[:, :h // 2 * 2, :w // 2 * 2, :]
    return jnp.max(reshape_keep_batch(x, (n, h // 2, 2, w // 2, 2, c)),
                   axis=(2, 4))
