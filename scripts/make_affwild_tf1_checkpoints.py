"""Writes tiny TF1 checkpoints of the released Aff-Wild networks + TF outputs.

  python -m venv /work/venv-tf
  /work/venv-tf/bin/pip install tensorflow-cpu==2.15.1 tf-keras==2.15.1 \
      tf-slim==1.1.0
  /work/venv-tf/bin/python scripts/make_affwild_tf1_checkpoints.py \
      --output=tests/data/affwild_tf1

Each of the four networks of github.com/dkollias/Aff-Wild-models is built
here in TensorFlow's graph mode (`tf.compat.v1`) with the graph code of that
repository (its layer loop for the VGG-Face networks, `tf_slim`'s
`resnet_v1` under `resnet_arg_scope()`, `MultiRNNCell` of two `GRUCell`s
run by `dynamic_rnn`), so the variable names are the released ones; the
widths are scaled down (VGG-Face width 2, FC 16 / 10, ResNet bottlenecks 2,
4, 8, 16, GRU 8) so the files stay small (--full: the released widths), the input is the released 96 x 96
at (x - 128) / 128. Every variable gets random values, the checkpoint is
saved with `tf.compat.v1.train.Saver` (TF's V2 bundle format, as TF 1.8
wrote it), and TF's own forward of the same graph on `frames.npz` is stored
next to it as `tf_outputs.npy` ([B * T, 2]: valence, arousal, the released
column order). tests/test_import_tf1.py imports each checkpoint with
`affect_jax.import_weights` (no TensorFlow) and compares.

The affwildnet_vggface checkpoint also holds training state as TF's
optimizers write it (`global_step`, `beta1_power`, `.../Adam` slots), which
the import must skip. Only this script needs TensorFlow: never install it
into the project's environment.
"""

import argparse
import os
import sys

import numpy as np
import tensorflow as tf
# TF 2.15 loads slim's batch norm (tf.compat.v1.layers) lazily from
# tf_keras.legacy_tf_layers, which tf-keras 2.15.1 keeps under src/.
import tf_keras.src.legacy_tf_layers  # pylint: disable=g-bad-import-order
sys.modules.setdefault('tf_keras.legacy_tf_layers',
                       tf_keras.src.legacy_tf_layers)
import tf_keras.src.legacy_tf_layers.normalization  # pylint: disable=g-bad-import-order
sys.modules.setdefault('tf_keras.legacy_tf_layers.normalization',
                       tf_keras.src.legacy_tf_layers.normalization)
import tf_slim as slim  # pylint: disable=g-bad-import-order
from tf_slim.nets import resnet_utils
from tf_slim.nets import resnet_v1

tf1 = tf.compat.v1

BATCH, SEQ, SIZE = 1, 5, 96
# Scaled-down widths (the committed test files); --full: the released ones.
TINY = {'vgg_width': 2, 'fc': 16, 'fc2': {'vggface_4096': 16,
                                          'vggface_2000': 10},
        'resnet_depths': (2, 4, 8, 16), 'gru': 8}
FULL = {'vgg_width': 64, 'fc': 4096, 'fc2': {'vggface_4096': 4096,
                                             'vggface_2000': 2000},
        'resnet_depths': (64, 128, 256, 512), 'gru': 128}
SIZES = dict(TINY)
STEP = {'affwildnet_vggface': 12000, 'affwildnet_resnet': 7000,
        'vggface_4096': 3000, 'vggface_2000': 4000}


def vgg_layers(width, fc):
  """The layer list of the released vggface*.py files, widths scaled."""
  c = [width * m for m in (1, 2, 4, 8, 8)]
  layers, cin = [], 3
  for i, n in enumerate((2, 2, 3, 3, 3)):
    for _ in range(n):
      layers.append(('conv', 3, 3, cin, c[i]))
      cin = c[i]
    layers.append(('pool', 2, 2, 2, 2))
  return layers + fc


