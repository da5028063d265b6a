"""benchmarks/: the JAX and PyTorch models compute the same function, and
every script prints its table in a tiny configuration (no timing checks)."""

import copy
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import train_step as ts


def _torch_grads_as_jax(name, model):
  """The torch model's gradients, laid out as the Flax model's params."""
  grads = copy.deepcopy(model)
  with torch.no_grad():
    for (pname, p), (_, g) in zip(grads.named_parameters(),
                                  model.named_parameters()):
      # The Flax LSTM keeps one bias, the sum of torch's two, whose gradient
      # equals each of theirs: count it once.
      zero = 'rnn.bias_hh' in pname and name == 'resnet50_lstm'
      p.copy_(torch.zeros_like(p) if zero or g.grad is None else g.grad)
  return ts.jax_variables(name, grads)['params']


@pytest.mark.parametrize('name', ts.MODELS)
def test_jax_and_torch_models_compute_the_same_loss_and_gradients(name):
  shape = ts.dataclasses.replace(ts.TINY, dropout=0.0, batch=2, frames=3)
  batch = ts.make_batch(shape, seed=1)
  tm = ts.torch_model(name, shape, seed=1)
  variables = ts.jax_variables(name, tm)

  frames = torch.from_numpy(batch['frames']).permute(0, 1, 4, 2, 3)
  args = (frames,) if name == 'resnet50_lstm' else (
      frames, torch.from_numpy(batch['landmarks']))
  loss_t = ts.torch_ccc_loss(tm(*args), torch.from_numpy(batch['targets']))
  loss_t.backward()

  model = ts.jax_model(name, shape)
  loss_fn = ts.jax_loss_fn(model, variables.get('batch_stats', {}),
                           batch, jax.random.PRNGKey(0))
  (loss_j, _), grads_j = jax.jit(jax.value_and_grad(
      loss_fn, has_aux=True))(variables['params'])

  np.testing.assert_allclose(float(loss_j), loss_t.item(), rtol=1e-5)
  grads_t = _torch_grads_as_jax(name, tm)
  flat_j = dict(jax.tree_util.tree_leaves_with_path(grads_j))
  flat_t = dict(jax.tree_util.tree_leaves_with_path(grads_t))
  assert flat_j.keys() == flat_t.keys()
  for path, gj in flat_j.items():
    gt = np.asarray(flat_t[path])
    scale = np.abs(gt).max() + 1e-8
    assert np.abs(np.asarray(gj) - gt).max() <= 1e-3 * scale, path


def test_train_step_prints_table_and_ratio(capsys, tmp_path):
  out = tmp_path / 'r.json'
  ts.main(['--tiny', '--models', 'all', '--steps', '1', '--warmup', '1',
           '--json', str(out)])
  printed = capsys.readouterr().out
  assert '| model: variant' in printed
  assert 'PyTorch eager channels-last' in printed
  assert printed.strip().splitlines()[-1].startswith(
      'jax_over_torch_train_throughput=')
  result = json.loads(out.read_text())
  assert {r['model'] for r in result['rows']} == set(ts.MODELS)
  assert {'XLA_FLAGS', 'GLIBC_TUNABLES', 'jax'} <= set(result['environment'])


def test_train_step_memory_in_a_child_process(capsys, tmp_path):
  out = tmp_path / 'r.json'
  ts.main(['--tiny', '--steps', '1', '--warmup', '1', '--no_torch',
           '--memory', '--json', str(out)])
  rows = json.loads(out.read_text())['rows']
  assert [r['variant'] for r in rows] == ['JAX/Flax jit']
  assert all(r['peak_memory_mb'] is not None for r in rows)
  assert 'XLA MB' in capsys.readouterr().out


def test_train_step_each_variant_alone_in_its_process(capsys, tmp_path):
  out = tmp_path / 'r.json'
  ts.main(['--tiny', '--steps', '2', '--warmup', '1', '--no_torch',
           '--separate', '--rounds', '2', '--json', str(out)])
  rows = json.loads(out.read_text())['rows']
  assert [r['variant'] for r in rows] == ['JAX/Flax jit']
  # Two rounds of two timed steps; the row's time is the rounds' median.
  assert len(rows[0]['times_s']) == 4 and len(rows[0]['round_ms']) == 2
  assert rows[0]['ms_per_step'] == pytest.approx(
      sum(rows[0]['round_ms']) / 2)
  assert rows[0]['compile_s'] > 0
  assert rows[0]['minor_faults_per_step'] >= 0
  printed = capsys.readouterr().out
  assert 'each variant alone in its own process, 2 rounds' in printed
  with pytest.raises(SystemExit):  # Rounds only for separate processes.
    ts.main(['--tiny', '--no_torch', '--rounds', '2'])


