"""WOMD ``Scenario`` protos <-> padded ``SimulatorState``.

Reads real Waymo Open Motion Dataset files (and anything written in the same
format, such as this project's SUMO traffic) without TensorFlow, and converts
each ``Scenario`` into numpy-backed ``SimulatorState`` pytrees with fixed,
configurable sizes so that scenarios batch and jit with one shape.

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
round trip ``Scenario -> SimulatorState -> Scenario`` uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import glob as glob_lib
import os
from typing import Any

from google.protobuf import message as pb_message
import numpy as np

from prefalign import datatypes
from prefalign import fileio
from prefalign.data import tfrecord
from prefalign.data.protos import map_pb2
from prefalign.data.protos import scenario_pb2

__all__ = [
    'ReaderConfig',
    'ScenarioExample',
    'ReadStats',
    'DataError',
    'parse_scenario',
    'check_scenario',
    'state_from_scenario',
    'scenario_from_state',
    'read_scenarios',
    'read_examples',
    'expand_paths',
    'scenario_info',
]

DataError = tfrecord.DataError
PathLike = str | os.PathLike

_LANE_TYPE_TO_ID = {0: 0, 1: 1, 2: 2, 3: 3}
_ROAD_LINE_OFFSET = 5  # RoadLine.TYPE_UNKNOWN (0) -> ROAD_LINE_UNKNOWN (5).
_ROAD_EDGE_OFFSET = 14  # RoadEdge.TYPE_UNKNOWN (0) -> ROAD_EDGE_UNKNOWN (14).
_M = datatypes.MapElementIds
_POLYLINE_KINDS = ('lane', 'road_line', 'road_edge')
_POLYGON_KINDS = {'crosswalk': _M.CROSSWALK, 'speed_bump': _M.SPEED_BUMP,
                  'driveway': _M.DRIVEWAY}


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


@dataclasses.dataclass
class ReadStats:
  """Counts of what a read kept and skipped.

  Attributes:
    num_read: scenarios read (and converted, where converting).
    num_skipped: bad records skipped (``skip_bad_records``).
    errors: the message of each skipped record, naming file and record.
    num_truncated: converted scenarios with tracks beyond
      ``max_num_objects``.
    num_dropped_objects: tracks left out of those scenarios.
    num_dropped_sim_agents: of which valid at the current step.
  """
  num_read: int = 0
  num_skipped: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)
  num_truncated: int = 0
  num_dropped_objects: int = 0
  num_dropped_sim_agents: int = 0

  def skip(self, err: Exception) -> None:
    self.num_skipped += 1
    self.errors.append(str(err))

  def count(self, example: ScenarioExample) -> None:
    """Adds a converted scenario's dropped tracks."""
    if example.num_dropped_objects:
      self.num_truncated += 1
      self.num_dropped_objects += example.num_dropped_objects
      self.num_dropped_sim_agents += example.num_dropped_sim_agents

  def summary(self) -> dict:
    """The counts as JSON-able numbers (the first 5 errors)."""
    return {'read': self.num_read, 'skipped': self.num_skipped,
            'errors': self.errors[:5], 'truncated': self.num_truncated,
            'dropped_objects': self.num_dropped_objects,
            'dropped_sim_agents': self.num_dropped_sim_agents}


# ---------------------------------------------------------------------------
# Parsing and checking.


def parse_scenario(data: bytes, *, path: PathLike | None = None,
                   record: int | None = None) -> scenario_pb2.Scenario:
  """Parses one record into a ``Scenario`` and checks its structure.

  Raises:
    DataError: the bytes are not a serialised Scenario, or the Scenario is
      malformed (see ``check_scenario``); the message names file and record.
  """
  scenario = scenario_pb2.Scenario()
  try:
    scenario.ParseFromString(data)
  except pb_message.DecodeError as e:
    raise DataError(f'record is not a WOMD Scenario proto ({e})', path=path,
                    record=record) from None
  check_scenario(scenario, path=path, record=record)
  return scenario


