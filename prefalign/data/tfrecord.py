"""TFRecord framing without TensorFlow: read and write, CRC32C checked.

A TFRecord file is a sequence of records, each framed as::

  uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

(little endian). ``masked_crc32c`` rotates the CRC32C (Castagnoli) checksum and
adds a constant, as TensorFlow and Waymo's tools do. Both checksums are
verified on read, so a truncated file or a flipped byte is reported with the
file and the record index instead of being parsed into nonsense.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import BinaryIO, Iterable, Iterator, Optional, Union

import google_crc32c

__all__ = [
    'DataError',
    'RecordError',
    'masked_crc32c',
    'read_records',
    'write_records',
    'TFRecordWriter',
]

PathLike = Union[str, os.PathLike]

_HEADER = struct.Struct('<QI')
_FOOTER = struct.Struct('<I')
_MASK_DELTA = 0xA282EAD8


class DataError(ValueError):
  """Bad input data; the message names the file, record and scenario."""

  def __init__(self, message: str, *, path: Optional[PathLike] = None,
               record: Optional[int] = None, scenario_id: Optional[str] = None):
    where = []
    if path is not None:
      where.append(f'file {os.fspath(path)}')
    if record is not None:
      where.append(f'record {record}')
    if scenario_id:
      where.append(f'scenario {scenario_id!r}')
    prefix = (', '.join(where) + ': ') if where else ''
    super().__init__(prefix + message)
    self.path = None if path is None else os.fspath(path)
    self.record = record
    self.scenario_id = scenario_id
    self.reason = message


class RecordError(DataError):
  """A record whose framing or checksum is broken."""


def masked_crc32c(data: bytes) -> int:
  """The masked CRC32C of ``data`` used by the TFRecord format."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


@dataclasses.dataclass
class _Reader:
  path: PathLike
  check_crc: bool

  def __iter__(self) -> Iterator[tuple[int, bytes]]:
    with open(self.path, 'rb') as f:
      yield from self._records(f)

  def _records(self, f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    index = 0
    while True:
      header = f.read(_HEADER.size)
      if not header:
        return
      if len(header) < _HEADER.size:
        raise RecordError(
            f'truncated record header ({len(header)} of {_HEADER.size} bytes;'
            ' the file ends mid-record)', path=self.path, record=index)
      length, length_crc = _HEADER.unpack(header)
      if self.check_crc and masked_crc32c(header[:8]) != length_crc:
        raise RecordError(
            'length checksum mismatch (corrupted bytes, or not a TFRecord '
            'file)', path=self.path, record=index)
      data = f.read(length)
      if len(data) < length:
        raise RecordError(
            f'truncated record: expected {length} bytes, found {len(data)}',
            path=self.path, record=index)
      footer = f.read(_FOOTER.size)
      if len(footer) < _FOOTER.size:
        raise RecordError('truncated record: missing data checksum',
                          path=self.path, record=index)
      if self.check_crc and masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
        raise RecordError('data checksum mismatch (corrupted bytes)',
                          path=self.path, record=index)
      yield index, data
      index += 1


def read_records(path: PathLike, *, check_crc: bool = True
                 ) -> Iterator[tuple[int, bytes]]:
  """Yields ``(record_index, payload)`` for every record of a TFRecord file.

  Args:
    path: an uncompressed TFRecord file.
    check_crc: verify both checksums of every record.

  Raises:
    RecordError: on a truncated record or a checksum mismatch, naming the file
      and the record index. Records before the bad one have been yielded.
    FileNotFoundError: when the file does not exist.
  """
  return iter(_Reader(path, check_crc))


class TFRecordWriter:
  """Writes records atomically: to ``path + '.tmp'``, renamed on close.

  A crash mid-write therefore never leaves a truncated file under the final
  name, and an existing file is only replaced once the new one is complete.
  """

  def __init__(self, path: PathLike):
    self._path = os.fspath(path)
    self._tmp = self._path + '.tmp'
    self._file: Optional[BinaryIO] = open(self._tmp, 'wb')
    self.num_records = 0

  def write(self, data: bytes) -> None:
    if self._file is None:
      raise ValueError(f'{self._path}: writer is closed.')
    header = struct.pack('<Q', len(data))
    self._file.write(header)
    self._file.write(struct.pack('<I', masked_crc32c(header)))
    self._file.write(data)
    self._file.write(struct.pack('<I', masked_crc32c(data)))
    self.num_records += 1

  def close(self) -> None:
    if self._file is None:
      return
    self._file.flush()
    os.fsync(self._file.fileno())
    self._file.close()
    self._file = None
    os.replace(self._tmp, self._path)

  def abort(self) -> None:
    """Drops what was written; the final path is left untouched."""
    if self._file is not None:
      self._file.close()
      self._file = None
    if os.path.exists(self._tmp):
      os.remove(self._tmp)

  def __enter__(self) -> 'TFRecordWriter':
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def write_records(path: PathLike, records: Iterable[bytes]) -> int:
  """Writes ``records`` to a new TFRecord file; returns how many were written."""
  with TFRecordWriter(path) as w:
    for r in records:
      w.write(r)
    return w.num_records
