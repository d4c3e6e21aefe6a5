"""WOSAC submission files and our own rollout files of ``ScenarioRollouts``.

* Official submission: one serialised ``SimAgentsChallengeSubmission`` per file
  (``write_submission``); the leaderboard takes a ``.tar.gz`` of shards named
  ``submission.binproto-00000-of-0000N`` (``write_submission_shards``, packed
  by ``pack_submission``). The protos here are field-compatible with Waymo's.
* Our rollout files: a TFRecord whose records are serialised
  ``ScenarioRollouts`` (``write_rollouts``), streamable and appendable per
  scenario without holding a whole submission in memory.

``read_rollouts`` reads both, telling them apart by the TFRecord framing: a
TFRecord's first 12 bytes (length and its masked CRC32C) check out, which for
a submission proto happens with probability 2**-32.

Every write goes to a temporary file in the target folder that is renamed
into place only when complete, so a failure never leaves a partial file.
The ``ScenarioRollouts`` themselves are built and checked against a state by
``submission``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
import contextlib
import os
import re
import struct
import tarfile

from google.protobuf import message as pb_message

from prefalign import fileio
from prefalign.data import tfrecord
from prefalign.data import womd_files
from prefalign.data.protos import sim_agents_submission_pb2 as submission_pb2

__all__ = [
    'write_submission',
    'write_submission_shards',
    'submission_shard_names',
    'pack_submission',
    'read_rollouts',
    'write_rollouts',
]

DataError = tfrecord.DataError
PathLike = str | os.PathLike

ScenarioRollouts = submission_pb2.ScenarioRollouts
SimAgentsChallengeSubmission = submission_pb2.SimAgentsChallengeSubmission

_NUM_PARAMS = re.compile(r'^\d+(\.\d+)?[KMBT]?$')
_atomic_open = fileio.atomic_open


# ---------------------------------------------------------------------------
# Proto checks.


def _check_message(msg, name: str) -> None:
  """Raises TypeError unless ``msg`` is a proto message called ``name``."""
  descriptor = getattr(msg, 'DESCRIPTOR', None)
  if not isinstance(msg, pb_message.Message) or descriptor.name != name:
    raise TypeError(f'expected a {name} proto, got {type(msg).__name__}')


def _has_unknown_fields(msg: pb_message.Message) -> bool:
  try:
    from google.protobuf import unknown_fields
    return len(unknown_fields.UnknownFieldSet(msg)) > 0
  except ImportError:  # protobuf < 4.24
    return len(msg.UnknownFields()) > 0


def _looks_like(msg: pb_message.Message) -> bool:
  """Parsed with no unknown fields here and in a sample of nested messages.

  Arbitrary bytes often parse as *some* proto, with everything in unknown
  fields; real files of the expected type have none.
  """
  if _has_unknown_fields(msg):
    return False
  for field, value in msg.ListFields():
    if field.type != field.TYPE_MESSAGE:
      continue
    # A repeated field's value is a container (empty ones are not listed).
    sample = value if isinstance(value, pb_message.Message) else value[0]
    if not _looks_like(sample):
      return False
  return True


# ---------------------------------------------------------------------------
# Official submission files.


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


# Wire tag of SimAgentsChallengeSubmission.scenario_rollouts (field 1, LEN).
_ROLLOUTS_TAG = _varint((1 << 3) | 2)


def _submission_header(
    *,
    account_name: str,
    unique_method_name: str,
    authors: str | Sequence[str],
    affiliation: str,
    description: str,
    method_link: str,
    num_model_parameters: str,
    acknowledge_complies_with_closed_loop_requirement: bool,
    uses_lidar_data: bool = False,
    uses_camera_data: bool = False,
    uses_public_model_pretraining: bool = False,
    public_model_names: Sequence[str] = (),
) -> bytes:
  """The serialised submission metadata (no scenario_rollouts)."""
  if isinstance(authors, str):
    authors = [authors]
  if isinstance(public_model_names, str):
    public_model_names = [public_model_names]
  for name, value in (('account_name', account_name),
                      ('unique_method_name', unique_method_name)):
    if not value:
      raise ValueError(f'{name} must be set for a submission')
  if not _NUM_PARAMS.match(str(num_model_parameters)):
    raise ValueError(
        f'num_model_parameters={num_model_parameters!r}: give a number with a '
        'multiplier suffix, e.g. "200K" or "7M"')
  header = SimAgentsChallengeSubmission(
      submission_type=SimAgentsChallengeSubmission.SIM_AGENTS_SUBMISSION,
      account_name=account_name,
      unique_method_name=unique_method_name,
      authors=list(authors),
      affiliation=affiliation,
      description=description,
      method_link=method_link,
      uses_lidar_data=bool(uses_lidar_data),
      uses_camera_data=bool(uses_camera_data),
      uses_public_model_pretraining=bool(uses_public_model_pretraining),
      public_model_names=list(public_model_names),
      num_model_parameters=str(num_model_parameters),
      acknowledge_complies_with_closed_loop_requirement=bool(
          acknowledge_complies_with_closed_loop_requirement),
  )
  return header.SerializeToString()


def _rollouts_entries(scenario_rollouts: Iterable[ScenarioRollouts]
                      ) -> Iterator[bytes]:
  """Each ScenarioRollouts as a ``scenario_rollouts`` field record.

  Concatenated after the header, these serialise the same message as adding
  them to ``scenario_rollouts`` (protobuf merges repeated fields across
  records), without holding the whole submission in memory.
  """
  seen = set()
  for i, sr in enumerate(scenario_rollouts):
    _check_message(sr, 'ScenarioRollouts')
    if not sr.scenario_id:
      raise DataError(f'ScenarioRollouts number {i} has no scenario_id')
    if sr.scenario_id in seen:
      raise DataError('the scenario appears twice in the submission',
                      scenario_id=sr.scenario_id)
    seen.add(sr.scenario_id)
    data = sr.SerializeToString()
    yield _ROLLOUTS_TAG + _varint(len(data)) + data


def write_submission(
    path: PathLike,
    scenario_rollouts: Iterable[ScenarioRollouts],
    *,
    account_name: str,
    unique_method_name: str,
    authors: str | Sequence[str],
    affiliation: str,
    description: str,
    method_link: str,
    num_model_parameters: str,
    acknowledge_complies_with_closed_loop_requirement: bool,
    uses_lidar_data: bool = False,
    uses_camera_data: bool = False,
    uses_public_model_pretraining: bool = False,
    public_model_names: Sequence[str] = (),
) -> int:
  """Writes one ``SimAgentsChallengeSubmission`` binproto file, atomically.

  ``submission_type`` is SIM_AGENTS_SUBMISSION. Rollouts are streamed to
  disk, so the iterable may be a generator over many scenarios.

  Args:
    path: the file to write.
    scenario_rollouts: ScenarioRollouts protos, one per scenario.
    account_name: the e-mail registered at waymo.com/open (required).
    unique_method_name: the method's leaderboard name (required).
    authors: a list of names (a single string is one author).
    affiliation, description, method_link: strings.
    num_model_parameters: e.g. "200K", "7M", "1.5B".
    acknowledge_complies_with_closed_loop_requirement: bool, required: the
      method simulates closed-loop at 10 Hz (WOSAC task constraints).
    uses_lidar_data, uses_camera_data, uses_public_model_pretraining: bool,
      default False.
    public_model_names: names of public models used, default none.

  Returns:
    The number of scenarios written.

  Raises:
    ValueError: bad metadata, a ScenarioRollouts without scenario_id, or a
      scenario given twice; nothing is written then.
    TypeError: an item that is not a ScenarioRollouts proto.
  """
  header = _submission_header(
      account_name=account_name, unique_method_name=unique_method_name,
      authors=authors, affiliation=affiliation, description=description,
      method_link=method_link, num_model_parameters=num_model_parameters,
      acknowledge_complies_with_closed_loop_requirement=(
          acknowledge_complies_with_closed_loop_requirement),
      uses_lidar_data=uses_lidar_data, uses_camera_data=uses_camera_data,
      uses_public_model_pretraining=uses_public_model_pretraining,
      public_model_names=public_model_names)
  count = 0
  with _atomic_open(path) as f:
    f.write(header)
    for entry in _rollouts_entries(scenario_rollouts):
      f.write(entry)
      count += 1
  return count


def submission_shard_names(num_shards: int) -> list[str]:
  """``submission.binproto-0000i-of-0000N``, the leaderboard's shard names."""
  if num_shards < 1:
    raise ValueError(f'num_shards must be at least 1, got {num_shards}')
  return [f'submission.binproto-{i:05d}-of-{num_shards:05d}'
          for i in range(num_shards)]


