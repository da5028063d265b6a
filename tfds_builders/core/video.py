"""Video decoding and encoding with PyAV, one frame at a time.

  for frame in iter_frames('clip.mp4'):
    frame.index, frame.time, frame.image  # int, seconds, uint8 [H, W, 3]
  for frame in iter_images(['f/00000.png', None, 'f/00002.png'], fps=25):
    ...  # The same for a folder of frames; None: a frame without an image.

Frames are streamed: a five-minute 640x480 video is never held in memory.

A video that ends early is an error, never a short dataset. An interrupted
download of an .mp4/.mov whose index is at the end ("moov at the end") does
not open at all; one whose index is at the start ("faststart") or an .avi
(header at the start, index at the end) opens and decodes its first part,
then stops, often without an error from FFmpeg. So after the last frame
`iter_frames` compares what it decoded with what the container declares for
the video stream (`probe`: frame count and duration, where present) and
raises when it is short by more than `allowed_shortfall(declared)`:
max(TRUNCATION_FRAMES = 5, TRUNCATION_FRACTION = 2% of the declared count),
in frames and, for the duration, in seconds (the same rule times the frame
period). Intact files pass: some decode a few frames fewer than their header
claims (edit lists, B-frame delay, a miscounted .avi header; e.g. a clip of
98 declared frames that decodes 95). Decoding more than declared is fine.
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


# See the module docstring: how far short of its header a video may end.
TRUNCATION_FRAMES = 5
TRUNCATION_FRACTION = 0.02


def allowed_shortfall(declared: float) -> float:
  """Frames a video may decode fewer than the `declared` count and be intact."""
  return max(TRUNCATION_FRAMES, TRUNCATION_FRACTION * declared)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What a video's container declares about its first video stream.

  Attributes:
    path: the file.
    fps: average frame rate (0 where the container does not say).
    frames: declared frame count, or None where the container has none.
    duration: declared duration of the video stream in seconds, or None.
  """
  path: str
  fps: float
  frames: int | None
  duration: float | None


# How to fix a video that is cut short or broken, for every message.
_FIX = ('re-download or re-copy it, or build with --skip_broken '
        '(skip_broken=True) to leave it out')


def _require_file(path: str, kind: str) -> None:
  if not os.path.isfile(path):
    raise AffectJaxError(f'{kind} {path} does not exist; check --manual_dir '
                         'and the layout in docs/data_formats.md.')


def _open_video(path: str, fix: str = _FIX):
  """(container, its first video stream) of `path`; the caller closes it.

  Raises:
    AffectJaxError: the file is missing, not a video or corrupt.
  """
  _require_file(path, 'Video')
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError) as e:
    raise AffectJaxError(
        f'Cannot open video {path}: {e}. The file is corrupt, truncated or '
        f'not a video: {fix}.') from e
  if not container.streams.video:
    container.close()
    raise AffectJaxError(f'{path} has no video stream; replace the file.')
  return container, container.streams.video[0]


def _info(path: str, stream) -> VideoInfo:
  duration = None
  if stream.duration and stream.time_base:
    duration = float(stream.duration * stream.time_base)
  return VideoInfo(path, float(stream.average_rate or stream.guessed_rate or 0),
                   int(stream.frames) or None, duration)


def check_complete(info: VideoInfo, num_frames: int,
                   end_time: float | None, fix: str = _FIX) -> None:
  """Raises unless a decode of `info.path` reached the end its header declares.

  Args:
    info: `probe(path)`.
    num_frames: frames decoded.
    end_time: presentation time of the last decoded frame plus one frame
      period (seconds), or None.

  Raises:
    AffectJaxError: fewer frames, or an earlier end, than declared beyond
      `allowed_shortfall` (module docstring), naming the file, what was
      decoded and what was expected.
  """
  period = 1 / info.fps if info.fps > 0 else None
  if info.frames and info.frames - num_frames > allowed_shortfall(info.frames):
    got = f'{num_frames} frames'
    want = f'{info.frames} frames'
  elif (info.duration and end_time is not None and period and
        # In frame periods; 1e-6: times are rounded to the stream's base.
        (info.duration - end_time) / period > allowed_shortfall(
            info.duration / period) + 1e-6):
    got = f'{num_frames} frames ({end_time:.2f} s)'
    want = f'{info.duration:.2f} s'
  else:
    return
  raise AffectJaxError(
      f'Video {info.path} ends early: decoded {got} but its header declares '
      f'{want}. The file is truncated (an interrupted download or copy): '
      f'{fix}.')


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
  """`image` as displayed: turned counterclockwise by `rotation` degrees.

  `rotation` is the angle of a container's display matrix (PyAV's
  `VideoFrame.rotation`, a multiple of 90): a phone held upright stores
  landscape pixels with -90, to be shown turned clockwise.
  """
  k = round(rotation / 90) % 4
  return np.ascontiguousarray(np.rot90(image, k)) if k else image