def check_scenario(scenario: scenario_pb2.Scenario, *,
                   path: PathLike | None = None,
                   record: int | None = None) -> None:
  """Structural checks that do not depend on a ReaderConfig.

  Raises:
    DataError: naming the file, record, scenario and offending track.
  """
  sid = scenario.scenario_id or None

  def fail(msg):
    raise DataError(msg, path=path, record=record, scenario_id=sid)

  num_steps = len(scenario.timestamps_seconds)
  if not scenario.scenario_id and not num_steps and not scenario.tracks:
    fail('record is not a WOMD Scenario: it has no scenario_id, no '
         'timestamps_seconds and no tracks')
  if num_steps == 0:
    fail('scenario has no timestamps_seconds')
  ts = np.asarray(scenario.timestamps_seconds, np.float64)
  if not np.all(np.isfinite(ts)):
    fail('timestamps_seconds contains NaN or infinity')
  if num_steps > 1 and np.any(np.diff(ts) <= 0):
    bad = int(np.argmax(np.diff(ts) <= 0))
    fail(f'timestamps_seconds are not strictly increasing (step {bad + 1}: '
         f'{ts[bad + 1]} after {ts[bad]})')
  if not scenario.tracks:
    fail('scenario has no tracks')
  if not 0 <= scenario.current_time_index < num_steps:
    fail(f'current_time_index {scenario.current_time_index} is outside the '
         f'{num_steps} steps')
  for i, track in enumerate(scenario.tracks):
    if len(track.states) != num_steps:
      fail(f'track {i} (id {track.id}) has {len(track.states)} states but '
           f'the scenario has {num_steps} timestamps')
  if not 0 <= scenario.sdc_track_index < len(scenario.tracks):
    fail(f'sdc_track_index {scenario.sdc_track_index} is not a track index '
         f'(the scenario has {len(scenario.tracks)} tracks)')
  for req in scenario.tracks_to_predict:
    if not 0 <= req.track_index < len(scenario.tracks):
      fail(f'tracks_to_predict names track index {req.track_index}, but the '
           f'scenario has {len(scenario.tracks)} tracks')
  if scenario.dynamic_map_states and (
      len(scenario.dynamic_map_states) != num_steps):
    fail(f'{len(scenario.dynamic_map_states)} dynamic_map_states for '
         f'{num_steps} timestamps')


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


def _feature_points(feature: map_pb2.MapFeature):
  """(points [K, 3], type id) of one map feature, or None if it has none."""
  kind = feature.WhichOneof('feature_data')
  if kind is None:
    return None
  data = getattr(feature, kind)
  if kind == 'lane':
    pts, t = data.polyline, _LANE_TYPE_TO_ID.get(data.type, 0)
  elif kind == 'road_line':
    pts, t = data.polyline, _ROAD_LINE_OFFSET + data.type
  elif kind == 'road_edge':
    pts, t = data.polyline, _ROAD_EDGE_OFFSET + data.type
  elif kind == 'stop_sign':
    if not data.HasField('position'):
      return None
    pts, t = [data.position], int(_M.STOP_SIGN)
  else:
    pts, t = data.polygon, int(_POLYGON_KINDS[kind])
  if not pts:
    return None
  return np.asarray([(p.x, p.y, p.z) for p in pts], np.float64), t


def _feature_num_points(feature: map_pb2.MapFeature) -> int:
  """How many road-graph points a map feature becomes (no arrays built)."""
  kind = feature.WhichOneof('feature_data')
  if kind is None:
    return 0
  data = getattr(feature, kind)
  if kind == 'stop_sign':
    return int(data.HasField('position'))
  return len(data.polygon if kind in _POLYGON_KINDS else data.polyline)


def _directions(xyz: np.ndarray) -> np.ndarray:
  """Unit vectors from each point to the next; zero at the last point."""
  d = np.zeros_like(xyz)
  if len(xyz) > 1:
    seg = xyz[1:] - xyz[:-1]
    norm = np.linalg.norm(seg, axis=-1, keepdims=True)
    d[:-1] = np.where(norm > 0, seg / np.maximum(norm, 1e-12), 0.0)
  return d


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