def write_submission_shards(
    directory: PathLike,
    scenario_rollouts: Iterable[ScenarioRollouts],
    num_shards: int,
    *,
    archive: PathLike | None = None,
    **meta,
) -> list[str]:
  """Writes a sharded submission, optionally packed for upload.

  Scenarios go to the shards round robin (scenario i to shard
  i % num_shards), so the iterable is streamed and need not be counted
  first. Every shard is a complete ``SimAgentsChallengeSubmission`` carrying
  the same metadata (a shard may hold no scenario when there are fewer
  scenarios than shards). Shards are named as in the WOSAC tutorial,
  ``submission.binproto-00000-of-0000N``; all of them appear only once every
  one is complete.

  Args:
    directory: created if needed. Other files in it are left alone.
    scenario_rollouts: the ScenarioRollouts to submit.
    num_shards: how many files.
    archive: if given, also writes this ``.tar.gz`` with the shards at its
      top level, which is what the leaderboard's upload takes.
    **meta: the metadata of ``write_submission``.

  Returns:
    The shard paths, in shard order.
  """
  names = submission_shard_names(num_shards)
  header = _submission_header(**meta)
  os.makedirs(directory, exist_ok=True)
  paths = [os.path.join(os.fspath(directory), n) for n in names]
  with contextlib.ExitStack() as stack:
    files = [stack.enter_context(_atomic_open(p)) for p in paths]
    for f in files:
      f.write(header)
    for i, entry in enumerate(_rollouts_entries(scenario_rollouts)):
      files[i % num_shards].write(entry)
  if archive is not None:
    pack_submission(paths, archive)
  return paths