def iter_frames(path: str, fix: str = _FIX) -> Iterator[Frame]:
  """Yields the frames of the first video stream of `path`.

  Times are the container's presentation timestamps (not index / fps), so a
  variable-frame-rate video still lines up with time-stamped labels. Frames
  come upright: rotation metadata (a display matrix) is applied. After the
  last frame the decode is checked against the header (`check_complete`,
  module docstring): a truncated file raises instead of ending quietly.

  Args:
    path: the video file.
    fix: what to do about a broken file, for the messages (the builders
      suggest --skip_broken).

  Raises:
    AffectJaxError: the file is missing, not a video, corrupt, or ends
      early (truncated), naming the file, the frames decoded and expected,
      and the fix.
  """
  container, stream = _open_video(path, fix)
  info = _info(path, stream)
  index, end = -1, None
  with container:
    # Frame-level threads: several times faster on multi-core machines.
    stream.thread_type = 'AUTO'
    start = stream.start_time or 0
    base = stream.time_base
    rate = info.fps or 25.0
    try:
      for index, frame in enumerate(container.decode(stream)):
        if frame.pts is not None and base is not None:
          t = float((frame.pts - start) * base)
        else:  # Raw streams without timestamps: fall back to the frame rate.
          t = index / rate
        end = t + 1 / rate if end is None else max(end, t + 1 / rate)
        yield Frame(index, t, upright(frame.to_ndarray(format='rgb24'),
                                      frame.rotation))
    except av.error.FFmpegError as e:
      of = f' of {info.frames}' if info.frames else ''
      raise AffectJaxError(
          f'Decoding video {path} failed after {index + 1}{of} frames: {e}. '
          f'The file is corrupt or truncated: {fix}.') from e
  if index < 0:
    raise AffectJaxError(f'Video {path} has no decodable frames; the file is '
                         f'corrupt or truncated: {fix}.')
  check_complete(info, index + 1, end, fix)


def probe(path: str, fix: str = _FIX) -> VideoInfo:
  """Checks that `path` opens as a video without decoding it.

  Cheap (reads the container header only), so a builder can reject a
  truncated or missing file before spending hours decoding the others.
  Truncated .mp4/.mov files whose index is at the end fail here; a
  truncated faststart .mp4 or an .avi opens, and `iter_frames` finds that
  it ends early.

  Returns:
    What the header declares (frame rate, frame count, duration).

  Raises:
    AffectJaxError: the file is missing, not a video or corrupt.
  """
  container, stream = _open_video(path, fix)
  with container:
    return _info(path, stream)


def write_video(path: str, images: Iterable[np.ndarray], fps: float,
                codec: str = 'libx264', quality: int = 23,
                times: Sequence[float] | None = None,
                options: dict[str, str] | None = None,
                bit_rate: int | None = None) -> int:
  """Encodes uint8 [H, W, 3] RGB images (even H and W) to `path`; returns count.

  Args:
    path: output file (.mp4, .mov, .avi: the container follows the name).
    images: frames, consumed one at a time.
    fps: frame rate; timestamps are exactly i / fps unless `times` is given.
    codec: an FFmpeg encoder in PyAV's build ('libx264', 'mpeg4').
    quality: x264 CRF (lower = better).
    times: presentation time of each frame in seconds, increasing: a
      variable-frame-rate video (millisecond resolution).
    options: muxer options, e.g. {'movflags': 'faststart'} to put an
      .mp4/.mov index at the start of the file.
    bit_rate: target bits per second of an encoder without CRF ('mpeg4';
      FFmpeg's default is low enough to blur faces after the first
      keyframe interval).
  """
  from fractions import Fraction  # pylint: disable=g-import-not-at-top
  rate = Fraction(fps).limit_denominator(1001)
  n = 0
  with av.open(path, mode='w', options=options or {}) as container:
    stream = container.add_stream(codec, rate=rate)
    stream.pix_fmt = 'yuv420p'
    if times is not None:
      stream.codec_context.time_base = Fraction(1, 1000)
    if codec == 'libx264':
      stream.options = {'crf': str(quality), 'preset': 'veryfast'}
    if bit_rate:
      stream.bit_rate = int(bit_rate)
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
                         'the layout in docs/data_formats.md.')
  for path in present:
    _require_file(path, 'Image')
  try:
    with Image.open(present[0]):
      pass
  except _IMAGE_ERRORS as e:
    raise AffectJaxError(
        f'Cannot open image {present[0]}: {e}. The file is corrupt or '
        'truncated; re-copy or re-extract it.') from e