def test_train_step_variants_in_their_processes_step_in_turn(capsys,
                                                             tmp_path):
  out = tmp_path / 'r.json'
  ts.main(['--tiny', '--steps', '2', '--warmup', '1', '--no_torch',
           '--no_donate', '--lockstep', '--json', str(out)])
  rows = json.loads(out.read_text())['rows']
  assert [r['variant'] for r in rows] == [
      'JAX/Flax jit', 'JAX/Flax jit, state not donated']
  for row in rows:  # One timed step per round; the row's time their median.
    assert len(row['times_s']) == 2 and len(row['round_ms']) == 2
    assert row['ms_per_step'] == pytest.approx(sum(row['round_ms']) / 2)
    assert row['compile_s'] > 0 and row['minor_faults_per_step'] >= 0
  assert '(lockstep)' in capsys.readouterr().out
  with pytest.raises(SystemExit):  # Two ways of timing: only one at a time.
    ts.main(['--tiny', '--no_torch', '--lockstep', '--separate'])


def test_timed_call_counts_the_step_and_its_page_faults():
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  buffers = []
  timed = harness.timed_call(lambda: buffers.append(np.ones(1 << 24)))
  assert set(timed) == {'times_s', 'minor_faults', 'system_s'}
  assert len(buffers) == 1 and timed['times_s'] > 0
  # 128 MiB written once: the kernel maps it page by page (>= 2 MiB pages).
  assert timed['minor_faults'] >= 64


def test_warm_up_calls_the_step_warmup_times_and_times_the_first():
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  calls = []
  first_s = harness.warm_up(lambda: calls.append(1), 3)
  assert len(calls) == 3 and first_s >= 0
  harness.warm_up(lambda: calls.append(1), 0)  # At least the first call.
  assert len(calls) == 4


def test_interleaved_keeps_each_group_apart_and_interleaves_within():
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  calls = []
  steps = {name: (lambda name=name: calls.append(name))
           for name in ('JAX a', 'torch NCHW', 'JAX b', 'PyTorch eager')}
  timed = harness.interleaved(steps, rounds=2, warmup=1,
                              group=harness.framework)
  # JAX's variants (warm-up, then two rounds in turn), then torch's.
  assert calls == ['JAX a', 'JAX b'] * 3 + ['torch NCHW', 'PyTorch eager'] * 3
  assert list(timed) == list(steps)  # The caller's order.
  assert all(len(t['times_s']) == 2 and t['median_s'] >= 0
             for t in timed.values())
  calls.clear()
  harness.interleaved(steps, rounds=1, warmup=1)  # No group: all in turn.
  assert calls == list(steps) * 2
  assert harness.framework('torch.nn.LSTM') == 'torch'
  assert harness.framework('JAX/Flax jit') == 'jax'


def test_round_ratios_per_round_against_the_fastest_torch():
  rows = [{'framework': 'jax', 'variant': 'JAX/Flax jit',
           'round_ms': [100.0, 200.0]},
          {'framework': 'torch', 'variant': 'a', 'round_ms': [50.0, 400.0]},
          {'framework': 'torch', 'variant': 'b', 'round_ms': [80.0, 100.0]}]
  assert ts.round_ratios(rows) == pytest.approx([0.5, 0.5])
  assert ts.round_ratios([dict(r, round_ms=[]) for r in rows]) == []


@pytest.mark.parametrize('script', ['inference', 'layers'])
def test_torch_only_benchmarks_say_how_to_install_it(script, monkeypatch,
                                                     capsys):
  import importlib  # pylint: disable=g-import-not-at-top
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'benchmarks.{script}')
  monkeypatch.setattr(harness, 'torch_available', lambda: False)
  with pytest.raises(SystemExit):
    module.main(['--tiny'])
  assert 'pip install -e ".[torch]"' in capsys.readouterr().err


