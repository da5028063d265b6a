"""Face detection (pluggable by name) and square face crops.

  detect = make_detector('dlib')  # or 'haar', 'none'
  detect = make_detector('dlib', max_side=320)  # on the frame scaled down
  tracker = FaceTracker(detect, max_gap=5)
  box, has_face = tracker(image)  # pixel box or None
  # Detect on every 5th frame, follow the face in between (dlib's tracker):
  tracker = FaceTracker(detect, max_gap=5, every=5, track='correlation')
  faces = MultiFaceTracker(detect, max_gap=5)(image)  # every face, with ids
  # Either, from option names (as the builders and affect_jax.predict do):
  tracker = make_tracker('dlib', max_gap=5, every=5, track='correlation',
                         detect_max_side=320)
  crop = crop_face(image, box, size=112, margin=0.2)
  crop.image  # uint8 [112, 112, 3]; crop.to_crop(points) -> [0, 1] coords
  points = make_landmarker('dlib')(image, box)  # [68, 2] pixels

Boxes are (ymin, xmin, ymax, xmax) in pixels of the frame, float; points are
(x, y) in pixels.

Default detector: dlib's HOG frontal face detector (`dlib-bin`), chosen by
measured recall (`benchmarks/face_detectors.py`, docs/datasets.md): on real
face photos (scikit-image's LFW subset placed in 640x480 scenes) it finds
93% of 120-pixel faces against 84% for OpenCV's Haar cascade, with no false
detection on 100 non-face photos for either, and Haar's largest box on the
astronaut photo is not her face. Both miss faces under ~60 pixels.
"""

import dataclasses
import functools
import importlib.util
import os
from typing import Callable

import cv2
import numpy as np

from affect_jax.errors import AffectJaxError

# A detector maps uint8 [H, W, 3] RGB to the pixel boxes of every face found,
# float [N, 4] (N may be 0).
Detector = Callable[[np.ndarray], np.ndarray]

DETECTORS = ('dlib', 'haar', 'none')

# Which face a video is about when a frame shows several: the largest, or
# the left-/right-most (Aff-Wild2's `<video>_left` / `<video>_right`).
PICKS = ('largest', 'left', 'right')

# Where the dataset ships no landmarks: 'dlib' predicts the 68 points in the
# face box (face_recognition_models' iBUG-300W predictor), 'none' stores 0.
LANDMARKERS = ('dlib', 'none')

# How `FaceTracker(every=N)` fills the frames between two detections:
# 'hold' keeps the last detection's result, 'correlation' follows the face
# with dlib's correlation tracker started on the last detected box.
TRACKS = ('hold', 'correlation')

# A tracked frame has a face when dlib's correlation tracker answers with at
# least this peak-to-side-lobe ratio (what `update()` returns; FaceTracker).
# Measured on the synthetic faces at 240x480 (the ~22 subjects dlib finds,
# 5 tracked frames each): a tracker whose face is gone (a frame of
# background only, or the face moved by half the frame) answers 3.7-6.4;
# following a face that moves 8 px a frame, 13.8 or more; at 38 px a frame
# (a third of the face's width) 4.8-18, 7% of frames below 7, with the box
# still on the face (IoU >= 0.82): the threshold errs towards has_face=False.
MIN_PSR = 7.0

# Haar cascades are run on a frame scaled to at most this many pixels on its
# long side: at 640x480 that is ~4x faster and faces of a video-call or a
# webcam recording stay well above the cascade's 24-pixel window.
_DETECT_MAX_SIDE = 320

# `detect_max_side` (make_detector's `max_side`): 0 detects on the full
# frame; otherwise at least this many pixels, since dlib's HOG window finds
# faces from ~80 pixels: on a frame scaled below 64 no face of any size in
# the frame would be found at all.
MIN_DETECT_MAX_SIDE = 64


def _boxes(boxes) -> np.ndarray:
  return np.asarray(boxes, np.float32).reshape(-1, 4)


