"""TFRecord framing without TensorFlow: read and write, CRC32C checked.

A TFRecord file is a sequence of records, each framed as::

  uint64 length | uint32 masked_crc32c(length) | data |
  uint32 masked_crc32c(data)

(little endian). ``masked_crc32c`` rotates the CRC32C (Castagnoli) checksum and
adds a constant, as TensorFlow and Waymo's tools do. Both checksums are
verified on read, so a truncated file or a flipped byte is reported with the
file and the record index instead of being parsed into nonsense.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
import dataclasses
import os
import struct
from typing import BinaryIO

import google_crc32c

from prefalign import fileio

__all__ = [
    'DataError',
    'RecordError',
    'masked_crc32c',
    'read_records',
    'write_records',
    'TFRecordWriter',
]

PathLike = str | os.PathLike

_HEADER = struct.Struct('<QI')
_FOOTER = struct.Struct('<I')
_MASK_DELTA = 0xA282EAD8


class DataError(ValueError):
  """Bad input data; the message names the file, record and scenario."""

  def __init__(self, message: str, *, path: PathLike | None = None,
               record: int | None = None, scenario_id: str | None = None):
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


# How far past a broken frame the reader looks for the next valid header,
# per read (a broken frame's bytes are scanned in windows of this size).
_SCAN_WINDOW = 1 << 20


@dataclasses.dataclass
class _Reader:
  """Reads frames by offset; after a bad one, goes on where it can.

  A payload checksum error leaves the framing intact: the record is reported
  and the next one read. A framing error (a truncated record, a length field
  that fails its checksum or is longer than the rest of the file) is
  reported, then the reader resynchronises on the next offset that holds a
  whole valid frame (length checksum, length within the file and data
  checksum all good). A length is compared with the bytes left in the file
  before anything is allocated.
  """
  path: PathLike
  check_crc: bool

  def __iter__(self) -> Iterator[tuple[int, bytes | RecordError]]:
    with open(self.path, 'rb') as f:
      size = os.fstat(f.fileno()).st_size
      yield from self._records(f, size)

  def _frame(self, f: BinaryIO, pos: int, size: int, index: int
             ) -> tuple[bytes | None, RecordError | None, bool]:
    """The frame at ``pos``: (data, error, framing intact)."""
    f.seek(pos)
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
      return None, RecordError(
          f'truncated record header ({len(header)} of {_HEADER.size} bytes;'
          ' the file ends mid-record)', path=self.path, record=index), False
    length, length_crc = _HEADER.unpack(header)
    if self.check_crc and masked_crc32c(header[:8]) != length_crc:
      return None, RecordError(
          'length checksum mismatch (corrupted bytes, or not a TFRecord '
          'file)', path=self.path, record=index), False
    left = size - pos - _HEADER.size
    if length > left:
      return None, RecordError(
          f'truncated record: expected {length} bytes, only {max(left, 0)} '
          'left in the file', path=self.path, record=index), False
    data = f.read(length)
    if len(data) < length:  # the file shrank while being read
      return None, RecordError(
          f'truncated record: expected {length} bytes, found {len(data)}',
          path=self.path, record=index), False
    footer = f.read(_FOOTER.size)
    if len(footer) < _FOOTER.size:
      return None, RecordError('truncated record: missing data checksum',
                               path=self.path, record=index), False
    if self.check_crc and masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
      # Flipped payload bytes leave the framing intact: the file ends or a
      # valid header follows. Otherwise the length was wrong (a frame cut
      # short, bytes missing) and the next record may lie inside ``data``.
      end = pos + _HEADER.size + length + _FOOTER.size
      return None, RecordError('data checksum mismatch (corrupted bytes)',
                               path=self.path, record=index), (
                                   end == size or self._header_at(f, end, size))
    return data, None, True

  def _header_at(self, f: BinaryIO, pos: int, size: int) -> bool:
    """Whether a valid header of a frame that fits the file is at ``pos``."""
    f.seek(pos)
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
      return False
    length, length_crc = _HEADER.unpack(header)
    return (masked_crc32c(header[:8]) == length_crc and
            length <= size - pos - _HEADER.size - _FOOTER.size)

  def _resync(self, f: BinaryIO, start: int, size: int) -> int:
    """The first offset >= ``start`` holding a whole valid frame (``size``
    when there is none)."""
    pos = start
    while pos + _HEADER.size + _FOOTER.size <= size:
      f.seek(pos)
      window = f.read(min(_SCAN_WINDOW + _HEADER.size, size - pos))
      last = min(len(window) - _HEADER.size, _SCAN_WINDOW - 1)
      for i in range(last + 1):
        header = window[i:i + _HEADER.size]
        length, length_crc = _HEADER.unpack(header)
        if (masked_crc32c(header[:8]) == length_crc and
            length <= size - (pos + i) - _HEADER.size - _FOOTER.size):
          data, err, _ = self._frame(f, pos + i, size, 0)
          if err is None and data is not None:
            return pos + i
      pos += last + 1
    return size

  def _records(self, f: BinaryIO, size: int
               ) -> Iterator[tuple[int, bytes | RecordError]]:
    pos, index = 0, 0
    while pos < size:
      data, err, intact = self._frame(f, pos, size, index)
      if err is None:
        yield index, data
        pos += _HEADER.size + len(data) + _FOOTER.size
      elif intact:  # a bad payload: skip exactly this record
        yield index, err
        f.seek(pos)
        length = _HEADER.unpack(f.read(_HEADER.size))[0]
        pos += _HEADER.size + length + _FOOTER.size
      else:
        if not self.check_crc:  # nothing to resynchronise on
          yield index, err
          return
        nxt = self._resync(f, pos + 1, size)
        skipped = nxt - pos
        err = RecordError(
            f'{err.reason}; skipped {skipped} bytes'
            + (f' to the next valid record at byte {nxt}' if nxt < size
               else ' to the end of the file'),
            path=self.path, record=index)
        err.skipped_bytes = skipped
        yield index, err
        pos = nxt
      index += 1


def read_records(path: PathLike, *, check_crc: bool = True,
                 skip_bad_records: bool = False
                 ) -> Iterator[tuple[int, bytes | RecordError]]:
  """Yields ``(record_index, payload)`` for every record of a TFRecord file.

  Args:
    path: an uncompressed TFRecord file.
    check_crc: verify both checksums of every record.
    skip_bad_records: instead of raising, yield ``(index, RecordError)`` for
      each bad record and go on: past a record whose payload fails its
      checksum (its framing is intact), or, after a framing error, from the
      next offset that holds a valid frame (the error says how many bytes were
      skipped). Each skipped stretch counts as one record.

  Raises:
    RecordError: on a truncated record or a checksum mismatch, naming the file
      and the record index (unless ``skip_bad_records``). Records before the
      bad one have been yielded.
    FileNotFoundError: when the file does not exist.
  """
  records = iter(_Reader(path, check_crc))
  if skip_bad_records:
    return records
  return _raising(records)


def _raising(records):
  for index, data in records:
    if isinstance(data, RecordError):
      raise data
    yield index, data


class TFRecordWriter:
  """Writes records atomically: to a unique temporary file in the same
  folder (``fileio.atomic_open``), renamed to ``path`` on close.

  A crash mid-write therefore never leaves a truncated file under the final
  name, an existing file is only replaced once the new one is complete, and
  two processes writing one path never write into the same file.
  """

  def __init__(self, path: PathLike):
    self._path = os.fspath(path)
    self._context = fileio.atomic_open(self._path, 'wb')
    self._file: BinaryIO | None = self._context.__enter__()
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
    self._file = None
    self._context.__exit__(None, None, None)

  def abort(self) -> None:
    """Drops what was written; the final path is left untouched."""
    if self._file is None:
      return
    self._file = None
    with contextlib.suppress(_Abort):
      self._context.__exit__(_Abort, _Abort(), None)

  def __enter__(self) -> TFRecordWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


class _Abort(Exception):
  """Thrown into the atomic writer to drop its temporary file."""


def write_records(path: PathLike, records: Iterable[bytes]) -> int:
  """Writes ``records`` to a new TFRecord file; returns how many it wrote."""
  with TFRecordWriter(path) as w:
    for r in records:
      w.write(r)
    return w.num_records
