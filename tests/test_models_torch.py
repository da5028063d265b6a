"""The Flax zoo against PyTorch references: imported weights, same outputs.

Needs the optional torch extra (CPU build); skipped without it.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import checkpointing
from affect_jax import import_weights
from affect_jax import models
from affect_jax.errors import AffectJaxError
from affect_jax.models import torch_import
from tests import torch_reference as ref_lib


def _flax_from_torch(arch, ref):
  sd = ref.state_dict()
  variables = models.load_torch_state_dict(arch, sd)
  kwargs = torch_import.build_kwargs_from_state_dict(
      arch, torch_import.normalise_state_dict(sd))
  return models.build(arch, **kwargs), variables


def _compare(arch, ref, size, batch=2, seed=0, randomise_bn=True):
  """Max |torch - flax| of the logits on one random NCHW / NHWC input."""
  if randomise_bn:
    ref_lib.randomise_batchnorm(ref, seed)
  x = torch.randn(batch, 3, size, size,
                  generator=torch.Generator().manual_seed(seed))
  with torch.no_grad():
    expected = ref(x).numpy()
  model, variables = _flax_from_torch(arch, ref)
  got = jax.jit(model.apply)(variables, jnp.asarray(
      x.numpy().transpose(0, 2, 3, 1)))
  assert got.shape == expected.shape
  assert np.abs(expected).max() > 1e-3  # Not trivially all-zero.
  return float(np.abs(np.asarray(got) - expected).max())


# Reduced widths (fast) and the real sizes (the shapes of torchvision's
# published files) at small inputs. Input sizes are chosen so torch's
# adaptive average pooling runs both its repeating (1 -> 7) and its uneven
# (3 -> 6) path.
@pytest.mark.parametrize('arch, make, size', [
    ('resnet50', functools.partial(ref_lib.resnet50, width=8,
                                   stage_sizes=(2, 1, 1, 1), num_classes=10),
     64),
    ('vgg16', functools.partial(ref_lib.vgg16, width=8, fc_hidden=32,
                                num_classes=10), 64),
    ('vgg_face', functools.partial(ref_lib.vgg16, width=8, fc_hidden=16,
                                   num_classes=2622), 32),
    ('alexnet', functools.partial(ref_lib.alexnet, width=16, fc_hidden=32,
                                  num_classes=10), 127),
    ('resnet50', ref_lib.resnet50, 64),
    ('vgg16', ref_lib.vgg16, 32),
    ('alexnet', ref_lib.alexnet, 63),
])
def test_imported_logits_match_torch(arch, make, size):
  torch.manual_seed(0)
  assert _compare(arch, make(), size) <= 1e-4


def test_real_size_state_dicts_convert_with_torchvision_shapes():
  # Shapes only: the published files' key sets map onto the Flax trees
  # with the documented parameter counts.
  for arch, make, count in [('resnet50', ref_lib.resnet50, 25_557_032),
                            ('alexnet', ref_lib.alexnet, 61_100_840)]:
    variables = models.load_torch_state_dict(arch, make().state_dict())
    n = sum(x.size for x in jax.tree.leaves(variables['params']))
    assert n == count


@pytest.mark.parametrize('kind', ['LSTM', 'GRU'])
def test_recurrent_matches_torch(kind):
  torch.manual_seed(0)
  rnn = getattr(torch.nn, kind)(6, 5, num_layers=2, batch_first=True)
  x = torch.randn(3, 9, 6)
  with torch.no_grad():
    expected = rnn(x)[0].numpy()
  sd = rnn.state_dict()
  if kind == 'LSTM':
    params = models.lstm_params_from_torch(sd)
    module = models.LSTM(hidden_size=5, num_layers=2, unroll=3)
  else:
    params = models.gru_params_from_torch(sd)
    module = models.GRU(hidden_size=5, num_layers=2, unroll=3)
  apply = jax.jit(module.apply)
  got = apply({'params': params}, x.numpy())
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)

  # Variable lengths: valid steps equal torch on each unpadded sequence,
  # whatever the padding holds.
  lengths = [9, 4, 1]
  mask = (np.arange(9)[None] < np.array(lengths)[:, None]).astype(np.float32)
  garbage = np.where(mask[..., None] > 0, x.numpy(), 1e3)
  got = apply({'params': params}, garbage, mask=mask)
  for n, length in enumerate(lengths):
    with torch.no_grad():
      alone = rnn(x[n:n + 1, :length])[0][0].numpy()
    np.testing.assert_allclose(got[n, :length], alone, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got[n, length:], 0.0)

  # Gradients (the time loop's own backward) against torch's autograd: of
  # every weight and of the input.
  cot = torch.randn(3, 9, 5)
  x.requires_grad_()
  (rnn(x)[0] * cot).sum().backward()
  grads = dict(rnn.named_parameters())
  torch_grads = (models.lstm_params_from_torch if kind == 'LSTM'
                 else models.gru_params_from_torch)(
                     {k: v.grad for k, v in grads.items()})
  if kind == 'LSTM':  # One bias for torch's two; its gradient is each's.
    for k in range(2):
      torch_grads[f'ih_l{k}']['bias'] = grads[f'bias_ih_l{k}'].grad.numpy()
  g_params, g_x = jax.jit(jax.grad(
      lambda p, x: jnp.sum(module.apply({'params': p}, x) * cot.numpy()),
      argnums=(0, 1)))(params, x.detach().numpy())
  np.testing.assert_allclose(g_x, x.grad.numpy(), atol=1e-5, rtol=0)
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5,
                                 rtol=1e-5), g_params, torch_grads)


def test_resnet_lstm_composite_matches_torch():
  torch.manual_seed(0)
  ref = ref_lib.randomise_batchnorm(ref_lib.ResNetLSTM(
      num_outputs=3, hidden=6, layers=2, width=4, stage_sizes=(1, 1)))
  frames = torch.randn(2, 3, 3, 32, 32)
  with torch.no_grad():
    expected = ref(frames).numpy()
  model = models.build('resnet50_lstm', num_outputs=3, lstm_hidden=6,
                       width=4, stage_sizes=(1, 1))
  sd = {k[len('trunk.'):]: v for k, v in ref.state_dict().items()
        if k.startswith('trunk.')}
  trunk = torch_import.trunk_variables(
      'resnet50', models.load_torch_state_dict('resnet50', sd))
  rnn = {k[len('rnn.'):]: v for k, v in ref.state_dict().items()
         if k.startswith('rnn.')}
  variables = {
      'params': {'trunk': trunk['params'],
                 'rnn': models.lstm_params_from_torch(rnn),
                 'head': {'kernel': ref.head.weight.detach().numpy().T,
                          'bias': ref.head.bias.detach().numpy()}},
      'batch_stats': {'trunk': trunk['batch_stats']}}
  got = jax.jit(model.apply)(variables, frames.numpy().transpose(
      0, 1, 3, 4, 2))
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------- the importer ---


def test_import_weights_initialises_the_trunk_of_a_composite(tmp_path):
  torch.manual_seed(0)
  ref = ref_lib.randomise_batchnorm(
      ref_lib.resnet50(width=4, stage_sizes=(1, 2), num_classes=10))
  pth = str(tmp_path / 'tiny_resnet.pth')
  # A DataParallel-style prefix, as training scripts often save.
  torch.save({'module.' + k: v for k, v in ref.state_dict().items()}, pth)
  out = str(tmp_path / 'imported')
  meta = import_weights.import_weights('resnet50', pth, out)
  assert meta['trunk_kwargs'] == {'width': 4, 'stage_sizes': [1, 2]}

  loaded, loaded_meta = checkpointing.restore_best_variables(out)
  assert loaded_meta['arch'] == 'resnet50'
  model = models.build('resnet50_lstm', num_outputs=2, lstm_hidden=4,
                       width=4, stage_sizes=(1, 2))
  fresh = jax.eval_shape(functools.partial(model.init, train=False),
                         jax.random.PRNGKey(0),
                         jnp.zeros((1, 2, 32, 32, 3)))
  for c in ('params', 'batch_stats'):
    assert set(loaded[c]) == {'trunk'}
    assert (jax.tree.structure(loaded[c]['trunk'])
            == jax.tree.structure(fresh[c]['trunk']))
    assert (jax.tree.map(np.shape, loaded[c]['trunk'])
            == jax.tree.map(lambda s: s.shape, fresh[c]['trunk']))
  expected = models.load_torch_state_dict('resnet50', ref.state_dict())
  np.testing.assert_array_equal(
      loaded['params']['trunk']['layer2_1']['conv2']['kernel'],
      expected['params']['layer2_1']['conv2']['kernel'])
  np.testing.assert_array_equal(
      loaded['batch_stats']['trunk']['bn1']['var'],
      ref.bn1.running_var.numpy())

  with pytest.raises(AffectJaxError, match='already holds'):
    import_weights.import_weights('resnet50', pth, out)


def test_import_weights_vgg_trunk_has_no_classifier(tmp_path):
  ref = ref_lib.vgg16(width=4, fc_hidden=8, num_classes=2622)
  pth = str(tmp_path / 'vgg_face.pth')
  torch.save(ref.state_dict(), pth)
  import_weights.import_weights('vgg_face', pth, str(tmp_path / 'out'))
  loaded, meta = checkpointing.restore_best_variables(str(tmp_path / 'out'))
  assert meta['arch'] == 'vgg_face'
  model = models.build('affwildnet', width=4, fc_features=(8,))
  fresh = jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.PRNGKey(0),
      jnp.zeros((1, 2, 32, 32, 3)), landmarks=jnp.zeros((1, 2, 68, 2)))
  assert set(loaded) == {'params'}
  assert (jax.tree.map(np.shape, loaded['params']['trunk'])
          == jax.tree.map(lambda s: s.shape, fresh['params']['trunk']))


def test_import_errors_name_the_file_and_key(tmp_path):
  sd = ref_lib.alexnet(width=16, fc_hidden=8, num_classes=3).state_dict()
  with pytest.raises(AffectJaxError, match='does not exist'):
    import_weights.read_torch_state_dict(str(tmp_path / 'nope.pth'))
  bad = tmp_path / 'bad.pth'
  bad.write_bytes(b'not a zip file')
  with pytest.raises(AffectJaxError, match='bad.pth'):
    import_weights.read_torch_state_dict(str(bad))

  missing = dict(sd)
  del missing['features.3.bias']
  with pytest.raises(AffectJaxError, match=r"missing key 'features.3.bias'"):
    models.load_torch_state_dict('alexnet', missing, source='x.pth')
  extra = dict(sd, **{'features.99.weight': torch.zeros(1)})
  with pytest.raises(AffectJaxError, match=r'unexpected keys.*features.99'):
    models.load_torch_state_dict('alexnet', extra)
  wrong = dict(sd, **{'features.6.weight': torch.zeros(48, 48, 3, 3)})
  with pytest.raises(AffectJaxError, match=r"'features.6.weight' has shape"):
    models.load_torch_state_dict('alexnet', wrong)
  with pytest.raises(AffectJaxError, match='resnet50'):
    models.load_torch_state_dict('alexnet_gru', sd)
  with pytest.raises(AffectJaxError, match='conv1.weight'):
    models.load_torch_state_dict('resnet50', sd)


def test_torchvision_state_dicts_convert_as_they_are():
  torchvision = pytest.importorskip('torchvision')
  for arch in ('resnet50', 'alexnet'):
    tv = getattr(torchvision.models, arch)(weights=None)
    ours = getattr(ref_lib, arch)()
    assert list(tv.state_dict()) == list(ours.state_dict())
    models.load_torch_state_dict(arch, tv.state_dict())
  tv = torchvision.models.vgg16(weights=None)
  assert list(tv.state_dict()) == list(ref_lib.vgg16().state_dict())


@pytest.mark.skipif(not os.environ.get('AFFECT_JAX_RESNET50_PTH'),
                    reason='set AFFECT_JAX_RESNET50_PTH to a torchvision '
                    'resnet50 .pth to check a published file')
def test_published_resnet50_file(tmp_path):
  path = os.environ['AFFECT_JAX_RESNET50_PTH']
  ref = ref_lib.resnet50()
  ref.load_state_dict(import_weights.read_torch_state_dict(path))
  assert _compare('resnet50', ref.eval(), 64, randomise_bn=False) <= 1e-4
