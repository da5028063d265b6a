"""Training-window samplers: which windows an epoch holds, and in what order.

A train stage's `sampler` picks one (`configs/common.train_stage`):

  'shuffle'          every window once an epoch, shuffled (default).
  'va_quadrants'     kollias2019 Sec. 4.2: windows of the under-represented
                     valence-arousal quadrants are duplicated until the epoch
                     holds the target proportions of each quadrant
                     (`sampler_targets`, default 43/24/19/14 % for
                     (V+,A+), (V-,A+), (V+,A-), (V-,A-)), then shuffled.
  'distinct_videos'  affect4k thesis Sec. 6.2: the windows of every batch
                     come from different videos (the thesis notes that a
                     1 - CCC loss degenerates when a batch is one video).

The rare-emotion repeats of tzirakis2019 (`rare_window_repeats`,
`input_pipeline.rare_window_repeats`) apply before any of them.
All of them are pure functions of the windows, the labels and a seed, so a
resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from affect_jax.errors import AffectJaxError

SAMPLERS = ('shuffle', 'va_quadrants', 'distinct_videos')

# Quadrant order of `sampler_targets` and of `window_quadrants`.
QUADRANTS = ('V+A+', 'V-A+', 'V+A-', 'V-A-')
# kollias2019 Sec. 4.2: the oversampled Aff-Wild training set.
KOLLIAS2019_TARGETS = (0.43, 0.24, 0.19, 0.14)


def parse_targets(value) -> tuple[float, ...]:
  """'0.43,0.24,0.19,0.14' (or a sequence) -> 4 proportions summing to 1."""
  if not value:
    return KOLLIAS2019_TARGETS
  if isinstance(value, str):
    try:
      value = [float(v) for v in value.split(',') if v.strip()]
    except ValueError:
      value = None
  targets = None if value is None else tuple(float(v) for v in value)
  if (targets is None or len(targets) != 4 or min(targets) <= 0 or
      abs(sum(targets) - 1) > 1e-3):
    raise AffectJaxError(
        f'sampler_targets={value!r} must be 4 positive proportions summing '
        f'to 1, in the order {", ".join(QUADRANTS)} (e.g. '
        '"0.43,0.24,0.19,0.14", kollias2019).')
  return targets


def window_quadrants(valence: np.ndarray, arousal: np.ndarray,
                     starts: np.ndarray, windows: np.ndarray) -> np.ndarray:
  """The quadrant (index into QUADRANTS) of each window, -1 when unlabelled.

  A window belongs to the quadrant of its mean labelled valence and arousal
  (0 counts as positive).

  Args:
    valence, arousal: float [N] per-frame labels (NaN = none) of the split.
    starts: int [V] first record of each video.
    windows: int [W, 3] rows (video, start frame, valid length).
  """
  out = np.full(len(windows), -1, np.int64)
  for i, (v, s, n) in enumerate(np.asarray(windows, np.int64)):
    lo = int(starts[v]) + int(s)
    val, aro = valence[lo:lo + n], arousal[lo:lo + n]
    ok = np.isfinite(val) & np.isfinite(aro)
    if not ok.any():
      continue
    neg_v = val[ok].mean() < 0
    neg_a = aro[ok].mean() < 0
    out[i] = (2 if neg_a else 0) + (1 if neg_v else 0)
  return out


def oversample_quadrants(windows: np.ndarray, quadrants: np.ndarray,
                         targets: Sequence[float], seed: int) -> np.ndarray:
  """Duplicates windows so that the quadrants reach `targets` (by windows).

  Nothing is dropped: the largest quadrant relative to its target keeps its
  count and the others are repeated (whole copies, then a seeded random
  subset for the remainder) to `round(total * target)` windows each.
  Unlabelled windows (quadrant -1) are kept once and not counted.

  Returns:
    The new window rows, [W', 3], in quadrant-then-original order (the
    training dataset shuffles them).

  Raises:
    AffectJaxError: a quadrant with a positive target has no window.
  """
  targets = np.asarray(targets, np.float64)
  counts = np.array([(quadrants == q).sum() for q in range(4)], np.float64)
  empty = [QUADRANTS[q] for q in range(4) if counts[q] == 0]
  if empty:
    raise AffectJaxError(
        f'sampler=va_quadrants: no training window falls in quadrant(s) '
        f'{empty} (windows per quadrant {dict(zip(QUADRANTS, counts))}); '
        'oversampling cannot create them. Use sampler=shuffle or check the '
        'labels.')
  total = (counts / targets).max()
  want = np.round(total * targets).astype(np.int64)
  rng = np.random.default_rng(seed)
  parts = [windows[quadrants < 0]]
  for q in range(4):
    rows = windows[quadrants == q]
    reps, extra = divmod(int(want[q]), len(rows))
    parts.append(np.tile(rows, (reps, 1)))
    if extra:
      parts.append(rows[np.sort(rng.choice(len(rows), extra, replace=False))])
  return np.concatenate(parts).reshape(-1, 3)


def distinct_video_order(videos: np.ndarray, batch_size: int,
                         seed: int) -> np.ndarray:
  """An epoch's window order in which every batch has distinct videos.

  Args:
    videos: int [W] the video of each window.
    batch_size: windows per (global) batch, B.
    seed: the epoch's seed.

  Returns:
    int [(W // B) * B] window indices; batch b is `order[b*B:(b+1)*B]`.
    Each batch draws B different videos in proportion to their windows
    left and takes one unused window of each; when fewer than B videos have
    windows left, it is completed with random windows of other videos (so
    the epoch always has W // B batches).

  Raises:
    AffectJaxError: fewer than B videos.
  """
  videos = np.asarray(videos, np.int64)
  ids = np.unique(videos)
  if len(ids) < batch_size:
    raise AffectJaxError(
        f'sampler=distinct_videos needs at least batch_size={batch_size} '
        f'videos in the training split; it has {len(ids)}. Lower '
        '--config.batch_size or use sampler=shuffle.')
  rng = np.random.default_rng(seed)
  queues = {v: list(rng.permutation(np.flatnonzero(videos == v)))
            for v in ids}
  num_batches = len(videos) // batch_size
  order = np.empty(num_batches * batch_size, np.int64)
  for b in range(num_batches):
    left = np.array([len(queues[v]) for v in ids], np.float64)
    have = ids[left > 0]
    if len(have) >= batch_size:
      # B different videos, drawn in proportion to their windows left (so
      # that long videos do not pile up at the end of the epoch).
      p = left[left > 0] / left.sum()
      pick = rng.choice(have, batch_size, replace=False, p=p)
    else:  # Fewer than B videos left: complete with other videos.
      others = rng.permutation(ids[left == 0])[:batch_size - len(have)]
      pick = np.concatenate([have, others])
    for j, v in enumerate(pick):
      if queues[v]:
        order[b * batch_size + j] = queues[v].pop()
      else:
        order[b * batch_size + j] = rng.choice(np.flatnonzero(videos == v))
  return order


def proportions(quadrants: np.ndarray) -> np.ndarray:
  """Share of each quadrant among the labelled windows, [4]."""
  q = quadrants[quadrants >= 0]
  return np.array([(q == i).mean() if q.size else 0.0 for i in range(4)])
