"""Data-parallel scaling of the JAX training step over 1, 2, 4, 8 devices.

  python benchmarks/scaling.py                  # simulated CPU devices
  python benchmarks/scaling.py --devices 1,2,4,8 --batch 8 --frames 16
  python benchmarks/scaling.py --devices 8 --model_axis 2   # data 4 x model 2

The step of benchmarks/train_step.py (ResNet-50 + LSTM by default) with the
*same global batch* split over N devices along a `data` mesh axis
(`jax.jit` with `NamedSharding`: batch sharded, parameters replicated, as
affect_jax.train does; with `--model_axis M` the large 2-D kernels are split
over M devices as `config.mesh.model=M` does). On CPU each N runs in a child process with
`--xla_force_host_platform_device_count=N` (XLA's simulated devices share
the same cores, so this measures the sharding's overhead, not a speed-up);
on GPUs it uses the first N real devices in one process. Prints ms/step,
frames/s and the speed-up over 1 device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import hugepages
if __name__ == '__main__':  # As affect_jax.main; for both frameworks.
  hugepages.use_huge_pages()


def time_on_devices(n: int, args) -> dict:
  """ms/step of the step sharded over the first `n` devices."""
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from benchmarks import harness
  from benchmarks import train_step as ts
  import numpy as np
  shape = ts.TINY if args.tiny else ts.Shape()
  shape = dataclasses.replace(shape, batch=args.batch, frames=args.frames,
                              size=args.size if not args.tiny else shape.size)
  from affect_jax import inference
  m = args.model_axis if n % args.model_axis == 0 else 1
  mesh = Mesh(np.array(jax.devices()[:n]).reshape(n // m, m),
              ('data', 'model'))
  data = NamedSharding(mesh, P('data'))
  replicated = NamedSharding(mesh, P())
  model = ts.jax_model(args.model, shape)
  batch = ts.make_batch(shape)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0),
                                  batch['frames'][:, :1],
                                  landmarks=batch['landmarks'][:, :1])
  tx = optax.adam(1e-4)
  params = variables['params']
  state = (params, variables.get('batch_stats', {}), tx.init(params))
  # affect_jax.train's rule: with a model axis the large 2-D kernels and
  # their Adam moments are split over it, everything else replicated.
  state_sharding = inference.param_shardings(mesh, state)
  state = jax.device_put(state, state_sharding)
  batch = jax.device_put(batch, data)
  step = jax.jit(ts.jax_train_step(model, tx), donate_argnums=(0,),
                 in_shardings=(state_sharding, data),
                 out_shardings=(state_sharding, replicated))
  holder = [state]

  def run():
    holder[0], loss = step(holder[0], batch)
    jax.block_until_ready(loss)

  t = harness.interleaved({'step': run}, args.steps, args.warmup)['step']
  return {'devices': n, 'mesh': f'{n // m} x {m}',
          'device_kind': jax.devices()[0].device_kind,
          'ms_per_step': 1000 * t['median_s'],
          'frames_per_s': shape.batch * shape.frames / t['median_s'],
          'times_s': t['times_s']}


def _child(n: int, argv: list[str]) -> dict:
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      f' --xla_force_host_platform_device_count={n}').strip()
  out = subprocess.run(
      [sys.executable, __file__, '--child', str(n)] + argv,
      env=env, check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', default='resnet50_lstm')
  p.add_argument('--devices', default='1,2,4,8')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--frames', type=int, default=4)
  p.add_argument('--size', type=int, default=150)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--model_axis', type=int, default=1,
                 help='devices on the mesh\'s model axis (config.mesh.model) '
                 'for every device count it divides; 1 = data parallel only')
  p.add_argument('--tiny', action='store_true')
  p.add_argument('--json', default=None)
  p.add_argument('--child', type=int, default=0, help=argparse.SUPPRESS)
  argv = sys.argv[1:] if argv is None else list(argv)
  args = p.parse_args(argv)
  if args.child:
    import affect_jax  # pylint: disable=unused-import  (the XLA flag)
    print(json.dumps(time_on_devices(args.child, args)))
    return
  import affect_jax  # pylint: disable=unused-import
  import jax
  from benchmarks import harness
  from benchmarks.table import print_table
  counts = [int(n) for n in args.devices.split(',')]
  bad = [n for n in counts if args.batch % n]
  if bad:
    raise SystemExit(f'--batch {args.batch} is not divisible by {bad}.')
  if jax.default_backend() == 'cpu':
    rows = [_child(n, argv) for n in counts]
    where = 'simulated CPU devices (one process each, shared cores)'
  else:
    counts = [n for n in counts if n <= jax.device_count()]
    rows = [time_on_devices(n, args) for n in counts]
    where = f'{jax.devices()[0].device_kind} devices'
  harness.describe(f'{args.model} training step, global batch {args.batch} '
                   f'x {args.frames} frames, data parallel over {where}')
  base = rows[0]['ms_per_step']
  print_table(['devices', 'mesh data x model', 'ms/step', 'frames/s',
               'speed-up'],
              [(r['devices'], r['mesh'], f"{r['ms_per_step']:.0f}",
                r['frames_per_s'],
                f"{base / r['ms_per_step']:.2f}") for r in rows])
  harness.write_json(args.json, {'rows': rows, 'where': where})


if __name__ == '__main__':
  main()
