"""The tzirakis2019 post-processing chain against direct numpy versions."""

import os

import ml_collections
import numpy as np
import pytest

from affect_jax import evaluate
from affect_jax import inference
from affect_jax import metrics
from affect_jax import postprocess as pp
from configs import common


def _direct_median(x, w):
  """Median of x[t - w//2 .. t + w//2], indices clipped to the series."""
  h = w // 2
  n = len(x)
  return np.array([np.median([x[min(max(j, 0), n - 1)]
                              for j in range(t - h, t + h + 1)])
                   for t in range(n)])


@pytest.mark.parametrize('w', [1, 3, 5, 9])
def test_median_filter_matches_direct_version_including_edges(w):
  x = np.random.default_rng(w).normal(size=23)
  np.testing.assert_allclose(pp.median_filter(x, w), _direct_median(x, w))
  # An interior spike is removed; at the ends the end value is repeated, so
  # it counts (window + 1) / 2 times in the first window.
  spike = np.zeros(10)
  spike[[0, 5]] = 5.0
  out = pp.median_filter(spike, 3)
  assert out[5] == 0.0 and out[0] == 5.0 and out[1] == 0.0
  assert pp.median_filter(np.full(7, 2.5), 5).tolist() == [2.5] * 7


def test_median_window_longer_than_the_series_and_even_window():
  x = np.array([3.0, 1.0, 2.0])
  np.testing.assert_allclose(pp.median_filter(x, 9), _direct_median(x, 9))
  with pytest.raises(ValueError, match='odd'):
    pp.median_filter(x, 4)


def test_shift_delays_forward_in_time_padding_with_the_first_value():
  x = np.arange(6, dtype=float)
  assert pp.shift(x, 2).tolist() == [0, 0, 0, 1, 2, 3]
  assert pp.shift(x, 0).tolist() == x.tolist()
  assert pp.shift(x, 10).tolist() == [0] * 6
  # A prediction that leads the labels by 3 frames is fixed by a shift of 3.
  gold = np.sin(np.linspace(0, 6, 60))
  early = np.concatenate([gold[3:], np.full(3, gold[-1])])
  assert metrics.ccc(pp.shift(early, 3)[3:], gold[3:]) == pytest.approx(1.0)


def test_seconds_to_frames():
  assert pp.seconds_to_frames(0.04, 25) == 1
  assert pp.seconds_to_frames(0.2, 25) == 5
  assert pp.seconds_to_frames(0.16, 25, odd=True) == 5
  assert pp.seconds_to_frames(0.001, 10) == 1


def test_centre_and_scale():
  x = np.array([1.0, 2.0, 3.0])
  assert pp.centre(x, 0.5).tolist() == [1.5, 2.5, 3.5]
  np.testing.assert_allclose(pp.scale(x, 2.0), [0.0, 2.0, 4.0])


def test_chain_keeps_only_steps_that_improve_the_fit_ccc():
  rng = np.random.default_rng(0)
  fps = 10.0
  gold, pred = [], []
  for _ in range(4):
    g = np.convolve(rng.normal(size=140), np.ones(15) / 15, 'same')
    gold.append(g)
    # Shrunk, biased, noisy and 5 frames early.
    p = 0.3 * g + 0.2 + 0.05 * rng.normal(size=g.size)
    pred.append(np.concatenate([p[5:], np.full(5, p[-1])]))
  chain, before = pp.fit_chain(pred, gold, fps)
  names = [s.name for s in chain]
  assert names == [n for n in pp.STEPS if n in names]  # In the paper's order.
  assert {'centre', 'scale', 'shift'} <= set(names)
  cccs = [before] + [s.fit_ccc for s in chain]
  assert all(b > a for a, b in zip(cccs, cccs[1:]))  # Each step improved.
  shift = [s for s in chain if s.name == 'shift'][0]
  assert pp.seconds_to_frames(shift.value, fps) == 5
  after = pp.apply_chain(pred, chain, fps)
  assert metrics.ccc(np.concatenate(after), np.concatenate(gold)) == (
      pytest.approx(chain[-1].fit_ccc))
  # A perfect prediction keeps no step at all.
  chain, before = pp.fit_chain(gold, gold, fps)
  assert chain == [] and before == pytest.approx(1.0)


