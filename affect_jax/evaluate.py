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

from affect_jax import abaw
from affect_jax import inference
from affect_jax import input_pipeline
from affect_jax import metrics
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
  per_split = {}
  for split_name in [s.strip() for s in cfg.splits.split(',') if s.strip()]:
    split = input_pipeline.load_split(cfg.dataset, split_name)
    per_split[split_name] = score_split(
        predictor, split, config, workdir, split_name, plots_=cfg.plots,
        aggregate=cfg.get('aggregate', ''), protocol=cfg.get('protocol', ''))
  return write_results(workdir, per_split, task, names,
                       f'(checkpoint step {predictor.meta["step"]})')


def score_split(predictor: inference.Predictor,
                split: input_pipeline.SplitData, config, workdir: str,
                label: str, plots_: bool = True, aggregate: str = '',
                protocol: str = '') -> dict[str, Any]:
  """One split scored by a model: metrics, prediction CSVs and plots.

  Args:
    predictor: the model.
    split: the prepared split (or a fold of one).
    config: the experiment config (batch size; loader threads).
    workdir: where predictions/ and plots/ go.
    label: the split's name in file names (`predictions/<label>.csv`).
    plots_: write the task's plots.
    aggregate: '' or 'clip': also score one class per clip
      (`metrics.aggregate_clips`; `clip_*` metrics, a clip CSV and a clip
      confusion plot).
    protocol: '' or 'abaw': also the challenge's `abaw_score`
      (affect_jax.abaw).
  """
  task, names = predictor.task, predictor.output_names
  task.check_dataset(split, len(names))
  if aggregate not in ('', 'clip'):
    raise AffectJaxError(f'aggregate={aggregate!r} (config <stage>.aggregate)'
                         "; use '' or 'clip'.")
  if aggregate and task.needs != 'classes':
    raise AffectJaxError(f'aggregate={aggregate!r} needs a class task; the '
                         f'model\'s task is {task.name!r}.')
  check_protocol(protocol, task.name, names)
  acc = task.accumulator()
  table = inference.collect(
      predictor.predict_split(split, config.batch_size, config.input), acc)
  results = task.result(acc, names)
  results.update(split=split.name, checkpoint_step=predictor.meta['step'])
  if protocol == 'abaw':
    results.update(abaw.scores(task.name, results))
  clips = None
  if aggregate:
    clips = metrics.aggregate_clips(table.video_id, table.outputs,
                                    table.targets, table.has_face)
    report = metrics.classification_report(clips[1], clips[2], names)
    report['num_clips'] = report.pop('num_frames')
    results.update({f'clip_{k}': v for k, v in report.items()})
  if jax.process_index() == 0:
    columns = task.columns(names)
    write_predictions(os.path.join(workdir, 'predictions'), label, table,
                      columns)
    if clips is not None:
      write_clips(os.path.join(workdir, 'predictions', f'{label}_clips.csv'),
                  clips, names)
    if plots_:
      title = f'{config.get("name", "")} {split.name}'
      plots.split_plots(task, table, results, columns, names,
                        os.path.join(workdir, 'plots'), label, title=title)
      if clips is not None:
        plots.confusion(
            {'confusion': results['clip_confusion'],
             'accuracy': results['clip_accuracy']}, names,
            os.path.join(workdir, 'plots', f'{label}_clip_confusion.png'),
            f'{title} per clip')
  return results


def check_protocol(protocol: str, task_name: str,
                   output_names: Sequence[str]) -> None:
  """Raises unless `protocol` (config <stage>.protocol) fits the model."""
  if protocol not in abaw.PROTOCOLS:
    raise AffectJaxError(f'protocol={protocol!r} (config <stage>.protocol); '
                         f"use '' or 'abaw'.")
  if protocol == 'abaw':
    abaw.check(task_name, output_names, 'config <stage>.protocol')


def write_results(workdir: str, per_split: dict[str, dict[str, Any]],
                  task: tasks_lib.Task, names: Sequence[str],
                  note: str = '') -> dict[str, Any]:
  """results.json / results.md of scored splits; prints the last one."""
  last = list(per_split)[-1]
  out = dict(per_split[last], splits=per_split, task=task.name,
             outputs=list(names))
  writers.write_json(os.path.join(workdir, 'results.json'), out)
  if jax.process_index() == 0:
    writers.write_text(os.path.join(workdir, 'results.md'),
               markdown_table(per_split, task, names, order=list(per_split)))
  print(format_table(per_split[last], task, names,
                     title=f'Test results on {per_split[last]["split"]} '
                     f'{note}'.rstrip()),
        flush=True)
  return out


def write_clips(path: str, clips, names: Sequence[str]) -> None:
  """One row per clip: clip id, predicted and true class."""
  ids, predicted, true = clips
  writers.write_csv(path, ['video_id', 'predicted', 'true'],
                    ([vid, names[p], names[t]]
                     for vid, p, t in zip(ids, predicted, true)))


