"""torchvision state dicts -> Flax variables of `build(arch, ...)`.

Works on the dict of arrays alone (torch tensors or NumPy arrays), so this
module does not import torch; `affect_jax.import_weights` loads `.pth`
files. Names map mechanically (see resnet.py and convnet.py):

  torch key part         Flax path part
  layer1.0 / features.3  layer1_0 / features_3      (Sequential index)
  downsample.0 / .1      downsample_conv / downsample_bn
  .weight (conv, linear) kernel, transposed to HWIO / [in, out]
  .weight / .bias (BN)   params .../scale, .../bias
  .running_mean / _var   batch_stats .../mean, .../var
  .num_batches_tracked   (dropped)

The architecture's size is read from the state dict itself (width,
ResNet stage sizes, FC width, number of classes; no classifier keys means a
trunk-only dict), so a reduced-width reference or a VGG-Face dict (2,622
classes) converts with the same code.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from affect_jax.errors import AffectJaxError

TORCH_ARCHS = ('resnet50', 'vgg16', 'vgg_face', 'alexnet')

# Input size for shape inference only (jax.eval_shape computes nothing).
_SHAPE_INPUT = (1, 224, 224, 3)


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # A torch tensor, without importing torch.
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def normalise_state_dict(state_dict, source: str = 'state dict'
                         ) -> dict[str, np.ndarray]:
  """Float32 NumPy arrays by key, unwrapped from common checkpoint shapes.

  Accepts a plain state dict, one nested under 'state_dict' or 'model' (as
  training scripts save them), and keys prefixed 'module.' (DataParallel).
  `num_batches_tracked` counters are dropped.
  """
  if not isinstance(state_dict, dict):
    raise AffectJaxError(
        f'{source} holds a {type(state_dict).__name__}, not a state dict; '
        'save `model.state_dict()` (torch.save(model.state_dict(), PATH)).')
  for wrapper in ('state_dict', 'model'):
    if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
      state_dict = state_dict[wrapper]
  out = {}
  for key, value in state_dict.items():
    key = key[len('module.'):] if key.startswith('module.') else key
    if key.endswith('num_batches_tracked'):
      continue
    out[key] = _to_numpy(value)
  return out


def _get(sd, key, arch, source):
  if key not in sd:
    raise AffectJaxError(
        f'{source} has no key {key!r}, which every torchvision {arch} state '
        f'dict has; is it a {arch} state dict (keys: {sorted(sd)[:5]} ...)?')
  return sd[key]


def build_kwargs_from_state_dict(arch: str, state_dict,
                                 source: str = 'state dict') -> dict[str, Any]:
  """`build(arch, **kwargs)` arguments that match the state dict's shapes."""
  if arch not in TORCH_ARCHS:
    raise AffectJaxError(
        f'Cannot import torch weights for arch {arch!r}; importable: '
        f'{list(TORCH_ARCHS)} (composites import their trunk: use the trunk '
        'name, e.g. resnet50 for resnet50_lstm).')
  sd = state_dict
  if arch == 'resnet50':
    width = _get(sd, 'conv1.weight', arch, source).shape[0]
    stages = []
    for i in range(1, 5):
      blocks = {int(m.group(1)) for k in sd
                for m in [re.match(rf'layer{i}\.(\d+)\.', k)] if m}
      if not blocks:
        break
      stages.append(max(blocks) + 1)
    kwargs = {'width': width, 'stage_sizes': tuple(stages)}
    if 'fc.weight' in sd:
      kwargs['num_classes'] = sd['fc.weight'].shape[0]
    return kwargs
  kwargs = {'width': _get(sd, 'features.0.weight', arch, source).shape[0]}
  linear = sorted((int(k.split('.')[1]), v.shape) for k, v in sd.items()
                  if k.startswith('classifier.') and k.endswith('.weight'))
  if linear:
    kwargs['num_classes'] = linear[-1][1][0]
    kwargs['fc_hidden'] = linear[0][1][0]
  return kwargs


def _flax_to_torch_key(path: tuple[str, ...], collection: str) -> str:
  """('layer1_0', 'downsample_bn', 'scale') -> 'layer1.0.downsample.1.weight'."""
  *modules, leaf = path
  parts = []
  for m in modules:
    if m == 'downsample_conv':
      parts.append('downsample.0')
    elif m == 'downsample_bn':
      parts.append('downsample.1')
    else:
      parts.append(re.sub(r'^(layer\d|features|classifier)_(\d+)$', r'\1.\2',
                          m))
  if collection == 'batch_stats':
    leaf = {'mean': 'running_mean', 'var': 'running_var'}[leaf]
  else:
    leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}[leaf]
  return '.'.join(parts + [leaf])


