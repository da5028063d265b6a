"""Frames/s of each stage of `affect_jax.predict` and of the whole, peak memory.

  python benchmarks/predict_speed.py                       # all models, 1 min
  python benchmarks/predict_speed.py --models=quick,paper --minutes=1,10,60 \
      --batch_sizes=1,16 --size=640x360 --fps=30
  python benchmarks/predict_speed.py --models=quick --stages=whole \
      --minutes=10,60 --size=320x240 --fps=25 --detect_every=25   # memory

Writes a video of a drawn face (tfds_builders/synthetic_faces renders, a few
cycled back and forth; H.264) of each length, and predicts it with
untrained networks (random weights: speed and memory do not depend on them),
each saved as a self-contained checkpoint with the preprocessing record its
kind of model has:

  quick           the quick start's network (configs/realeyes.py:synthetic:
                  ResNet-50 layout at width 8, 48 px, windows of 16) on
                  whole frames, as its synthetic training data is
  affwild_vgg     AffWildNet (configs/affwildnet.py: VGG-Face trunk, FC,
                  2-layer GRU 128), 96 px dlib crops (margin 0.1, no
                  landmarks), windows of 80: what the TF1 import records
  affwild_resnet  the same on a ResNet-50 trunk
  paper           tzirakis2019's ResNet-50 (width 64) + 2-layer LSTM 256,
                  150 px from 170 px dlib crops with dlib landmarks,
                  windows of 150

Columns, frames per second of the video:

  decode  PyAV decoding alone (tfds_builders.core.video.iter_frames)
  faces   face finding alone: detector/tracker, crop, landmarks, JPEG round
          trip and resize (`predict.Preprocess`) on decoded frames held in
          memory (the first --faces_frames)
  model   the network alone on batches of windows of random crops: new
          frames per call (windows overlap by half) / seconds
  whole   `predict` (its pipeline of threads) on the video, in a process of
          its own; `peak RSS` is that process's (model, compiled code,
          buffers); --serial adds the serial path's frames/s
  ratio   whole / the slowest stage (1.0: the pipeline goes at the pace of
          its slowest stage)

Compilation is not timed (a short clip goes first). The machine (CPU model,
cores, load average) is printed above the table: numbers are only
comparable on the same quiet machine.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from benchmarks import harness
from benchmarks.table import print_table

MODELS = ('quick', 'affwild_vgg', 'affwild_resnet', 'paper')


def make_model(kind: str, workdir: str) -> str:
  """An untrained model of `kind` saved as a run's best checkpoint."""
  from configs import affwildnet
  from configs import common
  from configs import realeyes
  from tests import test_predict
  if kind == 'quick':
    c = realeyes.get_config('synthetic')
    return test_predict.save_untrained_model(
        workdir, 'va', ('arousal', 'valence'),
        dict(test_predict.SYNTH_DATA, frame_size=64),
        model_cfg=c.model, input_cfg={
            'window': c.input.window, 'image_size': c.input.image_size,
            'resize_size': c.input.resize_size,
            'normalization': c.input.normalization})
  if kind in ('affwild_vgg', 'affwild_resnet'):
    from affect_jax.models import tf1_import
    cfg = affwildnet.model('vgg_face' if kind == 'affwild_vgg' else
                           'resnet50')
    cfg.use_landmarks = False  # As the released networks (TF1 import).
    size = tf1_import.IMAGE_SIZE
    data = dict(test_predict.FACE_DATA, image_size=size,
                margin=tf1_import.DEFAULT_MARGIN, landmarks='none')
    return test_predict.save_untrained_model(
        workdir, 'va', ('arousal', 'valence'), data, model_cfg=cfg,
        input_cfg={'window': tf1_import.WINDOW, 'image_size': size,
                   'resize_size': size, 'normalization': 'symmetric'})
  data = dict(test_predict.FACE_DATA, image_size=170, landmarks='dlib')
  return test_predict.save_untrained_model(
      workdir, 'va', ('arousal', 'valence'), data,
      model_cfg=common.resnet50_lstm(),
      input_cfg={'window': 150, 'image_size': 150, 'resize_size': 170,
                 'normalization': 'imagenet'})


