"""Rematerialisation (`model.remat`): step time and memory, with and without.

  python benchmarks/remat.py                      # ResNet-50 + LSTM, CPU
  python benchmarks/remat.py --frames 150 --size 150 --batch 2   # a GPU
  python benchmarks/remat.py --tiny               # seconds (the test)

One training step (forward, CCC loss, backward, Adam) of the RealEyes network
(`resnet50_lstm`) built with `remat=False` and `remat=True`, timed
interleaved on the same batch (median of `--steps` after `--warmup`). Memory
columns: XLA's own buffer total of the compiled step (arguments +
temporaries + outputs), on a GPU the device's peak after the variant's steps,
and on CPU the growth of resident memory during its timed steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
import affect_jax  # Sets the XLA flag before JAX starts its backend.
from affect_jax import models
from benchmarks import harness
from benchmarks import table
from benchmarks import train_step as ts

import jax


def run(shape: ts.Shape, steps: int, warmup: int) -> list[dict]:
  batch = ts.make_batch(shape)
  variants = {}
  for remat in (False, True):
    model = models.build('resnet50_lstm', num_outputs=ts.NUM_OUTPUTS,
                         lstm_hidden=shape.lstm_hidden, width=shape.width,
                         stage_sizes=shape.stage_sizes, remat=remat)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), batch['frames'])
    variants[remat] = ts.jax_variant(f'remat={remat}', model, variables,
                                     batch)
  times = harness.interleaved({v.name: v.step for v in variants.values()},
                              steps, warmup)
  frames = shape.batch * shape.frames
  rows = []
  for v in variants.values():
    t = times[v.name]
    rows.append({'variant': v.name, 'ms_per_step': 1e3 * t['median_s'],
                 'frames_per_s': frames / t['median_s'],
                 'xla_memory_mb': v.xla_memory_mb,
                 'peak_rss_mb': t['peak_rss_mb'], 'compile_s': v.compile_s})
  if jax.default_backend() != 'cpu':
    # One device-wide peak: measure each variant in its own process to
    # split it; here only the XLA buffer totals tell them apart.
    rows[-1]['device_peak_mb'] = (jax.devices()[0].memory_stats() or {}).get(
        'peak_bytes_in_use', 0) / 2**20
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--tiny', action='store_true')
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--frames', type=int, default=16)
  p.add_argument('--size', type=int, default=150)
  p.add_argument('--width', type=int, default=64)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=1)
  args = p.parse_args(argv)
  shape = ts.TINY if args.tiny else dataclasses.replace(
      ts.Shape(), batch=args.batch, frames=args.frames, size=args.size,
      width=args.width)
  rows = run(shape, args.steps, args.warmup)
  print(f'resnet50_lstm width {shape.width}, batch {shape.batch} x '
        f'{shape.frames} frames of {shape.size}x{shape.size}, '
        f'{jax.devices()[0].device_kind}, load '
        f'{os.getloadavg()[0]:.1f}')
  keys = ['variant', 'ms_per_step', 'frames_per_s', 'xla_memory_mb',
          'peak_rss_mb', 'compile_s'] + (
              ['device_peak_mb'] if 'device_peak_mb' in rows[-1] else [])
  table.print_table(keys, [tuple(r.get(k) for k in keys) for r in rows])
  base, remat = rows
  print(f'remat_memory_ratio={remat["xla_memory_mb"] / base["xla_memory_mb"]:.3f} '
        f'remat_time_ratio={remat["ms_per_step"] / base["ms_per_step"]:.3f}')


if __name__ == '__main__':
  main()
