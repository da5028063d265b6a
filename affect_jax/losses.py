"""Losses, and the moment statistics (CCC, Pearson, MSE) they share with metrics.

The statistics are written once here, over an array module argument `xp`:
with `xp=jax.numpy` (the default) they are jit-able and differentiable and the
training losses use them; `affect_jax.metrics` calls the same functions with
`xp=numpy` on float64 host arrays for whole-split evaluation. So the CCC that is
optimised and the CCC that is reported are the same formula.

CCC, exactly (Lin 1989; docs/data_formats.md):

  CCC = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

with population (biased, 1/N) moments by default, as End2You, kollias2019 and
tzirakis2019 compute it. AVEC 2018 used 1/(N - 1) moments: pass `ddof=1`.

Conventions for degenerate inputs (so that nothing is NaN and the loss stays
bounded): a denominator of at most `eps` (the smallest normal float32, 1e-38:
nothing but exact zeros) gives CCC 0, so

  * two constant sequences that are equal have CCC 0 (0/0); a single valid
    element is a constant sequence; no valid element at all gives CCC 0;
    constant but different sequences have CCC 0 by the formula;
  * otherwise |CCC| <= 1 (Cauchy-Schwarz: |2 cov| <= var(x) + var(y)), so
    1 - CCC lies in [0, 2] and its gradient is finite.

Masking: invalid elements are replaced with 0 by `where` *before* any
arithmetic, so NaN labels at unlabelled frames never reach a value or a
gradient (a NaN multiplied by a zero weight would still be NaN).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Guards only 0/0 (constant inputs, whose moments are exactly 0, see
# `moments`): no bias at any variance a float32 can hold. (A fixed 1e-8 added
# to the denominator was 34% off at label variances near 1e-8.)
EPS = float(np.finfo(np.float32).tiny)

Axis = int | tuple[int, ...]


class Moments(NamedTuple):
  """Masked first and second moments along the reduced axes.

  Attributes:
    count: number of valid elements.
    mean_x, mean_y: means over valid elements (0 where count is 0).
    var_x, var_y, cov: sums of centred products over valid elements divided
      by max(count - ddof, 1).
  """
  count: Any
  mean_x: Any
  mean_y: Any
  var_x: Any
  var_y: Any
  cov: Any


def _valid_mask(x, mask, xp):
  """Boolean mask of x's shape; `mask` aligns with x's leading axes."""
  if mask is None:
    return xp.ones(x.shape, dtype=bool)
  mask = xp.asarray(mask)
  # A [B, T] frame mask applies to every output of [B, T, K] values.
  mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
  return xp.broadcast_to(mask > 0, x.shape)


def _float(x, y, xp):
  """x, y as a common float dtype, at least float32 (bf16 loses CCC digits)."""
  x, y = xp.asarray(x), xp.asarray(y)
  if x.shape != y.shape:
    raise ValueError(f'Shapes differ: {x.shape} vs {y.shape}.')
  dtype = xp.result_type(x.dtype, y.dtype, xp.float32)
  return x.astype(dtype), y.astype(dtype)


def _mid_range(x, valid, axis: Axis, xp):
  """(max + min) / 2 of the valid elements (keepdims; 0 where none is)."""
  hi = xp.max(xp.where(valid, x, -xp.inf), axis=axis, keepdims=True)
  lo = xp.min(xp.where(valid, x, xp.inf), axis=axis, keepdims=True)
  mid = xp.where(hi >= lo, hi / 2 + lo / 2, 0)
  # The moments do not depend on the shift: no gradient through it.
  return jax.lax.stop_gradient(mid) if xp is jnp else mid


def moments(x, y, mask=None, axis: Axis = 0, ddof: int = 0,
            xp: Any = jnp) -> Moments:
  """Masked means, variances and covariance of x and y along `axis`.

  Two-pass (centred) moments: E[x^2] - E[x]^2 cancels catastrophically in
  float32 when the mean is large against the spread. The values are first
  shifted by the mid-range of the valid ones (moments do not change under a
  shift): a constant input becomes exactly 0, so its variance and
  covariances are exactly 0 rather than rounding noise of its mean (which
  made the CCC of two equal constant sequences any value in [-1, 1]).

  Args:
    x: values, e.g. [N, K].
    y: values of x's shape; may hold NaN where `mask` is 0.
    mask: None (all valid), or an array aligned with x's leading axes
      ([N] or [N, K] for [N, K] inputs); elements with mask > 0 count.
    axis: axis or axes to reduce.
    ddof: 0 for population (1/N) moments, 1 for sample (1/(N-1)) moments.
    xp: array module, `jax.numpy` or `numpy`.

  Returns:
    `Moments` with x's shape minus the reduced axes (e.g. [K]).
  """
  x, y = _float(x, y, xp)
  valid = _valid_mask(x, mask, xp)
  x = xp.where(valid, x, 0)
  y = xp.where(valid, y, 0)
  count = xp.sum(valid.astype(x.dtype), axis=axis)
  safe_count = xp.maximum(count, 1)
  shift_x, shift_y = (_mid_range(v, valid, axis, xp) for v in (x, y))
  x = xp.where(valid, x - shift_x, 0)
  y = xp.where(valid, y - shift_y, 0)
  mean_x = xp.sum(x, axis=axis) / safe_count
  mean_y = xp.sum(y, axis=axis) / safe_count
  dx = xp.where(valid, x - xp.expand_dims(mean_x, axis), 0)
  dy = xp.where(valid, y - xp.expand_dims(mean_y, axis), 0)
  dof = xp.maximum(count - ddof, 1)
  mean_x = mean_x + xp.squeeze(shift_x, axis)
  mean_y = mean_y + xp.squeeze(shift_y, axis)
  return Moments(count=count, mean_x=mean_x, mean_y=mean_y,
                 var_x=xp.sum(dx * dx, axis=axis) / dof,
                 var_y=xp.sum(dy * dy, axis=axis) / dof,
                 cov=xp.sum(dx * dy, axis=axis) / dof)


def ccc(x, y, mask=None, axis: Axis = 0, eps: float = EPS, ddof: int = 0,
        xp: Any = jnp):
  """Concordance correlation coefficient along `axis` (module docstring).

  Args:
    x: predictions, e.g. [N, K].
    y: targets of x's shape (NaN allowed where `mask` is 0).
    mask: None, or aligned with x's leading axes ([N] or [N, K]); > 0 = valid.
    axis: axis or axes to reduce.
    eps: a denominator at or below it gives 0 (0/0 of equal constant
      inputs), never NaN; no other value changes.
    ddof: 0 = population moments (default, the field's convention);
      1 = sample moments (AVEC 2018).
    xp: `jax.numpy` (differentiable) or `numpy`.

  Returns:
    CCC per remaining index, e.g. [K]; in [-1, 1].
  """
  m = moments(x, y, mask, axis=axis, ddof=ddof, xp=xp)
  den = m.var_x + m.var_y + (m.mean_x - m.mean_y) ** 2
  # Double `where`: no 0/0 in the value nor in its gradient.
  ok = den > eps
  return xp.where(ok, 2 * m.cov / xp.where(ok, den, 1), 0)


def pearson(x, y, mask=None, axis: Axis = 0, eps: float = EPS,
            xp: Any = jnp):
  """Pearson correlation along `axis`; 0 when either input is constant.

  Args and shapes as `ccc`. The ddof cancels out of Pearson's ratio.
  """
  m = moments(x, y, mask, axis=axis, xp=xp)
  prod = m.var_x * m.var_y
  # Double `where`: sqrt's derivative at 0 is infinite, so keep 0 out of it.
  positive = prod > 0
  root = xp.where(positive, xp.sqrt(xp.where(positive, prod, 1)), 0)
  return m.cov / (root + eps)


def mse(x, y, mask=None, axis: Axis = 0, xp: Any = jnp):
  """Masked mean squared error along `axis`; 0 where nothing is valid.

  Args and shapes as `ccc`.
  """
  x, y = _float(x, y, xp)
  valid = _valid_mask(x, mask, xp)
  diff = xp.where(valid, x, 0) - xp.where(valid, y, 0)
  count = xp.sum(valid.astype(x.dtype), axis=axis)
  return xp.sum(diff * diff, axis=axis) / xp.maximum(count, 1)


def _labelled(targets, mask):
  """Valid [B, T, K] elements: real frames whose target is not NaN."""
  targets = jnp.asarray(targets)
  mask = jnp.asarray(mask)
  return (mask[..., None] > 0) & ~jnp.isnan(targets)


def ccc_loss(predictions, targets, mask) -> jax.Array:
  """Mean over outputs of 1 - CCC, each CCC over all valid frames of the batch.

  As End2You, kollias2019 and tzirakis2019: the B * T frames of the batch are
  pooled into one sequence per output (not one CCC per window), population
  moments.

  Args:
    predictions: [B, T, K].
    targets: [B, T, K]; NaN at unlabelled frames, which count as masked for
      that output only.
    mask: [B, T]; 1 for real frames, 0 for padding.

  Returns:
    Scalar in [0, 2]; 1 when nothing is valid (CCC 0 by convention).
  """
  valid = _labelled(targets, mask)
  return jnp.mean(1.0 - ccc(predictions, targets, valid, axis=(0, 1)))


def mse_loss(predictions, targets, mask) -> jax.Array:
  """Mean over outputs of the masked MSE over all valid frames of the batch.

  Args:
    predictions: [B, T, K].
    targets: [B, T, K]; NaN at unlabelled frames (masked per output).
    mask: [B, T].

  Returns:
    Scalar: (1/K) sum_k [sum of squared errors of output k over its valid
    frames / their number]; 0 when nothing is valid.
  """
  valid = _labelled(targets, mask)
  return jnp.mean(mse(predictions, targets, valid, axis=(0, 1)))


def weighted_sigmoid_bce(logits, labels, mask, class_weights=None
                         ) -> jax.Array:
  """Class-weighted multi-label sigmoid cross-entropy (tzirakis2019, eq. 1).

  Per element, in the stable softplus form of
  -[z log sigmoid(x) + (1 - z) log(1 - sigmoid(x))]:

    l[b, t, c] = z softplus(-x) + (1 - z) softplus(x),

  and the loss is

    sum_{valid (b, t, c)} w[c] l[b, t, c] / #valid (b, t, c),

  where (b, t, c) is valid if mask[b, t] > 0 and labels[b, t, c] is not NaN.
  Without NaN labels the divisor is (number of valid frames) * C, i.e. the
  mean over valid frames and classes; with weights that average to 1
  (`class_weights_from_counts`) it is on the scale of the unweighted BCE.

  Args:
    logits: [B, T, C] pre-sigmoid outputs.
    labels: [B, T, C] multi-hot targets in [0, 1] (soft labels allowed).
    mask: [B, T].
    class_weights: [C], or None for all ones.

  Returns:
    Scalar; 0 when nothing is valid.
  """
  logits, labels = _float(logits, labels, jnp)
  valid = _labelled(labels, mask)
  x = jnp.where(valid, logits, 0)
  z = jnp.where(valid, labels, 0)
  per_elem = z * jax.nn.softplus(-x) + (1 - z) * jax.nn.softplus(x)
  if class_weights is not None:
    per_elem = per_elem * jnp.asarray(class_weights, per_elem.dtype)
  per_elem = jnp.where(valid, per_elem, 0)
  return jnp.sum(per_elem) / jnp.maximum(jnp.sum(valid), 1)


def class_weights_from_counts(counts) -> jax.Array:
  """Class weights from per-class frame counts (tzirakis2019, 4.4).

  w[c] = (1 / counts[c]) * C / sum_{c': counts[c'] > 0} (1 / counts[c']),

  i.e. the reciprocal of the frame count, normalised so the C weights average
  to 1 (sum to C). A class with no frames (count <= 0) gets weight 0: it has no
  positive example to weight, and the other classes share its part of the sum.
  All counts zero gives all-zero weights.

  Args:
    counts: [C] frame counts (ints or floats).

  Returns:
    [C] float32 weights.
  """
  counts = jnp.asarray(counts, jnp.float32)
  present = counts > 0
  inv = jnp.where(present, 1.0 / jnp.where(present, counts, 1.0), 0.0)
  total = jnp.sum(inv)
  return inv * (counts.shape[0] / jnp.where(total > 0, total, 1.0))


def softmax_cross_entropy(logits, labels, mask) -> jax.Array:
  """Single-label softmax cross-entropy averaged over valid frames.

  Args:
    logits: [B, T, C].
    labels: int [B, T] class indices; a label outside [0, C) (e.g. Aff-Wild2's
      -1) marks an unlabelled frame and counts as masked.
    mask: [B, T].

  Returns:
    Scalar: sum over valid frames of -log softmax(logits)[label] / their
    number; 0 when nothing is valid.
  """
  logits = jnp.asarray(logits)
  logits = logits.astype(jnp.result_type(logits.dtype, jnp.float32))
  labels = jnp.asarray(labels)
  num_classes = logits.shape[-1]
  valid = (jnp.asarray(mask) > 0) & (labels >= 0) & (labels < num_classes)
  logits = jnp.where(valid[..., None], logits, 0)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  idx = jnp.where(valid, labels, 0).astype(jnp.int32)
  nll = -jnp.take_along_axis(log_p, idx[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(valid, nll, 0)) / jnp.maximum(jnp.sum(valid), 1)
