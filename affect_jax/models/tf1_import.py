"""The released Aff-Wild TF1 checkpoints (kollias2019) -> Flax variables.

github.com/dkollias/Aff-Wild-models links four TensorFlow 1.8 models;
their graphs (the repository's `affwildnet/vggface_gru.py`,
`affwildnet/resnet_gru.txt`, `vggface/vggface_4096x{4096,2000}x2.py` and
`eval_script.py`) fix every variable name. All take 96 x 96 RGB faces
scaled (x - 128) / 128 and output (valence, arousal).

  network              affect_jax model
  affwildnet_vggface   affwildnet, trunk vgg_face, FC 4096, GRU 2 x 128
                       (reset_after=False), no landmarks
  affwildnet_resnet    affwildnet, trunk resnet_v1_50 (slim), no FC,
                       GRU 2 x 128 (reset_after=False), no landmarks
  vggface_4096         vgg_face_frames, FC 4096 -> 4096 -> head 2
  vggface_2000         vgg_face_frames, FC 4096 -> 2000 -> head 2

Names (TF layout -> Flax layout):

  VGG-Face convolutions (13, `conv_k` numbered in graph order):
    conv_{k}/weights [3, 3, I, O], conv_{k}/biases   trunk/features_{i}/
                                                     kernel (HWIO, as is), bias
    (i: the k-th conv slot of convnet.vgg16_features; 'SAME' 3x3/1 is pad 1,
    the 2x2/2 'SAME' pools pad nothing on 96 px: 96 -> 48 -> ... -> 3)
  FC layers (`tf.nn.relu_layer`, input the NHWC conv output flattened in
  (h, w, c) order, as Flax flattens):
    linear_1/weights [3*3*512, 4096], biases         fc/dense0/kernel, bias
    linear2_1/weights, biases (vggface_*)            fc/dense1/kernel, bias
  Linear head (TF columns valence, arousal; affect_jax's 'va' head is
  arousal, valence: the two columns are swapped):
    linear3_1/{weights,biases} (vggface_*)           head/kernel, bias
    rnn_1/{weights_rnn,biases_rnn} (affwildnet_vggface)
    rnn/{weights_output,biases_output} (affwildnet_resnet)
  slim resnet_v1_50 (slim_resnet.py; BN gamma, beta -> scale, bias;
  moving_mean, moving_variance -> batch_stats mean, var):
    resnet_v1_50/conv1/{weights,BatchNorm/*}         trunk/conv1, conv1_bn
    resnet_v1_50/block{b}/unit_{u}/bottleneck_v1/{shortcut,conv1,conv2,conv3}/
      {weights,BatchNorm/*}                          trunk/block{b}_unit_{u}/
                                                     {name}, {name}_bn
  TF1 GRUCell k of `MultiRNNCell` (scope S = rnn_1/rnn for the VGG-Face GRU,
  rnn/rnn for the ResNet one; F = input width, H = 128):
    S/multi_rnn_cell/cell_{k}/gru_cell/gates/kernel [F + H, 2H]  (r | u)
    S/multi_rnn_cell/cell_{k}/gru_cell/gates/bias [2H]
    S/multi_rnn_cell/cell_{k}/gru_cell/candidate/kernel [F + H, H]
    S/multi_rnn_cell/cell_{k}/gru_cell/candidate/bias [H]
      -> rnn/ih_l{k}/kernel = [gates[:F] | candidate[:F]]   [F, 3H]
         rnn/ih_l{k}/bias   = [gates/bias | candidate/bias] [3H]
         rnn/hh_l{k}/kernel = gates[F:]                     [H, 2H]
         rnn/hh_l{k}/candidate_kernel = candidate[F:]       [H, H]
    GRUCell computes [r, u] = sigmoid([x, h] G + b_g),
    c = tanh([x, r * h] C + b_c), h' = u * h + (1 - u) * c: the reset gate
    before the candidate's matmul (GRU(reset_after=False)), u = z.

Optimizer slots (`<variable>/Adam`, `/Adam_1`, `/Momentum`, ...),
`global_step` and `beta{1,2}_power` are training state and are skipped; any
other tensor the network does not have, and every tensor it has that is
missing or of another shape or dtype, is an `AffectJaxError` naming it.
Widths are read from the checkpoint (the released ones are the sizes
above), so a scaled-down checkpoint with the released names imports too.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from affect_jax.errors import AffectJaxError
from affect_jax.models import convnet
from affect_jax.models import tf_bundle

NETWORKS = ('affwildnet_vggface', 'affwildnet_resnet', 'vggface_4096',
            'vggface_2000')
IMAGE_SIZE = 96  # The released models' input (eval_script.py --size).
WINDOW = 80  # Their training sequence length (--seq_length).
# Face crops for prediction: the project's dlib detector with this margin
# (each side, a fraction of the box) approximates the larger boxes of the
# authors' detector (Mathias et al. 2014, through Menpo); docs/models.md.
DEFAULT_MARGIN = 0.1
FPS = 30.0  # Aff-Wild's videos (tfds_builders/aff_wild).

_SLOTS = ('Adam', 'Adam_1', 'Momentum', 'RMSProp', 'RMSProp_1', 'Adagrad',
          'Ftrl', 'Ftrl_1', 'ExponentialMovingAverage')
_TRAINING_STATE = ('global_step', 'beta1_power', 'beta2_power')
_RESNET = 'resnet_v1_50'
_RNN_SCOPE = {'affwildnet_vggface': 'rnn_1/rnn', 'affwildnet_resnet': 'rnn/rnn'}
_HEAD = {'affwildnet_vggface': ('rnn_1/weights_rnn', 'rnn_1/biases_rnn'),
         'affwildnet_resnet': ('rnn/weights_output', 'rnn/biases_output'),
         'vggface_4096': ('linear3_1/weights', 'linear3_1/biases'),
         'vggface_2000': ('linear3_1/weights', 'linear3_1/biases')}
_FC = ('linear_1', 'linear2_1')
_BN = {'scale': 'gamma', 'bias': 'beta', 'mean': 'moving_mean',
       'var': 'moving_variance'}
# TF head columns (valence, arousal) -> the 'va' task's (arousal, valence).
HEAD_COLUMNS = [1, 0]


class _Checked:
  """The checkpoint's tensors by name, each check failure collected."""

  def __init__(self, reader: tf_bundle.BundleReader, network: str):
    self.reader, self.network = reader, network
    self.problems: list[str] = []
    self.used: set[str] = set()

  def shape(self, name: str) -> tuple[int, ...] | None:
    """The stored shape of `name` (to size the network), or None."""
    e = self.reader.entries.get(name)
    if e is None:
      self._missing(name)
      return None
    return e.shape

  def _missing(self, name):
    msg = f'no tensor {name!r}'
    if msg not in self.problems:
      self.problems.append(msg)

  def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The float32 tensor `name` of `shape`, or None (a problem noted)."""
    self.used.add(name)
    e = self.reader.entries.get(name)
    if e is None:
      self._missing(name)
      return None
    if e.dtype != 1:
      self.problems.append(f'tensor {name!r} is {e.dtype_name}, not float32')
      return None
    if tuple(e.shape) != tuple(shape):
      self.problems.append(f'tensor {name!r} has shape {list(e.shape)}; '
                           f'{self.network} needs {list(shape)}')
      return None
    return self.reader.read(name)

  def unexpected(self) -> list[str]:
    out = []
    for name in sorted(self.reader.entries):
      if name in self.used or name in _TRAINING_STATE:
        continue
      base, _, last = name.rpartition('/')
      if last in _SLOTS and base in self.reader.entries:
        continue
      out.append(name)
    return out


def _gru_layers(ck: _Checked, scope: str) -> int:
  cells = {int(m.group(1)) for n in ck.reader.entries
           for m in [re.match(rf'{re.escape(scope)}/multi_rnn_cell/cell_(\d+)/',
                              n)] if m}
  return max(cells) + 1 if cells else 0


def _cell(scope: str, k: int) -> str:
  return f'{scope}/multi_rnn_cell/cell_{k}/gru_cell'


def model_config(network: str, ck: _Checked) -> dict[str, Any] | None:
  """The `config.model` section sized by the checkpoint, or None (then
  `ck.problems` says which tensor was missing)."""
  if network not in NETWORKS:
    raise AffectJaxError(f'--network={network!r}; use one of '
                         f'{list(NETWORKS)}.')
  cfg: dict[str, Any] = {'dtype': 'float32', 'use_landmarks': False}
  if network == 'affwildnet_resnet':
    stem = ck.shape(f'{_RESNET}/conv1/weights')
    sizes, depths = [], []
    for b in range(1, 5):
      units = {int(m.group(1)) for n in ck.reader.entries
               for m in [re.match(rf'{_RESNET}/block{b}/unit_(\d+)/', n)] if m}
      if not units:
        ck.shape(f'{_RESNET}/block{b}/unit_1/bottleneck_v1/conv1/weights')
        return None
      sizes.append(max(units))
      w = ck.shape(f'{_RESNET}/block{b}/unit_1/bottleneck_v1/conv1/weights')
      if w is None:
        return None
      depths.append(int(w[-1]))
    if stem is None:
      return None
    cfg.update(arch='affwildnet', trunk_arch='resnet_v1_50', fc_features=[],
               stage_sizes=sizes, base_depths=depths, stem_width=int(stem[-1]))
  else:
    conv = ck.shape('conv_1/weights')
    fc = [ck.shape(f'{n}/weights') for n in
          (_FC if network.startswith('vggface_') else _FC[:1])]
    if conv is None or None in fc:
      return None
    fc_features = [int(s[-1]) for s in fc]
    if network == 'vggface_4096' and fc_features[0] != fc_features[1]:
      ck.problems.append(
          f'linear2_1 has {fc_features[1]} units, linear_1 {fc_features[0]}:'
          ' that is the 4096-2000-2 network, --network=vggface_2000')
    if network == 'vggface_2000' and fc_features[0] == fc_features[1]:
      ck.problems.append(
          f'linear2_1 has as many units as linear_1 ({fc_features[0]}): '
          'that is the 4096-4096-2 network, --network=vggface_4096')
    cfg.update(arch='affwildnet' if network == 'affwildnet_vggface' else
               'vgg_face_frames', width=int(conv[-1]), fc_features=fc_features)
    if network == 'affwildnet_vggface':
      cfg['trunk_arch'] = 'vgg_face'
  if network.startswith('affwildnet'):
    scope = _RNN_SCOPE[network]
    layers = _gru_layers(ck, scope)
    cand = ck.shape(f'{_cell(scope, 0)}/candidate/kernel')
    if not layers or cand is None:
      return None
    cfg.update(gru_hidden=int(cand[-1]), gru_layers=layers,
               gru_reset_after=False)
  return cfg


def _variable_shapes(model_cfg: dict[str, Any]) -> dict[str, Any]:
  from affect_jax import inference  # pylint: disable=g-import-not-at-top
  model = inference.build_model(model_cfg, 2)
  x = jnp.zeros((1, 1, IMAGE_SIZE, IMAGE_SIZE, 3))
  return flax.core.unfreeze(jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.PRNGKey(0), x))


def _vgg_name(network: str, collection: str, path: tuple[str, ...],
              conv_index: dict[str, int]) -> str:
  """The TF name of one Flax VGG trunk / FC / head leaf."""
  part, *rest = path
  leaf = rest[-1]
  if part == 'trunk':
    return f'conv_{conv_index[rest[0]]}/' + (
        'weights' if leaf == 'kernel' else 'biases')
  if part == 'fc':
    return f'{_FC[int(rest[0][len("dense"):])]}/' + (
        'weights' if leaf == 'kernel' else 'biases')
  if part == 'head':
    return _HEAD[network][0 if leaf == 'kernel' else 1]
  raise KeyError('/'.join((collection,) + path))


def _resnet_scope(unit: str, name: str) -> str:
  block, u = unit.rsplit('_unit_', 1)
  return f'{_RESNET}/{block}/unit_{u}/bottleneck_v1/{name}'


def load_checkpoint(network: str, path: str
                    ) -> tuple[dict[str, Any], dict[str, Any], int | None]:
  """Flax variables of a released checkpoint.

  Args:
    network: one of `NETWORKS`.
    path: the checkpoint prefix (`.../model.ckpt-N`), its .index, or a
      folder with a TF `checkpoint` file.

  Returns:
    (variables {'params', ['batch_stats']} of float32 arrays, the
    `config.model` section that builds their network, the checkpoint's
    global_step or None).

  Raises:
    AffectJaxError: a file missing or damaged, or tensors missing, of the
      wrong shape or dtype, or not part of `network` (each named).
  """
  reader = tf_bundle.BundleReader(path)
  ck = _Checked(reader, network)
  cfg = model_config(network, ck)
  if cfg is None:
    _raise(ck, reader)
  shapes = _variable_shapes(cfg)
  conv_index = {}
  if network != 'affwildnet_resnet':
    slots = [i for i, s in enumerate(convnet.vgg16_features(cfg['width']))
             if s[0] == 'conv']
    conv_index = {f'features_{i}': k + 1 for k, i in enumerate(slots)}
  out: dict[str, dict] = {}
  for collection, tree in shapes.items():
    flat = {}
    for path_, struct in traverse_util.flatten_dict(tree).items():
      if path_[0] == 'rnn':
        continue  # Below: each GRU layer from its cell's four tensors.
      shape = tuple(struct.shape)
      if path_[0] == 'trunk' and network == 'affwildnet_resnet':
        module = path_[-2]
        bn = module.endswith('_bn')
        name = module[:-3] if bn else module
        scope = (f'{_RESNET}/{name}' if len(path_) == 3 else
                 _resnet_scope(path_[1], name))
        tf_name = (f'{scope}/BatchNorm/{_BN[path_[-1]]}' if bn else
                   f'{scope}/weights')
      else:
        tf_name = _vgg_name(network, collection, path_, conv_index)
      value = ck.get(tf_name, shape)
      if value is not None and path_[0] == 'head':
        value = value[..., HEAD_COLUMNS]
      flat[path_] = value
    out[collection] = flat
  if network.startswith('affwildnet'):
    _gru(ck, _RNN_SCOPE[network], shapes['params']['rnn'], out['params'])
  unexpected = ck.unexpected()
  if unexpected:
    ck.problems.append(
        f'tensors {unexpected[:8]}{" ..." if len(unexpected) > 8 else ""} '
        f'are not part of {network}')
  if ck.problems:
    _raise(ck, reader)
  variables = {c: traverse_util.unflatten_dict(f) for c, f in out.items()}
  step = None
  if 'global_step' in reader.entries:
    step = int(np.asarray(reader.read('global_step')).reshape(()))
  return variables, cfg, step


def _gru(ck: _Checked, scope: str, rnn_shapes, params):
  """One `GRU(reset_after=False)` layer per TF1 GRUCell (module docstring)."""
  for k in range(len([n for n in rnn_shapes if n.startswith('ih_l')])):
    f, three_h = rnn_shapes[f'ih_l{k}']['kernel'].shape
    h = three_h // 3
    cell = _cell(scope, k)
    gk = ck.get(f'{cell}/gates/kernel', (f + h, 2 * h))
    gb = ck.get(f'{cell}/gates/bias', (2 * h,))
    ckern = ck.get(f'{cell}/candidate/kernel', (f + h, h))
    cb = ck.get(f'{cell}/candidate/bias', (h,))
    if any(v is None for v in (gk, gb, ckern, cb)):
      continue
    params[('rnn', f'ih_l{k}', 'kernel')] = np.concatenate(
        [gk[:f], ckern[:f]], axis=1)
    params[('rnn', f'ih_l{k}', 'bias')] = np.concatenate([gb, cb])
    params[('rnn', f'hh_l{k}', 'kernel')] = gk[f:]
    params[('rnn', f'hh_l{k}', 'candidate_kernel')] = ckern[f:]


def _raise(ck: _Checked, reader: tf_bundle.BundleReader):
  raise AffectJaxError(
      f'{reader.prefix} is not the released {ck.network} checkpoint: '
      + '; '.join(ck.problems[:10])
      + (f' (and {len(ck.problems) - 10} more)' if len(ck.problems) > 10
         else '')
      + '. Pass the checkpoint of that network (the folder names of the '
      'release: affwildnet-vggface-gru, affwildnet-resnet-gru, vggface/'
      '4096x4096x2 or 4096x2000x2), or the --network that matches it '
      '(docs/models.md).')



def model_record(network: str, model_cfg: dict[str, Any], step: int | None,
                 prefix: str, margin: float = DEFAULT_MARGIN
                 ) -> dict[str, Any]:
  """The self-contained model record (`checkpointing.load_model`'s `meta`,
  as `train.model_record` writes it) of an imported released network."""
  from affect_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from affect_jax import tasks  # pylint: disable=g-import-not-at-top
  from affect_jax import writers  # pylint: disable=g-import-not-at-top
  if step is None:
    m = re.search(r'-(\d+)$', prefix)
    step = int(m.group(1)) if m else 0
  return {
      'format': checkpointing.MODEL_FORMAT,
      'step': int(step),
      'task': 'va',
      'outputs': list(tasks.VA_OUTPUTS),
      'label_names': [],
      'model': dict(model_cfg),
      'input': {'window': WINDOW, 'image_size': IMAGE_SIZE,
                'resize_size': IMAGE_SIZE, 'normalization': 'symmetric'},
      # What predict's Preprocess reads: crops as a prepared dataset's.
      'data': {'dataset': f'aff_wild/released_tf1_{network}',
               'fps': FPS, 'detector': 'dlib', 'landmarks': 'none',
               'image_size': IMAGE_SIZE, 'margin': float(margin),
               'detect_every': 1, 'track': 'hold', 'detect_max_side': 0,
               'emotion_names': []},
      'validation': {},
      'versions': writers.versions(),
      'imported_from': {
          'format': 'affwild-tf1', 'network': network,
          'checkpoint': os.path.abspath(prefix),
          'release': 'https://github.com/dkollias/Aff-Wild-models',
          'licence': 'research use only, no commercial use, no '
                     'redistribution (the release\'s eval_script.py)',
          'preprocessing': (
              'The authors cropped the boxes of Mathias et al. (2014) found '
              'with Menpo and resized them to 96 x 96 with '
              'tf.image.resize_images (bilinear, aspect not kept); this '
              f'model is fed dlib HOG boxes squared with margin {margin} '
              'per side, resized to 96 (INTER_AREA), JPEG q90 round trip; '
              'the faces therefore differ in extent and alignment.'),
      },
  }
