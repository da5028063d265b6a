"""Forward+backward time of ResNet-50 + 2-layer LSTM in Flax and PyTorch.

  python benchmarks/resnet_lstm_jax_vs_torch.py  # batch 2 x 16, 150x150

The RealEyes model (tzirakis2019): frames folded into the batch for the
ResNet-50 (training-mode BatchNorm), a 2-layer LSTM over time, a 2-unit
head; loss = sum of squared outputs. Both frameworks run the same shapes on
the same CPU threads, one after the other, and the table prints the median
ms per step (compilation / warm-up excluded). Needs the torch extra.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import models
from benchmarks.table import print_table


def time_steps(step, steps: int, warmup: int) -> list[float]:
  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  return times


def jax_step_fn(batch, frames, size, hidden):
  model = models.build('resnet50_lstm', num_outputs=2, lstm_hidden=hidden)
  x = jnp.asarray(np.random.default_rng(0).standard_normal(
      (batch, frames, size, size, 3), np.float32))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x[:, :2])

  @jax.jit
  def grad_step(params, batch_stats, x):
    def loss(params):
      out, new = model.apply({'params': params, 'batch_stats': batch_stats},
                             x, train=True, mutable=['batch_stats'])
      return jnp.sum(out**2), new
    return jax.grad(loss, has_aux=True)(params)

  def step():
    jax.block_until_ready(grad_step(variables['params'],
                                    variables['batch_stats'], x))
  return step


def torch_step_fn(batch, frames, size, hidden):
  import torch
  from tests import torch_reference
  torch.manual_seed(0)
  model = torch_reference.ResNetLSTM(num_outputs=2, hidden=hidden).train()
  x = torch.randn(batch, frames, 3, size, size)

  def step():
    model.zero_grad(set_to_none=True)
    loss = (model(x)**2).sum()
    loss.backward()
  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=150)
  parser.add_argument('--hidden', type=int, default=256)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  args = parser.parse_args()
  shape = (args.batch, args.frames, args.size, args.hidden)

  results = {}
  results['JAX/Flax (jit)'] = time_steps(jax_step_fn(*shape), args.steps,
                                         args.warmup)
  try:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    results[f'PyTorch {torch.__version__} (eager)'] = time_steps(
        torch_step_fn(*shape), args.steps, args.warmup)
  except ImportError:
    print('(PyTorch not installed: pip install -e ".[torch]")')

  n_frames = args.batch * args.frames
  print(f'\nResNet-50 + 2-layer LSTM({args.hidden}), forward+backward, '
        f'batch {args.batch} x {args.frames} frames, {args.size}x{args.size}, '
        f'{jax.devices()[0].device_kind}, {os.cpu_count()} CPU threads, '
        f'median of {args.steps} steps\n')
  rows = []
  for name, times in results.items():
    ms = 1000 * statistics.median(times)
    rows.append((name, f'{ms:.0f}', n_frames / ms * 1000))
  print_table(['framework', 'ms / step', 'frames / s'], rows)


if __name__ == '__main__':
  main()
