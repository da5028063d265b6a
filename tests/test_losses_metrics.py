"""Losses (jax) and split metrics (numpy) against direct float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affect_jax import losses
from affect_jax import metrics


def ref_ccc(x, y, ddof=0):
  """Straight from the formula, float64."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  mx, my = x.mean(), y.mean()
  n = x.size - ddof
  cov = np.sum((x - mx) * (y - my)) / n
  vx = np.sum((x - mx) ** 2) / n
  vy = np.sum((y - my) ** 2) / n
  return 2 * cov / (vx + vy + (mx - my) ** 2)


def log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def _pair(rng, shape):
  y = rng.uniform(-1, 1, shape)
  x = 0.6 * y + 0.3 * rng.normal(size=shape) + 0.1
  return x, y


def _finite(tree):
  return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


# ----------------------------------------------------------------- CCC (jax)


def test_ccc_matches_reference_per_output_with_mask():
  rng = np.random.default_rng(0)
  x, y = _pair(rng, (60, 3))
  mask = rng.random(60) > 0.3
  got = np.asarray(losses.ccc(x, y, mask))
  assert got.shape == (3,)
  want = [ref_ccc(x[mask, k], y[mask, k]) for k in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  # A per-element [N, K] mask selects different frames per output.
  mask2 = rng.random((60, 3)) > 0.5
  got = np.asarray(losses.ccc(x, y, mask2))
  want = [ref_ccc(x[mask2[:, k], k], y[mask2[:, k], k]) for k in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_ccc_loss_pools_valid_frames_of_batch():
  rng = np.random.default_rng(1)
  x, y = _pair(rng, (3, 10, 2))
  mask = np.ones((3, 10), np.float32)
  mask[1, 7:] = 0
  mask[2, 4:] = 0
  x[mask == 0] = 1e6  # Padding must not matter.
  valid = mask > 0
  want = np.mean([1 - ref_ccc(x[..., k][valid], y[..., k][valid])
                  for k in range(2)])
  loss = jax.jit(losses.ccc_loss)(x, y, mask)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_perfect_and_negated_predictions():
  y = np.random.default_rng(2).normal(size=(2, 8, 2)).astype(np.float32)
  y -= y.mean(axis=(0, 1))  # CCC(y, -y) = -1 needs zero means.
  mask = np.ones((2, 8))
  np.testing.assert_allclose(losses.ccc(y, y, mask, axis=(0, 1)), [1, 1],
                             atol=1e-6)
  np.testing.assert_allclose(losses.ccc(-y, y, mask, axis=(0, 1)), [-1, -1],
                             atol=1e-6)
  assert abs(float(losses.ccc_loss(y, y, mask))) < 1e-6
  np.testing.assert_allclose(float(losses.ccc_loss(-y, y, mask)), 2.0,
                             atol=1e-6)


@pytest.mark.parametrize('case', ['equal_constants', 'different_constants',
                                  'constant_prediction', 'batch_of_one',
                                  'single_valid', 'all_masked'])
def test_ccc_loss_degenerate_inputs_finite(case):
  rng = np.random.default_rng(3)
  pred = rng.normal(size=(2, 5, 2)).astype(np.float32)
  target = rng.uniform(-1, 1, (2, 5, 2)).astype(np.float32)
  mask = np.ones((2, 5), np.float32)
  if case == 'equal_constants':
    pred[:] = 0.3
    target[:] = 0.3
  elif case == 'different_constants':
    pred[:] = 0.3
    target[:] = -0.5
  elif case == 'constant_prediction':
    pred[:] = 0.0
  elif case == 'batch_of_one':
    pred, target, mask = pred[:1, :1], target[:1, :1], mask[:1, :1]
  elif case == 'single_valid':
    mask[:] = 0
    mask[1, 2] = 1
  elif case == 'all_masked':
    mask[:] = 0
  value, grad = jax.value_and_grad(losses.ccc_loss)(pred, target, mask)
  assert np.isfinite(float(value))
  assert 0.0 <= float(value) <= 2.0
  assert _finite(grad)
  if case in ('equal_constants', 'different_constants', 'batch_of_one',
              'single_valid', 'all_masked'):
    # Convention: zero variance on both sides -> CCC 0 -> loss 1.
    np.testing.assert_allclose(float(value), 1.0, atol=1e-4)


def test_nan_targets_ignored_per_output():
  rng = np.random.default_rng(4)
  x, y = _pair(rng, (2, 12, 2))
  x, y = x.astype(np.float32), y.astype(np.float32)
  y[0, :3, 0] = np.nan  # Valence unlabelled on some frames...
  y[1, 5:9, 1] = np.nan  # ...arousal on others.
  mask = np.ones((2, 12), np.float32)
  mask[1, 10:] = 0
  want = []
  for k in range(2):
    ok = (mask > 0) & ~np.isnan(y[..., k])
    want.append(1 - ref_ccc(x[..., k][ok], y[..., k][ok]))
  value, grad = jax.value_and_grad(losses.ccc_loss)(x, y, mask)
  np.testing.assert_allclose(float(value), np.mean(want), rtol=1e-5)
  assert _finite(grad)
  assert np.all(np.asarray(grad)[0, :3, 0] == 0)

  value, grad = jax.value_and_grad(losses.mse_loss)(x, y, mask)
  want = []
  for k in range(2):
    ok = (mask > 0) & ~np.isnan(y[..., k])
    want.append(np.mean((x[..., k][ok] - y[..., k][ok]) ** 2))
  np.testing.assert_allclose(float(value), np.mean(want), rtol=1e-5)
  assert _finite(grad)


# ------------------------------------------------------------ classification


def test_weighted_sigmoid_bce_matches_reference_and_large_logits():
  rng = np.random.default_rng(5)
  b, t, c = 2, 6, 4
  logits = rng.normal(scale=3, size=(b, t, c))
  logits[0, 0] = [100, -100, 100, -100]
  logits[1, 1] = [-100, 100, 30, -30]
  labels = (rng.random((b, t, c)) > 0.6).astype(np.float64)
  labels[0, 0] = [1, 0, 0, 1]  # Two confident-correct, two confident-wrong.
  mask = np.ones((b, t))
  mask[1, 4:] = 0
  weights = rng.uniform(0.2, 2.0, c)
  per = -(labels * log_sigmoid(logits) + (1 - labels) * log_sigmoid(-logits))
  valid = mask > 0
  want = np.sum((per * weights)[valid]) / (valid.sum() * c)
  value, grad = jax.value_and_grad(losses.weighted_sigmoid_bce)(
      jnp.asarray(logits, jnp.float32), labels, mask, weights)
  np.testing.assert_allclose(float(value), want, rtol=1e-5)
  assert _finite(grad)
  np.testing.assert_array_equal(np.asarray(grad)[1, 4:], 0)


def test_class_weights_from_counts():
  w = np.asarray(losses.class_weights_from_counts([10, 20, 0, 40]))
  inv = np.array([1 / 10, 1 / 20, 0, 1 / 40])
  np.testing.assert_allclose(w, inv * 4 / inv.sum(), rtol=1e-6)
  np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)
  assert w[2] == 0
  np.testing.assert_array_equal(losses.class_weights_from_counts([0, 0]),
                                [0, 0])
  # tzirakis2019 Table 3: contempt rarest -> largest, neutral -> smallest.
  counts = [840611, 60179, 15786, 10065, 8581, 56683, 10173, 57425]
  w = np.asarray(losses.class_weights_from_counts(counts))
  assert np.argmax(w) == 4 and np.argmin(w) == 0


def test_softmax_cross_entropy_ignores_unlabelled():
  rng = np.random.default_rng(6)
  logits = rng.normal(size=(2, 3, 5))
  labels = np.array([[0, 4, -1], [2, 2, 1]])
  mask = np.array([[1, 1, 1], [1, 1, 0]])
  log_p = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
  ok = (mask > 0) & (labels >= 0)
  want = -np.mean(np.take_along_axis(
      log_p, np.maximum(labels, 0)[..., None], -1)[..., 0][ok])
  value, grad = jax.value_and_grad(losses.softmax_cross_entropy)(
      jnp.asarray(logits, jnp.float32), labels, mask)
  np.testing.assert_allclose(float(value), want, rtol=1e-5)
  assert _finite(grad)


# ------------------------------------------------------------- numpy metrics


def test_numpy_metrics_match_references():
  x, y = _pair(np.random.default_rng(7), 200)
  assert metrics.ccc(x, y) == pytest.approx(ref_ccc(x, y), rel=1e-12)
  assert metrics.ccc(x, y, ddof=1) == pytest.approx(ref_ccc(x, y, ddof=1),
                                                     rel=1e-12)
  assert metrics.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1],
                                                rel=1e-12)
  assert metrics.mse(x, y) == pytest.approx(np.mean((x - y) ** 2), rel=1e-12)
  assert metrics.rmse(x, y) == pytest.approx(
      np.sqrt(np.mean((x - y) ** 2)), rel=1e-12)
  assert metrics.ccc(np.ones(5), np.ones(5)) == 0.0
  assert metrics.pearson(np.ones(5), y[:5]) == 0.0
  assert np.isnan(metrics.ccc([], []))


