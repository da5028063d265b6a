"""predict on folders and lists at scale: workers, kill and resume, the
pipeline of threads against the serial path (affect_jax.predict_folder)."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from affect_jax import predict
from affect_jax import predict_folder
from affect_jax.errors import AffectJaxError
from tests.test_predict import _face_frames
from tests.test_predict import two_faces  # pylint: disable=unused-import
from tests.test_predict import va_model  # pylint: disable=unused-import
from tfds_builders import core

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = 10
BROKEN = ('c_notes.mp4', 'x_cut.mp4')  # Not a video; truncated.


@pytest.fixture(scope='module')
def model(va_model):
  return va_model


@pytest.fixture(scope='module')
def serial_runner(model):
  return predict.Runner(model, serial=True)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """12 videos: 10 of a face (different lengths), 2 broken."""
  root = tmp_path_factory.mktemp('videos')
  frames = _face_frames(24)
  for i in range(GOOD):
    core.write_video(str(root / f'v{i:02d}.mp4'), frames[:14 + i], fps=25)
  (root / BROKEN[0]).write_text('hello, I am not a video\n' * 50)
  rng = np.random.default_rng(0)
  noise = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
           for _ in range(40)]
  cut = str(root / BROKEN[1])
  core.write_video(cut, noise, fps=25, options={'movflags': 'faststart'})
  with open(cut, 'r+b') as f:
    f.truncate(os.path.getsize(cut) // 2)
  return root


@pytest.fixture(scope='module')
def reference(folder, serial_runner, tmp_path_factory):
  """{stem: CSV bytes} of each good video, predicted serially in-process."""
  out = tmp_path_factory.mktemp('reference')
  ref = {}
  for i in range(GOOD):
    csv = str(out / f'v{i:02d}.csv')
    serial_runner.predict_file(str(folder / f'v{i:02d}.mp4'), csv,
                               progress=False)
    with open(csv, 'rb') as f:
      ref[f'v{i:02d}'] = f.read()
  return ref


def _cli(*args, **kwargs):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
             os.environ.get('PYTHONPATH', ''), JAX_PLATFORMS='cpu')
  return subprocess.Popen([sys.executable, '-m', 'affect_jax.predict', *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, **kwargs)


def _log(out):
  path = out / predict_folder.LOG_NAME
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines()
          if l.endswith('}')]


def test_folder_killed_and_resumed(model, folder, reference, tmp_path):
  """--workers=2 on 12 videos, SIGKILL of the whole process group after 3
  are recorded, then the same command again: every good video ends with
  the serial path's CSV byte for byte, the broken two are named (and not
  retried), nothing recorded is predicted twice, a partial or altered CSV
  is predicted again, a killed run's temporary files are removed."""
  out = tmp_path / 'out'
  args = (f'--model={model}', f'--input={folder}', f'--output={out}',
          '--workers=2')
  proc = _cli(*args, start_new_session=True)
  deadline = time.time() + 240
  while len([e for e in _log(out) if e['status'] == 'done']) < 3:
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.communicate()
  first = _log(out)
  done = {e['csv'][:-4] for e in first if e['status'] == 'done'}
  assert 3 <= len(done) < GOOD  # Killed partway.
  left = sorted(set(reference) - done)
  # A partial CSV of an unrecorded video, under its real name: redone.
  (out / f'{left[0]}.csv').write_bytes(reference[left[0]][:100])
  # A recorded CSV altered since: redone.
  altered = sorted(done)[0]
  (out / f'{altered}.csv').write_bytes(reference[altered][:-20])
  # A dead process's temporary file: removed.
  (out / f'{left[-1]}.csv.tmp-999999999').write_text('frame,ti')
  kept = {s: os.stat(out / f'{s}.csv').st_mtime_ns for s in done - {altered}}

  proc = _cli(*args[:-1], '--workers=1')  # In this process, the same CSVs.
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 2, stderr
  assert f'files already done in {out / predict_folder.LOG_NAME}' in stdout
  for s, csv in reference.items():
    assert (out / f'{s}.csv').read_bytes() == csv, s
  for s, mtime in kept.items():
    assert os.stat(out / f'{s}.csv').st_mtime_ns == mtime, s
  table = stdout[stdout.index('| file | reason |'):]
  assert str(folder / BROKEN[0]) in table and 'not a video' in table
  assert str(folder / BROKEN[1]) in table and 'holds the predictions of the' in table
  assert 'error: 2 of 12 files failed' in stderr
  log = _log(out)
  runs = {}
  for e in log:
    runs.setdefault(e['csv'][:-4], []).append(e['status'])
  for s in reference:
    assert runs[s] == ['done'] * (2 if s == altered else 1), (s, runs[s])
  for name in BROKEN:  # Each failed once, whichever run tried it.
    assert runs[name[:-4]] == ['failed'], runs
  assert sorted(os.listdir(out)) == sorted(
      [f'{s}.csv' for s in reference] + ['x_cut.csv', predict_folder.LOG_NAME])
  lines = stdout.splitlines()
  failed = [l for l in lines if ': FAILED: ' in l]
  assert failed and all('c_notes.mp4' in l or 'x_cut.mp4' in l
                        for l in failed)
  # One summary line per video predicted by this run.
  redone = [l for l in lines if re.search(r'v\d\d.mp4: \d+ frames, [\d.]+ '
                                           r'frames/s, faces found in \d+%', l)]
  assert len(redone) == GOOD - len(done) + 1