def test_inference_prints_table(capsys):
  from benchmarks import inference
  inference.main(['--tiny', '--models', 'all', '--steps', '1',
                  '--warmup', '1'])
  printed = capsys.readouterr().out
  assert '| model: variant' in printed
  assert printed.strip().splitlines()[-1].startswith(
      'jax_over_torch_inference_throughput=')


def test_scaling_prints_table(capsys):
  from benchmarks import scaling
  scaling.main(['--tiny', '--devices', '2', '--batch', '2', '--frames',
                '2', '--steps', '1', '--warmup', '1', '--model_axis', '2'])
  printed = capsys.readouterr().out
  assert '| devices' in printed
  assert re.search(r'\| 2 +\| +1 x 2 \|', printed), printed


def test_input_pipeline_prints_table(capsys, tiny_data_dir):
  from benchmarks import input_pipeline
  input_pipeline.main(['--builder_config', 'tiny', '--data_dir',
                       tiny_data_dir, '--window', '4', '--image_size', '24',
                       '--resize_size', '28', '--batches', '2', '--workers',
                       '0,1', '--threads', '1', '--model_frames_per_s', '10'])
  printed = capsys.readouterr().out
  assert '| 0 workers' in printed
  assert 'training step consumes' in printed


def test_prepare_prints_table(capsys):
  from benchmarks import prepare
  prepare.main(['--videos', '2', '--frames', '8', '--height', '120',
                '--width', '160', '--detectors', 'none', '--workers', '0'])
  printed = capsys.readouterr().out
  assert '| none' in printed


def test_layers_prints_table(capsys):
  from benchmarks import layers
  layers.main(['--tiny', '--batch', '2', '--steps', '1', '--warmup', '1'])
  printed = capsys.readouterr().out
  assert 'conv 3x3 64->64: JAX XLA default (YNNPACK)' in printed
  assert 'max-pool 3x3/2: JAX int8 argmax (pooling)' in printed
  assert 'GRU 2x8, T=6: torch.nn.GRU' in printed


def test_remat_prints_table(capsys):
  from benchmarks import remat
  remat.main(['--tiny', '--steps', '1', '--warmup', '1'])
  printed = capsys.readouterr().out
  assert '| remat=False' in printed and '| remat=True' in printed
  assert 'remat_memory_ratio=' in printed


def test_profile_step_shares_out_the_wall_time():
  from benchmarks import profile_step as ps
  # A loop (0-100) whose body runs 10-30 and 50-60 on the same thread.
  pieces = ps._leaf_segments([(0, 100, 'loop'), (10, 30, 'a'), (50, 60, 'b')])
  assert sorted(pieces) == [(0, 10, 'loop'), (10, 30, 'a'), (30, 50, 'loop'),
                            (50, 60, 'b'), (60, 100, 'loop')]
  # Two threads: c and d overlap for 10 ns (split), nothing runs 40-70 (to d,
  # the last to end: a convolution still computing), then e.
  got = ps.attribute([(0, 20, 'c'), (10, 40, 'd'), (70, 80, 'e')])
  assert got == {'c': 15.0, 'd': 55.0, 'e': 10.0}
  assert sum(got.values()) == 80
  # The idle time goes to the last asynchronous thunk that ended, if any.
  assert ps.attribute([(0, 20, 'c'), (10, 40, 'd'), (70, 80, 'e')],
                      frozenset({'c'})) == {'c': 45.0, 'd': 25.0, 'e': 10.0}


