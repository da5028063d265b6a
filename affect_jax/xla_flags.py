"""The XLA:CPU setting this project runs with: convolutions off YNNPACK.

XLA:CPU (jaxlib 0.10) hands every convolution, dot and reduction to
YNNPACK by default (`xla_cpu_experimental_ynn_fusion_type` is
`individual_dot,individual_convolution,reduce`; its help text is stale).
YNNPACK's convolution *weight gradients* are slow: a 3x3 conv's is ~5x
slower than PyTorch's, the 7x7 stem's ~10x, which made the ResNet-50 + LSTM
training step ~2x slower than PyTorch's on CPU. Removing only
`individual_convolution` puts convolutions on XLA's Eigen path and keeps
dots and the BatchNorm reductions on YNNPACK (dropping `reduce` too, e.g.
with `=individual_dot` or an empty list, makes BatchNorm ~9x and the LSTM
2.5x slower). docs/BENCHMARKS.md has the measurements.

`import affect_jax` calls `apply()`, which appends the flag to `XLA_FLAGS`
unless

- the environment sets `AFFECT_JAX_XLA_FLAGS=0` (opt out), or
- `XLA_FLAGS` already names `xla_cpu_experimental_ynn_fusion_type` (the
  user's own choice wins; nothing else in `XLA_FLAGS` is touched).

XLA reads `XLA_FLAGS` once, when JAX first starts a backend (the first
computation or `jax.devices()`), so the flag only takes effect if
`affect_jax` is imported before that; otherwise `apply()` warns once and a
function can still get the setting with
`jax.jit(f, compiler_options=CPU_COMPILER_OPTIONS)`. The flag concerns the
CPU backend only; GPU and TPU compilation ignore it.
"""

from __future__ import annotations

import os
import sys
import warnings

FLAG_NAME = 'xla_cpu_experimental_ynn_fusion_type'
# '-x' removes x from the default list (XLA's list-flag syntax).
FLAG = f'--{FLAG_NAME}=-individual_convolution'
OPT_OUT_ENV = 'AFFECT_JAX_XLA_FLAGS'

# The same setting per function, for `jax.jit(..., compiler_options=...)`
# (that path takes the enum names and no '+' / '-').
CPU_COMPILER_OPTIONS = {
    FLAG_NAME: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
# XLA's own default, to compare against in one process.
CPU_DEFAULT_COMPILER_OPTIONS = {
    FLAG_NAME: ('LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
                'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,'
                'LIBRARY_FUSION_TYPE_REDUCE')}


def _backend_started() -> bool:
  """Whether JAX has already created a backend (and so read XLA_FLAGS)."""
  jax_mod = sys.modules.get('jax')
  if jax_mod is None:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(getattr(xla_bridge, '_backends', None))
  except ImportError:  # A JAX without this private module: assume not.
    return False


def apply(environ=None) -> bool:
  """Appends `FLAG` to `XLA_FLAGS` (see the module docstring for when not).

  Args:
    environ: the environment to edit; `os.environ` by default.

  Returns:
    True if the flag was added.
  """
  env = os.environ if environ is None else environ
  if env.get(OPT_OUT_ENV, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    return False
  current = env.get('XLA_FLAGS', '')
  if FLAG_NAME in current:
    return False
  if environ is None and _backend_started():
    warnings.warn(
        f'affect_jax was imported after JAX started its backend, so '
        f'{FLAG} (much faster convolution gradients on CPU) is not in '
        f'effect; import affect_jax before the first JAX computation, or '
        f'jit with compiler_options=affect_jax.xla_flags.'
        f'CPU_COMPILER_OPTIONS. Set {OPT_OUT_ENV}=0 to silence this.',
        stacklevel=2)
    return False
  env['XLA_FLAGS'] = f'{current} {FLAG}'.strip()
  return True
