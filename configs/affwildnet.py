r"""AffWildNet (kollias2019, kollias2017): CNN-GRU valence/arousal on Aff-Wild.

The network (kollias2019 Table 8): the convolution and pooling part of
VGG-Face (default), ResNet-50 or VGG-16 -> FC 4096 (VGG) / 1500 (ResNet) with
dropout 0.5, the 68 landmarks (x, y) concatenated to its input -> 2-layer GRU
of 128 units -> FC 2 (linear). Loss (L_valence + L_arousal) / 2 with
L = 1 - CCC; a "batch" of 80 consecutive frames (kollias2017: "batch size 100
(~3 seconds)" for the CNN-RNN, kollias2019: 80); Adam, learning rate 1e-3
with exponential decay 0.97 every 400 steps; 96x96 face crops (224x224 with
`size224`) scaled to [-1, 1]; training windows oversampled to the
valence-arousal quadrant shares 43/24/19/14 % (Sec. 4.2).

Published, Aff-Wild test CCC valence / arousal (kollias2019):
  AffWildNet (VGG-Face CNN-GRU, landmarks)   .57 / .43   (Tables 12-14)
  CNN-LSTM (2 x 128)                         .52 / .38   (Table 12)
  CNN only: VGG-Face .51 / .33, VGG-16 .40 / .30, ResNet-50 .43 / .30
                                                          (Table 9)
  CNN only without landmarks (VGG-Face)      .44 / .32   (Table 10)
  hidden units 100 / 128 / 150, 1 layer:  .44/.36, .53/.40, .46/.39
                                2 layers: .50/.41, .57/.43, .51/.41
                                                          (Table 14)
  challenge baseline CNN-M                   .15 / .10   (configs/cnn_m_baseline.py)

Commands (a prepared `aff_wild`, see README "Real datasets"; the trunk from
imported VGG-Face weights, python -m affect_jax.import_weights):

  python -m affect_jax.main --config=configs/affwildnet.py --workdir=DIR \
      --config.train.init_from=VGG_FACE_IMPORT
  python -m affect_jax.main --config=configs/affwildnet.py:cnn_only+no_landmarks \
      --workdir=DIR --config.train.init_from=VGG_FACE_IMPORT

On synthetic data (a few minutes each on 2 CPU cores; docs/RESULTS.md has
the ablation table over seeds):

  python -m affect_jax.main --config=configs/affwildnet.py:synthetic --workdir=DIR
  python -m affect_jax.main --config=configs/affwildnet.py:synthetic+no_landmarks --workdir=DIR
  python -m affect_jax.compare DIR1 DIR2 ...

Variants: `+`-joined modifiers (any order), e.g. `synthetic+cnn_lstm+layers1`:
  trunks        vgg_face (default; resnet50 for synthetic), resnet50, vgg16
  ablations     cnn_only (no RNN), cnn_lstm, cnn_lstm_peephole,
                no_landmarks, hidden64 / hidden128 / hidden256,
                layers1 / layers2 / layers3, size224, constant_lr,
                no_oversampling
  datasets      affwild2_va, affwild2_expr (Aff-Wild2 valence-arousal, or
                its expressions with a softmax head; same model; tested
                on validation with the ABAW score beside the task's
                metrics, affect_jax.abaw: P_VA, or macro F1 over the 8
                classes of the 8-class annotations)
  synthetic     the embedded synthetic data at a size for 2 CPU cores
                (40x40 crops stand for 96x96; with size224, 96x96;
                no_oversampling is the synthetic default already)
"""

import ml_collections
from ml_collections import config_dict

from configs import common

MODIFIERS = ('vgg_face', 'resnet50', 'vgg16', 'cnn_only', 'cnn_lstm',
             'cnn_lstm_peephole', 'no_landmarks', 'hidden64', 'hidden128',
             'hidden256', 'layers1', 'layers2', 'layers3', 'size224',
             'constant_lr', 'no_oversampling', 'affwild2_va', 'affwild2_expr',
             'synthetic')
# Every variant the smoke test runs (each modifier once, on synthetic data).
VARIANTS = ('', 'synthetic') + tuple(
    f'synthetic+{m}' for m in MODIFIERS
    if m not in ('synthetic', 'affwild2_va', 'affwild2_expr'))