def test_list_resume_settings_and_missing_file(model, folder, serial_runner,
                                               tmp_path, capsys):
  """--input=@LIST (paths relative to the list), in this process: a missing
  file is a failure of its own; a second run skips everything; a run with
  other settings into the same folder is refused naming the log."""
  listing = tmp_path / 'list.txt'
  rel = os.path.relpath(folder, tmp_path)
  listing.write_text(f'# two videos and a file that is not there\n'
                     f'{rel}/v01.mp4\n\n{rel}/v00.mp4\ngone.mp4\n')
  out = tmp_path / 'out'
  with pytest.raises(AffectJaxError, match='1 of 3 files failed'):
    predict.predict(model, f'@{listing}', str(out), progress=False)
  text = capsys.readouterr().out
  assert f'| {tmp_path / "gone.mp4"} | Input ' in text
  assert sorted(os.listdir(out)) == [predict_folder.LOG_NAME, 'v00.csv',
                                     'v01.csv']
  before = os.stat(out / 'v00.csv').st_mtime_ns
  with pytest.raises(AffectJaxError, match='1 of 3 files failed'):
    predict.predict(model, f'@{listing}', str(out), progress=False)
  text = capsys.readouterr().out
  assert 'Skipping 3 of 3 files' in text and 'an earlier run' in text
  assert os.stat(out / 'v00.csv').st_mtime_ns == before
  with pytest.raises(AffectJaxError, match=r'other settings \(smooth 0.0 '
                     r'there, 1.0 now\).*new --output folder'):
    predict.predict(model, f'@{listing}', str(out), progress=False, smooth=1.0)
  twice = tmp_path / 'twice.txt'
  twice.write_text(f'{rel}/v01.mp4\nother/v01.mkv\n')
  with pytest.raises(AffectJaxError, match="several files named 'v01'"):
    predict.predict(model, f'@{twice}', str(out), progress=False)


def test_pipeline_threads_match_serial_byte_for_byte(model, serial_runner,
                                                     folder, two_faces,
                                                     tmp_path, monkeypatch):
  """Decoding and face finding run in threads of their own (seen from the
  stage), and the CSVs are the serial path's, byte for byte, for the largest
  face and for --all_faces; an error in a stage reaches the caller."""
  runner = predict.Runner(model)
  where = set()
  real = predict.Preprocess.faces

  def faces(self, *args):
    where.add(threading.current_thread().name)
    return real(self, *args)

  monkeypatch.setattr(predict.Preprocess, 'faces', faces)
  for name, path, all_faces in (('one', str(folder / 'v09.mp4'), False),
                                ('all', two_faces['both'], True)):
    for r, tag in ((runner, 'threads'), (serial_runner, 'serial')):
      r.predict_file(path, str(tmp_path / f'{name}_{tag}.csv'), False,
                     all_faces)
    assert (tmp_path / f'{name}_threads.csv').read_bytes() == (
        tmp_path / f'{name}_serial.csv').read_bytes()
  assert where == {'faces', 'MainThread'}

  def broken(self, *args):
    raise ValueError('stage failed')

  monkeypatch.setattr(predict.Preprocess, '__call__', broken)
  with pytest.raises(ValueError, match='stage failed'):
    runner.predict_file(str(folder / 'v00.mp4'), str(tmp_path / 'x.csv'),
                        False)
  assert not [t for t in threading.enumerate() if t.name in ('faces',
                                                             'decode')]
