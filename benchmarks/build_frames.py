"""Frames/s of turning a video into records, with and without face detection.

  python benchmarks/build_frames.py  # a 640x480 30 fps synthetic video
  python benchmarks/build_frames.py --tracking  # detect_every x track
  python benchmarks/build_frames.py --tracking --max_side 0,480,320 \
      --tracks correlation  # x detection on a downscaled frame

Writes one synthetic RealEyes-layout video (`realeyes_layout`), then times
each stage of `tfds_builders.core.builder.video_records` on it: decoding
alone (PyAV, thread_type='AUTO'), then decode + crop + JPEG with the 'none'
detector (whole frame), with the dlib HOG detector (default) and its 68
landmarks, with dlib on every 5th frame, and with OpenCV's Haar cascade.
Record writing (array_record) is not included; it is small next to these.

`--tracking` instead renders one synthetic subject whose face sweeps left
and right across the frame at each `--speed` pixels a frame (`moving_face`)
and times the face crops (`face.crop_frame`: detect or track, then crop;
frames in memory, no decoding, landmarks or JPEG; the fastest of
`--repeats` runs) for each `--max_side` (detect_max_side: dlib on the frame
scaled down to that long side; 0 = full) x `--every` x `--tracks`
('hold', 'correlation'), with the mean and minimum IoU of the crop's box
against dlib run on every full-resolution frame (over the frames where it
finds the face) and the share of frames with has_face.
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from tfds_builders import core
from tfds_builders.core import builder as builder_lib
from tfds_builders.core import face
from tfds_builders.synthetic_faces import faces
from tfds_builders.synthetic_faces import realeyes_layout
from benchmarks.table import print_table


def moving_face(seed: int, num_frames: int, height: int, width: int,
                speed: float, x_from: float = 0.25, x_to: float = 0.75
                ) -> list[np.ndarray]:
  """Frames of one synthetic subject whose face moves across the frame.

  The face centre sweeps from `x_from` to `x_to` (fractions of the width)
  and back at `speed` pixels a frame; everything else (expression, pose,
  light) varies as in any synthetic video. uint8 [height, width, 3] each.
  """
  rng = np.random.default_rng(seed)
  subject = faces.make_subject(rng)
  video = faces.make_video(rng, num_frames, 25.0)
  span = (x_to - x_from) * width
  pos = (np.arange(num_frames) * speed) % (2 * span)
  x = x_from + np.minimum(pos, 2 * span - pos) / width
  center = np.stack([x, video.center[:, 1]], -1).astype(np.float32)
  video = dataclasses.replace(video, center=center)
  return [faces.render_frame(subject, video, i, (height, width))[0]
          for i in range(num_frames)]


def tracking(args) -> None:
  """The --tracking table: detect_max_side x detect_every x track on a
  moving face, against full-resolution detection on every frame."""
  config = core.VideoFrameConfig(name='b', image_size=args.image_size)
  settings = [(side, every, track) for side in args.max_side
              for every in args.every for track in args.tracks]
  rows, found_share = [], []
  for speed in args.speed:
    frames = moving_face(args.seed, args.frames, args.height, args.width,
                         speed)
    results = {}
    for setting in [(0, 1, 'hold')] + settings:  # The reference first.
      if setting in results:
        continue
      side, every, track = setting
      best = None
      for _ in range(args.repeats):
        tracker = face.make_tracker('dlib', config.max_gap, every=every,
                                    track=track, detect_max_side=side)
        t = time.perf_counter()
        found = [face.crop_frame(image, tracker, config.image_size,
                                 config.margin) for image in frames]
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
      results[setting] = best, found
    reference = results[0, 1, 'hold'][1]
    found_share.append(f'{np.mean([r.has_face for r in reference]):.0%}')
    for setting in settings:
      dt, found = results[setting]
      ious = [0.0 if f.box is None else
              float(face.box_iou(f.box, r.box)[0, 0])
              for f, r in zip(found, reference) if r.has_face]
      if not ious:  # dlib found no face: nothing to compare with.
        ious = [np.nan]
      side, every, track = setting
      rows.append((f'{speed:g}', side or 'full', every, track,
                   len(frames) / dt, f'{np.mean(ious):.2f}',
                   f'{np.min(ious):.2f}',
                   f'{np.mean([f.has_face for f in found]):.0%}'))
  print(f'{args.width}x{args.height}, {args.frames} frames, subject seed '
        f'{args.seed} (dlib finds the face on {"/".join(found_share)} of '
        f'the frames), crops {args.image_size}px, fastest of {args.repeats} '
        f'runs, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}')
  print_table(['face px/frame', 'detect_max_side', 'detect_every', 'track',
               'frames/s', 'mean IoU', 'min IoU', 'has_face'], rows)


def _ints(text: str) -> list[int]:
  return [int(v) for v in text.split(',')]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--frames', type=int, default=300)
  p.add_argument('--height', type=int, default=480)
  p.add_argument('--width', type=int, default=640)
  p.add_argument('--image_size', type=int, default=170)
  p.add_argument('--tracking', action='store_true',
                 help='time detect_every x track on a moving face instead')
  p.add_argument('--every', type=_ints, default=[1, 5],
                 help='--tracking: detect_every values')
  p.add_argument('--tracks', type=lambda s: s.split(','),
                 default=list(face.TRACKS), help='--tracking: track values')
  p.add_argument('--max_side', type=_ints, default=[0],
                 help='--tracking: detect_max_side values (0: full frame)')
  p.add_argument('--speed', type=lambda s: [float(v) for v in s.split(',')],
                 default=[8.0, 16.0],
                 help='--tracking: face motions, pixels a frame')
  p.add_argument('--seed', type=int, default=14,
                 help='--tracking: the subject (one dlib finds)')
  p.add_argument('--repeats', type=int, default=3,
                 help='--tracking: runs per setting (the fastest is shown)')
  args = p.parse_args(argv)
  if args.tracking:
    tracking(args)
    return

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
