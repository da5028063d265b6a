"""`predict` on a folder or list of thousands of videos: workers, resumable.

  python -m affect_jax.predict --model=DIR --input=FOLDER|@LIST.txt \
      --output=OUT_DIR [--workers=N] [--retry_failed] [other predict flags]

Each input gets `OUT_DIR/<file stem>.csv` (and `.png` / `.mp4` under --plot /
--overlay), as for a folder before; `--workers=N` processes each load the
model once and take the files one after the other.

What is complete is recorded in `OUT_DIR/predict_log.jsonl`: one JSON line
per finished file, appended (and fsync'ed) by the coordinating process
after the worker has renamed the file's CSV into place: the input (real
path, size, mtime), the CSV's size and SHA-256, the frames, the status
(done / failed, with the reason) and the settings the CSV depends on (the
model and the flags that change numbers). A later run with the same command
skips a file whose line says done, whose input is unchanged and whose CSV is
still the one recorded (size and hash), so:

  * a run killed at any point (SIGTERM, SIGKILL, a crash, a power cut) loses
    only the files in progress: their CSVs are still temporary files
    (`writers.atomic_open`), removed by the next run, or renamed but not yet
    in the log, or (a power cut) in the log but with other bytes: all are
    predicted again;
  * a CSV that is not in the log (an older run's, a copy, a partial one) is
    predicted again, never taken as complete;
  * a file that failed (unreadable, truncated: its CSV holds the frames that
    decoded) is named again in the failure table without being retried,
    unless it changed or --retry_failed is given.

A log written with other settings (another model, --all_faces, --smooth,
...) is an error: a folder holds the predictions of one command. One run at
a time per output folder (`RUNNING.lock`, affect_jax.workdir_lock).

Output: a line per file on stdout (frames, frames/s, faces found), a
progress line on stderr (files, frames/s over the run, time left from the
bytes still to read), and at the end a table of the files that failed with a
one-line reason; the exit status is then 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import queue
import re
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Sequence

from affect_jax import predict
from affect_jax import workdir_lock
from affect_jax.errors import AffectJaxError, Interrupted

LOG_NAME = 'predict_log.jsonl'
# Flags whose value changes what a CSV holds (not --batch_size, --workers).
SETTINGS = ('all_faces', 'predict_without_face', 'fill_missing', 'smooth',
            'postprocess', 'detect_every', 'track', 'detect_max_side')
_TMP = re.compile(r'\.tmp-(\d+)$')


def read_list(path: str) -> list[str]:
  """The paths of a list file, one a line (relative: to the list's folder).

  Blank lines and lines starting with '#' are skipped.
  """
  try:
    with open(path) as f:
      lines = [l.strip() for l in f]
  except OSError as e:
    raise AffectJaxError(f'Cannot read the list file {path} ({e.strerror}); '
                         'pass --input=@FILE with one video path a line.'
                         ) from None
  root = os.path.dirname(os.path.abspath(path))
  files = [os.path.join(root, l) for l in lines if l and not l.startswith('#')]
  if not files:
    raise AffectJaxError(f'List file {path} names no file (one video or '
                         'image path a line).')
  predict.check_stems(files, f'List {path}')
  return files


@dataclasses.dataclass
class Job:
  """One input and where its outputs go."""
  index: int
  path: str
  csv: str
  plot: str | None = None
  overlay: str | None = None


@dataclasses.dataclass
class Summary:
  """What became of one input (`predict.predict` returns these for a folder)."""
  file: str
  csv: str
  frames: int = 0
  rows: int = 0
  seconds: float = 0.0
  frames_per_second: float = 0.0
  face_fraction: float = 0.0
  error: str | None = None  # One line; None: done.
  earlier: bool = False  # Failed in an earlier run (not retried).


def one_line(e: BaseException | str, job: Job | None = None,
             limit: int = 400) -> str:
  """The message on one line, the job's input and CSV by their names only."""
  text = ' '.join(str(e).split())
  for path in (job.path, job.csv) if job else ():
    text = text.replace(path, os.path.basename(path))
  return text if len(text) <= limit else text[:limit - 3] + '...'


def digest(path: str) -> tuple[int, str] | None:
  """(size, SHA-256 hex) of a file; None if it is missing."""
  h = hashlib.sha256()
  try:
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
  except OSError:
    return None
  return os.path.getsize(path), h.hexdigest()


def _input_key(path: str) -> dict[str, Any]:
  try:
    st = os.stat(path)
  except OSError:
    return {'input': os.path.realpath(path)}
  return {'input': os.path.realpath(path), 'size': st.st_size,
          'mtime_ns': st.st_mtime_ns}


class Log:
  """`OUT_DIR/predict_log.jsonl`: the files finished, one JSON line each."""

  def __init__(self, folder: str, settings: dict[str, Any]):
    self.path = os.path.join(folder, LOG_NAME)
    self.settings = settings
    self.entries: dict[str, dict[str, Any]] = {}  # By CSV file name.
    try:
      with open(self.path, 'rb') as f:
        data = f.read()
    except FileNotFoundError:
      data = b''
    for line in data.splitlines():
      try:  # A line cut short by a kill is ignored: that file is redone.
        e = json.loads(line)
      except ValueError:
        continue
      if e.get('settings') != settings:
        raise AffectJaxError(self._other_settings(e.get('settings') or {}))
      self.entries[e['csv']] = e
    self._f = open(self.path, 'ab')
    if data and not data.endswith(b'\n'):
      self._f.write(b'\n')  # After a cut line, start a new one.

  def _other_settings(self, theirs: dict[str, Any]) -> str:
    differ = [f'{k} {theirs.get(k)!r} there, {self.settings.get(k)!r} now'
              for k in sorted(set(theirs) | set(self.settings))
              if theirs.get(k) != self.settings.get(k)]
    return (f'{self.path} records predictions made with other settings '
            f'({"; ".join(differ)}): write to a new --output folder, or delete '
            f'{self.path} to predict every file again with these.')

  def status(self, job: Job, retry_failed: bool) -> dict[str, Any] | None:
    """The entry that makes `job` finished (skip it), or None (predict it)."""
    e = self.entries.get(os.path.basename(job.csv))
    if e is None or {k: e.get(k) for k in ('input', 'size', 'mtime_ns')} != {
        'size': None, 'mtime_ns': None, **_input_key(job.path)}:
      return None
    if e['status'] == 'failed':
      return None if retry_failed else e
    if [e.get('csv_size'), e.get('csv_sha256')] != list(
        digest(job.csv) or (None, None)):
      return None
    if any(p and not os.path.isfile(p) for p in (job.plot, job.overlay)):
      return None
    return e

  def add(self, job: Job, s: Summary) -> None:
    """Appends `s` (the CSV is in place) and forces it to disk."""
    found = digest(s.csv) if os.path.exists(s.csv) else None
    e = {'csv': os.path.basename(job.csv), **_input_key(job.path),
         'status': 'failed' if s.error else 'done', 'error': s.error,
         'frames': s.frames, 'rows': s.rows,
         'seconds': round(s.seconds, 3),
         'face_fraction': round(s.face_fraction, 4),
         'csv_size': found[0] if found else None,
         'csv_sha256': found[1] if found else None,
         'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
         'settings': self.settings}
    self._f.write(json.dumps(e).encode() + b'\n')
    self._f.flush()
    os.fsync(self._f.fileno())
    self.entries[e['csv']] = e

  def close(self) -> None:
    self._f.close()


def remove_stale_temporaries(folders: Sequence[str | None]) -> None:
  """Removes the `*.tmp-<pid>` files of dead processes (a killed run's)."""
  for folder in {f for f in folders if f and os.path.isdir(f)}:
    for name in os.listdir(folder):
      m = _TMP.search(name)
      if m and not workdir_lock.alive(int(m.group(1))):
        os.remove(os.path.join(folder, name))


class FolderProgress:
  """'[37/1200 files, 2 failed] 98.1 frames/s, 1h02m left' on stderr.

  Frames/s is over the whole run so far; the time left is the elapsed time
  scaled by the input bytes still to go (files in progress count by the
  fraction of their frames done). Twice a second on a terminal, else a line
  every `every_s` seconds.
  """

  def __init__(self, jobs: Sequence[Job], every_s: float = 30.0):
    self.sizes = {j.index: _input_key(j.path).get('size') or 1 for j in jobs}
    self.total = sum(self.sizes.values())
    self.files, self.done, self.failed, self.frames = len(jobs), 0, 0, 0
    self.running: dict[int, tuple[int, float]] = {}  # Frames, fraction.
    self.tty = sys.stderr.isatty()
    self.every = 0.5 if self.tty else every_s
    self.start = self.shown = time.perf_counter()
    self.bytes_done = 0.0

  def update(self, index: int, frames: int, total: int | None) -> None:
    self.running[index] = (frames, min(1.0, frames / total) if total else 0.0)
    self._maybe_show()

  def finish(self, index: int, s: Summary) -> None:
    self.running.pop(index, None)
    self.done += 1
    self.failed += s.error is not None
    self.frames += s.frames
    self.bytes_done += self.sizes[index]
    self._maybe_show()

  def line(self) -> str:
    now = time.perf_counter()
    frames = self.frames + sum(f for f, _ in self.running.values())
    done = self.bytes_done + sum(self.sizes[i] * fr for i, (_, fr) in
                                 self.running.items())
    elapsed = now - self.start
    left = ''
    if done > 0:
      s = elapsed * (self.total - done) / done
      left = f', {int(s // 3600)}h{int(s % 3600 // 60):02d}m{int(s % 60):02d}s left'
    return (f'[{self.done}/{self.files} files, {self.failed} failed, '
            f'{len(self.running)} running] {frames} frames, '
            f'{frames / max(elapsed, 1e-9):.1f} frames/s{left}')

  def _maybe_show(self) -> None:
    now = time.perf_counter()
    if now - self.shown >= self.every:
      self.shown = now
      self.show()

  def show(self, end: str | None = None) -> None:
    if self.tty:
      print('\r' + self.line() + '\033[K', end=end or '', file=sys.stderr,
            flush=True)
    else:
      print(self.line(), file=sys.stderr, flush=True)

  def clear(self) -> None:
    if self.tty:
      print('\r\033[K', end='', file=sys.stderr, flush=True)


def run_job(runner, job: Job, all_faces: bool,
            progress: Callable[[int, int | None], None] | bool) -> Summary:
  """Predicts one input (`predict.predict_and_plot`); failures as a Summary."""
  start = time.perf_counter()
  try:
    r = predict.predict_and_plot(runner, job.path, job.csv, progress,
                                 all_faces, job.overlay, job.plot)
  except AffectJaxError as e:
    return Summary(job.path, job.csv, seconds=time.perf_counter() - start,
                   error=one_line(e, job))
  except Exception as e:  # pylint: disable=broad-except
    # One file's bug must not stop the thousands after it: reported.
    traceback.print_exc(file=sys.stderr)
    return Summary(job.path, job.csv, seconds=time.perf_counter() - start,
                   error=one_line(f'{type(e).__name__}: {e} (unexpected: '
                                  'please report it with this file)', job))
  seconds = time.perf_counter() - start
  return Summary(job.path, job.csv, r.frames, r.rows, seconds,
                 r.frames / max(seconds, 1e-9), r.face_fraction)


def _worker(runner_kwargs: dict[str, Any], all_faces: bool, tasks, results
            ) -> None:
  """A worker process: loads the model once, then predicts job after job."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # The coordinator decides.
  parent = os.getppid()

  def watch():  # A killed coordinator takes its workers with it.
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True).start()
  try:
    runner = predict.Runner(**runner_kwargs)
  except BaseException as e:  # pylint: disable=broad-except
    results.put(('dead', os.getpid(), one_line(e)))
    return
  while True:
    try:
      job = tasks.get(timeout=1.0)
    except queue.Empty:
      continue
    if job is None:
      return
    results.put(('start', os.getpid(), job.index))
    shown = [0.0]

    def progress(frames, total, index=job.index):
      now = time.perf_counter()
      if now - shown[0] >= 0.5:
        shown[0] = now
        results.put(('progress', os.getpid(), index, frames, total))

    results.put(('done', os.getpid(), job.index,
                 run_job(runner, job, all_faces, progress)))


def _report(prefix: str, s: Summary) -> None:
  name = os.path.basename(s.file)
  if s.error:
    print(f'{prefix} {name}: FAILED: {s.error}', flush=True)
  else:
    print(f'{prefix} {name}: {s.frames} frames, {s.frames_per_second:.1f} '
          f'frames/s, faces found in {s.face_fraction:.0%} -> {s.csv}',
          flush=True)


def failure_table(failed: Sequence[Summary]) -> str:
  """Markdown: file, one-line reason."""
  lines = ['| file | reason |', '|---|---|']
  for s in failed:
    why = s.error.replace('|', '/')
    if s.earlier:
      why += ' (an earlier run; --retry_failed tries it again)'
    lines.append(f'| {s.file} | {why} |')
  return '\n'.join(lines)


def run(files: Sequence[str], output: str, runner_kwargs: dict[str, Any],
        all_faces: bool = False, plot: str | None = None,
        overlay: str | None = None, workers: int = 1,
        retry_failed: bool = False, progress: bool = True,
        runner=None) -> list[Summary]:
  """Predicts `files` into the folder `output`, resuming where a run stopped.

  Args:
    runner_kwargs: `predict.Runner`'s arguments (each worker makes one).
    workers: processes; 1: in this process (with `runner` if given).

  Returns:
    The Summary of each file predicted by this run, in input order.

  Raises:
    AffectJaxError: after all files, if any failed (the table printed above
      names them), or at once for a log of other settings or a busy folder.
  """
  if workers < 1:
    raise AffectJaxError(f'--workers={workers} is out of range: at least 1.')
  os.makedirs(output, exist_ok=True)
  given = dict(runner_kwargs, all_faces=bool(all_faces),
               fill_missing=runner_kwargs.get('fill', 'none'))
  settings = {'model': os.path.realpath(runner_kwargs['model']),
              **{k: given.get(k) for k in SETTINGS}}
  lock = workdir_lock.acquire(output)
  on_term = None
  if threading.current_thread() is threading.main_thread():
    on_term = signal.signal(signal.SIGTERM, _interrupted)
  try:
    log = Log(output, settings)
    try:
      return _run(files, output, runner_kwargs, all_faces, plot, overlay,
                  workers, retry_failed, progress, runner, log)
    finally:
      log.close()
  finally:
    workdir_lock.release(lock)
    if on_term is not None:
      signal.signal(signal.SIGTERM, on_term)


def _interrupted(signum, unused_frame):
  raise Interrupted(
      f'Interrupted by signal {signum}: the files in progress were not '
      'recorded; run the same command again to go on from there.', signum)


def _jobs(files, output, plot, overlay) -> list[Job]:
  jobs = []
  for i, path in enumerate(files):
    stem = os.path.splitext(os.path.basename(path))[0]
    drawn = None
    if overlay:
      drawn = os.path.join(overlay, stem + (
          '.png' if path.lower().endswith(predict.IMAGE_EXTENSIONS) else
          '.mp4'))
    jobs.append(Job(i, path, os.path.join(output, f'{stem}.csv'),
                    os.path.join(plot, f'{stem}.png') if plot else None,
                    drawn))
  return jobs


def _run(files, output, runner_kwargs, all_faces, plot, overlay, workers,
         retry_failed, progress, runner, log: Log) -> list[Summary]:
  remove_stale_temporaries([output, plot, overlay])
  jobs = _jobs(files, output, plot, overlay)
  todo, earlier = [], []
  for job in jobs:
    e = log.status(job, retry_failed)
    if e is None:
      todo.append(job)
    elif e['status'] == 'failed':
      earlier.append(Summary(job.path, job.csv, e.get('frames') or 0,
                             error=e.get('error') or 'failed', earlier=True))
  skipped = len(jobs) - len(todo)
  if skipped:
    print(f'Skipping {skipped} of {len(jobs)} files already done in {log.path}'
          + (f' ({len(earlier)} of them failed: --retry_failed tries them '
             'again)' if earlier else '') + '.', flush=True)
  bar = FolderProgress(todo) if progress else None
  results: dict[int, Summary] = {}
  count = [0]

  def finished(job: Job, s: Summary) -> None:
    log.add(job, s)
    results[job.index] = s
    count[0] += 1
    if bar:
      bar.finish(job.index, s)
      bar.clear()
    _report(f'[{count[0]}/{len(todo)}]', s)

  start = time.perf_counter()
  if todo and workers == 1:
    if runner is None:
      runner = predict.Runner(**runner_kwargs)
    for job in todo:
      report = ((lambda f, t, i=job.index: bar.update(i, f, t)) if bar
                else False)
      finished(job, run_job(runner, job, all_faces, report))
  elif todo:
    _pool(todo, min(workers, len(todo)), runner_kwargs, all_faces, bar,
          finished)
  seconds = time.perf_counter() - start
  done = [results[j.index] for j in todo]
  frames = sum(s.frames for s in done)
  failed = [s for s in done if s.error] + earlier
  if bar:
    bar.clear()
  print(f'Predicted {len(done) - len(failed) + len(earlier)} of {len(jobs)} '
        f'files ({skipped} skipped: done before), {len(failed)} failed; '
        f'{frames} frames in {seconds:.1f} s, '
        f'{frames / max(seconds, 1e-9):.1f} frames/s.', flush=True)
  if failed:
    print(failure_table(failed), flush=True)
    raise AffectJaxError(
        f'{len(failed)} of {len(jobs)} files failed (the table above names '
        f'them and why); the others are in {output}.')
  return done


def _pool(todo: Sequence[Job], workers: int, runner_kwargs, all_faces, bar,
          finished: Callable[[Job, Summary], None]) -> None:
  """Runs `todo` on `workers` processes (spawned: JAX is not fork-safe)."""
  ctx = multiprocessing.get_context('spawn')
  tasks, results = ctx.Queue(), ctx.Queue()
  for job in todo:
    tasks.put(job)
  by_index = {j.index: j for j in todo}
  procs: dict[int, Any] = {}
  current: dict[int, int] = {}  # Worker pid -> job index.

  def start():
    p = ctx.Process(target=_worker, args=(runner_kwargs, all_faces, tasks,
                                          results), daemon=True)
    p.start()
    procs[p.pid] = p

  for _ in range(workers):
    start()
  left = set(by_index)
  try:
    while left:
      try:
        msg = results.get(timeout=0.5)
      except queue.Empty:
        msg = None
      if msg is None:
        for pid, p in list(procs.items()):
          if p.exitcode is None:
            continue
          del procs[pid]
          index = current.pop(pid, None)
          if index is not None and index in left:  # It died on this file.
            left.discard(index)
            job = by_index[index]
            finished(job, Summary(job.path, job.csv, error=(
                f'the worker predicting it died (exit status {p.exitcode}'
                f'{": killed, out of memory?" if p.exitcode == -9 else ""})')))
          if left and len(procs) < workers:
            start()
        continue
      kind, pid = msg[0], msg[1]
      if kind == 'dead':
        raise AffectJaxError(msg[2])
      if kind == 'start':
        current[pid] = msg[2]
      elif kind == 'progress' and bar:
        bar.update(msg[2], msg[3], msg[4])
      elif kind == 'done':
        current.pop(pid, None)
        left.discard(msg[2])
        finished(by_index[msg[2]], msg[3])
  finally:
    for _ in procs:
      tasks.put(None)
    for p in procs.values():
      p.join(timeout=5)
      if p.exitcode is None:
        p.terminate()
        p.join()
