"""WOSAC rollouts <-> ``ScenarioRollouts`` protos, submission files and our own
rollout files.

Representation
--------------
Rollouts of one scenario are a ``datatypes.Trajectory`` of shape ``(R, N, 80)``:
R rollouts (32 for the challenge) of the 80 simulated steps after the current
step, i.e. scenario steps 11..90, with rows aligned to the object rows of the
scenario's (unbatched) ``SimulatorState``. Only ``x``, ``y``, ``z``, ``yaw``
and ``valid`` are read when writing; box sizes come from the log at the
current step, as the official metric does.

*Sim agents* are the rows that hold a real track (``metadata.is_valid``) and
are valid in the log at the current step (index 10): every one of them must be
in every joint scene, and nothing else may be. A state read with a
``max_num_objects`` smaller than the number of objects valid at step 10 lacks
some sim agents, so its rollouts cannot form a complete submission; read with
the default 128 (the WOSAC maximum) or ``None``.

Files
-----
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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
import contextlib
import os
import re
import struct
import tarfile

from google.protobuf import message as pb_message
import numpy as np

from prefalign import datatypes
from prefalign import fileio
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.data.protos import sim_agents_submission_pb2 as submission_pb2

__all__ = [
    'NUM_ROLLOUTS',
    'SimulatedTrajectory',
    'JointScene',
    'ScenarioRollouts',
    'SimAgentsChallengeSubmission',
    'sim_agent_mask',
    'scenario_rollouts_from_trajectory',
    'trajectory_from_scenario_rollouts',
    'validate_scenario_rollouts',
    'write_submission',
    'write_submission_shards',
    'submission_shard_names',
    'pack_submission',
    'read_rollouts',
    'write_rollouts',
]

DataError = tfrecord.DataError
PathLike = str | os.PathLike
StateLike = datatypes.SimulatorState | womd.ScenarioExample

SimulatedTrajectory = submission_pb2.SimulatedTrajectory
JointScene = submission_pb2.JointScene
ScenarioRollouts = submission_pb2.ScenarioRollouts
SimAgentsChallengeSubmission = submission_pb2.SimAgentsChallengeSubmission

NUM_ROLLOUTS = 32
_CURRENT = datatypes.CURRENT_TIME_INDEX
_STEPS = datatypes.NUM_SIM_STEPS
# (proto field, Trajectory field) of the simulated coordinates.
_COORDS = (('center_x', 'x'), ('center_y', 'y'), ('center_z', 'z'),
           ('heading', 'yaw'))
# Optional per-step fields (scenario-generation format): empty or 80 values.
_OPTIONAL_STEP_FIELDS = ('width', 'length', 'height', 'valid')
_NUM_PARAMS = re.compile(r'^\d+(\.\d+)?[KMBT]?$')
_MAX_LISTED = 10


# ---------------------------------------------------------------------------
# Helpers.


def _unpack(state: StateLike, scenario_id: str | None
            ) -> tuple[datatypes.SimulatorState, str | None]:
  """(state, expected scenario id) from a state or a ScenarioExample."""
  if isinstance(state, womd.ScenarioExample):
    if scenario_id is not None and scenario_id != state.scenario_id:
      raise DataError(
          f'scenario_id {scenario_id!r} differs from the example\'s '
          f'{state.scenario_id!r}', scenario_id=state.scenario_id)
    scenario_id, state = state.scenario_id, state.state
  if state.shape:
    raise DataError(f'needs an unbatched SimulatorState, got batch shape '
                    f'{state.shape}', scenario_id=scenario_id)
  if state.num_timesteps <= _CURRENT:
    raise DataError(f'the state has {state.num_timesteps} steps; the log at '
                    f'the current step {_CURRENT} is needed',
                    scenario_id=scenario_id)
  return state, scenario_id


def sim_agent_mask(state: StateLike) -> np.ndarray:
  """bool (N,): rows that WOSAC simulates (real tracks valid at step 10)."""
  state, _ = _unpack(state, None)
  return (np.asarray(state.object_metadata.is_valid, bool)
          & np.asarray(state.log_trajectory.valid, bool)[:, _CURRENT])


def _ids_text(ids: Sequence[int]) -> str:
  ids = [int(i) for i in ids]
  text = ', '.join(map(str, ids[:_MAX_LISTED]))
  if len(ids) > _MAX_LISTED:
    text += f' and {len(ids) - _MAX_LISTED} more'
  return f'[{text}]'


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


_atomic_open = fileio.atomic_open

# No submitted coordinate may be farther than this from the map origin (m).
# WOMD scenes lie within about 17 km of their map's origin (16.8 km the
# largest |x| or |y| of any valid object in the 42 real scenes checked, 0.46
# km the largest |z|); 100 km is beyond any scene, so a coordinate past it is
# a bug (a unit or frame mix-up, a blown-up rollout), which would otherwise
# score as a finite, plausible-looking number.
MAX_ABS_COORDINATE = 1e5


# ---------------------------------------------------------------------------
# Trajectory -> proto.


def scenario_rollouts_from_trajectory(
    state: StateLike,
    scenario_id: str | None,
    rollouts: datatypes.Trajectory,
    *,
    allow_invalid: bool = False,
) -> ScenarioRollouts:
  """Packs simulated futures into a ``ScenarioRollouts`` proto.

  One ``SimulatedTrajectory`` per sim agent (see ``sim_agent_mask``) and
  rollout, in row order, with ``object_id`` from ``metadata.ids`` and the 80
  values of ``center_x/y/z`` and ``heading`` from ``x, y, z, yaw`` (as
  float32, unchanged: no yaw wrapping). Other rows are ignored, whatever they
  hold. Nothing else is written: WOSAC takes box sizes from the log at
  step 10 and treats sim agents as valid at every simulated step.

  Args:
    state: the unbatched state (or ``ScenarioExample``) the rollouts started
      from; its rows define the object order of ``rollouts``.
    scenario_id: the scenario's id; may be None when ``state`` is a
      ``ScenarioExample``.
    rollouts: Trajectory (R, N, 80) of the simulated steps 11..90.
    allow_invalid: write sim-agent steps that ``rollouts.valid`` marks invalid
      as they are stored instead of raising. The official metric scores every
      sim agent as valid throughout, so such steps are scored at whatever
      coordinates they hold (-1 fills, usually).

  Raises:
    DataError (a ValueError): wrong shapes, or a sim agent with a non-finite
      coordinate or (unless ``allow_invalid``) an invalid step, naming the
      scenario, rollout, object id and step.
  """
  state, scenario_id = _unpack(state, scenario_id)
  if not scenario_id:
    raise DataError('a scenario_id is needed to write ScenarioRollouts')

  def fail(msg):
    raise DataError(msg, scenario_id=scenario_id)

  n = state.num_objects
  shape = tuple(np.shape(rollouts.x))
  if len(shape) != 3 or shape[1:] != (n, _STEPS):
    fail(f'rollouts have shape {shape}; expected (num_rollouts, {n}, {_STEPS}):'
         f' {_STEPS} simulated steps for each of the state\'s {n} rows')
  for name in ('y', 'z', 'yaw', 'valid'):
    if tuple(np.shape(getattr(rollouts, name))) != shape:
      fail(f'rollouts.{name} has shape {np.shape(getattr(rollouts, name))}, '
           f'but rollouts.x has {shape}')

  mask = sim_agent_mask(state)
  rows = np.flatnonzero(mask)
  ids = np.asarray(state.object_metadata.ids)[rows]
  coords = {}
  for proto_name, name in _COORDS:
    with np.errstate(over='ignore', invalid='ignore'):
      v = np.asarray(getattr(rollouts, name))[:, rows].astype(np.float32)
    bad = ~np.isfinite(v)
    if bad.any():
      r, k, t = np.argwhere(bad)[0]
      original = np.asarray(getattr(rollouts, name))[r, rows[k], t]
      fail(f'rollout {r}: sim agent object id {ids[k]} (row {rows[k]}) has '
           f'non-finite {name}={original} (as float32: {v[r, k, t]}) at '
           f'simulated step {t} (scenario step {_CURRENT + 1 + t})')
    coords[proto_name] = v
  if not allow_invalid:
    valid = np.asarray(rollouts.valid, bool)[:, rows]
    if not valid.all():
      r, k, t = np.argwhere(~valid)[0]
      fail(f'rollout {r}: sim agent object id {ids[k]} (row {rows[k]}) is '
           f'invalid at simulated step {t} (scenario step {_CURRENT + 1 + t});'
           ' WOSAC scores every sim agent at every step (pass '
           'allow_invalid=True to write the stored values anyway)')

  out = ScenarioRollouts(scenario_id=scenario_id)
  for r in range(shape[0]):
    scene = out.joint_scenes.add()
    for k, object_id in enumerate(ids.tolist()):
      scene.simulated_trajectories.add(
          object_id=object_id,
          **{f: coords[f][r, k].tolist() for f, _ in _COORDS})
  return out


# ---------------------------------------------------------------------------
# Proto -> trajectory, and validation.


def _gather(proto: ScenarioRollouts, state: datatypes.SimulatorState,
            sid: str | None) -> np.ndarray:
  """Checks every joint scene; returns float32 (4, R, N, 80) coordinates.

  Coordinates follow ``_COORDS``; rows that are not sim agents hold -1.
  """
  def fail(msg):
    raise DataError(msg, scenario_id=sid)

  meta = state.object_metadata
  ids = np.asarray(meta.ids)
  types = np.asarray(meta.object_types)
  real = np.asarray(meta.is_valid, bool)
  mask = sim_agent_mask(state)
  row_of_id: dict[int, int] = {}
  for row in np.flatnonzero(real).tolist():
    oid = int(ids[row])
    if oid in row_of_id:
      fail(f'the state holds object id {oid} twice (rows {row_of_id[oid]} '
           f'and {row})')
    row_of_id[oid] = row
  agent_rows = np.flatnonzero(mask)

  num_rollouts = len(proto.joint_scenes)
  out = np.full((len(_COORDS), num_rollouts, state.num_objects, _STEPS), -1.0,
                np.float32)
  for r, scene in enumerate(proto.joint_scenes):
    seen: dict[int, int] = {}
    for k, traj in enumerate(scene.simulated_trajectories):
      if not traj.HasField('object_id'):
        fail(f'rollout {r}: simulated trajectory {k} has no object_id')
      oid = traj.object_id
      where = f'rollout {r}: object id {oid}'
      if oid in seen:
        fail(f'{where} appears twice in the joint scene (simulated '
             f'trajectories {seen[oid]} and {k}); each sim agent must appear '
             'exactly once')
      seen[oid] = k
      row = row_of_id.get(oid)
      if row is None:
        fail(f'{where} is not an object of the scenario\'s state (an extra '
             'object; only sim agents may be submitted)')
      if not mask[row]:
        fail(f'{where} is not a sim agent: it is not valid at the current '
             f'step {_CURRENT} (an extra object; only sim agents may be '
             'submitted)')
      for i, (field, _) in enumerate(_COORDS):
        values = getattr(traj, field)
        if len(values) != _STEPS:
          fail(f'{where}: {field} has {len(values)} values, expected '
               f'{_STEPS}')
        out[i, r, row] = np.asarray(values, np.float32)
      for field in _OPTIONAL_STEP_FIELDS:
        count = len(getattr(traj, field))
        if count not in (0, _STEPS):
          fail(f'{where}: {field} has {count} values, expected 0 or '
               f'{_STEPS}')
      if traj.HasField('object_type') and traj.object_type != types[row]:
        fail(f'{where}: object_type {traj.object_type} differs from the '
             f'logged type {types[row]}')
    missing = [int(ids[row]) for row in agent_rows if int(ids[row]) not in seen]
    if missing:
      fail(f'rollout {r}: {len(missing)} of {len(agent_rows)} sim agents '
           f'are missing from the joint scene: object ids '
           f'{_ids_text(missing)}')

  bad = ~np.isfinite(out[:, :, agent_rows])
  if bad.any():
    i, r, k, t = np.argwhere(bad)[0]
    fail(f'rollout {r}: object id {ids[agent_rows[k]]} has non-finite '
         f'{_COORDS[i][0]}={out[i, r, agent_rows[k], t]} at simulated step '
         f'{t} (scenario step {_CURRENT + 1 + t})')
  xyz = [i for i, (field, _) in enumerate(_COORDS)
         if field in ('center_x', 'center_y', 'center_z')]
  far = np.abs(out[xyz][:, :, agent_rows]) > MAX_ABS_COORDINATE
  if far.any():
    i, r, k, t = np.argwhere(far)[0]
    fail(f'rollout {r}: object id {ids[agent_rows[k]]} has '
         f'{_COORDS[xyz[i]][0]}={out[xyz[i], r, agent_rows[k], t]:.6g} at '
         f'simulated step {t} (scenario step {_CURRENT + 1 + t}), beyond '
         f'the {MAX_ABS_COORDINATE:g} m from the map origin that any WOMD '
         'scene holds')
  return out


def _check_scenario_id(proto: ScenarioRollouts, expected: str | None,
                       required: bool) -> str:
  sid = proto.scenario_id
  if not sid and required:
    raise DataError('ScenarioRollouts has no scenario_id',
                    scenario_id=expected)
  if expected is not None and sid != expected:
    raise DataError(
        f'the rollouts are for scenario {sid!r}, but the state is scenario '
        f'{expected!r}', scenario_id=sid or expected)
  return sid or expected


def trajectory_from_scenario_rollouts(
    proto: ScenarioRollouts,
    state: StateLike,
    *,
    scenario_id: str | None = None,
) -> datatypes.Trajectory:
  """Unpacks a ``ScenarioRollouts`` onto the rows of ``state``.

  The inverse of ``scenario_rollouts_from_trajectory``. Each
  ``SimulatedTrajectory`` is placed on the row whose ``metadata.ids`` equals
  its ``object_id``; the order within a joint scene does not matter.

  Returns:
    Trajectory (R, N, 80), R = the number of joint scenes (not checked here:
    see ``validate_scenario_rollouts``). Sim-agent rows are valid at every
    step, with ``x, y, z, yaw`` as stored (float32-exact), ``length, width,
    height`` from the log at step 10, ``timestamp_micros`` continuing the
    log's clock at 10 Hz, and ``vel_x, vel_y`` as backward differences
    (the first from the logged position at step 10). Other rows (objects
    not valid at step 10, padding) are invalid and filled with -1.
    ``width``, ``length``, ``height`` and ``valid`` of the proto are not
    used (the Sim Agents challenge ignores them too).

  Raises:
    DataError (a ValueError), naming the scenario and the object: a
      scenario_id different from ``scenario_id`` (or the example's); an
      object without object_id; a coordinate field without exactly 80
      values; an object twice in one joint scene; an object that is not a sim
      agent of the state; sim agents missing from a joint scene; a NaN or
      infinite coordinate.
  """
  state, expected = _unpack(state, scenario_id)
  sid = _check_scenario_id(proto, expected, required=False)
  coords = _gather(proto, state, sid)
  mask = sim_agent_mask(state)
  num_rollouts = coords.shape[1]
  shape = (num_rollouts, state.num_objects, _STEPS)
  valid = np.broadcast_to(mask[None, :, None], shape)
  log = state.log_trajectory

  def from_log(field, dtype):
    now = np.asarray(getattr(log, field))[:, _CURRENT].astype(dtype)
    return now, np.where(valid, now[None, :, None], np.asarray(-1, dtype))

  fields = {name: coords[i] for i, (_, name) in enumerate(_COORDS)}
  for name in ('length', 'width', 'height'):
    fields[name] = from_log(name, np.float32)[1]
  for name, vel in (('x', 'vel_x'), ('y', 'vel_y')):
    now = from_log(name, np.float32)[0]
    prev = np.concatenate(
        [np.broadcast_to(now[None, :, None], shape[:2] + (1,)),
         fields[name][..., :-1]], axis=-1)
    v = (fields[name] - prev) / np.float32(datatypes.TIME_INTERVAL)
    fields[vel] = np.where(valid, v, np.float32(-1)).astype(np.float32)
  now_micros = from_log('timestamp_micros', np.int64)[0]
  micros = (now_micros[None, :, None] + datatypes.TIMESTEP_MICROS_INTERVAL *
            np.arange(1, _STEPS + 1, dtype=np.int64))
  fields['timestamp_micros'] = np.where(valid, micros, -1).astype(np.int32)
  return datatypes.Trajectory(valid=np.array(valid), **fields)


def validate_scenario_rollouts(
    proto: ScenarioRollouts,
    state: StateLike,
    *,
    num_rollouts: int = NUM_ROLLOUTS,
    scenario_id: str | None = None,
) -> None:
  """The official ``validate_scenario_rollouts`` rules, plus finiteness.

  Checks: ``scenario_id`` is set (and equals ``scenario_id`` or the example's
  when known); exactly ``num_rollouts`` joint scenes; every joint scene holds
  every sim agent exactly once and nothing else; ``center_x/y/z`` and
  ``heading`` have exactly 80 values each, all finite.

  Raises:
    DataError (a ValueError) naming the scenario and, where one is at fault,
      the rollout and object id.
  """
  state, expected = _unpack(state, scenario_id)
  sid = _check_scenario_id(proto, expected, required=True)
  if len(proto.joint_scenes) != num_rollouts:
    raise DataError(f'{len(proto.joint_scenes)} joint scenes (rollouts), '
                    f'expected exactly {num_rollouts}', scenario_id=sid)
  _gather(proto, state, sid)


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
    paths: files, globs or ``name@N`` shard patterns (``womd.expand_paths``).

  Raises:
    DataError: a file in neither format, or a bad record, naming the file
      (and record).
    FileNotFoundError: a pattern that matches nothing.
  """
  for path in womd.expand_paths(paths):
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
