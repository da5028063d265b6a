"""The `test` stage: a checkpoint scored on splits; tables, CSVs and plots.

Metrics follow the field's protocol: CCC (population moments), Pearson and
MSE over the concatenation of all frames of the split, plus the average over
recordings (`ccc_per_video_mean_*`). Every real frame is predicted and every
labelled frame is scored, with or without a face; the prediction files flag
frames without a face (`has_face`).

A test stage leaves, in its folder:
  results.json                  metrics of each split (top level: the last)
  results.md                    the same as a Markdown table
  predictions/<split>.csv       one row per frame: video_id, frame, time_s,
                                has_face, pred_<output>, gold_<output>
  predictions/<split>/<video>.csv   the same, one file per recording
  plots/<split>_<plot>.png      the task's plots (affect_jax.plots)
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any, Sequence

import jax
import numpy as np

from affect_jax import inference
from affect_jax import input_pipeline
from affect_jax import plots
from affect_jax import tasks as tasks_lib
from affect_jax import writers
from affect_jax.errors import AffectJaxError


def test_stage(ctx) -> dict[str, Any]:
  """Scores the checkpoint `cfg.checkpoint_from` on each of `cfg.splits`."""
  config, cfg, workdir = ctx.config, ctx.cfg, ctx.workdir
  os.makedirs(workdir, exist_ok=True)
  source = ctx.source(cfg.checkpoint_from)
  if not source:
    raise AffectJaxError(f'config.{ctx.name}.checkpoint_from is empty; name '
                         'a train stage ("stage:finetune") or a path.')
  predictor = inference.Predictor.load(source)
  task, names = predictor.task, predictor.output_names
  columns = task.columns(names)
  per_split = {}
  for split_name in [s.strip() for s in cfg.splits.split(',') if s.strip()]:
    split = input_pipeline.load_split(cfg.dataset, split_name)
    task.check_dataset(split, len(names))
    acc = task.accumulator()
    table = inference.collect(
        predictor.predict_split(split, config.batch_size, config.input), acc)
    results = task.result(acc, names)
    results.update(split=split.name, checkpoint_step=predictor.meta['step'])
    per_split[split_name] = results
    if jax.process_index() == 0:
      write_predictions(os.path.join(workdir, 'predictions'), split_name,
                        table, columns)
      if cfg.plots:
        plots.split_plots(task, table, results, columns, names,
                          os.path.join(workdir, 'plots'), split_name,
                          title=f'{config.get("name", "")} {split.name}')
  last = list(per_split)[-1]
  out = dict(per_split[last], splits=per_split, task=task.name,
             outputs=list(names))
  writers.write_json(os.path.join(workdir, 'results.json'), out)
  if jax.process_index() == 0:
    write_text(os.path.join(workdir, 'results.md'),
                markdown_table(per_split, task, names, order=list(per_split)))
  print(format_table(per_split[last], task, names,
                     title=f'Test results on {per_split[last]["split"]} '
                     f'(checkpoint step {predictor.meta["step"]})'),
        flush=True)
  return out


def score_table(task: tasks_lib.Task, table: inference.FrameTable,
                names: Sequence[str]) -> dict[str, Any]:
  """The task's metrics of a frame table whose outputs are `names`."""
  acc = task.accumulator()
  for vid in table.videos():
    rows = table.rows_of(vid)
    acc.update(table.outputs[rows][None], table.targets[rows][None],
               np.ones((1, rows.size)), [vid], table.frame[rows][None])
  return task.result(acc, names)


