"""affect_jax.writers: the atomic file writers every output goes through."""

import os

import pytest

from affect_jax import writers


def test_atomic_open_renames_when_done(tmp_path):
  path = str(tmp_path / 'sub' / 'a.csv')
  writers.write_csv(path, ['x', 'y'], [[1, 'a'], [2, 'b,c']])
  with open(path) as f:
    assert f.read().splitlines() == ['x,y', '1,a', '2,"b,c"']
  assert os.listdir(tmp_path / 'sub') == ['a.csv']


@pytest.mark.parametrize('mode', ['w', 'wb'])
def test_atomic_open_keeps_the_old_file_on_error(tmp_path, mode):
  path = tmp_path / 'out.bin'
  path.write_text('old')
  with pytest.raises(KeyboardInterrupt):
    with writers.atomic_open(str(path), mode) as f:
      f.write('half' if mode == 'w' else b'half')
      raise KeyboardInterrupt
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['out.bin']  # No temporary file left.


def test_atomic_open_refuses_other_modes(tmp_path):
  with pytest.raises(ValueError, match="'a'"):
    with writers.atomic_open(str(tmp_path / 'x'), 'a'):
      pass
  assert not os.listdir(tmp_path)