def _table(n_videos, seed):
  r = np.random.default_rng(seed)
  vids, frames, outs, golds = [], [], [], []
  for v in range(n_videos):
    g = np.convolve(r.normal(size=80), np.ones(9) / 9, 'same')
    p = 0.4 * g - 0.1 + 0.05 * r.normal(size=80)
    vids += [f'v{v}'] * 80
    frames.append(np.arange(80))
    outs.append(np.stack([p, p], -1))
    golds.append(np.stack([g, g], -1))
  return inference.FrameTable(
      video_id=np.array(vids), frame=np.concatenate(frames),
      time=np.concatenate(frames) / 25.0,
      has_face=np.ones(len(vids), bool), outputs=np.concatenate(outs),
      targets=np.concatenate(golds))


def test_run_writes_chain_results_and_applies_the_fit_to_test(tmp_path):
  table = _table
  folder = tmp_path / 'test' / 'predictions'
  columns = [('valence', 0), ('arousal', 1)]
  evaluate.write_predictions(str(folder), 'validation', table(3, 1), columns)
  evaluate.write_predictions(str(folder), 'test', table(3, 2), columns)
  cfg = common.postprocess_stage('stage:test')
  out = pp.run(str(folder / 'validation.csv'), str(folder / 'test.csv'),
               str(tmp_path / 'post'), cfg)
  assert out['fps'] == pytest.approx(25.0)
  for name in ('valence', 'arousal'):
    assert (out['validation']['after'][f'ccc_{name}'] >
            out['validation']['before'][f'ccc_{name}'])
    assert out['test']['after'][f'ccc_{name}'] > (
        out['test']['before'][f'ccc_{name}'])
  for f in ('chain.json', 'results.json', 'results.md',
            'predictions/test.csv', 'predictions/validation.csv'):
    assert os.path.exists(tmp_path / 'post' / f), f
  # The post-processed file scores what results.json says.
  post, names = evaluate.read_predictions(
      str(tmp_path / 'post' / 'predictions' / 'test.csv'))
  assert names == ['valence', 'arousal']
  assert metrics.ccc(post.outputs[:, 0], post.targets[:, 0]) == (
      pytest.approx(out['test']['after']['ccc_valence'], abs=1e-4))


def test_run_refuses_class_predictions(tmp_path):
  table = inference.FrameTable(
      video_id=np.array(['a', 'a']), frame=np.array([0, 1]),
      time=np.array([0.0, 0.1]), has_face=np.ones(2, bool),
      outputs=np.array([[0.2, 0.8], [0.6, 0.4]]),
      targets=np.array([[0, 1], [1, 0]], float))
  evaluate.write_predictions(str(tmp_path), 'validation', table,
                             [('happy', 0), ('sad', 1)])
  from affect_jax.errors import AffectJaxError  # pylint: disable=g-import-not-at-top
  with pytest.raises(AffectJaxError, match='continuous valence/arousal'):
    pp.run(str(tmp_path / 'validation.csv'), str(tmp_path / 'validation.csv'),
           str(tmp_path / 'out'), ml_collections.ConfigDict(
               common.postprocess_stage('x').to_dict()))


def test_fit_and_apply_on_one_split_leaves_each_recording_out(tmp_path):
  """AVEC 2016 RECOLA has no test labels: validation both ways, each
  recording post-processed by the chain fitted on the other ones."""
  folder = tmp_path / 'test' / 'predictions'
  columns = [('valence', 0), ('arousal', 1)]
  table = _table(4, 5)
  evaluate.write_predictions(str(folder), 'validation', table, columns)
  cfg = common.postprocess_stage('stage:test', apply_split='validation')
  csv = str(folder / 'validation.csv')
  out = pp.run(csv, csv, str(tmp_path / 'post'), cfg)
  assert out['held_out']
  read, _ = evaluate.read_predictions(csv)
  steps = list(pp.STEPS)
  expected = np.array(read.outputs)
  for k in range(2):
    pred, gold, rows = pp._by_video(read, k)  # pylint: disable=protected-access
    for i, r in enumerate(rows):
      others = [j for j in range(len(rows)) if j != i]
      chain, _ = pp.fit_chain([pred[j] for j in others],
                              [gold[j] for j in others], out['fps'], steps)
      expected[r, k] = pp.apply_chain([pred[i]], chain, out['fps'])[0]
  post, _ = evaluate.read_predictions(
      str(tmp_path / 'post' / 'predictions' / 'validation.csv'))
  np.testing.assert_allclose(post.outputs, expected, atol=1e-5)
  assert metrics.ccc(post.outputs[:, 0], post.targets[:, 0]) == (
      pytest.approx(out['validation']['after']['ccc_valence'], abs=1e-4))
  # In-sample (the chain fitted on all four) is reported apart.
  assert 'validation_in_sample' in out
  assert os.path.exists(tmp_path / 'post' / 'predictions' /
                        'validation_in_sample.csv')
