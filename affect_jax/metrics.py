"""Evaluation metrics over a whole split, host side (numpy, float64).

As the field evaluates (docs/data_formats.md, "CCC, exactly"): predictions of all
windows are gathered, every (video, frame) is kept once, and CCC / Pearson /
MSE are computed over the concatenation of all valid frames of the split with
population (1/N) moments. AVEC 2018 used sample (1/(N-1)) moments: `ddof=1`.

The per-recording average (`ccc_per_video_mean_*`) is reported beside it: the
mean of the CCCs of the recordings whose labels are not constant. A
recording with constant labels (including one with a single labelled frame)
is left out: its covariance with any prediction is 0, so its CCC is 0
whatever the model does (0/0, scored 0, when the predictions equal the
constant), and counting it would only pull the mean towards 0.

The formulas are `affect_jax.losses`' (`ccc`, `pearson`, `mse`), called with
`xp=numpy`: the metric and the training loss cannot drift apart. The only
difference is `eps`, the smallest positive float64 here, which keeps 0/0 = 0
for constant inputs without changing any other value.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import numpy as np

from affect_jax import losses

# Guards only 0/0: adding it to a normal float64 denominator changes nothing.
_EPS = float(np.finfo(np.float64).tiny)


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 1 or x.shape != y.shape:
    raise ValueError(f'Expected two 1-D arrays of one length, got shapes '
                     f'{x.shape} and {y.shape}.')
  return x, y


def ccc(x, y, ddof: int = 0) -> float:
  """Concordance correlation coefficient of two 1-D arrays.

  2 cov / (var_x + var_y + (mean_x - mean_y)^2), population moments
  (ddof=0, the default and the convention of kollias2019 / tzirakis2019 /
  End2You); ddof=1 gives AVEC 2018's sample moments. Constant inputs give 0;
  empty inputs give NaN (no frames, no score).
  """
  x, y = _pair(x, y)
  if x.size == 0:
    return float('nan')
  return float(losses.ccc(x, y, eps=_EPS, ddof=ddof, xp=np))


def pearson(x, y) -> float:
  """Pearson correlation of two 1-D arrays; 0 if one is constant, NaN if empty."""
  x, y = _pair(x, y)
  if x.size == 0:
    return float('nan')
  return float(losses.pearson(x, y, eps=_EPS, xp=np))


def mse(x, y) -> float:
  """Mean squared error of two 1-D arrays; NaN if empty."""
  x, y = _pair(x, y)
  if x.size == 0:
    return float('nan')
  return float(losses.mse(x, y, xp=np))


def rmse(x, y) -> float:
  """Root mean squared error of two 1-D arrays; NaN if empty."""
  return float(np.sqrt(mse(x, y)))


def _key(video_id) -> Hashable:
  """A video id as a plain Python value (str or int) for use as a dict key."""
  if isinstance(video_id, bytes):
    return video_id.decode('utf-8')
  if isinstance(video_id, np.generic):
    return video_id.item()
  return video_id


class _FrameStore:
  """Per-frame (prediction, target) pairs kept once per (video, frame).

  Overlapping windows deliver some frames more than once: the value from the
  latest `update` call replaces the earlier ones (within one call, the later
  window in the batch wins).
  """

  def __init__(self):
    self._codes: dict[Hashable, int] = {}  # video id -> order of appearance
    self._ids: list[Hashable] = []
    self._chunks: list[tuple[np.ndarray, ...]] = []
    self._merged: tuple[np.ndarray, ...] | None = None

  def _add(self, predictions, targets, valid, video_ids: Sequence[Any],
           frame_indices) -> None:
    """Appends the frames where `valid` [B, T] is true."""
    predictions = np.asarray(predictions, np.float64)
    targets = np.asarray(targets, np.float64)
    frame_indices = np.asarray(frame_indices, np.int64)
    b, t = valid.shape
    if (predictions.shape[:2] != (b, t) or targets.shape != predictions.shape
        or frame_indices.shape != (b, t) or len(video_ids) != b):
      raise ValueError(
          f'update() wants predictions/targets [B, T, K], mask and '
          f'frame_indices [B, T] and B video ids; got {predictions.shape}, '
          f'{targets.shape}, {valid.shape}, {frame_indices.shape} and '
          f'{len(video_ids)} ids.')
    codes = np.empty(b, np.int64)
    for i, vid in enumerate(video_ids):
      vid = _key(vid)
      if vid not in self._codes:
        self._codes[vid] = len(self._ids)
        self._ids.append(vid)
      codes[i] = self._codes[vid]
    codes = np.broadcast_to(codes[:, None], (b, t))
    self._chunks.append((codes[valid], frame_indices[valid],
                         predictions[valid], targets[valid]))
    self._merged = None

  def _frames(self, width: int) -> tuple[np.ndarray, ...]:
    """(codes [N], frames [N], predictions [N, K], targets [N, K]), unique.

    Sorted by video (order of first appearance), then frame.
    """
    if self._merged is not None:
      return self._merged
    if not self._chunks:
      return (np.zeros(0, np.int64), np.zeros(0, np.int64),
              np.zeros((0, width)), np.zeros((0, width)))
    codes, frames, preds, targets = (np.concatenate(a) for a in
                                     zip(*self._chunks))
    arrival = np.arange(codes.size)
    # Sorted by (video, frame), latest arrival first within a duplicate group.
    order = np.lexsort((-arrival, frames, codes))
    c, f = codes[order], frames[order]
    first = np.ones(codes.size, bool)
    first[1:] = (c[1:] != c[:-1]) | (f[1:] != f[:-1])
    keep = order[first]
    self._merged = (codes[keep], frames[keep], preds[keep], targets[keep])
    # Keep one chunk so later updates concatenate less.
    self._chunks = [self._merged]
    return self._merged

  def per_video(self) -> dict[Hashable, dict[str, np.ndarray]]:
    """For each video (order of first appearance): its kept frames.

    Returns:
      {video_id: {'frames': int64 [n] sorted frame indices,
                  'predictions': float64 [n, K], 'targets': float64 [n, K]}};
      targets may hold NaN (regression outputs without a label at a frame).
    """
    codes, frames, preds, targets = self._frames(0)
    bounds = np.flatnonzero(np.diff(codes)) + 1
    out = {}
    for idx in np.split(np.arange(codes.size), bounds):
      if idx.size:
        out[self._ids[codes[idx[0]]]] = {'frames': frames[idx],
                                         'predictions': preds[idx],
                                         'targets': targets[idx]}
    return out


class RegressionAccumulator(_FrameStore):
  """Whole-split CCC, Pearson, MSE and RMSE of [B, T, K] predictions.

  A frame is kept if mask > 0 and at least one of its K targets is not NaN;
  each output is scored on the kept frames where its own target is not NaN.
  Duplicate (video, frame) pairs from overlapping windows count once (the
  latest update wins).
  """

  def update(self, predictions, targets, mask, video_ids: Sequence[Any],
             frame_indices) -> None:
    """Adds a batch.

    Args:
      predictions: [B, T, K].
      targets: [B, T, K], NaN where unlabelled.
      mask: [B, T]; > 0 for real frames.
      video_ids: B ids (str, bytes or int) of the windows' videos.
      frame_indices: int [B, T] frame index within the video.
    """
    targets = np.asarray(targets, np.float64)
    valid = (np.asarray(mask) > 0) & ~np.all(np.isnan(targets), axis=-1)
    self._add(predictions, targets, valid, video_ids, frame_indices)

  def result(self, names: Sequence[str] = ('valence', 'arousal'),
             ddof: int = 0) -> dict[str, float]:
    """Metrics over all kept frames, per output `name`.

    Args:
      names: K output names, in output order.
      ddof: 0 = population moments (default); 1 = AVEC 2018's sample moments.

    Returns:
      A dict with, for each name: `ccc_<name>`, `pearson_<name>`,
      `mse_<name>`, `rmse_<name>` over the concatenation of the split's
      frames; `ccc_per_video_mean_<name>`, the mean of per-video CCCs over
      the videos whose labels of `name` are not constant (module
      docstring: a constant label track, e.g. a single labelled frame,
      scores 0 whatever the prediction and is left out).
      Also `ccc_mean` and `ccc_per_video_mean` (means over the names),
      `num_frames`, `num_videos` and `ccc_ddof`. NaN where there are no
      frames.
    """
    codes, _, preds, targets = self._frames(len(names))
    if preds.shape[1] != len(names):
      raise ValueError(f'{preds.shape[1]} outputs but names {tuple(names)}.')
    bounds = np.flatnonzero(np.diff(codes)) + 1
    videos = [i for i in np.split(np.arange(codes.size), bounds) if i.size]
    out: dict[str, float] = {}
    for k, name in enumerate(names):
      labelled = ~np.isnan(targets[:, k])
      x, y = preds[labelled, k], targets[labelled, k]
      out[f'ccc_{name}'] = ccc(x, y, ddof=ddof)
      out[f'pearson_{name}'] = pearson(x, y)
      out[f'mse_{name}'] = mse(x, y)
      out[f'rmse_{name}'] = rmse(x, y)
      per_video = []
      for idx in videos:
        idx = idx[labelled[idx]]
        if idx.size and np.ptp(targets[idx, k]) > 0:
          per_video.append(ccc(preds[idx, k], targets[idx, k], ddof=ddof))
      out[f'ccc_per_video_mean_{name}'] = _mean(per_video)
    out['ccc_mean'] = _mean([out[f'ccc_{n}'] for n in names])
    out['ccc_per_video_mean'] = _mean(
        [out[f'ccc_per_video_mean_{n}'] for n in names])
    out['num_frames'] = int(codes.size)
    out['num_videos'] = len(videos)
    out['ccc_ddof'] = int(ddof)
    return out


class MultiLabelAccumulator(_FrameStore):
  """Whole-split per-class F1 / precision / recall and exact-match accuracy.

  A class is predicted present when its probability is >= `threshold`
  (with `from_logits`, when its logit is >= logit(threshold)); a label counts
  as present when > 0.5. Frames with mask > 0 and no NaN label are kept, each
  (video, frame) once (the latest update wins).
  """

  def __init__(self, from_logits: bool = False, threshold: float = 0.5):
    """`from_logits`: update() receives logits instead of probabilities."""
    super().__init__()
    self.from_logits = from_logits
    self.threshold = threshold

  def update(self, outputs, labels, mask, video_ids: Sequence[Any],
             frame_indices) -> None:
    """Adds a batch.

    Args:
      outputs: [B, T, C] probabilities (or logits, see `from_logits`).
      labels: [B, T, C] multi-hot.
      mask: [B, T]; > 0 for real frames.
      video_ids: B ids (str, bytes or int).
      frame_indices: int [B, T].
    """
    labels = np.asarray(labels, np.float64)
    valid = (np.asarray(mask) > 0) & ~np.any(np.isnan(labels), axis=-1)
    self._add(outputs, labels, valid, video_ids, frame_indices)

  def result(self, class_names: Sequence[str] | None = None
             ) -> dict[str, float]:
    """Metrics over all kept frames.

    Args:
      class_names: C names, in output order; None names them '0', '1', ...

    Returns:
      `f1_<name>`, `precision_<name>`, `recall_<name>` per class (a 0/0 is
      0, as sklearn's zero_division=0); `f1_mean`, the unweighted (macro)
      mean of the C per-class F1s, every class included; `accuracy`, the
      fraction of frames whose C predicted labels all equal the true ones;
      `auc_<name>`, the threshold-free ROC AUC of each class (NaN where a
      class has no positive or no negative frame) and `auc_mean` over the
      classes where it is defined; `num_frames`. NaN scores where there are
      no frames.
    """
    width = len(class_names) if class_names is not None else 0
    _, _, outputs, labels = self._frames(width)
    if class_names is None:
      class_names = [str(c) for c in range(outputs.shape[1])]
    if outputs.shape[1] != len(class_names):
      raise ValueError(f'{outputs.shape[1]} classes but names '
                       f'{tuple(class_names)}.')
    if self.from_logits:
      cut = np.log(self.threshold) - np.log1p(-self.threshold)
    else:
      cut = self.threshold
    pred = outputs >= cut
    true = labels > 0.5
    tp = np.sum(pred & true, axis=0)
    fp = np.sum(pred & ~true, axis=0)
    fn = np.sum(~pred & true, axis=0)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)  # = 2PR / (P + R), no 0/0.
    n = outputs.shape[0]
    out: dict[str, float] = {}
    for c, name in enumerate(class_names):
      out[f'f1_{name}'] = float(f1[c]) if n else float('nan')
      out[f'precision_{name}'] = float(precision[c]) if n else float('nan')
      out[f'recall_{name}'] = float(recall[c]) if n else float('nan')
    auc = np.array([roc_auc(outputs[:, c], true[:, c])
                    for c in range(len(class_names))])
    for c, name in enumerate(class_names):
      out[f'auc_{name}'] = float(auc[c])
    out['auc_mean'] = (float(np.nanmean(auc)) if np.isfinite(auc).any()
                       else float('nan'))
    out['f1_mean'] = float(np.mean(f1)) if n else float('nan')
    out['accuracy'] = (float(np.mean(np.all(pred == true, axis=1))) if n
                       else float('nan'))
    out['num_frames'] = int(n)
    return out


class SingleLabelAccumulator(_FrameStore):
  """Whole-split accuracy, per-class F1 and confusion matrix of one-of-C labels.

  update() takes probabilities (or logits: only the argmax counts) [B, T, C]
  and one-hot labels [B, T, C]; a frame without a label (a NaN or all-zero
  row, e.g. Aff-Wild2's -1) is left out. Each (video, frame) counts once.
  """

  def update(self, outputs, labels, mask, video_ids: Sequence[Any],
             frame_indices) -> None:
    labels = np.asarray(labels, np.float64)
    valid = ((np.asarray(mask) > 0) & ~np.any(np.isnan(labels), axis=-1) &
             (np.nansum(labels, axis=-1) > 0.5))
    self._add(outputs, labels, valid, video_ids, frame_indices)

  def result(self, class_names: Sequence[str] | None = None
             ) -> dict[str, Any]:
    """Metrics over all kept frames.

    Returns:
      `accuracy` (fraction of frames whose argmax is the label),
      `f1_<name>` per class and `f1_mean` (macro mean over the C classes),
      `accuracy_<name>` (recall of each class: the per-class accuracy
      kollias2019 reports for AFEW), `confusion` (C x C nested list, rows =
      true class, columns = predicted), `num_frames`. NaN where there are no
      frames.
    """
    width = len(class_names) if class_names is not None else 0
    _, _, outputs, labels = self._frames(width)
    if class_names is None:
      class_names = [str(c) for c in range(outputs.shape[1])]
    return classification_report(np.argmax(outputs, axis=-1),
                                 np.argmax(labels, axis=-1), class_names)


def classification_report(predicted, true, class_names: Sequence[str]
                          ) -> dict[str, Any]:
  """Accuracy, per-class F1 / accuracy and confusion of int class labels.

  Args:
    predicted: int [N] predicted classes.
    true: int [N] true classes.
    class_names: the C names, in class order.
  """
  predicted = np.asarray(predicted, np.int64)
  true = np.asarray(true, np.int64)
  c = len(class_names)
  n = true.size
  confusion = np.zeros((c, c), np.int64)
  np.add.at(confusion, (true, predicted), 1)
  tp = np.diag(confusion)
  fp = confusion.sum(axis=0) - tp
  fn = confusion.sum(axis=1) - tp
  f1 = _ratio(2 * tp, 2 * tp + fp + fn)
  recall = _ratio(tp, tp + fn)
  out: dict[str, Any] = {}
  for k, name in enumerate(class_names):
    out[f'f1_{name}'] = float(f1[k]) if n else float('nan')
    out[f'accuracy_{name}'] = float(recall[k]) if n else float('nan')
  out['f1_mean'] = float(np.mean(f1)) if n else float('nan')
  out['accuracy'] = float(np.mean(predicted == true)) if n else float('nan')
  out['confusion'] = confusion.tolist()
  out['num_frames'] = int(n)
  return out


def aggregate_clips(video_ids, probabilities, labels, has_face=None
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Frame predictions -> one predicted and one true class per clip.

  kollias2019 Sec. 5.2.1 (AFEW): AffWildNet classifies frames, then "video
  classification based on frame aggregation". A clip's class is the argmax
  of its frames' mean probabilities, over the frames with a face (all of
  its frames if none has one); its true class is the most frequent label of
  its labelled frames. Clips without any label are left out.

  Args:
    video_ids: [N] the clip of each frame.
    probabilities: float [N, C] per-frame class probabilities.
    labels: float [N, C] one-hot labels (NaN / all-zero rows = none).
    has_face: optional bool [N].

  Returns:
    (clip ids in order of appearance, int [M] predicted, int [M] true).
  """
  video_ids = np.asarray(video_ids).astype(str)
  probabilities = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels, np.float64)
  has_face = (np.ones(len(video_ids), bool) if has_face is None else
              np.asarray(has_face, bool))
  labelled = ~np.any(np.isnan(labels), axis=-1) & (
      np.nansum(labels, axis=-1) > 0.5)
  _, first = np.unique(video_ids, return_index=True)
  ids, predicted, true = [], [], []
  for i in sorted(first):
    vid = video_ids[i]
    rows = video_ids == vid
    if not (rows & labelled).any():
      continue
    use = rows & has_face if (rows & has_face).any() else rows
    predicted.append(int(np.argmax(probabilities[use].mean(axis=0))))
    counts = np.bincount(np.argmax(labels[rows & labelled], axis=-1),
                         minlength=labels.shape[1])
    true.append(int(np.argmax(counts)))
    ids.append(str(vid))
  return ids, np.asarray(predicted, np.int64), np.asarray(true, np.int64)


def roc_auc(scores, labels) -> float:
  """Area under the ROC curve (Mann-Whitney U, tied scores averaged).

  Args:
    scores: [N] real scores (probabilities or logits: only the order counts).
    labels: [N] booleans.

  Returns:
    The probability that a random positive scores above a random negative;
    NaN if there is no positive or no negative.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels, bool)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  order = np.argsort(scores, kind='mergesort')
  sorted_scores = scores[order]
  ranks = np.empty(scores.size, np.float64)
  # Average 1-based ranks over runs of tied scores.
  _, start, counts = np.unique(sorted_scores, return_index=True,
                               return_counts=True)
  avg = start + (counts + 1) / 2.0
  ranks[order] = np.repeat(avg, counts)
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def _mean(values: Sequence[float]) -> float:
  # NaN inputs (NaN predictions) propagate: a diverged model must show.
  return float(np.mean(values)) if len(values) else float('nan')