def vgg_setup(image_batch, layers, batch, seq):
  """The released `VGGFace.setup` loop (conv SAME + bias + ReLU, max-pool
  SAME, FC by relu_layer / xw_plus_b, the GRU `rnn` layer)."""
  names, out = [], image_batch
  for layer in layers:
    kind = layer[0]
    name = '%s_%d' % (kind, sum(t.startswith(kind) for t in names) + 1)
    if kind == 'conv':
      with tf1.variable_scope(name):
        kernel = tf1.get_variable('weights', shape=list(layer[1:]))
        conv = tf.nn.conv2d(out, kernel, [1] * 4, padding='SAME')
        biases = tf1.get_variable('biases', [layer[4]])
        out = tf.nn.relu(tf.nn.bias_add(conv, biases))
    elif kind == 'pool':
      out = tf.nn.max_pool(out, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1],
                           padding='SAME')
    elif kind.startswith('linear'):
      num_out, relu = layer[1], layer[2]
      with tf1.variable_scope(name):
        if out.shape.ndims == 4:
          dim = int(np.prod(out.shape[1:]))
          out = tf.reshape(out, [batch * seq, dim])
        dim = int(out.shape[-1])
        weights = tf1.get_variable('weights', shape=[dim, num_out])
        biases = tf1.get_variable('biases', [num_out])
        op = tf1.nn.relu_layer if relu else tf1.nn.xw_plus_b
        out = op(out, weights, biases)
    elif kind == 'rnn':
      num_layers, num_units, num_out = layer[1:]
      with tf1.variable_scope(name):
        dim = int(out.shape[-1])
        feed = tf.reshape(out, [-1, seq, dim])
        cell = tf1.nn.rnn_cell.MultiRNNCell(
            [tf1.nn.rnn_cell.GRUCell(num_units) for _ in range(num_layers)])
        outputs, _ = tf1.nn.dynamic_rnn(cell, feed, dtype=tf.float32)
        net = tf.reshape(outputs, (batch * seq, num_units))
        weights = tf1.get_variable('weights_rnn', shape=[num_units, num_out])
        biases = tf1.get_variable('biases_rnn', [num_out])
        out = tf1.nn.xw_plus_b(net, weights, biases)
    names.append(name)
  return out


def resnet_gru(image_batch, batch, seq):
  """`affwildnet/resnet_gru.txt` (slim's resnet_v1_50 blocks, their
  bottleneck widths SIZES['resnet_depths'])."""
  d = SIZES['resnet_depths']
  blocks = [resnet_v1.resnet_v1_block('block1', base_depth=d[0], num_units=3,
                                      stride=2),
            resnet_v1.resnet_v1_block('block2', base_depth=d[1], num_units=4,
                                      stride=2),
            resnet_v1.resnet_v1_block('block3', base_depth=d[2], num_units=6,
                                      stride=2),
            resnet_v1.resnet_v1_block('block4', base_depth=d[3], num_units=3,
                                      stride=1)]
  gru_hidden = SIZES['gru']
  with slim.arg_scope(resnet_utils.resnet_arg_scope()):
    net, _ = resnet_v1.resnet_v1(image_batch, blocks, num_classes=None,
                                 is_training=False, scope='resnet_v1_50')
  with tf1.variable_scope('rnn'):
    cnn = tf.reshape(net, [batch, seq, -1])
    cell = tf1.nn.rnn_cell.MultiRNNCell(
        [tf1.nn.rnn_cell.GRUCell(gru_hidden) for _ in range(2)])
    outputs, _ = tf1.nn.dynamic_rnn(cell, cnn, dtype=tf.float32)
    outputs = tf.reshape(outputs, (batch * seq, gru_hidden))
    weights = tf1.get_variable('weights_output', shape=[gru_hidden, 2])
    biases = tf1.get_variable('biases_output', shape=[2])
    return tf1.nn.xw_plus_b(outputs, weights, biases)


