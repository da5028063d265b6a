"""Every dataset layout through the user's door, with its paper config.

For each layout of `tests.fake_datasets.LAYOUTS`: a format-exact fake copy
-> `python -m affect_jax.prepare --dataset=... --manual_dir=FAKE` -> the
paper config's `python -m affect_jax.main --config=FILE:VARIANT` with only
the placeholders a user fills (`Layout.user_flags`, `init_from`) and the
declared budget (`tests/budget.py`) -> results. Checked: both commands exit
0, each result stage's results.json lists the expected splits, and the
records and predictions hold the fake's labels, frame for frame, with
has_face=False exactly where the fake drew no face.

All layouts share one data dir (as a user's TFDS folder holds every
dataset); a layout is prepared once and a config that reads several (the
RealEyes paper config also fine-tunes on RECOLA) finds them there.
`prepare --num_workers=0` (a documented flag that does not change the
records): worker processes cost more to start than these few frames take.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from affect_jax import features as F
from tests import budget
from tests import builder_util
from tests import fake_datasets

pytestmark = pytest.mark.slow

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd=None):
  env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep +
             os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-m', *args], cwd=cwd or _ROOT,
                        env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, (
      f'{" ".join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}')
  return proc


class _World:
  """The fake copies, their prepared records and the runs, made on demand
  and once per test session."""

  def __init__(self, tmp):
    self.tmp = tmp
    self.data_dir = str(tmp / 'tfds')
    self.fakes: dict[str, fake_datasets.FakeCopy] = {}
    self.runs: dict[str, str] = {}

  def fake(self, writer: str) -> fake_datasets.FakeCopy:
    if writer not in self.fakes:
      self.fakes[writer] = fake_datasets.write(
          writer, self.tmp / 'copies' / writer)
    return self.fakes[writer]

  def prepared(self, name: str) -> fake_datasets.FakeCopy:
    """The layout's fake copy, prepared into the shared data dir."""
    layout = fake_datasets.LAYOUTS[name]
    key = f'prepared:{layout.dataset}'
    if key not in self.runs:
      fake = self.fake(layout.writer)
      _run(['affect_jax.prepare', f'--dataset={layout.dataset}',
            f'--manual_dir={fake.root}', f'--data_dir={self.data_dir}',
            '--num_workers=0'])
      self.runs[key] = fake.root
    return self.fake(layout.writer)

  def run(self, name: str) -> str:
    """The workdir of the layout's paper config run on its fake copy."""
    if name in self.runs:
      return self.runs[name]
    layout = fake_datasets.LAYOUTS[name]
    for other in layout.needs:
      self.prepared(other)
    self.prepared(name)
    flags = list(layout.user_flags)
    if layout.init_from:
      key, source, stage = layout.init_from
      flags.append(f'--config.{key}={os.path.join(self.run(source), stage)}')
    workdir = str(self.tmp / 'runs' / name)
    _run(['affect_jax.main', f'--config={layout.config}',
          *budget.flags(layout.config),
          f'--config.dataset.data_dir={self.data_dir}', *flags,
          f'--workdir={workdir}'])
    self.runs[name] = workdir
    return workdir

  def records(self, name: str, builder_config=None) -> dict:
    layout = fake_datasets.LAYOUTS[name]
    dataset, _, config = layout.dataset.partition('/')
    return builder_util.load_splits(dataset, self.data_dir,
                                    builder_config or config or None)


@pytest.fixture(scope='session')
def world(tmp_path_factory):
  return _World(tmp_path_factory.mktemp('layouts'))


def _results(workdir, stage):
  with open(os.path.join(workdir, stage, 'results.json')) as f:
    return json.load(f)


def _predictions(workdir, stage, split) -> dict[str, dict[str, np.ndarray]]:
  """{video: {column: values in frame order}} of a predictions CSV."""
  path = os.path.join(workdir, stage, 'predictions', f'{split}.csv')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  out: dict[str, dict[str, list]] = {}
  for row in rows:
    video = out.setdefault(row['video_id'], {})
    for key, value in row.items():
      video.setdefault(key, []).append(value)
  return {vid: {k: np.array(v) for k, v in cols.items()}
          for vid, cols in out.items()}


def _floats(values) -> np.ndarray:
  return np.array([float(v) if v != '' else np.nan for v in values],
                  np.float32)


