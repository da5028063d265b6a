r"""The post-processing chain of tzirakis2019 (after Ringeval et al., AVEC).

Four steps, in this order, on continuous predictions (valence, arousal):

  median   median filter over a window of w seconds (0.04-20 s), per
           recording; the window is centred and the recording's first/last
           value is repeated past its ends;
  centre   add the bias mean(gold) - mean(prediction) found on the fit split;
  scale    multiply the deviations from the prediction's own mean by
           std(gold) / std(prediction) found on the fit split;
  shift    delay the predictions by s seconds (0.04-10 s): y[t] = x[t - k]
           within each recording, the first value repeated at its start
           (annotations lag behind the face, so predictions move forward in
           time).

Each step's parameter is searched on the fit split (validation) and the step
is kept only if it raises that split's CCC (each output on its own); the
chosen chain is then applied unchanged to the other split (test). With
`fit_split == apply_split` (a release without test labels, e.g. AVEC 2016
RECOLA) each recording of that split is post-processed by the chain fitted
on its other recordings (leave one recording out). All
functions are pure and take seconds, so they need the frame rate; windows
and shifts are rounded to whole frames (a median window to an odd number).

As a stage of an experiment (`kind='postprocess'`, reading a test stage's
prediction files), or on any finished run:

  python -m affect_jax.postprocess --workdir=DIR [--stage=test]
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Sequence

import numpy as np

from affect_jax import metrics
from affect_jax.errors import AffectJaxError

STEPS = ('median', 'centre', 'scale', 'shift')


# ------------------------------------------------------- pure functions ---

def seconds_to_frames(seconds: float, fps: float, odd: bool = False) -> int:
  """Whole frames in `seconds` (at least 1; odd if asked)."""
  n = max(1, int(round(seconds * fps)))
  if odd and n % 2 == 0:
    n += 1
  return n


def median_filter(x: np.ndarray, window: int) -> np.ndarray:
  """Centred running median of a 1-D series with an odd `window` (frames).

  Past the ends the first / last value is repeated, so the output has the
  input's length and a constant series stays constant.
  """
  x = np.asarray(x, np.float64)
  if window <= 1 or x.size == 0:
    return x.copy()
  if window % 2 == 0:
    raise ValueError(f'median window must be odd, got {window}.')
  half = window // 2
  padded = np.pad(x, half, mode='edge')
  view = np.lib.stride_tricks.sliding_window_view(padded, window)
  return np.median(view, axis=-1)


def shift(x: np.ndarray, frames: int) -> np.ndarray:
  """Delays a series by `frames`: y[t] = x[t - frames], y[:frames] = x[0]."""
  x = np.asarray(x, np.float64)
  if frames <= 0 or x.size == 0:
    return x.copy()
  frames = min(frames, x.size)
  return np.concatenate([np.full(frames, x[0]), x[:x.size - frames]])


def centre(x: np.ndarray, bias: float) -> np.ndarray:
  return np.asarray(x, np.float64) + bias


def scale(x: np.ndarray, factor: float, mean: float | None = None
          ) -> np.ndarray:
  """Scales the deviations of `x` from `mean` (default: its own) by `factor`."""
  x = np.asarray(x, np.float64)
  if x.size == 0:
    return x.copy()
  m = x.mean() if mean is None else mean
  return m + factor * (x - m)


# -------------------------------------------------------------- the chain ---

@dataclasses.dataclass
class Step:
  """One kept step: its name and parameter (seconds, bias or factor)."""
  name: str
  value: float
  fit_ccc: float  # CCC on the fit split after this step.


def _apply(step: str, value: float, series: list[np.ndarray],
           fps: float) -> list[np.ndarray]:
  """One step on every recording of a split."""
  if step == 'median':
    w = seconds_to_frames(value, fps, odd=True)
    return [median_filter(s, w) for s in series]
  if step == 'shift':
    k = seconds_to_frames(value, fps)
    return [shift(s, k) for s in series]
  if step == 'centre':
    return [centre(s, value) for s in series]
  if step == 'scale':
    # Around the split's mean, as the factor was fitted on the whole split.
    m = np.concatenate(series).mean() if series else 0.0
    return [scale(s, value, m) for s in series]
  raise AffectJaxError(f'Unknown post-processing step {step!r}; use one of '
                       f'{STEPS}.')


def apply_chain(series: Sequence[np.ndarray], chain: Sequence[Step],
                fps: float) -> list[np.ndarray]:
  """The chain's kept steps, in order, on a split's recordings."""
  out = [np.asarray(s, np.float64) for s in series]
  for step in chain:
    out = _apply(step.name, step.value, out, fps)
  return out


def _ccc(pred: list[np.ndarray], gold: list[np.ndarray]) -> float:
  x, y = np.concatenate(pred), np.concatenate(gold)
  ok = np.isfinite(y)
  return metrics.ccc(x[ok], y[ok])


def _grid(lo: float, hi: float, n: int, fps: float, odd: bool) -> list[float]:
  """Candidate durations (s) between lo and hi, distinct in whole frames."""
  seconds = np.geomspace(max(lo, 1e-6), max(hi, lo), max(n, 1))
  out, seen = [], set()
  for s in seconds:
    f = seconds_to_frames(s, fps, odd=odd)
    if f not in seen:
      seen.add(f)
      out.append(f / fps)
  return out


def fit_chain(pred: Sequence[np.ndarray], gold: Sequence[np.ndarray],
              fps: float, steps: Sequence[str] = STEPS,
              median_range: tuple[float, float] = (0.04, 20.0),
              shift_range: tuple[float, float] = (0.04, 10.0),
              grid_size: int = 40) -> tuple[list[Step], float]:
  """Chooses the chain on one output of the fit split.

  Args:
    pred, gold: per-recording 1-D series (gold may hold NaN).
    fps: frames per second of the series.
    steps: which steps to try, in order (a subset of STEPS).
    median_range, shift_range: searched durations, seconds.
    grid_size: candidates per searched step (geometric spacing).

  Returns:
    (kept steps, fit-split CCC before any step).
  """
  pred = [np.asarray(p, np.float64) for p in pred]
  gold = [np.asarray(g, np.float64) for g in gold]
  before = best = _ccc(pred, gold)
  chain = []
  current = pred
  for step in steps:
    if step == 'median':
      candidates = _grid(*median_range, grid_size, fps, odd=True)
    elif step == 'shift':
      candidates = _grid(*shift_range, grid_size, fps, odd=False)
    elif step == 'centre':
      x, y = np.concatenate(current), np.concatenate(gold)
      ok = np.isfinite(y)
      candidates = [float(y[ok].mean() - x[ok].mean())]
    elif step == 'scale':
      x, y = np.concatenate(current), np.concatenate(gold)
      ok = np.isfinite(y)
      sx = x[ok].std()
      candidates = [float(y[ok].std() / sx)] if sx > 0 else []
    else:
      raise AffectJaxError(f'Unknown post-processing step {step!r}; use '
                           f'one of {STEPS}.')
    scored = [(_ccc(_apply(step, c, current, fps), gold), c)
              for c in candidates]
    if not scored:
      continue
    value, param = max(scored, key=lambda t: t[0])
    if value > best:
      best = value
      current = _apply(step, param, current, fps)
      chain.append(Step(step, float(param), float(value)))
  return chain, before


def frame_rate(times: np.ndarray, video_ids: np.ndarray) -> float:
  """Median frame rate of per-frame times, within recordings."""
  diffs = []
  for vid in np.unique(video_ids):
    t = np.asarray(times[video_ids == vid], np.float64)
    if t.size > 1:
      diffs.append(np.diff(t))
  d = np.concatenate(diffs) if diffs else np.zeros(0)
  d = d[np.isfinite(d) & (d > 0)]
  if d.size == 0:
    raise AffectJaxError('Cannot tell the frame rate: the prediction file '
                         'has no increasing time_s within a recording.')
  return float(1.0 / np.median(d))


# ------------------------------------------------------------ the stage ---

def _by_video(table, k):
  vids = table.videos()
  rows = [table.rows_of(v) for v in vids]
  return ([table.outputs[r, k] for r in rows],
          [table.targets[r, k] for r in rows], rows)


def run(fit_csv: str, apply_csv: str, out_dir: str, cfg) -> dict[str, Any]:
  """Fits the chain on `fit_csv`, applies it to both, writes `out_dir`.

  Leaves chain.json, results.json (before/after on both splits), results.md,
  and the post-processed prediction files of both splits.
  """
  # Imported here: the pure functions above need no JAX.
  from affect_jax import evaluate  # pylint: disable=g-import-not-at-top
  from affect_jax import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  from affect_jax import writers  # pylint: disable=g-import-not-at-top
  task = tasks_lib.get('va')
  fit, names = evaluate.read_predictions(fit_csv)
  target, names_apply = evaluate.read_predictions(apply_csv)
  if names != names_apply:
    raise AffectJaxError(f'{fit_csv} and {apply_csv} have different outputs '
                         f'({names} vs {names_apply}).')
  unknown = [n for n in names if n not in task.output_names(())]
  if unknown:
    raise AffectJaxError(
        f'{fit_csv} holds outputs {names}: the post-processing chain is for '
        'continuous valence/arousal predictions (task "va").')
  fps = frame_rate(fit.time, fit.video_id)
  steps = [s.strip() for s in cfg.steps.split(',') if s.strip()]
  # The same split both ways (a release without test labels, AVEC 2016
  # RECOLA): each recording is post-processed by the chain fitted on the
  # others (leave one recording out), so its score is not fitted to itself.
  held_out = cfg.fit_split == cfg.apply_split
  if held_out and len(fit.videos()) < 2:
    raise AffectJaxError(
        f'fit_split = apply_split = {cfg.fit_split!r} fits the chain on the '
        'other recordings of each one, but that split has only one.')
  ranges = dict(median_range=(cfg.median_min_s, cfg.median_max_s),
                shift_range=(cfg.shift_min_s, cfg.shift_max_s),
                grid_size=cfg.grid_size)
  chains, post = {}, {}
  tables = {'fit': fit, 'apply': target}
  processed = {k: np.array(t.outputs) for k, t in tables.items()}
  for k, name in enumerate(names):
    pred, gold, _ = _by_video(fit, k)
    chain, before = fit_chain(pred, gold, fps, steps, **ranges)
    chains[name] = {'fit_ccc_before': before,
                    'steps': [dataclasses.asdict(s) for s in chain]}
    for key, table in tables.items():
      series, _, rows = _by_video(table, k)
      if key == 'apply' and held_out:
        out_series = []
        for i, one in enumerate(series):
          others = [j for j in range(len(series)) if j != i]
          chain_i, _ = fit_chain([pred[j] for j in others],
                                 [gold[j] for j in others], fps, steps,
                                 **ranges)
          out_series.extend(apply_chain([one], chain_i, fps))
      else:
        out_series = apply_chain(series, chain, fps)
      for r, s in zip(rows, out_series):
        processed[key][r, k] = s
  results = {}
  for key, table in tables.items():
    after = dataclasses.replace(table, outputs=processed[key])
    results[key] = {'before': evaluate.score_table(task, table, names),
                    'after': evaluate.score_table(task, after, names)}
    post[key] = after
  fit_label = f'{cfg.fit_split}_in_sample' if held_out else cfg.fit_split
  splits = {'fit': fit_label, 'apply': cfg.apply_split}
  out = {'fps': fps, 'chain': chains,
         'fit_split': fit_label, 'apply_split': cfg.apply_split,
         'held_out': held_out,
         fit_label: results['fit'], cfg.apply_split: results['apply']}
  # Top level: the post-processed apply split, as a test stage reports.
  out.update({k: v for k, v in results['apply']['after'].items()
              if np.isscalar(v)})
  writers.write_json(os.path.join(out_dir, 'chain.json'),
                     {'fps': fps, 'chain': chains})
  writers.write_json(os.path.join(out_dir, 'results.json'), out)
  columns = [(n, i) for i, n in enumerate(names)]
  for key, table in post.items():
    evaluate.write_predictions(os.path.join(out_dir, 'predictions'),
                               splits[key], table, columns)
  text = _markdown(out, names, chains)
  writers.write_text(os.path.join(out_dir, 'results.md'), text)
  print(text, flush=True)
  return out


def _markdown(out, names, chains) -> str:
  fit, app = out['fit_split'], out['apply_split']
  how = (f'CCC on {app}, each recording by the chain fitted on the others '
         f'({app} with the chain fitted on all of it in parentheses)'
         if out.get('held_out') else
         f'CCC on {app} ({fit} in parentheses)')
  lines = [f'Post-processing chain (fitted on {fit.replace("_in_sample", "")},'
           f' {out["fps"]:.2f} fps): {how}', '',
           '| output | before | after | steps kept |', '|---|---|---|---|']
  for n in names:
    b = out[app]['before'][f'ccc_{n}']
    a = out[app]['after'][f'ccc_{n}']
    fb = out[fit]['before'][f'ccc_{n}']
    fa = out[fit]['after'][f'ccc_{n}']
    kept = ', '.join(
        f'{s["name"]} {s["value"]:.3g}' + ('s' if s['name'] in
                                            ('median', 'shift') else '')
        for s in chains[n]['steps']) or 'none'
    lines.append(f'| {n} | {b:.3f} ({fb:.3f}) | {a:.3f} ({fa:.3f}) | '
                 f'{kept} |')
  return '\n'.join(lines) + '\n'


def postprocess_stage(ctx) -> dict[str, Any]:
  """The `postprocess` stage kind: reads a test stage's prediction files."""
  cfg = ctx.cfg
  src = ctx.source(cfg.predictions_from)
  if not src:
    raise AffectJaxError(f'config.{ctx.name}.predictions_from is empty; name '
                         'the test stage that wrote the predictions '
                         '("stage:test").')
  folder = os.path.join(src, 'predictions')
  return run(os.path.join(folder, f'{cfg.fit_split}.csv'),
             os.path.join(folder, f'{cfg.apply_split}.csv'), ctx.workdir, cfg)


