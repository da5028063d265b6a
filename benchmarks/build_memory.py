"""Peak memory of building records from long videos: streaming, not whole.

  python benchmarks/build_memory.py  # 5-minute 25 fps 640x480 videos

Writes a RealEyes-layout copy whose videos are N frames long (cheap frames:
one rendered synthetic face drifting over a noisy background, not the
per-frame renderer), then runs `python -m affect_jax.prepare` on it in a
child process, once per (frames, num_workers), and prints the child's peak
resident memory (the largest of the main process and its workers) and
frames/s. If a video were held in memory whole, the peak would grow with N
(a 7,500-frame 640x480 video is 6.9 GB as RGB, ~75 MB as 170-pixel JPEGs).
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import features as F
from tfds_builders import core
from tfds_builders.synthetic_faces import faces
from tfds_builders.synthetic_faces import realeyes_layout
from benchmarks.table import print_table


def write_copy(root: str, num_videos: int, num_frames: int, fps: float,
               height: int, width: int) -> None:
  """A RealEyes-layout copy with `num_videos` videos of `num_frames`."""
  for d in ('videos', 'labels'):
    os.makedirs(os.path.join(root, d), exist_ok=True)
  rng = np.random.default_rng(0)
  face, _, _ = faces.render_frame(faces.make_subject(rng),
                                  faces.make_video(rng, 2, fps), 0,
                                  size=(height // 2, width // 2))
  ids = []
  for v in range(num_videos):
    vid = f'long{v}'

    def frames():
      for i in range(num_frames):
        image = np.full((height, width, 3), 90, np.uint8)
        y = int(height / 4 + height / 8 * np.sin(i / 50))
        x = int(width / 4 + width / 8 * np.cos(i / 70))
        image[y:y + height // 2, x:x + width // 2] = face
        yield image
    core.write_video(os.path.join(root, 'videos', f'{vid}.mp4'), frames(),
                     fps)
    realeyes_layout.write_labels(
        os.path.join(root, 'labels', f'{vid}.csv'),
        np.zeros((num_frames, len(F.REALEYES_EMOTIONS)), np.int64))
    ids.append(vid)
  with open(os.path.join(root, 'subjects.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(('video_id', 'subject_id'))
    for i, vid in enumerate(ids):
      w.writerow((vid, f's{i}'))


# Runs a command in a fresh interpreter and prints the peak RSS (KB) of all
# its descendants (ru_maxrss of waited-for children is their maximum).
_MEASURE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_kb(command: list[str]) -> int:
  """Peak resident memory of `command` and its worker processes, KB."""
  out = subprocess.run([sys.executable, '-c', _MEASURE] + command,
                       check=True, capture_output=True, text=True)
  return int(out.stdout.split()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--frames', default='750,7500',
                 help='Video lengths to compare, comma separated.')
  p.add_argument('--fps', type=float, default=25)
  p.add_argument('--detector', default='none')
  args = p.parse_args()
  rows = []
  for num_frames in (int(n) for n in args.frames.split(',')):
    with tempfile.TemporaryDirectory() as tmp:
      copy = os.path.join(tmp, 'copy')
      write_copy(copy, 2, num_frames, args.fps, 480, 640)
      for workers in (0, 2):
        out = os.path.join(tmp, f'out{workers}')
        t = time.perf_counter()
        peak_kb = peak_rss_kb(
            [sys.executable, '-m', 'affect_jax.prepare', '--dataset=realeyes',
             f'--manual_dir={copy}', f'--data_dir={out}',
             f'--face_detector={args.detector}', '--landmarks=none',
             f'--num_workers={workers}'])
        dt = time.perf_counter() - t
        rows.append((num_frames, workers, peak_kb / 1024, 2 * num_frames / dt))
  print(f'2 videos of 640x480 at {args.fps:g} fps, detector={args.detector}, '
        f'{os.cpu_count()} CPUs')
  print_table(['frames/video', 'workers', 'peak RSS MB', 'frames/s'], rows)


if __name__ == '__main__':
  main()
