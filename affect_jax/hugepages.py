"""Transparent huge pages for the large buffers of XLA:CPU (glibc malloc).

XLA:CPU allocates a step's temporary buffers afresh on every execution, from
a worker thread; glibc serves blocks that large from their own `mmap` and
unmaps them when they are freed, so on every training step the kernel
faults in and zeroes the whole buffer again, 4 KiB at a time. For the
ResNet-50 + LSTM step at batch 2 x 16 frames of 150x150 (2.3 GB of XLA
buffers) that is ~540,000 page faults and ~2.5 s of kernel time in a 6.5-s
step on 2 cores. glibc's `glibc.malloc.hugetlb=1` tunable makes malloc ask
for transparent huge pages (`madvise(MADV_HUGEPAGE)`) on those mappings:
~2,000 faults and 0.5 s a step, the step ~20% faster (docs/BENCHMARKS.md).

glibc reads its tunables once, when the process starts, so the setting has
to be in the environment before Python runs. `use_huge_pages()`, called first
thing by the entry points (`affect_jax.main`, `affect_jax.predict`, the
benchmarks), re-executes the same command in the same process (same pid and
arguments, `os.execv`) with `glibc.malloc.hugetlb=1` appended to
`GLIBC_TUNABLES`, unless

- the environment sets `AFFECT_JAX_HUGEPAGES=0` (opt out),
- `GLIBC_TUNABLES` already names `glibc.malloc.hugetlb` (the user's own
  choice wins; other tunables are kept as they are),
- the C library is not glibc 2.35 or newer (no such tunable), or
- the kernel's transparent huge pages are not in `madvise` mode (`always`
  needs no advice, `never` ignores it; `/sys/kernel/mm/transparent_hugepage/
  enabled`).

Other glibc settings that also remove the faults (`arena_max=1` with
`mmap_max=0`) were measured slower for small models (docs/cluster.md) and
are not set.
"""

from __future__ import annotations

import os
import re
import sys

TUNABLE = 'glibc.malloc.hugetlb'
OPT_OUT_ENV = 'AFFECT_JAX_HUGEPAGES'
THP_MODE_FILE = '/sys/kernel/mm/transparent_hugepage/enabled'


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The kernel's transparent huge page mode ('always', 'madvise', 'never')."""
  try:
    with open(path) as f:
      found = re.search(r'\[(\w+)\]', f.read())
  except OSError:
    return None
  return found.group(1) if found else None


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the running glibc; None for another C library."""
  try:
    found = re.fullmatch(r'glibc (\d+)\.(\d+).*',
                         os.confstr('CS_GNU_LIBC_VERSION') or '')
  except (ValueError, OSError):
    return None
  return (int(found.group(1)), int(found.group(2))) if found else None


def tunables_with_huge_pages(environ, mode: str | None,
                             glibc: tuple[int, int] | None) -> str | None:
  """The `GLIBC_TUNABLES` to re-execute with, or None to run as is."""
  if environ.get(OPT_OUT_ENV, '1').strip().lower() in ('0', 'false', 'no',
                                                        'off'):
    return None
  current = environ.get('GLIBC_TUNABLES', '')
  if TUNABLE in current or mode != 'madvise' or glibc is None or glibc < (2,
                                                                         35):
    return None
  return ':'.join(t for t in (current, f'{TUNABLE}=1') if t)


def use_huge_pages() -> None:
  """Re-executes this process with huge pages for malloc (module docstring).

  Returns only when nothing is to be done or the exec failed (then the
  process goes on as it is); call it before anything else has run, since
  the process starts again from its first line.
  """
  tunables = tunables_with_huge_pages(os.environ, thp_mode(), glibc_version())
  orig_argv = getattr(sys, 'orig_argv', None)
  if tunables is None or not orig_argv or not sys.executable:
    return
  env = dict(os.environ, GLIBC_TUNABLES=tunables)
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable] + list(orig_argv[1:]), env)
  except OSError:
    return
