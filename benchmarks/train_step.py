"""Training-step throughput of the paper models, JAX/Flax against PyTorch.

  python benchmarks/train_step.py                   # ResNet-50 + LSTM, CPU
  python benchmarks/train_step.py --models all --xla_default --torch_compile
  python benchmarks/train_step.py --frames 150 --dtype bfloat16   # a GPU
  taskset -c 0 python benchmarks/train_step.py      # one core, both sides
  python benchmarks/train_step.py --separate --rounds 3   # the CPU headline
  python benchmarks/train_step.py --lockstep --steps 9   # steps in turn

One optimisation step (forward, CCC loss, backward, Adam) of
- `resnet50_lstm`: RealEyes (tzirakis2019): ResNet-50 per frame -> 2-layer
  LSTM(256) -> FC 2;
- `affwildnet_vgg_face` / `affwildnet_resnet50`: AffWildNet (kollias2019
  Table 8): VGG-Face conv part (or ResNet-50) -> [features, 68 landmarks]
  -> FC 4096 (1500) + dropout -> 2-layer GRU(128) -> FC 2,
written once in JAX/Flax (`affect_jax.models`, `affect_jax.losses.ccc_loss`,
optax Adam, one jitted step with donated state) and once in plain idiomatic
PyTorch (tests/torch_reference.py: torchvision-named trunk, torch.nn.LSTM /
GRU, torch.optim.Adam): eager NCHW, eager channels-last, optionally
`torch.compile` (channels-last) and, on a GPU, AMP. The JAX model starts
from the torch model's weights, and tests/test_benchmarks.py checks that the
two compute the same loss and gradients, so the comparison is like for like.

By default the variants run in one process on the same batch (median of
`--steps` after `--warmup`), each framework's interleaved among themselves,
JAX's before PyTorch's (`--call_by_call`: all in turn); with `--separate`
each variant runs alone in a fresh process (in one process JAX pays page
faults that it does not pay alone), and `--rounds R` repeats that sequence
R times, every other round reversed, reporting each variant's median over
rounds and the ratio per round, so that a slow phase of the machine hits
both frameworks. With `--lockstep` the variants' processes are all started
(and warmed up) first and then take one step each in turn, every other
round reversed: separate processes, and the machine's drift over seconds
shared alike. The table gives ms/step, steps/s, frames/s, peak memory (on
a GPU the device's peak; on CPU, with --memory, the growth of resident
memory over two steps of the variant run alone in a fresh process), XLA's
own buffer total for the JAX step, the compilation time (JAX, ahead of
time) and first-step time, and XLA's FLOP count of the step with the
achieved FLOP/s (MFU against the device's bf16 peak on a GPU).
`--xla_default` adds the JAX step compiled with XLA's own CPU convolution
setting (YNNPACK), which `affect_jax.xla_flags` replaces. The
last line, `jax_over_torch_train_throughput=R`, is JAX frames/s over the
fastest PyTorch variant's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import hugepages
if __name__ == '__main__':  # As affect_jax.main; for both frameworks.
  hugepages.use_huge_pages()
import affect_jax  # Sets the XLA flag before JAX starts its backend.
from affect_jax import losses
from affect_jax import models
from affect_jax import xla_flags
from benchmarks import harness
from benchmarks.table import print_table

import jax
import jax.numpy as jnp
import optax

MODELS = ('resnet50_lstm', 'affwildnet_vgg_face', 'affwildnet_resnet50')
NUM_OUTPUTS = 2  # valence, arousal


@dataclasses.dataclass(frozen=True)
class Shape:
  """The benchmark's model and batch sizes (defaults: the real models)."""
  batch: int = 2
  frames: int = 16
  size: int = 150
  width: int = 64
  stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
  lstm_hidden: int = 256
  gru_hidden: int = 128
  fc: int | None = None  # None: AffWildNet's 4096 (VGG) / 1500 (ResNet).
  dropout: float = 0.5


TINY = Shape(batch=1, frames=2, size=32, width=4, stage_sizes=(1, 1),
             lstm_hidden=8, gru_hidden=8, fc=16)


def _fc(name: str, shape: Shape) -> int:
  if shape.fc is not None:
    return shape.fc
  return 1500 if name == 'affwildnet_resnet50' else 4096