# One line a variant and a modifier (`--config=configs/affwildnet.py:list`).
HELP = {
    '': 'AffWildNet (VGG-Face CNN-GRU + landmarks) on a prepared aff_wild',
    'synthetic': 'the same network family on the synthetic affwild_like set, '
                 'a size for 2 CPU cores',
}
MODIFIER_HELP = {
    'vgg_face': 'VGG-Face trunk (the default on real data)',
    'resnet50': 'ResNet-50 trunk (the default on synthetic data)',
    'vgg16': 'VGG-16 trunk',
    'cnn_only': 'no RNN: the CNN alone (kollias2019 Table 9)',
    'cnn_lstm': 'LSTM instead of GRU (Table 12)',
    'cnn_lstm_peephole': 'LSTM with peepholes',
    'no_landmarks': 'without the 68 landmarks (Table 10)',
    'hidden64': '64 RNN units',
    'hidden128': '128 RNN units (the default)',
    'hidden256': '256 RNN units',
    'layers1': '1 RNN layer',
    'layers2': '2 RNN layers (the default)',
    'layers3': '3 RNN layers',
    'size224': '224x224 crops instead of 96x96',
    'constant_lr': 'constant learning rate (no exponential decay)',
    'no_oversampling': 'no valence-arousal quadrant oversampling',
    'affwild2_va': 'on a prepared aff_wild2 (valence/arousal)',
    'affwild2_expr': 'on a prepared aff_wild2 (expressions, softmax head; '
                     'ABAW macro F1 needs the 8-class annotations)',
    'synthetic': 'the embedded synthetic data at a size for 2 CPU cores',
}


def parse(variant: str, allowed=MODIFIERS, config_file='affwildnet.py'
          ) -> list[str]:
  """'synthetic+no_landmarks' -> ['synthetic', 'no_landmarks']."""
  mods = [m.strip() for m in (variant or '').split('+') if m.strip()]
  bad = [m for m in mods if m not in allowed]
  if bad:
    raise ValueError(
        f'Unknown variant modifier(s) {bad} of configs/{config_file}; join '
        f'any of {", ".join(allowed)} with "+".')
  return mods


def model(trunk: str = 'vgg_face') -> ml_collections.ConfigDict:
  """AffWildNet of kollias2019 Table 8 on `trunk`."""
  return ml_collections.ConfigDict(dict(
      arch='affwildnet', trunk_arch=trunk, use_landmarks=True,
      # Placeholders, not None, so that the command line can set them
      # (--config.model.width=16, --config.model.fc_features='(256,)');
      # unset: the trunk's published width, FC 4096 / 1500.
      width=config_dict.placeholder(int),
      fc_features=config_dict.placeholder(tuple), fc_dropout=0.5,
      gru_hidden=128, gru_layers=2, rnn_dropout=0.5, dtype='float32'))


def synthetic_model(c: ml_collections.ConfigDict) -> None:
  """The networks at a size for 2 CPU cores: width-8 trunks, FC 256,
  40x40 crops (resize 45 -> crop 40), windows of 16 frames, batch 8.

  ResNet-50 keeps its 3/4/6/3 layout at width 8, the VGG trunks their 13
  convolutions at 1/8 of the channels. Two changes from the paper, both
  because nothing here is pretrained: the default trunk is ResNet-50 (its
  batch norm trains from scratch; a width-8 VGG-Face without its VGG-Face
  weights stayed at 1 - CCC = 1 in 300 steps), and no dropout (with 0.5
  after FC and GRU a from-scratch model had not started learning after 300
  steps).
  """
  c.batch_size = 8
  c.log_every_steps = 50
  c.model.width = 8
  c.model.fc_features = (256,)
  c.model.fc_dropout = 0.0
  c.model.rnn_dropout = 0.0
  c.input.window = 16
  c.input.train_stride = 8
  c.input.image_size = 40
  c.input.resize_size = 45


