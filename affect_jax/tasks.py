"""The prediction tasks, as one table: what a head predicts and how it is scored.

Every task says, once, for the training loop, evaluation and prediction:

  outputs      names of the K head units, in output order (may depend on the
               dataset's label names, e.g. the emotion classes);
  targets      the batch's labels as [B, T, K] floats (NaN = no label);
  activation   logits -> what is reported (identity, sigmoid, softmax);
  losses       name -> loss(outputs, targets, mask, class_weights);
  accumulator  the whole-split metric accumulator (`affect_jax.metrics`);
  summary_keys metrics printed after each evaluation;
  columns      prediction-file columns (name, output index).

Tasks:
  'va'          arousal / valence regression (tzirakis2019, kollias2019):
                1 - CCC or MSE; CCC, Pearson, MSE over the whole split.
  'emotions'    multi-label sigmoid (RealEyes' 8 emotions): weighted BCE;
                per-class F1 / ROC AUC.
  'expression'  single-label softmax over 7 or 8 classes (AFEW, Aff-Wild2
                EXPR, AffectNet): cross-entropy; accuracy, per-class F1,
                confusion matrix.

Nothing else in the project branches on a task's name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax.numpy as jnp
import numpy as np

from affect_jax import features as F
from affect_jax import losses
from affect_jax import metrics
from affect_jax.errors import AffectJaxError

# Output order of the 2-unit regression head (tzirakis2019: "arousal, valence").
VA_OUTPUTS = (F.AROUSAL, F.VALENCE)


def _identity(x):
  return x


def _softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _va_targets(batch):
  return jnp.stack([jnp.asarray(batch[k]) for k in VA_OUTPUTS], axis=-1)


def _class_targets(batch):
  return jnp.asarray(batch[F.EMOTIONS])


def expression_labels(onehot) -> Any:
  """[..., C] one-hot (NaN rows = unlabelled) -> int [...] class, -1 = none."""
  onehot = jnp.asarray(onehot)
  labelled = ~jnp.any(jnp.isnan(onehot), axis=-1) & (
      jnp.nansum(onehot, axis=-1) > 0.5)
  return jnp.where(labelled, jnp.argmax(jnp.nan_to_num(onehot), axis=-1), -1)


def _ccc(outputs, targets, mask, class_weights):
  del class_weights
  return losses.ccc_loss(outputs, targets, mask)


def _mse(outputs, targets, mask, class_weights):
  del class_weights
  return losses.mse_loss(outputs, targets, mask)


def _weighted_bce(outputs, targets, mask, class_weights):
  return losses.weighted_sigmoid_bce(outputs, targets, mask, class_weights)


def _bce(outputs, targets, mask, class_weights):
  del class_weights
  return losses.weighted_sigmoid_bce(outputs, targets, mask, None)


def _softmax_ce(outputs, targets, mask, class_weights):
  del class_weights
  return losses.softmax_cross_entropy(outputs, expression_labels(targets),
                                      mask)


@dataclasses.dataclass(frozen=True)
class Task:
  """One row of the task table (see the module docstring)."""
  name: str
  description: str
  # label_names (the dataset's emotion/expression classes) -> output names.
  output_names: Callable[[Sequence[str]], tuple[str, ...]]
  targets: Callable[[dict[str, Any]], Any]
  activation: Callable[[np.ndarray], np.ndarray]
  losses: dict[str, Callable[..., Any]]
  default_loss: str
  accumulator: Callable[[], Any]
  # (accumulator, output names) -> metrics dict.
  result: Callable[[Any, Sequence[str]], dict[str, float]]
  summary_keys: tuple[str, ...]
  best_metric: str
  # Which record labels the task needs: 'va' or 'classes'.
  needs: str
  # Metrics reported per output (`<metric>_<output>`) in result tables.
  per_output_metrics: tuple[str, ...] = ()
  # Plots of a scored split (names in affect_jax.plots.SPLIT_PLOTS).
  plots: tuple[str, ...] = ()
  # Prediction columns: output names in this order (None: output order).
  column_order: tuple[str, ...] | None = None

  def loss_fn(self, name: str) -> Callable[..., Any]:
    if name not in self.losses:
      raise AffectJaxError(
          f'Task {self.name!r} has no loss {name!r}; use one of '
          f'{sorted(self.losses)} (config <stage>.loss).')
    return self.losses[name]

  def columns(self, output_names: Sequence[str]) -> list[tuple[str, int]]:
    """(column name, output index) pairs of the prediction files."""
    names = list(output_names)
    order = self.column_order or tuple(names)
    return [(n, names.index(n)) for n in order if n in names]

  def check_dataset(self, split, num_outputs: int | None = None) -> None:
    """Refuses a dataset whose labels cannot train or score this task.

    Args:
      split: an `input_pipeline.SplitData`.
      num_outputs: the head width of a trained model, checked against the
        dataset's classes for the class tasks.
    """
    if self.needs == 'va':
      if not (np.isfinite(split.valence).any() or
              np.isfinite(split.arousal).any()):
        raise AffectJaxError(
            f'Task {self.name!r} needs valence/arousal labels but '
            f'{split.name} has none (every frame is NaN); use a task that '
            'fits the dataset (e.g. "expression" or "emotions") or a VA '
            'dataset.')
      return
    classes = len(split.emotion_names)
    if classes == 0 or split.emotions.shape[1] == 0:
      raise AffectJaxError(
          f'Task {self.name!r} needs class labels but {split.name} has no '
          'emotion/expression classes; use task "va" for a valence/arousal '
          'dataset.')
    if num_outputs is not None and num_outputs != classes:
      raise AffectJaxError(
          f'The model has a {num_outputs}-class head but {split.name} has '
          f'{classes} classes {tuple(split.emotion_names)}; evaluate on a '
          'dataset with the same classes or fine-tune a new head.')


def _va_result(acc, names):
  return acc.result(names=tuple(names))


def _class_result(acc, names):
  return acc.result(class_names=tuple(names))


TASKS: dict[str, Task] = {
    'va': Task(
        name='va',
        description='arousal and valence regression in [-1, 1]',
        output_names=lambda label_names: VA_OUTPUTS,
        targets=_va_targets,
        activation=_identity,
        losses={'ccc': _ccc, 'mse': _mse},
        default_loss='ccc',
        accumulator=metrics.RegressionAccumulator,
        result=_va_result,
        summary_keys=('ccc_valence', 'ccc_arousal', 'ccc_mean'),
        best_metric='ccc_mean',
        needs='va',
        per_output_metrics=('ccc', 'pearson', 'mse'),
        plots=('traces', 'va_histogram'),
        column_order=(F.VALENCE, F.AROUSAL)),
    'emotions': Task(
        name='emotions',
        description='multi-label emotions (sigmoid per class)',
        output_names=tuple,
        targets=_class_targets,
        activation=_sigmoid,
        losses={'weighted_bce': _weighted_bce, 'bce': _bce},
        default_loss='weighted_bce',
        accumulator=metrics.MultiLabelAccumulator,
        result=_class_result,
        summary_keys=('auc_mean', 'f1_mean', 'accuracy'),
        best_metric='auc_mean',
        needs='classes',
        per_output_metrics=('f1', 'auc')),
    'expression': Task(
        name='expression',
        description='single-label expression (softmax over the classes)',
        output_names=tuple,
        targets=_class_targets,
        activation=_softmax,
        losses={'softmax_ce': _softmax_ce},
        default_loss='softmax_ce',
        accumulator=metrics.SingleLabelAccumulator,
        result=_class_result,
        summary_keys=('accuracy', 'f1_mean'),
        best_metric='accuracy',
        needs='classes',
        per_output_metrics=('f1', 'accuracy'),
        plots=('confusion',)),
}


def get(name: str) -> Task:
  if name not in TASKS:
    raise AffectJaxError(f'Unknown task {name!r}; use one of {sorted(TASKS)} '
                         '(config <stage>.task).')
  return TASKS[name]
