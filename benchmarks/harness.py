"""Timing, memory, device and JSON helpers shared by the benchmark scripts.

Every timed comparison runs its variants *interleaved* in one process (one
step of each in turn, `rounds` times, after warm-up) and reports medians, so
drifting machine load hits every variant alike. JAX and PyTorch variants
are interleaved among their own kind only, one framework after the other
(`interleaved(..., group=framework)`): a JAX call right after a torch call
ran 20-40% slower on 2 cores (torch's idle OpenMP threads still hold
them), which call-by-call interleaving puts on JAX's side.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import threading
import time
from typing import Any, Callable

# Dense bf16 peak FLOP/s by `device_kind` substring (vendor data sheets,
# without sparsity), for model FLOPs utilisation. Longest match wins.
PEAK_BF16_FLOPS = {
    'H200': 989e12, 'H100': 989e12, 'H100 PCIe': 756e12, 'GH200': 989e12,
    'A100': 312e12, 'A10G': 70e12, 'A10': 125e12, 'L40S': 362e12,
    'L4': 121e12, 'V100': 125e12, 'T4': 65e12, 'RTX 4090': 165e12,
    'RTX 3090': 71e12, 'TPU v4': 275e12, 'TPU v5 lite': 197e12,
    'TPU v5p': 459e12, 'TPU v6 lite': 918e12,
}


def _cpu_times() -> list[int] | None:
  """/proc/stat's machine-wide CPU ticks: user, nice, system, idle, iowait,
  irq, softirq, steal (None off Linux)."""
  try:
    with open('/proc/stat') as f:
      fields = f.readline().split()
    return [int(v) for v in fields[1:9]]
  except (OSError, ValueError):
    return None


_CPU_TIMES_AT_IMPORT = _cpu_times()


def steal_share(since: list[int] | None = None) -> float | None:
  """Share of the machine's CPU time its hypervisor took away ("steal").

  Counted since `since` (a `_cpu_times()` reading), by default since this
  module was imported. On a shared virtual machine other guests' load shows
  here, not in the load average, and slows every variant unevenly: compare
  runs with little steal. None where /proc/stat has no steal column.
  """
  now, start = _cpu_times(), since or _CPU_TIMES_AT_IMPORT
  if now is None or start is None or len(now) < 8 or len(start) < 8:
    return None
  delta = [a - b for a, b in zip(now, start)]
  return delta[7] / sum(delta) if sum(delta) > 0 else None


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), with its widest vector ISA."""
  try:
    with open('/proc/cpuinfo') as f:
      info = f.read()
  except OSError:
    return platform.processor() or platform.machine()
  name = next((line.split(':', 1)[1].strip() for line in info.splitlines()
               if line.startswith('model name')), platform.machine())
  flags = next((line.split(':', 1)[1].split() for line in info.splitlines()
                if line.startswith('flags')), [])
  isa = ('AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags
         else None)
  return f'{name} ({isa})' if isa else name


def peak_flops(device_kind: str) -> float | None:
  """bf16 peak FLOP/s of a device kind, None when not in the table."""
  hits = [k for k in PEAK_BF16_FLOPS if k.lower() in device_kind.lower()]
  return PEAK_BF16_FLOPS[max(hits, key=len)] if hits else None


def cpu_threads() -> int:
  """CPUs this process may run on (respects `taskset`)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def torch_available() -> bool:
  """Whether PyTorch imports; if so, sets its threads to `cpu_threads()`,
  and if not, says how to install it."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    print('(PyTorch not installed: pip install -e ".[torch]")')
    return False
  torch.set_num_threads(cpu_threads())
  return True


def _rss_bytes() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class RssPeak:
  """Samples resident memory every `period` s; `peak_above(start)` in MB."""

  def __init__(self, period: float = 0.01):
    self.period = period
    self.peak = 0
    self._stop = threading.Event()
    self._ok = os.path.exists('/proc/self/statm')
    self._thread = threading.Thread(target=self._run, daemon=True)
    if self._ok:
      self._thread.start()

  def _run(self):
    while not self._stop.wait(self.period):
      self.peak = max(self.peak, _rss_bytes())

  def reset(self) -> int:
    """Starts a new window; returns the current RSS (bytes)."""
    now = _rss_bytes() if self._ok else 0
    self.peak = now
    return now

  def peak_above(self, start: int) -> float | None:
    if not self._ok:
      return None
    return max(self.peak, _rss_bytes()) / 2**20 - start / 2**20

  def close(self):
    self._stop.set()


def timed_call(step: Callable[[], Any]) -> dict[str, float]:
  """One blocking `step()`: its wall time and the process's minor page
  faults and kernel CPU seconds during it ('times_s', 'minor_faults',
  'system_s')."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  t = time.perf_counter()
  step()
  wall = time.perf_counter() - t
  after = resource.getrusage(resource.RUSAGE_SELF)
  return {'times_s': wall, 'minor_faults': after.ru_minflt - usage.ru_minflt,
          'system_s': after.ru_stime - usage.ru_stime}


def warm_up(step: Callable[[], Any], warmup: int) -> float:
  """Calls `step()` `max(warmup, 1)` times; returns the first call's time
  (compilation included)."""
  t = time.perf_counter()
  step()
  first_s = time.perf_counter() - t
  for _ in range(warmup - 1):
    step()
  return first_s


def framework(name: str) -> str:
  """'torch' for a variant named after PyTorch ('torch ...', 'PyTorch ...',
  'torch.nn.LSTM'), else 'jax': the `group` of `interleaved` that keeps
  the two frameworks' calls apart."""
  return 'torch' if 'torch' in name.lower() else 'jax'


