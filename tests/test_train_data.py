"""The configured sampler reaches the batches a real train stage consumes.

These run the train stage through `experiment.run`, as `affect_jax.main`
does, and look at the batches the train step actually received (a spy on
`Stage.put`, which moves each host batch to the devices for the step, in
step order; a few batches are prefetched past the last step): one full epoch of
`va_quadrants` holds the target quadrant shares, every `distinct_videos`
batch has distinct videos, and the default sampler holds neither.
"""

import numpy as np
import pytest

from affect_jax import experiment
from affect_jax import samplers
from affect_jax import train

from tests import conftest


def _finetune_only(data_dir, sampler, batch_size, targets=''):
  c = conftest.tiny_config(data_dir)
  c.stages = 'finetune'
  c.finetune.init_from = ''
  c.finetune.augment = False
  c.finetune.sampler = sampler
  c.finetune.sampler_targets = targets
  c.batch_size = batch_size
  return c


def _consumed_batches(monkeypatch, config, workdir, epochs=1):
  """Runs the train stage for `epochs` epochs; the batches it stepped on."""
  seen = []
  real = train.Stage.put

  def spy(self, batch):
    if 'video_index' in batch:  # A host batch, not one put already.
      seen.append({k: np.asarray(batch[k]) for k in ('valence', 'arousal',
                                                     'mask', 'video_index')})
    return real(self, batch)

  monkeypatch.setattr(train.Stage, 'put', spy)
  # One probe run of 1 step tells the epoch length the stage counted.
  config.finetune.num_train_steps = 1
  out = experiment.run(config, str(workdir / 'probe'))
  steps = out['finetune']['steps_per_epoch'] * epochs
  seen.clear()
  config.finetune.num_train_steps = steps
  config.finetune.eval_every_steps = steps
  config.finetune.checkpoint_every_steps = steps
  experiment.run(config, str(workdir / 'run'))
  assert len(seen) >= steps
  return seen[:steps]


def _quadrant_shares(batches):
  quadrants = []
  for b in batches:
    for v, a, m in zip(b['valence'], b['arousal'], b['mask']):
      ok = (m > 0) & np.isfinite(v) & np.isfinite(a)
      quadrants.append((2 if a[ok].mean() < 0 else 0) +
                       (1 if v[ok].mean() < 0 else 0))
  return samplers.proportions(np.asarray(quadrants))


@pytest.mark.slow
def test_va_quadrants_batches_reach_their_targets(tiny_data_dir, tmp_path,
                                                  monkeypatch):
  targets = (0.1, 0.2, 0.3, 0.4)
  oversampled = _quadrant_shares(_consumed_batches(
      monkeypatch, _finetune_only(tiny_data_dir, 'va_quadrants', 4,
                                  ','.join(map(str, targets))),
      tmp_path / 'vq'))
  plain = _quadrant_shares(_consumed_batches(
      monkeypatch, _finetune_only(tiny_data_dir, 'shuffle', 4),
      tmp_path / 'sh'))
  # One epoch is the oversampled multiset, less < 1 batch of remainder.
  np.testing.assert_allclose(oversampled, targets, atol=0.04)
  # The data's own shares are far from the targets: the sampler did it.
  assert np.abs(plain - np.asarray(targets)).max() > 0.1


@pytest.mark.slow
def test_distinct_videos_batches_have_distinct_videos(tiny_data_dir,
                                                      tmp_path, monkeypatch):
  def repeats(sampler):
    batches = _consumed_batches(
        monkeypatch, _finetune_only(tiny_data_dir, sampler, 4),
        tmp_path / sampler)
    return sum(len(b['video_index']) - len(set(b['video_index'].tolist()))
               for b in batches), len(batches)

  distinct, n = repeats('distinct_videos')
  shuffled, _ = repeats('shuffle')
  assert n >= 5
  assert distinct == 0
  # 8 training videos, 4 windows a batch: shuffling repeats videos.
  assert shuffled > 0
