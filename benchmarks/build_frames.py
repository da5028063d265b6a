"""Frames/s of turning a video into records, with and without face detection.

  python benchmarks/build_frames.py  # a 640x480 30 fps synthetic video

Writes one synthetic RealEyes-layout video (`realeyes_layout`), then times
each stage of `tfds_builders.core.builder.video_records` on it: decoding
alone (PyAV, thread_type='AUTO'), then decode + crop + JPEG with the 'none'
detector (whole frame), with the dlib HOG detector (default) and its 68
landmarks, with dlib on every 5th frame, and with OpenCV's Haar cascade.
Record writing (array_record) is not included; it is small next to these.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from tfds_builders import core
from tfds_builders.core import builder as builder_lib
from tfds_builders.synthetic_faces import realeyes_layout
from benchmarks.table import print_table


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--frames', type=int, default=300)
  p.add_argument('--height', type=int, default=480)
  p.add_argument('--width', type=int, default=640)
  p.add_argument('--image_size', type=int, default=170)
  args = p.parse_args()

  with tempfile.TemporaryDirectory() as root:
    vid = realeyes_layout.write_realeyes_layout(
        root, num_subjects=1, frames_per_video=args.frames,
        height=args.height, width=args.width)[0]
    path = os.path.join(root, 'videos', f'{vid}.mp4')
    rows = []

    t = time.perf_counter()
    n = sum(1 for _ in core.iter_frames(path))
    rows.append(('decode only', n, time.perf_counter() - t, ''))

    for detector, landmarks, every in (('none', 'none', 1),
                                       ('dlib', 'none', 1),
                                       ('dlib', 'dlib', 1),
                                       ('dlib', 'dlib', 5),
                                       ('haar', 'none', 1)):
      config = core.VideoFrameConfig(name='b', detector=detector,
                                     landmarks=landmarks, detect_every=every,
                                     image_size=args.image_size)
      spec = core.VideoSpec(vid, 's', path,
                            lambda i, t: core.FrameLabels())
      t = time.perf_counter()
      records = [r for _, r in builder_lib.video_records(spec, 0, config, 8)]
      dt = time.perf_counter() - t
      faces = np.mean([bool(r['has_face']) for r in records])
      name = f'decode+crop+jpeg, detector={detector}'
      if landmarks != 'none':
        name += '+landmarks'
      if every > 1:
        name += f' every {every}'
      rows.append((name, len(records), dt, f'{faces:.0%}'))

  print(f'{args.width}x{args.height} video, {args.frames} frames, crops '
        f'{args.image_size}px, {os.cpu_count()} CPUs')
  print_table(['stage', 'frames', 's', 'frames/s', 'has_face'],
             [(name, n, dt, n / dt, faces) for name, n, dt, faces in rows])


if __name__ == '__main__':
  main()
