"""Recall and speed of the face detectors, on real photos and drawn faces.

  pip install -e ".[dev]"  # scikit-image, for its bundled photos
  python benchmarks/face_detectors.py
  python benchmarks/face_detectors.py --sizes 40,60,80,100,120,160,200 \
      --max_side 0,480,320  # dlib on frames scaled down (detect_max_side)

Nothing is downloaded: the real photos are the ones scikit-image ships.
- LFW faces: the 100 face photos of `skimage.data.lfw_subset()` (tight 25x25
  grey crops of Labeled Faces in the Wild), upscaled to a face of 120 (and
  60, or each of `--sizes`) pixels and pasted at a random place into a
  640x480 noise scene. A hit is a detection with IoU > 0.3 with the pasted
  square (the crops are tight, so a detector's box is larger than the
  square).
- LFW non-faces: the subset's 100 non-face photos, pasted the same way: any
  detection is a false positive.
- astronaut: the one face in `skimage.data.astronaut()` (IoU > 0.3 with its
  box); coffee, chelsea (a cat): photos without a human face.
- synthetic: frame 0 of 40 subjects of the cartoon renderer at 640x480
  (tfds_builders/synthetic_faces), IoU > 0.3 with the rendered face box.

`--max_side` adds a dlib column per detect_max_side (`face.make_detector`'s
`max_side`: the frame scaled down to that long side before detection), and
with several `--sizes` the table ends with the smallest face found in at
least half / 90% of the photos by each column.
"""

import argparse
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from tfds_builders.core import face
from tfds_builders.synthetic_faces import faces
from benchmarks.table import print_table

H, W = 480, 640


def iou(a, b) -> float:
  if b is None:
    return 0.0
  y0, x0 = max(a[0], b[0]), max(a[1], b[1])
  y1, x1 = min(a[2], b[2]), min(a[3], b[3])
  inter = max(0, y1 - y0) * max(0, x1 - x0)
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  return inter / (area(a) + area(b) - inter)


def pasted(images: np.ndarray, side: int, seed: int):
  """(scene, box) with each [0, 1] grey image pasted as a side x side square."""
  rng = np.random.default_rng(seed)
  for image in images:
    patch = cv2.resize((image * 255).astype(np.uint8), (side, side),
                       interpolation=cv2.INTER_CUBIC)
    scene = (rng.random((H, W)) * 60 + 100).astype(np.uint8)
    y, x = int(rng.integers(0, H - side)), int(rng.integers(0, W - side))
    scene[y:y + side, x:x + side] = patch
    yield np.stack([scene] * 3, -1), (y, x, y + side, x + side)


def synthetic(num: int):
  for seed in range(num):
    rng = np.random.default_rng(seed)
    image, _, box = faces.render_frame(
        faces.make_subject(rng), faces.make_video(rng, 2, 10.0), 0,
        size=(H, W))
    yield image, box * [H, W, H, W]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--sizes', default='120,60',
                 help='LFW face sides in pixels, comma-separated')
  p.add_argument('--max_side', default='0',
                 help='dlib detect_max_side values, comma-separated (0: the '
                 'full 640x480 frame); one dlib column each')
  p.add_argument('--faces', type=int, default=100,
                 help='LFW faces (and non-faces) per set, at most 100')
  args = p.parse_args(argv)
  sizes = [int(v) for v in args.sizes.split(',')]
  from skimage import data  # pylint: disable=g-import-not-at-top
  lfw = data.lfw_subset()
  n = min(args.faces, 100)
  faces_at = {size: f'LFW faces, {size} px' for size in sizes}
  sets = {
      **{title: (lambda size=size, i=i: pasted(lfw[:n], size, i))
         for i, (size, title) in enumerate(faces_at.items())},
      'astronaut': lambda: [(data.astronaut(), (60, 170, 190, 280))],
      'synthetic cartoon faces': lambda: synthetic(min(40, n)),
  }
  negatives = {
      'LFW non-faces (false pos.)': lambda: pasted(lfw[100:100 + n], 120,
                                                   len(sizes)),
      'coffee, chelsea (false pos.)': lambda: [(data.coffee(), None),
                                               (data.chelsea(), None)],
  }
  columns = [('dlib', int(v)) for v in args.max_side.split(',')]
  columns.append(('haar', 0))
  rows, recall = [], {c: {} for c in columns}
  times = {c: [] for c in columns}
  for title, make in {**sets, **negatives}.items():
    cells = []
    for column in columns:
      detect = face.make_detector(*column)
      scores = []
      for image, box in make():
        t = time.perf_counter()
        found = detect(image)
        if image.shape[:2] == (H, W):
          times[column].append(time.perf_counter() - t)
        if box is None:
          scores.append(len(found) > 0)
        else:
          scores.append(iou(box, face.pick_face(found)) > 0.3)
      recall[column][title] = np.mean(scores)
      cells.append(f'{np.mean(scores):.0%}')
    rows.append((title, *cells))
  if len(sizes) > 1:
    for share in (0.5, 0.9):
      rows.append((f'smallest LFW face found {share:.0%} of the time (px)',
                   *(min((s for s in sizes
                          if recall[c][faces_at[s]] >= share), default='-')
                     for c in columns)))
  rows.append(('ms per 640x480 frame (median)',
               *(1000 * float(np.median(times[c])) for c in columns)))
  print_table(['set', *(name if not side else f'{name} at {side} px'
                        for name, side in columns)], rows)


if __name__ == '__main__':
  main()
