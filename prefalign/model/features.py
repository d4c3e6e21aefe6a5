"""Scene features of the motion-token model, computed inside ``jax.jit``.

``scene_from_state`` turns a ``SimulatorState`` at its current step into a
``Scene``: agents (history and attributes), map polyline chunks and traffic
lights. Every token of the scene has a *pose* (x, y, yaw) in the global frame
and features expressed in its own frame, and every interaction between two
tokens is described by ``relative_features`` (the pose of one in the frame
of the other). Nothing the network sees depends on the global frame, so the
model is exactly invariant to a rigid motion of the whole scene: this is
SMART's / QCNet's query-centric design, which lets a small model generalise
across intersections in any orientation.

Map chunks: each map feature (lane, road line, road edge, crosswalk, ...) is
resampled by keeping every ``point_stride``-th point (polygons and signs keep
all points) and cut into chunks of ``points_per_chunk`` points; the
``num_map_chunks`` chunks nearest to any agent are kept. Everything has
static shapes, so the same function serves training batches and the jitted
sampler.
"""

from __future__ import annotations

import dataclasses

from flax import struct
import jax
import jax.numpy as jnp

from prefalign import datatypes

__all__ = [
    'SceneConfig',
    'Scene',
    'scene_from_state',
    'relative_features',
    'to_frame',
    'NUM_REL_FEATURES',
    'NUM_HISTORY_FEATURES',
    'NUM_ATTR_FEATURES',
]

_M = datatypes.MapElementIds
NUM_REL_FEATURES = 6
NUM_HISTORY_FEATURES = 7
NUM_ATTR_FEATURES = len(datatypes.ObjectTypeIds) + 3
# Feature scales: positions, velocities and sizes enter the network at
# about unit magnitude.
POS_SCALE = 0.05  # 20 m -> 1
VEL_SCALE = 0.1  # 10 m/s -> 1
SIZE_SCALE = 0.2  # 5 m -> 1


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """What of a scenario the model sees.

  Attributes:
    num_map_chunks: map chunks kept (nearest to any agent), M.
    points_per_chunk: points per chunk, S.
    point_stride: keep every n-th point of polylines (WOMD samples them
      every ~0.5 m, so 4 gives ~2 m spacing and ~15 m chunks).
    num_history: logged steps up to and including the current one, H.
  """
  num_map_chunks: int = 256
  points_per_chunk: int = 8
  point_stride: int = 4
  num_history: int = datatypes.CURRENT_TIME_INDEX + 1


@struct.dataclass
class Scene:
  """The model's view of one scenario at its current step.

  With A agents (the state's objects), M map chunks, S points per chunk,
  L traffic lights and H history steps; every field has a leading batch
  prefix (...).

  Attributes:
    agent_pose: float32 (..., A, 3) x, y, yaw at the current step.
    agent_valid: bool (..., A), valid at the current step.
    agent_type: int32 (..., A) ``ObjectTypeIds``.
    agent_history: float32 (..., A, H, 7) past states in the agent's current
      frame: x, y, cos(yaw), sin(yaw), vel_x, vel_y, valid.
    agent_attr: float32 (..., A, 8) one-hot type (5), length, width, height.
    map_pose: float32 (..., M, 3) chunk pose (first point, direction to the
      last point).
    map_heading: bool (..., M) the chunk has a direction (not a single point).
    map_points: float32 (..., M, S, 3) points in the chunk frame (x, y) and a
      validity flag.
    map_type: int32 (..., M) ``MapElementIds`` (0 for padding).
    map_valid: bool (..., M).
    light_pose: float32 (..., L, 3) stop points, headed along their lane.
    light_heading: bool (..., L) the lane's heading was found (else yaw 0,
      unused).
    light_state: int32 (..., L) ``TrafficLightStates`` at the current step.
    light_valid: bool (..., L).
  """
  agent_pose: jax.Array
  agent_valid: jax.Array
  agent_type: jax.Array
  agent_history: jax.Array
  agent_attr: jax.Array
  map_pose: jax.Array
  map_heading: jax.Array
  map_points: jax.Array
  map_type: jax.Array
  map_valid: jax.Array
  light_pose: jax.Array
  light_heading: jax.Array
  light_state: jax.Array
  light_valid: jax.Array

  @property
  def num_agents(self) -> int:
    return self.agent_valid.shape[-1]


def to_frame(dx: jax.Array, dy: jax.Array, yaw: jax.Array):
  """Rotates the global vector (dx, dy) into a frame of heading ``yaw``."""
  c, s = jnp.cos(yaw), jnp.sin(yaw)
  return c * dx + s * dy, -s * dx + c * dy


