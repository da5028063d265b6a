"""Where the training step's time goes, by layer kind, on 1 and 2 CPU cores.

  python benchmarks/profile_step.py                  # 1 and 2 cores, both
  python benchmarks/profile_step.py --cores 2 --frameworks jax

Profiles the step of `train_step.py` (ResNet-50 + 2-layer LSTM + FC, CCC
loss, Adam; same model, batch and weights in both frameworks) with each
framework's own profiler, each (framework, core count) in a fresh process
pinned to the first N cores (`os.sched_setaffinity` before any thread
starts, as `taskset`; torch with `torch.set_num_threads(N)`):

- JAX: `jax.profiler.trace` around `--steps` steps; XLA:CPU records one
  event per executed thunk (an HLO instruction of the compiled step) on the
  thread that runs it. The step's wall time is shared out among them
  (`attribute`: time when two run at once split evenly, time when none
  runs to the one that ended last, since a convolution thunk returns when
  its Eigen work is launched, not done) and put in a kind by the
  instruction's `op_name` (the Flax module path, and `transpose(` for the
  backward pass) and opcode;
- PyTorch: `torch.profiler` over the same number of steps; each ATen op's
  self CPU time (wall time on the calling thread, its intra-op threads
  included) is put in a kind by the op's name.

The table gives ms per step of each kind per framework and core count, and
the speed-up from the second core: which layers scale worse than the
other framework's. Profiling adds overhead (a few percent); `train_step.py`
is the timing to quote.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import hugepages
if __name__ == '__main__':
  if '--cpus' in sys.argv:  # A child: pinned before any thread starts.
    os.sched_setaffinity(0, [int(c) for c in
                             sys.argv[sys.argv.index('--cpus') + 1].split(',')])
  hugepages.use_huge_pages()  # As affect_jax.main; for both frameworks.
from benchmarks import harness
from benchmarks import train_step as ts
from benchmarks.table import print_table

# The slowest instructions (ATen ops) of each profile kept in the JSON, the
# JAX ones of the most cores printed.
TOP = 25

# Kinds, in table order.
KINDS = ('conv fwd', 'conv bwd', 'BatchNorm fwd', 'BatchNorm bwd',
         'ReLU/add fwd', 'ReLU/add bwd', 'max-pool', 'LSTM fwd', 'LSTM bwd',
         'head + loss', 'Adam', 'copies/layout', 'other')


_CONTROL_FLOW = re.compile(r'cond|branch_\d+_fun|while|body|closed_call|checkpoint')


def jax_kind(op_name: str, opcode: str) -> str:
  """The kind of one HLO instruction from its op_name and opcode."""
  bwd = 'transpose(' in op_name
  side = ' bwd' if bwd else ' fwd'
  path = op_name.split('/')
  # Module scopes only: not the autodiff wrappers, nor the scopes control
  # flow adds inside a module (`conv2/cond/branch_0_fun/...` is the strided
  # convolution's CPU input gradient, `rnn/while/body/...` the scan).
  modules = [p for p in path[1:-1]
             if not p.startswith(('jvp(', 'transpose('))
             and not _CONTROL_FLOW.fullmatch(p)]
  last = modules[-1] if modules else ''
  if opcode in ('copy', 'transpose') or (not op_name and 'copy' in opcode):
    return 'copies/layout'
  if 'rnn' in modules:
    return 'LSTM' + side
  if 'head' in modules or 'ccc' in op_name:
    return 'head + loss'
  if 'pool' in op_name:
    return 'max-pool'
  if re.fullmatch(r'(downsample_)?bn\d*', last):
    return 'BatchNorm' + side
  if re.fullmatch(r'(downsample_)?conv\d*', last) or opcode == 'convolution':
    return 'conv' + side
  if 'trunk' in modules:
    return 'ReLU/add' + side
  if not modules and op_name:
    return 'Adam'  # Outside the model's modules: optax's update.
  return 'other'


def torch_kind(name: str) -> str:
  """The kind of one ATen op (self time) from its name."""
  n = name.lower()
  if 'convolution_backward' in n:
    return 'conv bwd'
  if 'convolution' in n or 'conv2d' in n:
    return 'conv fwd'
  if 'batch_norm_backward' in n:
    return 'BatchNorm bwd'
  if 'batch_norm' in n:
    return 'BatchNorm fwd'
  if 'max_pool' in n:
    return 'max-pool'
  if 'rnn' in n or 'lstm' in n:
    return 'LSTM bwd' if 'backward' in n else 'LSTM fwd'
  if '_foreach' in n or 'adam' in n:
    return 'Adam'
  if any(k in n for k in ('threshold_backward', 'add_', 'aten::add')):
    return ('ReLU/add bwd' if 'backward' in n else 'ReLU/add fwd')
  if 'relu' in n:
    return 'ReLU/add fwd'
  if any(k in n for k in ('copy_', 'contiguous', 'clone', 'permute')):
    return 'copies/layout'
  if any(k in n for k in ('addmm', 'linear', 'aten::mm', 'mean', 'pow',
                          'sub', 'div', 'mul')):
    return 'head + loss'
  return 'other'


def _hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Instruction name -> (opcode, op_name) of a compiled module's HLO."""
  rx = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(')
  ops = {}
  for line in hlo_text.split('\n'):
    m = rx.match(line)
    if m:
      op = re.search(r'op_name="([^"]*)"', line)
      ops[m.group(1)] = (m.group(2), op.group(1) if op else '')
  return ops


def _leaf_segments(events: list[tuple[int, int, str]]
                   ) -> list[tuple[int, int, str]]:
  """One thread's (start, end, name) events cut into the pieces where each
  is the innermost event (a loop's own time, less its body's thunks)."""
  out = []
  stack: list[list] = []  # [end, name, start of the open piece]

  def close_until(t):
    while stack and stack[-1][0] <= t:
      e, n, s = stack.pop()
      if e > s:
        out.append((s, e, n))
      if stack:
        stack[-1][2] = e  # The parent's piece resumes.

  for start, end, name in sorted(events):
    close_until(start)
    if stack and start > stack[-1][2]:
      out.append((stack[-1][2], start, stack[-1][1]))
    stack.append([end, name, start])
  close_until(float('inf'))
  return out


def attribute(segments: list[tuple[int, int, str]],
              async_names: frozenset[str] = frozenset()) -> dict[str, float]:
  """name -> ns of the wall time from the first segment to the last.

  Time when several run (on different threads) is split evenly among them;
  time when none runs goes to the last of `async_names` that ended (else to
  the last that ended): XLA:CPU's convolution and dot thunks return once
  their Eigen work is launched, and what needs their result starts when it
  completes, so the gap after one is its compute.
  """
  edges = sorted({t for s, e, _ in segments for t in (s, e)})
  starts: dict[int, list[str]] = {}
  ends: dict[int, list[str]] = {}
  for s, e, n in segments:
    starts.setdefault(s, []).append(n)
    ends.setdefault(e, []).append(n)
  out: dict[str, float] = {}
  active: dict[str, int] = {}
  last = last_async = None
  for t0, t1 in zip(edges, edges[1:]):
    for n in ends.get(t0, ()):
      active[n] -= 1
      if not active[n]:
        del active[n]
      last = n
      if n in async_names:
        last_async = n
    for n in starts.get(t0, ()):
      active[n] = active.get(n, 0) + 1
    idle_owner = last_async or last
    who = list(active) or ([idle_owner] if idle_owner else [])
    for n in who:
      out[n] = out.get(n, 0) + (t1 - t0) / len(who)
  return out


def profile_jax(shape: ts.Shape, steps: int, warmup: int) -> dict[str, Any]:
  """ms per step by kind of the JAX step, from XLA:CPU's thunk events."""
  import jax
  from jax.profiler import ProfileData
  model = ts.jax_model('resnet50_lstm', shape)
  batch = ts.make_batch(shape)
  variables = jax.jit(model.init)(
      jax.random.PRNGKey(0), batch['frames'][:, :1],
      landmarks=batch['landmarks'][:, :1])
  v = ts.jax_variant('jax', model, variables, batch)
  for _ in range(warmup):
    v.step()
  ops = _hlo_ops(v.compiled.as_text())
  with tempfile.TemporaryDirectory() as d:
    import time
    with jax.profiler.trace(d):
      t = time.perf_counter()
      for _ in range(steps):
        v.step()
      wall = (time.perf_counter() - t) / steps
    data = ProfileData.from_file(
        glob.glob(os.path.join(d, '**', '*.xplane.pb'), recursive=True)[0])
    segments = []
    for plane in data.planes:
      for line in plane.lines:
        segments += _leaf_segments(
            [(e.start_ns, e.start_ns + e.duration_ns, e.name)
             for e in line.events if e.name in ops])
  kinds: dict[str, float] = {}
  eigen = frozenset(n for n, (opcode, _) in ops.items()
                    if opcode in ('convolution', 'dot'))
  times = attribute(segments, eigen)
  for name, ns in times.items():
    kind = jax_kind(ops[name][1], ops[name][0])
    kinds[kind] = kinds.get(kind, 0) + ns / 1e6 / steps
  top = [{'hlo': n, 'opcode': ops[n][0], 'op_name': ops[n][1],
          'kind': jax_kind(ops[n][1], ops[n][0]), 'ms': ns / 1e6 / steps}
         for n, ns in sorted(times.items(), key=lambda kv: -kv[1])[:TOP]]
  return {'kinds_ms': kinds, 'step_ms': wall * 1000, 'top': top}


def profile_torch(shape: ts.Shape, steps: int, warmup: int,
                  threads: int) -> dict[str, Any]:
  """ms per step by kind of the PyTorch channels-last step (ATen self time)."""
  import time
  import torch
  torch.set_num_threads(threads)
  v = ts.torch_variant('resnet50_lstm', 'torch', ts.torch_model(
      'resnet50_lstm', shape), ts.make_batch(shape), channels_last=True)
  for _ in range(warmup):
    v.step()
  with torch.profiler.profile(
      activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    t = time.perf_counter()
    for _ in range(steps):
      v.step()
    wall = (time.perf_counter() - t) / steps
  kinds: dict[str, float] = {}
  events = prof.key_averages()
  for ev in events:
    kind = torch_kind(ev.key)
    kinds[kind] = kinds.get(kind, 0) + ev.self_cpu_time_total / 1e3 / steps
  top = [{'op': ev.key, 'kind': torch_kind(ev.key),
          'ms': ev.self_cpu_time_total / 1e3 / steps}
         for ev in sorted(events, key=lambda e: -e.self_cpu_time_total)[:TOP]]
  return {'kinds_ms': kinds, 'step_ms': wall * 1000, 'top': top}


def _child(args) -> None:
  shape = _shape(args)
  if args.framework == 'jax':
    out = profile_jax(shape, args.steps, args.warmup)
  else:
    out = profile_torch(shape, args.steps, args.warmup, harness.cpu_threads())
  print(json.dumps(dict(out, framework=args.framework,
                        cores=harness.cpu_threads())))


def _shape(args) -> ts.Shape:
  return ts.TINY if args.tiny else ts.Shape(
      batch=args.batch, frames=args.frames, size=args.size)


def run_child(framework: str, cores: int, argv: list[str]) -> dict[str, Any]:
  """One profile in a fresh process pinned to the first `cores` CPUs."""
  cpus = ','.join(map(str, sorted(os.sched_getaffinity(0))[:cores]))
  res = subprocess.run(
      [sys.executable, __file__, '--child', '--framework', framework,
       '--cpus', cpus] + argv, check=True, capture_output=True, text=True)
  return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--cores', default='1,2',
                 help='comma-separated core counts (each a fresh process)')
  p.add_argument('--frameworks', default='jax,torch')
  p.add_argument('--batch', type=int, default=ts.Shape.batch)
  p.add_argument('--frames', type=int, default=ts.Shape.frames)
  p.add_argument('--size', type=int, default=ts.Shape.size)
  p.add_argument('--steps', type=int, default=2)
  p.add_argument('--warmup', type=int, default=1)
  p.add_argument('--tiny', action='store_true', help='tiny model (CI)')
  p.add_argument('--json', default=None)
  p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--framework', default='jax', help=argparse.SUPPRESS)
  p.add_argument('--cpus', default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    return _child(args)
  child_argv = [f'--batch={args.batch}', f'--frames={args.frames}',
                f'--size={args.size}', f'--steps={args.steps}',
                f'--warmup={args.warmup}'] + (['--tiny'] if args.tiny else [])
  cores = [int(c) for c in args.cores.split(',')]
  frameworks = args.frameworks.split(',')
  runs = {(f, c): run_child(f, c, child_argv)
          for c in cores for f in frameworks}
  shape = _shape(args)
  harness.describe(
      f'Training step by layer kind (ms/step, profiled), batch {shape.batch} '
      f'x {shape.frames} frames at {shape.size}x{shape.size}, width '
      f'{shape.width}, {args.steps} profiled steps after {args.warmup}; each '
      f'column a fresh process on that many cores')
  cols = [(f, c) for f in frameworks for c in cores]
  headers = ['kind'] + [f'{"JAX" if f == "jax" else "torch CL"} {c} core'
                        for f, c in cols]
  if len(cores) > 1:
    headers += [f'{"JAX" if f == "jax" else "torch CL"} x{cores[-1]}/{cores[0]}'
                for f in frameworks]
  rows = []
  for kind in KINDS + ('sum of kinds', 'step (wall)'):
    vals = []
    for f, c in cols:
      k = runs[(f, c)]['kinds_ms']
      vals.append(sum(k.values()) if kind == 'sum of kinds' else
                  runs[(f, c)]['step_ms'] if kind == 'step (wall)' else
                  k.get(kind, 0.0))
    if not any(vals):
      continue
    row = [kind] + [float(x) for x in vals]
    if len(cores) > 1:
      for i, f in enumerate(frameworks):
        lo, hi = vals[i * len(cores)], vals[i * len(cores) + len(cores) - 1]
        row.append(f'{lo / hi:.2f}' if hi else '')
    rows.append(row)
  print_table(headers, rows)
  if 'jax' in frameworks:
    top = runs[('jax', cores[-1])]['top'][:12]
    print(f'\nThe slowest HLO instructions of the JAX step on {cores[-1]} '
          'core(s), ms/step:\n')
    print_table(['instruction', 'kind', 'ms', 'op_name'],
                [(t['hlo'], t['kind'], t['ms'], t['op_name'][-70:])
                 for t in top])
  harness.write_json(args.json, {
      'benchmark': 'profile_step', 'shape': vars(shape) if hasattr(
          shape, '__dict__') else str(shape),
      'runs': [dict(r, framework=f, cores=c) for (f, c), r in runs.items()],
      'environment': harness.environment()})


if __name__ == '__main__':
  main()
