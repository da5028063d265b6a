"""Strided convolutions whose input gradient is fast on XLA:CPU.

The input gradient of a stride-s convolution is, as XLA writes it, a
convolution over the output gradient dilated with s - 1 zeros between
pixels ("base-dilated"), which XLA:CPU's Eigen path runs as if the zeros
were pixels: s * s times the work. In ResNet-50's step the three strided
3x3 convolutions' input gradients took ~5% of the step, the one at 38x38
pixels alone 3-4x an unstrided 3x3 convolution's
(docs/BENCHMARKS.md, "Strided convolutions").

`conv_general_dilated` here is `lax.conv_general_dilated` with the same
arguments and values; only the input gradient of a strided NHWC/HWIO
convolution is written differently on CPU. Input pixel s * m + r (r < s)
only meets the kernel taps k = r + pad_lo (mod s), so each of the s * s
pixel phases of the input gradient is an unstrided convolution of the
output gradient with those taps of the kernel (flipped, in and out
swapped); the phases are then interleaved by a reshape. That is exactly
the taps' work, no zeros. The weight gradient is lax's own. On other
platforms (`lax.platform_dependent`) the gradient is lax's own too.

Pass it to Flax as `nn.Conv(..., conv_general_dilated=conv_general_dilated)`:
parameters, initialisation and values are nn.Conv's.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
from jax import lax
import jax.numpy as jnp

from affect_jax.models.pooling import reshape_keep_batch

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _phase(k_size: int, stride: int, pad_lo: int, r: int):
  """Kernel taps of input phase r: (first tap k0, taps J, offset of dy).

  Input pixel s * m + r gets sum_j w[k0 + s j] dy[m + q - j], q the offset.
  """
  k0 = (r + pad_lo) % stride
  taps = len(range(k0, k_size, stride))
  return k0, taps, (r + pad_lo - k0) // stride


def _input_grad_by_phases(dy, kernel, strides, padding, in_shape, precision):
  """dx of a stride-`strides` NHWC/HWIO convolution: s_h * s_w unstrided ones."""
  n, c = in_shape[0], in_shape[-1]
  sizes = [-(-in_shape[1 + d] // strides[d]) for d in range(2)]  # ceil
  rows = []
  for rh in range(strides[0]):
    cols = []
    for rw in range(strides[1]):
      taps, pads, crops = [], [], []
      for d, r in enumerate((rh, rw)):
        k0, j, q = _phase(kernel.shape[d], strides[d], padding[d][0], r)
        lo = j - 1 - q
        hi = sizes[d] - dy.shape[1 + d] - lo + j - 1
        taps.append((k0, j))
        pads.append((max(lo, 0), max(hi, 0)))
        crops.append((min(lo, 0), min(hi, 0)))
      if not taps[0][1] or not taps[1][1]:  # No tap meets this phase.
        cols.append(jnp.zeros((n, sizes[0], sizes[1], c), dy.dtype))
        continue
      (k0h, _), (k0w, _) = taps
      w = kernel[k0h::strides[0], k0w::strides[1]][::-1, ::-1]
      w = jnp.swapaxes(w, 2, 3)  # [J_h, J_w, out, in].
      g = dy
      if any(crops[0] + crops[1]):  # Negative padding: crop first.
        g = lax.pad(g, jnp.zeros((), g.dtype),
                    [(0, 0, 0), (*crops[0], 0), (*crops[1], 0), (0, 0, 0)])
      cols.append(lax.conv_general_dilated(
          g, w, (1, 1), pads, dimension_numbers=_NHWC, precision=precision))
    rows.append(jnp.stack(cols, axis=3))  # [N, M_h, M_w, s_w, C]
  dx = jnp.stack(rows, axis=2)  # [N, M_h, s_h, M_w, s_w, C]
  dx = reshape_keep_batch(
      dx, (n, sizes[0] * strides[0], sizes[1] * strides[1], c))
  return dx[:, :in_shape[1], :in_shape[2]]


def _conv(x, kernel, strides, padding, precision):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=_NHWC,
                                  precision=precision)


_strided_conv = jax.custom_vjp(_conv, nondiff_argnums=(2, 3, 4))


def _strided_conv_fwd(x, kernel, strides, padding, precision):
  return _conv(x, kernel, strides, padding, precision), (x, kernel)


def _strided_conv_bwd(strides, padding, precision, res, dy):
  x, kernel = res
  conv = functools.partial(_conv, strides=strides, padding=padding,
                           precision=precision)
  dw = jax.vjp(lambda w: conv(x, w), kernel)[1](dy)[0]
  dx = lax.platform_dependent(
      dy, kernel,
      cpu=lambda dy, w: _input_grad_by_phases(dy, w, strides, padding,
                                              x.shape, precision),
      default=lambda dy, w: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0])
  return dx, dw


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int],
                         padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated`, with the fast input gradient where it applies.

  That is a 2-D NHWC/HWIO convolution (Flax's layout) with a stride above
  1 and a kernel wider than 1 along it, no dilation or groups; everything
  else is `lax.conv_general_dilated` itself.
  """
  plain = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  strides = tuple(int(s) for s in window_strides)
  if (lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1
      or preferred_element_type is not None
      or any(d not in (None, 1) for d in (lhs_dilation or ()))
      or any(d not in (None, 1) for d in (rhs_dilation or ()))
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
      or not any(s > 1 and k > 1 for s, k in zip(strides, rhs.shape[:2]))):
    return plain()
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides,
                                  padding)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  return _strided_conv(lhs, rhs, strides, padding, precision)
