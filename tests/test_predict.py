"""affect_jax.predict / affect_jax.export on generated videos and images."""

import csv
import os
import struct
import subprocess
import sys
import weakref

import jax
import numpy as np
from PIL import Image
import pytest

from affect_jax import checkpointing
from affect_jax import export
from affect_jax import features as F
from affect_jax import inference
from affect_jax import predict
from affect_jax.errors import AffectJaxError
from configs import common
from tfds_builders import core
from tfds_builders.synthetic_faces import faces

WINDOW = 4
SIZE = (240, 320)  # Frames dlib finds the drawn face in (subject seed 3).


def save_untrained_model(workdir, task, outputs, data,
                         fmt=checkpointing.MODEL_FORMAT, model_cfg=None,
                         input_cfg=None):
  """An untrained ResNet-50 + LSTM (tiny by default) as a run's best checkpoint.

  Also used by benchmarks/predict_speed.py with the full-size network.
  """
  cfg = model_cfg
  if cfg is None:
    cfg = common.resnet50_lstm()
    cfg.width, cfg.stage_sizes, cfg.lstm_hidden = 4, (1, 1, 1, 1), 8
  inp = input_cfg or {'window': WINDOW, 'image_size': 32, 'resize_size': 36,
                      'normalization': 'imagenet'}
  model = inference.build_model(cfg, len(outputs))
  x = np.zeros((1, 2, inp['image_size'], inp['image_size'], 3), np.float32)
  variables = jax.device_get(dict(jax.jit(
      lambda r, x: model.init(r, x, train=False))(
          {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
          x)))
  record = {
      'format': fmt, 'step': 3, 'task': task, 'outputs': list(outputs),
      'label_names': [o for o in outputs if o not in ('arousal', 'valence')],
      'model': cfg.to_dict(), 'input': dict(inp),
      'data': data, 'validation': {'ccc_mean': 0.1}, 'versions': {}}
  ckpt = checkpointing.StageCheckpoints(
      os.path.join(workdir, 'train', 'checkpoints'))
  ckpt.save_best(3, variables, record)
  ckpt.wait()
  ckpt.close()
  return str(workdir)


FACE_DATA = {'dataset': 'test_faces/1.0.0', 'fps': 25.0, 'detector': 'dlib',
             'image_size': 48, 'margin': 0.2, 'landmarks': 'none',
             'emotion_names': []}
# synthetic_faces records are the whole 32x32 render: no detector, no margin.
SYNTH_DATA = {'dataset': 'synthetic_faces/tiny/1.0.0', 'fps': 10.0,
              'frame_size': 32, 'seed': 20,
              'emotion_names': list(F.REALEYES_EMOTIONS)}


@pytest.fixture(scope='module')
def va_model(tmp_path_factory):
  return save_untrained_model(tmp_path_factory.mktemp('va_run'), 'va',
                     ('arousal', 'valence'), FACE_DATA)


@pytest.fixture(scope='module')
def synth_model(tmp_path_factory):
  return save_untrained_model(tmp_path_factory.mktemp('synth_run'), 'emotions',
                     F.REALEYES_EMOTIONS, SYNTH_DATA)


@pytest.fixture(scope='module')
def va_runner(va_model):
  return predict.Runner(va_model)


@pytest.fixture(scope='module')
def synth_runner(synth_model):
  return predict.Runner(synth_model)


def _face_frames(n, size=SIZE, seed=3):
  rng = np.random.default_rng(seed)
  subject, video = faces.make_subject(rng), faces.make_video(rng, n, 10.0)
  return [faces.render_frame(subject, video, i, size)[0] for i in range(n)]


def _blank(size=SIZE):
  return np.full(size + (3,), 120, np.uint8)


# 12 frames: a face, then frames 5-7 without one, then the face again.
NO_FACE = (5, 6, 7)


@pytest.fixture(scope='module')
def face_video(tmp_path_factory):
  frames = _face_frames(12)
  for i in NO_FACE:
    frames[i] = _blank()
  path = str(tmp_path_factory.mktemp('videos') / 'faces.mp4')
  core.write_video(path, frames, fps=25, quality=18)
  return path


def _astronaut(data):
  """scikit-image's astronaut photo, 320 x 512: Eileen Collins' face at
  x 179-266, y 83-170 (dlib). Below row 320 dlib finds a second 'face' in the
  suit once the photo has been through H.264."""
  return np.ascontiguousarray(data.astronaut()[:320])


def _read(path):
  """The rows of a prediction CSV (a synthetic model's warning skipped)."""
  with open(path, newline='') as f:
    return list(csv.DictReader(line for line in f if not line.startswith('#')))


def test_video_rows_times_faces_and_schema(va_runner, face_video, tmp_path):
  out = str(tmp_path / 'p.csv')
  result = va_runner.predict_file(face_video, out, progress=False)
  rows = _read(out)
  assert result.rows == len(rows) == 12
  with open(out) as f:
    assert f.readline().strip() == ('frame,time_s,has_face,x0,y0,x1,y1,'
                                    'valence,arousal')
  assert [int(r['frame']) for r in rows] == list(range(12))
  np.testing.assert_allclose([float(r['time_s']) for r in rows],
                             np.arange(12) / 25, atol=1e-6)
  for i, r in enumerate(rows):
    if i in NO_FACE:
      assert r['has_face'] == '0'
      assert all(r[k] == '' for k in ('x0', 'y1', 'valence', 'arousal'))
    else:
      assert r['has_face'] == '1'
      x0, y0, x1, y1 = (float(r[k]) for k in predict.BOX_COLUMNS)
      # The drawn face sits in the middle of the 320x240 frame.
      assert 60 < x0 < 160 < x1 < 260 and 20 < y0 < 120 < y1 < 230
      assert np.isfinite(float(r['valence'])) and -10 < float(
          r['arousal']) < 10
  assert os.listdir(tmp_path) == ['p.csv']  # No temporary file left.


def test_predictions_are_the_training_preprocessing(va_runner, face_video):
  """Frame 2 of the video predicted alone equals the builder's record path."""
  frames = list(core.iter_frames(face_video))
  pre = va_runner.preprocess
  tracker = pre.tracker()
  model_frames = [pre(f.index, f.time, f.image, tracker) for f in frames[:4]]
  # What a builder stores and the input pipeline feeds, for the same frames.
  config = core.VideoFrameConfig(name='t', detector='dlib', landmarks='none',
                                 image_size=48, margin=0.2)
  from affect_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from tfds_builders.core import builder  # pylint: disable=g-import-not-at-top
  spec = core.VideoSpec('v', 's', face_video, lambda i, t: core.FrameLabels())
  records = [r for _, r in builder.video_records(spec, 0, config, 0)][:4]
  for mf, r in zip(model_frames, records):
    np.testing.assert_array_equal(
        mf.image, input_pipeline.decode_resized(r[F.RECORD_IMAGE], 32))
    assert mf.has_face == r[F.RECORD_HAS_FACE]


def test_windows_take_the_most_central_prediction():
  """Each frame's logits come from the window where it is most central."""
  window, batch = 6, 2

  def logits_fn(b):
    # Output = (frame index read from the pixels, position in the window).
    idx = b[F.FRAMES][:, :, 0, 0, 0].astype(np.float32)
    pos = np.broadcast_to(np.arange(window, dtype=np.float32), idx.shape)
    return np.stack([idx, pos], -1)

  live = weakref.WeakSet()
  most = []

  def stream(n):
    for i in range(n):
      frame = predict.ModelFrame(i, i / 10, True, None,
                                 np.full((2, 2, 3), i, np.uint8),
                                 np.zeros((68, 2), np.float32))
      live.add(frame)
      most.append(len(live))
      yield frame

  stride = window // 2
  for n in (1, 5, 6, 7, 13, 40):
    starts = list(range(0, n - window + 1, stride))
    if not starts or starts[-1] + window < n:
      starts.append(max(0, n - window))
    want = []
    for i in range(n):
      spans = [(s, min(s + window, n)) for s in starts if s <= i < s + window]
      d = [abs(i - s - (e - s - 1) / 2) for s, e in spans]
      want.append(i - spans[int(np.argmin(d))][0])
    got = [(f.index, tuple(l)) for f, l in
           predict.predict_stream(logits_fn, stream(n), window, batch, 2)]
    assert [i for i, _ in got] == list(range(n))
    assert [l for _, l in got] == [(i, p) for i, p in zip(range(n), want)]
  # Frames are held only as long as a window needs them.
  assert max(most) <= window + (batch + 1) * stride + 1


def test_synthetic_model_whole_frame_classes_and_vfr(synth_runner,
                                                     tmp_path):
  """No detector in the dataset: the model sees the whole frame, the
  detector still gives has_face and the box; class columns; VFR times."""
  times = [0.0, 0.04, 0.1, 0.35, 0.36, 0.9, 1.0, 1.5, 1.52]
  path = str(tmp_path / 'vfr.mp4')
  core.write_video(path, _face_frames(len(times)), fps=25, times=times)
  out = str(tmp_path / 'vfr.csv')
  synth_runner.predict_file(path, out, progress=False)
  rows = _read(out)
  assert len(rows) == len(times)
  np.testing.assert_allclose([float(r['time_s']) for r in rows], times,
                             atol=1e-3)
  assert list(rows[0]) == ['frame', 'time_s', 'has_face', 'x0', 'y0', 'x1',
                           'y1', *F.REALEYES_EMOTIONS]
  for r in rows:
    assert r['has_face'] == '1'
    x0, y0, x1, y1 = (float(r[k]) for k in predict.BOX_COLUMNS)
    assert 60 < x0 < 160 < x1 < 260 and 20 < y0 < 120 < y1 < 230  # The face.
    p = np.array([float(r[c]) for c in F.REALEYES_EMOTIONS])
    assert ((0 < p) & (p < 1)).all()


def _write_lossless(path, images, fps):
  """An FFV1 .mkv: decodes to exactly `images` (any size; unlike x264)."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(path, 'w') as c:
    s = c.add_stream('ffv1', rate=fps)
    s.height, s.width = images[0].shape[:2]
    s.pix_fmt = 'yuv444p'
    for image in images:
      c.mux(s.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
    c.mux(s.encode())
  return path


def test_odd_resolution_mkv(synth_runner, tmp_path):
  path = _write_lossless(str(tmp_path / 'odd.mkv'),
                         _face_frames(5, (97, 161)), 10)
  out = str(tmp_path / 'odd.csv')
  synth_runner.predict_file(path, out, progress=False)
  rows = _read(out)
  assert len(rows) == 5
  # A face too small for the detector: no face claimed, nothing predicted.
  assert {(r['has_face'], r['x0'], r['happy']) for r in rows} == {('0', '',
                                                                   '')}


def _rotate_mp4(path, degrees_clockwise=90):
  """Sets the display matrix of an .mp4's first track (as phones do)."""
  data = bytearray(open(path, 'rb').read())
  matrix = {90: (0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)}
  at = data.find(b'tkhd') + 44  # version 0 tkhd: the matrix's offset.
  data[at:at + 36] = struct.pack('>9i', *matrix[degrees_clockwise])
  open(path, 'wb').write(data)


def test_rotation_metadata_is_honoured(synth_runner, tmp_path):
  image = np.zeros((48, 64, 3), np.uint8)
  image[:8, :8] = 255  # Top-left marker.
  path = str(tmp_path / 'rot.mp4')
  core.write_video(path, [image] * 3, fps=10, quality=10)
  _rotate_mp4(path)
  frames = list(core.iter_frames(path))
  assert frames[0].image.shape == (64, 48, 3)
  # Turned clockwise for display: the marker is now top-right.
  assert frames[0].image[:8, -8:].mean() > 200
  # A phone video of a real face, stored sideways: found in the upright frame.
  data = pytest.importorskip('skimage.data')
  path = str(tmp_path / 'phone.mp4')
  core.write_video(path, [np.rot90(_astronaut(data))] * 3, fps=10)
  _rotate_mp4(path)
  out = str(tmp_path / 'rot.csv')
  synth_runner.predict_file(path, out, progress=False)
  rows = _read(out)
  assert len(rows) == 3 and {r['has_face'] for r in rows} == {'1'}
  x0, y0, x1, y1 = (float(rows[0][k]) for k in predict.BOX_COLUMNS)
  assert 150 < x0 < 222 < x1 < 300 and 50 < y0 < 126 < y1 < 200  # Her face.


def test_image_and_folder(va_model, tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  Image.fromarray(_face_frames(1)[0]).save(folder / 'photo.png')
  Image.fromarray(_blank()).save(folder / 'wall.jpg')
  core.write_video(str(folder / 'clip.mp4'), _face_frames(3), fps=25)
  (folder / 'notes.txt').write_text('not an input')
  out, plots = tmp_path / 'out', tmp_path / 'plots'
  results = predict.predict(va_model, str(folder), str(out), str(plots),
                            progress=False)
  assert sorted(os.listdir(out)) == ['clip.csv', 'photo.csv',
                                     'predict_log.jsonl', 'wall.csv']
  assert sorted(os.listdir(plots)) == ['clip.png', 'photo.png', 'wall.png']
  assert [r.rows for r in results] == [3, 1, 1]
  photo = _read(out / 'photo.csv')
  assert photo[0]['frame'] == '0' and float(photo[0]['time_s']) == 0
  assert photo[0]['has_face'] == '1' and photo[0]['valence'] != ''
  wall = _read(out / 'wall.csv')
  assert wall[0]['has_face'] == '0' and wall[0]['valence'] == ''
  with pytest.raises(AffectJaxError, match='must be a folder'):
    predict.predict(va_model, str(folder), str(tmp_path / 'x.csv'))


def test_plot_of_a_video(va_runner, face_video, tmp_path):
  result = va_runner.predict_file(face_video, str(tmp_path / 'p.csv'),
                                  progress=False)
  from affect_jax import plots  # pylint: disable=g-import-not-at-top
  path = plots.prediction_plot(result.time, result.has_face, result.outputs,
                               result.columns, str(tmp_path / 'p.png'))
  assert os.path.getsize(path) > 1000


def test_bad_inputs(va_runner, va_model, tmp_path):
  out = str(tmp_path / 'o.csv')
  with pytest.raises(AffectJaxError, match='does not exist'):
    predict.predict(va_model, str(tmp_path / 'nope.mp4'), out)
  text = tmp_path / 'text.mp4'
  text.write_text('hello, I am not a video\n' * 50)
  with pytest.raises(AffectJaxError, match='not a video'):
    va_runner.predict_file(str(text), out, progress=False)
  png = tmp_path / 'broken.png'
  png.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 40)
  with pytest.raises(AffectJaxError, match='Cannot decode image'):
    va_runner.predict_file(str(png), out, progress=False)
  assert sorted(os.listdir(tmp_path)) == ['broken.png', 'text.mp4']


def test_truncated_video_keeps_what_decodes(synth_runner, tmp_path):
  path = str(tmp_path / 'cut.mp4')
  rng = np.random.default_rng(0)
  noise = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
           for _ in range(40)]
  core.write_video(path, noise, fps=25, options={'movflags': 'faststart'})
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size // 2)
  out = str(tmp_path / 'cut.csv')
  with pytest.raises(AffectJaxError, match='ends early|failed') as e:
    synth_runner.predict_file(path, out, progress=False)
  rows = _read(out)
  assert 0 < len(rows) < 40
  assert f'holds the predictions of the {len(rows)} frames' in str(e.value)
  assert 'skip_broken' not in str(e.value)
  # The overlay too holds the frames that decoded.
  drawn = str(tmp_path / 'cut_overlay.mp4')
  with pytest.raises(AffectJaxError, match='holds the predictions'):
    synth_runner.predict_file(path, out, progress=False, overlay=drawn)
  assert len(list(core.iter_frames(drawn))) == len(rows)
  assert sorted(os.listdir(tmp_path)) == ['cut.csv', 'cut.mp4',
                                          'cut_overlay.mp4']


