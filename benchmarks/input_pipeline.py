"""Input pipeline throughput: records -> decoded, augmented batches.

  python benchmarks/input_pipeline.py        # synthetic_faces, 150 px crops
  python benchmarks/input_pipeline.py --model_frames_per_s 5.8

Builds (once, into --data_dir or a temporary folder) the synthetic_faces
records, then iterates `affect_jax.input_pipeline.train_dataset` (JPEG
decode, resize, random crop, flip, colour jitter, batching) through
`input_pipeline.iterate` with 0, 1 and 2 worker processes and prints
batches/s and frames/s after one warm-up batch, next to the rate at which the
training step consumes frames (`--model_frames_per_s`, e.g. the JAX row of
benchmarks/train_step.py, or read from its --json output via --train_json).
The pipeline keeps up when its frames/s exceed the model's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import input_pipeline as ip
from benchmarks import harness
from benchmarks.table import print_table
from configs import realeyes


def model_rate(args) -> float | None:
  if args.model_frames_per_s:
    return args.model_frames_per_s
  if args.train_json:
    with open(args.train_json) as f:
      rows = json.load(f)['rows']
    return max(r['frames_per_s'] for r in rows if r['framework'] == 'jax'
               and 'XLA default' not in r['variant'])
  return None


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--builder_config', default='default',
                 help='synthetic_faces config (tiny: a smoke test)')
  p.add_argument('--data_dir', default=None)
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--window', type=int, default=16)
  p.add_argument('--image_size', type=int, default=150)
  p.add_argument('--resize_size', type=int, default=170)
  p.add_argument('--batches', type=int, default=20)
  p.add_argument('--workers', default='0,1,2',
                 help='input.num_workers values to compare')
  p.add_argument('--threads', type=int, default=2,
                 help='input.num_threads (grain read threads)')
  p.add_argument('--model_frames_per_s', type=float, default=None)
  p.add_argument('--train_json', default=None)
  p.add_argument('--json', default=None)
  args = p.parse_args(argv)
  # grain's worker processes read absl flags, which no app.run parsed here.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()

  with tempfile.TemporaryDirectory() as tmp:
    cfg = realeyes.get_config('synthetic')
    data = cfg.pretrain.dataset
    data.builder_config = args.builder_config
    data.data_dir = args.data_dir or tmp
    data.build_if_missing = True
    split = ip.load_split(data, 'train')
    input_cfg = cfg.input
    input_cfg.window = args.window
    input_cfg.train_stride = args.window // 2
    input_cfg.image_size = args.image_size
    input_cfg.resize_size = args.resize_size
    input_cfg.num_threads = args.threads
    rows = []
    for workers in (int(w) for w in args.workers.split(',')):
      input_cfg.num_workers = workers
      ds = ip.train_dataset(split, input_cfg, args.batch, seed=0)
      it = ip.iterate(ds, input_cfg)
      next(it)  # Start-up (worker processes, first reads) excluded.
      t = time.perf_counter()
      for _ in range(args.batches):
        next(it)
      dt = time.perf_counter() - t
      frames = args.batches * args.batch * args.window
      rows.append({'workers': workers, 'batches_per_s': args.batches / dt,
                   'frames_per_s': frames / dt})
      del it
  rate = model_rate(args)
  harness.describe(
      f'input pipeline, synthetic_faces/{args.builder_config}, batch '
      f'{args.batch} x {args.window} frames, crops {args.image_size} px '
      f'(resize {args.resize_size}), {args.threads} read threads, '
      f'{args.batches} batches')
  table = [(f"{r['workers']} workers", r['batches_per_s'], r['frames_per_s'],
            '' if rate is None else f"{r['frames_per_s'] / rate:.1f}x")
           for r in rows]
  if rate is not None:
    table.append(('training step consumes', rate / (args.batch * args.window),
                  rate, '1.0x'))
  print_table(['setting', 'batches/s', 'frames/s', 'vs model'], table)
  harness.write_json(args.json, {'rows': rows, 'model_frames_per_s': rate})


if __name__ == '__main__':
  main()