def apply_modifiers(c: ml_collections.ConfigDict, mods: list[str]) -> None:
  """The model ablations shared by AffWildNet and its transfer configs."""
  m = c.model
  trunk = next((t for t in ('resnet50', 'vgg16', 'vgg_face') if t in mods),
               'resnet50' if 'synthetic' in mods else 'vgg_face')
  m.trunk_arch = trunk
  if trunk == 'resnet50' and m.get('width'):  # The narrow synthetic ResNet.
    m.zero_init_residual = True
  rnn = 'gru'
  if 'cnn_only' in mods:
    rnn = None
  elif 'cnn_lstm' in mods or 'cnn_lstm_peephole' in mods:
    rnn = 'lstm'
  hidden = next((int(x[len('hidden'):]) for x in mods
                 if x.startswith('hidden')), 128)
  layers = next((int(x[len('layers'):]) for x in mods
                 if x.startswith('layers')), 2)
  if rnn != 'gru':
    # The generic '<trunk>_lstm' / '<trunk>_frames' models with AffWildNet's
    # FC and landmark fusion (kollias2019 Tables 7, 12).
    fc = m.fc_features or ((1500,) if trunk == 'resnet50' else (4096,))
    new = ml_collections.ConfigDict(dict(
        arch=f'{trunk}_{"frames" if rnn is None else "lstm"}',
        use_landmarks=m.use_landmarks, fc_features=fc,
        fc_dropout=m.fc_dropout, dtype=m.dtype))
    if rnn == 'lstm':
      new.lstm_hidden = hidden
      new.lstm_layers = layers
      new.peephole = 'cnn_lstm_peephole' in mods
      new.rnn_dropout = m.rnn_dropout
    new.width = config_dict.placeholder(int)
    new.width = m.get('width')
    if 'zero_init_residual' in m:
      new.zero_init_residual = m.zero_init_residual
    c.model = new
  else:
    m.gru_hidden = hidden
    m.gru_layers = layers
  if 'no_landmarks' in mods:
    c.model.use_landmarks = False


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  mods = parse(variant)
  synthetic = 'synthetic' in mods
  c = common.experiment('affwildnet', 'train,test')
  c.name = 'affwildnet' + (f'_{variant.replace("+", "_")}' if variant else '')
  c.model = model()
  c.batch_size = 1
  c.learning_rate = 1e-3
  c.schedule = 'exponential'
  c.decay_steps = 400
  c.decay_rate = 0.97
  c.input = common.input_section(
      window=80, train_stride=40, image_size=96, resize_size=106,
      normalization='symmetric')
  c.train = common.train_stage(
      'va', common.dataset('aff_wild'), loss='ccc', best_metric='ccc_mean',
      sampler='va_quadrants')
  c.train.init_keep = 'trunk'
  c.train.init_from = common.required(
      'imported VGG-Face (or ImageNet VGG-16 / ResNet-50) trunk weights: '
      'python -m affect_jax.import_weights; or "" for a random trunk')
  # ~1M training frames: 25k windows of 80 at stride 40 -> 25k steps an
  # epoch; evaluate every 5k steps, stop after 5 evaluations without gain.
  c.num_train_steps = 200_000
  c.eval_every_steps = 5_000
  c.checkpoint_every_steps = 1_000
  c.early_stopping_patience = 5
  # Aff-Wild's test annotations came out after the challenge: with them in
  # annotations/test/ the builder writes a 'test' split.
  c.test = common.test_stage('stage:train', common.dataset('aff_wild'),
                             splits='validation,test')
  if 'size224' in mods:
    c.input.image_size, c.input.resize_size = 224, 240
  if 'constant_lr' in mods:
    c.schedule = 'constant'
  if 'no_oversampling' in mods:
    c.train.sampler = 'shuffle'
  if 'affwild2_va' in mods or 'affwild2_expr' in mods:
    expr = 'affwild2_expr' in mods
    common.train_and_test_on(
        c, common.dataset('aff_wild2', 'expr' if expr else 'va'),
        splits='validation')
    # The challenge's score beside the task's metrics (affect_jax.abaw).
    c.test.protocol = 'abaw'
    if expr:
      c.train.task, c.train.loss, c.train.best_metric = (
          'expression', 'softmax_ce', 'accuracy')
      c.train.sampler = 'shuffle'
  if synthetic:
    synthetic_model(c)
    if 'size224' in mods:
      # The paper's 96 -> 224 at the synthetic scale (40 stands for 96).
      c.input.image_size, c.input.resize_size = 96, 108
    # affwild_like: 56 videos x 12 windows -> 84 steps an epoch at 8 x 16.
    common.train_and_test_on(c, common.synthetic('affwild_like'), steps=600,
                             eval_every=100)
    c.decay_steps = 100
    # The synthetic trajectories cover the four quadrants about evenly; the
    # paper's shares would skew them instead of balancing them.
    c.train.sampler = 'shuffle'
    c.train.init_from = ''
  apply_modifiers(c, mods)
  return c