def test_output_is_atomic(synth_runner, tmp_path, monkeypatch):
  path = str(tmp_path / 'v.mp4')
  core.write_video(path, _face_frames(8, (64, 64)), fps=25)
  out = tmp_path / 'v.csv'
  out.write_text('old\n')
  calls = []
  real = synth_runner.preprocess.__class__.__call__

  def failing(self, *args):
    calls.append(1)
    if len(calls) > 6:
      raise KeyboardInterrupt
    return real(self, *args)

  monkeypatch.setattr(predict.Preprocess, '__call__', failing)
  with pytest.raises(KeyboardInterrupt):
    synth_runner.predict_file(path, str(out), progress=False)
  # The earlier file is untouched and no temporary file is left.
  assert out.read_text() == 'old\n'
  assert sorted(os.listdir(tmp_path)) == ['v.csv', 'v.mp4']


# --all_faces: two people side by side (subjects dlib finds, 240 x 640).
# Left (A, seed 3) stays; right (B, seed 6) moves right 6 px a frame and
# leaves at frame 9; frames 5-6 show nobody. 12 frames at 25 fps.
TWO_FACE_FRAMES, NOBODY, B_LEAVES, B_SPEED = 12, (5, 6), 9, 6


@pytest.fixture(scope='module')
def two_faces(tmp_path_factory):
  """{'both', 'a', 'b'}: .mkv paths, the two faces and each face alone."""
  n = TWO_FACE_FRAMES
  a = _face_frames(n)
  b = [np.roll(f, B_SPEED * i, axis=1)
       for i, f in enumerate(_face_frames(n, seed=6))]
  for i in range(n):
    if i in NOBODY:
      a[i] = _blank()
    if i in NOBODY or i >= B_LEAVES:
      b[i] = _blank()
  folder = tmp_path_factory.mktemp('two_faces')
  # Lossless, so each half decodes the same with or without the other face.
  videos = {'both': [np.concatenate(p, 1) for p in zip(a, b)],
            'a': [np.concatenate([f, _blank()], 1) for f in a],
            'b': [np.concatenate([_blank(), f], 1) for f in b]}
  return {k: _write_lossless(str(folder / f'{k}.mkv'), v, 25)
          for k, v in videos.items()}


