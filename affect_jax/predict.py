"""Per-frame valence / arousal / emotion predictions for a video, image or folder.

  python -m affect_jax.predict --model=DIR --input=PATH --output=OUT.csv \
      [--plot=OUT.png] [--overlay=OUT.mp4] [--batch_size=N] [--all_faces] \
      [--predict_without_face] [--fill_missing=none|linear|hold] \
      [--smooth=SECONDS] [--postprocess] \
      [--detect_every=N [--track=hold|correlation]] [--detect_max_side=N]
      [--workers=N] [--retry_failed] [--serial]

--model: a training workdir (its last stage's best checkpoint), a stage or
  checkpoint folder, or a folder written by `python -m affect_jax.export`.
--input: a video (anything PyAV decodes: mp4, mov, avi, mkv, webm, ...;
  constant or variable frame rate, rotation metadata honoured), an image
  (jpg, png, ...), or a FOLDER of them: then --output (and --plot,
  --overlay) are folders and each file gets `<output>/<file stem>.csv` (and
  `.png`, `.mp4`); or `@LIST`, a file naming one input a line. A folder or
  list is predicted by `affect_jax.predict_folder`: --workers processes,
  resumable (what is done is recorded in `<output>/predict_log.jsonl`), a
  line per file and a table of the failures.

The CSV has one row per decoded frame, in order: frame, time_s (the frame's
presentation time), has_face, the face box x0, y0, x1, y1 in pixels of the
(upright) frame, then one column per model output: valence, arousal for a
VA model, one probability per class for an emotion or expression model.
Frames without a face have has_face=0 and empty box and predictions (with
--predict_without_face: the model's prediction all the same, has_face=0).
The face detector decides has_face and the box for every model, one trained
on whole frames (the synthetic quick start) included: such a model is fed
the whole frame, but a frame where no face is found is not called one. A
model trained on the synthetic renders says so: a warning on stderr, a first
line `# warning: model trained on synthetic cartoon faces: not meaningful on
real video` in the CSV (read it with pandas.read_csv(..., comment='#')), and
in the plot's title and across the overlay. Of
several faces the largest is predicted; with --all_faces each face found
gets its own row, in a `face` column after time_s: ids 0, 1, ... tracked
across frames (`core.face.MultiFaceTracker`), each face predicted on its own
crops and its own windows, as if the video showed only that face; a frame
without any face still gives one row (has_face=0, empty face). A model
trained on whole frames sees one picture a frame: its rows are the largest
face's, face 0.

Whole-video options, on the rows once the video is predicted (each face on
its own), in this order: --fill_missing=linear|hold fills the frames without
a face (interpolated in time / the last prediction repeated; has_face stays
0), --postprocess applies the post-processing chain the model's run chose on
its validation set (affect_jax.postprocess's chain.json, which
affect_jax.export carries), --smooth=SECONDS a centred running median
(postprocess.median_filter). The median filter and the chain's shift work
on each run of frames with predictions. --overlay=OUT.mp4 writes the video
again with each face's box and a valence/arousal gauge (class bars for a
class model) drawn (affect_jax.overlay).

The face is found as `affect_jax.prepare` finds it, by the same code
(`core.face.make_tracker`), with the same options: by default the detector
runs on every frame at full resolution; --detect_every=N runs it on every
N-th frame only, the frames in between filled by --track (hold: the last
detection, correlation: dlib's correlation tracker follows the face), and
--detect_max_side=N detects on the frame scaled down to N pixels on its long
side (faster; faces under ~80 pixels there are missed). docs/datasets.md
and docs/BENCHMARKS.md give the measured speed and box agreement.

Each frame goes through the preprocessing the model was trained with, by the
builders' own code: the same decoder, face detector, crop margin and size,
landmarks and JPEG round trip (`tfds_builders.core.face.crop_frame`,
`core.encode_jpeg`, `input_pipeline.decode_resized`). A temporal model sees
windows of its training length overlapping by half; each frame takes the
prediction of the window in which it is most central. An image is predicted
as a still video of one window of repeats and gives one row (one per face
with --all_faces; the last frame of the window: the one that has seen the
whole window). Decoding, face finding and the model run as a pipeline of
threads (`prefetch`; --serial: one after the other, the same CSV). Memory
stays bounded (about window + batch_size x window / 2 frames per face being
tracked) whatever the video's length; the rows (8 x (8 + K) bytes each) are
kept until the end, for the whole-video options.

Errors (a missing or unreadable file, a truncated video, a folder without a
model) are one `error: ...` line and exit status 2. A truncated or corrupt
video keeps the predictions of the frames that decoded, then reports where
it stopped. The CSV is written to a temporary file and renamed when done, so
an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from affect_jax import hugepages

if __name__ == '__main__':  # First: the process may start again with glibc's
  hugepages.use_huge_pages()  # huge-page setting (affect_jax.hugepages).

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
import numpy as np

from affect_jax import checkpointing
from affect_jax import cli
from affect_jax import features as F
from affect_jax import input_pipeline
from affect_jax import overlay as overlay_lib
from affect_jax import writers
from affect_jax.errors import AffectJaxError

FLAGS = flags.FLAGS

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.m4v', '.avi', '.mkv', '.webm', '.mpg',
                    '.mpeg', '.wmv', '.flv', '.ts', '.3gp')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff',
                    '.gif')

# What to do about a broken input file (the builders' text suggests
# --skip_broken, which means nothing here).
_FIX = 're-copy it, or re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)'

BOX_COLUMNS = ('x0', 'y0', 'x1', 'y1')


@dataclasses.dataclass(eq=False)
class ModelFrame:
  """One frame as the model sees it, and what the CSV says about it.

  Attributes:
    index, time: position and presentation time (seconds) in the input.
    has_face: a face was found.
    box: (x0, y0, x1, y1) face box in pixels of the upright frame; None
      without a face.
    image: uint8 [S, S, 3] at the model's input size; None once used.
    landmarks: float32 [68, 2] in [0, 1] of the crop.
  """
  index: int
  time: float
  has_face: bool
  box: tuple[float, float, float, float] | None
  image: np.ndarray | None
  landmarks: np.ndarray


SYNTHETIC_WARNING = ('trained on synthetic cartoon faces: not meaningful on '
                     'real video')


def is_synthetic(meta: dict[str, Any]) -> bool:
  """Whether the model record says it was trained on the synthetic renders.

  `data.synthetic` where the record has it, else the dataset's name
  (`synthetic_faces/...`, what `train.model_record` stores as `data`).
  """
  data = meta.get('data') or {}
  if 'synthetic' in data:
    return bool(data['synthetic'])
  return str(data.get('dataset', '')).split('/')[0] == 'synthetic_faces'


class Preprocess:
  """A model's training-time frame preprocessing, from its checkpoint.

  The dataset's crop settings (`meta['data']`: detector, margin, stored crop
  size, landmarks) as its builder applied them, then the JPEG round trip and
  the resize to the model's input size as the input pipeline applies them.
  A dataset whose records are whole frames (the synthetic renders: no
  `detector` in its metadata) is predicted on whole frames, padded square;
  the default detector still runs on every frame for `has_face` and the
  box, so a frame without a face is never reported as one. A dataset whose
  faces came cropped or boxed (`detector='none'`) is predicted on the
  default detector's crops.

  How often and at what resolution the detector runs (`detect_every`,
  `track`, `detect_max_side`: the builders' options, face.make_tracker) is
  the caller's choice, by default every frame at full resolution whatever
  the dataset used: the most accurate boxes, at the detector's speed.
  """

  def __init__(self, meta: dict[str, Any], detect_every: int | None = None,
               track: str | None = None,
               detect_max_side: int | None = None):
    from tfds_builders import core  # pylint: disable=g-import-not-at-top
    from tfds_builders.core import face  # pylint: disable=g-import-not-at-top
    self._face = face
    data = meta.get('data') or {}
    self.image_size = int(meta['input']['image_size'])
    self.whole_frame = 'detector' not in data
    self.synthetic = is_synthetic(meta)
    detector = data.get('detector', 'none')
    if detector == 'none':
      if not self.whole_frame:
        logging.warning('The model was trained on crops its dataset shipped; '
                        'predicting on %r detector crops.',
                        core.VideoFrameConfig.detector)
      detector = core.VideoFrameConfig.detector
    # A whole-frame model: the detector decides has_face and the box only.
    self.detector = detector
    self.detect_every = 1 if detect_every is None else int(detect_every)
    self.track = track or 'hold'
    self.detect_max_side = detect_max_side or 0
    self.crop_size = int(data.get('image_size') or data.get('frame_size') or
                         self.image_size)
    self.margin = 0.0 if self.whole_frame else float(data.get('margin', 0.0))
    self.landmarker = face.make_landmarker(
        'none' if self.whole_frame else data.get('landmarks', 'none'))
    # Not in the dataset metadata: the builders' defaults.
    self.max_gap = core.VideoFrameConfig.max_gap
    self.jpeg_quality = core.VideoFrameConfig.jpeg_quality
    self._encode = core.encode_jpeg
    # Fail now, not on the first frame, on a bad option or a missing model.
    self.tracker()

  def tracker(self, all_faces: bool = False):
    """A fresh face tracker for one video: of its largest face, or of all.

    A whole-frame model sees one picture per frame: its tracker follows the
    largest face whatever `all_faces` says.
    """
    return self._face.make_tracker(
        self.detector, self.max_gap, every=self.detect_every,
        track=self.track, detect_max_side=self.detect_max_side,
        all_faces=all_faces and not self.whole_frame)

  def __call__(self, index: int, time_s: float, image: np.ndarray,
               tracker) -> ModelFrame:
    """The frame's face as a `FaceTracker` finds it."""
    if self.whole_frame:
      box, has_face = tracker(image)
      return self._model_frame(index, time_s, self._face.crop_box(
          image, None, has_face, self.crop_size, 0.0), box)
    found = self._face.crop_frame(image, tracker, self.crop_size, self.margin,
                                  self.landmarker)
    return self._model_frame(index, time_s, found, found.box)

  def faces(self, index: int, time_s: float, image: np.ndarray,
            tracker) -> list[tuple[int, ModelFrame]]:
    """(face id, frame) of each face a `MultiFaceTracker` follows."""
    return [(f.id, self._model_frame(index, time_s, self._face.crop_box(
        image, f.box, f.has_face, self.crop_size, self.margin,
        self.landmarker), f.box)) for f in tracker(image)]

  def _model_frame(self, index: int, time_s: float, found,
                   box) -> ModelFrame:
    # The records hold JPEGs of the crops; the model saw them decoded.
    pixels = input_pipeline.decode_resized(
        self._encode(found.crop.image, self.jpeg_quality), self.image_size)
    xy = None
    if found.has_face and box is not None:
      y0, x0, y1, x1 = (float(v) for v in box)
      xy = (x0, y0, x1, y1)
    return ModelFrame(index, float(time_s), found.has_face and xy is not None,
                      xy, pixels, found.landmarks)


def run_windows(logits_fn: Callable[[dict[str, np.ndarray]], np.ndarray],
                windows: Sequence[Sequence[ModelFrame]], batch_size: int,
                window: int, image_size: int) -> list[np.ndarray]:
  """Logits [len(w), K] of each window, `batch_size` windows per call.

  Short windows and the last batch are padded (mask 0), so the network is
  compiled for one shape only.
  """
  out = []
  for lo in range(0, len(windows), batch_size):
    part = windows[lo:lo + batch_size]
    batch = {
        F.FRAMES: np.zeros((batch_size, window, image_size, image_size, 3),
                           np.uint8),
        F.MASK: np.zeros((batch_size, window), np.float32),
        F.LANDMARKS: np.zeros((batch_size, window, F.NUM_LANDMARKS, 2),
                              np.float32),
    }
    for j, frames in enumerate(part):
      for t, f in enumerate(frames):
        batch[F.FRAMES][j, t] = f.image
        batch[F.LANDMARKS][j, t] = f.landmarks
        batch[F.MASK][j, t] = 1.0
    logits = np.asarray(logits_fn(batch), np.float32)
    out.extend(logits[j, :len(frames)] for j, frames in enumerate(part))
  return out


class WindowStream:
  """`predict_stream` fed one frame at a time: one per face track.

  `push` takes the next frame and returns the (frame, logits [K]) that are
  final, in order; `finish` runs the last windows and returns the rest.
  """

  def __init__(self, logits_fn, window: int, batch_size: int,
               image_size: int):
    self._logits_fn, self._window = logits_fn, window
    self._batch_size, self._image_size = batch_size, image_size
    self._stride = max(1, window // 2)
    self._images: dict[int, ModelFrame] = {}
    # Frames whose image is no longer needed keep their CSV fields here.
    self._meta: dict[int, ModelFrame] = {}
    self._best: dict[int, tuple[float, np.ndarray]] = {}
    self._pending: list[int] = []  # Window starts not yet run.
    self._n = self._next_start = self._emitted = 0

  def push(self, frame: ModelFrame) -> list[tuple[ModelFrame, np.ndarray]]:
    self._images[self._n] = frame
    self._n += 1
    while self._next_start + self._window <= self._n:
      self._pending.append(self._next_start)
      self._next_start += self._stride
    if len(self._pending) < self._batch_size:
      return []
    starts = self._pending[:self._batch_size]
    del self._pending[:self._batch_size]
    self._run(starts)
    out = self._emit(starts[-1] + (self._window - 1) / 2)
    self._release()
    return out

  def finish(self) -> list[tuple[ModelFrame, np.ndarray]]:
    if self._n == 0:
      return []
    last = self._next_start - self._stride  # Start of the last full window.
    if last < 0 or last + self._window < self._n:
      self._pending.append(max(0, self._n - self._window))
    self._run(self._pending)
    self._pending = []
    return self._emit(self._n)

  def _run(self, starts: list[int]) -> None:
    wins = [[self._images[i] for i in range(s, min(s + self._window, self._n))]
            for s in starts]
    logits = run_windows(self._logits_fn, wins, self._batch_size,
                         self._window, self._image_size)
    for s, w, l in zip(starts, wins, logits):
      centre = (len(w) - 1) / 2
      for t in range(len(w)):
        d = abs(t - centre)
        if s + t not in self._best or d < self._best[s + t][0]:
          self._best[s + t] = (d, l[t])

  def _emit(self, upto: float) -> list[tuple[ModelFrame, np.ndarray]]:
    out = []
    while self._emitted < self._n and self._emitted <= upto:
      i = self._emitted
      out.append((self._images[i] if i in self._images else self._meta[i],
                  self._best.pop(i)[1]))
      self._meta.pop(i, None)
      self._emitted += 1
    return out

  def _release(self) -> None:
    keep = min(self._pending + [self._next_start - self._stride])
    for i in [i for i in self._images if i < keep]:
      f = self._images.pop(i)
      if i >= self._emitted:
        self._meta[i] = dataclasses.replace(f, image=None)


def predict_stream(logits_fn, frames: Iterable[ModelFrame], window: int,
                   batch_size: int, image_size: int
                   ) -> Iterator[tuple[ModelFrame, np.ndarray]]:
  """(frame, logits [K]) of every frame of a stream, in order.

  Windows of `window` frames start every `window // 2` frames; where the
  stream does not end on a window boundary one more window ends at its last
  frame (shorter streams: one padded window). Each frame takes the logits of
  the window in which it is most central (the earlier on a tie), so every
  frame has context on both sides where the video allows. Frames are held
  only until the windows that need them have run.
  """
  stream = WindowStream(logits_fn, window, batch_size, image_size)
  for frame in frames:
    yield from stream.push(frame)
  yield from stream.finish()


def predict_tracks(logits_fn,
                   frames: Iterable[tuple[int, float,
                                          list[tuple[int, ModelFrame]]]],
                   window: int, batch_size: int, image_size: int,
                   keep_missed: bool = False
                   ) -> Iterator[tuple[int, float,
                                       list[tuple[int, ModelFrame,
                                                  np.ndarray]]]]:
  """Every face of every frame, each face track through its own windows.

  Args:
    frames: (index, time, [(face id, frame)]) per decoded frame, the live
      tracks of `Preprocess.faces`; a track missing from a frame has ended.
    keep_missed: also give the entries of a track's frames where its face
      was missed (has_face False; --predict_without_face).

  Yields:
    (index, time, [(face id, frame, logits [K])]) of each frame in order,
    the faces found in it (has_face) by id: each track is one
    `WindowStream`, so a temporal model sees one face's sequence; a track's
    frames where its face was missed feed its windows but give no entry
    (unless `keep_missed`).
    Ended tracks are flushed; only frames whose faces are still in a
    window are held.
  """
  streams: dict[int, WindowStream] = {}
  # Frames not yet yielded: index -> (time, ids found, {id: (frame, logits)}).
  waiting: dict[int, tuple[float, set[int], dict[int, Any]]] = {}

  def take(face_id: int, done) -> None:
    for frame, logits in done:
      if frame.has_face or keep_missed:
        waiting[frame.index][2][face_id] = (
            dataclasses.replace(frame, image=None), logits)

  def ready():
    while waiting:
      index = next(iter(waiting))
      time_s, want, got = waiting[index]
      if len(got) < len(want):
        return
      del waiting[index]
      yield index, time_s, [(k, *got[k]) for k in sorted(got)]

  for index, time_s, faces in frames:
    waiting[index] = (time_s, {k for k, f in faces
                               if f.has_face or keep_missed}, {})
    live = {k for k, _ in faces}
    for k in [k for k in streams if k not in live]:
      take(k, streams.pop(k).finish())
    for k, frame in faces:
      if k not in streams:
        streams[k] = WindowStream(logits_fn, window, batch_size, image_size)
      take(k, streams[k].push(frame))
    yield from ready()
  for k in list(streams):
    take(k, streams.pop(k).finish())
  yield from ready()


def predict_image(logits_fn, frame: ModelFrame, window: int,
                  batch_size: int, image_size: int) -> np.ndarray:
  """Logits [K] of a still image: the last of a window of repeats."""
  return run_windows(logits_fn, [[frame] * window], batch_size, window,
                     image_size)[0][-1]


_END = object()


def prefetch(items: Iterable[Any], depth: int, name: str) -> Iterator[Any]:
  """`items`, computed ahead in a thread of their own, at most `depth` waiting.

  One stage of the prediction pipeline (decoding, face finding, the model):
  each runs concurrently with the next, which takes its items in order, so
  the output is the serial one's, item for item, and the whole goes at the
  pace of its slowest stage. PyAV's decoding, dlib, the JPEG round trip and
  XLA release the GIL (benchmarks/predict_speed.py measures each stage).
  The producer's exception is raised here where its item would have come;
  closing this iterator (the consumer stopped or raised) stops the producer.
  """
  items = iter(items)
  q: queue.Queue = queue.Queue(maxsize=max(1, depth))
  stop = threading.Event()

  def put(x) -> bool:
    while not stop.is_set():
      try:
        q.put(x, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    try:
      for x in items:
        if not put((x, None)):
          return
      put((_END, None))
    except BaseException as e:  # pylint: disable=broad-except
      put((_END, e))  # Raised in the consumer.
    finally:
      close = getattr(items, 'close', None)
      if close:  # An upstream stage's generator, in this thread.
        close()

  thread = threading.Thread(target=produce, name=name, daemon=True)
  thread.start()
  try:
    while True:
      try:
        x, err = q.get(timeout=0.1)
      except queue.Empty:
        if thread.is_alive() or not q.empty():
          continue
        return  # Stopped from outside (an upstream stage closed).
      if x is _END:
        if err is not None:
          raise err
        return
      yield x
  finally:
    stop.set()
    thread.join()


class _Rows:
  """A file's rows as they come, in compact float64 chunks.

  Columns: frame, time, face (-1: none), has_face, the box (NaN: none), the
  K outputs (NaN: none): 8 x (8 + K) bytes a row, about 7 MB an hour of
  25 fps video for a VA model, instead of Python objects.
  """

  def __init__(self, k: int, chunk: int = 4096):
    self._k, self._size = k, chunk
    self._chunks: list[np.ndarray] = []
    self._n = 0  # Rows in the last chunk.

  def add(self, frame: int, time_s: float, face: int, has_face: bool,
          box, outputs) -> None:
    if not self._chunks or self._n == self._size:
      self._chunks.append(np.empty((self._size, 8 + self._k), np.float64))
      self._n = 0
    row = self._chunks[-1][self._n]
    row[:4] = frame, time_s, face, has_face
    row[4:8] = box if box is not None else np.nan
    row[8:] = outputs if outputs is not None else np.nan
    self._n += 1

  def array(self) -> np.ndarray:
    if not self._chunks:
      return np.zeros((0, 8 + self._k))
    return np.concatenate(self._chunks[:-1] + [self._chunks[-1][:self._n]])


def _fmt(v) -> str:
  if v is None:
    return ''
  if isinstance(v, (float, np.floating)):
    return f'{float(v):.6g}'
  return str(v)


def _line(values: Sequence[Any]) -> str:
  """One CSV line of plain values (no quoting needed: numbers and names)."""
  return ','.join(_fmt(v) for v in values) + '\n'


class Progress:
  """'name: 120/900 frames (13%), 42.0 frames/s' on stderr, twice a second."""

  def __init__(self, name: str, total: int | None):
    self.name, self.total = name, total
    self.start = self.shown = time.perf_counter()
    self.n = 0

  def update(self, n: int) -> None:
    self.n = n
    now = time.perf_counter()
    if now - self.shown >= 0.5:
      self.shown = now
      self._show(now)

  def _show(self, now: float, end: str = '') -> None:
    rate = self.n / max(now - self.start, 1e-9)
    of = ''
    if self.total:
      of = f'/{self.total} ({min(100, 100 * self.n // self.total)}%)'
    print(f'\r{self.name}: {self.n}{of} frames, {rate:.1f} frames/s',
          end=end, file=sys.stderr, flush=True)

  def done(self) -> float:
    """Prints the final line; returns frames per second."""
    now = time.perf_counter()
    self._show(now, end='\n')
    return self.n / max(now - self.start, 1e-9)


@dataclasses.dataclass
class Result:
  """What predicting one file wrote: rows and the series for the plot."""
  csv: str
  rows: int
  frames_per_second: float
  time: np.ndarray
  has_face: np.ndarray
  outputs: np.ndarray  # [rows, K] in column order; NaN without a prediction.
  columns: list[str]
  is_image: bool
  face: np.ndarray | None = None  # [rows] face ids (-1: none); --all_faces.
  frame: np.ndarray | None = None  # [rows] frame index.
  box: np.ndarray | None = None  # [rows, 4] x0, y0, x1, y1; NaN: none.
  synthetic: bool = False  # The model was trained on the synthetic renders.
  overlay: str | None = None  # The --overlay file written.
  frames: int = 0  # Frames decoded (rows: one per face with --all_faces).
  face_fraction: float = 0.0  # Of the frames, those with a face found.


FILL_MISSING = ('none', 'linear', 'hold')
CHAIN_JSON = 'chain.json'  # What affect_jax.postprocess writes, and exports.


def runs(valid: np.ndarray) -> list[slice]:
  """The runs of consecutive True in a bool [N], as slices."""
  v = np.concatenate([[False], np.asarray(valid, bool), [False]])
  edges = np.flatnonzero(v[1:] != v[:-1])
  return [slice(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def fill_missing(time: np.ndarray, values: np.ndarray, how: str
                 ) -> np.ndarray:
  """Fills the rows without a prediction (NaN) of one face's series.

  Args:
    time: float [N] seconds, increasing.
    values: float [N, K], NaN rows where the face was not seen.
    how: 'linear' interpolates in time between the predictions either side;
      'hold' repeats the last prediction; 'none' leaves them. Before the
      first (after the last) prediction both repeat the first (last) one. A
      series without any prediction stays empty.
  """
  if how not in FILL_MISSING:
    raise AffectJaxError(f'--fill_missing={how!r} is not one of '
                         f'{", ".join(FILL_MISSING)}.')
  out = np.array(values, np.float64)
  known = np.isfinite(out).all(1)
  if how == 'none' or not known.any() or known.all():
    return out
  if how == 'linear':
    for k in range(out.shape[1]):
      out[~known, k] = np.interp(time[~known], time[known], out[known, k])
    return out
  last = np.maximum.accumulate(np.where(known, np.arange(len(out)), -1))
  last[last < 0] = np.flatnonzero(known)[0]
  return out[last]


def find_chain(model: str) -> str | None:
  """The post-processing chain that goes with a model, if it has one.

  A model folder from affect_jax.export carries it as `chain.json`; a
  training run has it in the stage folder of its postprocess stage (or
  `python -m affect_jax.postprocess`'s `<workdir>/postprocess/`).

  Raises:
    AffectJaxError: the run holds several chains (it cannot tell which).
  """
  ckpt = checkpointing.find_checkpoints(model)
  own = os.path.join(ckpt, CHAIN_JSON)
  if os.path.isfile(own):
    return own
  if os.path.basename(ckpt) != 'checkpoints':
    return None
  root = os.path.dirname(os.path.dirname(ckpt))
  found = sorted(os.path.join(root, d, CHAIN_JSON) for d in os.listdir(root)
                 if os.path.isfile(os.path.join(root, d, CHAIN_JSON)))
  if len(found) > 1:
    raise AffectJaxError(
        f'Run {root} holds several post-processing chains ({", ".join(found)}'
        '); export the model with the one it goes with: python -m '
        'affect_jax.export --workdir=RUN --output=DIR --chain=FILE, then '
        'predict --model=DIR.')
  return found[0] if found else None


def load_chain(path: str, columns: Sequence[str]
               ) -> dict[str, list[Any]]:
  """{output: [postprocess.Step]} of a chain.json, checked against outputs."""
  from affect_jax import postprocess  # pylint: disable=g-import-not-at-top
  try:
    chain = writers.read_json(path)['chain']
    steps = {name: [postprocess.Step(s['name'], float(s['value']),
                                     float(s.get('fit_ccc', np.nan)))
                    for s in c['steps']] for name, c in chain.items()}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise AffectJaxError(f'{path} is not a post-processing chain as '
                         f'affect_jax.postprocess writes it ({e!r}); run it '
                         'again.') from None
  unknown = sorted(set(steps) - set(columns))
  if unknown:
    raise AffectJaxError(
        f'{path} is a chain for {", ".join(sorted(steps))} but the model '
        f'predicts {", ".join(columns)}; it belongs to another model: '
        'export the model with its own chain.')
  for name, chain in steps.items():
    for s in chain:
      if s.name not in postprocess.STEPS:
        raise AffectJaxError(f'{path}: unknown step {s.name!r} for {name}; '
                             f'the steps are {postprocess.STEPS}.')
  return steps


def whole_video(time: np.ndarray, face: np.ndarray, outputs: np.ndarray,
                columns: Sequence[str], fill: str = 'none',
                chain: dict[str, list[Any]] | None = None,
                chain_fps: float | None = None, smooth_s: float = 0.0
                ) -> np.ndarray:
  """The whole-video options on a file's rows, each face on its own.

  Per face id (all rows when `face` is all -1: the largest face), in this
  order: `fill` (fill_missing), the post-processing `chain` (its steps in
  the video's seconds: the median filter and shift on each run of frames
  with predictions, centring and scaling over the whole video), then a
  centred median filter of `smooth_s` seconds (postprocess.median_filter,
  the chain's own filter, rounded to an odd number of frames at the
  video's median frame rate) on each run of frames with predictions.

  Returns:
    float [N, K]: `outputs` after the options (NaN: no prediction).
  """
  from affect_jax import postprocess  # pylint: disable=g-import-not-at-top
  out = np.array(outputs, np.float64)
  frames = np.unique(time)
  fps = (postprocess.frame_rate(frames, np.zeros(len(frames)))
         if len(frames) > 1 else None)
  ids = [-1] if (face < 0).all() else [k for k in np.unique(face) if k >= 0]
  for k in ids:
    rows = np.flatnonzero(face == k) if k >= 0 else np.arange(len(face))
    series = fill_missing(time[rows], out[rows], fill)
    parts = runs(np.isfinite(series).all(1))
    for j, name in enumerate(columns):
      if chain and name in chain:
        done = postprocess.apply_chain([series[p, j] for p in parts],
                                       chain[name], fps or chain_fps)
        for p, s in zip(parts, done):
          series[p, j] = s
      if smooth_s > 0 and fps:
        w = postprocess.seconds_to_frames(smooth_s, fps, odd=True)
        for p in parts:
          series[p, j] = postprocess.median_filter(series[p, j], w)
    out[rows] = series
  return out


class Runner:
  """A loaded model and its preprocessing, predicting file after file."""

  def __init__(self, model: str, batch_size: int = 2,
               predict_without_face: bool = False, fill: str = 'none',
               smooth: float = 0.0, postprocess: bool = False,
               serial: bool = False, **face_options):
    """`face_options`: `Preprocess`'s detect_every, track, detect_max_side.

    Args:
      serial: decode, find faces and run the model one after the other in
        this thread (--serial) instead of as a pipeline of threads
        (`prefetch`); the same CSV either way, byte for byte.
      predict_without_face: frames where no face was found get the model's
        prediction too (of the whole frame, or of the last box while the
        tracker bridges a gap), has_face=0; by default they are empty.
      fill, smooth, postprocess: the whole-video options (`whole_video`):
        --fill_missing, --smooth seconds, and the model's own
        post-processing chain (`find_chain`).
    """
    from affect_jax import inference  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    if fill not in FILL_MISSING:
      raise AffectJaxError(f'--fill_missing={fill!r} is not one of '
                           f'{", ".join(FILL_MISSING)}.')
    if not smooth >= 0:
      raise AffectJaxError(f'--smooth={smooth} is out of range: seconds, '
                           '>= 0 (0: off).')
    self.predictor = inference.Predictor.load(check_model_dir(model))
    meta = self.predictor.meta
    self.preprocess = Preprocess(meta, **face_options)
    self.window = int(meta['input']['window'])
    d = jax.device_count()
    self.batch_size = max(1, -(-int(batch_size) // d)) * d
    self.columns = self.predictor.task.columns(self.predictor.output_names)
    self.serial = serial
    # Crops at the model's size waiting for it: one batch's new frames, so
    # face finding goes on while the model runs a batch.
    self._ahead = max(8, self.batch_size * max(1, self.window // 2))
    self.predict_without_face = predict_without_face
    self.fill, self.smooth = fill, float(smooth)
    self.chain, self.chain_fps = None, None
    if postprocess:
      path = find_chain(model)
      if path is None:
        raise AffectJaxError(
            f'--postprocess: model {model} carries no post-processing chain '
            f'(no {CHAIN_JSON} in its folder or its run\'s stage folders). '
            'Fit one on the run\'s validation predictions with python -m '
            'affect_jax.postprocess --workdir=RUN (or an experiment\'s '
            'postprocess stage) and export the model again, or drop '
            '--postprocess.')
      self.chain = load_chain(path, [n for n, _ in self.columns])
      self.chain_fps = float(writers.read_json(path).get('fps') or 25.0)
      self.chain_path = path
    self.synthetic = self.preprocess.synthetic
    if self.synthetic:
      print(f'warning: model {model} was {SYNTHETIC_WARNING} (the quick '
            'start\'s dataset); train on a licensed dataset for real '
            'predictions.', file=sys.stderr, flush=True)

  def _stage(self, items: Iterable[Any], depth: int, name: str
             ) -> Iterable[Any]:
    """`items` as a pipeline stage of its own (`prefetch`), unless serial."""
    return items if self.serial else prefetch(items, depth, name)

  def _outputs(self, logits: np.ndarray) -> np.ndarray:
    act = np.asarray(self.predictor.task.activation(logits[None]))[0]
    return np.array([act[k] for _, k in self.columns], np.float64)

  def predict_file(self, path: str, output: str,
                   progress: bool | Callable[[int, int | None], None] = True,
                   all_faces: bool = False,
                   overlay: str | None = None) -> Result:
    """Predicts one video or image into the CSV `output`.

    Args:
      progress: True: a progress line on stderr; a function: called with
        (frames done, frames the header declares or None) as they are done.
      all_faces: one row per face found in each frame, with a `face` id
        tracked across frames, instead of the largest face's one row.
      overlay: also write the video (an image: the image) with each face's
        box and its predictions drawn (affect_jax.overlay).

    Raises:
      AffectJaxError: the file is missing or unreadable; for a video that
        breaks or ends early, after writing the frames that decoded.
    """
    from tfds_builders.core import video  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(path):
      raise AffectJaxError(f'Input {path} does not exist or is not a file; '
                           'pass a video, an image or a folder of them.')
    if all_faces and self.fill != 'none':
      raise AffectJaxError(_FILL_ALL_FACES)
    names = [name for name, _ in self.columns]
    header = ['frame', 'time_s', *(['face'] if all_faces else []),
              'has_face', *BOX_COLUMNS, *names]
    is_image = path.lower().endswith(IMAGE_EXTENSIONS)
    if overlay:
      overlay_lib.check_path(overlay, is_image)
    start = time.perf_counter()
    broken: list[AffectJaxError] = []
    if is_image:
      images = iter([(0, 0.0, video.read_image(path))])
      total = 1
    else:
      total = video.probe(path, _FIX).frames

      def decoded():
        try:
          for f in video.iter_frames(path, _FIX):
            yield f.index, f.time, f.image
        except AffectJaxError as e:
          broken.append(e)

      # Full-size frames: a few decoded ahead.
      images = self._stage(decoded(), 4, 'decode')
    predicted = (self._all_faces if all_faces else self._largest_face)(
        images, is_image)
    bar = Progress(os.path.basename(path), total) if progress is True else None
    # A few numbers per row (not frames): the whole-video options need them.
    rows = _Rows(len(names))
    frames, last, with_face = 0, (0, 0.0), 0
    try:
      for index, time_s, faces in predicted:
        # A frame without a face is one row with empty predictions.
        for face_id, has_face, box, logits in faces or [(None, False, None,
                                                         None)]:
          rows.add(index, time_s, -1 if face_id is None else face_id,
                   has_face, box,
                   self._outputs(logits) if logits is not None else None)
        with_face += any(has for _, has, _, _ in faces)
        frames, last = frames + 1, (index, time_s)
        if bar:
          bar.update(frames)
        elif progress:
          progress(frames, total)
    finally:  # The pipeline's threads stop here, the last stage first.
      predicted.close()
      getattr(images, 'close', lambda: None)()
    if broken and not frames:
      raise broken[0]
    fps = bar.done() if bar else frames / max(time.perf_counter() - start,
                                               1e-9)
    table = rows.array()
    n = len(table)
    face_ids = table[:, 2].astype(np.int64)
    result = Result(
        output, n, fps, table[:, 1].copy(), table[:, 3] > 0,
        table[:, 8:].copy(), names, is_image,
        face_ids if all_faces else None, table[:, 0].astype(np.int64),
        table[:, 4:8].copy(), self.synthetic, frames=frames,
        face_fraction=with_face / max(frames, 1))
    del table
    result.outputs = whole_video(
        result.time, face_ids, result.outputs, names, self.fill,
        self.chain, self.chain_fps, self.smooth)
    self._write_csv(result, header, all_faces)
    if overlay:
      result.overlay = overlay_lib.write(
          path, overlay, result, SYNTHETIC_WARNING if self.synthetic else '')
    if broken:
      raise AffectJaxError(
          f'{broken[0]} Decoding stopped after frame {last[0]} '
          f'(t={last[1]:.3f} s): {output} holds the predictions of the '
          f'{frames} frames that decoded.')
    return result

  def _write_csv(self, r: Result, header: Sequence[str],
                 all_faces: bool) -> None:
    with writers.atomic_open(r.csv, newline='') as csv:
      if r.synthetic:
        csv.write(f'# warning: model {SYNTHETIC_WARNING}\n')
      csv.write(_line(header))
      for i in range(r.rows):
        face = [None if r.face[i] < 0 else r.face[i]] if all_faces else []
        box = [None] * 4 if np.isnan(r.box[i]).any() else r.box[i]
        values = [None if np.isnan(v) else v for v in r.outputs[i]]
        csv.write(_line([r.frame[i], r.time[i], *face, int(r.has_face[i]),
                         *box, *values]))

  def _keep(self, f: ModelFrame) -> bool:
    return f.has_face or self.predict_without_face

  def _largest_face(self, images, is_image: bool):
    """(index, time, [(None, has_face, box, logits)] or []) per frame."""
    tracker = self.preprocess.tracker()
    frames = self._stage(
        (self.preprocess(i, t, image, tracker) for i, t, image in images),
        self._ahead, 'faces')
    args = (self.window, self.batch_size, self.preprocess.image_size)
    if is_image:
      stream = ((f, predict_image(self.predictor.logits, f, *args))
                for f in frames)
    else:
      stream = predict_stream(self.predictor.logits, frames, *args)
    for f, logits in stream:
      yield f.index, f.time, ([(None, f.has_face, f.box, logits)]
                              if self._keep(f) else [])

  def _all_faces(self, images, is_image: bool):
    """(index, time, [(face id, has_face, box, logits)]) per frame."""
    if self.preprocess.whole_frame:  # One picture a frame: face 0.
      for i, t, faces in self._largest_face(images, is_image):
        yield i, t, [(0, has_face, box, logits)
                     for _, has_face, box, logits in faces]
      return
    tracker = self.preprocess.tracker(all_faces=True)
    tracked = self._stage(((i, t, self.preprocess.faces(i, t, image, tracker))
                           for i, t, image in images), self._ahead, 'faces')
    args = (self.window, self.batch_size, self.preprocess.image_size)
    if is_image:  # One frame: no track to follow.
      for i, t, faces in tracked:
        yield i, t, [(k, f.has_face, f.box,
                      predict_image(self.predictor.logits, f, *args))
                     for k, f in faces if self._keep(f)]
      return
    for i, t, faces in predict_tracks(self.predictor.logits, tracked, *args,
                                      keep_missed=self.predict_without_face):
      yield i, t, [(k, f.has_face, f.box, logits) for k, f, logits in faces]


_FILL_ALL_FACES = (
    '--fill_missing fills the frames where the largest face was not seen; '
    'with --all_faces a face has rows only where it was tracked: drop '
    '--fill_missing or --all_faces.')


def check_model_dir(path: str) -> str:
  """`path` if it holds a best checkpoint, else one error saying what it is."""
  if not os.path.exists(path):
    raise AffectJaxError(f'--model {path} does not exist; pass a training '
                         'workdir or a folder written by affect_jax.export.')
  found = checkpointing.find_checkpoints(path)
  if not os.path.isdir(os.path.join(found, 'best')):
    raise AffectJaxError(
        f'{path} holds no trained model (no <stage>/checkpoints/best): pass '
        'a workdir whose training stage has evaluated at least once, or a '
        'folder written by python -m affect_jax.export.')
  return path


def list_inputs(folder: str) -> list[str]:
  """The videos and images of a folder (not recursive), sorted by name."""
  files = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                 if n.lower().endswith(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS))
  if not files:
    raise AffectJaxError(
        f'Folder {folder} holds no video or image (extensions '
        f'{", ".join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)}).')
  check_stems(files, f'Folder {folder}')
  return files


def check_stems(files: Sequence[str], where: str) -> None:
  """Refuses two inputs that would write the same `<stem>.csv`."""
  stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
  seen: set[str] = set()
  twice = sorted({s for s in stems if s in seen or seen.add(s)})
  if twice:
    raise AffectJaxError(
        f'{where} holds several files named {twice[0]!r} (different '
        'extensions or folders) that would write the same CSV; rename one.')


def predict_and_plot(runner: Runner, path: str, output: str,
                     progress: bool | Callable[[int, int | None], None],
                     all_faces: bool, overlay: str | None,
                     plot: str | None) -> Result:
  """`runner.predict_file`, then the plot of its predictions if asked."""
  result = runner.predict_file(path, output, progress, all_faces, overlay)
  if plot:
    from affect_jax import plots  # pylint: disable=g-import-not-at-top
    plots.prediction_plot(
        result.time, result.has_face, result.outputs, result.columns, plot,
        title=os.path.basename(path) + (
            f' (model {SYNTHETIC_WARNING})' if result.synthetic else ''),
        is_image=result.is_image, face=result.face)
  return result


def predict(model: str, input_path: str, output: str,
            plot: str | None = None, batch_size: int = 2,
            progress: bool = True, all_faces: bool = False,
            overlay: str | None = None, predict_without_face: bool = False,
            fill_missing: str = 'none', smooth: float = 0.0,
            postprocess: bool = False, workers: int = 1,
            retry_failed: bool = False, serial: bool = False,
            **face_options) -> list[Any]:
  """The command: predicts a file, or every file of a folder or list.

  `input_path`: a video or image; a folder; or `@LIST` (a file naming one
  input a line). A folder or list goes through `predict_folder.run`:
  `workers` processes, resumable (`OUT/predict_log.jsonl`), failures
  tabled at the end.
  `all_faces`: one row per face found, tracked across frames (`face` id).
  `overlay`: the video (or image) with boxes and predictions drawn; for a
  folder, a folder of `<file stem>.mp4` (`.png` for an image).
  `predict_without_face`, `fill_missing`, `smooth`, `postprocess`: what
  frames without a face get, and the whole-video options (`Runner`).
  `serial`: no pipeline threads (`Runner`).
  `face_options`: detect_every, track, detect_max_side (`Preprocess`; None:
  the default, detection on every frame at full resolution).

  Returns:
    A file's `Result`; for a folder or list, the `predict_folder.Summary`
    of each file predicted by this run.

  Raises:
    AffectJaxError: the first problem; for a folder, after predicting the
      other files, naming every file that failed.
  """
  from affect_jax import predict_folder  # pylint: disable=g-import-not-at-top
  listed = input_path.startswith('@')
  if listed:
    files = predict_folder.read_list(input_path[1:])
  elif not os.path.exists(input_path):
    raise AffectJaxError(f'Input {input_path} does not exist; pass a video, '
                         'an image, a folder of them or @LIST.txt.')
  many = listed or os.path.isdir(input_path)
  if many and not listed:
    files = list_inputs(input_path)
  if many and output.lower().endswith('.csv'):
    raise AffectJaxError(f'--input {input_path} is a folder or list: '
                         f'--output must be a folder for its CSVs, not '
                         f'{output}.')
  if many and overlay and overlay.lower().endswith(VIDEO_EXTENSIONS +
                                                   IMAGE_EXTENSIONS):
    raise AffectJaxError(f'--input {input_path} is a folder or list: '
                         '--overlay must be a folder for its videos, not '
                         f'{overlay}.')
  if all_faces and fill_missing != 'none':
    raise AffectJaxError(_FILL_ALL_FACES)
  kwargs = dict(model=model, batch_size=batch_size,
                predict_without_face=predict_without_face, fill=fill_missing,
                smooth=smooth, postprocess=postprocess, serial=serial,
                **face_options)
  runner = None
  if not many or workers == 1:
    runner = Runner(**kwargs)
    runner.preprocess.tracker(all_faces)  # Options refused before any file.
  else:
    check_model_dir(model)
  if not many:
    return [predict_and_plot(runner, input_path, output, progress, all_faces,
                             overlay, plot)]
  return predict_folder.run(files, output, kwargs, all_faces, plot,
                            overlay, workers, retry_failed, progress, runner)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  for name in ('model', 'input', 'output'):
    if not getattr(FLAGS, name):
      raise AffectJaxError(f'--{name} is required (see --help).')
  predict(FLAGS.model, FLAGS.input, FLAGS.output, FLAGS.plot,
          FLAGS.batch_size, all_faces=FLAGS.all_faces,
          overlay=FLAGS.overlay,
          predict_without_face=FLAGS.predict_without_face,
          fill_missing=FLAGS.fill_missing, smooth=FLAGS.smooth,
          postprocess=FLAGS.postprocess,
          detect_every=FLAGS.detect_every, track=FLAGS.track,
          detect_max_side=FLAGS.detect_max_side, workers=FLAGS.workers,
          retry_failed=FLAGS.retry_failed, serial=FLAGS.serial)


def define_flags() -> None:
  """The command's flags (defined only when it runs: no clash on import)."""
  flags.DEFINE_string('model', None, 'Training workdir, stage or checkpoint '
                      'folder, or a model folder from affect_jax.export.')
  flags.DEFINE_string('input', None, 'A video, an image, or a folder of them '
                      '(one CSV per file).')
  flags.DEFINE_string('output', None, 'The CSV to write; for a folder --input, '
                      'the folder to write <file stem>.csv into.')
  flags.DEFINE_string('plot', None, 'Optional PNG of the predictions over time '
                      '(an image: a point on the valence-arousal plane); for a '
                      'folder --input, a folder of <file stem>.png.')
  flags.DEFINE_integer('batch_size', 2, 'Windows per network call (rounded up '
                       'to a multiple of the device count); raise it on a GPU.')
  flags.DEFINE_bool('all_faces', False, 'One row per face found in each frame '
                    '(a `face` column: ids tracked across frames, each face '
                    'predicted on its own crops and windows) instead of the '
                    "largest face's one row. A model trained on whole frames "
                    '(no face detector in its dataset) sees one face: rows as '
                    'without the flag, with face 0.')
  flags.DEFINE_string('overlay', None, 'Optional copy of the video (H.264 '
                      '.mp4) with each face\'s box and a valence/arousal '
                      'gauge (class models: the class bars) drawn; an image '
                      'gives a .png/.jpg; for a folder --input, a folder of '
                      '<file stem>.mp4 / .png.')
  flags.DEFINE_bool('predict_without_face', False, 'Write the model\'s '
                    'prediction on frames where no face was found too '
                    '(has_face=0; the whole frame, or the last box while a '
                    'missed face is bridged); by default they are empty.')
  flags.DEFINE_enum('fill_missing', 'none', list(FILL_MISSING),
                    'Frames without a face (empty predictions): linear '
                    'interpolates in time between the predictions either '
                    'side, hold repeats the last one (both repeat the first '
                    '/ last one before / after them), none leaves them '
                    'empty. has_face stays 0. Not with --all_faces.')
  flags.DEFINE_float('smooth', 0.0, 'Seconds of a centred running MEDIAN '
                     'filter (affect_jax.postprocess.median_filter, the '
                     'tzirakis2019 chain\'s filter; rounded to an odd number '
                     'of frames) on each output, per face, within each run '
                     'of frames with predictions; 0: off.')
  flags.DEFINE_bool('postprocess', False, 'Apply the post-processing chain '
                    '(median, centre, scale, shift) the model\'s run chose on '
                    'its validation set (chain.json: a postprocess stage, or '
                    'carried by an exported model folder); an error if the '
                    'model has none.')
  flags.DEFINE_integer('workers', 1, 'For a folder or @list --input: '
                       'processes predicting files side by side, each with '
                       'the model loaded once (docs/predict.md, "Folders of '
                       'thousands of videos").')
  flags.DEFINE_bool('retry_failed', False, 'For a folder or @list --input: '
                    'predict again the files an earlier run into the same '
                    '--output recorded as failed (by default they are only '
                    'named again, unless they changed).')
  flags.DEFINE_bool('serial', False, 'Decode, find faces and run the model '
                    'one after the other in one thread instead of as a '
                    'pipeline of threads (the same CSV; slower).')
  # The builders' face options (affect_jax.prepare), by default off here:
  # the detector on every frame at full resolution.
  flags.DEFINE_integer('detect_every', None, 'Run the face detector on every '
                       'N-th frame only (default 1: every frame); not with '
                       '--all_faces.')
  flags.DEFINE_enum('track', None, ['hold', 'correlation'],
                    'Frames between two detections (--detect_every > 1): hold '
                    'reuses the last detection (default), correlation follows '
                    "the face with dlib's correlation tracker.")
  flags.DEFINE_integer('detect_max_side', None, 'Detect on the frame scaled '
                       'down so its long side is at most this many pixels '
                       '(>= 64; faster, misses faces under ~80 px there); '
                       'default 0: the full frame.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
