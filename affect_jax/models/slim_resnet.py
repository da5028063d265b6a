"""ResNet-50 v1 in TF-slim's layout (`resnet_v1.resnet_v1_50`), NHWC.

The trunk of the released AffWildNet ResNet-GRU (kollias2019; TF 1.8
`tf.contrib.slim.nets.resnet_v1`, under `resnet_arg_scope()`). It computes a
different function from torchvision's ResNet-50 (`resnet.py`) with the same
number of weights, so imported slim weights need this module:

  slim resnet_v1_50                       torchvision (resnet.py)
  stride 2 in the LAST unit of blocks     stride 2 in the FIRST block of
  1-3 (block4: stride 1)                  layers 2-4
  a strided unit with as many channels    every shape change is projected
  in as out: shortcut = x[::2, ::2]       (1x1 conv + BN)
  stem max-pool 3x3/2 'SAME' (pads 0      max-pool 3x3/2 padding 1 on each
  before, 1 after on even sizes)          side
  BN decay 0.997, epsilon 1e-5            momentum 0.1, epsilon 1e-5

Shared: the bottleneck 1x1 -> 3x3 (the stride) -> 1x1 x4, BN after every
convolution, no conv biases, symmetric padding (slim's `conv2d_same`: 3 for
the 7x7/2 stem, 1 for every 3x3), global average pooling to 2048 features.

Parameter names follow slim's variable scopes mechanically (one Flax module
per slim scope, `/` -> `_`):

  slim variable                                    Flax variable
  resnet_v1_50/conv1/weights [7, 7, 3, 64]         params/conv1/kernel
  resnet_v1_50/conv1/BatchNorm/gamma, beta         params/conv1_bn/scale, bias
  .../BatchNorm/moving_mean, moving_variance       batch_stats/conv1_bn/mean,
                                                   var
  resnet_v1_50/block1/unit_1/bottleneck_v1/        params/block1_unit_1/
    shortcut|conv1|conv2|conv3/weights               shortcut|conv1|conv2|conv3/
                                                     kernel (and *_bn)

(convolution kernels are HWIO in both frameworks, so nothing is transposed).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from affect_jax.models import strided_conv
from affect_jax.models.resnet import Conv1x1, conv_kernel_init

# slim's resnet_arg_scope(): batch_norm_decay=0.997, batch_norm_epsilon=1e-5.
SLIM_BN_MOMENTUM = 0.997
SLIM_BN_EPSILON = 1e-5
EXPANSION = 4


class SlimBottleneck(nn.Module):
  """slim's `bottleneck` (resnet_v1): BN after each convolution.

  Attributes:
    depth_bottleneck: channels of the 1x1 and 3x3 convolutions.
    strides: of the 3x3 convolution and of the shortcut.
    conv, conv1x1, norm: constructors (dtype, init, mode bound).
  """
  depth_bottleneck: int
  strides: int
  conv: Any
  conv1x1: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    depth = EXPANSION * self.depth_bottleneck
    s = self.strides
    if x.shape[-1] == depth:
      # resnet_utils.subsample: a 1x1 max-pool of stride s ('SAME' pads
      # nothing for a 1x1 window), i.e. every s-th pixel.
      shortcut = x[:, ::s, ::s, :] if s > 1 else x
    else:
      shortcut = self.norm(name='shortcut_bn')(
          self.conv1x1(depth, strides=s, name='shortcut')(x))
    y = nn.relu(self.norm(name='conv1_bn')(
        self.conv1x1(self.depth_bottleneck, name='conv1')(x)))
    # conv2d_same: 'SAME' at stride 1; explicit (1, 1) then 'VALID' at
    # stride 2. Both are a symmetric pad of 1 for a 3x3 kernel.
    y = self.conv(self.depth_bottleneck, (3, 3), strides=(s, s),
                  padding=((1, 1), (1, 1)), name='conv2')(y)
    y = nn.relu(self.norm(name='conv2_bn')(y))
    y = self.norm(name='conv3_bn')(self.conv1x1(depth, name='conv3')(y))
    return nn.relu(shortcut + y)


class SlimResNetV1(nn.Module):
  """slim `resnet_v1_50(num_classes=None)` features: [N, H, W, 3] -> [N, 2048].

  Attributes:
    stage_sizes: units per block; (3, 4, 6, 3) is ResNet-50.
    base_depths: bottleneck channels per block (64, 128, 256, 512); a block
      outputs 4x that.
    block_strides: stride of each block's last unit (slim: 2, 2, 2, 1).
    stem_width: channels of the 7x7 stem (slim: 64).
    dtype: computation dtype; parameters stay float32.
    frozen_bn: always normalise with the running statistics.
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  base_depths: Sequence[int] = (64, 128, 256, 512)
  block_strides: Sequence[int] = (2, 2, 2, 1)
  stem_width: int = 64
  dtype: Any = jnp.float32
  frozen_bn: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Images -> [N, 4 * base_depths[-1]] globally averaged features."""
    conv = functools.partial(
        nn.Conv, use_bias=False, padding='VALID', dtype=self.dtype,
        kernel_init=conv_kernel_init,
        conv_general_dilated=strided_conv.conv_general_dilated)
    conv1x1 = functools.partial(Conv1x1, dtype=self.dtype)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=self.frozen_bn or not train,
        momentum=SLIM_BN_MOMENTUM, epsilon=SLIM_BN_EPSILON, dtype=self.dtype)
    x = jnp.asarray(x, self.dtype)
    x = conv(self.stem_width, (7, 7), strides=(2, 2),
             padding=((3, 3), (3, 3)), name='conv1')(x)
    x = nn.relu(norm(name='conv1_bn')(x))
    # TensorFlow's 'SAME' (resnet_arg_scope): Flax computes the same pads.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for i, (units, depth, stride) in enumerate(zip(
        self.stage_sizes, self.base_depths, self.block_strides)):
      for j in range(units):
        x = SlimBottleneck(depth, stride if j == units - 1 else 1, conv=conv,
                           conv1x1=conv1x1, norm=norm,
                           name=f'block{i + 1}_unit_{j + 1}')(x)
    return jnp.mean(x, axis=(1, 2))