def _centre_x(row):
  return (float(row['x0']) + float(row['x1'])) / 2


def test_all_faces_rows_ids_and_boxes(va_runner, two_faces, tmp_path):
  out = str(tmp_path / 'all.csv')
  result = va_runner.predict_file(two_faces['both'], out, progress=False,
                                  all_faces=True)
  rows = _read(out)
  with open(out) as f:
    assert f.readline().strip() == ('frame,time_s,face,has_face,x0,y0,x1,y1,'
                                    'valence,arousal')
  assert result.rows == len(rows)
  frames = [int(r['frame']) for r in rows]
  counts = [frames.count(i) for i in range(TWO_FACE_FRAMES)]
  assert counts == [1 if i in NOBODY or i >= B_LEAVES else 2
                    for i in range(TWO_FACE_FRAMES)]
  for r in rows:
    if int(r['frame']) in NOBODY:
      assert r['has_face'] == '0' and r['face'] == ''
      assert all(r[k] == '' for k in ('x0', 'y1', 'valence', 'arousal'))
    else:
      assert r['has_face'] == '1' and np.isfinite(float(r['valence']))
  found = [r for r in rows if r['has_face'] == '1']
  # Ordered by frame, then face; one id per person for the whole video.
  keys = [(int(r['frame']), int(r['face'])) for r in found]
  assert keys == sorted(keys)
  ids = {side: {r['face'] for r in found if (_centre_x(r) > 320) == right}
         for side, right in (('a', False), ('b', True))}
  assert sorted(ids['a'] | ids['b']) == ['0', '1']
  assert len(ids['a']) == len(ids['b']) == 1
  # Each id's box follows its face: A stays, B moves at B_SPEED.
  for side, speed in (('a', 0), ('b', B_SPEED)):
    track = [r for r in found if r['face'] in ids[side]]
    x = np.array([_centre_x(r) for r in track])
    t = np.array([int(r['frame']) for r in track])
    drift = x - x[0] - speed * (t - t[0])
    assert np.abs(drift).max() < 12, (side, drift)  # dlib's box steps.
  assert result.face.tolist() == [-1 if r['face'] == '' else int(r['face'])
                                  for r in rows]