def _windows(lengths, window, stride):
  """(video, start) of overlapping windows covering each video."""
  out = []
  for v, n in enumerate(lengths):
    starts = list(range(0, max(n - window, 0) + 1, stride))
    if starts[-1] + window < n:
      starts.append(n - window)
    out += [(v, s) for s in starts]
  return out


def test_regression_accumulator_whole_split_once_per_frame():
  rng = np.random.default_rng(8)
  lengths = [9, 3, 14]  # Video 1 is shorter than a window: padding.
  truth = [rng.uniform(-1, 1, (n, 2)) for n in lengths]
  pred = [0.5 * y + 0.2 * rng.normal(size=y.shape) for y in truth]
  truth[2][5:8, 1] = np.nan  # Arousal unlabelled on some frames.
  window, batch = 4, 2
  acc = metrics.RegressionAccumulator()
  wins = _windows(lengths, window, stride=2)  # Overlap: frames seen twice.
  for lo in range(0, len(wins), batch):
    chunk = wins[lo:lo + batch]
    p = np.zeros((batch, window, 2))
    y = np.full((batch, window, 2), np.nan)
    m = np.zeros((batch, window))
    fi = np.full((batch, window), -1)
    ids = ['none'] * batch
    for i, (v, s) in enumerate(chunk):
      n = min(window, lengths[v] - s)
      p[i, :n], y[i, :n] = pred[v][s:s + n], truth[v][s:s + n]
      m[i, :n], fi[i, :n], ids[i] = 1, np.arange(s, s + n), f'vid{v}'
    acc.update(p, y, m, ids, fi)
  res = acc.result(names=('valence', 'arousal'))

  assert res['num_frames'] == sum(lengths)
  assert res['num_videos'] == 3
  all_p, all_y = np.concatenate(pred), np.concatenate(truth)
  for k, name in enumerate(('valence', 'arousal')):
    ok = ~np.isnan(all_y[:, k])
    assert res[f'ccc_{name}'] == pytest.approx(
        ref_ccc(all_p[ok, k], all_y[ok, k]), rel=1e-10)
    assert res[f'mse_{name}'] == pytest.approx(
        np.mean((all_p[ok, k] - all_y[ok, k]) ** 2), rel=1e-10)
    per_video = []
    for p, y in zip(pred, truth):
      ok = ~np.isnan(y[:, k])
      per_video.append(ref_ccc(p[ok, k], y[ok, k]))
    assert res[f'ccc_per_video_mean_{name}'] == pytest.approx(
        np.mean(per_video), rel=1e-10)
  assert res['ccc_mean'] == pytest.approx(
      (res['ccc_valence'] + res['ccc_arousal']) / 2)

  per = acc.per_video()
  assert list(per) == ['vid0', 'vid1', 'vid2']
  for v, vid in enumerate(per):
    np.testing.assert_array_equal(per[vid]['frames'], np.arange(lengths[v]))
    np.testing.assert_array_equal(per[vid]['predictions'], pred[v])


