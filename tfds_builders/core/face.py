"""Face detection (pluggable by name) and square face crops.

  detect = make_detector('haar')  # or 'none', 'dlib'
  tracker = FaceTracker(detect, max_gap=5)
  box, has_face = tracker(image)  # pixel box or None
  crop = crop_face(image, box, size=112, margin=0.2)
  crop.image  # uint8 [112, 112, 3]; crop.to_crop(points) -> [0, 1] coords

Boxes are (ymin, xmin, ymax, xmax) in pixels of the frame, float; points are
(x, y) in pixels.
"""

import dataclasses
from typing import Callable

import cv2
import numpy as np

from affect_jax.errors import AffectJaxError

# A detector maps uint8 [H, W, 3] RGB to a pixel box, or None (no face).
Detector = Callable[[np.ndarray], np.ndarray | None]

DETECTORS = ('haar', 'dlib', 'none')

# Haar cascades are run on a frame scaled to at most this many pixels on its
# long side: at 640x480 that is ~4x faster and faces of a video-call or a
# webcam recording stay well above the cascade's 24-pixel window.
_DETECT_MAX_SIDE = 320


def _largest(boxes) -> np.ndarray | None:
  if boxes is None or len(boxes) == 0:
    return None
  boxes = np.asarray(boxes, np.float32)
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return boxes[int(np.argmax(areas))]


def _haar() -> Detector:
  path = cv2.data.haarcascades + 'haarcascade_frontalface_default.xml'
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise AffectJaxError(f'OpenCV cannot load its Haar cascade {path}; '
                         'reinstall opencv-python-headless<5.')

  def detect(image: np.ndarray) -> np.ndarray | None:
    h, w = image.shape[:2]
    scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale < 1:
      gray = cv2.resize(gray, (round(w * scale), round(h * scale)),
                        interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    side = min(gray.shape)
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                     minSize=(side // 8, side // 8))
    boxes = [(y, x, y + bh, x + bw) for x, y, bw, bh in found]
    box = _largest(boxes)
    return None if box is None else box / scale

  return detect


def _dlib() -> Detector:
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise AffectJaxError(
        "detector='dlib' needs the dlib package (`pip install dlib`, not a "
        "dependency of affect_jax); or use detector='haar'.") from e
  hog = dlib.get_frontal_face_detector()

  def detect(image: np.ndarray) -> np.ndarray | None:
    rects = hog(image, 0)
    return _largest([(r.top(), r.left(), r.bottom(), r.right())
                     for r in rects])

  return detect


def make_detector(name: str) -> Detector | None:
  """The detector called `name`; None for 'none' (whole frame or given box)."""
  if name == 'none':
    return None
  if name == 'haar':
    return _haar()
  if name == 'dlib':
    return _dlib()
  raise AffectJaxError(f'Unknown face detector {name!r}; use one of '
                       f'{DETECTORS}.')


class FaceTracker:
  """Runs a detector per frame, bridging short gaps with the last box.

  A frame where the detector finds nothing gets has_face=False in any case;
  for up to `max_gap` such frames after a detection the previous box is
  returned so the crop still shows the face (detectors flicker for a frame or
  two on blinks and head turns), after that the caller gets None.
  """

  def __init__(self, detector: Detector | None, max_gap: int = 0):
    self._detector = detector
    self._max_gap = max_gap
    self._last = None
    self._gap = 0

  def __call__(self, image: np.ndarray,
               given_box: np.ndarray | None = None
               ) -> tuple[np.ndarray | None, bool]:
    """Returns (pixel box or None, has_face) for one uint8 [H, W, 3] frame.

    Args:
      image: the frame.
      given_box: a box the dataset ships for this frame; used as-is (and
        has_face=True) when the detector is 'none'.
    """
    if self._detector is None:
      return given_box, True
    box = self._detector(image)
    if box is not None:
      self._last, self._gap = box, 0
      return box, True
    self._gap += 1
    if self._last is not None and self._gap <= self._max_gap:
      return self._last, False
    return None, False


@dataclasses.dataclass(frozen=True, eq=False)
class Crop:
  """A square crop resized to `size`, and the map from frame to crop coords.

  Attributes:
    image: uint8 [size, size, 3].
    origin: (x, y) pixel position of the crop's top-left corner in the frame.
    side: side of the square in frame pixels.
  """
  image: np.ndarray
  origin: tuple[float, float]
  side: float

  def to_crop(self, points: np.ndarray) -> np.ndarray:
    """Frame pixel (x, y) [..., 2] -> crop-normalised [0, 1] (x, y), float32."""
    p = (np.asarray(points, np.float64) - self.origin) / self.side
    return p.astype(np.float32)

  def box_to_crop(self, box: np.ndarray) -> np.ndarray:
    """Frame pixel (ymin, xmin, ymax, xmax) -> [0, 1] of the crop, float32 [4]."""
    (x0, y0), (x1, y1) = self.to_crop([[box[1], box[0]], [box[3], box[2]]])
    return np.clip([y0, x0, y1, x1], 0, 1).astype(np.float32)


def crop_face(image: np.ndarray, box: np.ndarray | None, size: int,
              margin: float) -> Crop:
  """Crops a square around `box` (or the whole frame) and resizes it.

  Args:
    image: uint8 [H, W, 3].
    box: (ymin, xmin, ymax, xmax) pixels, or None for the whole frame (padded
      to a square, nothing cut off).
    size: output side in pixels.
    margin: extra context on each side, as a fraction of the box's long side
      (0.2 keeps the chin, brows and some hair).

  Returns:
    The crop; parts outside the frame are black.
  """
  h, w = image.shape[:2]
  if box is None:
    box, margin = np.array([0, 0, h, w], np.float64), 0.0
  y0, x0, y1, x1 = (float(v) for v in box)
  side = max(y1 - y0, x1 - x0) * (1 + 2 * margin)
  side = max(side, 2.0)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  ox, oy = round(cx - side / 2), round(cy - side / 2)
  s = round(side)
  canvas = np.zeros((s, s, 3), np.uint8)
  # Paste the part of the frame that lies inside the square.
  fy0, fx0 = max(oy, 0), max(ox, 0)
  fy1, fx1 = min(oy + s, h), min(ox + s, w)
  if fy1 > fy0 and fx1 > fx0:
    canvas[fy0 - oy:fy1 - oy, fx0 - ox:fx1 - ox] = image[fy0:fy1, fx0:fx1]
  interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
  out = cv2.resize(canvas, (size, size), interpolation=interp)
  return Crop(image=out, origin=(float(ox), float(oy)), side=float(s))