def relative_features(query_pose: jax.Array, key_pose: jax.Array,
                      key_heading: jax.Array | None = None,
                      query_heading: jax.Array | None = None) -> jax.Array:
  """The pose of each key in the frame of its query.

  Args:
    query_pose: float32 (..., 3) x, y, yaw.
    key_pose: float32 (..., 3), broadcast against ``query_pose``.
    key_heading: optional bool (...): False for keys without a heading
      (their relative-heading features are zero).
    query_heading: optional bool (...): False for queries without a heading
      (a stop sign, a signal whose lane is unknown); they see only the
      distance, so that nothing depends on the global frame.

  Returns:
    float32 (..., 6): x, y in the query frame (scaled), distance (scaled),
    cos and sin of the relative heading, and whether it has a heading.
  """
  dx = key_pose[..., 0] - query_pose[..., 0]
  dy = key_pose[..., 1] - query_pose[..., 1]
  lx, ly = to_frame(dx, dy, query_pose[..., 2])
  dyaw = key_pose[..., 2] - query_pose[..., 2]
  has = (jnp.ones_like(dx) if key_heading is None else
         key_heading.astype(dx.dtype))
  dist = jnp.sqrt(dx * dx + dy * dy + 1e-12)
  if query_heading is not None:
    lx = jnp.where(query_heading, lx, dist)
    ly = jnp.where(query_heading, ly, 0.0)
    has = has * query_heading.astype(dx.dtype)
  return jnp.stack([lx * POS_SCALE, ly * POS_SCALE, dist * POS_SCALE,
                    jnp.cos(dyaw) * has, jnp.sin(dyaw) * has, has], axis=-1)


def _agents(traj: datatypes.Trajectory, meta: datatypes.ObjectMetadata,
            now: int, num_history: int):
  cur = jax.tree.map(lambda a: a[..., now], traj)
  pose = jnp.stack([cur.x, cur.y, cur.yaw], axis=-1)
  valid = cur.valid
  hist = jax.tree.map(lambda a: a[..., now + 1 - num_history:now + 1], traj)
  px, py = to_frame(hist.x - cur.x[..., None], hist.y - cur.y[..., None],
                    cur.yaw[..., None])
  vx, vy = to_frame(hist.vel_x, hist.vel_y, cur.yaw[..., None])
  dyaw = hist.yaw - cur.yaw[..., None]
  hv = hist.valid & valid[..., None]
  feats = jnp.stack([px * POS_SCALE, py * POS_SCALE, jnp.cos(dyaw),
                     jnp.sin(dyaw), vx * VEL_SCALE, vy * VEL_SCALE,
                     jnp.ones_like(px)], axis=-1)
  feats = jnp.where(hv[..., None], feats, 0.0)
  types = jnp.clip(meta.object_types, 0, len(datatypes.ObjectTypeIds) - 1)
  onehot = jax.nn.one_hot(types, len(datatypes.ObjectTypeIds))
  size = jnp.stack([cur.length, cur.width, cur.height], -1) * SIZE_SCALE
  attr = jnp.concatenate([onehot, size], axis=-1)
  attr = jnp.where(valid[..., None], attr, 0.0)
  pose = jnp.where(valid[..., None], pose, 0.0)
  return pose, valid, jnp.where(valid, types, 0), feats, attr


