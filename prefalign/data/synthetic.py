"""Small synthetic scenarios built in code, for tests, notebooks and benchmarks.

Nothing here is WOMD data: the scenes are procedural (a straight two-lane road
with road edges oriented drivable-side-left, a few agents driving along it), so
they can live in the repository and run anywhere.
"""

from __future__ import annotations

import numpy as np

from prefalign import datatypes
from prefalign.data.protos import map_pb2
from prefalign.data.protos import scenario_pb2

__all__ = ['straight_road_scenario']


def _points(xy: np.ndarray, z: float = 0.0) -> list[map_pb2.MapPoint]:
  return [map_pb2.MapPoint(x=float(x), y=float(y), z=z) for x, y in xy]


# A track: (object type, x (T,), y (T,), yaw (T,), vel_x (T,), vel_y (T,),
# length, width, height), x and y before the origin is added.
_Track = tuple


def _add_road(s: scenario_pb2.Scenario, road_length: float,
              half_width: float, point_spacing: float,
              origin: tuple[float, float]) -> int:
  """Adds the map features; returns the eastbound lane's feature id.

  Two lanes, a centre line and two road edges sampled every
  ``point_spacing`` m along x in [0, road_length], a crosswalk at x = 150
  and a stop sign at x = 160 on the eastbound lane.
  """
  ox, oy = origin
  xs = np.arange(0.0, road_length + 1e-6, point_spacing)
  east = np.stack([xs, np.full_like(xs, -2.0)], -1) + (ox, oy)
  west = np.stack([xs[::-1], np.full_like(xs, 2.0)], -1) + (ox, oy)
  fid = iter(range(100, 10_000))
  lane_e = s.map_features.add(id=next(fid))
  lane_e.lane.type = map_pb2.LaneCenter.TYPE_SURFACE_STREET
  lane_e.lane.polyline.extend(_points(east))
  lane_w = s.map_features.add(id=next(fid))
  lane_w.lane.type = map_pb2.LaneCenter.TYPE_SURFACE_STREET
  lane_w.lane.polyline.extend(_points(west))
  line = s.map_features.add(id=next(fid))
  line.road_line.type = map_pb2.RoadLine.TYPE_SOLID_DOUBLE_YELLOW
  line.road_line.polyline.extend(
      _points(np.stack([xs, np.zeros_like(xs)], -1) + (ox, oy)))
  edge_r = s.map_features.add(id=next(fid))
  edge_r.road_edge.type = map_pb2.RoadEdge.TYPE_ROAD_EDGE_BOUNDARY
  edge_r.road_edge.polyline.extend(
      _points(np.stack([xs, np.full_like(xs, -half_width)], -1) + (ox, oy)))
  edge_l = s.map_features.add(id=next(fid))
  edge_l.road_edge.type = map_pb2.RoadEdge.TYPE_ROAD_EDGE_BOUNDARY
  edge_l.road_edge.polyline.extend(
      _points(np.stack([xs[::-1], np.full_like(xs, half_width)], -1)
              + (ox, oy)))
  cw = s.map_features.add(id=next(fid))
  cw.crosswalk.polygon.extend(_points(np.array(
      [[148, -half_width], [152, -half_width], [152, half_width],
       [148, half_width]]) + (ox, oy)))
  stop = s.map_features.add(id=next(fid))
  stop.stop_sign.lane.append(lane_e.id)
  stop.stop_sign.position.CopyFrom(map_pb2.MapPoint(x=160 + ox, y=-half_width
                                                    - 0.5 + oy))
  return lane_e.id


def _vehicles(rng: np.random.Generator, t: np.ndarray, count: int,
              road_length: float) -> list[_Track]:
  """Vehicles alternating east (y = -2) and west (y = +2) at 5-15 m/s."""
  tracks = []
  for i in range(count):
    speed = 5.0 + 10.0 * rng.random()
    eastbound = i % 2 == 0
    x0 = 10.0 + 18.0 * i + 3.0 * rng.random()
    if eastbound:
      x, y, yaw = x0 + speed * t, np.full_like(t, -2.0), 0.0
    else:
      x, y, yaw = road_length - x0 - speed * t, np.full_like(t, 2.0), np.pi
    vx = speed * np.cos(yaw) * np.ones_like(t)
    vy = np.zeros_like(t)
    tracks.append((1, x, y, np.full_like(t, yaw), vx, vy, 4.5, 2.0, 1.6))
  return tracks


def _pedestrians(rng: np.random.Generator, t: np.ndarray, count: int,
                 half_width: float) -> list[_Track]:
  """Pedestrians walking east on the sidewalk at 1-1.5 m/s."""
  tracks = []
  for i in range(count):
    speed = 1.0 + 0.5 * rng.random()
    x = 20.0 + 10.0 * i + speed * t
    tracks.append((2, x, np.full_like(t, -half_width - 1.5),
                   np.zeros_like(t), speed * np.ones_like(t),
                   np.zeros_like(t), 0.8, 0.8, 1.75))
  return tracks