def main(argv=None) -> int:
  """`python -m affect_jax.postprocess --workdir=DIR [--stage=test]`."""
  import argparse  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(
      prog='python -m affect_jax.postprocess',
      description='Fits the tzirakis2019 post-processing chain on a finished '
      "run's validation predictions and applies it to its test predictions.")
  p.add_argument('--workdir', required=True, help='A finished run.')
  p.add_argument('--stage', default='test',
                 help='Stage whose predictions/ to read (default: test).')
  p.add_argument('--fit_split', default='validation',
                 help='Split whose predictions choose the chain (default: '
                 'validation).')
  p.add_argument('--apply_split', default='test',
                 help='Split the chosen chain is applied to and scored on '
                 '(default: test; the fit split itself = leave one '
                 'recording out).')
  p.add_argument('--output', default=None,
                 help='Output folder (default: WORKDIR/postprocess).')
  p.add_argument('--steps', default=','.join(STEPS),
                 help='Steps to try, in order (default: %(default)s).')
  args = p.parse_args(argv)
  cfg = common.postprocess_stage(f'stage:{args.stage}',
                                 fit_split=args.fit_split,
                                 apply_split=args.apply_split,
                                 steps=args.steps)
  src = os.path.join(args.workdir, args.stage, 'predictions')
  out = args.output or os.path.join(args.workdir, 'postprocess')
  try:
    run(os.path.join(src, f'{args.fit_split}.csv'),
        os.path.join(src, f'{args.apply_split}.csv'), out, cfg)
  except AffectJaxError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
