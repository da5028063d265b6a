"""affect_jax: video affect models, datasets, training and benchmarks in JAX.

Importing the package sets one XLA:CPU flag (convolutions on XLA's own
path, not YNNPACK: ~2x faster training on CPU) before JAX starts its
backend, appended to any `XLA_FLAGS` of the user's; `AFFECT_JAX_XLA_FLAGS=0`
opts out. See `affect_jax.xla_flags`.
"""

from affect_jax import xla_flags as _xla_flags

_xla_flags.apply()
