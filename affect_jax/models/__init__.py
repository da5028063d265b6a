"""Networks, one module per building block, and `build(arch, **kwargs)`.

  resnet.py        ResNet (torchvision v1.5 bottleneck layout)
  slim_resnet.py   ResNet-50 v1 in TF-slim's layout (released AffWildNet)
  convnet.py       ConvNet: VGG-16 / VGG-Face, AlexNet (torchvision layout),
                   CNN-M (kollias2019 Table 4)
  pooling.py       max-pools with fast gradients (same values as nn.max_pool)
  recurrent.py     LSTM (optional peepholes), GRU; torch.nn.LSTM/GRU mapping
  cnn_rnn.py       CNNRNN: trunk per frame -> [FC] -> [RNN] -> per-frame head
  torch_import.py  torchvision state dict -> Flax variables
  tf_bundle.py     TensorFlow V2 checkpoint reader (no TensorFlow needed)
  tf1_import.py    the released Aff-Wild TF1 checkpoints -> Flax variables

Architectures (docs/models.md has every argument):

  '<trunk>'            an image network [N, H, W, 3] -> features (default)
                       or logits (`num_classes`): resnet50, vgg16, vgg_face,
                       alexnet, cnn_m, resnet_v1_50 (slim's layout).
  '<trunk>_frames'     CNN-only video model [B, T, H, W, 3] -> [B, T, K].
  '<trunk>_lstm'       trunk -> [FC] -> LSTM -> head (resnet50_lstm is
                       RealEyes, tzirakis2019).
  '<trunk>_gru'        trunk -> [FC] -> GRU -> head (the 4K models:
                       alexnet_gru, vgg16_gru, resnet50_gru).
  'affwildnet'         kollias2019 Table 8 (trunk_arch vgg_face or
                       resnet50), landmarks fused into the FC input.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from affect_jax.errors import AffectJaxError
from affect_jax.models import convnet
from affect_jax.models.cnn_rnn import CNNRNN, FCBlock
from affect_jax.models.convnet import ConvNet
from affect_jax.models.recurrent import GRU, LSTM
from affect_jax.models.recurrent import gru_params_from_torch
from affect_jax.models.recurrent import lstm_params_from_torch
from affect_jax.models.resnet import ResNet
from affect_jax.models.slim_resnet import SlimResNetV1
from affect_jax.models.training import trainable_labels

__all__ = ['ARCHS', 'CNNRNN', 'ConvNet', 'FCBlock', 'GRU', 'LSTM', 'ResNet',
           'TRUNKS', 'build', 'gru_params_from_torch',
           'load_torch_state_dict', 'lstm_params_from_torch',
           'trainable_labels']


# ----------------------------------------------------------------- trunks ---


def _resnet50(*, num_classes: int | None = None, width: int = 64,
              stage_sizes: Sequence[int] = (3, 4, 6, 3),
              dtype: Any = jnp.float32, zero_init_residual: bool = False,
              frozen_bn: bool = False) -> nn.Module:
  return ResNet(stage_sizes=tuple(stage_sizes), width=width,
                num_classes=num_classes, dtype=dtype,
                zero_init_residual=zero_init_residual, frozen_bn=frozen_bn)


def _resnet_v1_50(*, stage_sizes: Sequence[int] = (3, 4, 6, 3),
                  base_depths: Sequence[int] = (64, 128, 256, 512),
                  stem_width: int = 64, dtype: Any = jnp.float32,
                  frozen_bn: bool = False) -> nn.Module:
  return SlimResNetV1(stage_sizes=tuple(stage_sizes),
                      base_depths=tuple(base_depths), stem_width=stem_width,
                      dtype=dtype, frozen_bn=frozen_bn)


def _convnet(features_fn, classifier_fn, default_pool, *,
             num_classes: int | None = None, width: int | None = None,
             fc_hidden: int = 4096, pool: str | int | None = None,
             dropout_rate: float = 0.5, dtype: Any = jnp.float32,
             frozen_bn: bool = False) -> nn.Module:
  features = features_fn() if width is None else features_fn(width)
  if num_classes is None:
    # A trunk: the conv part, flattened (what kollias2019 feeds its FC).
    classifier, default_pool = None, 'flatten'
  else:
    classifier = classifier_fn(fc_hidden, num_classes)
  return ConvNet(features=features, classifier=classifier,
                 pool=default_pool if pool is None else pool,
                 dropout_rate=dropout_rate, dtype=dtype, frozen_bn=frozen_bn)


_vgg16 = functools.partial(_convnet, convnet.vgg16_features,
                           convnet.vgg_classifier, 7)
_alexnet = functools.partial(_convnet, convnet.alexnet_features,
                             convnet.alexnet_classifier, 6)
_cnn_m = functools.partial(_convnet, convnet.cnn_m_features,
                           convnet.cnn_m_classifier, 'flatten')

# Per-frame image networks; their `num_classes=None` form is the trunk.
TRUNKS: dict[str, Callable[..., nn.Module]] = {
    'resnet50': _resnet50,
    'vgg16': _vgg16,
    'vgg_face': _vgg16,  # VGG-16 layout; its own head has 2,622 identities.
    'alexnet': _alexnet,
    'cnn_m': _cnn_m,
    # TF-slim's resnet_v1_50 (features only), for imported TF1 weights.
    'resnet_v1_50': _resnet_v1_50,
}

# FC layers between trunk and RNN / head when `fc_features` is not given:
# the 4K thesis keeps VGG-16's first FC (4096) and AlexNet's two; CNN-M's
# fc 1 is 4096 (kollias2019 Table 4); tzirakis2019 feeds ResNet-50's pooled
# features straight to the LSTM.
FC_DEFAULTS = {'resnet50': (), 'vgg16': (4096,), 'vgg_face': (4096,),
               'alexnet': (4096, 4096), 'cnn_m': (4096,), 'resnet_v1_50': ()}


def _call_checked(arch: str, builder: Callable, kwargs: dict[str, Any],
                  also: Sequence[str] = ()) -> nn.Module:
  """builder(**kwargs), with a config-level message for bad arguments."""
  params = inspect.signature(builder).parameters
  named = {n for n, p in params.items() if p.kind != p.VAR_KEYWORD}
  unknown = sorted(set(kwargs) - named)
  if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
    raise AffectJaxError(
        f'Model arch {arch!r} takes no argument(s) {unknown} (config '
        f'model.*); it takes {sorted(named | set(also))}.')
  missing = sorted(n for n, p in params.items()
                   if p.default is inspect.Parameter.empty
                   and p.kind == p.KEYWORD_ONLY and n not in kwargs)
  if missing:
    raise AffectJaxError(f'Model arch {arch!r} needs argument(s) {missing}.')
  return builder(**kwargs)


# ------------------------------------------------------------- composites ---


def _video(arch: str, trunk_arch: str, rnn: nn.Module | None, *,
           num_outputs: int, fc_features: Sequence[int] | None,
           fc_dropout: float, use_landmarks: bool, dtype: Any,
           trunk_kwargs: dict[str, Any], also: Sequence[str]) -> CNNRNN:
  trunk = _call_checked(arch, TRUNKS[trunk_arch],
                        dict(trunk_kwargs, dtype=dtype), also)
  if fc_features is None:
    fc_features = FC_DEFAULTS[trunk_arch]
  fc = (FCBlock(tuple(fc_features), dropout_rate=fc_dropout, dtype=dtype)
        if fc_features else None)
  return CNNRNN(trunk=trunk, fc=fc, rnn=rnn, num_outputs=num_outputs,
                use_landmarks=use_landmarks)


def _check_layers(name: str, value: int, arch: str):
  if not 1 <= value <= 3:
    raise AffectJaxError(
        f'{name}={value} (config model.{name}) must be 1, 2 or 3; use arch '
        f"{arch.rsplit('_', 1)[0] + '_frames'!r} for no recurrent layer.")


_VIDEO_ARGS = ('num_outputs', 'fc_features', 'fc_dropout', 'use_landmarks',
               'dtype', 'rnn_dropout', 'unroll')


def _frames(trunk_arch: str, *, num_outputs: int,
            fc_features: Sequence[int] | None = None, fc_dropout: float = 0.5,
            use_landmarks: bool = False, dtype: Any = jnp.float32,
            **trunk_kwargs) -> nn.Module:
  return _video(f'{trunk_arch}_frames', trunk_arch, None,
                num_outputs=num_outputs, fc_features=fc_features,
                fc_dropout=fc_dropout, use_landmarks=use_landmarks,
                dtype=dtype, trunk_kwargs=trunk_kwargs, also=_VIDEO_ARGS[:5])


def _with_lstm(trunk_arch: str, *, num_outputs: int, lstm_hidden: int = 256,
               lstm_layers: int = 2, peephole: bool = False,
               rnn_dropout: float = 0.0, unroll: int = 1,
               fc_features: Sequence[int] | None = None,
               fc_dropout: float = 0.5, use_landmarks: bool = False,
               dtype: Any = jnp.float32, **trunk_kwargs) -> nn.Module:
  # tzirakis2019 does not give the LSTM width. kollias2019 (AffWildNet) found
  # 100-150 units per layer best for its 2-layer RNN on 1500-d FC features;
  # 256 is a modest step up for the raw 2048-d ResNet-50 features, and it is
  # what configs/realeyes.py sets.
  arch = f'{trunk_arch}_lstm'
  _check_layers('lstm_layers', lstm_layers, arch)
  rnn = LSTM(hidden_size=lstm_hidden, num_layers=lstm_layers,
             peephole=peephole, dropout_rate=rnn_dropout, unroll=unroll,
             dtype=dtype)
  return _video(arch, trunk_arch, rnn, num_outputs=num_outputs,
                fc_features=fc_features, fc_dropout=fc_dropout,
                use_landmarks=use_landmarks, dtype=dtype,
                trunk_kwargs=trunk_kwargs,
                also=_VIDEO_ARGS + ('lstm_hidden', 'lstm_layers', 'peephole'))


def _with_gru(trunk_arch: str, *, num_outputs: int, gru_hidden: int = 128,
              gru_layers: int = 2, gru_reset_after: bool = True,
              rnn_dropout: float = 0.0, unroll: int = 1,
              fc_features: Sequence[int] | None = None,
              fc_dropout: float = 0.5, use_landmarks: bool = False,
              dtype: Any = jnp.float32, **trunk_kwargs) -> nn.Module:
  # The 4K thesis does not give the GRU width; 2 x 128 is the AffWildNet GRU
  # its VGG16-GRU was taken from.
  arch = f'{trunk_arch}_gru'
  _check_layers('gru_layers', gru_layers, arch)
  rnn = GRU(hidden_size=gru_hidden, num_layers=gru_layers,
            dropout_rate=rnn_dropout, unroll=unroll, dtype=dtype,
            reset_after=gru_reset_after)
  return _video(arch, trunk_arch, rnn, num_outputs=num_outputs,
                fc_features=fc_features, fc_dropout=fc_dropout,
                use_landmarks=use_landmarks, dtype=dtype,
                trunk_kwargs=trunk_kwargs,
                also=_VIDEO_ARGS + ('gru_hidden', 'gru_layers',
                                    'gru_reset_after'))


def _affwildnet(*, num_outputs: int = 2, trunk_arch: str = 'vgg_face',
                fc_features: Sequence[int] | None = None,
                fc_dropout: float = 0.5, use_landmarks: bool = True,
                gru_hidden: int = 128, gru_layers: int = 2,
                gru_reset_after: bool = True,
                rnn_dropout: float = 0.5, unroll: int = 1,
                dtype: Any = jnp.float32, **trunk_kwargs) -> nn.Module:
  # kollias2019 Table 8: FC 1 has 4096 units on VGG-Face, 1500 on ResNet-50,
  # each followed by dropout (0.5, Sec. 4.2.1), as is GRU layer 1.
  # gru_reset_after=False and trunk_arch='resnet_v1_50' are the released
  # TF1 models' GRUCell and slim ResNet (models/tf1_import.py).
  if trunk_arch not in ('vgg_face', 'vgg16', 'resnet50', 'resnet_v1_50'):
    raise AffectJaxError(
        f"affwildnet trunk_arch={trunk_arch!r} (config model.trunk_arch); "
        "use 'vgg_face', 'vgg16', 'resnet50' or 'resnet_v1_50'.")
  if fc_features is None:
    fc_features = ((1500,) if trunk_arch in ('resnet50', 'resnet_v1_50')
                   else (4096,))
  _check_layers('gru_layers', gru_layers, f'{trunk_arch}_gru')
  rnn = GRU(hidden_size=gru_hidden, num_layers=gru_layers,
            dropout_rate=rnn_dropout, unroll=unroll, dtype=dtype,
            reset_after=gru_reset_after)
  return _video('affwildnet', trunk_arch, rnn, num_outputs=num_outputs,
                fc_features=fc_features, fc_dropout=fc_dropout,
                use_landmarks=use_landmarks, dtype=dtype,
                trunk_kwargs=trunk_kwargs,
                also=_VIDEO_ARGS + ('trunk_arch', 'gru_hidden', 'gru_layers',
                                    'gru_reset_after'))


ARCHS: dict[str, Callable[..., nn.Module]] = dict(TRUNKS)
for _t in TRUNKS:
  ARCHS[f'{_t}_frames'] = functools.partial(_frames, _t)
  ARCHS[f'{_t}_lstm'] = functools.partial(_with_lstm, _t)
  ARCHS[f'{_t}_gru'] = functools.partial(_with_gru, _t)
ARCHS['affwildnet'] = _affwildnet


def build(arch: str, **kwargs) -> nn.Module:
  """The network `arch` with the given plain-value arguments.

  Args:
    arch: a key of `ARCHS` (module docstring; docs/models.md lists every
      argument). Image networks ('resnet50', 'vgg16', 'vgg_face', 'alexnet',
      'cnn_m') take num_classes (None: the trunk's features), width, dtype
      and their own options; video models ('<trunk>_frames', '_lstm',
      '_gru', 'affwildnet') need num_outputs and also take the trunk's
      arguments (not num_classes), and `remat` (recompute the trunk in the
      backward pass: less memory, same gradients).
    **kwargs: the architecture's arguments.

  Returns:
    An unbound Flax module. Image networks map [N, H, W, 3] -> [N, D];
    video models map (frames [B, T, H, W, 3], mask=[B, T], train=bool,
    landmarks=[B, T, 68, 2] when fused) -> [B, T, num_outputs].

  Raises:
    AffectJaxError: unknown `arch`, or an argument it does not take.
  """
  if arch not in ARCHS:
    raise AffectJaxError(
        f'Unknown model arch {arch!r} (config model.arch); use one of '
        f'{sorted(ARCHS)}.')
  if arch not in TRUNKS and 'num_classes' in kwargs:
    raise AffectJaxError(
        f'Model arch {arch!r} takes num_outputs, not num_classes.')
  if 'trunk_arch' in kwargs and arch != 'affwildnet':
    # The other video models name their trunk in the arch itself.
    raise AffectJaxError(
        f'Model arch {arch!r} takes no trunk_arch (config model.trunk_arch): '
        "only 'affwildnet' does; the others name their trunk in the arch "
        "(e.g. 'resnet50_lstm'). Remove model.trunk_arch.")
  remat = kwargs.pop('remat', False)
  if remat and arch in TRUNKS:
    raise AffectJaxError(
        f'model.remat applies to the video models, not to arch {arch!r}.')
  model = _call_checked(arch, ARCHS[arch], kwargs)
  if not remat:
    return model
  if isinstance(model.trunk, ResNet):
    # Per block: the whole trunk at once would recompute every activation
    # together in the backward pass, which saves no peak memory.
    return model.clone(trunk=model.trunk.clone(remat=True))
  return model.clone(remat=True)


def load_torch_state_dict(arch: str, state_dict, **kwargs) -> dict[str, Any]:
  """Flax variables of `build(arch, ...)` from a torchvision state dict.

  See `affect_jax.models.torch_import.load_torch_state_dict`.
  """
  from affect_jax.models import torch_import  # pylint: disable=g-import-not-at-top
  return torch_import.load_torch_state_dict(arch, state_dict, **kwargs)
