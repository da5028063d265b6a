"""Subject-disjoint folds for cross validation, balanced by frames.

One rule for the builders that write fold splits (AFEW-VA, the synthetic
`afew_va_like` set) and for the `cv` stage cutting a split itself: subjects,
most frames first (ties by the sha256 of the id, then the id), go one by one
to the fold with the fewest frames so far (ties: the lower fold). The result
depends only on the ids and counts, on every machine.
"""

from __future__ import annotations

import hashlib

from affect_jax.errors import AffectJaxError


def assign_folds(frames_per_subject: dict[str, int], num_folds: int,
                 what: str = 'subjects') -> dict[str, int]:
  """{subject: fold in [0, num_folds)}.

  Raises:
    AffectJaxError: num_folds < 2 or more folds than subjects.
  """
  if not 2 <= num_folds <= len(frames_per_subject):
    raise AffectJaxError(
        f'num_folds={num_folds} needs 2 to {len(frames_per_subject)} (the '
        f'number of {what} found).')
  order = sorted(frames_per_subject, key=lambda a: (
      -frames_per_subject[a], hashlib.sha256(a.encode()).hexdigest(), a))
  load = [0] * num_folds
  folds = {}
  for subject in order:
    fold = min(range(num_folds), key=lambda k: (load[k], k))
    folds[subject] = fold
    load[fold] += frames_per_subject[subject]
  return folds
