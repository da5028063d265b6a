"""An experiment: the training step with oneDNN's convolutions (XLA FFI).

  apt-get install libdnnl-dev                     # Debian: oneDNN 2.x, or
  pip install onednn-cpu-gomp && pip install --no-deps onednn-devel
  python benchmarks/onednn_conv.py                # check, then time the step
  python benchmarks/onednn_conv.py --rounds 3     # more alternating rounds
  python benchmarks/onednn_conv.py --prefix /usr  # that oneDNN install

XLA:CPU runs convolutions with Eigen (the project's flag) or YNNPACK; PyTorch
runs them with oneDNN, and that is where the JAX step's gap to PyTorch's is
on AVX-512 CPUs (docs/BENCHMARKS.md). This script compiles
`onednn_conv.cc` (three XLA FFI handlers: forward, input gradient, kernel
gradient; oneDNN 2.x or 3.x) with g++ against jaxlib's FFI headers and the
first oneDNN found (`--prefix`; else the Python prefixes, /usr/local,
/usr), registers them, and puts them under a `jax.custom_vjp`. It then

1. checks them against `lax.conv_general_dilated`, values and both
   gradients, on every distinct convolution shape of the ResNet-50 trunk
   at a small batch (relative max error; it exits non-zero above 1e-4);
2. times the ResNet-50 + LSTM training step of `train_step.py` (JAX only)
   in fresh processes, alternating with and without oneDNN convolutions,
   `--rounds` times each: with it, every `nn.Conv` of the trunk and every
   `Conv1x1` runs through the FFI targets (the model is patched in the
   child process; affect_jax itself is unchanged).

It is not part of affect_jax: it needs a C++ compiler and a oneDNN beside
the Python packages. Debian's `libdnnl-dev` (oneDNN 2.6, OpenMP runtime) is
a coherent install; the PyPI wheels are not (`onednn-cpu-gomp` is oneDNN
3.2 without headers, `onednn-devel` carries the 3.13 headers of the SYCL
build `onednn`), so with them this compiles 3.13's C++ API against the 3.2
library; the checks above are what makes that usable. oneDNN runs its own
OpenMP threads (`OMP_NUM_THREADS`, default: the CPU threads) beside XLA's;
the step's processes get `OMP_WAIT_POLICY=PASSIVE` unless it is set, so
that idle OpenMP threads sleep rather than spin on the cores XLA's pool
runs on next.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from affect_jax import hugepages
if __name__ == '__main__':
  hugepages.use_huge_pages()
import affect_jax  # pylint: disable=unused-import  (the XLA flag)
from benchmarks import harness
from benchmarks.table import print_table

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'onednn_conv.cc')
TARGETS = ('OnednnConvFwd', 'OnednnConvBwdData', 'OnednnConvBwdWeights')
INSTALL = ('apt-get install libdnnl-dev (Debian, oneDNN 2.x), or pip install '
           'onednn-cpu-gomp && pip install --no-deps onednn-devel')


def onednn_paths() -> tuple[str, str] | None:
  """(include dir, libdnnl.so.N) of the first oneDNN found, or None.

  `$ONEDNN_PREFIX` if set (`--prefix`), else the Python prefixes (the PyPI
  wheels), /usr/local and /usr (Debian's `libdnnl-dev`, oneDNN 2.x).
  """
  prefixes = ([os.environ['ONEDNN_PREFIX']] if os.environ.get('ONEDNN_PREFIX')
              else [sys.prefix, sys.base_prefix, '/usr/local', '/usr'])
  for prefix in dict.fromkeys(prefixes):
    header = os.path.join(prefix, 'include', 'oneapi', 'dnnl', 'dnnl.hpp')
    libs = sorted(lib for d in ('lib', 'lib64', 'lib/*-linux-gnu')
                  for lib in glob.glob(os.path.join(prefix, d,
                                                    'libdnnl.so.[0-9]')))
    if os.path.exists(header) and libs:
      return os.path.join(prefix, 'include'), libs[-1]
  return None


def build(cache_dir: str | None = None) -> str:
  """Compiles onednn_conv.cc (once per source and oneDNN) -> the .so path."""
  paths = onednn_paths()
  if paths is None:
    raise SystemExit(f'oneDNN headers or library not found: {INSTALL}')
  include, lib = paths
  with open(SOURCE, 'rb') as f:
    key = hashlib.sha256(f.read() + include.encode() + lib.encode())
  cache_dir = cache_dir or os.path.join(tempfile.gettempdir(),
                                        'affect_jax_onednn_conv')
  os.makedirs(cache_dir, exist_ok=True)
  out = os.path.join(cache_dir, f'onednn_conv_{key.hexdigest()[:12]}.so')
  if not os.path.exists(out):
    tmp = f'{out}.{os.getpid()}.tmp'
    cmd = ['g++', '-O2', '-std=c++17', '-shared', '-fPIC',
           f'-I{jax.ffi.include_dir()}', f'-I{include}', SOURCE, lib,
           f'-Wl,-rpath,{os.path.dirname(lib)}', '-o', tmp]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
      raise SystemExit(f'building {SOURCE} failed:\n{res.stderr[-3000:]}')
    os.replace(tmp, out)
  return out


@functools.cache
def register() -> None:
  """Builds and registers the three FFI targets (once per process)."""
  lib = ctypes.cdll.LoadLibrary(build())
  for name in TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)),
                                platform='cpu')


def _attrs(stride, padding):
  return dict(stride=np.int64(stride), pad_top=np.int64(padding[0][0]),
              pad_left=np.int64(padding[1][0]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, kernel, stride: int, padding):
  """NHWC x HWIO -> NHWC float32, one stride, padding ((t, b), (l, r))."""
  (pt, pb), (pl, pr) = padding
  n, h, w, _ = x.shape
  kh, kw, _, o = kernel.shape
  out = jax.ShapeDtypeStruct((n, (h + pt + pb - kh) // stride + 1,
                              (w + pl + pr - kw) // stride + 1, o),
                             jnp.float32)
  return jax.ffi.ffi_call(TARGETS[0], out)(x, kernel,
                                           **_attrs(stride, padding))


def _conv_fwd(x, kernel, stride, padding):
  return conv(x, kernel, stride, padding), (x, kernel)


def _conv_bwd(stride, padding, res, dy):
  x, kernel = res
  attrs = _attrs(stride, padding)
  dx = jax.ffi.ffi_call(TARGETS[1], jax.ShapeDtypeStruct(x.shape, x.dtype))(
      dy, kernel, **attrs)
  dk = jax.ffi.ffi_call(TARGETS[2], jax.ShapeDtypeStruct(
      kernel.shape, kernel.dtype))(x, dy, **attrs)
  return dx, dk


conv.defvjp(_conv_fwd, _conv_bwd)


def lax_conv(x, kernel, stride, padding):
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def patch_model() -> None:
  """Routes the ResNet trunk's convolutions (nn.Conv via strided_conv, and
  Conv1x1) through `conv`, in this process only."""
  import flax.linen as nn
  from affect_jax.models import resnet, strided_conv
  register()
  plain = strided_conv.conv_general_dilated

  def conv_general_dilated(lhs, rhs, window_strides, padding, *args,
                           **kwargs):
    strides = tuple(int(s) for s in window_strides)
    simple = (lhs.ndim == 4 and lhs.dtype == jnp.float32 and not args
              and strides[0] == strides[1] and not isinstance(padding, str)
              and kwargs.get('feature_group_count', 1) == 1
              and kwargs.get('batch_group_count', 1) == 1
              and all(d in (None, 1) for k in ('lhs_dilation', 'rhs_dilation')
                      for d in (kwargs.get(k) or ())))
    if not simple:
      return plain(lhs, rhs, window_strides, padding, *args, **kwargs)
    return conv(lhs, rhs, strides[0],
                tuple((int(lo), int(hi)) for lo, hi in padding))

  class Conv1x1(resnet.Conv1x1):

    @nn.compact
    def __call__(self, x):
      kernel = self.param('kernel', self.kernel_init,
                          (1, 1, x.shape[-1], self.features), jnp.float32)
      y = conv(x.astype(jnp.float32), kernel, self.strides, ((0, 0), (0, 0)))
      return y.astype(self.dtype)

  strided_conv.conv_general_dilated = conv_general_dilated
  resnet.Conv1x1 = Conv1x1


def check(batch: int, size: int) -> list[dict]:
  """Values and gradients against lax on the trunk's distinct convolutions."""
  from benchmarks import conv_parts
  register()
  rows, rng = [], np.random.default_rng(0)
  for module, shape, _ in conv_parts.trunk_convs(batch, size):
    name, k, s = conv_parts.describe_conv(module, shape)
    padding = ((k // 2, k // 2),) * 2
    x = jnp.asarray(rng.standard_normal(shape, np.float32))
    w = jnp.asarray(rng.standard_normal((k, k, shape[-1], module.features),
                                        np.float32) / np.sqrt(k * k * shape[-1]))
    errors = []
    outs = [jax.vjp(lambda x, w, f=f: f(x, w, s, padding), x, w)
            for f in (conv, lax_conv)]
    g = jnp.asarray(rng.standard_normal(outs[1][0].shape, np.float32))
    grads = [vjp(g) for _, vjp in outs]
    for a, b in zip((outs[0][0],) + grads[0], (outs[1][0],) + grads[1]):
      errors.append(float(jnp.abs(a - b).max() / jnp.abs(b).max()))
    rows.append({'conv': name, 'y': errors[0], 'dx': errors[1],
                 'dw': errors[2]})
  return rows


def _child(use_onednn: bool, argv: list[str], json_path: str) -> dict:
  """One train_step.py run (JAX only) in a fresh process -> its JSON row."""
  cmd = [sys.executable, os.path.abspath(__file__), '--step_child',
         '1' if use_onednn else '0', '--json', json_path, *argv]
  # Idle OpenMP threads sleep instead of spinning on the cores XLA's own
  # pool needs next (libgomp spins by default): 1.04x -> 1.12x the step here.
  env = dict(os.environ)
  env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                       env=env)
  if res.returncode:
    raise SystemExit(f'child failed:\n{res.stdout[-2000:]}{res.stderr[-3000:]}')
  with open(json_path) as f:
    row, = json.load(f)['rows']
  return row


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--rounds', type=int, default=2)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--check_batch', type=int, default=2)
  p.add_argument('--tiny', action='store_true', help='tiny step (a smoke test)')
  p.add_argument('--no_step', action='store_true', help='only the check')
  p.add_argument('--step_child', choices=('0', '1'), help=argparse.SUPPRESS)
  p.add_argument('--prefix', help='the oneDNN install to use (default: the '
                 'Python prefixes, then /usr/local and /usr)')
  p.add_argument('--json')
  args = p.parse_args(argv)
  if args.prefix:  # Read by onednn_paths(), here and in the step processes.
    os.environ['ONEDNN_PREFIX'] = args.prefix
  own_argv = ['--steps', str(args.steps)] + (['--tiny'] if args.tiny else [])
  if args.step_child is not None:
    from benchmarks import train_step
    if args.step_child == '1':
      patch_model()
    train_step.main(['--no_torch', *own_argv, '--json', args.json])
    return
  if onednn_paths() is None:
    p.error(f'oneDNN headers or library not found: {INSTALL}')

  rows = check(args.check_batch, 32 if args.tiny else 150)
  harness.describe(f'oneDNN convolutions against lax.conv_general_dilated, '
                   f'batch {args.check_batch} (relative max error)')
  print_table(['conv', 'y', 'dx', 'dw'],
              [[r['conv']] + [f"{r[k]:.1e}" for k in ('y', 'dx', 'dw')]
               for r in rows])
  worst = max(max(r['y'], r['dx'], r['dw']) for r in rows)
  if worst > 1e-4:
    raise SystemExit(f'oneDNN convolutions off by {worst:.1e} (> 1e-4)')
  if args.no_step:
    harness.write_json(args.json, {'check': rows})
    return

  times = {False: [], True: []}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      for use in ((True, False) if r % 2 else (False, True)):
        row = _child(use, own_argv, os.path.join(tmp, 'step.json'))
        times[use].append(row)
  harness.describe(f'Training step (train_step.py, JAX only), median of '
                   f'{args.steps} steps a process, {args.rounds} fresh '
                   f'processes each, alternating')
  ms = {use: [t['ms_per_step'] for t in rows_] for use, rows_ in times.items()}
  median = {use: np.median(m) for use, m in ms.items()}
  print_table(['convolutions', 'ms/step by process (run order)', 'median ms'],
              [[label, ' / '.join(f'{m:.0f}' for m in ms[use]),
                f'{median[use]:.0f}']
               for use, label in ((False, 'XLA convolutions (the project)'),
                                  (True, 'oneDNN convolutions (FFI)'))])
  ratio = median[False] / median[True]
  harness.write_json(args.json, {'check': rows, 'steps': {
      'xla': times[False], 'onednn': times[True]}, 'onednn_speedup': ratio})
  print(f'onednn_over_xla_step_throughput={ratio:.2f}')


if __name__ == '__main__':
  main()
