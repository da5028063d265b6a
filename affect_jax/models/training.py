"""Which parameters train: labels for `optax.multi_transform`.

Fine-tuning freezes chosen layers (e.g. a trunk's stem and first stages) and
keeps BatchNorm statistics fixed (the trunks' `frozen_bn=True`, which also
makes `train=True` normalise with the running statistics).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax
from flax import traverse_util

from affect_jax.errors import AffectJaxError


def trainable_labels(params: Any, frozen: Sequence[str] = ()) -> Any:
  """'frozen' / 'train' per parameter, for `optax.multi_transform`.

  Args:
    params: the model's `params` tree (arrays or ShapeDtypeStructs).
    frozen: '/'-separated path prefixes, e.g. ('trunk',) or
      ('trunk/conv1', 'trunk/bn1', 'trunk/layer1_0'); a prefix matches
      whole path components ('trunk/layer1' does not match 'layer1_0').

  Returns:
    A tree like `params` holding 'frozen' or 'train'.

  Raises:
    AffectJaxError: a prefix matches no parameter (a typo would otherwise
      silently train everything).
  """
  flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  prefixes = [p.strip('/') for p in frozen if p.strip('/')]
  used = set()

  def label(path: str) -> str:
    for p in prefixes:
      if path == p or path.startswith(p + '/'):
        used.add(p)
        return 'frozen'
    return 'train'

  labels = {path: label(path) for path in flat}
  unused = sorted(set(prefixes) - used)
  if unused:
    tops = sorted({k.split('/')[0] for k in flat})
    raise AffectJaxError(
        f'Frozen layer(s) {unused} match no parameter of the model; name '
        f"'/'-separated paths such as 'trunk' or 'trunk/conv1' (top level: "
        f'{tops}).')
  return traverse_util.unflatten_dict(labels, sep='/')
