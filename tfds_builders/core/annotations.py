"""Label values: parsing a valence/arousal cell, fusing several annotators.

`affect_value` is the one check of a valence/arousal cell of every builder's
annotation files; the fusions are pure functions on arrays, shared by the
builders whose datasets ship the individual annotations (RECOLA's
ratings_individual/, RealEyes' per-annotator folders).
"""

import math

import numpy as np

from affect_jax.errors import AffectJaxError

def affect_value(raw: str, column: str = '',
                 no_label: float | None = None) -> float:
  """A valence or arousal cell of an annotation file -> float in [-1, 1].

  Args:
    raw: the cell's text (surrounding spaces ignored).
    column: its name, for the message ('' for one-value-per-line files).
    no_label: the dataset's "no label" marker (Aff-Wild2 -5, AffectNet -2),
      returned as NaN.

  Raises:
    ValueError: `[column ]"raw" is not a number` or `[column ]raw is outside
      [-1, 1]` (NaN and infinities included); the caller names the file and
      line.
  """
  text = raw.strip()
  prefix = f'{column} ' if column else ''
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f'{prefix}"{text}" is not a number') from None
  if no_label is not None and value == no_label:
    return math.nan
  if not -1.0 <= value <= 1.0:  # Also rejects NaN.
    marker = (f' (and not {no_label:g}, "no label")' if no_label is not None
              else '')
    raise ValueError(f'{prefix}{text} is outside [-1, 1]{marker}')
  return value


# A rater whose ratings vary less than this (std) has no defined correlation.
_CONSTANT_STD = 1e-9


def rater_correlations(ratings: np.ndarray) -> np.ndarray:
  """Pearson correlation matrix of the raters.

  Args:
    ratings: [T, R] one column per rater, finite.

  Returns:
    float64 [R, R], ones on the diagonal; NaN in the row and column of a
    rater whose ratings are constant (the correlation is undefined).
  """
  x = np.asarray(ratings, np.float64)
  centered = x - x.mean(axis=0)
  std = np.sqrt((centered**2).mean(axis=0))
  varies = std > _CONSTANT_STD
  scale = np.where(varies, std, 1.0)  # No division by zero; NaN set below.
  corr = np.clip((centered.T @ centered) / len(x) / np.outer(scale, scale),
                 -1.0, 1.0)
  np.fill_diagonal(corr, 1.0)
  corr[~varies, :] = np.nan
  corr[:, ~varies] = np.nan
  return corr


def fuse_raters(ratings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean of the k raters that agree most with the others (kollias2019).

  kollias2019 (Aff-Wild): "cross correlations between all annotators were
  computed for every video ... the most correlated annotations (between 2 to
  4) ... we then computed the mean of these annotations". Here, for one
  recording and one dimension: each rater's agreement is its mean Pearson
  correlation with the R - 1 other raters; the k raters with the highest
  agreement (ties: the lower index) are averaged frame by frame. A rater
  whose ratings are constant has no correlation: it ranks last, and counts
  as correlation 0 in the others' means.

  Args:
    ratings: [T, R] one column per rater (T >= 1), finite.
    k: how many raters to average, 1 <= k <= R; k = R is the plain mean.

  Returns:
    fused: float32 [T], the mean of the chosen raters per row.
    chosen: int64 [k] column indices of the chosen raters, best first.

  Raises:
    AffectJaxError: ratings not [T, R] with T, R >= 1, or k out of range.
  """
  x = np.asarray(ratings, np.float64)
  if x.ndim != 2 or 0 in x.shape:
    raise AffectJaxError(f'fuse_raters: ratings must be [frames, raters] '
                         f'with at least one of each, got shape {x.shape}.')
  num_raters = x.shape[1]
  if not 1 <= k <= num_raters:
    raise AffectJaxError(f'fuse_raters: k={k} raters out of range; use 1 to '
                         f'{num_raters} (the number of raters).')
  corr = rater_correlations(x)
  constant = np.isnan(np.diag(corr))
  off_diagonal = np.nan_to_num(corr, nan=0.0) * ~np.eye(num_raters, dtype=bool)
  agreement = off_diagonal.sum(axis=1) / max(num_raters - 1, 1)
  agreement[constant] = -np.inf
  chosen = np.argsort(-agreement, kind='stable')[:k]
  return x[:, chosen].mean(axis=1).astype(np.float32), chosen


# Ways to fuse 0/1 labels of several annotators (fuse_multilabel).
MULTILABEL_FUSIONS = ('union', 'majority')


def fuse_multilabel(labels: np.ndarray, fusion: str) -> np.ndarray:
  """One 0/1 label per frame and class from several annotators' 0/1 labels.

  Args:
    labels: [A, ..., C] 0/1 labels of A >= 1 annotators (e.g. [A, T, C]).
    fusion: 'union' (set where any annotator set it) or 'majority' (set where
      strictly more than half of the A annotators set it; a tie is not set).

  Returns:
    float32 [..., C] of 0 and 1.

  Raises:
    AffectJaxError: an unknown fusion or no annotator.
  """
  if fusion not in MULTILABEL_FUSIONS:
    raise AffectJaxError(f'fuse_multilabel: unknown fusion {fusion!r}; use '
                         f'one of {MULTILABEL_FUSIONS}.')
  votes = np.asarray(labels) > 0
  if votes.ndim < 1 or not len(votes):
    raise AffectJaxError('fuse_multilabel: labels of no annotator.')
  if fusion == 'union':
    return votes.any(axis=0).astype(np.float32)
  return (2 * votes.sum(axis=0) > len(votes)).astype(np.float32)
