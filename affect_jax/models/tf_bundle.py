"""A reader of TensorFlow's V2 checkpoint format ("tensor bundle"), no TF.

A checkpoint `PREFIX` (e.g. `model.ckpt-1000`) written by `tf.train.Saver`
(TF >= 0.12) or `tf.train.Checkpoint` is two kinds of file:

  PREFIX.index                  a LevelDB-format SSTable (TF's copy,
                                tensorflow/core/lib/io/table*): key '' holds a
                                BundleHeaderProto (shards, endianness), every
                                other key is a tensor name whose value is a
                                BundleEntryProto (dtype, shape, shard, offset,
                                size, masked CRC-32C)
  PREFIX.data-SSSSS-of-NNNNN    the tensors' raw bytes, little-endian,
                                C order, at the entries' offsets

(tensorflow/core/util/tensor_bundle/tensor_bundle.{h,cc} and
tensor_bundle.proto). TensorFlow writes the index uncompressed, which is all
this reader accepts. Both protobuf messages are decoded from the wire format
here, so reading the released Aff-Wild weights needs neither TensorFlow nor
protobuf; tensor data is checked against the entry's size and CRC-32C.

Checked against files written by TensorFlow 2.15
(scripts/make_affwild_tf1_checkpoints.py, tests/test_import_tf1.py).
"""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np

from affect_jax.errors import AffectJaxError

_TABLE_MAGIC = 0xdb4775248b80fb57
_FOOTER_SIZE = 48  # Two block handles padded to 40 bytes, then the magic.
_BLOCK_TRAILER = 5  # Compression type byte + masked CRC-32C.

# tensorflow/core/framework/types.proto DataType -> NumPy (little-endian).
DTYPES = {1: np.dtype('<f4'), 2: np.dtype('<f8'), 3: np.dtype('<i4'),
          4: np.dtype('u1'), 5: np.dtype('<i2'), 6: np.dtype('i1'),
          9: np.dtype('<i8'), 10: np.dtype('?'), 17: np.dtype('<u2'),
          19: np.dtype('<f2'), 22: np.dtype('<u4'), 23: np.dtype('<u8')}
DTYPE_NAMES = {1: 'float32', 2: 'float64', 3: 'int32', 4: 'uint8', 5: 'int16',
               6: 'int8', 7: 'string', 9: 'int64', 10: 'bool',
               14: 'bfloat16', 17: 'uint16', 19: 'float16', 22: 'uint32',
               23: 'uint64'}


# ---------------------------------------------------------------- CRC-32C ---

_POLY = 0x82F63B78  # Castagnoli, reflected.


def _make_table() -> np.ndarray:
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1)
  return table.astype(np.uint32)


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _gf2_times(matrix: list[int], vec: int) -> int:
  """matrix (32 column words) x vec over GF(2)."""
  out, i = 0, 0
  while vec:
    if vec & 1:
      out ^= matrix[i]
    vec >>= 1
    i += 1
  return out


def _gf2_square(matrix: list[int]) -> list[int]:
  return [_gf2_times(matrix, matrix[i]) for i in range(32)]


def _zeros_operator(n: int) -> list[int]:
  """The linear map "feed n zero bytes" on a raw CRC register (zlib's
  crc32_combine construction: the one-bit operator, squared up to n)."""
  one_bit = [_POLY] + [1 << i for i in range(31)]  # Shift one zero bit in.
  op = one_bit
  for _ in range(3):  # One bit -> one byte (8 bits).
    op = _gf2_square(op)
  result = [1 << i for i in range(32)]  # Identity.
  while n:
    if n & 1:
      result = [_gf2_times(op, result[i]) for i in range(32)]
    n >>= 1
    if n:
      op = _gf2_square(op)
  return result


def _raw_crc_bytes(data: bytes, crc: int = 0) -> int:
  """The CRC register after `data` from `crc`, no pre/post inversion."""
  t = _TABLE_LIST
  for b in data:
    crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc


