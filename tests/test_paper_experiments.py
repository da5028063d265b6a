"""The Aff-Wild / AFEW-VA / AFEW / 4K experiments on the frame: samplers,
folds, clip aggregation, the landmark refusal, normalisation modes, stills,
one train step of every variant of every config file, and end-to-end runs
of the cv, clip-aggregation and cross-database stages on tiny data."""

import csv
import importlib
import json
import os

import jax
import numpy as np
import pytest

from affect_jax import cross_validation
from affect_jax import experiment
from affect_jax import features as F
from affect_jax import folds
from affect_jax import input_pipeline as ip
from affect_jax import metrics
from affect_jax import samplers
from affect_jax import tasks
from affect_jax import train
from affect_jax.errors import AffectJaxError
from configs import common
from tests.conftest import shrink
from tests.conftest import shrink_model

CONFIG_FILES = ('realeyes', 'recola_finetune', 'affwildnet', 'cnn_m_baseline',
                'transfer', 'affect4k')


def _module(name):
  return importlib.import_module(f'configs.{name}')


def all_variants():
  return [(m, v) for m in CONFIG_FILES
          for v in _module(m).VARIANTS]


# ------------------------------------------------------------- samplers ---


def _labels(rng, n_videos=40, length=50, bias=0.6):
  """Per-frame VA with most windows in V+A+ (as Aff-Wild before resampling)."""
  lengths = np.full(n_videos, length)
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  v = np.repeat(rng.normal(bias, 0.5, n_videos), length)
  a = np.repeat(rng.normal(bias, 0.5, n_videos), length)
  return starts, lengths, v.astype(np.float32), a.astype(np.float32)


def test_va_quadrant_oversampling_reaches_its_targets():
  starts, lengths, v, a = _labels(np.random.default_rng(0))
  windows = ip.make_windows(lengths, 10, 5)
  q = samplers.window_quadrants(v, a, starts, windows)
  before = samplers.proportions(q)
  assert before[0] > 0.5  # Skewed to V+A+.
  for targets in (samplers.KOLLIAS2019_TARGETS, (0.25, 0.25, 0.25, 0.25)):
    out = samplers.oversample_quadrants(windows, q, targets, seed=1)
    after = samplers.proportions(samplers.window_quadrants(v, a, starts, out))
    # Stated tolerance: 1 percentage point of the windows per quadrant.
    np.testing.assert_allclose(after, targets, atol=0.01)
    # Only duplicates: every original window is still there.
    assert {tuple(r) for r in windows} <= {tuple(r) for r in out}
    assert len(out) >= len(windows)


def test_window_quadrant_is_the_sign_of_the_window_mean():
  v = np.array([0.5, -0.9, 0.1, np.nan, -0.2, -0.3], np.float32)
  a = np.array([0.2, 0.3, -0.5, np.nan, -0.1, -0.4], np.float32)
  windows = np.array([[0, 0, 2], [0, 2, 2], [0, 3, 1], [0, 4, 2]])
  q = samplers.window_quadrants(v, a, np.array([0]), windows)
  # means: (-0.2, 0.25) -> V-A+; (0.1, -0.5) -> V+A-; none; (-.25, -.25).
  assert q.tolist() == [1, 2, -1, 3]


def test_quadrant_targets_are_checked():
  with pytest.raises(AffectJaxError, match='4 positive proportions'):
    samplers.parse_targets('0.5,0.5')
  assert samplers.parse_targets('0.4,0.3,0.2,0.1') == (0.4, 0.3, 0.2, 0.1)
  windows = np.zeros((3, 3), np.int64)
  with pytest.raises(AffectJaxError, match='no training window falls'):
    samplers.oversample_quadrants(windows, np.array([0, 0, 1]),
                                  (0.25,) * 4, 0)


