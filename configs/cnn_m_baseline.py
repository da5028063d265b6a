r"""The Aff-Wild challenge baseline (kollias2019 Sec. 4.1.1, Table 4): CNN-M.

CNN-M's five convolutions with batch norm (Table 4, TensorFlow padding) ->
FC 4096 (ReLU) -> FC 2 (linear), one frame at a time (no recurrence);
Mean Squared Error, Adam, batch 80 frames, constant learning rate 1e-3.
The convolutions start from CNN-M pretrained on FaceValue in the paper
(`--config.train.init_from=` an imported trunk; random otherwise).

Published, Aff-Wild test (kollias2019 Table 5): CCC valence .15, arousal
.10; MSE .13 / .14.

Commands:

  python -m affect_jax.main --config=configs/cnn_m_baseline.py --workdir=DIR
  python -m affect_jax.main --config=configs/cnn_m_baseline.py:synthetic --workdir=DIR

Variants: (none) the paper's setting on a prepared `aff_wild`;
`synthetic` the same network at 1/8 of the channels on the embedded
`affwild_like` set (40x40 crops), minutes on 2 CPU cores.
"""

import ml_collections

from configs import common

VARIANTS = ('', 'synthetic')
# One line a variant (`--config=configs/cnn_m_baseline.py:list`).
HELP = {
    '': 'the Aff-Wild challenge baseline CNN-M on a prepared aff_wild',
    'synthetic': 'the same on the synthetic affwild_like set',
}


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of configs/'
                     f'cnn_m_baseline.py; use one of {VARIANTS}.')
  c = common.experiment('cnn_m_baseline' + (f'_{variant}' if variant else ''),
                        'train,test')
  c.model = ml_collections.ConfigDict(dict(
      arch='cnn_m_frames', fc_features=(4096,), fc_dropout=0.0,
      use_landmarks=False, dtype='float32'))
  # 80 frames a batch, each frame on its own (window 1).
  c.batch_size = 80
  c.learning_rate = 1e-3
  c.schedule = 'constant'
  c.input = common.input_section(window=1, train_stride=1, image_size=96,
                                 resize_size=106, normalization='symmetric')
  data = common.dataset('aff_wild')
  c.train = common.train_stage('va', data, loss='mse', best_metric='ccc_mean')
  c.train.init_keep = 'trunk'
  c.num_train_steps = 100_000
  c.eval_every_steps = 5_000
  c.checkpoint_every_steps = 1_000
  c.early_stopping_patience = 5
  c.test = common.test_stage('stage:train', common.copy(data),
                             splits='validation,test')
  if variant == 'synthetic':
    c.log_every_steps = 50
    c.model.width = 12
    c.model.fc_features = (256,)
    c.input.image_size, c.input.resize_size = 40, 45
    c.batch_size = 80
    common.train_and_test_on(c, common.synthetic('affwild_like'), steps=600,
                             eval_every=100)
  return c
