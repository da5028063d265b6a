"""ResNet-50 (He et al. 2016) in the torchvision v1.5 layout, NHWC.

The feature extractor of tzirakis2019 (Sec. 3, Table 1): a 7x7/64 stride-2
stem, 3x3 stride-2 max-pool, four bottleneck stages (3, 4, 6, 3) and a global
average pool.

Submodule and variable names map 1:1 to torchvision's ``resnet50`` state dict
so pretrained weights can be imported by renaming and transposing:

  torchvision                      Flax (this module)
  conv1.weight [O, I, kh, kw]      params/conv1/kernel [kh, kw, I, O]
  bn1.weight / bn1.bias            params/bn1/scale / params/bn1/bias
  bn1.running_mean / running_var   batch_stats/bn1/mean / batch_stats/bn1/var
  layer1.0.conv1.weight            params/layer1_0/conv1/kernel
  layer1.0.bn3.weight              params/layer1_0/bn3/scale
  layer1.0.downsample.0.weight     params/layer1_0/downsample_conv/kernel
  layer1.0.downsample.1.weight     params/layer1_0/downsample_bn/scale
  fc.weight [K, C] / fc.bias       params/fc/kernel [C, K] / params/fc/bias

(``bn*.num_batches_tracked`` has no counterpart.) Convolutions use explicit
symmetric padding as torch does, not 'SAME', which pads stride-2 convolutions
of even-sized inputs asymmetrically and would shift imported filters by one
pixel. One numerical difference remains: Flax updates the running variance
with the biased batch variance, torch with the unbiased one (larger by
n / (n - 1), n = N * H * W values per channel).

For speed on XLA:CPU the 1x1 convolutions are matmuls (`Conv1x1`), the
max-pool has a hand-written gradient (`pooling.max_pool_3x3_s2`) and so has
the input of the strided 3x3 convolutions (`strided_conv`); all compute the
same values with the same parameters as nn.Conv / nn.max_pool
(tests/test_layers.py; docs/BENCHMARKS.md has the timings).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from affect_jax.models import strided_conv
from affect_jax.models.pooling import max_pool_3x3_s2, reshape_keep_batch

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), an
# untruncated normal with variance 2 / fan_out.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# torch.nn.BatchNorm2d defaults: running = 0.9 * running + 0.1 * batch.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# Bottleneck blocks widen their input by this factor (1x1 -> 3x3 -> 1x1*4).
EXPANSION = 4


class Conv1x1(nn.Module):
  """A bias-free 1x1 convolution computed as a matmul.

  With stride s it reads every s-th pixel, as torch's padding-0 strided 1x1
  convolution does (the projection shortcuts). The kernel keeps nn.Conv's
  [1, 1, in, out] layout and initialisation, so it is interchangeable with
  `nn.Conv(features, (1, 1))` parameters. XLA:CPU runs a 1x1 convolution,
  and much more its gradients, slower than the equivalent matmul, and 1x1
  convolutions hold most of ResNet-50's FLOPs.

  Attributes:
    features: output channels.
    strides: spatial subsampling.
    dtype: computation dtype; the kernel is stored as float32.
    kernel_init: initialiser of the [1, 1, in, out] kernel.
  """
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  kernel_init: Any = conv_kernel_init

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, ceil(H / strides), ceil(W / strides), features]."""
    kernel = self.param('kernel', self.kernel_init,
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    if self.strides > 1:
      x = x[:, ::self.strides, ::self.strides, :]
    x, kernel = nn.dtypes.promote_dtype(x, kernel[0, 0], dtype=self.dtype)
    # A 2-D [N*H*W, C] matmul, not a dot_general on the 4-D array: XLA then
    # makes no transposed copy of the activations for the gradients
    # (benchmarks/layers.py: 7-25% faster fwd+bwd than nn.Conv on CPU).
    out = jnp.dot(reshape_keep_batch(x, (-1, x.shape[-1])), kernel)
    return reshape_keep_batch(out, x.shape[:-1] + (self.features,))


class Bottleneck(nn.Module):
  """The v1.5 bottleneck: 1x1 -> 3x3 (carries the stride) -> 1x1 x4.

  Attributes:
    width: channels of the two inner convolutions; the block outputs
      `EXPANSION * width`.
    strides: stride of the 3x3 convolution and of the projection shortcut.
    conv: convolution constructor (dtype and init already bound).
    conv1x1: 1x1 convolution constructor taking (features, strides=).
    norm: BatchNorm constructor (mode, dtype already bound).
    zero_init_residual: start `bn3`'s scale at zero so the block begins as
      the identity (torchvision's option; helps training from scratch).
  """
  width: int
  strides: int
  conv: Any
  conv1x1: Any
  norm: Any
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, H / strides, W / strides, 4 * width]."""
    out_ch = self.width * EXPANSION
    y = self.conv1x1(self.width, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.width, (3, 3), strides=(self.strides, self.strides),
                  padding=((1, 1), (1, 1)), name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv1x1(out_ch, name='conv3')(y)
    scale_init = (nn.initializers.zeros if self.zero_init_residual
                  else nn.initializers.ones)
    y = self.norm(scale_init=scale_init, name='bn3')(y)
    # torchvision projects the shortcut whenever the shape changes, which is
    # the first block of every stage (layer1 too: 64 -> 256 channels).
    if self.strides != 1 or x.shape[-1] != out_ch:
      x = self.conv1x1(out_ch, strides=self.strides,
                       name='downsample_conv')(x)
      x = self.norm(name='downsample_bn')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Bottleneck ResNet (ResNet-50 with the defaults), torchvision v1.5 layout.

  Attributes:
    stage_sizes: blocks per stage; (3, 4, 6, 3) is ResNet-50.
    width: channels of the stem and of the first stage's inner convolutions.
      Stage i has inner width `width * 2**i` and outputs 4x that, so the
      pooled features have `32 * width` channels (2048 at width 64); width 16
      is a 4x narrower network.
    num_classes: None returns the pooled features; an int adds the final
      Dense `fc` and returns its logits.
    dtype: computation dtype (e.g. jnp.bfloat16); parameters stay float32.
    zero_init_residual: zero-initialise every block's last BatchNorm scale.
    frozen_bn: always normalise with the running statistics and never update
      them, also when `train=True` (fine-tuning with small batches).
    remat: recompute each block's inner activations in the backward pass
      (`nn.remat` per block): the backward then holds one block's
      intermediates at a time besides the block outputs; same values.
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  num_classes: int | None = None
  dtype: Any = jnp.float32
  zero_init_residual: bool = False
  frozen_bn: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Images -> features or logits.

    Args:
      x: [N, H, W, 3] normalised images (any size that survives the 32x
        downsampling, e.g. >= 32 px).
      train: normalise with batch statistics and update `batch_stats` (the
        caller passes `mutable=['batch_stats']`); False uses running averages.

    Returns:
      [N, 32 * width] pooled features if `num_classes` is None, else
      [N, num_classes] logits, in `dtype`.
    """
    conv = functools.partial(
        nn.Conv, use_bias=False, padding='VALID', dtype=self.dtype,
        kernel_init=conv_kernel_init,
        conv_general_dilated=strided_conv.conv_general_dilated)
    conv1x1 = functools.partial(Conv1x1, dtype=self.dtype)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=self.frozen_bn or not train,
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype)

    x = jnp.asarray(x, self.dtype)
    x = conv(self.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
             name='conv1')(x)
    x = nn.relu(norm(name='bn1')(x))
    x = max_pool_3x3_s2(x)
    block = nn.remat(Bottleneck) if self.remat else Bottleneck
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = block(
            width=self.width * 2**i,
            strides=2 if i > 0 and j == 0 else 1,
            conv=conv, conv1x1=conv1x1, norm=norm,
            zero_init_residual=self.zero_init_residual,
            name=f'layer{i + 1}_{j}')(x)
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes is not None:
      x = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    return x