def test_all_faces_predicts_each_face_as_if_alone(va_runner, two_faces,
                                                   tmp_path):
  """Each face's rows equal the default prediction of a video of it alone."""
  both = str(tmp_path / 'both.csv')
  va_runner.predict_file(two_faces['both'], both, progress=False,
                         all_faces=True)
  rows = [r for r in _read(both) if r['has_face'] == '1']
  for side in ('a', 'b'):
    alone = str(tmp_path / f'{side}.csv')
    va_runner.predict_file(two_faces[side], alone, progress=False)
    want = [r for r in _read(alone) if r['has_face'] == '1']
    right = side == 'b'
    got = [{k: v for k, v in r.items() if k != 'face'} for r in rows
           if (_centre_x(r) > 320) == right]
    assert len(want) > 5 and got == want


def test_all_faces_image_whole_frame_model_and_plots(va_runner, synth_runner,
                                                     two_faces, tmp_path):
  from affect_jax import plots  # pylint: disable=g-import-not-at-top
  photo, wall = str(tmp_path / 'two.png'), str(tmp_path / 'wall.png')
  Image.fromarray(next(core.iter_frames(two_faces['both'])).image).save(photo)
  Image.fromarray(_blank()).save(wall)
  result = va_runner.predict_file(photo, str(tmp_path / 'two.csv'),
                                  progress=False, all_faces=True)
  rows = _read(tmp_path / 'two.csv')
  assert [(r['frame'], r['face'], r['has_face']) for r in rows] == [
      ('0', '0', '1'), ('0', '1', '1')]
  assert plots.prediction_plot(
      result.time, result.has_face, result.outputs, result.columns,
      str(tmp_path / 'two_png.png'), is_image=True, face=result.face)
  va_runner.predict_file(wall, str(tmp_path / 'wall.csv'), progress=False,
                         all_faces=True)
  assert [(r['face'], r['has_face'], r['valence'])
          for r in _read(tmp_path / 'wall.csv')] == [('', '0', '')]
  # A whole-frame model: one face, 0, and the default's numbers.
  path = str(tmp_path / 'v.mp4')
  core.write_video(path, _face_frames(5), fps=25)
  one, many = str(tmp_path / 'one.csv'), str(tmp_path / 'many.csv')
  synth_runner.predict_file(path, one, progress=False)
  classes = synth_runner.predict_file(path, many, progress=False,
                                      all_faces=True)
  assert [r.pop('face') for r in _read(many)] == ['0'] * 5
  assert [{k: v for k, v in r.items() if k != 'face'}
          for r in _read(many)] == _read(one)
  # Plots: a line per face (VA), a panel per face (classes).
  video = va_runner.predict_file(two_faces['both'], str(tmp_path / 'b.csv'),
                                 progress=False, all_faces=True)
  for name, r in (('va', video), ('classes', classes)):
    png = plots.prediction_plot(r.time, r.has_face, r.outputs, r.columns,
                                str(tmp_path / f'{name}.png'), face=r.face)
    assert os.path.getsize(png) > 1000


