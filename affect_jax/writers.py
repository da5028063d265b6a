"""Metric writers (TensorBoard events via tensorboardX plus a CSV) and the
atomic file writers every output goes through.

clu's metric writers import TensorFlow, which this project must not need, so
TensorBoard events are written with tensorboardX. Only process 0 writes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import sys
import time
from typing import Any, Iterable, Iterator, IO, Mapping, Sequence

import jax

from affect_jax import distributed


class MetricWriter:
  """Writes scalars to `<logdir>/events.*` and `<logdir>/metrics.csv`.

  The CSV has one row per (step, name, value), so new metric names can appear
  at any time and a resumed run appends to the same file.
  """

  def __init__(self, logdir: str):
    self._active = jax.process_index() == 0
    self._undefined: set[str] = set()
    self._tb = None
    self._csv = None
    if not self._active:
      return
    os.makedirs(logdir, exist_ok=True)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(logdir)
    path = os.path.join(logdir, 'metrics.csv')
    # An empty file is new too: a run that failed before its first line.
    new = not os.path.exists(path) or not os.path.getsize(path)
    self._csv_file = open(path, 'a', newline='')
    self._csv = csv.writer(self._csv_file)
    if new:
      self._csv.writerow(['step', 'name', 'value', 'wall_time'])
      self._csv_file.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    if not self._active:
      return
    now = time.time()
    undefined = []
    for name, value in scalars.items():
      value = float(value)
      if not math.isfinite(value):
        # TensorBoard rejects NaN/Inf; an undefined metric is left out.
        if name not in self._undefined:
          self._undefined.add(name)
          undefined.append(name)
        continue
      self._tb.add_scalar(name, value, global_step=step, walltime=now)
      self._csv.writerow([step, name, f'{value:.6g}', f'{now:.3f}'])
    self._csv_file.flush()
    self._tb.flush()
    if undefined:
      print(f'Note: not logged, undefined at step {step} (e.g. the AUC of a '
            'class with no positive or no negative frame in the split): '
            + ', '.join(undefined), flush=True)

  def close(self):
    if self._active:
      self._tb.close()
      self._csv_file.close()


def versions() -> dict[str, str]:
  """Versions of Python and the packages that decide results."""
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  out = {'python': sys.version.split()[0], 'platform': platform.platform()}
  for pkg in ('affect_jax', 'jax', 'jaxlib', 'flax', 'optax',
              'orbax-checkpoint', 'grain', 'clu', 'tensorflow-datasets', 'numpy',
              'pillow'):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      out[pkg] = 'not installed'
  out['devices'] = f'{jax.device_count()} x {jax.devices()[0].device_kind}'
  out['processes'] = str(jax.process_count())
  return out


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'w', newline: str | None = None
                ) -> Iterator[IO]:
  """Opens `path` for writing (`mode` 'w' or 'wb') through `<path>.tmp-<pid>`.

  The temporary file is renamed onto `path` when the block ends and removed
  when it raises (a crash, Ctrl-C, a decoding error), so no half-written
  file is ever left under the real name. Every file the project writes for
  a user (JSON, CSV, Markdown, plots, index caches) goes through here.
  """
  if mode not in ('w', 'wb'):
    raise ValueError(f'atomic_open: mode {mode!r} is not \'w\' or \'wb\'.')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}'
  f = open(tmp, mode, newline=newline)
  try:
    yield f
  except BaseException:
    f.close()
    os.remove(tmp)
    raise
  f.close()
  os.replace(tmp, path)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]
              ) -> None:
  """Writes a CSV (a header, then `rows`) atomically."""
  with atomic_open(path, newline='') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def write_text(path: str, text: str) -> None:
  """Writes a text file atomically."""
  with atomic_open(path) as f:
    f.write(text)


def write_json(path: str, obj: Any):
  """Writes JSON atomically (a crash never leaves half a file).

  Process 0 writes; every process calls it and returns once the file is
  there, so that any process may read it next (a stage's DONE.json).
  """
  if jax.process_index() == 0:
    with atomic_open(path) as f:
      json.dump(obj, f, indent=2, sort_keys=True, default=str)
  distributed.barrier(f'write_json {os.path.basename(path)}')


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)
