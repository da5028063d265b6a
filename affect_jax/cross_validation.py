"""The `cv` stage kind: K-fold subject-independent cross validation.

kollias2019 (after Kossaifi et al.) evaluates AFEW-VA with a 5-fold
person-independent cross validation. `subject_folds` cuts one split into K
folds that share no subject (balanced by frames). Fold k trains on the
other folds but one, keeps its best checkpoint on fold (k+1) mod K (so no
test fold ever chooses a checkpoint), and is tested on fold k. The stage
reports each fold's metrics (Pearson and CCC for valence / arousal), their
mean and standard deviation, and the metrics of all test folds' frames
pooled.

Each fold works in `<stage>/fold_<k>/` (a train folder plus `test/`), and
writes DONE.json when it is finished, so an interrupted cross validation
resumes at the unfinished fold.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np

from affect_jax import evaluate
from affect_jax import folds as folds_lib
from affect_jax import inference
from affect_jax import input_pipeline
from affect_jax import train as train_lib
from affect_jax import writers
from affect_jax.errors import AffectJaxError


def subject_folds(subject_ids: Sequence[str], lengths: Sequence[int],
                  k: int) -> list[list[int]]:
  """Video indices of K subject-disjoint folds, balanced by frame count.

  The rule of `affect_jax.folds.assign_folds` (also AFEW-VA's fold splits).

  Raises:
    AffectJaxError: fewer subjects than folds, or k < 2.
  """
  frames: dict[str, int] = {}
  for s, n in zip(subject_ids, lengths):
    frames[str(s)] = frames.get(str(s), 0) + int(n)
  try:
    assigned = folds_lib.assign_folds(frames, k)
  except AffectJaxError as e:
    raise AffectJaxError(f'Cross validation: {e} Lower config.<stage>.folds.'
                         ) from None
  return [[i for i, s in enumerate(subject_ids) if assigned[str(s)] == f]
          for f in range(k)]


def load_folds(dataset_cfg, folds) -> tuple[input_pipeline.SplitData,
                                            list[list[int]]]:
  """The data of a cv stage and its folds (video indices).

  `folds` is either a number K (the dataset's `train_split` is cut into K
  subject-disjoint folds) or a comma list of the dataset's fold splits
  (e.g. AFEW-VA's 'fold_0,...,fold_4'), one fold each.
  """
  if isinstance(folds, int) or str(folds).strip().isdigit():
    split = input_pipeline.load_split(dataset_cfg, dataset_cfg.train_split)
    return split, subject_folds(split.subject_ids, split.lengths, int(folds))
  names = [f.strip() for f in str(folds).split(',') if f.strip()]
  if len(names) < 2:
    raise AffectJaxError(f'folds={folds!r}: give a number of folds or at '
                         'least two fold splits ("fold_0,fold_1,...").')
  split = input_pipeline.load_split(dataset_cfg, '+'.join(names))
  out, start = [], 0
  for name in names:
    n = len(input_pipeline.load_split(dataset_cfg, name).video_ids)
    out.append(list(range(start, start + n)))
    start += n
  subjects = [set(split.subject_ids[v] for v in f) for f in out]
  for i in range(len(out)):
    for j in range(i):
      shared = subjects[i] & subjects[j]
      if shared:
        raise AffectJaxError(
            f'Fold splits {names[j]!r} and {names[i]!r} of {split.name} share '
            f'subject(s) {sorted(shared)[:5]}; a person-independent cross '
            'validation needs subject-disjoint folds.')
  return split, out


def cv_stage(ctx) -> dict[str, Any]:
  """Trains and tests every fold; writes results.json / results.md."""
  config, cfg, workdir = ctx.config, ctx.cfg, ctx.workdir
  os.makedirs(workdir, exist_ok=True)
  tcfg = cfg.train
  split, folds = load_folds(tcfg.dataset, cfg.folds)
  k = len(folds)
  writers.write_json(os.path.join(workdir, 'folds.json'), {
      f'fold_{i}': sorted({split.subject_ids[v] for v in f})
      for i, f in enumerate(folds)})
  init_source = ctx.source(tcfg.init_from)
  per_fold, names, task = {}, None, None
  for i in range(k):
    fold_dir = os.path.join(workdir, f'fold_{i}')
    done = os.path.join(fold_dir, 'DONE.json')
    val = (i + 1) % k
    rest = [v for j, f in enumerate(folds) if j not in (i, val) for v in f]
    parts = {'train': split.subset(rest, f'{split.name}[folds != {i},{val}]'),
             'validation': split.subset(folds[val],
                                        f'{split.name}[fold {val}]'),
             'test': split.subset(folds[i], f'{split.name}[fold {i}]')}
    if os.path.exists(done):
      print(f'[{ctx.name}] fold {i} already finished; skipping.', flush=True)
      per_fold[f'fold_{i}'] = writers.read_json(done)
    else:
      print(f'[{ctx.name}] fold {i + 1}/{k}: train {len(rest)} videos, '
            f'validation fold {val} ({len(folds[val])}), test fold {i} '
            f'({len(folds[i])})', flush=True)
      train_lib.train(config, tcfg, fold_dir, parts['train'],
                      parts['validation'], init_source=init_source,
                      name=f'{ctx.name}/fold_{i}')
      predictor = inference.Predictor.load(fold_dir)
      task, names = predictor.task, predictor.output_names
      results = evaluate.score_split(
          predictor, parts['test'], config, os.path.join(fold_dir, 'test'),
          'test', plots_=cfg.plots)
      writers.write_json(done, results)
      per_fold[f'fold_{i}'] = results
  if task is None:  # Every fold had finished before: read one model record.
    predictor = inference.Predictor.load(os.path.join(workdir, 'fold_0'))
    task, names = predictor.task, predictor.output_names
  summary = _summary(per_fold, task, names, workdir)
  return summary


def _summary(per_fold: dict[str, dict[str, Any]], task, names,
             workdir: str) -> dict[str, Any]:
  """Mean / std over folds, the pooled test frames, results.md."""
  scalar = sorted({key for r in per_fold.values() for key, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)})
  mean = {key: float(np.nanmean([r.get(key, np.nan)
                                 for r in per_fold.values()]))
          for key in scalar}
  std = {key: float(np.nanstd([r.get(key, np.nan)
                               for r in per_fold.values()]))
         for key in scalar}
  # Every test frame of every fold, scored once as one set.
  tables = []
  for fold in per_fold:
    path = os.path.join(workdir, fold, 'test', 'predictions', 'test.csv')
    if os.path.exists(path):
      tables.append(evaluate.read_predictions(path)[0])
  pooled = {}
  if tables:
    joined = inference.FrameTable(
        *[np.concatenate([getattr(t, f) for t in tables]) for f in
          ('video_id', 'frame', 'time', 'has_face', 'outputs', 'targets')])
    columns = [n for n, _ in task.columns(names)]
    pooled = evaluate.score_table(task, joined, columns)
  out = {'folds': per_fold, 'mean': mean, 'std': std, 'pooled': pooled,
         'task': task.name, 'outputs': list(names)}
  out.update({key: mean[key] for key in task.summary_keys if key in mean})
  writers.write_json(os.path.join(workdir, 'results.json'), out)
  if jax.process_index() == 0:
    writers.write_text(os.path.join(workdir, 'results.md'),
                        fold_table(out, task, names))
  print(fold_table(out, task, names), flush=True)
  return out


def fold_table(results: dict[str, Any], task, names) -> str:
  """Markdown: one row per fold, then mean ± std and the pooled frames."""
  cols = [f'{m}_{n}' for m in task.per_output_metrics
          for n, _ in task.columns(names)]
  lines = [f'{len(results["folds"])}-fold cross validation ({task.name}); '
           'test fold metrics', '',
           '| fold | ' + ' | '.join(cols) + ' |',
           '|---|' + '---|' * len(cols)]
  for fold, r in results['folds'].items():
    lines.append(f'| {fold} | ' + ' | '.join(
        f'{r.get(c, np.nan):.3f}' for c in cols) + ' |')
  lines.append('| mean ± std | ' + ' | '.join(
      f'{results["mean"].get(c, np.nan):.3f} ± '
      f'{results["std"].get(c, np.nan):.3f}' for c in cols) + ' |')
  if results.get('pooled'):
    lines.append('| all folds pooled | ' + ' | '.join(
        f'{results["pooled"].get(c, np.nan):.3f}' for c in cols) + ' |')
  return '\n'.join(lines) + '\n'