def _road_graph(scenario: scenario_pb2.Scenario, ref_xy: np.ndarray,
                limit: int | None) -> dict[str, np.ndarray]:
  feats = []
  for f in scenario.map_features:
    pts = _feature_points(f)
    if pts is not None:
      feats.append((f.id, pts[0], pts[1]))
  if limit is not None:
    total = sum(len(p) for _, p, _ in feats)
    if total > limit:
      dists = [np.min(np.linalg.norm(p[:, :2] - ref_xy, axis=-1))
               for _, p, _ in feats]
      keep, used = np.zeros(len(feats), bool), 0
      for i in np.argsort(dists, kind='stable'):
        if used + len(feats[i][1]) > limit:
          break
        keep[i], used = True, used + len(feats[i][1])
      feats = [f for f, k in zip(feats, keep) if k]
  if feats:
    xyz = np.concatenate([p for _, p, _ in feats])
    dirs = np.concatenate([_directions(p) for _, p, _ in feats])
    types = np.concatenate([np.full(len(p), t) for _, p, t in feats])
    ids = np.concatenate([np.full(len(p), i) for i, p, _ in feats])
  else:
    xyz, dirs = np.zeros((0, 3)), np.zeros((0, 3))
    types, ids = np.zeros(0, np.int64), np.zeros(0, np.int64)
  return dict(xyz=xyz, dir=dirs, types=types, ids=ids)