def test_tracks_each_go_through_their_own_windows():
  """predict_tracks: each face's logits are its own stream's; ended tracks
  are flushed before the video ends; rows come out in frame order."""
  window, batch = 4, 2

  def logits_fn(b):  # (face id, frame) of each frame, and face of the window.
    x = b[F.FRAMES][:, :, 0, 0, :2].astype(np.float32)
    return np.concatenate([x, np.broadcast_to(x[:, :1, :1], x[..., :1].shape)],
                          -1)

  def frame(k, i, found=True):
    return predict.ModelFrame(i, i / 10, found, (0, 0, 1, 1) if found else
                              None, np.full((2, 2, 3), [k, i, 0], np.uint8),
                              np.zeros((68, 2), np.float32))

  # Face 0: frames 0-29; face 1: 3-10 then gone; face 2: 15-29, missed at 20.
  def faces(i):
    out = [(0, frame(0, i))]
    if 3 <= i <= 10:
      out.append((1, frame(1, i)))
    if i >= 15:
      out.append((2, frame(2, i, found=i != 20)))
    return out

  read = []

  def frames():
    for i in range(30):
      read.append(i)
      yield i, i / 10, faces(i)

  got = []
  for index, _, found in predict.predict_tracks(logits_fn, frames(), window,
                                                batch, 2):
    got.append((index, [(k, tuple(l)) for k, _, l in found]))
    if index == 10:
      assert len(read) < 30  # Held only while a window needs the frame.
  assert [i for i, _ in got] == list(range(30))
  for i, found in got:
    ids = [k for k, f in faces(i) if f.has_face]
    assert found == [(k, (k, i, k)) for k in ids]  # No window mixes faces.


def test_export_then_predict_gives_the_same_numbers(synth_model, tmp_path):
  model_dir = str(tmp_path / 'model')
  record = export.export(synth_model, model_dir)
  assert record['task'] == 'emotions'
  assert sorted(os.listdir(model_dir)) == ['best', 'model.json']
  path = str(tmp_path / 'v.mp4')
  core.write_video(path, _face_frames(7), fps=25)
  a, b = str(tmp_path / 'a.csv'), str(tmp_path / 'b.csv')
  predict.predict(synth_model, path, a, progress=False)
  predict.predict(model_dir, path, b, progress=False)
  assert open(a).read() == open(b).read()
  with pytest.raises(AffectJaxError, match='not an empty folder'):
    export.export(synth_model, model_dir)


def test_model_folder_errors(tmp_path):
  empty = tmp_path / 'run'
  empty.mkdir()
  with pytest.raises(AffectJaxError, match='holds no trained model'):
    predict.Runner(str(empty))
  with pytest.raises(AffectJaxError, match='does not exist'):
    predict.Runner(str(tmp_path / 'missing'))
  old = save_untrained_model(tmp_path / 'old', 'va', ('arousal', 'valence'),
                    FACE_DATA, fmt='affect_jax.model/0')
  with pytest.raises(AffectJaxError, match='incompatible|format'):
    predict.Runner(old)


def test_cli_error_is_one_line(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep +
             os.environ.get('PYTHONPATH', ''), JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'affect_jax.predict', f'--model={tmp_path}',
       f'--input={tmp_path / "missing.mp4"}', f'--output={tmp_path}/o.csv'],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode == 2
  assert proc.stderr.startswith('error: Input') and 'Traceback' not in (
      proc.stderr)