def _convert(value: np.ndarray, flax_shape: tuple[int, ...],
             flatten_from: tuple[int, int] | None) -> np.ndarray:
  """A torch tensor in the layout of the Flax variable of `flax_shape`."""
  if value.ndim == 4:  # Conv [O, I, kh, kw] -> [kh, kw, I, O].
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2:  # Linear [out, in] -> [in, out].
    if flatten_from is not None:
      # Rows of the first classifier layer follow torch's (C, h, w)
      # flattening; Flax flattens NHWC as (h, w, C).
      h, w = flatten_from
      out = value.shape[0]
      value = value.reshape(out, -1, h, w).transpose(2, 3, 1, 0)
      return value.reshape(flax_shape)
    return value.T
  return value


def _torch_shape(flax_shape) -> tuple[int, ...]:
  """The torch layout of a Flax kernel shape (for error messages)."""
  s = tuple(flax_shape)
  if len(s) == 4:
    return (s[3], s[2], s[0], s[1])
  return s[::-1]


def load_torch_state_dict(arch: str, state_dict,
                          source: str = 'state dict') -> dict[str, Any]:
  """Flax variables for `build(arch, **build_kwargs_from_state_dict(...))`.

  Args:
    arch: 'resnet50', 'vgg16', 'vgg_face' or 'alexnet'.
    state_dict: torchvision's `model.state_dict()` (tensors or arrays);
      a dict without the classifier keys gives the trunk's variables.
    source: how to name the dict in error messages (e.g. its file).

  Returns:
    {'params': ..., 'batch_stats': ...} (batch_stats only for ResNet) of
    float32 NumPy arrays.

  Raises:
    AffectJaxError: unknown arch, or keys missing, unexpected or of the
      wrong shape (each named).
  """
  from affect_jax import models  # pylint: disable=g-import-not-at-top
  sd = normalise_state_dict(state_dict, source)
  kwargs = build_kwargs_from_state_dict(arch, sd, source)
  model = models.build(arch, **kwargs)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.PRNGKey(0), jnp.zeros(_SHAPE_INPUT))
  shapes = flax.core.unfreeze(shapes)

  flatten_from = None
  if arch != 'resnet50' and 'num_classes' in kwargs:
    pool = model.pool
    flatten_from = (pool, pool)
    first_dense = min((k for k in shapes['params'] if k.startswith(
        'classifier_')), key=lambda k: int(k.split('_')[1]))

  out, used, problems = {}, set(), []
  for collection, tree in shapes.items():
    flat = traverse_util.flatten_dict(tree)
    converted = {}
    for path, struct in flat.items():
      key = _flax_to_torch_key(path, collection)
      if key not in sd:
        problems.append(f'missing key {key!r} (shape for Flax '
                        f'{collection}/{"/".join(path)}: {struct.shape})')
        continue
      used.add(key)
      value = _convert(sd[key], struct.shape,
                       flatten_from if flatten_from and path[0] == first_dense
                       and path[-1] == 'kernel' else None)
      if value.shape != tuple(struct.shape):
        problems.append(
            f'key {key!r} has shape {sd[key].shape}, but {arch} with '
            f'{kwargs} needs {_torch_shape(struct.shape)} (Flax '
            f'{"/".join(path)} {struct.shape})')
        continue
      converted[path] = value
    out[collection] = traverse_util.unflatten_dict(converted)
  unexpected = sorted(set(sd) - used)
  if unexpected:
    problems.append(f'unexpected keys {unexpected[:10]}'
                    f'{" ..." if len(unexpected) > 10 else ""}')
  if problems:
    raise AffectJaxError(
        f'{source} does not match torchvision {arch} ({kwargs}): '
        + '; '.join(problems[:10]) + '. Export the state dict of a '
        f'torchvision.models.{"vgg16" if arch == "vgg_face" else arch}() '
        'with the same layer names (docs/models.md).')
  return out


def trunk_variables(arch: str, variables: dict[str, Any]) -> dict[str, Any]:
  """The variables of the trunk (`build(arch)` without `num_classes`).

  These are what `CNNRNN`'s `trunk` holds in every video model built on
  `arch`: ResNet without `fc`, the conv nets without `classifier_*`.
  """
  def keep(name: str) -> bool:
    return name != 'fc' and not name.startswith('classifier_')

  return {c: {k: v for k, v in tree.items() if keep(k)}
          for c, tree in variables.items()}
