"""A writer of TensorFlow's V2 checkpoint format, for the import tests.

Writes what TensorFlow's BundleWriter writes (one shard, an uncompressed
LevelDB-format table of BundleEntryProto; tensorflow/core/util/
tensor_bundle), so tests can make checkpoints with a renamed, reshaped or
retyped tensor without TensorFlow. tests/test_import_tf1.py checks that it
round-trips the TF-written checkpoints of tests/data/affwild_tf1.
"""

import os
import struct

import numpy as np

from affect_jax.models import tf_bundle

_ENUM = {dt: code for code, dt in tf_bundle.DTYPES.items()}


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    out.append(b | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, value) -> bytes:
  if isinstance(value, bytes):
    return _varint(number << 3 | 2) + _varint(len(value)) + value
  return _varint(number << 3) + _varint(value)


def _block(entries) -> bytes:
  """A table block with a restart point at every entry (no shared keys)."""
  body, restarts = bytearray(), []
  for key, value in entries:
    restarts.append(len(body))
    body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
  for r in restarts or [0]:
    body += struct.pack('<I', r)
  body += struct.pack('<I', len(restarts or [0]))
  return bytes(body)


def _with_trailer(block: bytes) -> bytes:
  crc = tf_bundle.mask_crc(tf_bundle.crc32c(block + b'\x00'))
  return block + b'\x00' + struct.pack('<I', crc)


def write_bundle(prefix: str, tensors: dict[str, np.ndarray]) -> None:
  """Writes `tensors` (name -> array) as the checkpoint `prefix`."""
  os.makedirs(os.path.dirname(prefix) or '.', exist_ok=True)
  data, entries = bytearray(), []
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    dtype = a.dtype.newbyteorder('<') if a.dtype.itemsize > 1 else a.dtype
    raw = a.astype(dtype).tobytes()
    shape = b''.join(_field(2, _field(1, d)) for d in a.shape)
    proto = (_field(1, _ENUM[np.dtype(dtype)]) + _field(2, shape) +
             _field(4, len(data)) + _field(5, len(raw)) +
             _varint(6 << 3 | 5) + struct.pack(
                 '<I', tf_bundle.mask_crc(tf_bundle.crc32c(raw))))
    entries.append((name.encode(), proto))
    data += raw
  header = _field(1, 1) + _field(2, 0) + _field(3, _field(1, 1))
  table = bytearray()
  data_block = _block([(b'', header)] + entries)
  data_handle = _varint(0) + _varint(len(data_block))
  table += _with_trailer(data_block)
  meta_offset = len(table)
  meta_block = _block([])
  table += _with_trailer(meta_block)
  index_offset = len(table)
  last = entries[-1][0] if entries else b''
  index_block = _block([(last, data_handle)])
  table += _with_trailer(index_block)
  handles = (_varint(meta_offset) + _varint(len(meta_block)) +
             _varint(index_offset) + _varint(len(index_block)))
  table += handles + b'\x00' * (40 - len(handles))
  table += struct.pack('<Q', 0xdb4775248b80fb57)
  with open(prefix + '.index', 'wb') as f:
    f.write(bytes(table))
  with open(prefix + '.data-00000-of-00001', 'wb') as f:
    f.write(bytes(data))


def read_all(path: str) -> dict[str, np.ndarray]:
  """Every tensor of a checkpoint (with `tf_bundle.BundleReader`)."""
  reader = tf_bundle.BundleReader(path)
  return {name: reader.read(name) for name in reader.entries}