def test_face_options_detect_every_track_and_their_errors(va_model, va_runner,
                                                          face_video,
                                                          tmp_path):
  """--detect_every 5 --track correlation: the detector runs on frames 0, 5,
  10; the face is followed in between, and after frame 5 (no face) nothing
  is followed until frame 10. Through the command line, as users run it."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep +
             os.environ.get('PYTHONPATH', ''), JAX_PLATFORMS='cpu')
  out = tmp_path / 'every5.csv'
  proc = subprocess.run(
      [sys.executable, '-m', 'affect_jax.predict', f'--model={va_model}',
       f'--input={face_video}', f'--output={out}', '--detect_every=5',
       '--track=correlation'],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  rows = _read(out)
  assert [r['has_face'] for r in rows] == ['1'] * 5 + ['0'] * 5 + ['1'] * 2
  every = _read(va_runner.predict_file(face_video, str(tmp_path / 'all.csv'),
                                       progress=False).csv)
  for i in (0, 10):  # Detection frames: the detector's box, as by default.
    assert [rows[i][k] for k in predict.BOX_COLUMNS] == [
        every[i][k] for k in predict.BOX_COLUMNS]
  meta = va_runner.predictor.meta
  with pytest.raises(AffectJaxError, match=r'detect_max_side=30 '
                     r'\(--detect_max_side\) is out of range'):
    predict.Preprocess(meta, detect_max_side=30)
  with pytest.raises(AffectJaxError, match=r'detect_every=5: following every '
                     r'face \(--all_faces\)'):
    predict.Preprocess(meta, detect_every=5).tracker(all_faces=True)
  with pytest.raises(AffectJaxError,
                     match=r'detect_every=0 \(--detect_every\)'):
    predict.Preprocess(meta, detect_every=0)


# ------------------------------------- faces never claimed, whole-video ---

def _cli(*args):
  """`python -m affect_jax.predict ARGS` as a user runs it."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep +
             os.environ.get('PYTHONPATH', ''), JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'affect_jax.predict', *args],
                        capture_output=True, text=True, env=env, timeout=300,
                        check=False)


def _values(rows, names):
  """float [N, K]: the rows' predictions, NaN where empty."""
  return np.array([[float(r[n]) if r[n] else np.nan for n in names]
                   for r in rows])


WARNING = 'trained on synthetic cartoon faces: not meaningful on real video'
ASTRONAUT_FRAMES = (2, 3, 4)  # Of 7; the others show coffee, no face.


def test_cli_claims_no_face_it_did_not_see(synth_model, tmp_path):
  """A whole-frame (synthetic) model through the command line: the detector
  decides has_face; a video without a face gives has_face=0 and empty
  predictions on every frame, a real face (scikit-image's astronaut) gives
  has_face=1 and her box; --predict_without_face fills the predictions of
  the other frames (the same numbers where there is a face: the model sees
  the whole frame either way); the synthetic warning is on stderr and in
  each CSV."""
  data = pytest.importorskip('skimage.data')
  import cv2  # pylint: disable=g-import-not-at-top
  astronaut = _astronaut(data)
  coffee = cv2.resize(data.coffee(), astronaut.shape[1::-1])
  folder = tmp_path / 'in'
  folder.mkdir()
  core.write_video(str(folder / 'nobody.mp4'), [coffee] * 5, fps=25)
  core.write_video(str(folder / 'astronaut.mp4'), [
      astronaut if i in ASTRONAUT_FRAMES else coffee for i in range(7)],
                   fps=25)
  names = list(F.REALEYES_EMOTIONS)
  got = {}
  for flag in ('', '--predict_without_face'):
    out = tmp_path / f'out{flag}'
    proc = _cli(f'--model={synth_model}', f'--input={folder}',
                f'--output={out}', *([flag] if flag else []))
    assert proc.returncode == 0, proc.stderr
    assert WARNING in proc.stderr
    for stem in ('nobody', 'astronaut'):
      with open(out / f'{stem}.csv') as f:
        first = f.readline()
      assert first.startswith('# warning') and WARNING in first
      got[flag, stem] = _read(out / f'{stem}.csv')
  nobody = got['', 'nobody']
  assert len(nobody) == 5
  assert all(r['has_face'] == '0' and r['x0'] == '' for r in nobody)
  assert np.isnan(_values(nobody, names)).all()
  rows = got['', 'astronaut']
  assert [r['has_face'] for r in rows] == [
      '1' if i in ASTRONAUT_FRAMES else '0' for i in range(7)]
  for i in ASTRONAUT_FRAMES:
    x0, y0, x1, y1 = (float(rows[i][k]) for k in predict.BOX_COLUMNS)
    assert 150 < x0 < 222 < x1 < 300 and 50 < y0 < 126 < y1 < 200
  values = _values(rows, names)
  assert np.isnan(values[[0, 1, 5, 6]]).all()
  assert ((0 < values[2:5]) & (values[2:5] < 1)).all()
  # --predict_without_face: every row predicted, has_face and boxes unchanged.
  for stem in ('nobody', 'astronaut'):
    plain, every = got['', stem], got['--predict_without_face', stem]
    assert [(r['has_face'], r['x0']) for r in every] == [
        (r['has_face'], r['x0']) for r in plain]
    v = _values(every, names)
    assert ((0 < v) & (v < 1)).all()
  np.testing.assert_array_equal(
      _values(got['--predict_without_face', 'astronaut'], names)[2:5],
      values[2:5])


