"""The task table: each task's targets, loss and metrics against numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from affect_jax import features as F
from affect_jax import tasks
from affect_jax.errors import AffectJaxError
from affect_jax.input_pipeline import SplitData


def _np_ccc(x, y):
  mx, my = x.mean(), y.mean()
  cov = ((x - mx) * (y - my)).mean()
  return 2 * cov / (x.var() + y.var() + (mx - my) ** 2)


def _batch(rng, b=2, t=5, c=7):
  onehot = np.eye(c, dtype=np.float32)[rng.integers(0, c, (b, t))]
  onehot[0, 1] = np.nan  # An unlabelled frame.
  return {
      F.VALENCE: rng.uniform(-1, 1, (b, t)).astype(np.float32),
      F.AROUSAL: rng.uniform(-1, 1, (b, t)).astype(np.float32),
      F.EMOTIONS: onehot,
      F.MASK: np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], np.float32),
  }


def test_va_targets_loss_and_metric_against_numpy():
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  task = tasks.get('va')
  y = np.asarray(task.targets(batch))
  assert task.output_names(()) == ('arousal', 'valence')
  np.testing.assert_array_equal(y[..., 0], batch[F.AROUSAL])
  np.testing.assert_array_equal(y[..., 1], batch[F.VALENCE])
  pred = rng.normal(size=y.shape).astype(np.float32)
  loss = float(task.loss_fn('ccc')(jnp.asarray(pred), jnp.asarray(y),
                                   jnp.asarray(batch[F.MASK]), None))
  m = batch[F.MASK] > 0
  want = np.mean([1 - _np_ccc(pred[..., k][m].astype(np.float64),
                              y[..., k][m].astype(np.float64))
                  for k in range(2)])
  assert loss == pytest.approx(want, rel=1e-5)
  mse = float(task.loss_fn('mse')(pred, y, batch[F.MASK], None))
  assert mse == pytest.approx(np.mean((pred[m] - y[m]) ** 2), rel=1e-5)

  acc = task.accumulator()
  acc.update(pred, y, batch[F.MASK], ['a', 'b'], np.tile(np.arange(5), (2, 1)))
  res = task.result(acc, task.output_names(()))
  for k, name in enumerate(('arousal', 'valence')):
    assert res[f'ccc_{name}'] == pytest.approx(
        _np_ccc(pred[..., k][m].astype(np.float64),
                y[..., k][m].astype(np.float64)), rel=1e-9)
  assert [n for n, _ in task.columns(('arousal', 'valence'))] == [
      'valence', 'arousal']
  assert task.activation(pred) is pred


def test_emotions_weighted_bce_and_sigmoid_against_numpy():
  rng = np.random.default_rng(1)
  task = tasks.get('emotions')
  labels = (rng.uniform(size=(2, 4, 3)) > 0.5).astype(np.float32)
  logits = rng.normal(size=(2, 4, 3)).astype(np.float32)
  mask = np.ones((2, 4), np.float32)
  w = np.array([0.5, 1.0, 1.5], np.float32)
  loss = float(task.loss_fn('weighted_bce')(logits, labels, mask, w))
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  want = np.mean(-w * (labels * np.log(p) + (1 - labels) * np.log(1 - p)))
  assert loss == pytest.approx(want, rel=1e-5)
  np.testing.assert_allclose(task.activation(logits), p, rtol=1e-12)
  assert task.output_names(['a', 'b', 'c']) == ('a', 'b', 'c')


def test_expression_softmax_ce_accuracy_f1_and_confusion_against_numpy():
  rng = np.random.default_rng(2)
  task = tasks.get('expression')
  batch = _batch(rng)
  y = np.asarray(task.targets(batch))
  logits = rng.normal(size=y.shape).astype(np.float32)
  loss = float(task.loss_fn('softmax_ce')(logits, y, batch[F.MASK], None))
  labels = np.asarray(tasks.expression_labels(y))
  assert labels[0, 1] == -1  # The NaN row is unlabelled.
  ok = (batch[F.MASK] > 0) & (labels >= 0)
  lg = logits.astype(np.float64)
  logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
  want = -np.mean(np.take_along_axis(logp, np.maximum(labels, 0)[..., None],
                                     -1)[..., 0][ok])
  assert loss == pytest.approx(want, rel=1e-5)

  probs = task.activation(logits)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)
  acc = task.accumulator()
  acc.update(probs, y, batch[F.MASK], ['a', 'b'],
             np.tile(np.arange(5), (2, 1)))
  names = [f'c{i}' for i in range(7)]
  res = task.result(acc, names)
  pred, true = np.argmax(logits, -1)[ok], labels[ok]
  assert res['num_frames'] == ok.sum() == 8
  assert res['accuracy'] == pytest.approx(np.mean(pred == true))
  confusion = np.zeros((7, 7), int)
  for t, p in zip(true, pred):
    confusion[t, p] += 1
  assert res['confusion'] == confusion.tolist()
  for c in range(7):
    tp = confusion[c, c]
    fp, fn = confusion[:, c].sum() - tp, confusion[c].sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
    assert res[f'f1_c{c}'] == pytest.approx(f1)
  assert res['f1_mean'] == pytest.approx(
      np.mean([res[f'f1_c{c}'] for c in range(7)]))


def _split(valence, emotions, names):
  n = len(valence)
  return SplitData(source=None, name='ds/split', video_ids=['v'],
                   subject_ids=['s'], starts=np.array([0]),
                   lengths=np.array([n]), valence=np.asarray(valence),
                   arousal=np.asarray(valence), emotions=emotions,
                   emotion_names=tuple(names))


def test_task_refuses_a_dataset_without_its_labels():
  no_va = _split([np.nan] * 3, np.eye(3, dtype=np.float32), 'abc')
  with pytest.raises(AffectJaxError, match='needs valence/arousal'):
    tasks.get('va').check_dataset(no_va)
  no_classes = _split([0.1, 0.2], np.zeros((2, 0), np.float32), ())
  with pytest.raises(AffectJaxError, match='needs class labels'):
    tasks.get('expression').check_dataset(no_classes)
  seven = _split([np.nan] * 7, np.eye(7, dtype=np.float32), 'abcdefg')
  tasks.get('expression').check_dataset(seven, num_outputs=7)
  with pytest.raises(AffectJaxError, match='8-class head'):
    tasks.get('expression').check_dataset(seven, num_outputs=8)


def test_unknown_task_and_loss_are_clear_errors():
  with pytest.raises(AffectJaxError, match="Unknown task 'vaa'"):
    tasks.get('vaa')
  with pytest.raises(AffectJaxError, match='has no loss'):
    tasks.get('va').loss_fn('weighted_bce')
