r"""The 4K in-the-wild models (affect4k thesis): CNN-GRU on CSV frame lists.

AlexNet-GRU, VGG16-GRU and ResNet-50-GRU on 112x112 aligned faces listed in
CSV files ("frame path, valence, arousal"; the `frame_list` builder):
sequences of 80 consecutive frames (the list cut into sub-arrays of 80),
4 sequences a batch drawn from different videos (Sec. 6.2: with one video a
batch the 1 - CCC loss degenerates), Adam 1e-5, 50 epochs (60 for
ResNet-50), a checkpoint every 10 epochs; pixels (x - 128) / 128 by default,
or mean subtraction / whitening (Sec. 6.1). A still image is predicted by
repeating it over the 80 steps and reading the last output (Sec. 6.7.1;
`input.repeat_stills`, on by default in evaluation).

Published (affect4k thesis), test CCC valence / arousal on the 4K set
(Table 1): from scratch VGG16-GRU .22 / .37, ResNet-GRU .23 / .25,
AlexNet-GRU .43 / .42; VGG16 ImageNet-pretrained .44 / .51, VGG16
Aff-Wild-pretrained .53 / .62. Cross-database, trained on 4K and tested on
all of Aff-Wild (Table 3): VGG16-GRU .14 / .19, ResNet-GRU .15 / .16,
AlexNet-GRU .23 / .28, ImageNet .26 / .27, Aff-Wild-pretrained .25 / .28;
VGG16 CNN on 4K .14 / .26 and on AffectNet .11 / .20 (Table 5).

Commands (a prepared `frame_list` from the 4K CSVs; `aff_wild`, `affectnet`
for the cross-database table):

  python -m affect_jax.main --config=configs/affect4k.py:alexnet_gru --workdir=DIR
  python -m affect_jax.main --config=configs/affect4k.py:vgg16_gru+crossdb --workdir=DIR
  python -m affect_jax.main --config=configs/affect4k.py:synthetic_crossdb --workdir=DIR

Variants: `+`-joined modifiers:
  models         alexnet_gru (default; resnet50_gru for synthetic),
                 vgg16_gru, resnet50_gru, vgg16_cnn
                 (CNN only), vgg16_imagenet / vgg16_affwild (VGG16-GRU from
                 an ImageNet import / an AffWildNet VGG run: init_from
                 required)
  normalisation  mean_subtraction, whitening
  crossdb        also score the model on Aff-Wild (all of its train split,
                 as the thesis) and AffectNet (validation, still images)
  synthetic      ResNet-50-GRU at width 8 on the synthetic `crossdb_a` set,
                 40x40 crops, sequences of 16 (see `_synthetic`)
  synthetic_crossdb  two synthetic databases (A: 64x64 JPEG q90, B: 40x40
                 q35, other people): a model trained on each, both tested on
                 both -> the 2 x 2 table
"""

import ml_collections
from ml_collections import config_dict

from configs import affwildnet
from configs import common

MODIFIERS = ('alexnet_gru', 'vgg16_gru', 'resnet50_gru', 'vgg16_cnn',
             'vgg16_imagenet', 'vgg16_affwild', 'mean_subtraction',
             'whitening', 'crossdb', 'synthetic', 'synthetic_crossdb')
VARIANTS = ('', 'crossdb', 'synthetic', 'synthetic_crossdb') + tuple(
    f'synthetic+{m}' for m in MODIFIERS
    if m not in ('synthetic', 'synthetic_crossdb', 'crossdb',
                 'vgg16_imagenet', 'vgg16_affwild'))
# One line a variant and a modifier (`--config=configs/affect4k.py:list`).
HELP = {
    '': 'AlexNet-GRU on a prepared frame_list (the thesis\' CSV frame lists)',
    'crossdb': 'two models, each tested on both datasets (2 x 2 table)',
    'synthetic': 'on synthetic data, a size for 2 CPU cores',
    'synthetic_crossdb': 'the cross-database table on synthetic data',
}
MODIFIER_HELP = {
    'alexnet_gru': 'AlexNet -> GRU (the default)',
    'vgg16_gru': 'VGG-16 -> GRU',
    'resnet50_gru': 'ResNet-50 -> GRU',
    'vgg16_cnn': 'VGG-16 alone, no RNN',
    'vgg16_imagenet': 'VGG-16 trunk from imported ImageNet weights',
    'vgg16_affwild': 'VGG-16 trunk from an Aff-Wild run',
    'mean_subtraction': 'inputs minus the mean pixel (Sec. 6.1)',
    'whitening': 'per-image whitened inputs (Sec. 6.1)',
    'crossdb': 'the cross-database stage',
    'synthetic': 'on synthetic data',
    'synthetic_crossdb': 'the cross-database table on synthetic data',
}


