"""WOMD ``Scenario`` protos cut from one SUMO run.

``cut_scenarios`` slides 9.1 s windows (91 steps at 10 Hz, current index 10)
over a run's ``Tracks`` after a warm-up. In each window it picks egos (the
SDC): moving cars present over the whole window, ``radius`` apart. Around
each ego it keeps the objects that come within ``radius`` of it, up to 8
``tracks_to_predict`` chosen as WOSAC's are (present over the window, moving
or near the ego), 3-D boxes from the vehicle types, the map cropped to a
square around the ego's path, and signal states per controlled junction
lane and step, with the stop point at the junction entry.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from prefalign import datatypes
from prefalign.data.protos import map_pb2
from prefalign.data.protos import scenario_pb2
from prefalign.data.sumo_config import MOTOR
from prefalign.data.sumo_config import OBJECT_TYPE
from prefalign.data.sumo_config import VTYPES
from prefalign.data.sumo_config import SumoConfig
from prefalign.data.sumo_network import NetworkMap
from prefalign.data.sumo_traffic import Tracks

__all__ = ['cut_scenarios']

DT = datatypes.TIME_INTERVAL
NUM_STEPS = datatypes.NUM_TIMESTEPS
CURRENT = datatypes.CURRENT_TIME_INDEX
_STATE = map_pb2.TrafficSignalLaneState

# SUMO's signal state letters -> WOMD lane states.
_SIGNAL = {'r': _STATE.LANE_STATE_STOP, 'R': _STATE.LANE_STATE_STOP,
           's': _STATE.LANE_STATE_STOP, 'y': _STATE.LANE_STATE_CAUTION,
           'Y': _STATE.LANE_STATE_CAUTION, 'u': _STATE.LANE_STATE_CAUTION,
           'G': _STATE.LANE_STATE_GO, 'g': _STATE.LANE_STATE_GO,
           'o': _STATE.LANE_STATE_FLASHING_CAUTION,
           'O': _STATE.LANE_STATE_UNKNOWN}


def _window(tracks: Tracks, first: int):
  """Tracks overlapping steps [first, first + 91): index (K,), rows (K, 91)."""
  steps = first + np.arange(NUM_STEPS)
  k = np.flatnonzero((tracks.start < first + NUM_STEPS) &
                     (tracks.end > first))
  valid = ((steps[None] >= tracks.start[k, None]) &
           (steps[None] < tracks.end[k, None]))
  rows = tracks.offset[k, None] + steps[None] - tracks.start[k, None]
  return k, np.where(valid, rows, 0), valid


def _choose_egos(tracks, k, rows, valid, rng, count, radius):
  """Up to ``count`` moving cars present over the window, ``radius`` apart."""
  full = valid.all(-1)
  car = MOTOR[tracks.type_id[k]]
  xy = np.stack([tracks.x[rows], tracks.y[rows]], -1)
  travelled = np.linalg.norm(xy[:, -1] - xy[:, 0], axis=-1)
  cand = np.flatnonzero(full & car & (travelled > 5.0))
  rng.shuffle(cand)
  chosen = []
  for c in cand:
    here = xy[c, CURRENT]
    if all(np.linalg.norm(here - xy[o, CURRENT]) >= radius for o in chosen):
      chosen.append(c)
    if len(chosen) == count:
      break
  return chosen


def _scenario(cfg: SumoConfig, tracks: Tracks, netmap: NetworkMap,
              first: int, k, rows, valid, ego: int, scenario_id: str
              ) -> scenario_pb2.Scenario | None:
  """One Scenario proto around window row ``ego``."""
  x, y = tracks.x[rows], tracks.y[rows]
  # The map covers everything within radius + margin of the ego's path;
  # objects count as seen (valid) only well inside it, as a sensor's range.
  half = cfg.radius + cfg.map_margin
  box = (x[ego].min() - half, x[ego].max() + half, y[ego].min() - half,
         y[ego].max() + half)
  seen = cfg.map_margin / 2
  valid = valid & _in_box(np.stack([x, y], -1), (
      box[0] + seen, box[1] - seen, box[2] + seen, box[3] - seen))
  dist = np.hypot(x - x[ego], y - y[ego])
  near = np.where(valid & valid[ego], dist, np.inf).min(-1)
  keep = np.flatnonzero(near <= cfg.radius)
  keep = keep[np.argsort(near[keep], kind='stable')][:cfg.max_objects]
  keep = np.concatenate([[ego], keep[keep != ego]])
  if len(keep) < 2:
    return None
  # tracks_to_predict: present over the window, moving or near the SDC.
  kv = valid[keep]
  kx, ky = x[keep], y[keep]
  moved = np.hypot(kx[:, -1] - kx[:, 0], ky[:, -1] - ky[:, 0])
  d_now = np.hypot(kx[:, CURRENT] - kx[0, CURRENT],
                   ky[:, CURRENT] - ky[0, CURRENT])
  cand = [j for j in range(1, len(keep)) if kv[j].all() and
          (moved[j] > 2.0 or d_now[j] < 15.0) and d_now[j] < 40.0]
  cand.sort(key=lambda j: (moved[j] <= 2.0, d_now[j]))
  # Mostly vehicles, as in WOMD: at most two pedestrians or cyclists.
  otype = OBJECT_TYPE[tracks.type_id[k[keep]]]
  vru = [j for j in cand if otype[j] != 1][:2]
  cand = [j for j in cand if j in vru or otype[j] == 1]
  if cfg.max_tracks_to_predict and not cand:
    return None  # WOMD scenarios always have something to predict
  s = scenario_pb2.Scenario(scenario_id=scenario_id,
                            current_time_index=CURRENT)
  s.timestamps_seconds.extend((np.arange(NUM_STEPS) * DT).round(1).tolist())
  for j, row in enumerate(keep):
    _, _, obj_type, length, width, height, _, _ = VTYPES[
        tracks.type_id[k[row]]]
    r = rows[row]
    ok = valid[row]
    yaw = tracks.yaw[r]
    sp = tracks.speed[r]
    z = tracks.z[r] + height / 2
    track = s.tracks.add(id=j + 1, object_type=obj_type)
    for t in range(NUM_STEPS):
      if ok[t]:
        track.states.add(
            center_x=x[row, t], center_y=y[row, t], center_z=z[t],
            length=length, width=width, height=height, heading=yaw[t],
            velocity_x=sp[t] * np.cos(yaw[t]),
            velocity_y=sp[t] * np.sin(yaw[t]), valid=True)
      else:
        track.states.add(valid=False)
  s.sdc_track_index = 0
  for j in cand[:cfg.max_tracks_to_predict]:
    s.tracks_to_predict.add(track_index=j)
  close = np.where(kv & kv[:1], np.hypot(kx - kx[:1], ky - ky[:1]),
                   np.inf).min(-1)
  for j in np.argsort(close[1:])[:2] + 1:
    if close[j] < 8.0:
      s.objects_of_interest.append(j + 1)
  _add_map(s, netmap, box)
  _add_signals(s, netmap, tracks, first, box)
  return s


def _in_box(xy, box):
  """bool (...,): points ``xy`` (..., >=2) inside ``box`` (x0, x1, y0, y1)."""
  return ((xy[..., 0] >= box[0]) & (xy[..., 0] <= box[1]) &
          (xy[..., 1] >= box[2]) & (xy[..., 1] <= box[3]))


def _add_map(s, netmap: NetworkMap, box):
  """Adds the map inside ``box`` to ``s``: each run of a polyline's points
  inside it as one feature, crosswalks whole."""
  p = netmap.points
  inside = _in_box(p, box)
  poly = netmap.polyline
  # Runs of inside points of one polyline become features.
  starts = inside & ~np.concatenate([[False], inside[:-1] &
                                     (poly[1:] == poly[:-1])])
  run = np.cumsum(starts) - 1
  idx = np.flatnonzero(inside)
  if len(idx) == 0:
    return
  pieces = np.split(idx, np.flatnonzero(np.diff(run[idx])) + 1)
  seen = {}
  for piece in pieces:
    i = int(poly[piece[0]])
    kind, sub = netmap.kinds[i]
    if kind == 'crosswalk':
      piece = np.flatnonzero(poly == i)  # whole polygon
      if i in seen:
        continue
    elif len(piece) < 2:
      continue
    rank = seen.get(i, 0)
    seen[i] = rank + 1
    fid = i + 1 + 1_000_000 * rank
    feature = s.map_features.add(id=fid)
    pts = [map_pb2.MapPoint(x=a, y=b, z=c) for a, b, c in p[piece]]
    if kind == 'lane':
      feature.lane.type = sub
      feature.lane.polyline.extend(pts)
    elif kind == 'road_line':
      feature.road_line.type = sub
      feature.road_line.polyline.extend(pts)
    elif kind == 'road_edge':
      feature.road_edge.type = sub
      feature.road_edge.polyline.extend(pts)
    else:
      feature.crosswalk.polygon.extend(pts)


def _add_signals(s, netmap: NetworkMap, tracks: Tracks, first, box):
  """Adds the 91 steps' signal states from step ``first`` to ``s``, one per
  controlled lane whose stop point is inside ``box``."""
  links = [link for link in netmap.links
           if _in_box(link[3], box) and link[0] in tracks.tls]
  for t in range(NUM_STEPS):
    dyn = s.dynamic_map_states.add()
    done = set()
    for tls_id, index, lane, stop in links:
      if lane in done:
        continue
      state = tracks.tls[tls_id][first + t]
      if index >= len(state):
        continue
      done.add(lane)
      dyn.lane_states.add(lane=lane, state=_SIGNAL.get(
          state[index], _STATE.LANE_STATE_UNKNOWN), stop_point=map_pb2.MapPoint(
              x=stop[0], y=stop[1], z=stop[2]))


def cut_scenarios(cfg: SumoConfig, tracks: Tracks, netmap: NetworkMap,
                  limit: int) -> Iterator[scenario_pb2.Scenario]:
  """Scenarios from one run, window after window, up to ``limit``."""
  rng = np.random.default_rng(cfg.seed)
  first = int(round(cfg.warmup_s / DT))
  stride = max(int(round(cfg.window_stride_s / DT)), 1)
  made = 0
  while first + NUM_STEPS <= tracks.num_steps and made < limit:
    k, rows, valid = _window(tracks, first)
    if len(k):
      for ego in _choose_egos(tracks, k, rows, valid, rng,
                              cfg.egos_per_window, cfg.radius):
        sid = (f'sumo-{cfg.network}-s{cfg.seed}-t{first}-'
               f'{tracks.name[k[ego]]}')
        scenario = _scenario(cfg, tracks, netmap, first, k, rows, valid, ego,
                             sid)
        if scenario is not None:
          yield scenario
          made += 1
          if made == limit:
            return
    first += stride
