"""PNG plots of a run (matplotlib, no display needed).

  learning_curves   train loss and validation metrics over steps (metrics.csv)
  traces            prediction vs gold over time, best and worst recordings
  va_histogram      2-D valence-arousal histograms of predictions and labels
  confusion         confusion matrix of a single-label task
  prediction_plot   one input's predictions (affect_jax.predict --plot)

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
from affect_jax import writers  # pylint: disable=g-import-not-at-top,wrong-import-position


def _save(fig, path: str) -> str:
  fmt = os.path.splitext(path)[1].lstrip('.') or 'png'
  try:
    with writers.atomic_open(path, 'wb') as f:
      fig.savefig(f, format=fmt, dpi=110, bbox_inches='tight')
  finally:
    plt.close(fig)
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


def _no_face_spans(ax, t: np.ndarray, no_face: np.ndarray, lo: float,
                   hi: float) -> None:
  if no_face.any():
    ax.fill_between(t, lo, hi, where=no_face, color='grey', alpha=0.2,
                    step='mid', label='no face')


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
      _no_face_spans(ax, t, no_face, -1, 1)
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


def prediction_plot(time: np.ndarray, has_face: np.ndarray,
                    outputs: np.ndarray, columns: Sequence[str], path: str,
                    title: str = '', is_image: bool = False,
                    face: np.ndarray | None = None) -> str:
  """Predictions of one video over time, or of one image.

  Args:
    time: float [N] seconds.
    has_face: bool [N]; stretches without a face are shaded.
    outputs: float [N, K] (NaN without a face), in `columns` order.
    columns: the K output names; 'valence' and 'arousal' go in the first
      panel, the classes' probabilities in a second one.
    path: the PNG.
    is_image: one frame: a point on the valence-arousal plane (or bars of
      the class probabilities).
    face: int [N] face id of each row (-1 where a frame has no face), as
      `predict --all_faces` writes several rows per frame: valence and
      arousal get one line (or point) per face, coloured by face, and each
      face its own class panel. None: one row per frame.
  """
  va = [c for c in ('valence', 'arousal') if c in columns]
  classes = [c for c in columns if c not in va]
  col = {c: outputs[:, i] for i, c in enumerate(columns)}
  if face is None:
    t, no_face, tracks = time, ~np.asarray(has_face, bool), {None: col}
  else:
    t = np.unique(time)  # One point per frame; a face's gaps stay NaN.
    no_face = ~np.isin(t, time[np.asarray(has_face, bool)])
    tracks = {}
    for k in np.unique(face[face >= 0]):
      rows = face == k
      tracks[int(k)] = {c: np.full(len(t), np.nan) for c in columns}
      for c in columns:
        tracks[int(k)][c][np.searchsorted(t, time[rows])] = col[c][rows]
    tracks = tracks or {None: {c: np.full(len(t), np.nan) for c in columns}}
  if is_image:
    return _image_plot(tracks, va, classes, bool(np.any(has_face)), path,
                       title)
  panels = ([(va, tracks, 'value')] if va else []) + (
      [(classes, {k: s}, 'probability' if k is None else
        f'face {k}: probability') for k, s in tracks.items()]
      if classes else [])
  fig, axes = plt.subplots(len(panels), 1, squeeze=False, sharex=True,
                           figsize=(11, 2.8 * len(panels)))
  for ax, (names, drawn, ylabel) in zip(axes[:, 0], panels):
    for k, series in drawn.items():
      for c in names:
        style = {}
        if k is not None and names is va:
          style = dict(color=f'C{k % 10}', ls='-' if c == 'valence' else '--',
                       label=f'{c}, face {k}')
        ax.plot(t, series[c], lw=1.0, **{'label': c, **style})
    lo, hi = (-1.05, 1.05) if names is va else (0, 1.02)
    _no_face_spans(ax, t, no_face, lo, hi)
    ax.set(ylim=(lo, hi), ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='upper right',
              ncol=min(4, len(names) * len(drawn) + 1))
  axes[-1, 0].set_xlabel('time (s)')
  fig.suptitle(title.strip())
  return _save(fig, path)


def _image_plot(tracks, va, classes, any_face: bool, path: str,
                title: str) -> str:
  """One image: its faces on the valence-arousal plane, or class bars."""
  fig, ax = plt.subplots(figsize=(4.6, 4.4))
  for j, (k, col) in enumerate(tracks.items()):
    label = None if k is None else f'face {k}'
    if len(va) == 2:
      ax.scatter(col['valence'], col['arousal'], s=80, zorder=3, label=label,
                 color='tab:red' if k is None else f'C{k % 10}')
    else:
      height = 0.8 / len(tracks)
      ax.barh(np.arange(len(classes)) + j * height,
              [col[c][0] for c in classes], height=height, label=label,
              color='tab:blue' if k is None else f'C{k % 10}')
  if len(va) == 2:
    ax.axhline(0, color='grey', lw=0.6)
    ax.axvline(0, color='grey', lw=0.6)
    ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), xlabel='valence',
           ylabel='arousal', aspect='equal')
  else:
    ax.set(xlim=(0, 1), xlabel='probability',
           yticks=np.arange(len(classes)) + 0.4 - 0.4 / max(1, len(tracks)))
    ax.set_yticklabels(classes)
  if not any_face:
    ax.set_title('no face found')
  elif any(k is not None for k in tracks):
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.suptitle(title.strip())
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