def _map_chunks(rg: datatypes.RoadgraphPoints, config: SceneConfig):
  """Chunks of one scenario's road graph: (P,) fields -> (C, S) arrays."""
  num_points = rg.x.shape[-1]
  idx = jnp.arange(num_points)
  prev_id = jnp.concatenate([jnp.full((1,), -2, rg.ids.dtype), rg.ids[:-1]])
  next_id = jnp.concatenate([rg.ids[1:], jnp.full((1,), -2, rg.ids.dtype)])
  starts = (rg.ids != prev_id) | (idx == 0)
  last = rg.ids != next_id
  first_idx = jax.lax.cummax(jnp.where(starts, idx, 0))
  within = idx - first_idx
  polygon = rg.types >= _M.STOP_SIGN
  stride = jnp.where(polygon, 1, config.point_stride)
  keep = rg.valid & ((within % stride == 0) | (last & ~polygon))
  sample = jnp.where(polygon, within, (within + stride - 1) // stride)
  slot = sample % config.points_per_chunk
  new_chunk = keep & ((slot == 0) | starts)
  chunk = jnp.cumsum(new_chunk) - 1
  num_chunks = -(-num_points // config.points_per_chunk)
  num_chunks = max(1, num_chunks)
  chunk = jnp.where(keep & (chunk < num_chunks), chunk, num_chunks)
  shape = (num_chunks + 1, config.points_per_chunk)
  xs = jnp.zeros(shape).at[chunk, slot].set(rg.x)[:-1]
  ys = jnp.zeros(shape).at[chunk, slot].set(rg.y)[:-1]
  ok = jnp.zeros(shape, bool).at[chunk, slot].set(keep)[:-1]
  ctype = jnp.zeros(num_chunks + 1, jnp.int32).at[chunk].set(
      jnp.maximum(rg.types, 0))[:-1]
  return xs, ys, ok, ctype


def _chunk_poses(xs, ys, ok):
  """Pose (first valid point, direction to the last) of (C, S) chunks."""
  num = ok.sum(-1)
  first = jnp.argmax(ok, axis=-1)
  last = ok.shape[-1] - 1 - jnp.argmax(ok[..., ::-1], axis=-1)
  take = lambda a, i: jnp.take_along_axis(a, i[..., None], -1)[..., 0]
  x0, y0 = take(xs, first), take(ys, first)
  x1, y1 = take(xs, last), take(ys, last)
  dx, dy = x1 - x0, y1 - y0
  has = (num > 1) & (dx * dx + dy * dy > 1e-4)
  yaw = jnp.where(has, jnp.arctan2(jnp.where(has, dy, 0.0),
                                   jnp.where(has, dx, 1.0)), 0.0)
  return jnp.stack([x0, y0, yaw], -1), has, num > 0


def _light_headings(lt: datatypes.TrafficLights,
                    rg: datatypes.RoadgraphPoints):
  """Heading of each signal's lane at the point nearest its stop point."""
  on_lane = (rg.ids[None, :] == lt.lane_ids[:, None]) & rg.valid[None, :]
  d2 = (rg.x[None, :] - lt.x[:, None])**2 + (rg.y[None, :] - lt.y[:, None])**2
  best = jnp.argmin(jnp.where(on_lane, d2, jnp.inf), axis=-1)
  dx, dy = rg.dir_x[best], rg.dir_y[best]
  has = on_lane.any(-1) & (dx * dx + dy * dy > 1e-6)
  yaw = jnp.arctan2(jnp.where(has, dy, 0.0), jnp.where(has, dx, 1.0))
  return jnp.where(has, yaw, 0.0), has


def _one_scene(state: datatypes.SimulatorState, config: SceneConfig) -> Scene:
  now = datatypes.CURRENT_TIME_INDEX
  pose, valid, types, hist, attr = _agents(
      state.log_trajectory, state.object_metadata, now, config.num_history)
  xs, ys, ok, ctype = _map_chunks(state.roadgraph_points, config)
  cpose, chead, cvalid = _chunk_poses(xs, ys, ok)
  # The chunks nearest to any valid agent (distance from the chunk's points).
  d2 = ((xs[:, :, None] - pose[None, None, :, 0])**2 +
        (ys[:, :, None] - pose[None, None, :, 1])**2)
  d2 = jnp.where(ok[:, :, None] & valid[None, None, :], d2, jnp.inf)
  near = d2.min(axis=(1, 2))
  m = config.num_map_chunks
  if near.shape[0] < m:  # fewer chunks than slots: pad
    pad = m - near.shape[0]
    near = jnp.concatenate([near, jnp.full((pad,), jnp.inf)])
    xs, ys = (jnp.pad(a, ((0, pad), (0, 0))) for a in (xs, ys))
    ok = jnp.pad(ok, ((0, pad), (0, 0)))
    ctype = jnp.pad(ctype, (0, pad))
    cpose = jnp.pad(cpose, ((0, pad), (0, 0)))
    chead, cvalid = (jnp.pad(a, (0, pad)) for a in (chead, cvalid))
  _, sel = jax.lax.top_k(-near, m)
  sel_ok = jnp.isfinite(near[sel]) & cvalid[sel]
  cpose, chead = cpose[sel], chead[sel] & sel_ok
  px, py = to_frame(xs[sel] - cpose[:, None, 0], ys[sel] - cpose[:, None, 1],
                    cpose[:, None, 2])
  pok = ok[sel] & sel_ok[:, None]
  points = jnp.stack([px * POS_SCALE, py * POS_SCALE,
                      pok.astype(jnp.float32)], -1)
  points = jnp.where(pok[..., None], points, 0.0)
  cpose = jnp.where(sel_ok[:, None], cpose, 0.0)
  ctype = jnp.where(sel_ok, ctype[sel], 0)

  tl = state.log_traffic_light
  lt = jax.tree.map(lambda a: a[..., now], tl)
  lvalid = lt.valid
  lyaw, lhead = _light_headings(lt, state.roadgraph_points)
  lpose = jnp.stack([lt.x, lt.y, lyaw], -1)
  return Scene(
      agent_pose=pose, agent_valid=valid, agent_type=types,
      agent_history=hist, agent_attr=attr, map_pose=cpose,
      map_heading=chead, map_points=points, map_type=ctype,
      map_valid=sel_ok, light_pose=jnp.where(lvalid[:, None], lpose, 0.0),
      light_heading=lhead & lvalid,
      light_state=jnp.where(lvalid, jnp.maximum(lt.state, 0), 0),
      light_valid=lvalid)


@jax.named_scope('model.scene_from_state')
def scene_from_state(state: datatypes.SimulatorState,
                     config: SceneConfig = SceneConfig()) -> Scene:
  """The model's ``Scene`` of states with any batch prefix.

  Uses the *logged* history up to the current step (index 10).

  Args:
    state: SimulatorState (...).
    config: map chunking and history length.

  Returns:
    Scene (...); see its docstring for shapes.
  """
  fn = lambda s: _one_scene(s, config)
  for _ in range(len(state.shape)):
    fn = jax.vmap(fn)
  return fn(state)