def make_video(path: str, seconds: float, fps: float,
               size: tuple[int, int]) -> int:
  """A drawn face, 16 renders played back and forth; returns frames."""
  from tests import test_predict
  from tfds_builders import core
  frames = test_predict._face_frames(16, size)  # pylint: disable=protected-access
  n = int(round(seconds * fps))
  return core.write_video(path, (frames[i % 32 if i % 32 < 16 else 31 - i % 32]
                                 for i in range(n)), fps=fps)


def machine() -> str:
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  return f'{harness.cpu_model()}, {os.cpu_count()} cores, load {load}'


def time_decode(path: str) -> float:
  from tfds_builders.core import video
  t, n = time.perf_counter(), 0
  for _ in video.iter_frames(path):
    n += 1
  return n / (time.perf_counter() - t)


def time_faces(runner, path: str, frames: int) -> float:
  from tfds_builders.core import video
  images = []
  for f in video.iter_frames(path):
    images.append((f.index, f.time, f.image))
    if len(images) == frames:
      break
  tracker = runner.preprocess.tracker()
  runner.preprocess(*images[0], tracker)  # dlib's first call loads it.
  tracker = runner.preprocess.tracker()
  t = time.perf_counter()
  for i, s, image in images:
    runner.preprocess(i, s, image, tracker)
  return len(images) / (time.perf_counter() - t)


def time_model(runner, seconds: float = 5.0) -> float:
  from affect_jax import features as F
  b, w, s = runner.batch_size, runner.window, runner.preprocess.image_size
  rng = np.random.default_rng(0)
  batch = {F.FRAMES: rng.integers(0, 255, (b, w, s, s, 3), dtype=np.uint8),
           F.MASK: np.ones((b, w), np.float32),
           F.LANDMARKS: rng.random((b, w, F.NUM_LANDMARKS, 2)).astype(
               np.float32)}
  np.asarray(runner.predictor.logits(batch))  # Compiled here.
  t, calls = time.perf_counter(), 0
  while calls < 2 or time.perf_counter() - t < seconds:
    np.asarray(runner.predictor.logits(batch))
    calls += 1
  return calls * b * max(1, w // 2) / (time.perf_counter() - t)


def whole(model: str, video: str, warm: str, batch: int, serial: bool,
          face_options: dict) -> dict:
  """`predict` on `video` in a child process: frames/s and its peak RSS."""
  args = json.dumps({'model': model, 'video': video, 'warm': warm,
                     'batch': batch, 'serial': serial, **face_options})
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep +
             os.environ.get('PYTHONPATH', ''))
  proc = subprocess.Popen([sys.executable, __file__, '--_whole', args],
                          stdout=subprocess.PIPE, env=env, text=True)
  out = proc.stdout.read()
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    raise SystemExit(f'predict failed on {video} (exit {proc.returncode})')
  r = json.loads(out.strip().splitlines()[-1])
  r['peak_rss_mib'] = usage.ru_maxrss / 1024
  return r