def make_batch(shape: Shape, seed: int = 0) -> dict[str, np.ndarray]:
  """Normalised NHWC frames, landmarks and (valence, arousal) targets."""
  rng = np.random.default_rng(seed)
  b, t = shape.batch, shape.frames
  return {
      'frames': rng.standard_normal((b, t, shape.size, shape.size, 3),
                                    np.float32),
      'landmarks': rng.random((b, t, 68, 2), np.float32),
      'targets': np.tanh(rng.standard_normal((b, t, NUM_OUTPUTS), np.float32)),
      'mask': np.ones((b, t), np.float32),
  }


# ------------------------------------------------------------- the models ---


def torch_model(name: str, shape: Shape, seed: int = 0):
  """The PyTorch model (tests/torch_reference.py), float32, train mode."""
  import torch
  from tests import torch_reference as ref
  torch.manual_seed(seed)
  if name == 'resnet50_lstm':
    model = ref.ResNetLSTM(num_outputs=NUM_OUTPUTS, hidden=shape.lstm_hidden,
                           width=shape.width, stage_sizes=shape.stage_sizes)
    model.trunk.fc = torch.nn.Identity()  # Unused: features only.
  else:
    model = ref.AffWildNet(
        trunk=name.split('_', 1)[1], image_size=shape.size,
        fc=_fc(name, shape), hidden=shape.gru_hidden,
        dropout=shape.dropout, num_outputs=NUM_OUTPUTS, width=shape.width,
        stage_sizes=shape.stage_sizes)
  return model.train()


def jax_model(name: str, shape: Shape, dtype: Any = jnp.float32):
  """The same network from `affect_jax.models.build`."""
  if name == 'resnet50_lstm':
    return models.build('resnet50_lstm', num_outputs=NUM_OUTPUTS,
                        lstm_hidden=shape.lstm_hidden, width=shape.width,
                        stage_sizes=shape.stage_sizes, dtype=dtype)
  trunk = name.split('_', 1)[1]
  kwargs = dict(stage_sizes=shape.stage_sizes) if trunk == 'resnet50' else {}
  return models.build('affwildnet', trunk_arch=trunk, width=shape.width,
                      fc_features=(_fc(name, shape),),
                      gru_hidden=shape.gru_hidden, fc_dropout=shape.dropout,
                      rnn_dropout=shape.dropout, num_outputs=NUM_OUTPUTS,
                      dtype=dtype, **kwargs)