def _traffic_lights(scenario: scenario_pb2.Scenario, num_steps: int,
                    ref_xy: np.ndarray, limit: int | None):
  lanes: dict[int, int] = {}
  for dyn in scenario.dynamic_map_states:
    for ls in dyn.lane_states:
      lanes.setdefault(ls.lane, len(lanes))
  num = len(lanes)
  xyz = np.zeros((num, num_steps, 3))
  state = np.zeros((num, num_steps), np.int64)
  valid = np.zeros((num, num_steps), bool)
  for t, dyn in enumerate(scenario.dynamic_map_states):
    for ls in dyn.lane_states:
      j = lanes[ls.lane]
      xyz[j, t] = (ls.stop_point.x, ls.stop_point.y, ls.stop_point.z)
      state[j, t] = ls.state
      valid[j, t] = True
  lane_ids = np.asarray(list(lanes), np.int64)
  if limit is not None and num > limit:
    # Mean stop point of each lane over its valid steps.
    mean = (xyz[..., :2] * valid[..., None]).sum(1) / np.maximum(
        valid.sum(1, keepdims=True), 1)
    keep = np.sort(np.argsort(np.linalg.norm(mean - ref_xy, axis=-1),
                              kind='stable')[:limit])
    xyz, state, valid, lane_ids = (xyz[keep], state[keep], valid[keep],
                                   lane_ids[keep])
  return xyz, state, valid, lane_ids


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
  rg = _road_graph(scenario, ref_xy, config.max_roadgraph_points)
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
  tl_xyz, tl_state, tl_valid, lane_ids = _traffic_lights(
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
# SimulatorState -> Scenario.


def scenario_from_state(state: datatypes.SimulatorState, scenario_id: str,
                        *, use_log: bool = True,
                        current_time_index: int | None = None
                        ) -> scenario_pb2.Scenario:
  """Writes an unbatched state back into a ``Scenario`` proto.

  Every field the state carries is written: track ids, types and per-step
  states; the SDC, ``tracks_to_predict`` (difficulty NONE) and
  ``objects_of_interest``; map features rebuilt from road-graph points (one
  feature per run of equal ``ids``: lanes, road lines and road edges as
  polylines, crosswalks, speed bumps and driveways as polygons, stop signs as
  positions); and signal states per step. Lane connectivity, neighbours,
  boundaries and speed limits are not carried by the state and stay empty.

  Args:
    state: an unbatched SimulatorState (numpy or jax arrays).
    scenario_id: the id to write.
    use_log: write ``log_trajectory`` (True) or ``sim_trajectory``.
    current_time_index: defaults to ``state.timestep``.
  """
  if state.shape:
    raise ValueError(f'scenario_from_state needs an unbatched state, got '
                     f'batch shape {state.shape}.')
  g = lambda a: np.asarray(a)
  traj = state.log_trajectory if use_log else state.sim_trajectory
  meta = state.object_metadata
  rows = np.flatnonzero(g(meta.is_valid))
  out = scenario_pb2.Scenario(scenario_id=scenario_id)
  micros = g(traj.timestamp_micros)
  valid = g(traj.valid)
  num_steps = traj.num_timesteps
  # The clock: a valid timestamp from any object at each step, else 10 Hz.
  step_micros = np.where(valid, micros, -1).max(axis=0) if len(rows) else (
      np.full(num_steps, -1))
  base = np.arange(num_steps) * datatypes.TIMESTEP_MICROS_INTERVAL
  have = step_micros >= 0
  if have.any():
    offset = (step_micros[have] - base[have])[0]
    step_micros = np.where(have, step_micros, base + offset)
  else:
    step_micros = base
  out.timestamps_seconds.extend((step_micros / 1e6).tolist())
  out.current_time_index = int(
      g(state.timestep) if current_time_index is None else current_time_index)
  fields = [g(getattr(traj, n)).astype(np.float64) for n in (
      'x', 'y', 'z', 'length', 'width', 'height', 'yaw', 'vel_x', 'vel_y')]
  ids, types = g(meta.ids), g(meta.object_types)
  for new_index, i in enumerate(rows):
    track = out.tracks.add(id=int(ids[i]), object_type=int(types[i]))
    for t in range(num_steps):
      if valid[i, t]:
        x, y, z, length, w, h, yaw, vx, vy = (f[i, t] for f in fields)
        track.states.add(center_x=x, center_y=y, center_z=z, length=length,
                         width=w, height=h, heading=yaw, velocity_x=vx,
                         velocity_y=vy, valid=True)
      else:
        track.states.add(valid=False)
    if g(meta.is_sdc)[i]:
      out.sdc_track_index = new_index
    if g(meta.is_modeled)[i]:
      out.tracks_to_predict.add(track_index=new_index)
    if g(meta.objects_of_interest)[i]:
      out.objects_of_interest.append(int(ids[i]))

  rg = state.roadgraph_points
  rg_valid = g(rg.valid)
  xyz = np.stack([g(rg.x), g(rg.y), g(rg.z)], -1).astype(np.float64)[rg_valid]
  rg_ids, rg_types = g(rg.ids)[rg_valid], g(rg.types)[rg_valid]
  starts = np.flatnonzero(np.r_[True, rg_ids[1:] != rg_ids[:-1]])
  ends = np.r_[starts[1:], len(rg_ids)]
  for s, e in zip(starts, ends):
    _add_feature(out, int(rg_ids[s]), int(rg_types[s]), xyz[s:e])

  tl = state.log_traffic_light
  tl_valid = g(tl.valid)
  if tl_valid.any() or tl.num_traffic_lights:
    for t in range(tl.num_timesteps):
      dyn = out.dynamic_map_states.add()
      for j in np.flatnonzero(tl_valid[:, t]):
        dyn.lane_states.add(
            lane=int(g(tl.lane_ids)[j, t]), state=int(g(tl.state)[j, t]),
            stop_point=map_pb2.MapPoint(x=float(g(tl.x)[j, t]),
                                        y=float(g(tl.y)[j, t]),
                                        z=float(g(tl.z)[j, t])))
  return out


def _add_feature(out: scenario_pb2.Scenario, fid: int, type_id: int,
                 xyz: np.ndarray) -> None:
  feature = out.map_features.add(id=fid)
  points = [map_pb2.MapPoint(x=p[0], y=p[1], z=p[2]) for p in xyz]
  if type_id in (0, 1, 2, 3):
    feature.lane.type = type_id
    feature.lane.polyline.extend(points)
  elif _ROAD_LINE_OFFSET <= type_id <= 13:
    feature.road_line.type = type_id - _ROAD_LINE_OFFSET
    feature.road_line.polyline.extend(points)
  elif _ROAD_EDGE_OFFSET <= type_id <= 16:
    feature.road_edge.type = type_id - _ROAD_EDGE_OFFSET
    feature.road_edge.polyline.extend(points)
  elif type_id == _M.STOP_SIGN:
    feature.stop_sign.position.CopyFrom(points[0])
  elif type_id == _M.CROSSWALK:
    feature.crosswalk.polygon.extend(points)
  elif type_id == _M.SPEED_BUMP:
    feature.speed_bump.polygon.extend(points)
  elif type_id == _M.DRIVEWAY:
    feature.driveway.polygon.extend(points)
  else:
    raise ValueError(f'map feature {fid}: unknown road-graph type {type_id}.')


# ---------------------------------------------------------------------------
# Files.


def expand_paths(patterns: PathLike | Sequence[PathLike]) -> list[str]:
  """Expands files, globs and ``name@N`` shard patterns into sorted paths.

  ``data/train.tfrecord@4`` means ``data/train.tfrecord-0000i-of-00004``.

  Raises:
    FileNotFoundError: when a pattern matches nothing (it is named).
  """
  if isinstance(patterns, (str, os.PathLike)):
    patterns = [patterns]
  out = []
  for pat in patterns:
    pat = os.fspath(pat)
    base, _, shards = pat.rpartition('@')
    if base and shards.isdigit():
      n = int(shards)
      matched = [f'{base}-{i:05d}-of-{n:05d}' for i in range(n)]
      missing = [m for m in matched if not os.path.exists(m)]
      if missing:
        raise FileNotFoundError(f'shard pattern {pat!r}: missing {missing[0]}'
                                + (f' and {len(missing) - 1} more'
                                   if len(missing) > 1 else ''))
    elif glob_lib.has_magic(pat):
      # Never a writer's temporary file (a killed run's leftover).
      matched = [m for m in fileio.glob_files(pat) if not os.path.isdir(m)]
    else:
      matched = [pat] if os.path.exists(pat) else []
    if not matched:
      raise FileNotFoundError(f'no file matches {pat!r}')
    for m in matched:
      if os.path.isdir(m):
        raise DataError(f'{m} is a directory, not a TFRecord file (give its '
                        f'files, e.g. {os.path.join(m, "*.tfrecord*")!r})')
    out.extend(matched)
  return out


def read_scenarios(
    paths: PathLike | Sequence[PathLike], *,
    skip_bad_records: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[tuple[str, int, scenario_pb2.Scenario]]:
  """Yields ``(path, record_index, Scenario)`` from WOMD TFRecord files.

  Args:
    paths: files, globs or ``name@N`` shard patterns.
    skip_bad_records: skip (and count in ``stats``) records that fail their
      checksum or are not valid Scenarios, instead of raising. Reading goes
      on after each: past a record whose payload is bad, and from the next
      valid frame after broken framing (``tfrecord.read_records``).
    stats: receives counts of read and skipped records.

  Raises:
    DataError: on the first bad record unless ``skip_bad_records``.
  """
  stats = stats if stats is not None else ReadStats()
  for path in expand_paths(paths):
    for index, data in tfrecord.read_records(
        path, skip_bad_records=skip_bad_records):
      if isinstance(data, tfrecord.RecordError):
        # Skipped exactly: a bad payload is one record; after broken framing
        # the reader has resynchronised on the next valid frame.
        stats.skip(data)
        continue
      try:
        scenario = parse_scenario(data, path=path, record=index)
      except DataError as e:
        if not skip_bad_records:
          raise
        stats.skip(e)
        continue
      stats.num_read += 1
      yield path, index, scenario


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


_TYPE_NAMES = {1: 'vehicle', 2: 'pedestrian', 3: 'cyclist', 4: 'other',
               0: 'unset'}


def scenario_info(scenario: scenario_pb2.Scenario) -> dict:
  """Counts describing one scenario (what ``prefalign-data info`` prints)."""
  per_type: dict[str, int] = {}
  for t in scenario.tracks:
    name = _TYPE_NAMES.get(t.object_type, str(t.object_type))
    per_type[name] = per_type.get(name, 0) + 1
  features: dict[str, int] = {}
  num_points = 0
  for f in scenario.map_features:
    kind = f.WhichOneof('feature_data') or 'empty'
    features[kind] = features.get(kind, 0) + 1
    num_points += _feature_num_points(f)
  current = scenario.current_time_index
  valid_now = sum(
      1 for t in scenario.tracks
      if len(t.states) > current and t.states[current].valid)
  return {
      'scenario_id': scenario.scenario_id,
      'num_tracks': len(scenario.tracks),
      'tracks_per_type': dict(sorted(per_type.items())),
      'num_valid_at_current': valid_now,
      'num_map_features': dict(sorted(features.items())),
      'num_roadgraph_points': num_points,
      'sdc_track_index': scenario.sdc_track_index,
      'tracks_to_predict': [r.track_index for r in scenario.tracks_to_predict],
      'objects_of_interest': list(scenario.objects_of_interest),
      'num_traffic_light_steps': sum(
          1 for d in scenario.dynamic_map_states if len(d.lane_states)),
      'num_timesteps': len(scenario.timestamps_seconds),
      'current_time_index': current,
  }
