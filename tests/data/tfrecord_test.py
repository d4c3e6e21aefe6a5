"""TFRecord framing: round trip, checksums, truncation, atomic writes."""

import os
import struct

import pytest

from prefalign.data import tfrecord


def test_masked_crc32c_known_value():
  # CRC32C("123456789") = 0xE3069283 (RFC 3720); masking as TensorFlow does.
  crc = 0xE3069283
  expected = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
  assert tfrecord.masked_crc32c(b'123456789') == expected


def test_round_trip(tmp_path):
  path = tmp_path / 'a.tfrecord'
  payloads = [b'', b'x', os.urandom(1000), b'hello' * 100]
  assert tfrecord.write_records(path, payloads) == 4
  got = list(tfrecord.read_records(path))
  assert [i for i, _ in got] == [0, 1, 2, 3]
  assert [d for _, d in got] == payloads


def test_truncated_file_names_file_and_record(tmp_path):
  path = tmp_path / 'trunc.tfrecord'
  tfrecord.write_records(path, [b'a' * 50, b'b' * 50])
  data = path.read_bytes()
  path.write_bytes(data[:-10])
  it = tfrecord.read_records(path)
  assert next(it) == (0, b'a' * 50)
  with pytest.raises(tfrecord.RecordError, match=r'trunc\.tfrecord.*record 1'):
    next(it)


@pytest.mark.parametrize('offset,what', [(3, 'length checksum'),
                                         (20, 'data checksum')])
def test_flipped_byte_fails_crc(tmp_path, offset, what):
  path = tmp_path / 'flip.tfrecord'
  tfrecord.write_records(path, [b'z' * 64])
  data = bytearray(path.read_bytes())
  data[offset] ^= 0x40
  path.write_bytes(bytes(data))
  with pytest.raises(tfrecord.RecordError, match=what) as info:
    list(tfrecord.read_records(path))
  assert info.value.record == 0
  assert info.value.path == str(path)


def test_crc_check_can_be_disabled(tmp_path):
  path = tmp_path / 'flip.tfrecord'
  tfrecord.write_records(path, [b'z' * 64])
  data = bytearray(path.read_bytes())
  data[20] ^= 0x40
  path.write_bytes(bytes(data))
  assert len(list(tfrecord.read_records(path, check_crc=False))) == 1


def test_writer_is_atomic(tmp_path):
  path = tmp_path / 'out.tfrecord'
  tfrecord.write_records(path, [b'keep'])
  with pytest.raises(RuntimeError):
    with tfrecord.TFRecordWriter(path) as w:
      w.write(b'new')
      raise RuntimeError('crash while writing')
  # The old file is untouched and no temporary file is left behind.
  assert [d for _, d in tfrecord.read_records(path)] == [b'keep']
  assert os.listdir(tmp_path) == ['out.tfrecord']


def test_header_layout(tmp_path):
  path = tmp_path / 'h.tfrecord'
  tfrecord.write_records(path, [b'abc'])
  raw = path.read_bytes()
  assert struct.unpack('<Q', raw[:8])[0] == 3
  assert len(raw) == 8 + 4 + 3 + 4