def random_values(variables, rng):
  """He-scaled kernels, small biases, BN statistics with positive variance,
  GRU gate biases around TF's initial 1.0."""
  values = {}
  for v in variables:
    shape, name = v.shape.as_list(), v.op.name
    if name.endswith(('weights', 'kernel', 'weights_rnn', 'weights_output')):
      fan_in = int(np.prod(shape[:-1]))
      x = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    elif name.endswith('moving_variance'):
      x = rng.uniform(0.5, 2.0, shape)
    elif name.endswith('gamma'):
      x = rng.uniform(0.5, 1.5, shape)
    elif name.endswith('gates/bias'):
      x = 1.0 + 0.3 * rng.standard_normal(shape)
    else:  # biases, beta, moving_mean, candidate/bias
      x = 0.1 * rng.standard_normal(shape)
    values[name] = x.astype(np.float32)
  return values


def build(network, images):
  width, fc = SIZES['vgg_width'], SIZES['fc']
  if network == 'affwildnet_vggface':
    return vgg_setup(images, vgg_layers(width, [
        ('linear', fc, True), ('rnn', 2, SIZES['gru'], 2)]), BATCH, SEQ)
  if network == 'affwildnet_resnet':
    return resnet_gru(images, BATCH, SEQ)
  return vgg_setup(images, vgg_layers(width, [
      ('linear', fc, True), ('linear2', SIZES['fc2'][network], True),
      ('linear3', 2, False)]), BATCH, SEQ)


def write(network, frames, output, seed):
  folder = os.path.join(output, network)
  os.makedirs(folder, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default():
    images = tf1.placeholder(tf.float32, [BATCH * SEQ, SIZE, SIZE, 3])
    prediction = build(network, images)
    model_vars = tf1.global_variables()
    extra = []
    if network == 'affwildnet_vggface':
      # Training state as tf.train.AdamOptimizer leaves it in a checkpoint.
      step = tf1.train.get_or_create_global_step()
      extra = [step, tf1.get_variable('beta1_power', initializer=0.9),
               tf1.get_variable('beta2_power', initializer=0.999)]
      for v in model_vars[-2:]:
        for slot in ('Adam', 'Adam_1'):
          extra.append(tf1.get_variable(
              f'{v.op.name}/{slot}', initializer=tf.zeros(v.shape)))
    values = random_values(model_vars, np.random.default_rng(seed))
    saver = tf1.train.Saver(write_version=tf1.train.SaverDef.V2)
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      for v in model_vars:
        v.load(values[v.op.name], sess)
      if extra:
        extra[0].load(STEP[network], sess)
      x = (frames.reshape(BATCH * SEQ, SIZE, SIZE, 3).astype(np.float32)
           - 128.0) / 128.0
      out = sess.run(prediction, {images: x})
      prefix = os.path.join(folder, f'model.ckpt-{STEP[network]}')
      saver.save(sess, prefix, write_meta_graph=False,
                 write_state=False)
  with open(os.path.join(folder, 'checkpoint'), 'w') as f:
    name = f'model.ckpt-{STEP[network]}'
    f.write(f'model_checkpoint_path: "{name}"\n'
            f'all_model_checkpoint_paths: "{name}"\n')
  np.save(os.path.join(folder, 'tf_outputs.npy'), out.astype(np.float32))
  print(network, [v.op.name for v in model_vars][:3], '...',
        len(model_vars), 'variables; outputs', out.shape)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', default='tests/data/affwild_tf1')
  parser.add_argument('--full', action='store_true',
                      help='the released widths (~100-230 MB a network; '
                      'for checking an import at full size, never commit)')
  args = parser.parse_args()
  if args.full:
    SIZES.update(FULL)
  tf1.disable_eager_execution()
  os.makedirs(args.output, exist_ok=True)
  rng = np.random.default_rng(35)
  # Random 4 x 4 pixel blocks: every unit sees a useful range, and the
  # file compresses (the tests read it).
  coarse = rng.integers(0, 256, (BATCH, SEQ, SIZE // 4, SIZE // 4, 3))
  frames = np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3).astype(np.uint8)
  np.savez_compressed(os.path.join(args.output, 'frames.npz'), frames=frames)
  for seed, network in enumerate(STEP):
    write(network, frames, args.output, seed)


if __name__ == '__main__':
  main()