def jax_variables(name: str, model) -> dict[str, Any]:
  """The torch model's weights as the Flax model's variables."""
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  sub = lambda p: {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
  linear = lambda p: {'kernel': sd[p + 'weight'].T, 'bias': sd[p + 'bias']}
  arch = 'resnet50' if 'resnet50' in name else 'vgg_face'
  trunk = models.load_torch_state_dict(arch, sub('trunk.'))
  params = {'trunk': trunk['params'], 'head': linear('head.')}
  variables = {'params': params}
  if 'batch_stats' in trunk:
    variables['batch_stats'] = {'trunk': trunk['batch_stats']}
  rnn = sub('rnn.')
  if name == 'resnet50_lstm':
    params['rnn'] = models.lstm_params_from_torch(rnn)
    return variables
  params['rnn'] = models.gru_params_from_torch(rnn)
  w = sd['fc.0.weight']  # [out, C*h*w + 136], torch's channel-major flatten.
  if arch == 'vgg_face':
    ch = sd[max((k for k in sd if k.startswith('trunk.features.')
                 and k.endswith('.weight')),
                key=lambda k: int(k.split('.')[2]))].shape[0]
    hw = int(round(((w.shape[1] - 136) // ch)**0.5))
    conv = w[:, :-136].reshape(-1, ch, hw, hw).transpose(0, 2, 3, 1)
    w = np.concatenate([conv.reshape(w.shape[0], -1), w[:, -136:]], 1)
  params['fc'] = {'dense0': {'kernel': w.T, 'bias': sd['fc.0.bias']}}
  return variables


def torch_ccc_loss(pred, targets):
  """`affect_jax.losses.ccc_loss` without padding, in torch."""
  x, y = pred.flatten(0, 1), targets.flatten(0, 1)
  mx, my = x.mean(0), y.mean(0)
  vx, vy = ((x - mx)**2).mean(0), ((y - my)**2).mean(0)
  cov = ((x - mx) * (y - my)).mean(0)
  return (1 - 2 * cov / (vx + vy + (mx - my)**2 + losses.EPS)).mean()


# ------------------------------------------------------------- the steps ---


def jax_loss_fn(model, batch_stats, batch, rng):
  """params -> (CCC loss, new batch_stats) of a training-mode forward."""

  def loss_fn(params):
    variables = {'params': params}
    if batch_stats:
      variables['batch_stats'] = batch_stats
    out, new = model.apply(variables, batch['frames'], mask=batch['mask'],
                           landmarks=batch['landmarks'], train=True,
                           mutable=['batch_stats'], rngs={'dropout': rng})
    loss = losses.ccc_loss(out.astype(jnp.float32), batch['targets'],
                           batch['mask'])
    return loss, new.get('batch_stats', {})

  return loss_fn


def jax_train_step(model, tx):
  """(state, batch) -> (state, loss); state = (params, batch_stats, opt)."""

  def step(state, batch):
    params, batch_stats, opt_state = state
    rng = jax.random.fold_in(jax.random.PRNGKey(0), opt_state[0].count)
    (loss, batch_stats), grads = jax.value_and_grad(
        jax_loss_fn(model, batch_stats, batch, rng), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats,
            opt_state), loss

  return step


@dataclasses.dataclass
class Variant:
  """One timed configuration: a zero-argument blocking `step`."""
  name: str
  framework: str
  step: Any
  compile_s: float | None = None
  flops: float | None = None
  xla_memory_mb: float | None = None  # XLA's buffers: args + temps + outs.
  compiled: Any = None  # JAX: the compiled step (its HLO, for profiles).


def jax_variant(label: str, model, variables, batch,
                compiler_options=None, donate: bool = True) -> Variant:
  """A compiled (AOT) JAX training step and its FLOP count."""
  import time
  tx = optax.adam(1e-4)
  # Copies: the step donates its state, and other variants share `variables`.
  copy = lambda tree: jax.tree.map(lambda x: jnp.array(x, copy=True), tree)
  params = copy(variables['params'])
  state = (params, copy(variables.get('batch_stats', {})), tx.init(params))
  batch = jax.tree.map(jnp.asarray, batch)
  jitted = jax.jit(jax_train_step(model, tx),
                   donate_argnums=(0,) if donate else ())
  t = time.perf_counter()
  compiled = jitted.lower(state, batch).compile(compiler_options)
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  xla_mb = None if mem is None else (
      mem.temp_size_in_bytes + mem.argument_size_in_bytes
      + mem.output_size_in_bytes - mem.alias_size_in_bytes) / 2**20
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  holder = [state]

  def step():
    holder[0], loss = compiled(holder[0], batch)
    jax.block_until_ready(loss)

  return Variant(label, 'jax', step, compile_s, (cost or {}).get('flops'),
                 xla_mb, compiled)


def torch_variant(name: str, label: str, model, batch, *,
                  channels_last: bool, compile_: bool = False,
                  amp: bool = False, device: str = 'cpu') -> Variant:
  """The idiomatic PyTorch step: zero_grad, forward, loss, backward, Adam."""
  import torch
  model = model.to(device)
  frames = torch.from_numpy(batch['frames']).to(device)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    # [B, T, 3, H, W] over NHWC memory: each frame is channels-last.
    frames = frames.permute(0, 1, 4, 2, 3)
  else:
    frames = frames.permute(0, 1, 4, 2, 3).contiguous()
  landmarks = torch.from_numpy(batch['landmarks']).to(device)
  targets = torch.from_numpy(batch['targets']).to(device)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  forward = torch.compile(model) if compile_ else model
  is_affwild = name != 'resnet50_lstm'
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
      out = (forward(frames, landmarks) if is_affwild else forward(frames))
    loss = torch_ccc_loss(out.float(), targets)
    loss.backward()
    opt.step()
    sync()

  return Variant(label, 'torch', step)


def variants(name: str, shape: Shape, args,
             only: int | None = None) -> list[Variant]:
  """Every framework variant of model `name` that this machine runs.

  `only` builds just the variant of that index (the others are None; an
  index that is none, such as -1, builds nothing: a count of variants).
  """
  import copy
  batch = make_batch(shape)
  on_cpu = jax.default_backend() == 'cpu'
  dtype = jnp.dtype(args.dtype)

  @functools.cache
  def shared():
    """(torch model or None, JAX variables): built once, when needed."""
    tm = torch_model(name, shape) if not args.no_torch else None
    if tm is not None:
      return tm, jax_variables(name, tm)
    return None, jax.jit(jax_model(name, shape).init)(
        jax.random.PRNGKey(0), batch['frames'][:, :1],
        landmarks=batch['landmarks'][:, :1])

  model = jax_model(name, shape, dtype)
  suffix = '' if args.dtype == 'float32' else f' {args.dtype}'
  make = [lambda: jax_variant(f'JAX/Flax jit{suffix}', model, shared()[1],
                              batch)]
  if args.xla_default and on_cpu:
    make.append(lambda: jax_variant(
        'JAX/Flax jit, XLA default (YNNPACK conv)', model, shared()[1],
        batch, xla_flags.CPU_DEFAULT_COMPILER_OPTIONS))
  if args.no_donate:
    make.append(lambda: jax_variant(
        'JAX/Flax jit, state not donated', model, shared()[1], batch,
        donate=False))
  if not args.no_torch:
    import torch
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch_kinds = [('PyTorch eager NCHW', dict(channels_last=False)),
                   ('PyTorch eager channels-last', dict(channels_last=True))]
    if args.torch_compile:
      torch_kinds.append(('PyTorch torch.compile channels-last',
                          dict(channels_last=True, compile_=True)))
    if device == 'cuda':
      torch_kinds.append(('PyTorch eager channels-last AMP bf16',
                          dict(channels_last=True, amp=True)))
    for label, kw in torch_kinds:
      make.append(lambda label=label, kw=kw: torch_variant(
          name, label, copy.deepcopy(shared()[0]), batch, device=device,
          **kw))
  return [m() if only is None or i == only else None
          for i, m in enumerate(make)]


def _memory_child(name: str, index: int, args) -> None:
  """Builds variant `index` alone, runs 2 steps, prints its memory as JSON."""
  import json
  v = variants(name, _shape(args), args, only=index)[index]
  rss = harness.RssPeak(0.005)
  start = rss.reset()
  for _ in range(2):
    v.step()
  print(json.dumps({'variant': v.name, 'step_peak_mb': rss.peak_above(start),
                    'process_peak_mb': rss.peak / 2**20}))
  rss.close()


def _child_command(name: str, child_flag: str, index: int, own_flag: str,
                   argv: list[str]) -> list[str]:
  """This script as child `child_flag index` of model `name`: the parent's
  `argv` less `own_flag`, `--models`, `--json` and `--rounds`."""
  return ([sys.executable, __file__, '--models', name, child_flag, str(index)]
          + _strip_value_flags([a for a in argv if a != own_flag],
                               ('--models', '--json', '--rounds')))


def _describe(v: Variant) -> dict[str, Any]:
  """What a child process reports of its variant (`_from_child` reads it)."""
  return {'variant': v.name, 'framework': v.framework,
          'compile_s': v.compile_s, 'flops': v.flops,
          'xla_memory_mb': v.xla_memory_mb}


def _from_child(r: dict[str, Any]) -> Variant:
  """The (step-less) Variant a child described with `_describe`."""
  return Variant(r['variant'], r['framework'], None, r['compile_s'],
                 r['flops'], r['xla_memory_mb'])


def _in_children(name: str, indices, child_flag: str, own_flag: str,
                 argv: list[str]) -> list[dict]:
  """Runs this script once per variant index in `indices`, in that order,
  each in a fresh process: `child_flag i` with the parent's `argv` less
  `own_flag`, `--models`, `--json` and `--rounds`; returns each child's
  last output line as JSON.
  """
  import json
  import subprocess
  out = []
  for i in indices:
    res = subprocess.run(_child_command(name, child_flag, i, own_flag, argv),
                         check=True, capture_output=True, text=True)
    out.append(json.loads(res.stdout.strip().splitlines()[-1]))
  return out


def measure_memory(name: str, count: int, argv: list[str]) -> list[dict]:
  """Peak RSS growth of each variant's steps, each in a fresh process."""
  return _in_children(name, range(count), '--memory_child', '--memory',
                      argv)


def _time_child(name: str, index: int, args) -> None:
  """Builds variant `index` alone, times it, prints the result as JSON."""
  import json
  v = variants(name, _shape(args), args, only=index)[index]
  timed = harness.interleaved({v.name: v.step}, args.steps, args.warmup)
  print(json.dumps(dict(_describe(v), timed=timed[v.name])))


def _step_child(name: str, index: int, args) -> None:
  """Builds variant `index` and warms it up, prints a JSON header line, then
  runs one timed step per line read from stdin (a JSON line each) to EOF."""
  import json
  v = variants(name, _shape(args), args, only=index)[index]
  first_s = harness.warm_up(v.step, args.warmup)
  print(json.dumps(dict(_describe(v), first_s=first_s)), flush=True)
  for _ in sys.stdin:
    print(json.dumps(harness.timed_call(v.step)), flush=True)


def _json_line(proc, what: str) -> dict:
  """The next JSON object line of child `proc`'s stdout (others skipped)."""
  import json
  for line in proc.stdout:
    if line.startswith('{'):
      return json.loads(line)
  raise RuntimeError(f'the {what} process exited with status {proc.wait()} '
                     'before it answered; its error is printed above')


def time_lockstep(name: str, args, argv: list[str]
                  ) -> tuple[list[Variant], dict[str, dict[str, Any]]]:
  """Each variant in its own process, all alive at once, stepping in turn.

  The processes are started and warmed up one after the other; then each
  of the `args.steps` rounds asks every process for one step, in turn (every
  other round in reverse order), and waits for it, so that no two steps
  overlap and a drift of the machine's speed over seconds hits all variants
  alike, while no variant shares its process (its heap, its page faults)
  with another. 'round_s' is each step's time, one round per step.
  """
  import subprocess
  count = len(variants(name, _shape(args), args, only=-1))
  procs, heads = [], []
  try:
    for i in range(count):
      procs.append(subprocess.Popen(
          _child_command(name, '--step_child', i, '--lockstep', argv),
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
      heads.append(_json_line(procs[-1], f'variant {i}'))
    steps = [[] for _ in procs]
    for k in range(args.steps):
      for i in (range(count) if k % 2 == 0 else reversed(range(count))):
        procs[i].stdin.write('step\n')
        procs[i].stdin.flush()
        steps[i].append(_json_line(procs[i], heads[i]['variant']))
  finally:
    for proc in procs:
      if proc.stdin:
        proc.stdin.close()
      proc.wait(timeout=60)
  vs, timed = [], {}
  for h, per_step in zip(heads, steps):
    vs.append(_from_child(h))
    times = [r['times_s'] for r in per_step]
    timed[h['variant']] = {
        'first_s': h['first_s'], 'times_s': times, 'round_s': times,
        'median_s': statistics.median(times),
        'minor_faults': statistics.median(r['minor_faults']
                                          for r in per_step),
        'system_s': statistics.median(r['system_s'] for r in per_step)}
  return vs, timed


def time_separately(name: str, args, argv: list[str]
                    ) -> tuple[list[Variant], dict[str, dict[str, Any]]]:
  """Each variant timed alone in a fresh process, one after the other.

  With `args.rounds` > 1 the whole sequence runs that many times, every
  other round in reverse order (A B C, C B A, ...), so that a machine whose
  speed drifts over minutes slows all variants alike; each variant's
  'median_s' is then the median of its rounds' medians, and 'round_s' keeps
  the per-round medians (in the order the rounds ran).
  """
  count = len(variants(name, _shape(args), args, only=-1))
  vs, runs = {}, {}
  for k in range(args.rounds):
    order = range(count) if k % 2 == 0 else reversed(range(count))
    for r in _in_children(name, list(order), '--time_child', '--separate',
                          argv):
      vs.setdefault(r['variant'], _from_child(r))
      runs.setdefault(r['variant'], []).append(r['timed'])
  timed = {}
  for label, per_round in runs.items():
    timed[label] = {
        'first_s': per_round[0]['first_s'],
        'times_s': [t for r in per_round for t in r['times_s']],
        'round_s': [r['median_s'] for r in per_round],
        'median_s': statistics.median(r['median_s'] for r in per_round),
        'minor_faults': statistics.median(r['minor_faults']
                                          for r in per_round),
        'system_s': statistics.median(r['system_s'] for r in per_round)}
  return list(vs.values()), timed


def run_model(name: str, shape: Shape, args,
              argv: list[str] = ()) -> list[dict[str, Any]]:
  """Times every variant of one model; returns one row dict per variant."""
  if args.separate:
    vs, timed = time_separately(name, args, list(argv))
  elif args.lockstep:
    vs, timed = time_lockstep(name, args, list(argv))
  else:
    vs = variants(name, shape, args)
    kind = {v.name: v.framework for v in vs}
    timed = harness.interleaved(
        {v.name: v.step for v in vs}, args.steps, args.warmup,
        group=harness.framework_group(args, kind.get))
  frames = shape.batch * shape.frames
  peak = harness.peak_flops(jax.devices()[0].device_kind)
  on_gpu = jax.default_backend() == 'gpu'
  rows = []
  for v in vs:
    t = timed[v.name]
    s = t['median_s']
    memory = None  # CPU: --memory measures it in separate processes.
    if on_gpu and v.framework == 'jax':
      stats = jax.devices()[0].memory_stats() or {}
      memory = stats.get('peak_bytes_in_use', 0) / 2**20
    elif on_gpu:
      import torch
      memory = torch.cuda.max_memory_allocated() / 2**20
    rows.append({
        'model': name, 'variant': v.name, 'framework': v.framework,
        'ms_per_step': 1000 * s, 'steps_per_s': 1 / s,
        'frames_per_s': frames / s, 'peak_memory_mb': memory,
        'xla_memory_mb': v.xla_memory_mb,
        'first_step_s': t['first_s'], 'compile_s': v.compile_s,
        'flops_per_step': v.flops,
        'achieved_tflops': v.flops / s / 1e12 if v.flops else None,
        'mfu': v.flops / s / peak if v.flops and peak and on_gpu else None,
        'times_s': t['times_s'], 'minor_faults_per_step': t['minor_faults'],
        'system_s_per_step': t['system_s'],
        'round_ms': [1000 * r for r in t.get('round_s', [])],
    })
  return rows


def throughput_ratio(rows: list[dict[str, Any]]) -> float | None:
  """Best JAX frames/s over the best PyTorch frames/s (project setting)."""
  jax_rows = [r['frames_per_s'] for r in rows if r['framework'] == 'jax'
              and 'XLA default' not in r['variant']]
  torch_rows = [r['frames_per_s'] for r in rows if r['framework'] == 'torch']
  if not jax_rows or not torch_rows:
    return None
  return max(jax_rows) / max(torch_rows)


def round_ratios(rows: list[dict[str, Any]]) -> list[float]:
  """`throughput_ratio` of each round of `--separate` (from the rounds'
  median step times; one round unless `--rounds`); empty when the variants
  ran interleaved."""
  count = min((len(r['round_ms']) for r in rows), default=0)
  return [throughput_ratio([dict(r, frames_per_s=1000 / r['round_ms'][k])
                            for r in rows]) for k in range(count)]


def _shape(args) -> Shape:
  if args.tiny:
    return TINY
  return dataclasses.replace(Shape(), batch=args.batch, frames=args.frames,
                             size=args.size)


def _strip_value_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
  """argv without `--flag value` / `--flag=value` pairs of `flags`."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
      continue
    if a in flags:
      skip = True
      continue
    if any(a.startswith(f + '=') for f in flags):
      continue
    out.append(a)
  return out


def _fmt(v, spec):
  return '' if v is None else format(v, spec)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--models', default='resnet50_lstm',
                 help=f"comma-separated of {MODELS}, or 'all'")
  p.add_argument('--batch', type=int, default=Shape.batch)
  p.add_argument('--frames', type=int, default=Shape.frames)
  p.add_argument('--size', type=int, default=Shape.size)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--dtype', default='float32',
                 help='JAX compute dtype (bfloat16 on a GPU/TPU)')
  p.add_argument('--xla_default', action='store_true',
                 help="also time JAX with XLA's default CPU convolutions")
  p.add_argument('--torch_compile', action='store_true',
                 help='also time torch.compile (slow to compile on CPU)')
  p.add_argument('--no_donate', action='store_true',
                 help='also time JAX without donating the state buffers')
  p.add_argument('--no_torch', action='store_true')
  p.add_argument('--memory', action='store_true',
                 help='peak memory of each variant in its own process '
                 '(CPU; slower: everything is built twice)')
  p.add_argument('--memory_child', type=int, default=None,
                 help=argparse.SUPPRESS)
  p.add_argument('--separate', action='store_true',
                 help='time each variant alone in its own fresh process '
                 '(one after the other) instead of interleaved in one')
  p.add_argument('--rounds', type=int, default=1,
                 help='with --separate: run the sequence of processes this '
                 'many times, every other round reversed; report each '
                 "variant's median over rounds and the ratio per round")
  p.add_argument('--lockstep', action='store_true',
                 help='each variant in its own process, all started first, '
                 'then stepping in turn (every other round reversed): the '
                 'same drift for all, no shared process')
  p.add_argument('--time_child', type=int, default=None,
                 help=argparse.SUPPRESS)
  p.add_argument('--step_child', type=int, default=None,
                 help=argparse.SUPPRESS)
  p.add_argument('--tiny', action='store_true',
                 help='tiny widths and shapes (a smoke test)')
  p.add_argument('--json', default=None, help='write the results here')
  harness.add_order_flag(p)
  argv = sys.argv[1:] if argv is None else list(argv)
  args = p.parse_args(argv)
  if args.rounds < 1 or (args.rounds > 1 and not args.separate):
    p.error('--rounds takes a count >= 1, and more than 1 only with '
            '--separate (interleaved steps already alternate)')
  if args.lockstep and args.separate:
    p.error('--lockstep and --separate are two ways of timing: pick one')
  names = MODELS if args.models == 'all' else tuple(args.models.split(','))
  shape = _shape(args)
  if not args.no_torch and not harness.torch_available():
    args.no_torch = True
  if args.memory_child is not None:
    _memory_child(names[0], args.memory_child, args)
    return
  if args.time_child is not None:
    _time_child(names[0], args.time_child, args)
    return
  if args.step_child is not None:
    _step_child(names[0], args.step_child, args)
    return

  rows = []
  for name in names:
    model_rows = run_model(name, shape, args, argv)
    if args.memory and jax.default_backend() == 'cpu':
      for r, m in zip(model_rows, measure_memory(name, len(model_rows),
                                                 argv)):
        r['peak_memory_mb'] = m['step_peak_mb']
        r['process_peak_mb'] = m['process_peak_mb']
    rows += model_rows
  harness.describe(
      f'Training step (fwd + CCC loss + bwd + Adam), batch {shape.batch} x '
      f'{shape.frames} frames at {shape.size}x{shape.size}, width '
      f'{shape.width}, median of {args.steps} '
      + ('steps, each variant alone in its own process' if args.separate
         else 'steps, each variant in its own process, stepping in turn '
         '(lockstep)' if args.lockstep else
         f'steps {harness.order_caption(args)}')
      + (f', {args.rounds} rounds (every other one reversed), the median '
         'over rounds' if args.rounds > 1 else ''))
  print_table(
      ['model: variant', 'ms/step', 'steps/s', 'frames/s', 'peak MB',
       'XLA MB', 'compile s', 'first step s', 'GFLOP/step', 'TFLOP/s', 'MFU',
       'faults/step', 'sys s/step'],
      [(f"{r['model']}: {r['variant']}", f"{r['ms_per_step']:.0f}",
        f"{r['steps_per_s']:.3f}", r['frames_per_s'],
        _fmt(r['peak_memory_mb'], '.0f'), _fmt(r['xla_memory_mb'], '.0f'),
        _fmt(r['compile_s'], '.1f'),
        _fmt(r['first_step_s'], '.1f'),
        _fmt(r['flops_per_step'] and r['flops_per_step'] / 1e9, '.0f'),
        _fmt(r['achieved_tflops'], '.3f'), _fmt(r['mfu'], '.1%'),
        _fmt(r['minor_faults_per_step'], '.0f'),
        _fmt(r['system_s_per_step'], '.2f'))
       for r in rows])
  ratios = {n: throughput_ratio([r for r in rows if r['model'] == n])
            for n in names}
  per_round = {n: round_ratios([r for r in rows if r['model'] == n])
               for n in names}
  harness.write_json(args.json, {'shape': dataclasses.asdict(shape),
                                 'rows': rows, 'ratios': ratios,
                                 'round_ratios': per_round})
  for n, rs in per_round.items():
    if len(rs) > 1 and all(r is not None for r in rs):
      print(f'{n}: jax_over_torch_train_throughput by '
            + ('step' if args.lockstep else 'round') + ' (in run order): '
            + ' '.join(f'{r:.2f}' for r in rs))
  for n, ratio in ratios.items():
    if ratio is not None and len(names) > 1:
      print(f'{n}: jax_over_torch_train_throughput={ratio:.2f}')
  if ratios[names[0]] is not None:
    print(f'jax_over_torch_train_throughput={ratios[names[0]]:.2f}')


if __name__ == '__main__':
  main()