def test_face_model_predict_without_face(va_model, va_runner, face_video,
                                         tmp_path):
  """A face model: frames 5-7 (no face) get predictions, has_face=0, empty
  box; the frames with a face are unchanged."""
  plain = _read(va_runner.predict_file(face_video, str(tmp_path / 'a.csv'),
                                       progress=False).csv)
  every = _read(predict.Runner(va_model, predict_without_face=True)
                .predict_file(face_video, str(tmp_path / 'b.csv'),
                              progress=False).csv)
  for i, (p, e) in enumerate(zip(plain, every)):
    assert e['has_face'] == p['has_face']
    if i in NO_FACE:
      assert e['x0'] == '' and np.isfinite(float(e['valence']))
    else:
      assert e == p


def _median(x, window):
  """Centred running median, the ends repeated: one frame at a time."""
  half, n = window // 2, len(x)
  return np.array([np.median([x[min(max(j, 0), n - 1)]
                              for j in range(i - half, i + half + 1)])
                   for i in range(n)])


def _fill(t, x, how):
  out = x.copy()
  known = np.flatnonzero(np.isfinite(x))
  for i in np.flatnonzero(~np.isfinite(x)):
    before, after = known[known < i], known[known > i]
    if how == 'hold':
      out[i] = x[before[-1]] if len(before) else x[after[0]]
    elif not len(before) or not len(after):
      out[i] = x[before[-1]] if len(before) else x[after[0]]
    else:
      a, b = before[-1], after[0]
      out[i] = x[a] + (x[b] - x[a]) * (t[i] - t[a]) / (t[b] - t[a])
  return out


CHAIN = {'fps': 25.0, 'chain': {
    'valence': {'fit_ccc_before': 0.1, 'steps': [
        {'name': 'median', 'value': 0.12, 'fit_ccc': 0.2},
        {'name': 'centre', 'value': 0.3, 'fit_ccc': 0.3},
        {'name': 'scale', 'value': 40.0, 'fit_ccc': 0.4},
        {'name': 'shift', 'value': 0.08, 'fit_ccc': 0.5}]},
    'arousal': {'fit_ccc_before': 0.1, 'steps': [
        {'name': 'centre', 'value': -0.2, 'fit_ccc': 0.2}]}}}


@pytest.fixture(scope='module')
def chain_model(tmp_path_factory):
  """A VA run with the chain a postprocess stage chose (`postprocess/`)."""
  from affect_jax import writers  # pylint: disable=g-import-not-at-top
  run = save_untrained_model(tmp_path_factory.mktemp('chain_run'), 'va',
                             ('arousal', 'valence'), FACE_DATA)
  writers.write_json(os.path.join(run, 'postprocess', 'chain.json'), CHAIN)
  return run


def _chain(x, name):
  """The chain's steps on one series, each by hand (25 fps)."""
  for s in CHAIN['chain'][name]['steps']:
    if s['name'] == 'median':
      x = _median(x, 3)  # 0.12 s at 25 fps: 3 frames.
    elif s['name'] == 'centre':
      x = x + s['value']
    elif s['name'] == 'scale':
      x = x.mean() + s['value'] * (x - x.mean())
    elif s['name'] == 'shift':
      x = np.concatenate([[x[0]] * 2, x[:-2]])  # 0.08 s: 2 frames.
  return x


def test_whole_video_options_through_the_cli(chain_model, face_video,
                                             tmp_path):
  """--fill_missing=linear --postprocess --smooth=0.2 --overlay --plot, from
  the command line, against numpy on the plain prediction (fill, then the
  chain, then a 5-frame median); the overlay decodes to the input's frames
  and size, the box drawn on it."""
  names = ['valence', 'arousal']
  plain = predict.predict(chain_model, face_video, str(tmp_path / 'p.csv'),
                          progress=False)[0]
  base = _values(_read(plain.csv), names)
  t = plain.time
  assert np.isnan(base[list(NO_FACE)]).all()
  assert np.ptp(base[:5, 0]) > 1e-3  # Enough change for the filters to show.
  want = np.stack([_median(_chain(_fill(t, base[:, k], 'linear'), n), 5)
                   for k, n in enumerate(names)], 1)
  out, video, plot = (str(tmp_path / n) for n in ('o.csv', 'o.mp4', 'o.png'))
  proc = _cli(f'--model={chain_model}', f'--input={face_video}',
              f'--output={out}', '--fill_missing=linear', '--postprocess',
              '--smooth=0.2', f'--overlay={video}', f'--plot={plot}')
  assert proc.returncode == 0, proc.stderr
  rows = _read(out)
  assert [r['has_face'] for r in rows] == [r['has_face']
                                           for r in _read(plain.csv)]
  np.testing.assert_allclose(_values(rows, names), want, rtol=1e-4,
                             atol=1e-5)
  assert os.path.getsize(plot) > 1000
  # The overlay: every frame, the input's size, the box drawn.
  source = [f.image for f in core.iter_frames(face_video)]
  drawn = [f.image for f in core.iter_frames(video)]
  assert len(drawn) == len(source) == 12
  assert drawn[0].shape == source[0].shape
  r = rows[0]
  x0, y0, x1, y1 = (int(round(float(r[k]))) for k in predict.BOX_COLUMNS)
  diff = np.abs(drawn[0].astype(int) - source[0].astype(int)).mean(-1)
  assert diff[y0 + 5:y1 - 5, x0].mean() > 40  # The box's left side.
  assert diff[y0 + 5:y1 - 5, x0 + 10:x1 - 10].mean() < 8  # Inside it: the face.
  assert diff[-60:, :40].mean() < 8  # Far from the box and the gauge.


