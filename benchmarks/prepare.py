"""Dataset preparation frames/s, with and without face detection, by workers.

  python benchmarks/prepare.py                 # 2 videos x 300 frames
  python benchmarks/prepare.py --detectors none,dlib,dlib:5 --workers 0,1,2

Runs the whole `python -m affect_jax.prepare --dataset=realeyes` (decode,
detect, crop, JPEG, write records, index) in a child process on a
RealEyes-layout copy of 640x480 videos (benchmarks/build_memory.py's
`write_copy`), once per detector setting and `--num_workers`, and prints
frames/s and the peak resident memory of the child and its workers.
A detector `dlib:5` runs dlib on every 5th frame (`--detect_every=5`).
benchmarks/build_frames.py splits the same work by stage.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import harness
from benchmarks.build_memory import peak_rss_kb, write_copy
from benchmarks.table import print_table


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--videos', type=int, default=2)
  p.add_argument('--frames', type=int, default=300)
  p.add_argument('--height', type=int, default=480)
  p.add_argument('--width', type=int, default=640)
  p.add_argument('--detectors', default='none,dlib,dlib:5')
  p.add_argument('--workers', default='0,1,2')
  p.add_argument('--json', default=None)
  args = p.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    copy = os.path.join(tmp, 'copy')
    write_copy(copy, args.videos, args.frames, 25, args.height, args.width)
    for setting in args.detectors.split(','):
      detector, _, every = setting.partition(':')
      for workers in (int(w) for w in args.workers.split(',')):
        out = os.path.join(tmp, f'out_{detector}{every}_{workers}')
        command = [sys.executable, '-m', 'affect_jax.prepare',
                   '--dataset=realeyes', f'--manual_dir={copy}',
                   f'--data_dir={out}', f'--face_detector={detector}',
                   '--landmarks=none', f'--num_workers={workers}']
        if every:
          command.append(f'--detect_every={every}')
        t = time.perf_counter()
        peak_kb = peak_rss_kb(command)
        dt = time.perf_counter() - t
        n = args.videos * args.frames
        rows.append({'detector': setting, 'workers': workers, 'frames': n,
                     's': dt, 'frames_per_s': n / dt,
                     'peak_rss_mb': peak_kb / 1024})
  harness.describe(f'prepare (records from {args.videos} x {args.frames} '
                   f'frames of {args.width}x{args.height} video, landmarks '
                   'none; includes the child\'s start-up)')
  print_table(['detector', 'workers', 's', 'frames/s', 'peak RSS MB'],
              [(r['detector'], r['workers'], r['s'], r['frames_per_s'],
                f"{r['peak_rss_mb']:.0f}") for r in rows])
  harness.write_json(args.json, {'rows': rows})


if __name__ == '__main__':
  main()
