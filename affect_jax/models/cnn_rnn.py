"""Per-frame CNN -> [FC] -> [RNN] -> per-frame Dense head.

One composite for every video model of the papers: RealEyes (tzirakis2019:
ResNet-50 -> 2-layer LSTM -> FC), AffWildNet (kollias2019 Table 8: VGG-Face
or ResNet-50 conv part -> FC 4096 / 1500 + dropout with the 68 landmarks
concatenated to its input -> 2-layer GRU 128 -> FC 2), the 4K models
(affect4k_thesis: AlexNet / VGG-16 / ResNet-50 -> GRU -> FC 2) and the
CNN-only variants (no RNN).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from affect_jax.errors import AffectJaxError

NUM_LANDMARKS = 68


class FCBlock(nn.Module):
  """Dense -> ReLU -> Dropout, once per entry of `features`.

  Attributes:
    features: units of each layer (e.g. (4096,) for AffWildNet on VGG-Face).
    dropout_rate: after every layer, in training (kollias2019: 0.5).
    dtype: computation dtype.
  """
  features: Sequence[int]
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """[..., F] -> [..., features[-1]]."""
    for i, n in enumerate(self.features):
      x = nn.relu(nn.Dense(n, dtype=self.dtype, name=f'dense{i}')(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


class CNNRNN(nn.Module):
  """A frame trunk, optional FC layers and RNN, and a per-frame linear head.

  The top-level parameter names are fixed because training code relies on
  them: `trunk` (what imported ImageNet / VGG-Face weights initialise, and
  what fine-tuning may freeze), `fc` (the FC layers between trunk and RNN,
  with the landmarks fused into their input), `rnn`, and the head (deleted
  and re-initialised for the pretrain -> fine-tune head swap).

  Attributes:
    trunk: module mapping ([N, H, W, 3], train=...) -> [N, F], e.g.
      `ResNet(num_classes=None)` or `ConvNet(classifier=None)`.
    rnn: module mapping ([B, T, F'], mask=..., train=...) -> [B, T, F''],
      e.g. `LSTM` or `GRU`; None applies the head to each frame's features
      (CNN-only).
    num_outputs: K, units of the head (8 or 7 emotions, or arousal and
      valence). The head is linear: the sigmoid (multi-label), softmax
      (one-of-K) or identity (regression) belongs to the loss.
    fc: optional `FCBlock` (or any module ([..., F], train=...) -> [..., F'])
      between trunk and RNN.
    use_landmarks: concatenate the 68 (x, y) landmarks to the input of `fc`
      (or of the RNN / head without `fc`); the call then needs `landmarks`.
    head_name: parameter name of the head.
    remat: recompute the trunk's activations in the backward pass instead
      of keeping them (`nn.remat` of the whole trunk): same values and
      gradients, one more trunk forward per step. (`models.build(...,
      remat=True)` remats a ResNet trunk per block instead, which is what
      lowers the peak memory.)
  """
  trunk: nn.Module
  rnn: nn.Module | None
  num_outputs: int
  fc: nn.Module | None = None
  use_landmarks: bool = False
  head_name: str = 'head'
  remat: bool = False

  @nn.compact
  def __call__(self, frames, mask=None, train: bool = False, landmarks=None):
    """Per-frame logits of a batch of windows.

    Args:
      frames: [B, T, H, W, 3] float, already normalised.
      mask: optional [B, T], 1 for real frames, 0 for padding (passed to the
        RNN; padded frames still go through the trunk).
      train: training mode (BatchNorm batch statistics, dropout on; needs
        the 'dropout' rng where the model has dropout).
      landmarks: [B, T, 68, 2] (x, y) positions in the face crop (the
        batch's 'landmarks'), needed iff `use_landmarks`; ignored otherwise.

    Returns:
      [B, T, num_outputs] float32 logits (no activation).
    """
    b, t = frames.shape[:2]
    # The trunk sees frames independently: fold time into the batch.
    apply_trunk = nn.remat(_apply_trunk, static_argnums=(2,)) if (
        self.remat) else _apply_trunk
    feats = apply_trunk(self, jnp.reshape(frames,
                                          (b * t,) + frames.shape[2:]), train)
    feats = jnp.reshape(feats, (b, t, feats.shape[-1]))
    if self.use_landmarks:
      if landmarks is None:
        raise AffectJaxError(
            'This model fuses facial landmarks (model.use_landmarks=True) '
            "but was called without them; pass the batch's 'landmarks' "
            '[B, T, 68, 2], or set model.use_landmarks=False.')
      landmarks = jnp.reshape(jnp.asarray(landmarks, feats.dtype), (b, t, -1))
      if landmarks.shape[-1] != 2 * NUM_LANDMARKS:
        raise AffectJaxError(
            f'landmarks have {landmarks.shape[-1]} values per frame; the '
            f'model expects {NUM_LANDMARKS} (x, y) points [B, T, 68, 2].')
      feats = jnp.concatenate([feats, landmarks], axis=-1)
    if self.fc is not None:
      feats = self.fc(feats, train=train)
    if self.rnn is not None:
      feats = self.rnn(feats, mask=mask, train=train)
    # float32 logits whatever the compute dtype: the losses want them.
    return nn.Dense(self.num_outputs, dtype=jnp.float32,
                    name=self.head_name)(feats)


def _apply_trunk(module: CNNRNN, x, train: bool):
  return module.trunk(x, train=train)
