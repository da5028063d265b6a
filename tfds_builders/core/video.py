"""Video decoding and encoding with PyAV, one frame at a time.

  for frame in iter_frames('clip.mp4'):
    frame.index, frame.time, frame.image  # int, seconds, uint8 [H, W, 3]
  for frame in iter_images(['f/00000.png', None, 'f/00002.png'], fps=25):
    ...  # The same for a folder of frames; None: a frame without an image.

Frames are streamed: a five-minute 640x480 video is never held in memory.
"""

import dataclasses
import os
from typing import Iterable, Iterator, Sequence

import av
import numpy as np
from PIL import Image

from affect_jax.errors import AffectJaxError


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
  """One decoded frame.

  Attributes:
    index: 0-based position in decode (presentation) order.
    time: presentation time in seconds from the start of the stream.
    image: uint8 [H, W, 3] RGB; None for a frame of an image sequence that
      has no image (e.g. Aff-Wild2's aligner found no face there).
  """
  index: int
  time: float
  image: np.ndarray | None


def _require_file(path: str, kind: str) -> None:
  if not os.path.isfile(path):
    raise AffectJaxError(f'{kind} {path} does not exist; check --manual_dir '
                         'and the layout in DATA_FORMATS.md.')


def _open_video(path: str):
  """(container, its first video stream) of `path`; the caller closes it.

  Raises:
    AffectJaxError: the file is missing, not a video or corrupt.
  """
  _require_file(path, 'Video')
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError) as e:
    raise AffectJaxError(
        f'Cannot open video {path}: {e}. The file is corrupt or truncated '
        '(re-copy or re-download it) or not a video.') from e
  if not container.streams.video:
    container.close()
    raise AffectJaxError(f'{path} has no video stream; replace the file.')
  return container, container.streams.video[0]


def iter_frames(path: str) -> Iterator[Frame]:
  """Yields the frames of the first video stream of `path`.

  Times are the container's presentation timestamps (not index / fps), so a
  variable-frame-rate video still lines up with time-stamped labels.

  Raises:
    AffectJaxError: the file is missing, not a video, or corrupt (truncated
      downloads typically fail here), naming the file.
  """
  container, stream = _open_video(path)
  index = -1
  with container:
    # Frame-level threads: several times faster on multi-core machines.
    stream.thread_type = 'AUTO'
    start = stream.start_time or 0
    base = stream.time_base
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    try:
      for index, frame in enumerate(container.decode(stream)):
        if frame.pts is not None and base is not None:
          t = float((frame.pts - start) * base)
        else:  # Raw streams without timestamps: fall back to the frame rate.
          t = index / rate
        yield Frame(index, t, frame.to_ndarray(format='rgb24'))
    except av.error.FFmpegError as e:
      raise AffectJaxError(
          f'Decoding video {path} failed after {index + 1} frames: {e}. The '
          'file is corrupt or truncated; re-copy or re-download it.') from e
  if index < 0:
    raise AffectJaxError(f'Video {path} has no decodable frames; the file is '
                         'corrupt or truncated, re-copy or re-download it.')


def probe(path: str) -> float:
  """Checks that `path` opens as a video without decoding it; returns its fps.

  Cheap (reads the container header only), so a builder can reject a
  truncated or missing file before spending hours decoding the others. Most
  truncated .mp4 files fail here (their index is at the end); damage inside
  the stream only shows when decoding.

  Raises:
    AffectJaxError: as `iter_frames`.
  """
  container, stream = _open_video(path)
  with container:
    return float(stream.average_rate or stream.guessed_rate or 0)