def test_profile_step_kinds():
  from benchmarks import profile_step as ps
  bwd = 'jit(step)/transpose(jvp(CNNRNN))/trunk/layer1_0/'
  assert ps.jax_kind(bwd + 'bn2/reduce_sum', 'fusion') == 'BatchNorm bwd'
  assert ps.jax_kind(bwd + 'conv3/dot_general', 'fusion') == 'conv bwd'
  assert ps.jax_kind(bwd + 'select_n', 'fusion') == 'ReLU/add bwd'
  assert ps.jax_kind('jit(step)/jvp(CNNRNN)/trunk/conv1/conv_general_dilated',
                     'convolution') == 'conv fwd'
  assert ps.jax_kind('jit(step)/jvp(CNNRNN)/rnn/while/body/dot_general',
                     'dot') == 'LSTM fwd'
  assert ps.jax_kind('jit(step)/add', 'fusion') == 'Adam'
  # The pools' HLO, forward and backward, is named so (pooling.SCOPE).
  from affect_jax.models import pooling  # pylint: disable=g-import-not-at-top
  loss = lambda x: (pooling.max_pool_3x3_s2(x) ** 2 +
                    pooling.max_pool_2x2(x)[:, :5, :5]).sum()
  hlo = jax.jit(jax.grad(loss)).lower(jnp.ones((1, 10, 10, 3))).compile()
  ops = ps._hlo_ops(hlo.as_text()).values()  # pylint: disable=protected-access
  pool = [(ps.jax_kind(op, code), 'transpose(' in op) for code, op in ops
          if pooling.SCOPE in op]
  assert {kind for kind, _ in pool} <= {'max-pool', 'copies/layout'}
  assert {bwd for kind, bwd in pool if kind == 'max-pool'} == {False, True}
  # The strided convolution's CPU input gradient runs under `cond/branch_0_fun`
  # (lax.platform_dependent) inside the conv's scope: still a convolution.
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from affect_jax.models import strided_conv  # pylint: disable=g-import-not-at-top
  class Block(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Conv(4, (3, 3), strides=2, use_bias=False, name='conv2',
                     conv_general_dilated=strided_conv.conv_general_dilated)(x)

  conv = Block()
  x = jnp.ones((1, 9, 9, 3))
  params = conv.init(jax.random.PRNGKey(0), x)
  hlo = jax.jit(jax.grad(lambda p, x: conv.apply(p, x).sum(), argnums=(0, 1))
                ).lower(params, x).compile()
  kinds = {ps.jax_kind(op, code) for code, op in
           ps._hlo_ops(hlo.as_text()).values()  # pylint: disable=protected-access
           if 'branch_' in op}
  assert kinds and kinds <= {'conv bwd', 'copies/layout'}, kinds
  assert ps.torch_kind('aten::convolution_backward') == 'conv bwd'
  assert ps.torch_kind('aten::native_batch_norm') == 'BatchNorm fwd'
  assert ps.torch_kind('aten::_foreach_addcdiv_') == 'Adam'


def test_profile_step_prints_table(capsys, tmp_path):
  from benchmarks import profile_step as ps
  out = tmp_path / 'p.json'
  ps.main(['--tiny', '--cores', '1', '--steps', '1', '--warmup', '1',
           '--json', str(out)])
  printed = capsys.readouterr().out
  assert '| conv fwd' in printed and '| step (wall)' in printed
  assert 'JAX 1 core' in printed and 'torch CL 1 core' in printed
  runs = json.loads(out.read_text())['runs']
  assert {r['framework'] for r in runs} == {'jax', 'torch'}
  jax_run = next(r for r in runs if r['framework'] == 'jax')
  # The kinds share out the profiled wall time of the JAX step's thunks.
  assert 0 < sum(jax_run['kinds_ms'].values()) <= 1.05 * jax_run['step_ms']


def test_steal_share_and_cpu_model_from_proc(monkeypatch):
  from benchmarks import harness
  # user nice system idle iowait irq softirq steal, in ticks.
  start = [100, 0, 50, 800, 0, 0, 0, 50]
  monkeypatch.setattr(harness, '_cpu_times',
                      lambda: [160, 0, 70, 900, 0, 0, 0, 70])
  # 20 of the 200 ticks since `start` were stolen.
  assert harness.steal_share(start) == pytest.approx(0.1)
  monkeypatch.setattr(harness, '_cpu_times', lambda: None)
  assert harness.steal_share(start) is None
  monkeypatch.setattr(harness, '_cpu_times', lambda: start)
  assert harness.steal_share(start) is None  # No time has passed.
  assert harness.cpu_model()  # A name on any machine.


def test_conv_parts_finds_the_trunks_convolutions():
  from benchmarks import conv_parts
  convs = conv_parts.trunk_convs(2, 150)
  # ResNet-50: the stem, 3 per bottleneck x 16, 4 projection shortcuts.
  assert sum(count for _, _, count in convs) == 53
  names = [conv_parts.describe_conv(m, s)[0] for m, s, _ in convs]
  assert names[0] == '7x7/2 150x150x3->64'
  assert '3x3/2 38x38x128->128' in names and '1x1/2 38x38x256->512' in names
  assert len(set(names)) == len(names) == 23


def test_conv_parts_torch_computes_the_same_three_parts():
  from benchmarks import conv_parts
  torch = pytest.importorskip('torch')
  for module, shape, _ in conv_parts.trunk_convs(2, 32, width=4,
                                                 stage_sizes=(1, 1)):
    arrays = conv_parts.operands(module, shape)
    ours = conv_parts.jax_parts(module, *arrays)
    theirs = conv_parts.torch_parts(module, *arrays)
    as_nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours['fwd'](), as_nhwc(theirs['fwd']()),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours['dx'](), as_nhwc(theirs['dx']()),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(  # OIHW -> HWIO.
        ours['dw']()['params']['kernel'],
        theirs['dw']().detach().permute(2, 3, 1, 0).numpy(),
        rtol=1e-4, atol=1e-4)
    assert isinstance(theirs['fwd'](), torch.Tensor)


def test_conv_parts_prints_table(capsys, tmp_path):
  from benchmarks import conv_parts
  out = tmp_path / 'c.json'
  conv_parts.main(['--tiny', '--batch', '2', '--steps', '1', '--warmup', '1',
                   '--json', str(out)])
  printed = capsys.readouterr().out
  assert '| total (x count; no stem dx)' in printed and 'JAX / torch by part' in printed
  result = json.loads(out.read_text())
  assert sum(r['count'] for r in result['rows']) == 9  # 1 + 2 x 3 + 2.
  assert result['totals_ms']['jax dw'] > 0


def test_onednn_conv_says_how_to_install_onednn(monkeypatch, capsys):
  from benchmarks import onednn_conv
  monkeypatch.setattr(onednn_conv, 'onednn_paths', lambda: None)
  with pytest.raises(SystemExit):
    onednn_conv.main(['--tiny', '--no_step'])
  assert onednn_conv.INSTALL in capsys.readouterr().err


def test_onednn_paths_finds_a_debian_layout_and_needs_the_header(
    tmp_path, monkeypatch):
  from benchmarks import onednn_conv
  lib_dir = tmp_path / 'lib' / 'x86_64-linux-gnu'
  lib_dir.mkdir(parents=True)
  for version in ('2', '3'):
    (lib_dir / f'libdnnl.so.{version}').write_bytes(b'')
  monkeypatch.setenv('ONEDNN_PREFIX', str(tmp_path))
  assert onednn_conv.onednn_paths() is None  # A library without headers.
  header = tmp_path / 'include' / 'oneapi' / 'dnnl' / 'dnnl.hpp'
  header.parent.mkdir(parents=True)
  header.write_text('')
  assert onednn_conv.onednn_paths() == (str(tmp_path / 'include'),
                                        str(lib_dir / 'libdnnl.so.3'))


def test_onednn_convolutions_match_lax_values_and_gradients(tmp_path):
  from benchmarks import onednn_conv
  if onednn_conv.onednn_paths() is None:
    pytest.skip(f'oneDNN not installed ({onednn_conv.INSTALL})')
  rows = onednn_conv.check(2, 32)  # All 23 shapes of the trunk, small.
  assert len(rows) == 23
  for row in rows:
    assert max(row['y'], row['dx'], row['dw']) < 1e-4, row
  # A non-square padding and a stride the trunk does not have.
  onednn_conv.register()
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, 9, 11, 24), np.float32))
  w = jnp.asarray(rng.standard_normal((3, 3, 24, 20), np.float32))
  pads = ((0, 2), (1, 0))
  ours, vjp = jax.vjp(lambda x, w: onednn_conv.conv(x, w, 3, pads), x, w)
  ref, ref_vjp = jax.vjp(lambda x, w: onednn_conv.lax_conv(x, w, 3, pads),
                         x, w)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
  g = jnp.ones_like(ref)
  for a, b in zip(vjp(g), ref_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_predict_speed_prints_table(capsys):
  """Each stage alone and the whole (in a child process), quick model."""
  from benchmarks import predict_speed
  predict_speed.main(['--models=quick', '--minutes=0.01', '--batch_sizes=2',
                      '--size=160x120', '--fps=25', '--faces_frames=5',
                      '--model_seconds=0.1'])
  printed = capsys.readouterr().out
  row = next(l for l in printed.splitlines() if l.startswith('| quick'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  assert cells[:3] == ['quick', '2', '0.01']
  assert all(float(c) > 0 for c in cells[3:7])  # decode, faces, model, whole
  assert cells[8] in ('decode', 'faces', 'model') and float(cells[10]) > 100
  assert 'cores, load' in printed
