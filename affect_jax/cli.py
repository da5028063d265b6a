"""The one wrapper of the absl command-line entry points (scenic's `app.run`).

`run(main)` gives every command the same exits:

  - a user error (`AffectJaxError`, a bad flag value, a misspelt
    `--config.KEY`, an unknown config variant) prints one line
    `error: ...` naming the flag or key and the fix, and exits 2, with no
    traceback;
  - SIGTERM / SIGINT that the command turned into `Interrupted` exit with
    128 + the signal; a plain Ctrl-C exits 130;
  - `--help` (and `--helpshort`, `--helpfull`) prints the help and exits 0.

With `config_flag='config'` (the experiment config of `affect_jax.main`),
the config file is loaded and every `--config.KEY=VALUE` override is
checked against it before absl and ml_collections parse them, so a misspelt
key names the closest valid one; `--config=FILE:list` prints the file's
variants (and modifiers) one line each and exits 0.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from typing import Any, Callable, Sequence

from absl import app
from absl import flags

from affect_jax.errors import AffectJaxError, Interrupted

_HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '--helpfull',
               '--helpxml')
LIST_ARGS = ('list', 'help', '?')


def fail(message: str) -> None:
  """Prints `error: message` on stderr and exits 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


def run(main: Callable[[list[str]], Any], *,
        config_flag: str | None = None) -> None:
  """`app.run(main)` with the project's error, interrupt and help exits."""

  def wrapped(argv):
    try:
      return main(argv)
    except AffectJaxError as e:
      fail(str(e))
    except Interrupted as e:
      print(e, file=sys.stderr, flush=True)
      sys.exit(e.exit_code)
    except KeyboardInterrupt:
      print('Interrupted.', file=sys.stderr, flush=True)
      sys.exit(130)

  app.run(wrapped, flags_parser=lambda argv: parse(argv, config_flag))


def parse(argv: Sequence[str], config_flag: str | None = None) -> list[str]:
  """absl's flag parsing, with one-line errors and `--help` exiting 0."""
  argv = list(argv)
  if config_flag:
    argv = _check_config_args(argv, config_flag)
  try:
    return flags.FLAGS(argv)
  except SystemExit:  # absl's help flags exit 1 after printing.
    if any(a.split('=')[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise
  except flags.Error as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    fail(f'{message}. See --help for the flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections' override parser, past the checks above.
    message = ' '.join(str(e).replace('\\n', ' ').split()).strip('\'"')
    fail(f'bad command-line config override: {message}. See '
         '--config=FILE:list and docs/experiments.md.')
  return []  # Not reached.


# --------------------------------------------------------- config files ---


def _flag_value(argv: list[str], name: str) -> tuple[int, str] | None:
  """(index, value) of `--name=V` or `--name V` in argv, the last one."""
  found = None
  for i, a in enumerate(argv[1:], 1):
    if a.startswith(f'--{name}='):
      found = (i, a[len(name) + 3:])
    elif a == f'--{name}' and i + 1 < len(argv):
      found = (i, argv[i + 1])
  return found


def resolve_config_path(path: str) -> str:
  """A config path as given, or else relative to the repository root.

  `configs/realeyes.py` is found from any folder when affect_jax runs from
  its source tree (an editable install).
  """
  if os.path.exists(path) or os.path.isabs(path):
    return path
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  candidate = os.path.join(root, path)
  return candidate if os.path.exists(candidate) else path


def load_config_module(path: str):
  """Imports an experiment config file as ml_collections does."""
  if not os.path.isfile(path):
    raise AffectJaxError(
        f'--config={path}: no such config file (from {os.getcwd()}); the '
        'experiment files are configs/*.py in the repository (e.g. '
        '--config=configs/realeyes.py:synthetic).')
  name = 'affect_jax_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def variant_lines(module, path: str) -> list[str]:
  """The `--config=FILE:list` text: one line a variant and a modifier."""
  helps = dict(getattr(module, 'HELP', {}))
  lines = [f'{path}: variants (--config={path}:VARIANT)']
  variants = [v for v in getattr(module, 'VARIANTS', ()) if '+' not in v]
  width = max([len(v or '(none)') for v in variants] + [8])
  for v in variants:
    lines.append(f'  {v or "(none)":<{width}}  {helps.get(v, "")}'.rstrip())
  modifiers = getattr(module, 'MODIFIERS', ())
  if modifiers:
    mhelp = dict(getattr(module, 'MODIFIER_HELP', {}))
    lines.append(f'modifiers, joined with "+" (e.g. --config={path}:'
                 f'{"+".join(modifiers[-1:] + modifiers[:1])}):')
    width = max(len(m) for m in modifiers)
    for m in modifiers:
      lines.append(f'  {m:<{width}}  {mhelp.get(m, "")}'.rstrip())
  return lines


def _check_config_args(argv: list[str], config_flag: str) -> list[str]:
  found = _flag_value(argv, config_flag)
  if found is None:
    return argv
  index, spec = found
  path, sep, arg = spec.partition(':')
  resolved = resolve_config_path(path)
  if resolved != path:
    new = resolved + sep + arg
    if argv[index].startswith(f'--{config_flag}='):
      argv[index] = f'--{config_flag}={new}'
    else:
      argv[index + 1] = new
  try:
    module = load_config_module(resolved)
  except AffectJaxError as e:
    fail(str(e))
  if arg in LIST_ARGS:
    print('\n'.join(variant_lines(module, path)))
    sys.exit(0)
  try:
    config = module.get_config(arg) if sep else module.get_config()
  except (AffectJaxError, ValueError) as e:
    fail(f'{e} (list them: --config={path}:list)')
  prefix = f'--{config_flag}.'
  for a in argv[1:]:
    if a.startswith(prefix):
      check_override_key(config, a[len(prefix):].split('=')[0], config_flag)
    elif a.startswith(f'--no{config_flag}.'):
      check_override_key(config, a[len(config_flag) + 5:], config_flag)
  return argv


def check_override_key(config, key: str, config_flag: str = 'config') -> None:
  """Refuses a `--config.KEY` that the loaded config does not have."""
  node, walked = config, config_flag
  for part in key.split('.'):
    keys = list(node.keys()) if hasattr(node, 'keys') else None
    if keys is None:
      if isinstance(node, (tuple, list)) and part.isdigit() and int(
          part) < len(node):
        node, walked = node[int(part)], f'{walked}.{part}'
        continue
      fail(f'--{config_flag}.{key}: {walked} is a value '
           f'({type(node).__name__}), not a section.')
    if part not in keys:
      close = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
      hint = (f' Did you mean --{walked}.{close[0]}?' if close else '')
      fail(f'--{config_flag}.{key}: {walked} has no key {part!r}.{hint} '
           f'Its keys: {", ".join(sorted(keys))}.')
    node, walked = node[part], f'{walked}.{part}'