def test_regression_accumulator_later_duplicate_replaces():
  acc = metrics.RegressionAccumulator()
  y = np.array([[[0.1], [0.5], [-0.2]]])
  mask = np.ones((1, 3))
  acc.update(np.array([[[9.0], [9.0], [9.0]]]), y, mask, [7], [[0, 1, 2]])
  acc.update(np.array([[[0.2], [0.4], [-0.1]]]), y, mask, [7], [[0, 1, 2]])
  res = acc.result(names=('valence',))
  assert res['num_frames'] == 3
  assert res['ccc_valence'] == pytest.approx(
      ref_ccc([0.2, 0.4, -0.1], [0.1, 0.5, -0.2]), rel=1e-12)


def test_multilabel_accumulator_hand_computed():
  # Class 0: pred [1 1 0 0] vs true [1 0 1 0] -> tp 1, fp 1, fn 1: F1 0.5.
  # Class 1: pred [0 1 1 0] vs true [0 1 1 0] -> F1 1.
  # Class 2: never present, never predicted -> 0 (zero_division=0).
  # Exact match on frames 0 and 3 -> accuracy 0.5.
  probs = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.05], [0.1, 0.8, 0.2],
                    [0.4, 0.1, 0.3], [0.9, 0.9, 0.9]])
  labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0],
                     [0, 0, 0]], np.float32)
  mask = np.array([1, 1, 1, 1, 0])  # The last frame is padding.
  frames = np.arange(5)
  names = ('a', 'b', 'c')
  for from_logits in (False, True):
    out = np.log(probs) - np.log1p(-probs) if from_logits else probs
    acc = metrics.MultiLabelAccumulator(from_logits=from_logits)
    acc.update(out[None, :3], labels[None, :3], mask[None, :3], ['v'],
               frames[None, :3])
    # An overlapping window repeats frame 2: it must count once.
    acc.update(out[None, 2:], labels[None, 2:], mask[None, 2:], ['v'],
               frames[None, 2:])
    res = acc.result(class_names=names)
    assert res['num_frames'] == 4
    assert res['precision_a'] == pytest.approx(0.5)
    assert res['recall_a'] == pytest.approx(0.5)
    assert res['f1_a'] == pytest.approx(0.5)
    assert res['f1_b'] == pytest.approx(1.0)
    assert res['f1_c'] == 0.0
    assert res['f1_mean'] == pytest.approx(0.5)
    assert res['accuracy'] == pytest.approx(0.5)