def _areas(boxes: np.ndarray) -> np.ndarray:
  return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Intersection over union of pixel boxes [N, 4] and [M, 4]: float [N, M]."""
  a, b = _boxes(a), _boxes(b)
  lo = np.maximum(a[:, None, :2], b[None, :, :2])
  hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
  union = _areas(a)[:, None] + _areas(b)[None, :] - inter
  return inter / np.maximum(union, 1e-9)


def pick_face(boxes: np.ndarray, pick: str = 'largest') -> np.ndarray | None:
  """One box of [N, 4] (see PICKS), or None when N is 0."""
  if len(boxes) == 0:
    return None
  if pick == 'largest':
    return boxes[int(np.argmax(_areas(boxes)))]
  centres = boxes[:, 1] + boxes[:, 3]
  if pick == 'left':
    return boxes[int(np.argmin(centres))]
  if pick == 'right':
    return boxes[int(np.argmax(centres))]
  raise AffectJaxError(f'Unknown face pick {pick!r}; use one of {PICKS}.')


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
  """(`image` scaled so its long side is <= `max_side`, the scale <= 1).

  cv2.INTER_AREA averages the pixels each output pixel covers: no aliasing.
  An image already that small comes back as is, with scale 1.
  """
  h, w = image.shape[:2]
  scale = min(1.0, max_side / max(h, w))
  if scale < 1:
    image = cv2.resize(image, (round(w * scale), round(h * scale)),
                       interpolation=cv2.INTER_AREA)
  return image, scale


def _haar() -> Detector:
  path = cv2.data.haarcascades + 'haarcascade_frontalface_default.xml'
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise AffectJaxError(f'OpenCV cannot load its Haar cascade {path}; '
                         'reinstall opencv-python-headless<5.')

  def detect(image: np.ndarray) -> np.ndarray:
    gray, scale = _shrink(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY),
                          _DETECT_MAX_SIDE)
    gray = cv2.equalizeHist(gray)
    side = min(gray.shape)
    found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                     minSize=(side // 8, side // 8))
    return _boxes([(y, x, y + bh, x + bw) for x, y, bw, bh in found]) / scale

  return detect


def _import_dlib():
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise AffectJaxError(
        "The 'dlib' face detector and landmarker need dlib (`pip install "
        "dlib-bin face_recognition_models`, dependencies of affect_jax: "
        "reinstall it); or use detector='haar' and landmarks='none'.") from e
  return dlib


def _dlib() -> Detector:
  hog = _import_dlib().get_frontal_face_detector()

  def detect(image: np.ndarray) -> np.ndarray:
    # No upsampling: ~20 ms for 640x480; finds faces from ~80 pixels.
    # dlib misreads a strided view (e.g. np.rot90 of a frame): copy it.
    image = np.ascontiguousarray(image)
    return _boxes([(r.top(), r.left(), r.bottom(), r.right())
                   for r in hog(image, 0)])

  return detect


def check_detect_max_side(max_side: int | None, where: str = '') -> int:
  """`max_side` as an int (None -> 0), or an error naming the option.

  Args:
    max_side: 0 or None (full resolution) or >= MIN_DETECT_MAX_SIDE.
    where: what holds the value, for the message (e.g. a builder config).

  Raises:
    AffectJaxError: a negative or too small value.
  """
  value = int(max_side or 0)
  if value and value < MIN_DETECT_MAX_SIDE:
    raise AffectJaxError(
        f'{where + ": " if where else ""}detect_max_side={value} '
        '(--detect_max_side) is out of range: use 0 (detect on the full '
        f'frame, the default) or at least {MIN_DETECT_MAX_SIDE} pixels (the '
        'long side of the frame the detector sees; dlib finds faces from ~80 '
        'pixels there).')
  return value


def _downscaled(detect: Detector, max_side: int) -> Detector:
  """`detect` run on the frame scaled so its long side is <= `max_side`
  (`_shrink`), its boxes scaled back to frame pixels."""

  def detect_small(image: np.ndarray) -> np.ndarray:
    small, scale = _shrink(image, max_side)
    if scale == 1:
      return detect(image)
    return _boxes(detect(small)) / np.float32(scale)

  return detect_small


def make_detector(name: str, max_side: int | None = 0) -> Detector | None:
  """The detector called `name`; None for 'none' (whole frame or given box).

  Args:
    name: one of DETECTORS.
    max_side: 0 or None: detect on the full frame (the default). N >=
      MIN_DETECT_MAX_SIDE: on the frame scaled down so its long side is at
      most N pixels (`_downscaled`), boxes in frame pixels: ~(long side /
      N)^2 faster for dlib, which then misses faces under ~80 * long side /
      N frame pixels (docs/BENCHMARKS.md, "Downscaled detection"). Haar
      runs at most at 320 pixels anyway: an N above that changes nothing
      but the resampling.
  """
  return _make_detector(name, check_detect_max_side(max_side))


@functools.cache
def _make_detector(name: str, max_side: int) -> Detector | None:
  # One detector per (name, max_side), with the models loaded once per name.
  if max_side:
    detect = _make_detector(name, 0)
    return None if detect is None else _downscaled(detect, max_side)
  if name == 'none':
    return None
  if name == 'haar':
    return _haar()
  if name == 'dlib':
    return _dlib()
  raise AffectJaxError(f'Unknown face detector {name!r}; use one of '
                       f'{DETECTORS}.')


# (uint8 [H, W, 3] RGB, pixel box) -> float32 [68, 2] (x, y) pixels.
Landmarker = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _predictor_path() -> str:
  spec = importlib.util.find_spec('face_recognition_models')
  # Not imported: its __init__ needs pkg_resources, gone from new setuptools.
  path = (None if spec is None or not spec.submodule_search_locations else
          os.path.join(spec.submodule_search_locations[0], 'models',
                       'shape_predictor_68_face_landmarks.dat'))
  if path is None or not os.path.isfile(path):
    raise AffectJaxError(
        "landmarks='dlib' needs face_recognition_models (a dependency of "
        "affect_jax: reinstall it); or set landmarks='none'.")
  return path


@functools.cache
def make_landmarker(name: str) -> Landmarker | None:
  """The 68-point landmark predictor called `name`; None for 'none'."""
  if name == 'none':
    return None
  if name != 'dlib':
    raise AffectJaxError(f'Unknown landmarker {name!r}; use one of '
                         f'{LANDMARKERS}.')
  dlib = _import_dlib()
  predictor = dlib.shape_predictor(_predictor_path())

  def landmarks(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    y0, x0, y1, x1 = (int(round(float(v))) for v in box)
    shape = predictor(image, dlib.rectangle(x0, y0, x1, y1))
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)

  return landmarks


def _correlation_tracker(image: np.ndarray, box: np.ndarray,
                         max_side: int = 0
                         ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
  """dlib's correlation tracker started on `box` of `image`.

  With `max_side` (> 0) it tracks on the frames scaled down as the detector
  sees them (`_shrink`), the boxes in and out in frame pixels.

  Returns a function of the next frame: (peak-to-side-lobe ratio, the face's
  new pixel box, float32 [4], not clipped to the frame).
  """
  dlib = _import_dlib()
  tracker = dlib.correlation_tracker()
  small, scale = _shrink(image, max_side) if max_side else (image, 1.0)
  y0, x0, y1, x1 = (float(v) * scale for v in box)
  tracker.start_track(np.ascontiguousarray(small),
                      dlib.drectangle(x0, y0, x1, y1))

  def update(frame: np.ndarray) -> tuple[float, np.ndarray]:
    if max_side:
      frame = _shrink(frame, max_side)[0]
    psr = tracker.update(np.ascontiguousarray(frame))
    p = tracker.get_position()
    return psr, np.array([p.top(), p.left(), p.bottom(), p.right()],
                         np.float32) / np.float32(scale)

  return update


class FaceTracker:
  """Runs a detector per frame, bridging short gaps with the last box.

  A frame where the detector finds nothing gets has_face=False in any case;
  for up to `max_gap` such frames after a detection the previous box is
  returned so the crop still shows the face (detectors flicker for a frame or
  two on blinks and head turns), after that the caller gets None.

  With `every=N` the detector runs on every N-th frame only. The frames in
  between are filled by `track` (TRACKS):

  - 'hold' (default): they take the last result (box and has_face)
    unchanged — N times faster, for videos where faces move slowly relative
    to the frame rate.
  - 'correlation': when the last detection found a face, dlib's correlation
    tracker started on its box follows the face (~N times faster detection
    plus a few ms a frame of tracking), so the crop moves with the face. A
    tracked frame has has_face=True and the tracked box, clipped to the
    frame, where the tracker's peak-to-side-lobe ratio is at least
    `min_psr` (MIN_PSR) and the clipped box is not empty; otherwise it counts
    as a frame where the face was missed (the `max_gap` rule: the last box
    found, by detector or tracker, with has_face=False, then None), and the
    tracker keeps following so the next frame can find the face again.
    After a detection that finds nothing there is nothing to follow: the
    frames up to the next detection take its result, as with 'hold'. Every
    detection frame restarts from the detector's answer. With
    `track_max_side` N (> 0) the tracker follows the face on the frames
    scaled down so their long side is at most N pixels (as the detector of
    `make_detector(name, N)` sees them; `make_tracker` sets both), boxes in
    frame pixels.
  """

  def __init__(self, detector: Detector | None, max_gap: int = 0,
               pick: str = 'largest', every: int = 1, track: str = 'hold',
               min_psr: float = MIN_PSR, track_max_side: int = 0):
    if pick not in PICKS or every < 1:
      raise AffectJaxError(f'FaceTracker: pick={pick!r} (one of {PICKS}) or '
                           f'every={every} (>= 1) is invalid.')
    if track not in TRACKS:
      raise AffectJaxError(f'FaceTracker: unknown track {track!r}; use one '
                           f'of {TRACKS}.')
    self._detector = detector
    self._max_gap = max_gap
    self._pick = pick
    self._every = every
    self._track = track
    self._min_psr = min_psr
    self._track_max_side = check_detect_max_side(track_max_side,
                                                 'FaceTracker')
    self._count = 0
    self._result = (None, False)
    self._last = None
    self._gap = 0
    self._follow = None  # The correlation tracker's update, while following.

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
    self._count += 1
    if (self._count - 1) % self._every:
      if self._follow is not None:
        self._result = self._tracked(image)
      return self._result
    self._result = self._detect(image)
    return self._result

  def _detect(self, image: np.ndarray) -> tuple[np.ndarray | None, bool]:
    box = pick_face(self._detector(image), self._pick)
    self._follow = None
    if box is None:
      return self._missed()
    if self._track == 'correlation' and self._every > 1:
      self._follow = _correlation_tracker(image, box, self._track_max_side)
    return self._found(box)

  def _tracked(self, image: np.ndarray) -> tuple[np.ndarray | None, bool]:
    psr, box = self._follow(image)
    h, w = image.shape[:2]
    box = np.clip(box, 0, [h, w, h, w]).astype(np.float32)
    if psr >= self._min_psr and box[2] > box[0] and box[3] > box[1]:
      return self._found(box)
    return self._missed()

  def _found(self, box: np.ndarray) -> tuple[np.ndarray, bool]:
    self._last, self._gap = box, 0
    return box, True

  def _missed(self) -> tuple[np.ndarray | None, bool]:
    self._gap += 1
    if self._last is not None and self._gap <= self._max_gap:
      return self._last, False
    return None, False


@dataclasses.dataclass(frozen=True, eq=False)
class TrackedFace:
  """One face of one frame as `MultiFaceTracker` follows it.

  Attributes:
    id: the face's track: 0, 1, ... in order of first appearance.
    box: (ymin, xmin, ymax, xmax) pixels: this frame's detection, or the
      track's last one while the detector misses it; None for the whole
      frame (no detector).
    has_face: the detector found the face in this frame.
  """
  id: int
  box: np.ndarray | None
  has_face: bool


class MultiFaceTracker:
  """Follows every face of a video, each under an id that stays the same.

  Each frame's detections are matched greedily to the live tracks, highest
  IoU with a track's last detected box first (at least `min_iou`); a
  detection left unmatched starts a new track under the next id (the
  largest face first); ids are never reused. A track the detector misses
  keeps its last box for up to `max_gap` frames with has_face=False, as
  `FaceTracker` bridges its one face, and then ends: a face that comes back
  later gets a new id. Without a detector (whole-frame models) the whole
  frame is face 0 of every frame.
  """

  def __init__(self, detector: Detector | None, max_gap: int = 0,
               min_iou: float = 0.3):
    self._detector = detector
    self._max_gap = max_gap
    self._min_iou = min_iou
    self._tracks: dict[int, tuple[np.ndarray, int]] = {}  # (box, misses)
    self._next_id = 0

  def __call__(self, image: np.ndarray) -> list[TrackedFace]:
    """The live faces of one uint8 [H, W, 3] frame, by id."""
    if self._detector is None:
      return [TrackedFace(0, None, True)]
    boxes = _boxes(self._detector(image))
    ids = list(self._tracks)
    found: dict[int, np.ndarray] = {}  # id -> this frame's box
    free = list(range(len(boxes)))
    if ids and free:
      iou = box_iou(np.stack([self._tracks[k][0] for k in ids]), boxes)
      while iou.max() >= self._min_iou:
        t, d = np.unravel_index(np.argmax(iou), iou.shape)
        found[ids[t]] = boxes[d]
        free.remove(d)
        iou[t, :] = iou[:, d] = -1
    areas = _areas(boxes)
    for d in sorted(free, key=lambda d: -areas[d]):
      found[self._next_id] = boxes[d]
      self._next_id += 1
    faces = []
    for k in sorted(set(self._tracks) | set(found)):
      if k in found:
        self._tracks[k] = (found[k], 0)
        faces.append(TrackedFace(k, found[k], True))
        continue
      box, misses = self._tracks[k]
      if misses >= self._max_gap:
        del self._tracks[k]
      else:
        self._tracks[k] = (box, misses + 1)
        faces.append(TrackedFace(k, box, False))
    return faces


def make_tracker(detector: str, max_gap: int = 0, pick: str = 'largest',
                 every: int = 1, track: str = 'hold', detect_max_side: int = 0,
                 all_faces: bool = False) -> FaceTracker | MultiFaceTracker:
  """A fresh tracker for one video, from the face options by name.

  The one way the builders (`builder.video_records`, from a
  VideoFrameConfig) and the prediction command (`affect_jax.predict`, from
  its flags) make their trackers, so both find faces the same way.

  Args:
    detector: DETECTORS name ('none': the whole frame or the given box).
    max_gap, pick, every, track: as for `FaceTracker`.
    detect_max_side: `make_detector`'s `max_side` (0: full resolution),
      and the correlation tracker's (`FaceTracker`'s `track_max_side`): the
      face is found and followed on the same downscaled frame.
    all_faces: a `MultiFaceTracker` of every face instead (detection on
      every frame only).

  Raises:
    AffectJaxError: an unknown name or a value out of range, naming it.
  """
  if every < 1:
    raise AffectJaxError(f'detect_every={every} (--detect_every) is out of '
                         'range: at least 1 (1: detect on every frame).')
  detect = make_detector(detector, detect_max_side)
  if not all_faces:
    return FaceTracker(detect, max_gap, pick, every, track,
                       track_max_side=detect_max_side)
  if every != 1:
    raise AffectJaxError(
        f'detect_every={every}: following every face (--all_faces) detects '
        'on every frame; drop --detect_every (tracking between detections '
        'follows the largest face only) or --all_faces.')
  return MultiFaceTracker(detect, max_gap)


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

  def to_frame(self, points: np.ndarray) -> np.ndarray:
    """Crop-normalised (x, y) [..., 2] -> frame pixels: `to_crop`'s inverse.

    Records store crop coordinates only; a caller that holds the crop (the
    prediction command, which crops the video itself) maps boxes and
    landmarks back to source pixels with this.
    """
    return np.asarray(points, np.float64) * self.side + self.origin

  def box_to_frame(self, box: np.ndarray) -> np.ndarray:
    """[0, 1] crop (ymin, xmin, ymax, xmax) -> frame pixels, float64 [4]."""
    (x0, y0), (x1, y1) = self.to_frame([[box[1], box[0]], [box[3], box[2]]])
    return np.array([y0, x0, y1, x1])


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



@dataclasses.dataclass(frozen=True, eq=False)
class FaceCrop:
  """What a model sees of one frame, and where it lies in the frame.

  Attributes:
    crop: the square crop (and its map back to frame pixels).
    box: the face box (ymin, xmin, ymax, xmax) in frame pixels the crop is
      centred on; None where the crop is the whole frame.
    has_face: whether a face was found in this frame.
    landmarks: float32 [68, 2] (x, y) in [0, 1] of the crop; zeros where
      there are none.
  """
  crop: Crop
  box: np.ndarray | None
  has_face: bool
  landmarks: np.ndarray


def crop_frame(image: np.ndarray, tracker: FaceTracker, size: int,
               margin: float, landmarker: Landmarker | None = None,
               given_box: np.ndarray | None = None,
               given_landmarks: np.ndarray | None = None,
               given_has_face: bool | None = None,
               aligned: bool = False) -> FaceCrop:
  """Finds, crops and marks the face of one frame, as every record is made.

  The builders (`builder.video_records`) and the prediction command both
  call this, so a model sees at prediction time the crops it was trained on.

  Args:
    image: uint8 [H, W, 3] RGB frame.
    tracker: the video's tracker (detector, gap bridging, which face).
    size: side of the crop in pixels.
    margin: context around the face box (`crop_face`).
    landmarker: predicts landmarks inside the box where none are given.
    given_box: the box the dataset ships (used when the detector is 'none').
    given_landmarks: [68, 2] frame pixels the dataset ships, or None.
    given_has_face: the dataset's own no-face flag; False overrides a
      detection.
    aligned: the frame is a face crop already: the whole frame is the box.
  """
  h, w = image.shape[:2]
  box, has_face = tracker(
      image, np.array([0, 0, h, w], np.float32) if aligned else given_box)
  if given_has_face is not None:
    has_face = has_face and given_has_face
  return crop_box(image, box, has_face, size, 0.0 if aligned else margin,
                  landmarker, given_landmarks)


def crop_box(image: np.ndarray, box: np.ndarray | None, has_face: bool,
             size: int, margin: float, landmarker: Landmarker | None = None,
             given_landmarks: np.ndarray | None = None) -> FaceCrop:
  """`crop_frame` once the face is found: crops and marks one box.

  The prediction command's `--all_faces` calls it for each tracked face of a
  frame (`MultiFaceTracker`), so each face is cropped as the builders crop
  their one face.

  Args:
    image: uint8 [H, W, 3] RGB frame.
    box: the face box in pixels, or None for the whole frame.
    has_face: the face was found in this frame (landmarks only then).
    size, margin, landmarker, given_landmarks: as for `crop_frame`.
  """
  crop = crop_face(image, box, size, 0.0 if box is None else margin)
  if given_landmarks is not None:
    landmarks = crop.to_crop(given_landmarks)
  elif landmarker is not None and has_face and box is not None:
    landmarks = crop.to_crop(landmarker(image, box))
  else:
    landmarks = np.zeros((68, 2), np.float32)
  return FaceCrop(crop, box, bool(has_face), landmarks)
