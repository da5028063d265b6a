"""Networks, one module per building block, and `build(arch, **kwargs)`.

  resnet.py     ResNet (torchvision v1.5 bottleneck layout)
  recurrent.py  LSTM (torch.nn.LSTM parameter mapping)
  cnn_rnn.py    CNNRNN: trunk per frame -> recurrent -> per-frame head

Architectures are named '<trunk>' (the trunk alone, e.g. an ImageNet
classifier) or '<trunk>_<rnn>' (a CNNRNN over windows of frames, with
'frames' for no recurrence). New trunks/recurrent layers get their own file
and a builder in `_ARCHS`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from affect_jax.errors import AffectJaxError
from affect_jax.models.cnn_rnn import CNNRNN
from affect_jax.models.recurrent import LSTM
from affect_jax.models.resnet import ResNet

__all__ = ['CNNRNN', 'LSTM', 'ResNet', 'build', 'ARCHS']


def _resnet50(*, num_classes: int | None = None, width: int = 64,
              stage_sizes: Sequence[int] = (3, 4, 6, 3),
              dtype: Any = jnp.float32, zero_init_residual: bool = False,
              frozen_bn: bool = False) -> nn.Module:
  return ResNet(stage_sizes=tuple(stage_sizes), width=width,
                num_classes=num_classes, dtype=dtype,
                zero_init_residual=zero_init_residual, frozen_bn=frozen_bn)


def _resnet50_lstm(*, num_outputs: int, width: int = 64,
                   stage_sizes: Sequence[int] = (3, 4, 6, 3),
                   lstm_hidden: int = 256, lstm_layers: int = 2,
                   dtype: Any = jnp.float32, unroll: int = 1,
                   zero_init_residual: bool = False,
                   frozen_bn: bool = False) -> nn.Module:
  # tzirakis2019 does not give the LSTM width. kollias2019 (AffWildNet) found
  # 100-150 units per layer best for its 2-layer RNN on 1500-d FC features;
  # 256 is a modest step up for the raw 2048-d ResNet-50 features, and it is
  # what configs/realeyes.py sets.
  if lstm_layers < 1:
    raise AffectJaxError(
        f'lstm_layers={lstm_layers} (config model.lstm_layers) must be >= 1; '
        "use arch 'resnet50_frames' for no recurrent layer.")
  trunk = _resnet50(width=width, stage_sizes=stage_sizes, dtype=dtype,
                    zero_init_residual=zero_init_residual,
                    frozen_bn=frozen_bn)
  rnn = LSTM(hidden_size=lstm_hidden, num_layers=lstm_layers, unroll=unroll,
             dtype=dtype)
  return CNNRNN(trunk=trunk, rnn=rnn, num_outputs=num_outputs)


def _resnet50_frames(*, num_outputs: int, width: int = 64,
                     stage_sizes: Sequence[int] = (3, 4, 6, 3),
                     dtype: Any = jnp.float32,
                     zero_init_residual: bool = False,
                     frozen_bn: bool = False) -> nn.Module:
  trunk = _resnet50(width=width, stage_sizes=stage_sizes, dtype=dtype,
                    zero_init_residual=zero_init_residual,
                    frozen_bn=frozen_bn)
  return CNNRNN(trunk=trunk, rnn=None, num_outputs=num_outputs)


ARCHS: dict[str, Callable[..., nn.Module]] = {
    'resnet50': _resnet50,  # [N, H, W, 3] -> features or `num_classes`.
    'resnet50_lstm': _resnet50_lstm,  # [B, T, H, W, 3] -> [B, T, K].
    'resnet50_frames': _resnet50_frames,  # CNN-only, [B, T, ...] -> [B, T, K].
}


def build(arch: str, **kwargs) -> nn.Module:
  """The network `arch` with the given plain-value arguments.

  Args:
    arch: a key of `ARCHS`: 'resnet50' (a `ResNet`, kwargs: num_classes,
      width, stage_sizes, dtype, zero_init_residual, frozen_bn),
      'resnet50_lstm' (a `CNNRNN` with a ResNet trunk and an `LSTM`; kwargs:
      num_outputs (required), width=64, stage_sizes=(3, 4, 6, 3),
      lstm_hidden=256, lstm_layers=2, dtype=float32, unroll=1,
      zero_init_residual=False, frozen_bn=False) or 'resnet50_frames' (the
      same without the LSTM).
    **kwargs: the architecture's arguments.

  Returns:
    An unbound Flax module.

  Raises:
    AffectJaxError: unknown `arch`, or an argument it does not take.
  """
  if arch not in ARCHS:
    raise AffectJaxError(
        f'Unknown model arch {arch!r} (config model.arch); use one of '
        f'{sorted(ARCHS)}.')
  builder = ARCHS[arch]
  params = inspect.signature(builder).parameters
  unknown = sorted(set(kwargs) - set(params))
  if unknown:
    raise AffectJaxError(
        f'Model arch {arch!r} takes no argument(s) {unknown} (config '
        f'model.*); it takes {sorted(params)}.')
  missing = sorted(n for n, p in params.items()
                   if p.default is inspect.Parameter.empty and n not in kwargs)
  if missing:
    raise AffectJaxError(
        f'Model arch {arch!r} needs argument(s) {missing}.')
  return builder(**kwargs)
