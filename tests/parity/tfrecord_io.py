"""TFRecord framing by hand (standard library only).

A TFRecord file is a sequence of ``uint64 length``, ``uint32
masked_crc32c(length)``, ``data``, ``uint32 masked_crc32c(data)``, all little
endian. This module is imported both by the scripts that run inside the
official venvs (``official_metrics.py``, ``make_rollouts.py``) and by the
helpers in this project's venv, so it must not import anything but the
standard library.
"""

from collections.abc import Iterable, Iterator
import struct
from typing import BinaryIO

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected.


def _table() -> list[int]:
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ _POLY if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _table()


def crc32c(data: bytes) -> int:
  """CRC-32C of ``data`` (pure Python; about 1 s per 5 MB)."""
  crc = 0xFFFFFFFF
  table = _TABLE
  for b in data:
    crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The masked CRC that TFRecord stores."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def raw_records(path) -> Iterator[bytes]:
  """Yields every framed record of ``path`` *with* its framing bytes."""
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        raise ValueError(f'{path}: truncated TFRecord header')
      (n,) = struct.unpack('<Q', header[:8])
      body = f.read(n + 4)
      if len(body) < n + 4:
        raise ValueError(f'{path}: truncated TFRecord record')
      yield header + body


def records(path) -> Iterator[bytes]:
  """Yields the payload of every record of ``path`` (CRCs not checked)."""
  for raw in raw_records(path):
    yield raw[12:-4]


def is_tfrecord(path) -> bool:
  """Whether ``path`` is framed as TFRecord (length CRCs checked to EOF)."""
  with open(path, 'rb') as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    if pos + 12 > len(data):
      return False
    header = data[pos:pos + 8]
    (n,) = struct.unpack('<Q', header)
    (crc,) = struct.unpack('<I', data[pos + 8:pos + 12])
    if crc != masked_crc32c(header) or pos + 16 + n > len(data):
      return False
    pos += 16 + n
  return pos == len(data) and pos > 0


def frame(data: bytes) -> bytes:
  """One framed record holding ``data``."""
  header = struct.pack('<Q', len(data))
  return (header + struct.pack('<I', masked_crc32c(header)) + data +
          struct.pack('<I', masked_crc32c(data)))


def write_records(f: BinaryIO, payloads: Iterable[bytes]) -> int:
  """Writes ``payloads`` as framed records to the open file ``f``."""
  count = 0
  for data in payloads:
    f.write(frame(data))
    count += 1
  return count
