"""Frames/s and peak memory of `affect_jax.predict` on a 640x360 video.

  python benchmarks/predict_speed.py --model=quick --seconds=60
  python benchmarks/predict_speed.py --model=full --seconds=10

Writes a 30 fps 640x360 video of a drawn face (a few rendered frames, cycled)
and predicts it with an untrained network of the given size, saved as a
self-contained checkpoint:

  quick  the quick start's network (configs/realeyes.py:synthetic: ResNet-50
         layout at width 8, 48-pixel input, windows of 16) on whole frames,
         as its synthetic training data is
  full   tzirakis2019's ResNet-50 (width 64) + 2-layer LSTM 256, 150-pixel
         input from 170-pixel dlib face crops with dlib landmarks, windows
         of 150

A short clip is predicted first so that compilation is not timed. Peak RSS
is the whole process's (model, compiled code and the streaming buffers).
"""

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import features as F
from affect_jax import predict
from benchmarks.table import print_table
from configs import common
from configs import realeyes
from tests import test_predict
from tfds_builders import core


def _model(kind: str, workdir: str) -> str:
  if kind == 'quick':
    c = realeyes.get_config('synthetic')
    return test_predict.save_untrained_model(
        workdir, 'va', ('arousal', 'valence'),
        dict(test_predict.SYNTH_DATA, frame_size=64),
        model_cfg=c.model, input_cfg={
            'window': c.input.window, 'image_size': c.input.image_size,
            'resize_size': c.input.resize_size,
            'normalization': c.input.normalization})
  data = dict(test_predict.FACE_DATA, image_size=170, landmarks='dlib')
  return test_predict.save_untrained_model(
      workdir, 'va', ('arousal', 'valence'), data,
      model_cfg=common.resnet50_lstm(),
      input_cfg={'window': 150, 'image_size': 150, 'resize_size': 170,
                 'normalization': 'imagenet'})


def _video(path: str, seconds: float, fps: int = 30) -> None:
  frames = test_predict._face_frames(16, (360, 640))  # pylint: disable=protected-access
  n = int(seconds * fps)
  core.write_video(path, (frames[i % 32 if i % 32 < 16 else 31 - i % 32]
                          for i in range(n)), fps=fps)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', choices=('quick', 'full'), default='quick')
  p.add_argument('--seconds', type=float, default=10)
  p.add_argument('--batch_size', type=int, default=2)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as root:
    runner = predict.Runner(_model(args.model, os.path.join(root, 'run')),
                            args.batch_size)
    warm = os.path.join(root, 'warm.mp4')
    _video(warm, 1.0)
    runner.predict_file(warm, os.path.join(root, 'warm.csv'), progress=False)
    path = os.path.join(root, 'video.mp4')
    _video(path, args.seconds)
    t = time.perf_counter()
    result = runner.predict_file(path, os.path.join(root, 'out.csv'),
                                 progress=False)
    dt = time.perf_counter() - t
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  faces = result.has_face.mean()
  print(f'640x360 30 fps, {args.seconds:g} s; {os.cpu_count()} CPUs; '
        f'batch_size {runner.batch_size}; {F.VALENCE}/{F.AROUSAL} model')
  print_table(['model', 'frames', 's', 'frames/s', 'has_face', 'peak RSS MiB'],
              [(args.model, result.rows, dt, result.rows / dt, f'{faces:.0%}',
                f'{peak:.0f}')])


if __name__ == '__main__':
  main()