def _model(mods) -> ml_collections.ConfigDict:
  synthetic = 'synthetic' in mods or 'synthetic_crossdb' in mods
  arch = next((m for m in ('alexnet_gru', 'vgg16_gru', 'resnet50_gru',
                           'vgg16_cnn') if m in mods),
              'resnet50_gru' if synthetic else 'alexnet_gru')
  if 'vgg16_imagenet' in mods or 'vgg16_affwild' in mods:
    arch = 'vgg16_gru'
  # width / fc_features: placeholders (settable from the command line,
  # e.g. --config.model.width=16); unset: the published network.
  sizes = dict(width=config_dict.placeholder(int),
               fc_features=config_dict.placeholder(tuple))
  if arch == 'vgg16_cnn':
    return ml_collections.ConfigDict(dict(arch='vgg16_frames',
                                          dtype='float32', **sizes))
  return ml_collections.ConfigDict(dict(arch=arch, gru_hidden=128,
                                        gru_layers=2, dtype='float32',
                                        **sizes))


def _synthetic(c, mods) -> None:
  """2-CPU size: width 8 (AlexNet 16), FC 256, windows of 16, batch 8.

  Nothing is pretrained here, and the trunks without batch norm did not
  learn from scratch at this size (AlexNet-GRU at width 16, 64x64 crops:
  validation CCC 0.01 after 560 steps; VGG likewise), so the synthetic
  default is ResNet-50-GRU on 40x40 crops; AlexNet keeps 64x64 (its strides
  need it). Learning rate 1e-3: the thesis' 1e-5 is for its full-size nets.
  """
  c.batch_size = 8
  c.log_every_steps = 50
  c.learning_rate = 1e-3
  c.model.width = 16 if c.model.arch.startswith('alexnet') else 8
  c.model.fc_features = (256,)
  c.model.fc_dropout = 0.0
  if c.model.arch.startswith('resnet50'):
    c.model.zero_init_residual = True
  c.input.window = 16
  c.input.train_stride = 16
  size = 64 if c.model.arch.startswith('alexnet') else 40
  c.input.image_size, c.input.resize_size = size, size + size // 8


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  mods = affwildnet.parse(variant, MODIFIERS, 'affect4k.py')
  c = common.experiment('affect4k' + (f'_{variant.replace("+", "_")}'
                                      if variant else ''), 'train,test')
  c.model = _model(mods)
  c.batch_size = 4
  c.learning_rate = 1e-5
  c.schedule = 'constant'
  norm = next((m for m in ('mean_subtraction', 'whitening') if m in mods),
              'symmetric')
  c.input = common.input_section(window=80, train_stride=80, image_size=112,
                                 resize_size=112, normalization=norm)
  data = common.dataset('frame_list')
  c.train = common.train_stage('va', data, loss='ccc', best_metric='ccc_mean',
                               sampler='distinct_videos', augment=False)
  c.num_epochs = 60.0 if 'resnet50_gru' in mods else 50.0
  c.eval_every_epochs = 1.0
  c.checkpoint_every_epochs = 10.0
  c.test = common.test_stage('stage:train', common.copy(data), splits='test')
  if 'vgg16_imagenet' in mods:
    c.train.init_from = common.required(
        'imported ImageNet VGG-16 weights (python -m affect_jax.import_weights '
        '--arch=vgg16 ...)')
    c.train.init_keep = 'trunk'
  if 'vgg16_affwild' in mods:
    c.train.init_from = common.required(
        'an AffWildNet run on the VGG-16 / VGG-Face trunk (configs/'
        'affwildnet.py:vgg16 or vgg_face)')
    c.train.init_keep = 'trunk'
  if 'crossdb' in mods:
    datasets = ml_collections.ConfigDict()
    datasets.own = common.dataset('frame_list')
    datasets.aff_wild = common.dataset('aff_wild', test='train')
    datasets.affectnet = common.dataset('affectnet', test='validation')
    c.cross = common.cross_test_stage('stage:train', datasets)
    c.stages = 'train,test,cross'
  if 'synthetic_crossdb' in mods or 'synthetic' in mods:
    _synthetic(c, mods)
    a = common.synthetic('crossdb_a')
    common.train_and_test_on(c, a)
    # crossdb_a: 32 videos x 7 windows of 16 -> 28 steps an epoch at 8.
    c.num_epochs = 20.0
    c.eval_every_epochs = 2.0
    c.checkpoint_every_epochs = 2.0
  if 'synthetic_crossdb' in mods:
    b = common.synthetic('crossdb_b')
    c.train_a = c.train
    c.train_b = common.copy(c.train)
    c.train_b.dataset = b
    del c['train']
    del c['test']
    datasets = ml_collections.ConfigDict()
    datasets.db_a = common.copy(a)
    datasets.db_b = common.copy(b)
    c.cross = common.cross_test_stage('stage:train_a,stage:train_b', datasets)
    c.stages = 'train_a,train_b,cross'
  return c
