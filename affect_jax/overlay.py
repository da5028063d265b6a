"""A prediction drawn on its video: each face's box and a gauge of its outputs.

  python -m affect_jax.predict --model=DIR --input=clip.mp4 \
      --output=clip.csv --overlay=clip_overlay.mp4

After the CSV is written (its numbers after --fill_missing, --postprocess,
--smooth), the input is decoded again (`tfds_builders.core.video`) and each
frame re-encoded (`core.write_video`: H.264, the input's frame times, so it
lines up with the CSV's time_s) with, for every row of that frame:

- the face box (x0, y0, x1, y1), one colour per face id (--all_faces);
- above it, the numbers: 'V +0.31 A -0.12' (a valence/arousal model) or the
  most probable class;
- beside it, a gauge: the valence-arousal plane (valence left to right,
  arousal bottom to top, both -1 to 1) with the face's point, or a bar per
  class for a class model.

A row with a prediction but no face (--predict_without_face, --fill_missing)
draws its gauge in the top-left corner, labelled 'no face'; a frame without
either says 'no face'. A model trained on the synthetic renders gets its
warning written across the bottom of every frame. The audio is not copied.
An odd width or height is padded by one repeated row or column (H.264's
4:2:0 needs even sides). An image input gives the image drawn (.png/.jpg).
The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image

from affect_jax.errors import AffectJaxError

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.mkv')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

# RGB, one per face id (single-face mode uses the first).
COLOURS = ((40, 220, 40), (255, 80, 60), (60, 140, 255), (255, 200, 0),
           (220, 80, 255), (0, 220, 220))
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def check_path(path: str, is_image: bool) -> None:
  """Refuses an --overlay path that cannot hold what the input gives."""
  ext = os.path.splitext(path)[1].lower()
  want = IMAGE_EXTENSIONS if is_image else VIDEO_EXTENSIONS
  if ext not in want:
    kind = 'an image' if is_image else 'a video'
    raise AffectJaxError(f'--overlay {path}: the input is {kind}, so the '
                         f'overlay is one too; end the name in '
                         f'{" or ".join(want)}.')


def _text(image, text, org, scale, colour, u) -> None:
  """Text with a dark outline, readable on any background."""
  cv2.putText(image, text, org, _FONT, scale, (0, 0, 0), 3 * u, cv2.LINE_AA)
  cv2.putText(image, text, org, _FONT, scale, colour, u, cv2.LINE_AA)


def _panel(image, x0, y0, w, h) -> tuple[int, int]:
  """Darkens a w x h panel, moved inside the frame; returns its corner."""
  H, W = image.shape[:2]
  x0 = int(np.clip(x0, 0, max(0, W - w)))
  y0 = int(np.clip(y0, 0, max(0, H - h)))
  view = image[y0:y0 + h, x0:x0 + w]
  view[:] = (view * 0.35).astype(np.uint8)
  return x0, y0


def _va_gauge(image, x0, y0, side, v, a, colour, u) -> None:
  x0, y0 = _panel(image, x0, y0, side, side)
  c = side // 2
  grey = (150, 150, 150)
  cv2.rectangle(image, (x0, y0), (x0 + side - 1, y0 + side - 1), grey, u)
  cv2.line(image, (x0, y0 + c), (x0 + side - 1, y0 + c), grey, u)
  cv2.line(image, (x0 + c, y0), (x0 + c, y0 + side - 1), grey, u)
  s = 0.3 * u
  _text(image, 'V', (x0 + side - 9 * u, y0 + c - 3 * u), s, grey, 1)
  _text(image, 'A', (x0 + c + 3 * u, y0 + 9 * u), s, grey, 1)
  px = x0 + int(round((np.clip(v, -1, 1) + 1) / 2 * (side - 1)))
  py = y0 + int(round((1 - np.clip(a, -1, 1)) / 2 * (side - 1)))
  cv2.circle(image, (px, py), 4 * u, colour, -1, cv2.LINE_AA)
  cv2.circle(image, (px, py), 4 * u, (255, 255, 255), u, cv2.LINE_AA)


def _bars(image, x0, y0, names, values, colour, u) -> None:
  row, width = 11 * u, 60 * u
  label = max(cv2.getTextSize(n, _FONT, 0.3 * u, 1)[0][0]
              for n in names) + 6 * u
  x0, y0 = _panel(image, x0, y0, label + width + 4 * u,
                  row * len(names) + 4 * u)
  for i, (name, p) in enumerate(zip(names, values)):
    y = y0 + 2 * u + i * row
    _text(image, name, (x0 + 2 * u, y + row - 3 * u), 0.3 * u,
          (230, 230, 230), 1)
    bx = x0 + label
    cv2.rectangle(image, (bx, y + 2 * u), (bx + width, y + row - 2 * u),
                  (120, 120, 120), 1)
    if np.isfinite(p):
      cv2.rectangle(image, (bx, y + 2 * u),
                    (bx + int(round(np.clip(p, 0, 1) * width)),
                     y + row - 2 * u), colour, -1)


def draw(image: np.ndarray, faces: Sequence[tuple[int, bool, np.ndarray,
                                                  np.ndarray]],
         columns: Sequence[str], note: str = '') -> np.ndarray:
  """One frame with its rows drawn.

  Args:
    image: uint8 [H, W, 3] RGB (not modified).
    faces: (face id or -1, has_face, box [4] x0 y0 x1 y1 (NaN: none),
      values [K] (NaN: none)) of each row of the frame.
    columns: the K output names.
    note: a warning written across the bottom.
  """
  out = np.ascontiguousarray(image).copy()
  H, W = out.shape[:2]
  u = max(1, int(round(min(H, W) / 400)))
  va = 'valence' in columns and 'arousal' in columns
  side = int(np.clip(min(H, W) // 5, 48, 200))
  corner = 4 * u
  for face_id, has_face, box, values in faces:
    colour = COLOURS[max(face_id, 0) % len(COLOURS)]
    predicted = np.isfinite(values).all() and len(values)
    if va and predicted:
      v, a = values[columns.index('valence')], values[columns.index('arousal')]
      label = f'V {v:+.2f} A {a:+.2f}'
    elif predicted:
      k = int(np.argmax(values))
      label = f'{columns[k]} {values[k]:.2f}'
    else:
      label = ''
    if face_id >= 0:
      label = f'face {face_id}' + (f': {label}' if label else '')
    if has_face and np.isfinite(box).all():
      x0, y0, x1, y1 = (int(round(c)) for c in box)
      cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2 * u)
      gx, gy = x1 + 4 * u, y0  # Right of the box, else left of it.
      if gx + side > W:
        gx = x0 - 4 * u - side
      ty = y0 - 5 * u if y0 > 16 * u else y1 + 14 * u
      _text(out, label, (max(0, x0), ty), 0.45 * u, colour, u)
    else:  # A prediction without a face: in the corner.
      gx, gy = corner, corner + 16 * u
      _text(out, 'no face' + (f', {label}' if label else ''),
            (corner, corner + 10 * u), 0.45 * u, colour, u)
      corner += side + 24 * u
    if not predicted:
      continue
    if va:
      _va_gauge(out, gx, gy, side, v, a, colour, u)
    else:
      _bars(out, gx, gy, list(columns), values, colour, u)
  if not faces:
    _text(out, 'no face', (4 * u, 14 * u), 0.45 * u, (220, 220, 220), u)
  if note:
    h = 16 * u
    out[H - h:] = (out[H - h:] * 0.3).astype(np.uint8)
    _text(out, note, (4 * u, H - 4 * u), 0.4 * u, (255, 90, 90), u)
  return out


def _rows_by_frame(result) -> dict[int, list[int]]:
  by = {}
  for i, f in enumerate(result.frame):
    by.setdefault(int(f), []).append(i)
  return by


def _faces(result, rows):
  face = result.face if result.face is not None else np.full(result.rows, -1)
  return [(int(face[i]), bool(result.has_face[i]), result.box[i],
           result.outputs[i]) for i in rows]


def _even(image: np.ndarray) -> np.ndarray:
  h, w = image.shape[:2]
  if h % 2 or w % 2:
    image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode='edge')
  return image


def write(source: str, path: str, result, note: str = '') -> str:
  """Writes the overlay of `result` (a `predict.Result`) on `source`.

  Returns:
    `path`.
  """
  from tfds_builders.core import video  # pylint: disable=g-import-not-at-top
  check_path(path, result.is_image)
  by = _rows_by_frame(result)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  stem, ext = os.path.splitext(path)
  tmp = f'{stem}.tmp-{os.getpid()}{ext}'
  try:
    if result.is_image:
      drawn = draw(video.read_image(source), _faces(result, by.get(0, [])),
                   result.columns, note)
      Image.fromarray(drawn).save(tmp)
    else:
      last = max(by) if by else -1
      times = [float(result.time[by[i][0]]) for i in sorted(by)]

      def frames() -> Iterator[np.ndarray]:
        try:
          for f in video.iter_frames(source):
            if f.index > last:
              return
            yield _even(draw(f.image, _faces(result, by.get(f.index, [])),
                             result.columns, note))
        except AffectJaxError:  # A truncated input: the CSV said so.
          return

      fps = video.probe(source).fps or 25.0
      video.write_video(tmp, frames(), fps, quality=20, times=times)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