def crc32c(data) -> int:
  """CRC-32C (Castagnoli) of bytes or a uint8 array, as TensorFlow's
  crc32c::Value (before masking).

  Large inputs run in NumPy: the data is cut into equal lanes whose
  registers advance together one byte per step, then the lanes' CRCs are
  combined by the linear "append zeros" operator (CRCs are linear over
  GF(2)). Zeros prepended to a register that starts at 0 leave it at 0,
  which pads the lanes to equal length.
  """
  buf = np.frombuffer(memoryview(data).cast('B'), np.uint8)
  n = buf.size
  if n < 4096:
    raw = _raw_crc_bytes(buf.tobytes())
  else:
    lanes = 1024 if n < (1 << 24) else 16384
    length = -(-n // lanes)
    padded = np.zeros(lanes * length, np.uint8)
    padded[lanes * length - n:] = buf
    rows = padded.reshape(lanes, length)
    reg = np.zeros(lanes, np.uint32)
    for i in range(length):
      reg = _TABLE[(reg ^ rows[:, i]) & 0xFF] ^ (reg >> np.uint32(8))
    shift = _zeros_operator(length)
    # Byte tables of `shift` for a fast apply: shift(x) = xor of 4 lookups.
    tables = [[_gf2_times(shift, b << (8 * k)) for b in range(256)]
              for k in range(4)]
    raw = 0
    for r in reg.tolist():
      raw = (tables[0][raw & 0xFF] ^ tables[1][(raw >> 8) & 0xFF] ^
             tables[2][(raw >> 16) & 0xFF] ^ tables[3][raw >> 24]) ^ r
  # Standard CRC-32C: register starts at ~0 (its effect after n bytes is the
  # zeros operator applied to ~0) and is inverted at the end.
  return raw ^ _gf2_times(_zeros_operator(n), 0xFFFFFFFF) ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
  """TensorFlow / LevelDB's crc32c::Mask (stored CRCs are masked)."""
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------- protobuf ---


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result, shift = 0, 0
  while True:
    if pos >= len(buf):
      raise ValueError('truncated varint')
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if not b & 0x80:
      return result, pos
    shift += 7
    if shift > 63:
      raise ValueError('varint too long')


def _fields(buf: bytes):
  """(field number, wire type, value) of a protobuf message's fields."""
  pos = 0
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(buf, pos)
    elif wire == 1:
      value, pos = buf[pos:pos + 8], pos + 8
    elif wire == 2:
      size, pos = _varint(buf, pos)
      value, pos = buf[pos:pos + size], pos + size
    elif wire == 5:
      value, pos = struct.unpack('<I', buf[pos:pos + 4])[0], pos + 4
    else:
      raise ValueError(f'unsupported wire type {wire}')
    if pos > len(buf):
      raise ValueError('truncated field')
    yield number, wire, value


@dataclasses.dataclass(frozen=True)
class Entry:
  """One tensor of the bundle (a decoded BundleEntryProto)."""
  name: str
  dtype: int  # TensorFlow's DataType enum.
  shape: tuple[int, ...]
  shard_id: int
  offset: int
  size: int
  crc32c: int | None  # Masked, as stored.
  sliced: bool  # A partitioned variable (stored as slices).

  @property
  def dtype_name(self) -> str:
    return DTYPE_NAMES.get(self.dtype, f'DataType {self.dtype}')


def _shape(buf: bytes) -> tuple[int, ...]:
  dims = []
  for number, _, value in _fields(buf):
    if number == 2:  # Dim.
      size = 0
      for n, _, v in _fields(value):
        if n == 1:
          size = v - (1 << 64) if v >= 1 << 63 else v
      dims.append(size)
  return tuple(dims)


def _entry(name: str, buf: bytes) -> Entry:
  values = {'dtype': 0, 'shape': (), 'shard_id': 0, 'offset': 0, 'size': 0,
            'crc32c': None, 'sliced': False}
  for number, _, value in _fields(buf):
    if number == 1:
      values['dtype'] = value
    elif number == 2:
      values['shape'] = _shape(value)
    elif number == 3:
      values['shard_id'] = value
    elif number == 4:
      values['offset'] = value
    elif number == 5:
      values['size'] = value
    elif number == 6:
      values['crc32c'] = value
    elif number == 7:
      values['sliced'] = True
  return Entry(name=name, **values)


# ---------------------------------------------------------------- SSTable ---


def _block(data: bytes, offset: int, size: int) -> bytes:
  end = offset + size
  if end + _BLOCK_TRAILER > len(data):
    raise ValueError(f'block at {offset} (+{size}) past the end of the file')
  block = data[offset:end]
  kind = data[end]
  if kind != 0:
    raise ValueError(f'compressed table block (type {kind}); TensorFlow '
                     'writes checkpoint indexes uncompressed')
  stored = struct.unpack('<I', data[end + 1:end + 5])[0]
  if mask_crc(crc32c(data[offset:end + 1])) != stored:
    raise ValueError(f'CRC mismatch in the table block at {offset}')
  return block


def _block_entries(block: bytes):
  """(key, value) pairs of one table block (prefix-compressed keys)."""
  if len(block) < 4:
    raise ValueError('block too short')
  restarts = struct.unpack('<I', block[-4:])[0]
  limit = len(block) - 4 * (restarts + 1)
  if limit < 0:
    raise ValueError('bad restart count')
  pos, key = 0, b''
  while pos < limit:
    shared, pos = _varint(block, pos)
    non_shared, pos = _varint(block, pos)
    size, pos = _varint(block, pos)
    key = key[:shared] + block[pos:pos + non_shared]
    pos += non_shared
    yield key, block[pos:pos + size]
    pos += size


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
  """Every (key, value) of an uncompressed LevelDB-format table, in order."""
  if len(data) < _FOOTER_SIZE:
    raise ValueError('shorter than a table footer')
  footer = data[-_FOOTER_SIZE:]
  if struct.unpack('<Q', footer[-8:])[0] != _TABLE_MAGIC:
    raise ValueError('no table magic number at the end')
  _, pos = _varint(footer, 0)  # Metaindex handle (unused by TF).
  _, pos = _varint(footer, pos)
  index_offset, pos = _varint(footer, pos)
  index_size, pos = _varint(footer, pos)
  out = []
  for _, handle in _block_entries(_block(data, index_offset, index_size)):
    offset, p = _varint(handle, 0)
    size, _ = _varint(handle, p)
    out.extend(_block_entries(_block(data, offset, size)))
  return out


# ----------------------------------------------------------------- reader ---


def checkpoint_prefix(path: str) -> str:
  """The bundle prefix behind `path`: the prefix itself, its .index or a
  .data-* file, or a folder with a TF `checkpoint` file (its latest)."""
  path = os.path.expanduser(path)
  if os.path.isdir(path):
    state = os.path.join(path, 'checkpoint')
    latest = None
    if os.path.isfile(state):
      with open(state) as f:
        for line in f:
          if line.startswith('model_checkpoint_path:'):
            latest = line.split(':', 1)[1].strip().strip('"')
    if latest is None:
      raise AffectJaxError(
          f'{path} is a folder without a TensorFlow `checkpoint` file; pass '
          'the checkpoint prefix, e.g. --checkpoint=FOLDER/model.ckpt-N (the '
          'name before .index).')
    return latest if os.path.isabs(latest) else os.path.join(path, latest)
  if path.endswith('.index'):
    return path[:-len('.index')]
  if '.data-' in os.path.basename(path):
    return path[:path.rindex('.data-')]
  return path


class BundleReader:
  """The tensors of a TensorFlow V2 checkpoint, read on demand.

  Attributes:
    prefix: the checkpoint prefix.
    entries: tensor name -> `Entry` (dtype, shape, where its bytes are).
  """

  def __init__(self, path: str):
    self.prefix = checkpoint_prefix(path)
    index = self.prefix + '.index'
    if not os.path.isfile(index):
      hint = (' (a TF < 0.12 "V1" checkpoint has no .index: re-save it '
              'with TensorFlow as V2)' if os.path.isfile(self.prefix) else '')
      raise AffectJaxError(
          f'No TensorFlow checkpoint {index}{hint}; pass '
          '--checkpoint=PATH/model.ckpt-N, the prefix of the .index and '
          '.data-00000-of-00001 files.')
    with open(index, 'rb') as f:
      data = f.read()
    try:
      table = read_table(data)
      header = dict((n, v) for n, _, v in _fields(dict(table).get(b'', b'')))
      self.entries = {k.decode('utf-8'): _entry(k.decode('utf-8'), v)
                      for k, v in table if k}
    except (ValueError, UnicodeDecodeError, struct.error) as e:
      raise AffectJaxError(
          f'{index} is not a TensorFlow checkpoint index ({e}); the file is '
          'damaged or truncated: download it again.') from e
    self.num_shards = int(header.get(1, 1))
    if header.get(2, 0) != 0:
      raise AffectJaxError(f'{index} was written on a big-endian machine; '
                           're-save it with TensorFlow on a little-endian one.')
    self._shards: dict[int, np.memmap] = {}

  def _shard(self, shard_id: int) -> np.ndarray:
    if shard_id not in self._shards:
      path = (f'{self.prefix}.data-{shard_id:05d}-of-'
              f'{self.num_shards:05d}')
      if not os.path.isfile(path):
        raise AffectJaxError(f'{path} is missing: copy every .data-* file '
                             'of the checkpoint next to its .index.')
      self._shards[shard_id] = (np.memmap(path, np.uint8, mode='r')
                                if os.path.getsize(path) else
                                np.zeros(0, np.uint8))
    return self._shards[shard_id]

  def read(self, name: str, verify: bool = True) -> np.ndarray:
    """The tensor `name` as a NumPy array (a copy in native byte order)."""
    e = self.entries[name]
    where = f'tensor {name!r} of {self.prefix}'
    if e.sliced:
      raise AffectJaxError(f'{where} is a partitioned variable (saved as '
                           'slices), which this reader does not join.')
    if e.dtype not in DTYPES:
      raise AffectJaxError(f'{where} has dtype {e.dtype_name}, which this '
                           'reader does not decode.')
    dtype = DTYPES[e.dtype]
    count = int(np.prod(e.shape, dtype=np.int64))
    if e.size != count * dtype.itemsize:
      raise AffectJaxError(f'{where}: the index says {e.size} bytes for a '
                           f'{e.dtype_name} tensor of shape {e.shape}; the '
                           'checkpoint is damaged.')
    shard = self._shard(e.shard_id)
    if e.offset + e.size > shard.size:
      raise AffectJaxError(
          f'{where} lies past the end of its data file ({shard.size} bytes):'
          ' the download is truncated; download it again.')
    raw = shard[e.offset:e.offset + e.size]
    if verify and e.crc32c is not None and mask_crc(crc32c(raw)) != e.crc32c:
      raise AffectJaxError(f'{where} fails its CRC-32C check: the data file '
                           'is damaged; download it again.')
    return np.frombuffer(raw.tobytes(), dtype).astype(
        dtype.newbyteorder('='), copy=False).reshape(e.shape)