def check_records(fake, splits, *, min_found=1.0):
  """The prepared records equal the fake's metadata: splits, videos, frame
  counts, labels; has_face False where no face was drawn and True on at
  least `min_found` of the other frames."""
  assert {s: sorted(d.video_ids) for s, d in splits.items()} == fake.splits
  found = total = 0
  for split, data in splits.items():
    for vid, start, length in zip(data.video_ids, data.starts, data.lengths):
      video = fake.videos[vid]
      assert length == video.num_frames, vid
      rows = slice(int(start), int(start + length))
      np.testing.assert_allclose(data.valence[rows], video.valence,
                                 atol=1e-6, err_msg=vid)
      np.testing.assert_allclose(data.arousal[rows], video.arousal,
                                 atol=1e-6, err_msg=vid)
      if video.emotions is not None:
        np.testing.assert_array_equal(data.emotions[rows], video.emotions,
                                      err_msg=vid)
      has_face = np.array([bool(data.source[i][F.RECORD_HAS_FACE])
                           for i in range(rows.start, rows.stop)])
      assert not has_face[video.no_face].any(), vid
      found += has_face[~video.no_face].sum()
      total += (~video.no_face).sum()
    assert data.subject_ids == [fake.videos[v].subject_id
                                for v in data.video_ids]
  assert found >= min_found * total, (found, total)
  assert any(v.no_face.any() for v in fake.videos.values())


def check_predictions(fake, workdir, stage, split, outputs):
  """The test stage predicted every frame of `split`, its gold columns are
  the fake's labels and its has_face column the records' flag."""
  table = _predictions(workdir, stage, split)
  assert sorted(table) == fake.splits[split]
  for vid, cols in table.items():
    video = fake.videos[vid]
    assert list(cols['frame'].astype(int)) == list(range(video.num_frames))
    for name in outputs:
      np.testing.assert_allclose(_floats(cols[f'gold_{name}']),
                                 getattr(video, name), atol=1e-4,
                                 err_msg=vid)
      assert np.isfinite(_floats(cols[f'pred_{name}'])).all()
    has_face = cols['has_face'].astype(int).astype(bool)
    assert not has_face[video.no_face].any()


def check_results(layout, workdir):
  for stage, splits in layout.result_stages:
    results = _results(workdir, stage)
    assert sorted(results['splits']) == sorted(splits), stage


def test_recola_avec2016(world):
  """Table 5 row 1 on the AVEC 2016 release: validation only (no test
  labels), the post-processing chain by leave-one-recording-out."""
  layout = fake_datasets.LAYOUTS['recola']
  workdir = world.run('recola')
  fake = world.fakes['recola']
  check_records(fake, world.records('recola'), min_found=0.8)
  check_results(layout, workdir)
  check_predictions(fake, workdir, 'test', 'validation',
                    ('valence', 'arousal'))
  post = _results(workdir, 'postprocess')
  assert post  # Written, on validation (apply_split=validation).
  assert fake.unlabelled == ('test_1',)


def test_aff_wild(world):
  """AffWildNet on Aff-Wild with shipped boxes and landmarks and the test
  annotations: validation (10% of train) and test."""
  layout = fake_datasets.LAYOUTS['aff_wild']
  workdir = world.run('aff_wild')
  fake = world.fakes['aff_wild']
  splits = world.records('aff_wild')
  check_records(fake, splits)
  # Shipped landmarks are stored on every frame with a face.
  data = splits['train']
  marks = np.stack([data.source[i][F.RECORD_LANDMARKS]
                    for i in range(len(data.source))])
  has_face = np.array([bool(data.source[i][F.RECORD_HAS_FACE])
                       for i in range(len(data.source))])
  assert (np.abs(marks[has_face]).sum((1, 2)) > 0).all()
  check_results(layout, workdir)
  for split in ('validation', 'test'):
    check_predictions(fake, workdir, 'test', split, ('valence', 'arousal'))


def test_realeyes(world):
  """The RealEyes paper config: emotion pretraining on the RealEyes-format
  copy, then fine-tuning and test on RECOLA (validation)."""
  layout = fake_datasets.LAYOUTS['realeyes']
  workdir = world.run('realeyes')
  fake = world.fakes['realeyes']
  check_records(fake, world.records('realeyes'), min_found=0.8)
  with open(os.path.join(workdir, 'pretrain', 'summary.json')) as f:
    assert json.load(f)
  check_results(layout, workdir)
  check_predictions(world.fakes['recola'], workdir, 'test', 'validation',
                    ('valence', 'arousal'))
