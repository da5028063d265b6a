"""Plain (non-residual) CNNs: VGG-16 / VGG-Face, AlexNet and CNN-M, NHWC.

One module, `ConvNet`, runs a list of layer specs that mirrors a
torch.nn.Sequential slot by slot, so every parameter carries the index
torchvision gives it and a state dict imports by renaming and transposing:

  torchvision                     Flax (this module)
  features.0.weight [O, I, h, w]  params/features_0/kernel [h, w, I, O]
  features.0.bias                 params/features_0/bias
  features.1.weight / .bias (BN)  params/features_1/scale / bias (CNN-M)
  classifier.0.weight [K, C*h*w]  params/classifier_0/kernel [h*w*C, K]

(the first classifier kernel's rows are permuted from torch's channel-major
flattening to NHWC's channel-minor one). Layer specs are plain tuples:

  ('conv', features, kernel, stride, padding, use_bias)
      padding: an int (torch's symmetric padding) or 'SAME' / 'VALID'
      (TensorFlow's, for CNN-M whose Table 4 is in TF notation).
  ('pool', kernel, stride, padding)   max-pooling, padding as above
  ('bn',)  ('relu',)  ('dropout',)  ('dense', features)
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from affect_jax.models import pooling
from affect_jax.models import strided_conv
from affect_jax.models.resnet import BN_EPSILON, BN_MOMENTUM

# torchvision's VGG / AlexNet init: kaiming_normal_(fan_out, relu) for convs,
# N(0, 0.01) for linear layers, zero biases.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
_dense_init = nn.initializers.normal(0.01)


def vgg16_features(width: int = 64) -> tuple[tuple[Any, ...], ...]:
  """torchvision `vgg16().features` (configuration 'D'); width 64 is VGG-16."""
  specs = []
  for mult, n_conv in ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3)):
    for _ in range(n_conv):
      specs += [('conv', width * mult, 3, 1, 1, True), ('relu',)]
    specs.append(('pool', 2, 2, 0))
  return tuple(specs)


def vgg_classifier(hidden: int, num_classes: int):
  """torchvision `vgg16().classifier`: Linear-ReLU-Dropout x2, Linear."""
  return (('dense', hidden), ('relu',), ('dropout',), ('dense', hidden),
          ('relu',), ('dropout',), ('dense', num_classes))


def alexnet_features(width: int = 64) -> tuple[tuple[Any, ...], ...]:
  """torchvision `alexnet().features` (the one-GPU variant, 64 first)."""
  c = lambda n: n * width // 64  # Channel counts scale with `width`.
  return (('conv', c(64), 11, 4, 2, True), ('relu',), ('pool', 3, 2, 0),
          ('conv', c(192), 5, 1, 2, True), ('relu',), ('pool', 3, 2, 0),
          ('conv', c(384), 3, 1, 1, True), ('relu',),
          ('conv', c(256), 3, 1, 1, True), ('relu',),
          ('conv', c(256), 3, 1, 1, True), ('relu',), ('pool', 3, 2, 0))


def alexnet_classifier(hidden: int, num_classes: int):
  """torchvision `alexnet().classifier`: (Dropout-Linear-ReLU) x2, Linear."""
  return (('dropout',), ('dense', hidden), ('relu',), ('dropout',),
          ('dense', hidden), ('relu',), ('dense', num_classes))


def cnn_m_features(width: int = 96) -> tuple[tuple[Any, ...], ...]:
  """kollias2019 Table 4: CNN-M's convolutions with batch norm, TF padding.

  Table 4 lists no conv biases (only "biases in the fully connected
  layers"), and a bias before batch norm would be redundant, so none.
  """
  c = lambda n: n * width // 96
  return (('conv', c(96), 7, 2, 'VALID', False), ('bn',), ('relu',),
          ('pool', 3, 2, 'VALID'),
          ('conv', c(256), 5, 2, 'SAME', False), ('bn',), ('relu',),
          ('pool', 3, 2, 'SAME'),
          ('conv', c(512), 3, 1, 'SAME', False), ('bn',), ('relu',),
          ('conv', c(512), 3, 1, 'SAME', False), ('bn',), ('relu',),
          ('conv', c(512), 3, 1, 'SAME', False), ('bn',), ('relu',),
          ('pool', 2, 2, 'SAME'))


def cnn_m_classifier(hidden: int, num_classes: int):
  """kollias2019 Table 4: fc 1 (4096, ReLU) and the linear fc 2."""
  return (('dense', hidden), ('relu',), ('dense', num_classes))


def _padding(p):
  return p if isinstance(p, str) else ((p, p), (p, p))


def _max_pool(x, k: int, s: int, p):
  """nn.max_pool, through the fast-gradient forms where they apply."""
  pad = 0 if p == 'VALID' else p
  if (k, s, pad) == (2, 2, 0):
    return pooling.max_pool_2x2(x)
  if (k, s) == (3, 2) and isinstance(pad, int):
    return pooling.max_pool_3x3_s2(x, pad)
  return nn.max_pool(x, (k, k), strides=(s, s), padding=_padding(p))


def adaptive_avg_pool(x, size: int):
  """torch's AdaptiveAvgPool2d((size, size)) on [N, H, W, C].

  Output cell i averages rows floor(i*H/size) .. ceil((i+1)*H/size) - 1 (the
  same for columns); for H smaller than `size` cells repeat input pixels,
  which is how torchvision's classifiers accept small images.
  """
  h, w = x.shape[1:3]
  if (h, w) == (size, size):
    return x
  if h % size == 0 and w % size == 0:
    n, _, _, c = x.shape
    return x.reshape(n, size, h // size, size, w // size, c).mean((2, 4))

  def bounds(n):
    return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]

  rows = [jnp.mean(x[:, a:b], axis=1, keepdims=True) for a, b in bounds(h)]
  x = jnp.concatenate(rows, axis=1)
  cols = [jnp.mean(x[:, :, a:b], axis=2, keepdims=True) for a, b in bounds(w)]
  return jnp.concatenate(cols, axis=2)


class ConvNet(nn.Module):
  """A torch.nn.Sequential-shaped CNN: features, pooling, classifier.

  Attributes:
    features: layer specs of the convolutional part (module docstring).
    classifier: layer specs after pooling; None (a trunk) returns the pooled
      features.
    pool: between the two parts: 'flatten' (the conv output as it is, as
      TensorFlow models and AffWildNet do), 'avg' (global average), or an
      int n (torchvision's AdaptiveAvgPool2d((n, n)) then flatten: 7 for
      VGG, 6 for AlexNet).
    dropout_rate: of the ('dropout',) slots, in training.
    dtype: computation dtype; parameters stay float32.
    frozen_bn: always use (and never update) BatchNorm running statistics.
  """
  features: Sequence[Any]
  classifier: Sequence[Any] | None = None
  pool: str | int = 'flatten'
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  frozen_bn: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Images -> features or logits.

    Args:
      x: [N, H, W, 3] normalised images.
      train: dropout on and BatchNorm on batch statistics (updating
        `batch_stats`, caller passes `mutable=['batch_stats']`).

    Returns:
      [N, D] pooled features if `classifier` is None (D = h*w*C for
      'flatten', C for 'avg', n*n*C for an int), else [N, K] logits.
    """
    x = jnp.asarray(x, self.dtype)
    x = self._run(self.features, 'features', x, train)
    if self.pool == 'avg':
      x = jnp.mean(x, axis=(1, 2))
    else:
      if isinstance(self.pool, int):
        x = adaptive_avg_pool(x, self.pool)
      x = jnp.reshape(x, (x.shape[0], -1))
    if self.classifier is not None:
      x = self._run(self.classifier, 'classifier', x, train)
    return x

  def _run(self, specs, prefix: str, x, train: bool):
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              kernel_init=_dense_init)
    for i, spec in enumerate(specs):
      kind, name = spec[0], f'{prefix}_{i}'
      if kind == 'conv':
        _, feats, k, s, p, bias = spec
        x = nn.Conv(feats, (k, k), strides=(s, s), padding=_padding(p),
                    use_bias=bias, dtype=self.dtype, kernel_init=_conv_init,
                    conv_general_dilated=strided_conv.conv_general_dilated,
                    name=name)(x)
      elif kind == 'pool':
        x = _max_pool(x, *spec[1:])
      elif kind == 'bn':
        x = nn.BatchNorm(use_running_average=self.frozen_bn or not train,
                         momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                         dtype=self.dtype, name=name)(x)
      elif kind == 'relu':
        x = nn.relu(x)
      elif kind == 'dropout':
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      elif kind == 'dense':
        x = dense(spec[1], name=name)(x)
      else:
        raise ValueError(f'Unknown layer spec {spec!r}.')
    return x