def _cyclists(rng: np.random.Generator, t: np.ndarray, count: int,
              half_width: float) -> list[_Track]:
  """Cyclists riding east near the right road edge at 4-6 m/s."""
  tracks = []
  for i in range(count):
    speed = 4.0 + 2.0 * rng.random()
    x = 5.0 + 15.0 * i + speed * t
    tracks.append((3, x, np.full_like(t, -half_width + 0.8),
                   np.zeros_like(t), speed * np.ones_like(t),
                   np.zeros_like(t), 1.8, 0.7, 1.7))
  return tracks


def _add_tracks(s: scenario_pb2.Scenario, tracks: list[_Track],
                num_steps: int, origin: tuple[float, float],
                invalid_gap: tuple[int, int, int] | None) -> None:
  """Adds the tracks (ids 1, 2, ...), the SDC (track 0), tracks 1 and 2 to
  predict and track 1 as an object of interest."""
  ox, oy = origin
  for k, (typ, x, y, yaw, vx, vy, length, width, height) in enumerate(tracks):
    track = s.tracks.add(id=k + 1, object_type=typ)
    for j in range(num_steps):
      valid = True
      if invalid_gap is not None and invalid_gap[0] == k:
        valid = not invalid_gap[1] <= j <= invalid_gap[2]
      if valid:
        track.states.add(center_x=x[j] + ox, center_y=y[j] + oy, center_z=0.0,
                         length=length, width=width, height=height,
                         heading=float(yaw[j]), velocity_x=float(vx[j]),
                         velocity_y=float(vy[j]), valid=True)
      else:
        track.states.add(valid=False)
  s.sdc_track_index = 0
  for k in (1, 2):
    if k < len(tracks):
      s.tracks_to_predict.add(track_index=k)
  if len(tracks) > 1:
    s.objects_of_interest.append(s.tracks[1].id)


def _add_signal(s: scenario_pb2.Scenario, num_steps: int, lane_id: int,
                with_traffic_light: bool,
                origin: tuple[float, float]) -> None:
  """One dynamic map state per step; with ``with_traffic_light`` the
  eastbound lane's signal, green for 50 steps and red after."""
  ox, oy = origin
  for j in range(num_steps):
    dyn = s.dynamic_map_states.add()
    if with_traffic_light:
      state = (map_pb2.TrafficSignalLaneState.LANE_STATE_GO if j < 50 else
               map_pb2.TrafficSignalLaneState.LANE_STATE_STOP)
      dyn.lane_states.add(lane=lane_id, state=state,
                          stop_point=map_pb2.MapPoint(x=160 + ox, y=-2 + oy))


def straight_road_scenario(
    scenario_id: str = 'synthetic-0',
    *,
    num_vehicles: int = 4,
    num_pedestrians: int = 1,
    num_cyclists: int = 1,
    road_length: float = 200.0,
    half_width: float = 4.0,
    point_spacing: float = 2.0,
    num_steps: int = datatypes.NUM_TIMESTEPS,
    current_time_index: int = datatypes.CURRENT_TIME_INDEX,
    with_traffic_light: bool = True,
    seed: int = 0,
    origin: tuple[float, float] = (0.0, 0.0),
    invalid_gap: tuple[int, int, int] | None = None,
) -> scenario_pb2.Scenario:
  """A two-lane road along +x with agents driving east and west.

  Layout (before ``origin`` is added): lane centres at y = -2 (eastbound) and
  y = +2 (westbound), a centre line at y = 0, road edges at y = -half_width
  (pointing +x) and y = +half_width (pointing -x), so the road lies to the
  left of both edges, as in WOMD. A crosswalk at x = 150, a stop sign at
  x = 160 and, optionally, a signal on the eastbound lane.

  Track 0 is the SDC; tracks 1 and 2 are ``tracks_to_predict``; track 1 is an
  object of interest. Vehicles alternate between the two lanes with speeds of
  5-15 m/s; pedestrians walk on the sidewalk; cyclists ride near the edge.

  Args:
    invalid_gap: ``(track, first_step, last_step)`` made invalid, to exercise
      gaps.
  """
  rng = np.random.default_rng(seed)
  dt = datatypes.TIME_INTERVAL
  s = scenario_pb2.Scenario(scenario_id=scenario_id,
                            current_time_index=current_time_index)
  s.timestamps_seconds.extend((np.arange(num_steps) * dt).tolist())
  lane_id = _add_road(s, road_length, half_width, point_spacing, origin)
  t = np.arange(num_steps) * dt
  tracks = (_vehicles(rng, t, num_vehicles, road_length)
            + _pedestrians(rng, t, num_pedestrians, half_width)
            + _cyclists(rng, t, num_cyclists, half_width))
  _add_tracks(s, tracks, num_steps, origin, invalid_gap)
  _add_signal(s, num_steps, lane_id, with_traffic_light, origin)
  return s
