"""SimulatorState -> WOMD ``Scenario`` proto (``scenario_from_state``).

The inverse of ``womd.state_from_scenario``: an unbatched state is written
back as a ``Scenario``, so that simulated or round-tripped scenes can be
stored in the WOMD format and read again by any WOMD tool. With a state read
with every maximum set to ``None`` (no padding) the round trip
``Scenario -> SimulatorState -> Scenario`` reproduces every field the state
carries.
"""

from __future__ import annotations

import numpy as np

from prefalign import datatypes
from prefalign.data import womd_map
from prefalign.data.protos import map_pb2
from prefalign.data.protos import scenario_pb2

__all__ = ['scenario_from_state']

# Trajectory fields, in the order of the ObjectState fields they fill.
_STATE_FIELDS = ('x', 'y', 'z', 'length', 'width', 'height', 'yaw', 'vel_x',
                 'vel_y')


def _step_micros(traj: datatypes.Trajectory, rows: np.ndarray) -> np.ndarray:
  """(T,) the clock: a valid timestamp from any object at each step, else
  10 Hz continuing from the first valid one (from 0 when there is none)."""
  micros = np.asarray(traj.timestamp_micros)
  valid = np.asarray(traj.valid)
  num_steps = traj.num_timesteps
  step_micros = np.where(valid, micros, -1).max(axis=0) if len(rows) else (
      np.full(num_steps, -1))
  base = np.arange(num_steps) * datatypes.TIMESTEP_MICROS_INTERVAL
  have = step_micros >= 0
  if have.any():
    offset = (step_micros[have] - base[have])[0]
    return np.where(have, step_micros, base + offset)
  return base


def _add_tracks(out: scenario_pb2.Scenario, traj: datatypes.Trajectory,
                meta: datatypes.ObjectMetadata, rows: np.ndarray) -> None:
  """One track per row in ``rows`` (N,) with its per-step states, and the
  SDC, ``tracks_to_predict`` and ``objects_of_interest`` among them."""
  g = lambda a: np.asarray(a)
  valid = g(traj.valid)
  fields = [g(getattr(traj, n)).astype(np.float64) for n in _STATE_FIELDS]
  ids, types = g(meta.ids), g(meta.object_types)
  for new_index, i in enumerate(rows):
    track = out.tracks.add(id=int(ids[i]), object_type=int(types[i]))
    for t in range(traj.num_timesteps):
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


def _add_map_features(out: scenario_pb2.Scenario,
                      rg: datatypes.RoadgraphPoints) -> None:
  """One map feature per run of equal ``ids`` among the (P,) valid points."""
  g = lambda a: np.asarray(a)
  rg_valid = g(rg.valid)
  xyz = np.stack([g(rg.x), g(rg.y), g(rg.z)], -1).astype(np.float64)[rg_valid]
  rg_ids, rg_types = g(rg.ids)[rg_valid], g(rg.types)[rg_valid]
  starts = np.flatnonzero(np.r_[True, rg_ids[1:] != rg_ids[:-1]])
  ends = np.r_[starts[1:], len(rg_ids)]
  for s, e in zip(starts, ends):
    womd_map.add_feature(out, int(rg_ids[s]), int(rg_types[s]), xyz[s:e])


def _add_signals(out: scenario_pb2.Scenario,
                 tl: datatypes.TrafficLights) -> None:
  """A dynamic map state per step with the (L, T) lights valid at it; none
  when the state holds no light."""
  g = lambda a: np.asarray(a)
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
    state: an unbatched SimulatorState (numpy or jax arrays): Trajectory
      (N, T), ObjectMetadata (N,), RoadgraphPoints (P,), TrafficLights
      (L, T).
    scenario_id: the id to write.
    use_log: write ``log_trajectory`` (True) or ``sim_trajectory``.
    current_time_index: defaults to ``state.timestep``.

  Returns:
    A Scenario with one track per valid object row (``metadata.is_valid``),
    in row order, and T timestamps.
  """
  if state.shape:
    raise ValueError(f'scenario_from_state needs an unbatched state, got '
                     f'batch shape {state.shape}.')
  traj = state.log_trajectory if use_log else state.sim_trajectory
  meta = state.object_metadata
  rows = np.flatnonzero(np.asarray(meta.is_valid))
  out = scenario_pb2.Scenario(scenario_id=scenario_id)
  out.timestamps_seconds.extend((_step_micros(traj, rows) / 1e6).tolist())
  out.current_time_index = int(
      np.asarray(state.timestep) if current_time_index is None else
      current_time_index)
  _add_tracks(out, traj, meta, rows)
  _add_map_features(out, state.roadgraph_points)
  _add_signals(out, state.log_traffic_light)
  return out
