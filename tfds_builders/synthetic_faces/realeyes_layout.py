"""Writes the synthetic dataset as RealEyes-layout files (.mp4 + CSVs).

  python -m tfds_builders.synthetic_faces.realeyes_layout OUT_DIR \
      --num_subjects=10 --frames_per_video=300 --width=640 --height=480
  python -m affect_jax.prepare --dataset=realeyes --manual_dir=OUT_DIR

This exercises the real-data path end to end (PyAV decoding, face detection
and cropping, label matching) on data anyone can generate. Subjects, videos
and labels come from the same seeds and ids as the `synthetic_faces` builder
(`s0000_v00`, ...); emotions are `faces.emotions_from_va` of each frame.
"""

import csv
import os

from absl import app
from absl import flags
import numpy as np

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders.core import video as video_lib
from tfds_builders.synthetic_faces import faces
from tfds_builders.synthetic_faces import synthetic_faces as sf


def write_labels(path: str, emotions: np.ndarray) -> None:
  """Writes a labels CSV (`frame,neutral,...,other`) of 0/1 [T, 8] emotions."""
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(('frame',) + F.REALEYES_EMOTIONS)
    for i, row in enumerate(np.asarray(emotions)):
      w.writerow([i] + [int(x) for x in row])


def write_realeyes_layout(out_dir: str, num_subjects: int = 3,
                          videos_per_subject: int = 1,
                          frames_per_video: int = 20, fps: float = 30.0,
                          height: int = 480, width: int = 640, seed: int = 0,
                          codec: str = 'libx264') -> list[str]:
  """Renders synthetic subjects into `out_dir` in the RealEyes layout.

  Args:
    out_dir: created if missing; existing files of the same names are
      overwritten.
    num_subjects, videos_per_subject, frames_per_video: dataset size.
    fps: frame rate of the .mp4 files (timestamps exactly i / fps).
    height, width: frame size in pixels (even numbers, >= 16).
    seed: as `SyntheticFacesConfig.seed`.
    codec: PyAV encoder.

  Returns:
    The video ids written, sorted.
  """
  if height % 2 or width % 2 or min(height, width) < 16:
    raise AffectJaxError(f'realeyes_layout: height={height}, width={width} '
                         'must be even and >= 16 (yuv420p video).')
  for d in ('videos', 'labels'):
    os.makedirs(os.path.join(out_dir, d), exist_ok=True)
  ids = []
  for s in range(num_subjects):
    subject = faces.make_subject(sf.subject_rng(seed, s))
    for v in range(videos_per_subject):
      vid = sf.video_id(s, v)
      video = faces.make_video(sf.video_rng(seed, s, v), frames_per_video,
                               fps)
      frames = (faces.render_frame(subject, video, i, (height, width))[0]
                for i in range(frames_per_video))
      video_lib.write_video(os.path.join(out_dir, 'videos', f'{vid}.mp4'),
                            frames, fps, codec=codec)
      emotions = faces.emotions_from_va(video.valence, video.arousal)
      write_labels(os.path.join(out_dir, 'labels', f'{vid}.csv'),
                   emotions[:frames_per_video] > 0.5)
      ids.append(vid)
  with open(os.path.join(out_dir, 'subjects.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(('video_id', 'subject_id'))
    for vid in sorted(ids):
      w.writerow((vid, vid.split('_')[0]))
  return sorted(ids)


def labels_of(num_subjects: int, videos_per_subject: int,
              frames_per_video: int, fps: float, seed: int = 0
              ) -> dict[str, np.ndarray]:
  """{video_id: float32 [T, 8] emotions} as written (for tests)."""
  out = {}
  for s in range(num_subjects):
    for v in range(videos_per_subject):
      video = faces.make_video(sf.video_rng(seed, s, v), frames_per_video,
                               fps)
      out[sf.video_id(s, v)] = (faces.emotions_from_va(
          video.valence, video.arousal) > 0.5).astype(np.float32)
  return out


# Flag defaults of the command line (flags are defined only when run as a
# script, so importing this module does not add absl flags to other programs).
_CLI_DEFAULTS = dict(num_subjects=10, videos_per_subject=2,
                     frames_per_video=300, fps=30.0, height=480, width=640,
                     seed=0, codec='libx264')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m '
                         'tfds_builders.synthetic_faces.realeyes_layout '
                         'OUT_DIR [--num_subjects=.. --width=.. ...]')
  ids = write_realeyes_layout(
      argv[1], **{k: getattr(flags.FLAGS, k) for k in _CLI_DEFAULTS})
  print(f'Wrote {len(ids)} videos to {argv[1]}.')


if __name__ == '__main__':
  for _name, _default in _CLI_DEFAULTS.items():
    _define = {float: flags.DEFINE_float, int: flags.DEFINE_integer,
               str: flags.DEFINE_string}[type(_default)]
    _define(_name, _default, f'{_name} of the written dataset.')
  app.run(main)
