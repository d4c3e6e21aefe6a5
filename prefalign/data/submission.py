"""WOSAC rollouts <-> ``ScenarioRollouts`` protos, and their validation.

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

Official submission files and our own rollout files of these protos are
written and read by ``submission_files``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prefalign import datatypes
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
]

DataError = tfrecord.DataError
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
  """'[1, 2, ...]', the first ten ids and how many more."""
  ids = [int(i) for i in ids]
  text = ', '.join(map(str, ids[:_MAX_LISTED]))
  if len(ids) > _MAX_LISTED:
    text += f' and {len(ids) - _MAX_LISTED} more'
  return f'[{text}]'


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
