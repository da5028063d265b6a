"""ResNet-50's convolutions split into forward, input and weight gradient.

  python benchmarks/conv_parts.py                 # the train_step shapes
  python benchmarks/conv_parts.py --size 224      # ImageNet's
  taskset -c 0 python benchmarks/conv_parts.py    # one core

Every distinct convolution of the ResNet-50 trunk (`affect_jax.models.
ResNet`, found by intercepting its `nn.Conv` and `Conv1x1` calls on a batch
of `--batch` images at `--size` px, so the list follows the model) is timed
three ways, each its own jitted function of the project's own layer (the
1x1s as `Conv1x1`'s matmul, the 3x3s and the stem as `nn.Conv` with
`strided_conv`): the forward, the gradient with respect to the input only
and with respect to the kernel only. PyTorch runs the same three with
channels-last tensors (`F.conv2d`, `torch.nn.grad.conv2d_input` /
`conv2d_weight`). A convolution's three JAX parts interleaved, then its
three torch parts (not JAX and torch call by call: a JAX call right after
a torch call pays for torch's OpenMP threads; `--call_by_call` measures
that), median of `--steps`, on the same numbers in both (a test checks
they agree). Each row gives its count in the trunk; the total rows weigh
by it, so they are the trunk's convolution time per training step at this
batch (less the stem's input gradient, which a training step does not
compute). This is the table that says which part of the
convolutions is behind PyTorch, and by how much.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import hugepages
if __name__ == '__main__':  # As affect_jax.main; for both frameworks.
  hugepages.use_huge_pages()
import affect_jax  # pylint: disable=unused-import  (the XLA flag)
from affect_jax.models import resnet
from benchmarks import harness
from benchmarks.table import print_table

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PARTS = ('fwd', 'dx', 'dw')


def trunk_convs(batch: int, size: int, width: int = 64,
                stage_sizes=(3, 4, 6, 3)) -> list[tuple[nn.Module, tuple, int]]:
  """[(standalone conv module, its input shape, count in the trunk)].

  In the order the trunk first calls each distinct (module config, input
  shape).
  """
  found = collections.OrderedDict()

  def record(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == '__call__' and isinstance(
        module, (nn.Conv, resnet.Conv1x1)):
      standalone = module.clone(parent=None, name=None)
      key = (repr(standalone), tuple(args[0].shape))
      entry = found.setdefault(key, [standalone, tuple(args[0].shape), 0])
      entry[2] += 1
    return next_fun(*args, **kwargs)

  model = resnet.ResNet(stage_sizes=stage_sizes, width=width)
  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.PRNGKey(0),
                   jnp.zeros((batch, size, size, 3), jnp.float32))
  return [tuple(v) for v in found.values()]


def describe_conv(module: nn.Module, shape: tuple) -> tuple[str, int, int]:
  """('KxK/s HxWxC->C', kernel side, stride)."""
  if isinstance(module, resnet.Conv1x1):
    k, s = 1, module.strides
  else:
    k, s = module.kernel_size[0], module.strides[0]
  name = f'{k}x{k}/{s} {shape[1]}x{shape[2]}x{shape[3]}->{module.features}'
  return name, k, s


def operands(module: nn.Module, shape: tuple, seed: int = 0):
  """(variables, x, g): the module's variables, an input and an output
  cotangent of the right shapes (random normal)."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal(shape, np.float32))
  variables = module.init(jax.random.PRNGKey(seed), x)
  g = jnp.asarray(rng.standard_normal(
      jax.eval_shape(module.apply, variables, x).shape, np.float32))
  return variables, x, g


def jax_parts(module: nn.Module, variables, x, g):
  """{part: blocking zero-argument call returning its result}: the output,
  the input's gradient, the variables' gradient (of <output, g>)."""
  fwd = jax.jit(module.apply)
  dx = jax.jit(lambda v, x, g: jax.vjp(
      lambda x: module.apply(v, x), x)[1](g)[0])
  dw = jax.jit(lambda v, x, g: jax.vjp(
      lambda v: module.apply(v, x), v)[1](g)[0])
  return {
      'fwd': lambda: jax.block_until_ready(fwd(variables, x)),
      'dx': lambda: jax.block_until_ready(dx(variables, x, g)),
      'dw': lambda: jax.block_until_ready(dw(variables, x, g))}


