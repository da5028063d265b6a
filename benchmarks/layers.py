"""Forward+backward time of single layers: the rewrites against plain forms.

  python benchmarks/layers.py                  # batch 32, ResNet-50 shapes
  taskset -c 0 python benchmarks/layers.py     # one core, both frameworks

Each row is one layer's jitted value-and-gradient (w.r.t. input and
weights) in JAX, and the same layer's forward + `backward()` in PyTorch,
in one process, median of `--steps`, each framework's variants interleaved
among themselves, JAX's before PyTorch's (`--call_by_call`: all in turn):
- convolutions (3x3 56x56x64->64, the 7x7/2 stem) with the project's XLA
  setting and with XLA's default YNNPACK convolutions (`compiler_options`
  per function), and torch NCHW / channels-last;
- the strided 3x3 convolution (layer2_0's) with lax's gradient and with
  `strided_conv`'s input gradient by phases;
- the 1x1 convolution as nn.Conv, as a 4-D `jnp.dot` and as the 2-D matmul
  of `resnet.Conv1x1`;
- max-pool 3x3/2 (`nn.max_pool`, a max of 9 strided slices, the int8-argmax
  gradient of `pooling.max_pool_3x3_s2`) and 2x2/2 (`pooling.max_pool_2x2`);
- train-mode BatchNorm (`flax.linen.BatchNorm`), the 2-layer LSTM
  (2048 -> 256) and AffWildNet's 2-layer GRU (4096 -> 128) at unroll 1 and
  4 against torch.nn.LSTM / GRU.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import hugepages
if __name__ == '__main__':  # As affect_jax.main; for both frameworks.
  hugepages.use_huge_pages()
import affect_jax  # pylint: disable=unused-import  (the XLA flag)
from affect_jax import xla_flags
from affect_jax.models import pooling
from affect_jax.models import recurrent
from affect_jax.models import resnet
from affect_jax.models import strided_conv
from benchmarks import harness
from benchmarks.table import print_table

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _slices_max_pool(x):
  """The previous max-pool: jnp.maximum of 9 strided slices (autodiff)."""
  h, w = x.shape[1:3]
  ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  out = None
  for i in range(3):
    for j in range(3):
      win = x[:, i:i + 2 * ho - 1:2, j:j + 2 * wo - 1:2, :]
      out = win if out is None else jnp.maximum(out, win)
  return out


def jax_case(module, x, compiler_options=None, fn=None, weights=None):
  """A blocking step: value and grads of sum(out * cot) w.r.t. x and params.

  `fn(x, weights)` instead of a module: a plain function of the input and
  a weight tree. Everything is an argument, so nothing is constant-folded.
  """
  rng = np.random.default_rng(1)
  if fn is None:
    variables = module.init(jax.random.PRNGKey(0), x)
    apply = lambda v, x: module.apply(v, x, mutable=['batch_stats'])[0]
  else:
    variables = {} if weights is None else weights
    apply = lambda v, x: fn(x, v)
  cot = jnp.asarray(rng.standard_normal(
      jax.eval_shape(apply, variables, x).shape, np.float32))
  grad = jax.jit(jax.value_and_grad(
      lambda v, x, cot: jnp.sum(apply(v, x) * cot), argnums=(0, 1)))
  compiled = grad.lower(variables, x, cot).compile(compiler_options)
  return lambda: jax.block_until_ready(compiled(variables, x, cot))


def torch_case(module, x, channels_last=False):
  import torch
  x = torch.from_numpy(np.array(x))
  if x.ndim == 4:
    x = x.permute(0, 3, 1, 2)  # NHWC memory viewed as NCHW.
    if channels_last:
      module = module.to(memory_format=torch.channels_last)
    else:
      x = x.contiguous()
  x = x.detach().requires_grad_()
  out = module(x)
  out = out[0] if isinstance(out, tuple) else out
  cot = torch.randn(out.shape)

  def step():
    module.zero_grad(set_to_none=True)
    x.grad = None
    y = module(x)
    y = y[0] if isinstance(y, tuple) else y
    (y * cot).sum().backward()
  return step


def cases(b: int, tiny: bool):
  """{layer: {variant: step}} at ResNet-50's shapes (batch b)."""
  import torch
  rng = np.random.default_rng(0)
  s = 8 if tiny else 56
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape, np.float32))
  x64, x256 = normal(b, s, s, 64), normal(b, s, s, 256)
  # The stem and its pool at a 150 px input: 150 -> 75 -> 38.
  side = 16 if tiny else 150
  stem_in = normal(b, side, side, 3)
  pool_in = normal(b, side // 2, side // 2, 64)
  default = xla_flags.CPU_DEFAULT_COMPILER_OPTIONS
  out = {}
  conv3 = nn.Conv(64, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)
  t3 = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
  out['conv 3x3 64->64'] = {
      'JAX project flag': jax_case(conv3, x64),
      'JAX XLA default (YNNPACK)': jax_case(conv3, x64, default),
      'torch NCHW': torch_case(t3, x64),
      'torch channels-last': torch_case(t3, x64, True)}
  stem = nn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
                 use_bias=False)
  ts = torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False)
  out['conv 7x7/2 stem 3->64'] = {
      'JAX project flag': jax_case(stem, stem_in),
      'JAX XLA default (YNNPACK)': jax_case(stem, stem_in, default),
      'torch NCHW': torch_case(ts, stem_in),
      'torch channels-last': torch_case(ts, stem_in, True)}
  # layer2_0's strided 3x3 (38x38 at a 150 px input; 56x56 at 224 px).
  side2 = 8 if tiny else 38
  x128 = normal(b, side2, side2, 128)
  strided = functools.partial(nn.Conv, 128, (3, 3), (2, 2),
                              padding=((1, 1), (1, 1)), use_bias=False)
  t32 = torch.nn.Conv2d(128, 128, 3, 2, 1, bias=False)
  out[f'conv 3x3/2 {side2}x{side2}x128->128'] = {
      'JAX nn.Conv (lax gradient)': jax_case(strided(), x128),
      'JAX strided_conv (input gradient by phases)': jax_case(strided(
          conv_general_dilated=strided_conv.conv_general_dilated), x128),
      'torch NCHW': torch_case(t32, x128),
      'torch channels-last': torch_case(t32, x128, True)}
  kernel = normal(256, 64) * 0.05
  t1 = torch.nn.Conv2d(256, 64, 1, bias=False)
  out['conv 1x1 256->64'] = {
      'JAX nn.Conv': jax_case(nn.Conv(64, (1, 1), use_bias=False), x256),
      'JAX 4-D jnp.dot': jax_case(None, x256, fn=jnp.dot, weights=kernel),
      'JAX Conv1x1 (2-D matmul)': jax_case(resnet.Conv1x1(64), x256),
      'torch NCHW': torch_case(t1, x256),
      'torch channels-last': torch_case(t1, x256, True)}
  tp = torch.nn.MaxPool2d(3, 2, 1)
  out['max-pool 3x3/2'] = {
      'JAX nn.max_pool': jax_case(None, pool_in, fn=lambda x, _: (
          nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))))),
      'JAX 9 strided slices (before)': jax_case(
          None, pool_in, fn=lambda x, _: _slices_max_pool(x)),
      'JAX int8 argmax (pooling)': jax_case(
          None, pool_in, fn=lambda x, _: pooling.max_pool_3x3_s2(x)),
      'torch NCHW': torch_case(tp, pool_in),
      'torch channels-last': torch_case(tp, pool_in, True)}
  t2 = torch.nn.MaxPool2d(2, 2)
  out['max-pool 2x2/2'] = {
      'JAX nn.max_pool': jax_case(None, x64, fn=lambda x, _: (
          nn.max_pool(x, (2, 2), (2, 2)))),
      'JAX reshape max (pooling)': jax_case(
          None, x64, fn=lambda x, _: pooling.max_pool_2x2(x)),
      'torch NCHW': torch_case(t2, x64),
      'torch channels-last': torch_case(t2, x64, True)}
  bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  tb = torch.nn.BatchNorm2d(256)
  out['BatchNorm train 256'] = {
      'JAX flax.linen.BatchNorm': jax_case(bn, x256),
      'JAX XLA default': jax_case(bn, x256, default),
      'torch NCHW': torch_case(tb, x256),
      'torch channels-last': torch_case(tb, x256, True)}
  # RealEyes' LSTM (2048 -> 256) and AffWildNet's GRU (FC 4096 -> 128).
  t_len = 6 if tiny else 150
  for kind, feats, hidden in (('LSTM', 2048, 256), ('GRU', 4096, 128)):
    feats, hidden = (32, 8) if tiny else (feats, hidden)
    seq = normal(2, t_len, feats)
    rnn = getattr(recurrent, kind)
    out[f'{kind} 2x{hidden}, T={t_len}'] = {
        f'JAX {kind} unroll 1': jax_case(rnn(hidden, 2), seq),
        f'JAX {kind} unroll 4': jax_case(rnn(hidden, 2, unroll=4), seq),
        f'torch.nn.{kind}': torch_case(getattr(torch.nn, kind)(
            feats, hidden, 2, batch_first=True), seq)}
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--only', default='', help='substring of the layer names')
  p.add_argument('--tiny', action='store_true')
  p.add_argument('--json', default=None)
  harness.add_order_flag(p)
  args = p.parse_args(argv)
  if not harness.torch_available():  # Threads set when it is there.
    p.error('this benchmark times every layer against PyTorch; install '
            'it: pip install -e ".[torch]"')
  rows = []
  for layer, steps in cases(args.batch, args.tiny).items():
    if args.only not in layer:
      continue
    timed = harness.interleaved(steps, args.steps, args.warmup,
                                group=harness.framework_group(args))
    ref = min(t['median_s'] for n, t in timed.items() if n.startswith('torch'))
    for variant, t in timed.items():
      rows.append({'layer': layer, 'variant': variant,
                   'ms': 1000 * t['median_s'], 'vs_best_torch':
                   t['median_s'] / ref, 'times_s': t['times_s']})
  harness.describe(f'Layer forward+backward, batch {args.batch}, median of '
                   f'{args.steps} {harness.order_caption(args)}')
  print_table(['layer: variant', 'ms', 'x best torch'],
              [(f"{r['layer']}: {r['variant']}", f"{r['ms']:.1f}",
                f"{r['vs_best_torch']:.2f}") for r in rows])
  harness.write_json(args.json, {'rows': rows})


if __name__ == '__main__':
  main()
