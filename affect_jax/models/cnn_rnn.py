"""Per-frame CNN -> RNN -> per-frame Dense head (tzirakis2019 Sec. 3)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class CNNRNN(nn.Module):
  """A frame trunk, an optional recurrent layer and a per-frame linear head.

  The top-level parameter names are fixed because training code relies on
  them: `trunk` (frozen when fine-tuning only the top), `rnn`, and the head
  (deleted and re-initialised for the pretrain -> fine-tune head swap).

  Attributes:
    trunk: module mapping ([N, H, W, 3], train=...) -> [N, F], e.g.
      `ResNet(num_classes=None)`.
    rnn: module mapping ([B, T, F], mask=...) -> [B, T, F'], e.g. `LSTM`;
      None applies the head to each frame's features (CNN-only).
    num_outputs: K, units of the head (8 emotions, or arousal and valence).
    head_name: parameter name of the head.
  """
  trunk: nn.Module
  rnn: nn.Module | None
  num_outputs: int
  head_name: str = 'head'

  @nn.compact
  def __call__(self, frames, mask=None, train: bool = False):
    """Per-frame logits of a batch of windows.

    Args:
      frames: [B, T, H, W, 3] float, already normalised.
      mask: optional [B, T], 1 for real frames, 0 for padding (passed to the
        RNN; padded frames still go through the trunk).
      train: training mode of the trunk (BatchNorm statistics).

    Returns:
      [B, T, num_outputs] logits (no activation).
    """
    b, t = frames.shape[:2]
    # The trunk sees frames independently: fold time into the batch.
    feats = self.trunk(jnp.reshape(frames, (b * t,) + frames.shape[2:]),
                       train=train)
    feats = jnp.reshape(feats, (b, t, feats.shape[-1]))
    if self.rnn is not None:
      feats = self.rnn(feats, mask=mask)
    # float32 logits whatever the compute dtype: the losses want them.
    return nn.Dense(self.num_outputs, dtype=jnp.float32,
                    name=self.head_name)(feats)