def _whole_child(args: str) -> None:
  from affect_jax import predict
  a = json.loads(args)
  runner = predict.Runner(a['model'], a['batch'], serial=a['serial'],
                          detect_every=a.get('detect_every'),
                          detect_max_side=a.get('detect_max_side'))
  out = tempfile.mkdtemp()
  runner.predict_file(a['warm'], os.path.join(out, 'warm.csv'), False)
  t = time.perf_counter()
  r = runner.predict_file(a['video'], os.path.join(out, 'out.csv'), False)
  dt = time.perf_counter() - t
  print(json.dumps({'frames': r.frames, 'seconds': dt,
                    'fps': r.frames / dt, 'faces': r.face_fraction}))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--minutes', default='1', help='Video lengths, e.g. 1,10,60.')
  p.add_argument('--batch_sizes', default='1,16')
  p.add_argument('--size', default='640x360', help='WIDTHxHEIGHT.')
  p.add_argument('--fps', type=float, default=30.0)
  p.add_argument('--stages', default='decode,faces,model,whole')
  p.add_argument('--faces_frames', type=int, default=300)
  p.add_argument('--model_seconds', type=float, default=5.0)
  p.add_argument('--serial', action='store_true',
                 help='Also time the serial path (--serial) of the whole.')
  p.add_argument('--detect_every', type=int, default=None)
  p.add_argument('--detect_max_side', type=int, default=None)
  # The earlier interface (docs/predict.md, "Speed and memory"): one model,
  # one length in seconds.
  p.add_argument('--model', choices=('quick', 'full'), default=None,
                 help='Earlier form of --models (full: paper).')
  p.add_argument('--seconds', type=float, default=None,
                 help='Earlier form of --minutes: one length in seconds.')
  p.add_argument('--batch_size', type=int, default=None,
                 help='Earlier form of --batch_sizes.')
  p.add_argument('--json', default=None, help='Also write the rows here.')
  p.add_argument('--_whole', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args._whole:  # pylint: disable=protected-access
    _whole_child(args._whole)  # pylint: disable=protected-access
    return
  if args.model:
    args.models = {'quick': 'quick', 'full': 'paper'}[args.model]
  if args.seconds:
    args.minutes = str(args.seconds / 60)
  if args.batch_size:
    args.batch_sizes = str(args.batch_size)
  from affect_jax import predict
  models = [m for m in args.models.split(',') if m]
  bad = [m for m in models if m not in MODELS]
  if bad:
    p.error(f'--models: unknown {bad}; the models are {", ".join(MODELS)}')
  minutes = [float(m) for m in args.minutes.split(',')]
  batches = [int(b) for b in args.batch_sizes.split(',')]
  stages = set(args.stages.split(','))
  w, h = (int(v) for v in args.size.split('x'))
  face_options = {'detect_every': args.detect_every,
                  'detect_max_side': args.detect_max_side}
  rows = []
  with tempfile.TemporaryDirectory() as root:
    warm = os.path.join(root, 'warm.mp4')
    make_video(warm, 1.0, args.fps, (h, w))
    videos, decode = {}, {}
    for m in minutes:
      videos[m] = os.path.join(root, f'{m:g}min.mp4')
      make_video(videos[m], 60 * m, args.fps, (h, w))
      if 'decode' in stages:
        decode[m] = time_decode(videos[m])
    for kind in models:
      model = make_model(kind, os.path.join(root, kind))
      for b in batches:
        runner = (predict.Runner(model, b, **face_options)
                  if stages & {'faces', 'model'} else None)
        faces = (time_faces(runner, videos[minutes[0]], args.faces_frames)
                 if 'faces' in stages else None)
        net = (time_model(runner, args.model_seconds) if 'model' in stages
               else None)
        for m in minutes:
          r = (whole(model, videos[m], warm, b, False, face_options)
               if 'whole' in stages else {})
          ser = (whole(model, videos[m], warm, b, True, face_options)['fps']
                 if 'whole' in stages and args.serial else None)
          parts = [v for v in (decode.get(m), faces, net) if v]
          ratio = (r['fps'] / min(parts)) if r and parts else None
          slowest = ''
          if parts:
            slowest = ('decode', 'faces', 'model')[[
                decode.get(m), faces, net].index(min(parts))]
          rows.append((kind, b, f'{m:g}', *(
              '' if v is None else float(v)
              for v in (decode.get(m), faces, net, r.get('fps'), ser)),
                       slowest, '' if ratio is None else f'{ratio:.2f}',
                       f'{r["peak_rss_mib"]:.0f}' if r else '',
                       f'{r["faces"]:.0%}' if r else ''))
        del runner
  opts = ' '.join(f'--{k}={v}' for k, v in face_options.items() if v)
  print(f'{w}x{h} {args.fps:g} fps; {machine()}'
        + (f'; {opts}' if opts else ''))
  headers = ['model', 'batch', 'min', 'decode', 'faces', 'model', 'whole',
             'serial', 'slowest', 'ratio', 'peak RSS MiB', 'has_face']
  print_table(headers, rows)
  harness.write_json(args.json, {
      'video': {'size': [w, h], 'fps': args.fps, **face_options},
      'rows': [dict(zip(headers, r)) for r in rows]})


if __name__ == '__main__':
  main()
