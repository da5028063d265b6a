"""PNG plots of a run (matplotlib, no display needed).

  learning_curves   train loss and validation metrics over steps (metrics.csv)
  traces            prediction vs gold over time, best and worst recordings
  va_histogram      2-D valence-arousal histograms of predictions and labels
  confusion         confusion matrix of a single-label task

`SPLIT_PLOTS` maps the names the task table uses to the functions that draw
them from a scored split's `FrameTable`.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from affect_jax import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=110, bbox_inches='tight')
  plt.close(fig)
  os.replace(tmp, path)
  return path


def read_metrics_csv(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{name: (steps, values)} of a MetricWriter CSV (last value per step)."""
  series: dict[str, dict[int, float]] = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      series.setdefault(row['name'], {})[int(row['step'])] = float(
          row['value'])
  return {k: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)]))
          for k, v in series.items()}


def learning_curves(csv_path: str, path: str, keys: Sequence[str],
                    title: str = '') -> str | None:
  """Train loss and the validation metrics `keys` against the step."""
  if not os.path.exists(csv_path):
    return None
  series = read_metrics_csv(csv_path)
  val = [f'val/{k}' for k in keys if f'val/{k}' in series]
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  if 'train/loss' in series:
    axes[0].plot(*series['train/loss'], color='tab:blue')
  axes[0].set(xlabel='step', ylabel='train loss', title='training loss')
  for k in val:
    axes[1].plot(*series[k], marker='o', ms=3, label=k[4:])
  axes[1].set(xlabel='step', ylabel='validation', title='validation')
  if val:
    axes[1].legend(fontsize=8)
  for ax in axes:
    ax.grid(alpha=0.3)
  fig.suptitle(title.strip())
  return _save(fig, path)


def _per_video_ccc(table, columns) -> dict[str, float]:
  out = {}
  for vid in table.videos():
    rows = table.rows_of(vid)
    values = []
    for _, k in columns:
      y = table.targets[rows, k]
      ok = np.isfinite(y)
      if ok.sum() >= 2:
        values.append(metrics.ccc(table.outputs[rows, k][ok], y[ok]))
    if values:
      out[vid] = float(np.mean(values))
  return out


def traces(table, columns: Sequence[tuple[str, int]], path: str,
           title: str = '') -> str | None:
  """Prediction vs gold over time for the best and the worst recordings."""
  scores = _per_video_ccc(table, columns)
  if not scores:
    return None
  ranked = sorted(scores, key=scores.get)
  picks = [('best', ranked[-1])] + ([('worst', ranked[0])]
                                     if len(ranked) > 1 else [])
  fig, axes = plt.subplots(len(columns), len(picks), squeeze=False,
                           figsize=(6 * len(picks), 2.6 * len(columns)))
  for j, (which, vid) in enumerate(picks):
    rows = table.rows_of(vid)
    t = table.time[rows]
    if not np.isfinite(t).all():
      t = table.frame[rows].astype(float)
    no_face = ~table.has_face[rows]
    for i, (name, k) in enumerate(columns):
      ax = axes[i, j]
      ax.plot(t, table.targets[rows, k], color='black', lw=1.2, label='gold')
      ax.plot(t, table.outputs[rows, k], color='tab:red', lw=1.0,
              label='prediction')
      if no_face.any():
        ax.fill_between(t, -1, 1, where=no_face, color='grey', alpha=0.2,
                        step='mid', label='no face')
      ax.set_ylim(-1.05, 1.05)
      ax.set_ylabel(name)
      ax.grid(alpha=0.3)
      if i == 0:
        ax.set_title(f'{which}: {vid} (CCC {scores[vid]:.2f})')
      if i == len(columns) - 1:
        ax.set_xlabel('time (s)')
  axes[0, 0].legend(fontsize=8, loc='lower left')
  fig.suptitle(title.strip())
  return _save(fig, path)


def va_histogram(table, columns: Sequence[tuple[str, int]], path: str,
                 title: str = '') -> str | None:
  """2-D valence-arousal histograms of the predictions and of the labels."""
  names = dict(columns)
  if 'valence' not in names or 'arousal' not in names:
    return None
  v, a = names['valence'], names['arousal']
  bins = np.linspace(-1, 1, 41)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
  for ax, (label, data) in zip(axes, (('predictions', table.outputs),
                                      ('labels', table.targets))):
    ok = np.isfinite(data[:, v]) & np.isfinite(data[:, a])
    ax.hist2d(data[ok, v], data[ok, a], bins=[bins, bins], cmap='magma',
              norm=matplotlib.colors.LogNorm() if ok.sum() else None)
    ax.axhline(0, color='white', lw=0.5)
    ax.axvline(0, color='white', lw=0.5)
    ax.set(xlabel='valence', ylabel='arousal', title=f'{label} ({ok.sum()} '
           'frames)', aspect='equal')
  fig.suptitle(title.strip())
  return _save(fig, path)


def confusion(results: dict[str, Any], class_names: Sequence[str], path: str,
              title: str = '') -> str | None:
  """Row-normalised confusion matrix with counts."""
  if 'confusion' not in results:
    return None
  m = np.asarray(results['confusion'], np.float64)
  norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
  n = len(class_names)
  fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
  ax.imshow(norm, cmap='Blues', vmin=0, vmax=1)
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f'{int(m[i, j])}', ha='center', va='center', fontsize=8,
              color='white' if norm[i, j] > 0.5 else 'black')
  ax.set_xticks(range(n), class_names, rotation=45, ha='right')
  ax.set_yticks(range(n), class_names)
  ax.set(xlabel='predicted', ylabel='true',
         title=f'{title} accuracy {results.get("accuracy", np.nan):.3f}')
  return _save(fig, path)


def split_plots(task, table, results, columns, output_names, folder: str,
                split: str, title: str = '') -> list[str]:
  """The task's plots of one scored split, as `<folder>/<split>_<plot>.png`."""
  out = []
  for name in task.plots:
    path = os.path.join(folder, f'{split}_{name}.png')
    if name == 'confusion':
      made = confusion(results, output_names, path, title)
    else:
      made = SPLIT_PLOTS[name](table, columns, path, title)
    if made:
      out.append(made)
  return out


SPLIT_PLOTS = {'traces': traces, 'va_histogram': va_histogram}
