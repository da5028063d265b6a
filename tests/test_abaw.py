"""The ABAW conventions: the challenge score against a direct computation
(with -5 / -1 frames), the protocol through a test stage, the submission file
through its command."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from affect_jax import abaw
from affect_jax import experiment
from affect_jax import features as F
from affect_jax import metrics
from affect_jax.errors import AffectJaxError
from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES8 = tuple(c.lower() for c in F.ABAW_EXPR_CLASSES)


def _lin_ccc(x, y):  # Lin's CCC, population moments, written out.
  mx, my = x.mean(), y.mean()
  sxy = ((x - mx) * (y - my)).mean()
  return 2 * sxy / (x.var() + y.var() + (mx - my) ** 2)


def test_p_va_pools_every_annotated_frame_and_leaves_out_minus_5():
  rng = np.random.default_rng(0)
  lengths = (40, 7, 90)  # Unequal videos: pooling weighs frames, not videos.
  acc = metrics.RegressionAccumulator()
  raw_v, raw_a, pred_v, pred_a = [], [], [], []
  for k, n in enumerate(lengths):
    gold = rng.uniform(-1, 1, (n, 2))
    gold[rng.random(n) < 0.2] = -5.0  # The annotation files' "no label".
    pred = gold * 0.5 + rng.normal(0, 0.3, (n, 2)) + 0.1 * k
    stored = np.where(gold == -5.0, np.nan, gold)  # As the builder stores it.
    # Outputs in the project's order (arousal, valence).
    acc.update(pred[None, :, ::-1], stored[None, :, ::-1], np.ones((1, n)),
               [f'v{k}'], np.arange(n)[None])
    keep = gold[:, 0] != -5.0
    raw_v.append(gold[keep, 0])
    raw_a.append(gold[keep, 1])
    pred_v.append(pred[keep, 0])
    pred_a.append(pred[keep, 1])
  results = acc.result(names=('arousal', 'valence'))
  got = abaw.scores('va', results)
  want = 0.5 * (_lin_ccc(np.concatenate(pred_v), np.concatenate(raw_v)) +
                _lin_ccc(np.concatenate(pred_a), np.concatenate(raw_a)))
  assert got['abaw_score'] == pytest.approx(want, abs=1e-12)
  per_video = np.mean([_lin_ccc(p, g) for p, g in zip(pred_v, raw_v)])
  assert abs(results['ccc_per_video_mean_valence'] - per_video) < 1e-12
  assert abs(per_video - _lin_ccc(np.concatenate(pred_v),
                                  np.concatenate(raw_v))) > 1e-3


def test_p_expr_is_macro_f1_over_the_8_classes_without_minus_1_frames():
  rng = np.random.default_rng(1)
  n = 300
  true = rng.integers(0, 7, n)  # 'Other' (7) never occurs: its F1 is 0.
  pred = np.where(rng.random(n) < 0.6, true, rng.integers(0, 8, n))
  pred[pred == 7] = 0  # ... and is never predicted.
  unlabelled = rng.random(n) < 0.1  # -1 rows: NaN one-hot in the records.
  labels = np.eye(8)[true]
  labels[unlabelled] = np.nan
  probs = np.eye(8)[pred] * 0.9 + 0.0125
  acc = metrics.SingleLabelAccumulator()
  acc.update(probs[None], labels[None], np.ones((1, n)), ['v'],
             np.arange(n)[None])
  got = abaw.scores('expression', acc.result(NAMES8))['abaw_score']
  t, p = true[~unlabelled], pred[~unlabelled]
  f1 = []
  for c in range(8):
    tp = np.sum((t == c) & (p == c))
    denom = 2 * tp + np.sum((t != c) & (p == c)) + np.sum((t == c) & (p != c))
    f1.append(2 * tp / denom if denom else 0.0)
  assert got == pytest.approx(np.mean(f1), abs=1e-12)
  assert f1[7] == 0.0


def test_the_protocol_refuses_models_it_cannot_score():
  with pytest.raises(AffectJaxError, match='8 classes'):
    abaw.check('expression', NAMES8[:7], 'config.test.protocol')
  with pytest.raises(AffectJaxError, match="'va' or an 8-class"):
    abaw.check('emotions', NAMES8, 'config.test.protocol')
  abaw.check('expression', F.ABAW_EXPR_CLASSES, 'x')  # Case does not matter.


def test_a_test_stage_with_the_abaw_protocol(tiny_run, tmp_path):
  workdir, config, _ = tiny_run
  c = common.experiment('abaw', 'test')
  c.test = common.test_stage(os.path.join(workdir, 'finetune'),
                             common.copy(config.test.dataset), splits='test',
                             plots=False, protocol='abaw')
  c.input = config.input
  results = experiment.run(c, str(tmp_path / 'run'))['test']
  assert results['abaw_score'] == pytest.approx(
      0.5 * (results['ccc_valence'] + results['ccc_arousal']))
  table = open(tmp_path / 'run' / 'test' / 'results.md').read()
  assert 'abaw_score' in table and 'P_VA' in table
  c.test.protocol = 'abw'
  with pytest.raises(AffectJaxError, match=r"config\.test\.protocol='abw'"):
    experiment.run(c, str(tmp_path / 'bad'))


# ------------------------------------------------------------- submission ---


def _predict_csv(path, frames, values, faces=None, boxes=None, warning=True):
  """A CSV as `predict` writes it (warning line, header, empty = no face)."""
  header = ['frame', 'time_s'] + (['face'] if faces is not None else []) + [
      'has_face', 'x0', 'y0', 'x1', 'y1', 'valence', 'arousal']
  with open(path, 'w', newline='') as f:
    if warning:
      f.write('# warning: model trained on synthetic cartoon faces\n')
    w = csv.writer(f)
    w.writerow(header)
    for k, (i, v) in enumerate(zip(frames, values)):
      seen = not np.isnan(v).any()
      face = [] if faces is None else [faces[k]]
      box = boxes[k] if boxes is not None else (10, 10, 50, 50)
      w.writerow([i, f'{i / 30:.4f}', *face, int(seen),
                  *(box if seen else [''] * 4),
                  *(['', ''] if not seen else [f'{x:.6g}' for x in v])])


@pytest.fixture
def submission_inputs(tmp_path):
  preds = tmp_path / 'preds'
  preds.mkdir()
  v = np.stack([np.linspace(-0.5, 0.5, 10), np.linspace(0.2, -0.2, 10)], 1)
  v[3:6] = np.nan  # No face in frames 3-5: linearly filled.
  _predict_csv(preds / 'vidA.csv', range(10), v)
  # Two people: face 0 on the right (x ~ 300), face 1 on the left (x ~ 40).
  frames, faces, boxes, vals = [], [], [], []
  for i in range(6):
    for face, x, val in ((0, 300, (0.9, 0.8)), (1, 40, (-0.9, -0.8))):
      if face == 1 and i == 2:
        continue  # The left person unseen in frame 2.
      frames.append(i)
      faces.append(face)
      boxes.append((x, 10, x + 40, 50))
      vals.append(val)
  _predict_csv(preds / 'vidB.csv', frames, np.array(vals), faces, boxes)
  listed = [f'vidA/{i + 1:05d}.jpg' for i in range(10)] + [
      f'vidB_left/{i + 1:05d}.jpg' for i in range(6)] + [
          f'vidB_right/{i + 1:05d}.jpg' for i in (0, 5)]
  frame_list = tmp_path / 'example.txt'
  frame_list.write_text('image_location,valence,arousal\n' +
                        ''.join(f'{x},\n' for x in listed))
  return preds, frame_list, listed, v


def test_submission_rows_fill_and_sides(submission_inputs, tmp_path):
  preds, frame_list, listed, v = submission_inputs
  out = tmp_path / 'submission.txt'
  assert abaw.write_submission(str(frame_list), str(preds), str(out)) == (
      'va', len(listed))
  rows = list(csv.reader(open(out)))
  assert rows[0] == ['image_location', 'valence', 'arousal']
  assert [r[0] for r in rows[1:]] == listed
  got = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
  t = np.round(np.arange(10) / 30, 4)  # The CSV's time_s.
  known = ~np.isnan(v[:, 0])
  want = np.stack([np.interp(t, t[known], v[known, k]) for k in (0, 1)], 1)
  np.testing.assert_allclose(got[:10], want, atol=1e-5)
  np.testing.assert_allclose(got[10:16], [[-0.9, -0.8]] * 6, atol=1e-6)
  np.testing.assert_allclose(got[16:], [[0.9, 0.8]] * 2, atol=1e-6)
  abaw.write_submission(str(frame_list), str(preds), str(out), 'hold')
  held = np.array([[float(x) for x in r[1:]] for r in
                   list(csv.reader(open(out)))[1:11]])
  np.testing.assert_allclose(held[3:6], [v[2]] * 3, atol=1e-5)


def test_submission_expr_rows_are_class_indices(tmp_path):
  preds = tmp_path / 'preds'
  preds.mkdir()
  probs = np.eye(8)[[2, 7, 0]] * 0.8 + 0.025
  with open(preds / 'v.csv', 'w') as f:
    f.write('frame,time_s,has_face,x0,y0,x1,y1,' + ','.join(NAMES8) + '\n')
    for i, p in enumerate(probs):
      f.write(f'{i},{i / 30},1,0,0,9,9,' + ','.join(map(str, p)) + '\n')
  frames = tmp_path / 'expr.txt'
  frames.write_text('image_location,' + ','.join(F.ABAW_EXPR_CLASSES) + '\n'
                    'v/00001.jpg\nv/00002.jpg\nv/00003.jpg\n')
  out = tmp_path / 'sub.txt'
  assert abaw.write_submission(str(frames), str(preds), str(out))[0] == 'expr'
  rows = list(csv.reader(open(out)))
  assert rows[0] == ['image_location', *F.ABAW_EXPR_CLASSES]
  assert rows[1:] == [['v/00001.jpg', '2'], ['v/00002.jpg', '7'],
                      ['v/00003.jpg', '0']]


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'affect_jax.abaw', *args],
                        capture_output=True, text=True, cwd=ROOT, check=False,
                        env={**os.environ, 'PYTHONPATH': ROOT})


def test_submission_command_and_its_errors(submission_inputs, tmp_path):
  preds, frame_list, listed, _ = submission_inputs
  out = tmp_path / 'sub.txt'
  run = _cli(f'--frames={frame_list}', f'--predictions={preds}',
             f'--output={out}')
  assert run.returncode == 0, run.stderr[-2000:]
  assert f'{len(listed)} rows (VA)' in run.stdout
  assert len(open(out).read().splitlines()) == len(listed) + 1
  # A listed video without predictions: one line naming it, nothing written.
  frame_list.write_text(frame_list.read_text() + 'vidC/00001.jpg,\n')
  bad = tmp_path / 'bad.txt'
  run = _cli(f'--frames={frame_list}', f'--predictions={preds}',
             f'--output={bad}')
  assert run.returncode == 2 and not bad.exists()
  assert run.stderr.strip().splitlines()[-1].startswith(
      "error: No predictions for video 'vidC'")
  with pytest.raises(AffectJaxError, match=r'frame 12 is not in .*vidA\.csv'):
    frame_list.write_text('vidA/00012.jpg\n')
    abaw.write_submission(str(frame_list), str(preds), str(bad))
  with pytest.raises(AffectJaxError, match=r'example\.txt:2: .*NNNNN\.jpg'):
    frame_list.write_text('image_location,valence,arousal\nvidA/frame1.png\n')
    abaw.write_submission(str(frame_list), str(preds), str(bad))