def test_distinct_video_batches():
  rng = np.random.default_rng(0)
  # Uneven videos: one long video holds a third of the windows.
  videos = np.concatenate([np.zeros(60, np.int64),
                           rng.integers(1, 12, 120)])
  order = samplers.distinct_video_order(videos, 4, seed=3)
  assert len(order) == (len(videos) // 4) * 4
  batches = videos[order].reshape(-1, 4)
  assert all(len(set(b)) == 4 for b in batches)
  # Almost every window is used once (only the last batches repeat some).
  assert len(set(order.tolist())) >= 0.8 * len(videos)
  assert samplers.distinct_video_order(videos, 4, seed=3).tolist() == (
      order.tolist())
  with pytest.raises(AffectJaxError, match='at least batch_size=4 videos'):
    samplers.distinct_video_order(np.array([0, 0, 1, 2]), 4, 0)


def test_distinct_video_sampler_in_the_training_dataset(tiny_data_dir):
  split = ip.load_split(_tiny(tiny_data_dir), 'train')
  cfg = common.input_section(window=4, train_stride=2, image_size=16,
                             resize_size=16, num_threads=1)
  ds = ip.train_dataset(split, cfg, 4, seed=0, augment=False,
                        sampler='distinct_videos')
  it = ip.iterate(ds, cfg)
  seen = [next(it)[F.VIDEO_INDEX].tolist() for _ in range(12)]
  assert all(len(set(b)) == 4 for b in seen)
  # Resuming at step 5 gives the same batches.
  again = ip.iterate(ds, cfg, start=5)
  assert [next(again)[F.VIDEO_INDEX].tolist() for _ in range(3)] == seen[5:8]


# ---------------------------------------------------------------- folds ---


def test_subject_folds_are_disjoint_complete_and_balanced():
  rng = np.random.default_rng(0)
  subjects = [f's{rng.integers(0, 23)}' for _ in range(80)]
  lengths = rng.integers(10, 100, 80)
  got = cross_validation.subject_folds(subjects, lengths, 5)
  flat = sorted(v for f in got for v in f)
  assert flat == list(range(80))  # Complete, each video once.
  sets = [{subjects[v] for v in f} for f in got]
  for i in range(5):
    for j in range(i):
      assert not sets[i] & sets[j]  # Subject-disjoint.
  frames = [sum(lengths[v] for v in f) for f in got]
  assert max(frames) - min(frames) <= max(
      sum(lengths[i] for i, s in enumerate(subjects) if s == t)
      for t in set(subjects))
  with pytest.raises(AffectJaxError, match='num_folds=5 needs 2 to 2'):
    cross_validation.subject_folds(['a', 'b', 'a'], [1, 1, 1], 5)
  # The builders' rule: the same assignment from the same counts.
  counts = {'a': 5, 'b': 3, 'c': 3, 'd': 1}
  assert folds.assign_folds(counts, 2) == folds.assign_folds(
      dict(reversed(list(counts.items()))), 2)


def test_fold_splits_of_the_synthetic_builder(tiny_folds_dir):
  data = common.dataset('synthetic_faces', 'tiny_folds')
  data.data_dir = tiny_folds_dir
  split, got = cross_validation.load_folds(data, 'fold_0,fold_1,fold_2')
  assert sorted(v for f in got for v in f) == list(range(len(split.video_ids)))
  subjects = [{split.subject_ids[v] for v in f} for f in got]
  assert not (subjects[0] & subjects[1] or subjects[1] & subjects[2])
  # Labels stored on AFEW-VA's 21 levels.
  vals = split.valence[np.isfinite(split.valence)]
  np.testing.assert_allclose(vals * 10, np.round(vals * 10), atol=1e-5)
  part = split.subset(got[1], 'fold 1')
  assert part.num_frames == sum(split.lengths[v] for v in got[1])
  assert part.emotion_counts().sum() <= split.emotion_counts().sum()


# ------------------------------------------------------ clip aggregation ---


def test_clip_aggregation_against_a_direct_computation():
  rng = np.random.default_rng(0)
  ids = np.repeat([f'c{i}' for i in range(6)], 5)
  probs = rng.dirichlet(np.ones(3), len(ids))
  labels = np.zeros((len(ids), 3))
  true = [0, 1, 2, 1, 0, 2]
  for i, t in enumerate(true):
    labels[i * 5:(i + 1) * 5, t] = 1
  labels[25:] = np.nan  # Clip c5 has no label: left out.
  has_face = np.ones(len(ids), bool)
  has_face[0:2] = False  # c0: frames 2-4 only.
  got_ids, pred, got_true = metrics.aggregate_clips(ids, probs, labels,
                                                    has_face)
  assert got_ids == ['c0', 'c1', 'c2', 'c3', 'c4']
  direct = [np.argmax(probs[2:5].mean(0))] + [
      np.argmax(probs[i * 5:(i + 1) * 5].mean(0)) for i in range(1, 5)]
  assert pred.tolist() == [int(d) for d in direct]
  assert got_true.tolist() == true[:5]
  report = metrics.classification_report(pred, got_true, ['a', 'b', 'c'])
  assert report['accuracy'] == np.mean(np.array(direct) == true[:5])


# ------------------------------------------------- checks before training ---


def _tiny(data_dir, config='tiny'):
  d = common.dataset('synthetic_faces', config)
  d.data_dir = data_dir
  return d


class _ZeroLandmarks:
  """A record source whose landmarks are zeros (prepared --landmarks=none)."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitems__(self, idx):
    out = []
    for r in self.source.__getitems__(idx):
      r = dict(r)
      r[F.RECORD_LANDMARKS] = np.zeros((68, 2), np.float32)
      out.append(r)
    return out


def test_a_landmark_model_refuses_records_without_landmarks(tiny_data_dir,
                                                            tmp_path):
  split = ip.load_split(_tiny(tiny_data_dir), 'train')
  ip.check_landmarks(split)  # The synthetic faces have landmarks.
  bare = ip.SplitData(**{**split.__dict__, 'source': _ZeroLandmarks(
      split.source)})
  bare.metadata = dict(split.metadata, landmarks='none')
  with pytest.raises(AffectJaxError, match=r'--landmarks=dlib') as e:
    ip.check_landmarks(bare)
  assert 'synthetic_faces' in str(e.value)
  assert 'use_landmarks=False' in str(e.value)
  # In training: refused before the first step.
  config = shrink_model(_module('affwildnet').get_config('synthetic'))
  cfg = common.resolve_stage(config, 'train')
  with pytest.raises(AffectJaxError, match='holds none'):
    train.train(config, cfg, str(tmp_path), bare, split)
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))


def test_a_task_that_does_not_fit_the_labels_is_refused(tiny_afew_dir,
                                                         tmp_path):
  expr = ip.load_split(_tiny(tiny_afew_dir, 'tiny_afew'), 'train')
  assert expr.emotion_names == tuple(
      'angry disgust fear happy neutral sad surprise'.split())
  config = shrink_model(_module('affwildnet').get_config('synthetic'))
  cfg = common.resolve_stage(config, 'train')
  with pytest.raises(AffectJaxError, match='needs valence/arousal'):
    train.train(config, cfg, str(tmp_path), expr, expr)
  with pytest.raises(AffectJaxError, match='8-class head but'):
    tasks.get('expression').check_dataset(expr, 8)


# ------------------------------------------------- normalisation, stills ---


def test_normalisation_modes():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (2, 3, 8, 8, 3)).astype(np.uint8)
  w = np.asarray(ip.normalize(x, 'whitening'))
  np.testing.assert_allclose(w.mean(axis=(2, 3, 4)), 0, atol=1e-4)
  np.testing.assert_allclose(w.std(axis=(2, 3, 4)), 1, atol=1e-3)
  flat = np.full((1, 4, 4, 3), 7, np.uint8)  # std 0: no division by zero.
  assert np.all(np.asarray(ip.normalize(flat, 'whitening')) == 0)
  m = np.asarray(ip.normalize(x, 'mean_subtraction'))
  np.testing.assert_allclose(m, x.astype(np.float32) - ip.IMAGENET_MEAN,
                             rtol=1e-6)
  s = np.asarray(ip.normalize(x, 'symmetric'))
  np.testing.assert_allclose(s, (x.astype(np.float32) - 128) / 128)
  with pytest.raises(AffectJaxError, match='whitening'):
    ip.normalize(x, 'zca')


def test_a_still_image_is_repeated_over_the_window(tiny_data_dir):
  split = ip.load_split(_tiny(tiny_data_dir), 'test')
  still = split.subset([0], 'one video')
  still = ip.SplitData(**{**still.__dict__,
                          'lengths': np.array([1], np.int64)})
  load = ip.LoadWindow(split=still, window=5, image_size=16, resize_size=16,
                       augment=False, repeat_stills=True)
  out = load(np.array([0, 0, 1]))
  assert out[F.MASK].tolist() == [1.0] * 5
  assert out[ip.FRAME_INDEX].tolist() == [-1, -1, -1, -1, 0]
  assert np.all(out[F.FRAMES] == out[F.FRAMES][-1])
  assert np.isnan(out[F.VALENCE][:4]).all() and np.isfinite(out[F.VALENCE][4])


# -------------------------------------------- every variant, one step ---


def _train_sections(config):
  for name in common.stage_names(config):
    cfg = common.resolve_stage(config, name)
    if cfg.kind == 'train':
      yield name, cfg
    elif cfg.kind == 'cv':
      yield name, cfg.train


def _batch_and_stage(config, cfg, split):
  task = tasks.get(cfg.task)
  n_out = len(task.output_names(split.emotion_names))
  ds = ip.train_batches(
      split, config.input, config.batch_size, cfg,
      num_emotions=None if task.needs == 'va' else n_out).dataset
  batch = next(ip.iterate(ds, config.input))
  return batch, train.Stage(config, cfg, n_out)


# Modifiers that name what the synthetic default already is.
SYNTHETIC_DEFAULTS = {
    'affwildnet': ('resnet50', 'hidden128', 'layers2', 'no_oversampling'),
    'affect4k': ('resnet50_gru',),
}


@pytest.mark.parametrize('name', sorted(SYNTHETIC_DEFAULTS))
def test_every_synthetic_modifier_changes_the_experiment(name):
  """A 'synthetic+m' variant differs from 'synthetic' (the synthetic size
  must not undo a modifier), except where m is the synthetic default."""
  module = importlib.import_module(f'configs.{name}')

  def flat(variant):
    c = module.get_config(variant).to_dict()
    c.pop('name')
    return json.dumps(c, sort_keys=True, default=str)

  base = flat('synthetic')
  same = [v for v in module.VARIANTS if v.startswith('synthetic+')
          and flat(v) == base]
  assert sorted(same) == sorted(
      f'synthetic+{m}' for m in SYNTHETIC_DEFAULTS[name])


@pytest.mark.parametrize('module,variant', all_variants())
def test_every_variant_traces_one_train_step(module, variant, tiny_data_dir):
  """Each variant's network, task, loss, freezing, schedule, normalisation
  and sampler at test size: a real batch from its sampler, and its whole
  train step (forward, loss, gradients, optimizer) traced by
  jax.eval_shape: a state of the same structure and a scalar loss. (The
  compiled steps of the model families run in the tests below and in
  test_every_model_family_trains_one_step.)"""
  config = shrink_model(_module(module).get_config(variant))
  experiment.check(config)
  split = ip.load_split(_tiny(tiny_data_dir), 'train')
  for name, cfg in _train_sections(config):
    batch, stage = _batch_and_stage(config, cfg, split)
    assert batch[F.FRAMES].shape == (2, 4) + (config.input.image_size,) * 2 + (
        3,)
    state = jax.eval_shape(lambda s=stage: s.create_state(
        s.init_variables(0)))
    abstract = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
                for k, v in batch.items() if k in train._TRAIN_KEYS}
    new_state, m = jax.eval_shape(stage._train_step, state, abstract)
    assert jax.tree.structure(new_state) == jax.tree.structure(state), (
        module, variant, name)
    assert m.loss.total.shape == (), (module, variant, name)


@pytest.mark.parametrize('module,variant', [
    ('affwildnet', 'synthetic+cnn_lstm_peephole'),
    ('affwildnet', 'synthetic+vgg_face+cnn_only'),
    ('cnn_m_baseline', 'synthetic'),
    ('affect4k', 'synthetic+alexnet_gru+whitening'),
])
def test_every_model_family_trains_one_step(module, variant, tiny_data_dir):
  """Compiled steps of the families the end-to-end tests do not run."""
  config = shrink_model(_module(module).get_config(variant))
  split = ip.load_split(_tiny(tiny_data_dir), 'train')
  name, cfg = next(_train_sections(config))
  batch, stage = _batch_and_stage(config, cfg, split)
  state = stage.create_state(stage.init_variables(0))
  before = jax.tree.map(np.asarray, state.params)  # The step donates state.
  new_state, m = stage.train_step(state, batch)
  scalars = m.compute()
  assert np.isfinite(float(scalars['loss'])) and float(
      scalars['grad_norm']) > 0
  moved = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))),
                       before, new_state.params)
  assert any(jax.tree.leaves(moved))


# ------------------------------------------------- end to end, tiny data ---


@pytest.fixture(scope='session')
def tiny_folds_dir(tiny_data_dir):
  from affect_jax import prepare  # pylint: disable=g-import-not-at-top
  prepare.prepare('synthetic_faces/tiny_folds', tiny_data_dir, None)
  return tiny_data_dir


@pytest.fixture(scope='session')
def tiny_afew_dir(tiny_data_dir):
  from affect_jax import prepare  # pylint: disable=g-import-not-at-top
  prepare.prepare('synthetic_faces/tiny_afew', tiny_data_dir, None)
  return tiny_data_dir


def _one_step(section):
  section.num_epochs = None
  section.eval_every_epochs = None
  section.checkpoint_every_epochs = None
  section.num_train_steps = 1
  section.eval_every_steps = 1
  section.checkpoint_every_steps = 1


@pytest.mark.slow
def test_cross_validation_stage_end_to_end(tiny_folds_dir, tmp_path):
  config = shrink(_module('transfer').get_config('synthetic_afew_va'),
                  tiny_folds_dir, steps=1)
  config.cv.train.dataset = _tiny(tiny_folds_dir, 'tiny_folds')
  # The cv stage alone (a pretraining init is tested in test_experiments).
  config.stages = 'cv'
  config.cv.train.init_from = ''
  _one_step(config.cv.train)
  config.cv.folds = 'fold_0,fold_1,fold_2'
  results = experiment.run(config, str(tmp_path))['cv']
  assert list(results['folds']) == ['fold_0', 'fold_1', 'fold_2']
  for r in results['folds'].values():
    for key in ('pearson_valence', 'pearson_arousal', 'ccc_valence',
                'ccc_arousal'):
      assert np.isfinite(r[key])
  np.testing.assert_allclose(
      results['mean']['ccc_valence'],
      np.mean([r['ccc_valence'] for r in results['folds'].values()]))
  assert results['pooled']['num_frames'] == sum(
      r['num_frames'] for r in results['folds'].values())
  table = open(tmp_path / 'cv' / 'results.md').read()
  assert 'mean ± std' in table and 'all folds pooled' in table
  assigned = json.load(open(tmp_path / 'cv' / 'folds.json'))
  people = [set(v) for v in assigned.values()]
  assert sum(len(p) for p in people) == len(set().union(*people)) == 6
  # Rerunning finds every fold finished.
  again = experiment.run(config, str(tmp_path))
  assert again['cv']['folds'] == results['folds']


@pytest.mark.slow
def test_expression_transfer_with_clip_aggregation_end_to_end(tiny_afew_dir,
                                                              tmp_path):
  config = shrink(_module('transfer').get_config('synthetic_afew'),
                  tiny_afew_dir, steps=1)
  config.finetune.dataset = _tiny(tiny_afew_dir, 'tiny_afew')
  config.test.dataset = _tiny(tiny_afew_dir, 'tiny_afew')
  config.test.splits = 'test'
  results = experiment.run(config, str(tmp_path))['test']
  assert results['task'] == 'expression' and len(results['outputs']) == 7
  clips = list(csv.DictReader(open(tmp_path / 'test' / 'predictions' /
                                   'test_clips.csv')))
  assert len(clips) == results['clip_num_clips'] == 2  # 1 subject x 2.
  # clip_accuracy against the per-frame CSV, aggregated directly.
  rows = list(csv.DictReader(open(tmp_path / 'test' / 'predictions' /
                                  'test.csv')))
  names = results['outputs']
  right = 0
  for clip in clips:
    mine = [r for r in rows if r['video_id'] == clip['video_id']]
    p = np.mean([[float(r[f'pred_{n}']) for n in names] for r in mine], 0)
    g = [float(mine[0][f'gold_{n}']) for n in names]
    assert clip['predicted'] == names[int(np.argmax(p))]
    right += int(np.argmax(p) == np.argmax(g))
  assert results['clip_accuracy'] == pytest.approx(right / len(clips))
  assert (tmp_path / 'test' / 'plots' / 'test_clip_confusion.png').exists()
  assert 'clip_accuracy' in open(tmp_path / 'test' / 'results.md').read()


@pytest.mark.slow
def test_cross_database_table_end_to_end(tiny_folds_dir, tmp_path):
  config = shrink(_module('affect4k').get_config('synthetic_crossdb'),
                  tiny_folds_dir, steps=1)
  b = _tiny(tiny_folds_dir, 'tiny_folds')
  b.train_split, b.eval_split, b.test_split = 'fold_0+fold_1', 'fold_2', (
      'fold_2')
  config.train_b.dataset = b
  config.cross.datasets.db_a = _tiny(tiny_folds_dir)
  config.cross.datasets.db_b = common.copy(b)
  results = experiment.run(config, str(tmp_path))['cross']
  assert set(results['pairs']) == {'train_a', 'train_b'}
  for row in results['pairs'].values():
    assert set(row) == {'db_a', 'db_b'}
    assert all(np.isfinite(r['ccc_valence']) for r in row.values())
  table = open(tmp_path / 'cross' / 'results.md').read()
  assert '| train_a |' in table and '| train_b |' in table
  assert (tmp_path / 'cross' / 'predictions' / 'train_b_on_db_a.csv').exists()
