r"""AffWildNet transfer (kollias2019 Sec. 5): RECOLA, AFEW-VA, AFEW / EmotiW.

A valence-arousal AffWildNet (configs/affwildnet.py) initialises:
  recola_features   RECOLA, the pretrained trunk frozen ("freezing the
                    pre-trained part ... and retraining the rest", Sec. 4.2):
                    FC, GRU and head train; CCC.
  recola_finetune   RECOLA, the whole network fine-tuned; CCC.
  afew_va           AFEW-VA (labels scaled from [-10, 10] to [-1, 1] by the
                    builder), 5-fold person-independent cross validation of
                    the fine-tuned network (the `cv` stage; the builder's
                    subject-disjoint folds fold_0..fold_4); Pearson and CCC
                    per fold and averaged.
  afew              AFEW 5.0 / EmotiW 2017, 7 classes: the output layer
                    replaced by 7 softmax units, fine-tuned on frames; clip
                    labels by aggregating frame probabilities; total and
                    per-class accuracy, confusion matrix (validation split,
                    as the paper reports).

Published (kollias2019):
  RECOLA test CCC valence / arousal: fine-tuned AffWildNet .526 / .273,
    ResNet-GRU .462 / .209 (Table 15)
  AFEW-VA Pearson valence / arousal: .514 / .575 (best of Kossaifi et al.
    .407 / .445; Table 16); CCC .515 / .556 (only CNN .44 / .474; Table 17)
  AFEW validation accuracy: total .454; neutral .569, anger .627,
    disgust .051, fear .023, happy .746, sad .709, surprise .111 (Table 18)

Commands (the source AffWildNet run is required for the real data):

  python -m affect_jax.main --config=configs/transfer.py:afew_va --workdir=DIR \
      --config.cv.train.init_from=AFFWILDNET_RUN/train
  python -m affect_jax.main --config=configs/transfer.py:afew --workdir=DIR \
      --config.finetune.init_from=AFFWILDNET_RUN/train

On synthetic data each variant first trains a synthetic AffWildNet
(configs/affwildnet.py:synthetic, on `affwild_like`) as its `pretrain`
stage; to reuse one, pass --config.stages without pretrain and the init:

  python -m affect_jax.main --config=configs/transfer.py:synthetic_afew_va --workdir=DIR
  python -m affect_jax.main --config=configs/transfer.py:synthetic_afew_va --workdir=DIR \
      --config.stages=cv --config.cv.train.init_from=AFFWILDNET_SYNTHETIC_RUN/train
  python -m affect_jax.main --config=configs/transfer.py:synthetic_afew --workdir=DIR
  python -m affect_jax.main --config=configs/transfer.py:synthetic_recola_finetune --workdir=DIR
"""

import ml_collections

from configs import affwildnet
from configs import common

TARGETS = ('recola_features', 'recola_finetune', 'afew_va', 'afew')
VARIANTS = TARGETS + tuple(f'synthetic_{t}' for t in TARGETS)
# One line a variant (`--config=configs/transfer.py:list`).
HELP = {
    'recola_features': 'AffWildNet features (frozen trunk) -> RECOLA '
                       'valence/arousal',
    'recola_finetune': 'AffWildNet fine-tuned on RECOLA',
    'afew_va': 'AffWildNet fine-tuned on AFEW-VA, 5-fold cross validation',
    'afew': 'AffWildNet fine-tuned on AFEW, 7 expressions, clip accuracy',
}
HELP.update({f'synthetic_{t}': f'{t} on synthetic data, the source '
             'AffWildNet trained first' for t in TARGETS})


def get_config(variant: str = 'afew_va') -> ml_collections.ConfigDict:
  synthetic = variant.startswith('synthetic_')
  target = variant[len('synthetic_'):] if synthetic else variant
  if target not in TARGETS:
    raise ValueError(f'Unknown variant {variant!r} of configs/transfer.py; '
                     f'use one of {", ".join(VARIANTS)}.')
  c = affwildnet.get_config('synthetic' if synthetic else '')
  c.name = f'transfer_{variant}'
  # The source AffWildNet: configs/affwildnet.py's train stage.
  c.pretrain = c.train
  del c['train']
  del c['test']
  c.pretrain.seed = 0
  if synthetic:
    src = 'stage:pretrain'
    c.stages = 'pretrain,'
  else:
    src = common.required(
        'an AffWildNet run trained on valence/arousal (configs/affwildnet.py, '
        'its train folder)')
    c.stages = ''

  if target.startswith('recola'):
    data = (common.synthetic('recola_like') if synthetic else
            common.dataset('recola'))
    c.finetune = common.train_stage('va', data, loss='ccc',
                                    best_metric='ccc_mean', init_from=src,
                                    augment=synthetic)
    if target == 'recola_features':
      c.finetune.freeze = 'trunk'
    # The AVEC 2016 release of RECOLA has no test labels: validation only
    # (with the full RECOLA: --config.test.splits=validation,test).
    c.test = common.test_stage('stage:finetune', common.copy(data),
                               splits='validation,test' if synthetic
                               else 'validation')
    c.finetune.num_epochs = 10 if synthetic else 100
    c.finetune.eval_every_epochs = 1
    c.finetune.early_stopping_patience = 5 if synthetic else 20
    c.stages += 'finetune,test'
  elif target == 'afew_va':
    data = (common.synthetic('afew_va_like') if synthetic else
            common.dataset('afew_va'))
    train = common.train_stage('va', data, loss='ccc', best_metric='ccc_mean',
                               init_from=src)
    train.sampler = 'shuffle'
    # afew_va_like: a fold trains on 3 folds, 36 clips x 6 windows -> 27
    # steps an epoch at 8 x 16.
    train.num_train_steps = 150 if synthetic else 20_000
    train.eval_every_steps = 25 if synthetic else 1_000
    train.checkpoint_every_steps = 25 if synthetic else 1_000
    c.cv = common.cv_stage(
        train, folds='fold_0,fold_1,fold_2,fold_3,fold_4')
    c.stages += 'cv'
  else:  # afew
    data = (common.synthetic('afew_like') if synthetic else
            common.dataset('afew'))
    c.finetune = common.train_stage(
        'expression', data, loss='softmax_ce', best_metric='accuracy',
        init_from=src)
    # The paper reports the EmotiW validation set: with no test labels,
    # model selection and the report share it (optimistic, as there).
    if not synthetic:
      c.finetune.dataset.eval_split = 'validation'
    c.finetune.num_train_steps = 400 if synthetic else 20_000
    c.finetune.eval_every_steps = 50 if synthetic else 1_000
    c.finetune.checkpoint_every_steps = 50 if synthetic else 1_000
    c.test = common.test_stage(
        'stage:finetune', common.copy(data),
        splits='validation,test' if synthetic else 'validation',
        aggregate='clip')
    c.stages += 'finetune,test'
  return c
