"""affect_jax.hugepages: when the process re-executes itself, and with what."""

import os
import subprocess
import sys

import pytest

from affect_jax import hugepages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('environ, mode, glibc, expected', [
    ({}, 'madvise', (2, 36), 'glibc.malloc.hugetlb=1'),
    # The user's other tunables are kept, in front.
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, 'madvise', (2, 35),
     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'),
    # The user's own hugetlb setting wins, even 0.
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, 'madvise', (2, 36), None),
    ({'AFFECT_JAX_HUGEPAGES': '0'}, 'madvise', (2, 36), None),
    ({'AFFECT_JAX_HUGEPAGES': 'off'}, 'madvise', (2, 36), None),
    ({}, 'always', (2, 36), None),  # Every mapping gets huge pages anyway.
    ({}, 'never', (2, 36), None),
    ({}, None, (2, 36), None),  # No THP file (not Linux, a container).
    ({}, 'madvise', (2, 34), None),  # glibc without the tunable.
    ({}, 'madvise', None, None),  # musl and others.
])
def test_tunables_with_huge_pages(environ, mode, glibc, expected):
  assert hugepages.tunables_with_huge_pages(environ, mode, glibc) == expected


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert hugepages.thp_mode(str(path)) == 'madvise'
  assert hugepages.thp_mode(str(tmp_path / 'missing')) is None


def _run(code, **env):
  env = {k: v for k, v in dict(os.environ, **env).items() if v is not None}
  return subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                        capture_output=True, text=True, check=True,
                        timeout=60).stdout.split('\n')


CODE = ('import os; print("start", os.getpid(), flush=True)\n'
        'from affect_jax import hugepages; hugepages.use_huge_pages()\n'
        'print("tunables", os.getpid(), os.environ.get("GLIBC_TUNABLES"))\n')


@pytest.mark.skipif(
    hugepages.tunables_with_huge_pages({}, hugepages.thp_mode(),
                                       hugepages.glibc_version()) is None,
    reason='this machine has no madvise-mode THP or glibc >= 2.35')
def test_the_process_starts_again_once_with_the_setting():
  out = _run(CODE, GLIBC_TUNABLES='glibc.malloc.arena_max=4',
             AFFECT_JAX_HUGEPAGES=None)
  starts = [line for line in out if line.startswith('start')]
  # The first line ran twice (before and after the exec), in one process.
  assert len(starts) == 2 and starts[0] == starts[1], out
  pid = starts[0].split()[1]
  assert f'tunables {pid} glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1' \
      in out, out


def test_opting_out_runs_once_as_is():
  out = _run(CODE, GLIBC_TUNABLES=None, AFFECT_JAX_HUGEPAGES='0')
  assert sum(line.startswith('start') for line in out) == 1, out
  assert any(line.endswith(' None') for line in out if
             line.startswith('tunables')), out