def write_text(path: str, text: str) -> None:
  """Writes a text file atomically."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def _safe(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9._-]+', '_', name)


def write_predictions(folder: str, split: str, table: inference.FrameTable,
                      columns: Sequence[tuple[str, int]]) -> str:
  """`<folder>/<split>.csv` and one CSV per recording (atomic writes)."""
  header = (['video_id', 'frame', 'time_s', 'has_face'] +
            [f'pred_{n}' for n, _ in columns] +
            [f'gold_{n}' for n, _ in columns])
  idx = [k for _, k in columns]

  def rows(select):
    for i in select:
      yield ([table.video_id[i], int(table.frame[i]),
              f'{table.time[i]:.3f}', int(table.has_face[i])] +
             [f'{x:.5f}' for x in table.outputs[i, idx]] +
             ['' if np.isnan(x) else f'{x:.5f}' for x in table.targets[i, idx]])

  def write(path, select):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', newline='') as f:
      w = csv.writer(f)
      w.writerow(header)
      w.writerows(rows(select))
    os.replace(tmp, path)

  for vid in table.videos():
    write(os.path.join(folder, split, _safe(vid) + '.csv'),
          table.rows_of(vid))
  path = os.path.join(folder, f'{split}.csv')
  write(path, range(len(table.frame)))
  return path


def read_predictions(path: str) -> tuple[inference.FrameTable, list[str]]:
  """A predictions CSV back as a FrameTable and its output names.

  Raises:
    AffectJaxError: missing file or columns.
  """
  if not os.path.exists(path):
    raise AffectJaxError(f'No predictions file {path}; run the test stage '
                         'that writes it first.')
  with open(path, newline='') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    rows = list(reader)
  need = ['video_id', 'frame', 'time_s', 'has_face']
  if header is None or header[:4] != need:
    raise AffectJaxError(f'{path} is not a predictions file (header '
                         f'{header}); expected {need} + pred_*/gold_*.')
  names = [h[len('pred_'):] for h in header if h.startswith('pred_')]
  k = len(names)
  if header[4:] != [f'pred_{n}' for n in names] + [f'gold_{n}' for n in names]:
    raise AffectJaxError(f'{path}: columns {header[4:]} are not pred_* then '
                         'gold_* of the same outputs.')

  def num(x):
    return float(x) if x != '' else np.nan

  arr = np.array([[num(x) for x in r[4:]] for r in rows],
                 np.float64).reshape(-1, 2 * k)
  table = inference.FrameTable(
      video_id=np.array([r[0] for r in rows], dtype=str),
      frame=np.array([int(r[1]) for r in rows], np.int64),
      time=np.array([float(r[2]) for r in rows], np.float64),
      has_face=np.array([r[3] == '1' for r in rows], bool),
      outputs=arr[:, :k], targets=arr[:, k:])
  return table, names


def _cell(value) -> str:
  if value is None or (isinstance(value, float) and np.isnan(value)):
    return '–'
  return f'{value:.3f}'


def markdown_table(per_split: dict[str, dict[str, Any]], task: tasks_lib.Task,
                   output_names: Sequence[str], order: Sequence[str]) -> str:
  """Rows = metric, columns = output; cells 'last split (earlier splits)',
  as tzirakis2019 Table 5 prints 'test (validation)'."""
  cols = [n for n, _ in task.columns(output_names)]
  main, others = order[-1], list(order[:-1])
  lines = [f'{task.name} results: {main}' + (
      f' ({", ".join(others)} in parentheses)' if others else ''), '',
           '| metric | ' + ' | '.join(cols) + ' |',
           '|---|' + '---|' * len(cols)]

  def cell(key):
    s = _cell(per_split[main].get(key))
    extra = [_cell(per_split[o].get(key)) for o in others]
    return s + (f' ({", ".join(extra)})' if extra else '')

  for metric in task.per_output_metrics:
    lines.append(f'| {metric} | ' + ' | '.join(
        cell(f'{metric}_{c}') for c in cols) + ' |')
  lines.append('')
  for key in task.summary_keys:
    lines.append(f'- {key}: {cell(key)}')
  return '\n'.join(lines) + '\n'


def format_table(results: dict[str, Any], task: tasks_lib.Task,
                 output_names: Sequence[str], title: str = '') -> str:
  """A small text table of the headline metrics of one split."""
  lines = [title] if title else []
  metric_names = task.per_output_metrics
  lines.append(f'{"":12s}' + ''.join(f'{m.upper() if m == "ccc" else m:>9s}'
                                     for m in metric_names))
  for name, _ in task.columns(output_names):
    lines.append(f'{name:12s}' + ''.join(
        f'{results.get(f"{m}_{name}", np.nan):9.3f}' for m in metric_names))
  lines.append('  '.join(f'{k} {results.get(k, np.nan):.3f}'
                         for k in task.summary_keys))
  return '\n'.join(lines)
