r"""One table over several finished runs: `python -m affect_jax.compare DIR ...`.

For each run (an experiment workdir): its config name and seed, the test
metrics of its test stage (the task's headline metrics), the post-processed
ones where a postprocess stage ran, the best validation value and the epochs
to the best validation checkpoint of the train stage that was tested. Runs of
the same config name (e.g. several seeds of one Table-5 initialisation) are
also summarised as mean ± sample std (ddof 1) over their finished runs
(`--no-group` to list runs only). A run whose stages did not all finish
(no `DONE.json`: failed, interrupted or still running) is listed with its
status and left out of the groups and their `runs` count.

  python -m affect_jax.compare /tmp/t5/random_s* /tmp/t5/realeyes_s* \
      [--markdown] [--output=table.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from affect_jax.errors import AffectJaxError


def _read(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def run_row(workdir: str) -> dict[str, Any]:
  """The comparable numbers of one run (see the module docstring)."""
  config = _read(os.path.join(workdir, 'config.json'))
  if config is None:
    raise AffectJaxError(f'{workdir} is not an affect_jax run (no '
                         'config.json); give experiment workdirs.')
  stages = [s.strip() for s in str(config.get('stages', '')).split(',')
            if s.strip()]
  row: dict[str, Any] = {'run': os.path.basename(os.path.normpath(workdir)),
                         'name': config.get('name') or '?',
                         'seed': config.get('seed')}
  unfinished = [n for n in stages
                if not os.path.exists(os.path.join(workdir, n, 'DONE.json'))]
  row['status'] = (f'unfinished: {", ".join(unfinished)}' if unfinished
                   else 'finished')
  tested = None
  for name in stages:
    section = config.get(name) or {}
    kind = section.get('kind')
    if kind == 'test':
      results = _read(os.path.join(workdir, name, 'results.json'))
      if results is None:
        continue
      row['task'] = results.get('task')
      row['split'] = results.get('split')
      for key, value in results.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          row[f'test/{key}'] = value
      ref = section.get('checkpoint_from', '')
      if ref.startswith('stage:'):
        tested = ref[len('stage:'):]
    elif kind == 'postprocess':
      results = _read(os.path.join(workdir, name, 'results.json'))
      if results is None:
        continue
      for key, value in results.items():
        if key.startswith('ccc_') and isinstance(value, float):
          row[f'post/{key}'] = value
  summary = _read(os.path.join(workdir, tested or '', 'summary.json')) if (
      tested) else None
  if summary:
    row['best_epoch'] = summary.get('best_epoch')
    row['best_step'] = summary.get('best_step')
    row['val/best'] = summary.get(f'best_{summary.get("best_metric")}')
  return row


def _columns(rows) -> list[str]:
  from affect_jax import tasks  # pylint: disable=g-import-not-at-top
  keys = []
  for r in rows:
    task = tasks.TASKS.get(r.get('task') or '')
    for k in (task.summary_keys if task else ()):
      if f'test/{k}' in r and f'test/{k}' not in keys:
        keys.append(f'test/{k}')
  post = [f'post/{k[len("test/"):]}' for k in keys]
  keys += [k for k in post if any(k in r for r in rows)]
  return keys + [k for k in ('val/best', 'best_epoch')
                 if any(k in r for r in rows)]


def _fmt(v, digits=3) -> str:
  if v is None or (isinstance(v, float) and np.isnan(v)):
    return '–'
  if isinstance(v, float):
    return f'{v:.{digits}f}'
  return str(v)


def table(rows: list[dict[str, Any]], group: bool = True) -> str:
  """A Markdown table of the runs, then one of the groups (mean ± std).

  The groups hold finished runs only; std is the sample std (ddof 1), '–'
  for a group of one.
  """
  cols = _columns(rows)
  status = any(r.get('status', 'finished') != 'finished' for r in rows)
  head = '| run | config | seed | ' + ('status | ' if status else '')
  lines = [head + ' | '.join(cols) + ' |',
           '|---|---|---|' + ('---|' if status else '') + '---|' * len(cols)]
  for r in rows:
    lines.append(f'| {r["run"]} | {r["name"]} | {_fmt(r["seed"])} | ' +
                 (f'{r.get("status")} | ' if status else '') +
                 ' | '.join(_fmt(r.get(c), 1 if c == 'best_epoch' else 3)
                            for c in cols) + ' |')
  done = [r for r in rows if r.get('status', 'finished') == 'finished']
  names = list(dict.fromkeys(r['name'] for r in done))
  if group and len(names) < len(done):
    lines += ['', '| config | runs | ' + ' | '.join(cols) + ' |',
              '|---|---|' + '---|' * len(cols)]
    for n in names:
      members = [r for r in done if r['name'] == n]
      cells = []
      for c in cols:
        v = np.array([r[c] for r in members if r.get(c) is not None],
                     np.float64)
        d = 1 if c == 'best_epoch' else 3
        cells.append('–' if v.size == 0 else f'{v.mean():.{d}f}' + (
            f' ± {v.std(ddof=1):.{d}f}' if v.size > 1 else ''))
      lines.append(f'| {n} | {len(members)} | ' + ' | '.join(cells) + ' |')
    left = len(rows) - len(done)
    if left:
      lines += ['', f'({left} unfinished run(s) left out of the groups.)']
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      prog='python -m affect_jax.compare',
      description='One table over finished runs (mean ± std over runs of '
      'the same config name).')
  p.add_argument('workdirs', nargs='+', help='Experiment workdirs.')
  p.add_argument('--no-group', dest='group', action='store_false',
                 help='Do not add the mean ± std table.')
  p.add_argument('--output', default=None, help='Also write the table here.')
  args = p.parse_args(argv)
  try:
    rows = [run_row(w) for w in args.workdirs]
  except AffectJaxError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  folder = os.path.dirname(os.path.abspath(args.output or '.'))
  if args.output and not os.path.isdir(folder):
    print(f'error: --output={args.output}: folder {folder} does not exist; '
          'create it or write the table elsewhere.', file=sys.stderr)
    return 2
  text = table(rows, args.group)
  print(text, end='')
  if args.output:
    with open(args.output, 'w') as f:
      f.write(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
