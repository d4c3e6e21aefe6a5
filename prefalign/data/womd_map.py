"""WOMD map features and signal states <-> road-graph points and lights.

A ``Scenario``'s map features become road-graph points: every point of a
feature's polyline (lanes, road lines, road edges), polygon (crosswalks,
speed bumps, driveways) or position (stop signs), with the feature's id and
its type as a ``datatypes.MapElementIds`` value (``feature_points``,
``road_graph``, which keeps whole features nearest a reference point first
when there are too many); ``add_feature`` writes a run of points back as a
feature. Its dynamic map states become per-lane signal arrays
(``traffic_lights``). ``womd`` pads these into a ``SimulatorState``;
``womd_export`` writes them back.
"""

from __future__ import annotations

import numpy as np

from prefalign import datatypes
from prefalign.data.protos import map_pb2
from prefalign.data.protos import scenario_pb2

__all__ = [
    'add_feature',
    'feature_num_points',
    'feature_points',
    'road_graph',
    'traffic_lights',
]

_LANE_TYPE_TO_ID = {0: 0, 1: 1, 2: 2, 3: 3}
_ROAD_LINE_OFFSET = 5  # RoadLine.TYPE_UNKNOWN (0) -> ROAD_LINE_UNKNOWN (5).
_ROAD_EDGE_OFFSET = 14  # RoadEdge.TYPE_UNKNOWN (0) -> ROAD_EDGE_UNKNOWN (14).
_M = datatypes.MapElementIds
_POLYGON_KINDS = {'crosswalk': _M.CROSSWALK, 'speed_bump': _M.SPEED_BUMP,
                  'driveway': _M.DRIVEWAY}


def feature_points(feature: map_pb2.MapFeature):
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


def feature_num_points(feature: map_pb2.MapFeature) -> int:
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


def road_graph(scenario: scenario_pb2.Scenario, ref_xy: np.ndarray,
               limit: int | None) -> dict[str, np.ndarray]:
  """Road-graph points of the map features, unpadded.

  Args:
    scenario: the Scenario whose ``map_features`` are read.
    ref_xy: (2,) reference point (the SDC at the current step).
    limit: most points kept (None: all): whole features, nearest to
      ``ref_xy`` first, until the next nearest no longer fits; kept features
      stay in their original order.

  Returns:
    ``xyz`` (P, 3) and ``dir`` (P, 3) float64 (unit vectors to the next
    point of the feature, zero at its last), ``types`` and ``ids`` (P,)
    int64.
  """
  feats = []
  for f in scenario.map_features:
    pts = feature_points(f)
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


def traffic_lights(scenario: scenario_pb2.Scenario, num_steps: int,
                   ref_xy: np.ndarray, limit: int | None):
  """Signal states per controlled lane, unpadded.

  Args:
    scenario: the Scenario whose ``dynamic_map_states`` are read.
    num_steps: T, the scenario's steps.
    ref_xy: (2,) reference point (the SDC at the current step).
    limit: most lanes kept (None: all): those whose mean stop point is
      nearest ``ref_xy``, in order of first appearance.

  Returns:
    ``(xyz (L, T, 3) float64, state (L, T) int64, valid (L, T) bool,
    lane_ids (L,) int64)``, lanes in order of first appearance.
  """
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


def add_feature(out: scenario_pb2.Scenario, fid: int, type_id: int,
                xyz: np.ndarray) -> None:
  """Adds map feature ``fid`` of road-graph type ``type_id`` to ``out``:
  the (K, 3) points ``xyz`` as a polyline, polygon or stop-sign position.

  Raises:
    ValueError: a type id that is no map element.
  """
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
