"""WOMD ``Scenario`` protos -> padded ``SimulatorState``.

Converts each ``Scenario`` of real Waymo Open Motion Dataset files (and
anything written in the same format, such as this project's SUMO traffic)
into numpy-backed ``SimulatorState`` pytrees with fixed, configurable sizes
so that scenarios batch and jit with one shape (``state_from_scenario``,
``read_examples``). Reading and checking the files is ``womd_files``' (its
names are re-exported here), turning map features and signal states into
road-graph points and lights ``womd_map``'s, and the way back, SimulatorState
-> Scenario, ``womd_export``'s.

Selection rules when a scenario holds more than the configured maximum:

* **Objects** (default 128): the SDC, then ``tracks_to_predict``, then
  ``objects_of_interest``, then objects valid at the current step, then the
  rest; within each group the nearest to the SDC at the current step first
  (objects never valid rank last). The kept objects stay in their original
  track order, so a scenario that fits is reproduced row for row.
* **Road graph** (default 30,000 points): whole map features are kept, nearest
  to the SDC at the current step first (distance of the feature's nearest
  point), until the next nearest no longer fits. Kept features stay in their
  original order, points in polyline order.
* **Traffic lights** (default 32 controlled lanes; WOMD's tf.Example format
  keeps 16 but real scenarios carry up to 19): the lanes whose stop point is
  nearest to the SDC are kept.

Set a maximum to ``None`` to keep everything (no padding): that is what the
round trip ``Scenario -> SimulatorState -> Scenario``
(``womd_export.scenario_from_state``) uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import os
from typing import Any

import numpy as np

from prefalign import datatypes
from prefalign.data import tfrecord
from prefalign.data import womd_map
from prefalign.data.protos import scenario_pb2
from prefalign.data.womd_files import ReadStats
from prefalign.data.womd_files import check_scenario
from prefalign.data.womd_files import expand_paths
from prefalign.data.womd_files import parse_scenario
from prefalign.data.womd_files import read_scenarios
from prefalign.data.womd_files import scenario_info

__all__ = [
    'ReaderConfig',
    'ScenarioExample',
    'ReadStats',
    'DataError',
    'parse_scenario',
    'check_scenario',
    'state_from_scenario',
    'read_scenarios',
    'read_examples',
    'expand_paths',
    'scenario_info',
]

DataError = tfrecord.DataError
PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
  """How scenarios become padded states.

  Attributes:
    max_num_objects: rows of the object axis N (None: the scenario's count).
    max_roadgraph_points: road-graph points P (None: the scenario's count).
    max_traffic_lights: controlled lanes L (None: the scenario's count).
    num_timesteps: T; shorter scenarios (e.g. WOMD test-split inputs with 11
      steps) are padded with invalid steps, longer ones are an error.
    require_roadgraph: a scenario without any road-graph point is an error
      (the map-based metrics cannot score it).
    min_valid_objects: fewest objects valid at the current step.
    max_abs_coordinate: valid positions beyond this many metres are an error
      (float32 keeps about 6 cm of precision at 1e6 m).
    drop_sim_agents: with more tracks than ``max_num_objects`` the nearest
      ones (SDC, tracks to predict and objects of interest first) are kept
      and the others dropped and counted (``ScenarioExample.num_dropped_*``,
      ``ReadStats``). False: dropping a sim agent (a track valid at the
      current step, which WOSAC scores) is an error instead, so a realism
      number is never computed over a subset of a scenario's agents.
  """
  max_num_objects: int | None = 128
  max_roadgraph_points: int | None = 30_000
  max_traffic_lights: int | None = 32
  num_timesteps: int = datatypes.NUM_TIMESTEPS
  require_roadgraph: bool = True
  min_valid_objects: int = 1
  max_abs_coordinate: float = 1e6
  drop_sim_agents: bool = True


@dataclasses.dataclass
class ScenarioExample:
  """One converted scenario and where it came from."""
  state: datatypes.SimulatorState
  scenario_id: str
  path: str | None = None
  record: int | None = None
  # Index of each state row in the Scenario's ``tracks`` (-1 for padding).
  track_index: np.ndarray | None = None
  # Tracks, and sim agents among them, left out by ``max_num_objects``.
  num_dropped_objects: int = 0
  num_dropped_sim_agents: int = 0


# ---------------------------------------------------------------------------
# Scenario -> arrays.


def _track_arrays(scenario: scenario_pb2.Scenario) -> dict[str, np.ndarray]:
  """(num_tracks, num_steps) arrays of every ObjectState field."""
  rows = [[(s.center_x, s.center_y, s.center_z, s.velocity_x, s.velocity_y,
            s.heading, s.length, s.width, s.height, s.valid)
           for s in track.states] for track in scenario.tracks]
  a = np.asarray(rows, np.float64)  # [N, T, 10]
  names = ('x', 'y', 'z', 'vel_x', 'vel_y', 'yaw', 'length', 'width',
           'height', 'valid')
  return {n: a[..., i] for i, n in enumerate(names)}


def _pad(a: np.ndarray, size: int, axis: int, fill) -> np.ndarray:
  missing = size - a.shape[axis]
  if missing <= 0:
    return a
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, missing)
  return np.pad(a, widths, constant_values=fill)


def _select_objects(tracks: dict[str, np.ndarray], sdc: int,
                    priority: np.ndarray, current: int,
                    limit: int | None) -> np.ndarray:
  """Indices of the tracks to keep, in original order."""
  n = tracks['x'].shape[0]
  if limit is None or n <= limit:
    return np.arange(n)
  valid = tracks['valid'].astype(bool)
  sdc_xy = np.array([tracks['x'][sdc, current], tracks['y'][sdc, current]])
  # Distance of each object's nearest valid position, preferring the current.
  xy = np.stack([tracks['x'], tracks['y']], -1)
  dist_all = np.linalg.norm(xy - sdc_xy, axis=-1)
  dist_all = np.where(valid, dist_all, np.inf).min(axis=1)
  dist_now = np.where(valid[:, current],
                      np.linalg.norm(xy[:, current] - sdc_xy, axis=-1), np.inf)
  dist = np.where(np.isfinite(dist_now), dist_now, dist_all)
  group = np.full(n, 4)
  group[valid[:, current]] = 3
  group[priority == 2] = 2  # objects of interest
  group[priority == 1] = 1  # tracks to predict
  group[sdc] = 0
  order = np.lexsort((dist, group))
  return np.sort(order[:limit])


_COLUMNS = ('x', 'y', 'z', 'vel_x', 'vel_y', 'yaw', 'length', 'width',
            'height')


def _check_tracks(scenario: scenario_pb2.Scenario, tracks: dict[str, Any],
                  config: ReaderConfig, where: dict[str, Any]) -> None:
  """Finite, bounded values where valid; enough objects and the SDC now."""
  valid = tracks['valid'].astype(bool)
  current = scenario.current_time_index
  for name in _COLUMNS:
    bad = valid & ~np.isfinite(tracks[name])
    if bad.any():
      i, t = np.argwhere(bad)[0]
      raise DataError(f'track {i} (id {scenario.tracks[i].id}) has a '
                      f'non-finite {name} at step {t}', **where)
  for name in ('x', 'y', 'z'):
    bad = valid & (np.abs(tracks[name]) > config.max_abs_coordinate)
    if bad.any():
      i, t = np.argwhere(bad)[0]
      raise DataError(
          f'track {i} (id {scenario.tracks[i].id}) has {name}='
          f'{tracks[name][i, t]:.6g} at step {t}, beyond '
          f'max_abs_coordinate={config.max_abs_coordinate:g} m', **where)
  num_valid_now = int(valid[:, current].sum())
  if num_valid_now < config.min_valid_objects:
    raise DataError(f'{num_valid_now} objects are valid at the current step '
                    f'{current}; at least {config.min_valid_objects} needed',
                    **where)
  sdc = scenario.sdc_track_index
  if not valid[sdc, current]:
    raise DataError(f'the SDC (track {sdc}) is not valid at the current step '
                    f'{current}', **where)


@dataclasses.dataclass(frozen=True)
class _Selection:
  """Which tracks become rows, and what the rows are.

  Attributes:
    keep: (K,) track indices of the kept rows, in row order.
    num_rows: N, the padded row count (K when ``max_num_objects`` is None).
    ids: (num_tracks,) int64 track ids.
    interest: (num_tracks,) bool, the track is an object of interest.
    tracks_to_predict: (M,) int64 track indices.
    num_dropped: tracks left out.
    num_dropped_sim_agents: of those, valid at the current step.
  """
  keep: np.ndarray
  num_rows: int
  ids: np.ndarray
  interest: np.ndarray
  tracks_to_predict: np.ndarray
  num_dropped: int
  num_dropped_sim_agents: int


def _select_rows(scenario: scenario_pb2.Scenario, tracks: dict[str, Any],
                 config: ReaderConfig, where: dict[str, Any]) -> _Selection:
  """The kept tracks (``_select_objects``'s priorities); refuses to drop sim
  agents unless ``config.drop_sim_agents``."""
  valid = tracks['valid'].astype(bool)
  current, sdc = scenario.current_time_index, scenario.sdc_track_index
  num_tracks = len(scenario.tracks)
  priority = np.zeros(num_tracks, np.int64)
  ids = np.asarray([t.id for t in scenario.tracks], np.int64)
  interest = np.isin(ids, np.asarray(scenario.objects_of_interest, np.int64))
  priority[interest] = 2
  ttp = np.asarray([r.track_index for r in scenario.tracks_to_predict],
                   np.int64)
  priority[ttp] = 1
  keep = _select_objects(tracks, sdc, priority, current,
                         config.max_num_objects)
  dropped = np.ones(num_tracks, bool)
  dropped[keep] = False
  num_dropped_agents = int((dropped & valid[:, current]).sum())
  if num_dropped_agents and not config.drop_sim_agents:
    raise DataError(
        f'{int(valid[:, current].sum())} objects are valid at the current '
        f'step {current}, more than max_num_objects={config.max_num_objects}'
        f': {num_dropped_agents} sim agents would be left out of the metric; '
        'raise max_num_objects (WOSAC: 128) or set drop_sim_agents=True',
        **where)
  n = len(keep) if config.max_num_objects is None else config.max_num_objects
  return _Selection(keep=keep, num_rows=n, ids=ids, interest=interest,
                    tracks_to_predict=ttp, num_dropped=int(dropped.sum()),
                    num_dropped_sim_agents=num_dropped_agents)


def _log_trajectory(scenario: scenario_pb2.Scenario, tracks: dict[str, Any],
                    rows: _Selection, num_steps: int) -> datatypes.Trajectory:
  """(N, T) log of the kept rows, -1 / False where invalid or padded."""
  src_steps = len(scenario.timestamps_seconds)
  keep, n = rows.keep, rows.num_rows
  ts_micros = np.round(np.asarray(scenario.timestamps_seconds) * 1e6)
  if src_steps < num_steps:  # extend the clock at 10 Hz
    extra = ts_micros[-1] + datatypes.TIMESTEP_MICROS_INTERVAL * np.arange(
        1, num_steps - src_steps + 1)
    ts_micros = np.concatenate([ts_micros, extra])
  kept_valid = _pad(tracks['valid'].astype(bool)[keep], num_steps, 1, False)
  kept_valid = _pad(kept_valid, n, 0, False)
  traj = {}
  for name in _COLUMNS:
    # Headings are kept as logged: WOMD stores some outside [-pi, pi), and
    # the official WOSAC time-to-collision compares raw heading differences,
    # so wrapping here would change metric values.
    v = tracks[name][keep]
    v = _pad(_pad(v, num_steps, 1, -1.0), n, 0, -1.0)
    traj[name] = np.where(kept_valid, v, -1.0).astype(np.float32)
  micros = np.broadcast_to(ts_micros, (n, num_steps))
  traj['timestamp_micros'] = np.where(kept_valid, micros, -1).astype(np.int32)
  return datatypes.Trajectory(valid=kept_valid, **traj)


def _object_metadata(scenario: scenario_pb2.Scenario,
                     rows: _Selection) -> datatypes.ObjectMetadata:
  """(N,) metadata of the kept rows (padded rows invalid)."""
  keep, n = rows.keep, rows.num_rows
  types = np.asarray([t.object_type for t in scenario.tracks], np.int64)
  return datatypes.ObjectMetadata(
      ids=_pad(rows.ids[keep], n, 0, -1).astype(np.int32),
      object_types=_pad(types[keep], n, 0, 0).astype(np.int32),
      is_sdc=_pad(keep == scenario.sdc_track_index, n, 0, False),
      is_modeled=_pad(np.isin(keep, rows.tracks_to_predict), n, 0, False),
      is_valid=_pad(np.ones(len(keep), bool), n, 0, False),
      objects_of_interest=_pad(rows.interest[keep], n, 0, False),
      is_controlled=np.zeros(n, bool),
  )


def _roadgraph_points(scenario: scenario_pb2.Scenario, ref_xy: np.ndarray,
                      config: ReaderConfig, where: dict[str, Any]
                      ) -> datatypes.RoadgraphPoints:
  """(P,) road-graph points nearest ``ref_xy`` first (whole features)."""
  rg = womd_map.road_graph(scenario, ref_xy, config.max_roadgraph_points)
  num_pts = len(rg['ids'])
  if config.require_roadgraph and num_pts == 0:
    raise DataError('scenario has no road graph (no map feature with '
                    'points); set ReaderConfig.require_roadgraph=False to '
                    'accept it', **where)
  p = num_pts if config.max_roadgraph_points is None else (
      config.max_roadgraph_points)
  bad = np.abs(rg['xyz']) > config.max_abs_coordinate
  if bad.any() or not np.all(np.isfinite(rg['xyz'])):
    j = int(np.argmax(bad.any(-1) | ~np.isfinite(rg['xyz']).all(-1)))
    raise DataError(f'map feature {int(rg["ids"][j])} has a non-finite or '
                    f'huge coordinate {rg["xyz"][j].tolist()}', **where)
  f32 = lambda a, fill=-1.0: _pad(a, p, 0, fill).astype(np.float32)
  return datatypes.RoadgraphPoints(
      x=f32(rg['xyz'][:, 0]), y=f32(rg['xyz'][:, 1]), z=f32(rg['xyz'][:, 2]),
      dir_x=f32(rg['dir'][:, 0], 0.0), dir_y=f32(rg['dir'][:, 1], 0.0),
      dir_z=f32(rg['dir'][:, 2], 0.0),
      types=_pad(rg['types'], p, 0, -1).astype(np.int32),
      ids=_pad(rg['ids'], p, 0, -1).astype(np.int32),
      valid=_pad(np.ones(num_pts, bool), p, 0, False))


def _traffic_light_states(scenario: scenario_pb2.Scenario,
                          ref_xy: np.ndarray, config: ReaderConfig
                          ) -> datatypes.TrafficLights:
  """(L, T) signal states of the lanes nearest ``ref_xy``."""
  num_steps = config.num_timesteps
  tl_xyz, tl_state, tl_valid, lane_ids = womd_map.traffic_lights(
      scenario, len(scenario.timestamps_seconds), ref_xy,
      config.max_traffic_lights)
  num_l = len(lane_ids) if config.max_traffic_lights is None else (
      config.max_traffic_lights)

  def tl(a, fill):
    return _pad(_pad(a, num_steps, 1, fill), num_l, 0, fill)

  tl_valid = tl(tl_valid, False)
  return datatypes.TrafficLights(
      x=np.where(tl_valid, tl(tl_xyz[..., 0], -1.0), -1).astype(np.float32),
      y=np.where(tl_valid, tl(tl_xyz[..., 1], -1.0), -1).astype(np.float32),
      z=np.where(tl_valid, tl(tl_xyz[..., 2], -1.0), -1).astype(np.float32),
      state=np.where(tl_valid, tl(tl_state, -1), -1).astype(np.int32),
      lane_ids=np.where(
          tl_valid, np.broadcast_to(_pad(lane_ids, num_l, 0, -1)[:, None],
                                    (num_l, num_steps)), -1).astype(np.int32),
      valid=tl_valid)


def state_from_scenario(
    scenario: scenario_pb2.Scenario,
    config: ReaderConfig = ReaderConfig(),
    *,
    path: PathLike | None = None,
    record: int | None = None,
) -> ScenarioExample:
  """Converts a ``Scenario`` into a padded, numpy-backed ``SimulatorState``.

  The returned state is already reset: ``timestep`` is the scenario's
  ``current_time_index`` and ``sim_trajectory`` holds the log up to it (and is
  invalid after it), so it can be fed to the simulator or a model directly.

  Args:
    scenario: a parsed WOMD Scenario.
    config: sizes and checks.
    path, record: where the scenario came from, for error messages.

  Returns:
    A ``ScenarioExample`` whose state has shapes Trajectory (N, T),
    ObjectMetadata (N,), RoadgraphPoints (P,), TrafficLights (L, T).

  Raises:
    DataError: on malformed or unusable scenarios, naming the file, record,
      scenario and track.
  """
  check_scenario(scenario, path=path, record=record)
  where = {'path': path, 'record': record,
           'scenario_id': scenario.scenario_id}
  src_steps = len(scenario.timestamps_seconds)
  num_steps = config.num_timesteps
  if src_steps > num_steps:
    raise DataError(f'scenario has {src_steps} steps, more than the '
                    f'configured num_timesteps={num_steps}', **where)
  current, sdc = scenario.current_time_index, scenario.sdc_track_index
  tracks = _track_arrays(scenario)
  _check_tracks(scenario, tracks, config, where)
  rows = _select_rows(scenario, tracks, config, where)
  log = _log_trajectory(scenario, tracks, rows, num_steps)
  ref_xy = np.array([tracks['x'][sdc, current], tracks['y'][sdc, current]])
  roadgraph = _roadgraph_points(scenario, ref_xy, config, where)
  lights = _traffic_light_states(scenario, ref_xy, config)
  # Reset: the simulation starts as the log up to the current step.
  sim_valid = log.valid & (np.arange(num_steps) <= current)
  sim = datatypes.Trajectory(valid=sim_valid, **{
      f.name: np.where(sim_valid, getattr(log, f.name),
                       np.asarray(-1, getattr(log, f.name).dtype))
      for f in dataclasses.fields(log) if f.name != 'valid'})
  state = datatypes.SimulatorState(
      sim_trajectory=sim, log_trajectory=log, log_traffic_light=lights,
      object_metadata=_object_metadata(scenario, rows),
      timestep=np.asarray(current, np.int32), roadgraph_points=roadgraph)
  return ScenarioExample(
      state=state, scenario_id=scenario.scenario_id,
      path=None if path is None else os.fspath(path), record=record,
      track_index=_pad(rows.keep, rows.num_rows, 0, -1),
      num_dropped_objects=rows.num_dropped,
      num_dropped_sim_agents=rows.num_dropped_sim_agents)


# ---------------------------------------------------------------------------
# Files -> states.


def read_examples(
    paths: PathLike | Sequence[PathLike],
    config: ReaderConfig = ReaderConfig(), *,
    skip_bad_records: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[ScenarioExample]:
  """Reads files and converts each scenario (see ``state_from_scenario``)."""
  stats = stats if stats is not None else ReadStats()
  for path, index, scenario in read_scenarios(
      paths, skip_bad_records=skip_bad_records, stats=stats):
    ex = convert_counted(scenario, config, stats, path=path, record=index,
                         skip_bad_records=skip_bad_records)
    if ex is not None:
      yield ex


def convert_counted(scenario: scenario_pb2.Scenario, config: ReaderConfig,
                    stats: ReadStats, *, path: PathLike | None = None,
                    record: int | None = None,
                    skip_bad_records: bool = False
                    ) -> ScenarioExample | None:
  """``state_from_scenario`` of a scenario ``stats`` counted as read; its
  dropped tracks are added to ``stats``. With ``skip_bad_records`` an
  unusable scenario is counted as skipped instead and gives None."""
  try:
    ex = state_from_scenario(scenario, config, path=path, record=record)
  except DataError as e:
    if not skip_bad_records:
      raise
    stats.num_read -= 1
    stats.skip(e)
    return None
  stats.count(ex)
  return ex