def score_table(task: tasks_lib.Task, table: inference.FrameTable,
                names: Sequence[str]) -> dict[str, Any]:
  """The task's metrics of a frame table whose outputs are `names`."""
  acc = task.accumulator()
  for vid in table.videos():
    rows = table.rows_of(vid)
    acc.update(table.outputs[rows][None], table.targets[rows][None],
               np.ones((1, rows.size)), [vid], table.frame[rows][None])
  return task.result(acc, names)


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

  for vid in table.videos():
    writers.write_csv(os.path.join(folder, split, _safe(vid) + '.csv'),
                      header, rows(table.rows_of(vid)))
  path = os.path.join(folder, f'{split}.csv')
  writers.write_csv(path, header, rows(range(len(table.frame))))
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

  row_metrics = list(task.per_output_metrics)
  if any(k.startswith('clip_') for k in per_split[main]):
    row_metrics += [f'clip_{m}' for m in task.per_output_metrics]
  for metric in row_metrics:
    lines.append(f'| {metric} | ' + ' | '.join(
        cell(f'{metric}_{c}') for c in cols) + ' |')
  lines.append('')
  for key in task.summary_keys:
    lines.append(f'- {key}: {cell(key)}')
  if 'abaw_score' in per_split[main]:
    lines.append(f'- abaw_score: {cell("abaw_score")} '
                 f'({per_split[main]["abaw_protocol"]})')
  if 'clip_accuracy' in per_split[main]:
    lines.append(f'- clip_accuracy: {cell("clip_accuracy")} '
                 f'({per_split[main].get("clip_num_clips")} clips)')
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
  keys = list(task.summary_keys) + [k for k in ('clip_accuracy', 'abaw_score')
                                    if k in results]
  lines.append('  '.join(f'{k} {results.get(k, np.nan):.3f}' for k in keys))
  return '\n'.join(lines)


def cross_test_stage(ctx) -> dict[str, Any]:
  """The `cross_test` stage kind: every model on every dataset, one table.

  Rows are the models (named after their stage, or their folder), columns
  the datasets (`cfg.datasets` keys), cells the task's summary metrics on
  each dataset's `test_split`. Per pair, predictions go to
  `predictions/<model>_on_<dataset>.csv`.
  """
  config, cfg, workdir = ctx.config, ctx.cfg, ctx.workdir
  os.makedirs(workdir, exist_ok=True)
  refs = [r.strip() for r in cfg.checkpoints.split(',') if r.strip()]
  if not refs or not list(cfg.datasets.keys()):
    raise AffectJaxError(f'config.{ctx.name} needs checkpoints (comma list) '
                         'and at least one entry in datasets.')
  # Each dataset is opened once, whatever the number of models.
  splits = {d: input_pipeline.load_split(cfg.datasets[d],
                                         cfg.datasets[d].test_split)
            for d in cfg.datasets.keys()}
  pairs: dict[str, dict[str, dict[str, Any]]] = {}
  task = names = None
  for ref in refs:
    source = ctx.source(ref)
    model = ref[len('stage:'):] if ref.startswith('stage:') else (
        os.path.basename(os.path.normpath(source)))
    predictor = inference.Predictor.load(source)
    if task is None:
      task, names = predictor.task, predictor.output_names
    elif predictor.task.name != task.name:
      raise AffectJaxError(f'config.{ctx.name}.checkpoints mixes tasks '
                           f'({task.name!r} and {predictor.task.name!r}).')
    pairs[model] = {}
    for data_name, split in splits.items():
      pairs[model][data_name] = score_split(
          predictor, split, config, workdir, f'{_safe(model)}_on_{data_name}',
          plots_=cfg.plots)
  out = {'pairs': pairs, 'task': task.name, 'outputs': list(names)}
  writers.write_json(os.path.join(workdir, 'results.json'), out)
  text = cross_table(pairs, task)
  if jax.process_index() == 0:
    writers.write_text(os.path.join(workdir, 'results.md'), text)
  print(text, flush=True)
  return out


def cross_table(pairs: dict[str, dict[str, dict[str, Any]]],
                task: tasks_lib.Task) -> str:
  """Markdown: rows = trained on, columns = tested on, cells = metrics."""
  datasets = list(next(iter(pairs.values())))
  keys = [k for k in task.summary_keys if k != 'ccc_mean'] or list(
      task.summary_keys)
  row = next(iter(pairs.values()))
  lines = [f'Cross-database evaluation (cells: {" / ".join(keys)}; splits: '
           + ', '.join(f'{d} {row[d]["split"]}' for d in datasets) + ')', '',
           '| trained on \\ tested on | ' + ' | '.join(datasets) + ' |',
           '|---|' + '---|' * len(datasets)]
  for model, row in pairs.items():
    lines.append(f'| {model} | ' + ' | '.join(
        ' / '.join(_cell(row[d].get(k)) for k in keys) for d in datasets)
                 + ' |')
  return '\n'.join(lines) + '\n'