def write_video(path: str, images: Iterable[np.ndarray], fps: float,
                codec: str = 'libx264', quality: int = 23,
                times: Sequence[float] | None = None) -> int:
  """Encodes uint8 [H, W, 3] RGB images (even H and W) to `path`; returns count.

  Args:
    path: output file (.mp4).
    images: frames, consumed one at a time.
    fps: frame rate; timestamps are exactly i / fps unless `times` is given.
    codec: an FFmpeg encoder in PyAV's build ('libx264', 'mpeg4').
    quality: x264 CRF (lower = better).
    times: presentation time of each frame in seconds, increasing: a
      variable-frame-rate video (millisecond resolution).
  """
  from fractions import Fraction  # pylint: disable=g-import-not-at-top
  rate = Fraction(fps).limit_denominator(1001)
  n = 0
  with av.open(path, mode='w') as container:
    stream = container.add_stream(codec, rate=rate)
    stream.pix_fmt = 'yuv420p'
    if times is not None:
      stream.codec_context.time_base = Fraction(1, 1000)
    if codec == 'libx264':
      stream.options = {'crf': str(quality), 'preset': 'veryfast'}
    for image in images:
      if n == 0:
        stream.height, stream.width = image.shape[:2]
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image),
                                         format='rgb24')
      if times is not None:
        frame.pts = round(times[n] * 1000)
        frame.time_base = Fraction(1, 1000)
      container.mux(stream.encode(frame))
      n += 1
    container.mux(stream.encode())
  return n


VIDEO_EXTENSIONS = ('.mp4', '.avi')


def find_videos(folders: Sequence[str]) -> dict[str, str]:
  """{file stem: path} of the .mp4/.avi files (any case) in `folders`.

  Raises:
    AffectJaxError: two videos with the same stem, naming both.
  """
  out = {}
  for folder in folders:
    for name in sorted(os.listdir(folder)):
      stem, ext = os.path.splitext(name)
      if ext.lower() not in VIDEO_EXTENSIONS:
        continue
      path = os.path.join(folder, name)
      if stem in out:
        raise AffectJaxError(f'Two videos named {stem!r}: {out[stem]} and '
                             f'{path}; keep one.')
      out[stem] = path
  return out


# What PIL raises for a file that is not a readable image.
_IMAGE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


def read_image(path: str) -> np.ndarray:
  """uint8 [H, W, 3] RGB of an image file (any PIL format, grey expanded).

  Raises:
    AffectJaxError: the file is missing or cannot be decoded, naming it.
  """
  _require_file(path, 'Image')
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'))
  except _IMAGE_ERRORS as e:
    raise AffectJaxError(
        f'Cannot decode image {path}: {e}. The file is corrupt or truncated; '
        're-copy or re-extract it.') from e


def iter_images(paths: Sequence[str | None], fps: float) -> Iterator[Frame]:
  """Yields frame i of an image sequence: `paths[i]`, at time i / fps.

  Args:
    paths: one image file per frame, in order; None where the frame has no
      image (yielded with image=None).
    fps: the frame rate the images were extracted at.

  Raises:
    AffectJaxError: as `read_image`.
  """
  for index, path in enumerate(paths):
    yield Frame(index, index / fps,
                None if path is None else read_image(path))


def probe_images(paths: Sequence[str | None], where: str = '') -> None:
  """Checks that every image exists and that the first one opens.

  Only the first image's header is read (no pixel decoding: a one-image
  "video" such as an AffectNet photo would otherwise be decoded twice).

  Args:
    paths: as `iter_images`.
    where: the sequence's folder or name, for the message when it has no
      image at all.

  Raises:
    AffectJaxError: naming the first missing file, or as `read_image`.
  """
  present = [p for p in paths if p is not None]
  if not present:
    raise AffectJaxError(f'The image sequence {where} has no image; check '
                         'the layout in DATA_FORMATS.md.')
  for path in present:
    _require_file(path, 'Image')
  try:
    with Image.open(present[0]):
      pass
  except _IMAGE_ERRORS as e:
    raise AffectJaxError(
        f'Cannot open image {present[0]}: {e}. The file is corrupt or '
        'truncated; re-copy or re-extract it.') from e
