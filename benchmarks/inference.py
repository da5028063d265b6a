"""Prediction throughput (frames/s) of the paper models, JAX against PyTorch.

  python benchmarks/inference.py                        # ResNet-50 + LSTM
  python benchmarks/inference.py --models all --batch 4 --frames 150

The models, weights and input of benchmarks/train_step.py, in evaluation
mode (BatchNorm running statistics, no dropout): JAX `jax.jit(model.apply)`
against PyTorch eager under `torch.inference_mode()`, NCHW and
channels-last (and `torch.compile` with --torch_compile, AMP bf16 on a
GPU), median of `--steps`, each framework's variants interleaved among
themselves, JAX's first (`--call_by_call`: all in turn). The last line is
`jax_over_torch_inference_throughput=R` against the fastest PyTorch variant.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import hugepages
if __name__ == '__main__':  # As affect_jax.main; for both frameworks.
  hugepages.use_huge_pages()
from benchmarks import harness
from benchmarks import train_step as ts
from benchmarks.table import print_table

import jax
import jax.numpy as jnp


def jax_predict(name, shape, variables, batch, dtype):
  model = ts.jax_model(name, shape, dtype)
  frames = jnp.asarray(batch['frames'])
  landmarks = jnp.asarray(batch['landmarks'])
  fn = jax.jit(lambda v, x, lm: model.apply(v, x, landmarks=lm))
  variables = jax.tree.map(jnp.asarray, variables)
  return lambda: jax.block_until_ready(fn(variables, frames, landmarks))


def torch_predict(name, model, batch, channels_last, compile_=False,
                  amp=False, device='cpu'):
  import torch
  model = model.to(device).eval()
  frames = torch.from_numpy(batch['frames']).to(device).permute(0, 1, 4, 2, 3)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  else:
    frames = frames.contiguous()
  landmarks = torch.from_numpy(batch['landmarks']).to(device)
  forward = torch.compile(model) if compile_ else model
  args = (frames,) if name == 'resnet50_lstm' else (frames, landmarks)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

  def step():
    with torch.inference_mode(), torch.autocast(
        device, dtype=torch.bfloat16, enabled=amp):
      forward(*args)
    sync()
  return step


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--models', default='resnet50_lstm')
  p.add_argument('--batch', type=int, default=ts.Shape.batch)
  p.add_argument('--frames', type=int, default=ts.Shape.frames)
  p.add_argument('--size', type=int, default=ts.Shape.size)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--torch_compile', action='store_true')
  p.add_argument('--tiny', action='store_true')
  p.add_argument('--json', default=None)
  harness.add_order_flag(p)
  args = p.parse_args(argv)
  names = ts.MODELS if args.models == 'all' else tuple(args.models.split(','))
  shape = ts.TINY if args.tiny else dataclasses.replace(
      ts.Shape(), batch=args.batch, frames=args.frames, size=args.size)
  if not harness.torch_available():  # Threads set when it is there.
    p.error('this benchmark takes its weights from the PyTorch models; '
            'install PyTorch: pip install -e ".[torch]"')
  import torch  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  batch = ts.make_batch(shape)
  rows, ratios = [], {}
  for name in names:
    tm = ts.torch_model(name, shape).eval()
    variables = ts.jax_variables(name, tm)
    steps = {'JAX/Flax jit': jax_predict(name, shape, variables, batch,
                                         jnp.dtype(args.dtype))}
    steps['PyTorch eager NCHW'] = torch_predict(name, copy.deepcopy(tm),
                                                batch, False, device=device)
    steps['PyTorch eager channels-last'] = torch_predict(
        name, copy.deepcopy(tm), batch, True, device=device)
    if args.torch_compile:
      steps['PyTorch torch.compile channels-last'] = torch_predict(
          name, copy.deepcopy(tm), batch, True, True, device=device)
    if device == 'cuda':
      steps['PyTorch eager channels-last AMP bf16'] = torch_predict(
          name, copy.deepcopy(tm), batch, True, amp=True, device=device)
    timed = harness.interleaved(steps, args.steps, args.warmup,
                                group=harness.framework_group(args))
    n = shape.batch * shape.frames
    for variant, t in timed.items():
      rows.append({'model': name, 'variant': variant,
                   'ms': 1000 * t['median_s'],
                   'frames_per_s': n / t['median_s'],
                   'first_s': t['first_s'], 'times_s': t['times_s']})
    fps = {r['variant']: r['frames_per_s'] for r in rows
           if r['model'] == name}
    ratios[name] = fps['JAX/Flax jit'] / max(
        v for k, v in fps.items() if k.startswith('PyTorch'))
  harness.describe(
      f'Inference (eval-mode forward), batch {shape.batch} x {shape.frames} '
      f'frames at {shape.size}x{shape.size}, median of {args.steps} calls '
      f'{harness.order_caption(args)}')
  print_table(['model: variant', 'ms/batch', 'frames/s', 'first call s'],
              [(f"{r['model']}: {r['variant']}", f"{r['ms']:.0f}",
                r['frames_per_s'], r['first_s']) for r in rows])
  harness.write_json(args.json, {'shape': dataclasses.asdict(shape),
                                 'rows': rows, 'ratios': ratios})
  print(f'jax_over_torch_inference_throughput={ratios[names[0]]:.2f}')


if __name__ == '__main__':
  main()