def pack_submission(paths: Sequence[PathLike], archive: PathLike) -> str:
  """Packs shard files into a gzipped tar with the files at its top level.

  Returns:
    ``archive`` as a string. Written atomically.
  """
  names = [os.path.basename(os.fspath(p)) for p in paths]
  if len(set(names)) != len(names):
    raise ValueError(f'shard file names repeat: {names}')
  archive = os.fspath(archive)
  with _atomic_open(archive) as f:
    with tarfile.open(fileobj=f, mode='w:gz') as tar:
      for path, name in zip(paths, names):
        tar.add(os.fspath(path), arcname=name, recursive=False)
  return archive


# ---------------------------------------------------------------------------
# Reading, and our own rollout files.


def _is_tfrecord(head: bytes) -> bool:
  if len(head) < 12:
    return False
  (crc,) = struct.unpack('<I', head[8:12])
  return tfrecord.masked_crc32c(head[:8]) == crc


def _read_submission(path: str) -> Iterator[ScenarioRollouts]:
  with open(path, 'rb') as f:
    data = f.read()
  msg = SimAgentsChallengeSubmission()
  reason = None
  try:
    msg.ParseFromString(data)
  except pb_message.DecodeError as e:
    reason = f'it does not parse ({e})'
  if reason is None and (not msg.ListFields() or not _looks_like(msg)):
    reason = 'its fields do not match that message'
  if reason is not None:
    raise DataError(
        'not a rollouts file: its first 12 bytes are not a TFRecord header '
        '(the length checksum fails), and it is not a '
        f'SimAgentsChallengeSubmission binproto: {reason}', path=path)
  yield from msg.scenario_rollouts


def _read_tfrecord(path: str) -> Iterator[ScenarioRollouts]:
  for index, data in tfrecord.read_records(path):
    sr = ScenarioRollouts()
    try:
      sr.ParseFromString(data)
    except pb_message.DecodeError as e:
      raise DataError(f'record is not a ScenarioRollouts proto ({e})',
                      path=path, record=index) from None
    if not _looks_like(sr):
      raise DataError('record is not a ScenarioRollouts proto (its fields do '
                      'not match that message)', path=path, record=index)
    yield sr


def read_rollouts(paths: PathLike | Sequence[PathLike]
                  ) -> Iterator[ScenarioRollouts]:
  """Yields every ``ScenarioRollouts`` in the given files, in file order.

  Each file is either an official ``SimAgentsChallengeSubmission`` binproto
  (its scenarios are yielded) or our TFRecord of ``ScenarioRollouts``
  records; the format is detected per file. An empty file holds none.

  Args:
    paths: files, globs or ``name@N`` shard patterns
      (``womd_files.expand_paths``).

  Raises:
    DataError: a file in neither format, or a bad record, naming the file
      (and record).
    FileNotFoundError: a pattern that matches nothing.
  """
  for path in womd_files.expand_paths(paths):
    with open(path, 'rb') as f:
      head = f.read(12)
    if not head:
      continue
    if _is_tfrecord(head):
      yield from _read_tfrecord(path)
    else:
      yield from _read_submission(path)


def write_rollouts(path: PathLike,
                   scenario_rollouts: Iterable[ScenarioRollouts]) -> int:
  """Writes our rollout file: a TFRecord of ``ScenarioRollouts``, atomically.

  Returns:
    The number of records written.
  """
  with tfrecord.TFRecordWriter(path) as writer:
    for sr in scenario_rollouts:
      _check_message(sr, 'ScenarioRollouts')
      writer.write(sr.SerializeToString())
    return writer.num_records