def torch_parts(module: nn.Module, variables, x, g):
  """The same three in PyTorch on the same numbers, channels-last
  (`F.conv2d`, `torch.nn.grad.conv2d_input` / `conv2d_weight`); results
  as torch NCHW views."""
  import torch
  import torch.nn.functional as F
  _, k, s = describe_conv(module, x.shape)
  pad = k // 2  # 7x7: 3, 3x3: 1, 1x1: 0 (as the trunk's).
  # NHWC memory viewed as NCHW is channels-last; HWIO -> OIHW.
  as_torch = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2)
  tx, tg = as_torch(x), as_torch(g)
  weight = torch.from_numpy(np.array(variables['params']['kernel'])).permute(
      3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
  return {
      'fwd': lambda: F.conv2d(tx, weight, stride=s, padding=pad),
      'dx': lambda: torch.nn.grad.conv2d_input(
          tx.shape, weight, tg, stride=s, padding=pad),
      'dw': lambda: torch.nn.grad.conv2d_weight(
          tx, weight.shape, tg, stride=s, padding=pad)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--batch', type=int, default=32,
                 help='images (train_step: 2 clips x 16 frames)')
  p.add_argument('--size', type=int, default=150)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--no_torch', action='store_true')
  p.add_argument('--tiny', action='store_true',
                 help='a 2-stage width-4 trunk on 32 px (a smoke test)')
  p.add_argument('--json', default=None)
  harness.add_order_flag(p)
  args = p.parse_args(argv)
  with_torch = not args.no_torch and harness.torch_available()
  kwargs = dict(width=4, stage_sizes=(1, 1)) if args.tiny else {}
  size = 32 if args.tiny else args.size
  rows = []
  totals = collections.defaultdict(float)
  for module, shape, count in trunk_convs(args.batch, size, **kwargs):
    name, _, _ = describe_conv(module, shape)
    arrays = operands(module, shape)
    steps = {f'jax {k}': f for k, f in jax_parts(module, *arrays).items()}
    if with_torch:
      steps.update({f'torch {k}': f
                    for k, f in torch_parts(module, *arrays).items()})
    # Each framework's three parts interleaved among themselves, the two
    # frameworks one after the other (harness.framework).
    timed = harness.interleaved(steps, args.steps, args.warmup,
                                group=harness.framework_group(args))
    # The stem's input is the image: a training step has no use for its
    # gradient, so the totals leave it out.
    stem = not rows
    row = {'conv': name + (' (dx: not in a step)' if stem else ''),
           'count': count, 'input_shape': list(shape)}
    for label, t in timed.items():
      row[label.replace(' ', '_') + '_ms'] = 1000 * t['median_s']
      if not (stem and label.endswith(' dx')):
        totals[label] += 1000 * t['median_s'] * count
    rows.append(row)
  frameworks = ('jax', 'torch') if with_torch else ('jax',)
  headers = ['conv', 'count'] + [f'{f} {k} ms' for f in frameworks
                                 for k in PARTS]
  if with_torch:
    headers.append('JAX / torch')

  def cells(name, count, get):
    out = [name, count] + [get(f'{f} {k}') for f in frameworks for k in PARTS]
    if with_torch:
      jax_sum = sum(get(f'jax {k}') for k in PARTS)
      out.append(f"{jax_sum / sum(get(f'torch {k}') for k in PARTS):.2f}")
    return tuple(out)

  table = [cells(r['conv'], r['count'],
                 lambda label, r=r: r[label.replace(' ', '_') + '_ms'])
           for r in rows]
  table.append(cells('total (x count; no stem dx)',
                     sum(r['count'] for r in rows),
                     lambda label: totals[label]))
  if with_torch:  # Each part's total, JAX over torch.
    table.append(tuple(
        ['JAX / torch by part', ''] + [
            f"{totals[f'jax {k}'] / totals[f'torch {k}']:.2f}"
            for k in PARTS] + [''] * 3 + ['']))
  harness.describe(
      f'ResNet-50 trunk convolutions by part, batch {args.batch} at '
      f'{size}x{size}, median of {args.steps} {harness.order_caption(args)}, '
      'ms')
  print_table(headers, table)
  harness.write_json(args.json, {
      'batch': args.batch, 'size': size, 'rows': rows,
      'totals_ms': dict(totals)})


if __name__ == '__main__':
  main()
