"""Evaluation of a trained checkpoint on a split: metrics table and CSVs.

Metrics follow the field's protocol: CCC (population moments), Pearson and
MSE over the concatenation of all frames of the split, plus the average over
recordings (`*_per_video_mean_*`).
"""

from __future__ import annotations

import csv
import os
from typing import Any

import jax
import numpy as np

from affect_jax import checkpointing
from affect_jax import input_pipeline
from affect_jax import train
from affect_jax import writers


def test_stage(config, cfg, checkpoint_dir: str, workdir: str
               ) -> dict[str, Any]:
  """Evaluates the best checkpoint of a stage on `cfg.dataset`'s test split.

  Writes `results.json`, `predictions.csv` (one row per frame) and prints a
  small table.
  """
  os.makedirs(workdir, exist_ok=True)
  variables, meta = checkpointing.restore_best_variables(checkpoint_dir)
  split = input_pipeline.load_split(cfg.dataset, cfg.split)
  task = meta.get('task', cfg.task)
  n_out = int(meta.get('num_outputs', train.num_outputs(
      task, len(split.emotion_names))))
  stage = train.Stage(config, cfg, n_out)
  fresh = stage.init_variables(config.seed)
  variables = jax.tree.map(
      lambda s, d: jax.device_put(np.asarray(s, d.dtype), d.sharding),
      {k: variables[k] for k in fresh}, fresh)
  state = stage.eval_state(variables)
  results, acc = train.evaluate(stage, state, split, task,
                                split.emotion_names)
  results = {k: float(v) for k, v in results.items() if np.isscalar(v)}
  results['checkpoint_step'] = meta.get('step')
  results['split'] = split.name
  writers.write_json(os.path.join(workdir, 'results.json'), results)
  if task == 'va' and jax.process_index() == 0:
    write_predictions_csv(os.path.join(workdir, 'predictions.csv'), acc,
                          train.VA_OUTPUTS)
  print(format_table(results, task, title=f'Test results on {split.name} '
                     f'(checkpoint step {meta.get("step")})'), flush=True)
  return results


def write_predictions_csv(path: str, acc, names) -> None:
  """One row per frame: video, frame, predictions and gold labels."""
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['video_id', 'frame'] + [f'pred_{n}' for n in names] +
               [f'gold_{n}' for n in names])
    for vid, d in acc.per_video().items():
      for i, frame in enumerate(d['frames']):
        w.writerow([vid, int(frame)] +
                   [f'{x:.5f}' for x in d['predictions'][i]] +
                   [f'{x:.5f}' for x in d['targets'][i]])
  os.replace(tmp, path)


def format_table(results: dict[str, Any], task: str, title: str = '') -> str:
  """A small text table of the headline metrics."""
  lines = [title] if title else []
  if task == 'va':
    lines.append(f'{"":10s} {"CCC":>7s} {"Pearson":>8s} {"MSE":>7s}')
    for dim in ('valence', 'arousal'):
      lines.append(f'{dim:10s} {results.get(f"ccc_{dim}", np.nan):7.3f} '
                   f'{results.get(f"pearson_{dim}", np.nan):8.3f} '
                   f'{results.get(f"mse_{dim}", np.nan):7.4f}')
    lines.append(f'{"mean":10s} {results.get("ccc_mean", np.nan):7.3f}')
  else:
    lines.append(f'mean F1 {results.get("f1_mean", np.nan):.3f}  '
                 f'exact-match accuracy {results.get("accuracy", np.nan):.3f}')
  return '\n'.join(lines)
