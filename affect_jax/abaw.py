r"""The ABAW (Aff-Wild2 challenge) evaluation and submission conventions.

Evaluation: a test stage with `protocol='abaw'` (the `affwild2_va` /
`affwild2_expr` variants of configs/affwildnet.py set it) adds, beside the
task's own metrics,

  VA    `abaw_score` = P_VA = (CCC_valence + CCC_arousal) / 2, each CCC over
        all annotated frames of the split pooled into one array (not a mean
        over videos), population moments (Lin's formula; the organisers'
        `eval_script.py` reshapes every prediction into one array and calls
        its `concordance_cc2` once). Frames annotated -5 are left out (the
        builder stores them as NaN). `ccc_per_video_mean` stays in the
        results as a labelled extra: it is not the challenge's number.
  EXPR  `abaw_score` = P_EXPR = macro F1 over the 8 classes Neutral, Anger,
        Disgust, Fear, Happiness, Sadness, Surprise, Other; frames annotated
        -1 are left out; a class with neither labels nor predictions in the
        split scores F1 = 0 and still counts in the mean (scikit-learn's
        `f1_score(average='macro', labels=range(8), zero_division=0)`).

Ambiguities, as this module settles them: the challenge papers give the
formulas but not the pooling; the organisers' and the top teams' code pool
every frame of the split (so a long video weighs more than a short one). How
a class absent from a split enters macro F1 is not written anywhere; with
the official test set every class occurs, so the choice only matters on
small validation subsets. The 7-class EXPR sets of the first challenges were
scored with another formula; the protocol refuses them.

Submission: `python -m affect_jax.abaw` writes the challenge's one
per-frame file (ABAW5/6): the header `image_location,valence,arousal` (VA)
or `image_location,Neutral,Anger,...,Other` (EXPR, one integer class a row),
then one row for every frame the organisers' list names (`VIDEO/00001.jpg`:
frame 1 of VIDEO, 1-based, as the cropped_aligned images), in that list's
order:

  python -m affect_jax.abaw --frames=ORGANISERS_LIST.txt \
      --predictions=PRED_DIR --output=submission.txt [--fill_missing=linear]

`PRED_DIR` holds one prediction CSV per video: `predict`'s (`VIDEO.csv`,
from `predict --input=VIDEO.mp4`) or a test stage's per-recording CSVs
(`predictions/<split>/VIDEO.csv`). For the two-person videos the list names
`VIDEO_left` / `VIDEO_right`: a `VIDEO_left.csv` is used if present, else
`VIDEO.csv` written by `predict --all_faces`, whose two most frequent faces
are told apart by the mean x-centre of their boxes. Frames without a
prediction (no face) are filled, per video, by `--fill_missing`: 'linear'
(default: what the top teams do, between the nearest frames with a face,
the first / last value held at the ends) or 'hold'. A video without any
prediction, a listed frame past the end of its CSV, or an unreadable list is
an error naming the file; nothing is written then.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

from affect_jax import features as F
from affect_jax.errors import AffectJaxError

PROTOCOLS = ('', 'abaw')
VA_HEADER = ('image_location', 'valence', 'arousal')
EXPR_HEADER = ('image_location',) + F.ABAW_EXPR_CLASSES
_IMAGE = re.compile(r'^(?P<video>.+)/(?P<frame>\d+)\.jpe?g$', re.IGNORECASE)
_SIDES = ('left', 'right')


# ------------------------------------------------------------- evaluation ---


def check(task_name: str, output_names: Sequence[str], where: str) -> None:
  """Raises unless the model's outputs are the challenge's (VA or 8 EXPR)."""
  if task_name == 'va':
    return
  if task_name == 'expression':
    names = tuple(n.lower() for n in output_names)
    if names == tuple(c.lower() for c in F.ABAW_EXPR_CLASSES):
      return
    raise AffectJaxError(
        f"{where}: protocol='abaw' scores EXPR as macro F1 over the 8 "
        f'classes {", ".join(F.ABAW_EXPR_CLASSES)}; this model predicts '
        f'{len(names)} ({", ".join(names)}). Prepare Aff-Wild2 with the '
        "8-class annotations, or set the stage's protocol=''.")
  raise AffectJaxError(f"{where}: protocol='abaw' needs a 'va' or an 8-class "
                       f"'expression' model, not task {task_name!r}.")


def scores(task_name: str, results: dict[str, Any]) -> dict[str, Any]:
  """The challenge's score from a test stage's results (module docstring)."""
  if task_name == 'va':
    score = 0.5 * (results['ccc_valence'] + results['ccc_arousal'])
    what = ('P_VA = (CCC_valence + CCC_arousal) / 2 over all annotated '
            'frames pooled (population moments)')
  else:
    score = results['f1_mean']
    what = 'P_EXPR = macro F1 over the 8 classes'
  return {'abaw_score': float(score), 'abaw_protocol': what}


# ------------------------------------------------------------- submission ---


def read_frame_list(path: str) -> tuple[str, list[tuple[str, int, str]]]:
  """The organisers' list: (task, [(video, 0-based frame, location)]).

  The task is 'va' or 'expr' by the header (the example file's); a file
  without a header is a VA list.
  """
  if not os.path.isfile(path):
    raise AffectJaxError(f'--frames={path} is not a file; pass the '
                         "organisers' list of test frames.")
  with open(path, newline='') as f:
    lines = [l.strip() for l in f if l.strip()]
  if not lines:
    raise AffectJaxError(f'{path} is empty; pass the organisers\' list of '
                         'test frames (image_location rows).')
  head = [c.strip() for c in lines[0].split(',')]
  task = 'va'
  if head[0] == 'image_location':
    lines = lines[1:]
    if [h.lower() for h in head[1:]] == [c.lower()
                                         for c in F.ABAW_EXPR_CLASSES]:
      task = 'expr'
    elif [h.lower() for h in head[1:]] not in ([], ['valence', 'arousal']):
      raise AffectJaxError(f'{path}:1: header {",".join(head)} is neither '
                           f'{",".join(VA_HEADER)} nor {",".join(EXPR_HEADER)}.')
  rows = []
  for number, line in enumerate(lines, 2 if head[0] == 'image_location' else 1):
    location = line.split(',')[0].strip()
    m = _IMAGE.match(location)
    if not m or int(m['frame']) < 1:
      raise AffectJaxError(f'{path}:{number}: {location!r} is not '
                           'VIDEO/NNNNN.jpg (a 1-based frame number).')
    rows.append((m['video'], int(m['frame']) - 1, location))
  return task, rows


def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
  with open(path, newline='') as f:
    reader = csv.reader(l for l in f if not l.startswith('#'))
    header = next(reader, None)
    return header or [], list(reader)


def _columns(header: Sequence[str], names: Sequence[str], path: str
             ) -> list[int]:
  """Where `names` are in a predict or a test-stage CSV header."""
  out = []
  for n in names:
    for candidate in (n, f'pred_{n}'):
      if candidate in header:
        out.append(header.index(candidate))
        break
    else:
      raise AffectJaxError(
          f'{path} has no column {n!r} (nor pred_{n}); columns: '
          f'{",".join(header)}. Give the CSVs of a model with these outputs.')
  return out


def _num(x: str) -> float:
  return float(x) if x.strip() else np.nan


def read_series(path: str, names: Sequence[str], side: str | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(frame [N], time [N], values [N, K]) of one face from a prediction CSV.

  `side` 'left'/'right' picks one of the two most frequent faces of a
  `predict --all_faces` CSV by the mean x-centre of its boxes.
  """
  header, rows = _read_csv(path)
  if 'frame' not in header or 'time_s' not in header:
    raise AffectJaxError(f'{path} is not a prediction CSV (no frame and '
                         'time_s columns).')
  cols = _columns(header, names, path)
  frame = np.array([int(r[header.index('frame')]) for r in rows], np.int64)
  time = np.array([float(r[header.index('time_s')]) for r in rows])
  values = np.array([[_num(r[c]) for c in cols] for r in rows],
                    np.float64).reshape(len(rows), len(cols))
  if side is not None:
    if 'face' not in header:
      raise AffectJaxError(
          f'{path} has one face (no face column) but the list names its '
          f'_{side} person; predict it with --all_faces, or give '
          f'{os.path.splitext(path)[0]}_{side}.csv.')
    face = np.array([_num(r[header.index('face')]) for r in rows])
    ids, counts = np.unique(face[np.isfinite(face)], return_counts=True)
    if len(ids) < 2:
      raise AffectJaxError(f'{path}: fewer than two faces were found, so '
                           f'the _{side} person cannot be told apart.')
    two = ids[np.argsort(-counts, kind='stable')[:2]]
    x0, x1 = header.index('x0'), header.index('x1')
    centre = [np.nanmean([(_num(r[x0]) + _num(r[x1])) / 2
                          for r, f in zip(rows, face) if f == i]) for i in two]
    pick = two[int(np.argmin(centre) if side == 'left' else np.argmax(centre))]
    # Every frame once: the picked face's row, else no prediction.
    frames, first = np.unique(frame, return_index=True)
    picked = np.full((len(frames), values.shape[1]), np.nan)
    where = {int(f): k for k, f in enumerate(frames)}
    for k in np.flatnonzero(face == pick):
      picked[where[int(frame[k])]] = values[k]
    return frames, time[first], picked
  _, first = np.unique(frame, return_index=True)
  return frame[first], time[first], values[first]


def _prediction_file(folder: str, video: str) -> tuple[str, str | None]:
  path = os.path.join(folder, f'{video}.csv')
  if os.path.isfile(path):
    return path, None
  for side in _SIDES:
    if video.endswith(f'_{side}'):
      whole = os.path.join(folder, f'{video[:-len(side) - 1]}.csv')
      if os.path.isfile(whole):
        return whole, side
  raise AffectJaxError(
      f'No predictions for video {video!r}: {path} does not exist. Run '
      f'`python -m affect_jax.predict --input=VIDEO --output={folder}` on '
      'the test videos (or give the folder of a test stage\'s '
      'per-recording CSVs).')


def submission_rows(task: str, rows: Sequence[tuple[str, int, str]],
                    folder: str, fill: str = 'linear'
                    ) -> list[list[Any]]:
  """The submission's rows for the listed frames (module docstring)."""
  from affect_jax import predict  # pylint: disable=g-import-not-at-top
  if fill not in ('linear', 'hold'):
    raise AffectJaxError(f"--fill_missing={fill!r}: use 'linear' or 'hold' "
                         '(every listed frame needs a value).')
  names = (('valence', 'arousal') if task == 'va'
           else tuple(c.lower() for c in F.ABAW_EXPR_CLASSES))
  series: dict[str, tuple[dict[int, int], np.ndarray, str]] = {}
  out = []
  for video, frame, location in rows:
    if video not in series:
      path, side = _prediction_file(folder, video)
      frames, time, values = read_series(path, names, side)
      if not np.isfinite(values).all(1).any():
        raise AffectJaxError(
            f'{path} has no prediction at all for {video!r} (no face in any '
            'frame); the challenge needs a value for every frame.')
      series[video] = ({int(f): i for i, f in enumerate(frames)},
                       predict.fill_missing(time, values, fill), path)
    index, values, path = series[video]
    if frame not in index:
      raise AffectJaxError(
          f'{location}: frame {frame + 1} is not in {path} (it holds frames '
          f'1-{max(index) + 1}, 1-based); predict on the full video.')
    v = values[index[frame]]
    out.append([location, *(f'{x:.6g}' for x in v)] if task == 'va' else
               [location, int(np.argmax(v))])
  return out


def write_submission(frames: str, predictions: str, output: str,
                     fill: str = 'linear') -> tuple[str, int]:
  """Writes the submission file atomically; returns (task, rows)."""
  from affect_jax import writers  # pylint: disable=g-import-not-at-top
  task, rows = read_frame_list(frames)
  if not os.path.isdir(predictions):
    raise AffectJaxError(f'--predictions={predictions} is not a folder of '
                         'per-video prediction CSVs.')
  lines = submission_rows(task, rows, predictions, fill)
  writers.write_csv(output, VA_HEADER if task == 'va' else EXPR_HEADER, lines)
  return task, len(lines)


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  task, n = write_submission(f.frames, f.predictions, f.output,
                             f.fill_missing)
  print(f'Wrote {f.output}: {n} rows ({task.upper()}).')


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('frames', None, "The organisers' list of test frames "
                      '(image_location rows, VIDEO/00001.jpg).', required=True)
  flags.DEFINE_string('predictions', None, 'Folder of per-video prediction '
                      'CSVs (predict --output=FOLDER, or a test stage\'s '
                      'predictions/<split>/).', required=True)
  flags.DEFINE_string('output', None, 'The submission file to write.',
                      required=True)
  flags.DEFINE_enum('fill_missing', 'linear', ['linear', 'hold'],
                    'How frames without a face get a value.')


if __name__ == '__main__':
  from affect_jax import cli  # pylint: disable=g-import-not-at-top
  define_flags()
  cli.run(main)
  sys.exit(0)