def test_roc_auc_against_pairwise_count():
  rng = np.random.default_rng(5)
  scores = np.round(rng.normal(size=60), 1)  # Rounded: many ties.
  labels = rng.random(60) < 0.3
  pos, neg = scores[labels], scores[~labels]
  # Direct definition: P(pos > neg) + 0.5 P(pos == neg) over all pairs.
  ref = ((pos[:, None] > neg[None]).sum() +
         0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
  assert metrics.roc_auc(scores, labels) == pytest.approx(ref, abs=1e-12)
  assert metrics.roc_auc([0.1, 0.9], [False, True]) == 1.0
  assert metrics.roc_auc([0.9, 0.1], [False, True]) == 0.0
  assert np.isnan(metrics.roc_auc([0.3, 0.4], [True, True]))


def test_multilabel_auc_mean_skips_undefined_classes():
  acc = metrics.MultiLabelAccumulator()
  probs = np.array([[[0.9, 0.2], [0.1, 0.3], [0.8, 0.1]]])
  labels = np.array([[[1, 0], [0, 0], [1, 0]]], np.float64)
  acc.update(probs, labels, np.ones((1, 3)), ['v'], np.arange(3)[None])
  r = acc.result(('a', 'b'))
  assert r['auc_a'] == 1.0 and np.isnan(r['auc_b'])
  assert r['auc_mean'] == 1.0


# ------------------------------------------------- numeric edges of the CCC


@pytest.mark.parametrize('scale', [1.0, 1e-2, 1e-4, 1e-6])
def test_ccc_is_unbiased_at_tiny_label_variances(scale):
  # 1e-4 * normal(1000) pairs: variances near 1e-8, where a fixed 1e-8 in
  # the denominator was ~34% off. Around 0 and around a large mean.
  rng = np.random.default_rng(3)
  y = rng.normal(size=1000)
  x = 0.5 * y + 0.5 * rng.normal(size=1000)
  for offset in (0.0, 0.5):
    xs, ys = scale * x + offset, scale * y + offset
    want = ref_ccc(xs, ys)  # float64, straight from the formula.
    assert metrics.ccc(xs, ys) == pytest.approx(want, rel=1e-9)
    got = float(losses.ccc(jnp.float32(xs), jnp.float32(ys)))
    # float32 holds the spread to ~1e-7 of the offset: 1e-6 * normal
    # around 0.5 is ~8 ulps, beyond what any guard can recover.
    if offset == 0 or scale >= 1e-4:
      assert got == pytest.approx(want, rel=2e-3 if offset else 1e-5)
    loss = float(losses.ccc_loss(jnp.float32(xs)[None, :, None],
                                 jnp.float32(ys)[None, :, None],
                                 jnp.ones((1, 1000))))
    if offset == 0:
      assert loss == pytest.approx(1 - want, rel=1e-5)


@pytest.mark.parametrize('value', [0.0, 0.1, -0.7, 1 / 3])
def test_constant_inputs_give_zero_ccc_and_finite_gradients(value):
  # Equal constant sequences are 0/0: CCC 0 by convention, exactly, in
  # float32 and float64 (their moments are exactly 0, not rounding noise).
  for n in (1, 3, 7, 300):
    c = np.full(n, value)
    assert metrics.ccc(c, c) == 0.0
    assert metrics.pearson(c, c) == 0.0
    assert float(losses.ccc(jnp.float32(c), jnp.float32(c))) == 0.0
    # Constant but different: 0 by the formula (cov = 0).
    assert metrics.ccc(c, c + 0.25) == 0.0
  grad = jax.grad(lambda p: losses.ccc_loss(p, jnp.full((1, 8, 1), value),
                                            jnp.ones((1, 8))))
  assert _finite(grad(jnp.full((1, 8, 1), value, jnp.float32)))
  assert _finite(grad(jnp.linspace(0, 1, 8).reshape(1, 8, 1)))


def test_per_video_mean_leaves_out_recordings_with_constant_labels():
  rng = np.random.default_rng(5)
  y0 = rng.uniform(-1, 1, 50)
  p0 = 0.7 * y0 + 0.2 * rng.normal(size=50)
  y1 = rng.uniform(-1, 1, 30)
  p1 = -0.3 * y1 + 0.3 * rng.normal(size=30)
  videos = {'moving_a': (p0, y0), 'moving_b': (p1, y1),
            # Constant labels: CCC 0 whatever the prediction (0/0 when it
            # equals them); left out of the per-recording mean.
            'flat_equal': (np.full(20, 0.3), np.full(20, 0.3)),
            'flat_other': (rng.normal(size=20), np.full(20, -0.2)),
            'one_frame': (np.array([0.5]), np.array([0.1]))}
  acc = metrics.RegressionAccumulator()
  for vid, (p, y) in videos.items():
    n = len(p)
    acc.update(p.reshape(1, n, 1), y.reshape(1, n, 1), np.ones((1, n)),
               [vid], np.arange(n)[None])
  res = acc.result(names=('valence',))
  want = np.mean([ref_ccc(p0, y0), ref_ccc(p1, y1)])
  assert res['ccc_per_video_mean_valence'] == pytest.approx(want, rel=1e-10)
  assert res['num_videos'] == 5
  all_p = np.concatenate([p for p, _ in videos.values()])
  all_y = np.concatenate([y for _, y in videos.values()])
  assert res['ccc_valence'] == pytest.approx(ref_ccc(all_p, all_y),
                                             rel=1e-10)