def add_order_flag(parser) -> None:
  """`--call_by_call` on a script that times JAX against PyTorch with
  `interleaved(..., group=framework_group(args))`."""
  parser.add_argument(
      '--call_by_call', action='store_true',
      help='interleave JAX and PyTorch variants call by call instead of one '
      "framework after the other (a JAX call then pays for torch's idle "
      'OpenMP threads: to measure that bias)')


def framework_group(args, framework_of: Callable[[str], str] = framework
                    ) -> Callable[[str], str] | None:
  """`interleaved`'s `group` for a script with `add_order_flag`:
  `framework_of` (a variant's name -> its framework), or None with
  `--call_by_call`."""
  return None if getattr(args, 'call_by_call', False) else framework_of


def order_caption(args) -> str:
  """How a script with `add_order_flag` interleaved, for its caption."""
  return ('interleaved call by call' if getattr(args, 'call_by_call', False)
          else 'interleaved within each framework')


def interleaved(steps: dict[str, Callable[[], Any]], rounds: int,
                warmup: int, group: Callable[[str], str] | None = None
                ) -> dict[str, dict[str, Any]]:
  """Times each zero-argument `steps[name]()` (which must block until done).

  All variants are warmed up, then timed one call each in turn, `rounds`
  times. With `group`, variants are interleaved only with those of the same
  `group(name)`: the groups are warmed up and timed one after the other
  (in the order their first variant appears), so that no variant's call
  follows another group's (e.g. `group=framework`).

  Returns:
    {name: {'first_s': the first call (compilation or warm-up included),
    'times_s': the `rounds` timed calls, 'median_s', 'peak_rss_mb': the
    largest resident memory seen during its timed calls above the memory
    before them, 'minor_faults' and 'system_s': the median page faults and
    kernel CPU seconds of the process per timed call}}, in `steps`' order.
  """
  groups: dict[str, dict[str, Callable[[], Any]]] = {}
  for name, step in steps.items():
    groups.setdefault(group(name) if group else '', {})[name] = step
  rss = RssPeak()
  out = {name: {'times_s': [], 'minor_faults': [], 'system_s': [],
                'peak_rss_mb': 0.0} for name in steps}
  try:
    for members in groups.values():
      for name, step in members.items():
        out[name]['first_s'] = warm_up(step, warmup)
      for _ in range(rounds):
        for name, step in members.items():
          start = rss.reset()
          for key, value in timed_call(step).items():
            out[name][key].append(value)
          peak = rss.peak_above(start)
          if peak is not None:
            out[name]['peak_rss_mb'] = max(out[name]['peak_rss_mb'], peak)
  finally:
    rss.close()
  for r in out.values():
    r['median_s'] = statistics.median(r['times_s']) if r['times_s'] else None
    # Page faults and kernel time per step: a step that maps fresh memory
    # each time (large buffers freed to the OS) pays for it here.
    for key in ('minor_faults', 'system_s'):
      r[key] = statistics.median(r[key]) if r[key] else None
  return out


def environment() -> dict[str, Any]:
  """What every JSON result records: versions, device, threads, flags."""
  import jax  # pylint: disable=g-import-not-at-top
  env = {
      'jax': jax.__version__,
      'backend': jax.default_backend(),
      'devices': [d.device_kind for d in jax.devices()],
      'cpu_threads': cpu_threads(),
      'machine': platform.machine(),
      'processor': platform.processor(),
      'cpu_model': cpu_model(),
      'cpu_steal_share': steal_share(),
      'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''),
      # malloc's settings move the CPU figures (affect_jax/hugepages.py).
      'GLIBC_TUNABLES': os.environ.get('GLIBC_TUNABLES', ''),
      'load_average': os.getloadavg() if hasattr(os, 'getloadavg') else None,
  }
  try:
    import torch  # pylint: disable=g-import-not-at-top
    env['torch'] = torch.__version__
    env['torch_threads'] = torch.get_num_threads()
    if torch.cuda.is_available():
      env['torch_device'] = torch.cuda.get_device_name()
  except ImportError:
    pass
  return env


def write_json(path: str | None, payload: dict[str, Any]) -> None:
  """Writes `payload` (plus `environment()`) as indented JSON to `path`."""
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(dict(payload, environment=environment()), f, indent=1,
              default=float)


def describe(line: str) -> None:
  """The caption printed above a table: the setting, device, CPU, load and
  the CPU time stolen by the hypervisor since the script started."""
  import jax  # pylint: disable=g-import-not-at-top
  load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
  steal = steal_share()
  steal = '' if steal is None else f', steal {100 * steal:.0f}%'
  print(f'\n{line}; {jax.devices()[0].device_kind} x{jax.device_count()}, '
        f'{cpu_model()}, {cpu_threads()} CPU threads, load {load:.1f}'
        f'{steal}\n')