def test_fill_hold_smooth_runs_and_postprocess_against_postprocess_apply(
    chain_model, face_video, tmp_path):
  """--fill_missing=hold; --smooth alone filters each run of frames with a
  face on its own; --postprocess alone equals postprocess.apply_chain on the
  plain CSV's runs."""
  from affect_jax import postprocess  # pylint: disable=g-import-not-at-top
  names = ['valence', 'arousal']
  plain = predict.predict(chain_model, face_video, str(tmp_path / 'p.csv'),
                          progress=False)[0]
  base = _values(_read(plain.csv), names)
  t = plain.time

  def run(**options):
    out = str(tmp_path / f'{len(os.listdir(tmp_path))}.csv')
    return _values(_read(predict.predict(chain_model, face_video, out,
                                         progress=False, **options)[0].csv),
                   names)

  got = run(fill_missing='hold')
  np.testing.assert_allclose(got, np.stack(
      [_fill(t, base[:, k], 'hold') for k in range(2)], 1), rtol=1e-5)
  assert (got[list(NO_FACE)] == got[NO_FACE[0] - 1]).all()
  got = run(smooth=0.12)  # 3 frames, within frames 0-4 and 8-11.
  runs = [slice(0, 5), slice(8, 12)]
  for k in range(2):
    for s in runs:
      np.testing.assert_allclose(got[s, k], _median(base[s, k], 3),
                                 rtol=1e-4, atol=1e-5)
  assert np.isnan(got[list(NO_FACE)]).all()
  got = run(postprocess=True)
  for k, name in enumerate(names):
    steps = [postprocess.Step(**s) for s in CHAIN['chain'][name]['steps']]
    want = postprocess.apply_chain([base[s, k] for s in runs], steps, 25.0)
    for s, w in zip(runs, want):
      np.testing.assert_allclose(got[s, k], w, rtol=1e-4, atol=1e-5)
  assert np.isnan(got[list(NO_FACE)]).all()


def test_postprocess_chain_errors_and_export(chain_model, va_model, face_video,
                                             tmp_path):
  out = str(tmp_path / 'o.csv')
  with pytest.raises(AffectJaxError, match='carries no post-processing chain'
                     '.*affect_jax.postprocess --workdir=RUN'):
    predict.predict(va_model, face_video, out, postprocess=True)
  with pytest.raises(AffectJaxError, match='--fill_missing fills'):
    predict.predict(va_model, face_video, out, all_faces=True,
                    fill_missing='linear')
  with pytest.raises(AffectJaxError, match='the input is a video.*mp4'):
    predict.predict(va_model, face_video, out, overlay=str(tmp_path / 'o.png'))
  assert not os.path.exists(out)
  # An exported model carries its run's chain and gives the same numbers.
  model_dir = str(tmp_path / 'model')
  record = export.export(chain_model, model_dir)
  assert sorted(os.listdir(model_dir)) == ['best', 'chain.json', 'model.json']
  assert record['postprocess_chain'].endswith('postprocess/chain.json')
  a, b = str(tmp_path / 'a.csv'), str(tmp_path / 'b.csv')
  predict.predict(chain_model, face_video, a, progress=False, postprocess=True)
  predict.predict(model_dir, face_video, b, progress=False, postprocess=True)
  assert open(a).read() == open(b).read()
  # A chain for other outputs is refused, naming both.
  bad = tmp_path / 'bad.json'
  bad.write_text('{"fps": 25, "chain": {"happy": {"steps": []}}}')
  with pytest.raises(AffectJaxError, match='chain for happy but the model '
                     'predicts arousal, valence'):
    export.export(chain_model, str(tmp_path / 'm2'), chain=str(bad))


def test_all_faces_predict_without_face_keeps_bridged_frames(va_model,
                                                            two_faces,
                                                            tmp_path):
  """--all_faces --predict_without_face: a face the detector misses keeps its
  id for the builders' max_gap (5) frames, with has_face=0, no box and the
  prediction of its last box's crop; the rows seen are the default ones."""
  runner = predict.Runner(va_model, predict_without_face=True)
  every = _read(runner.predict_file(two_faces['both'], str(tmp_path / 'e.csv'),
                                    progress=False, all_faces=True).csv)
  plain = _read(predict.Runner(va_model).predict_file(
      two_faces['both'], str(tmp_path / 'p.csv'), progress=False,
      all_faces=True).csv)
  assert [r for r in every if r['has_face'] == '1'] == [
      r for r in plain if r['has_face'] == '1']
  frames = [int(r['frame']) for r in every]
  # Both tracks live on every frame: the gap (5-6) and B's exit (9-11) are
  # shorter than max_gap.
  assert [frames.count(i) for i in range(TWO_FACE_FRAMES)] == [2] * 12
  missed = [r for r in every if r['has_face'] == '0']
  assert sorted({int(r['frame']) for r in missed}) == [5, 6, 9, 10, 11]
  assert all(r['face'] in ('0', '1') and r['x0'] == '' and
             np.isfinite(float(r['valence'])) for r in missed)
