"""Invertible body-frame acceleration dynamics.

The action of one object is its acceleration ``(a_lon, a_lat)`` in m/s^2,
expressed in the object's own frame at step t (heading ``yaw_t``). One step
of length ``dt`` is integrated semi-implicitly (velocity first, then position
with the new velocity), which makes the action a second difference of
positions, as in MotionLM's delta-of-delta actions:

  a_world   = R(yaw_t) @ (a_lon, a_lat)
  v_{t+1}   = v_t + a_world * dt
  p_{t+1}   = p_t + v_{t+1} * dt            (x and y only)
  yaw_{t+1} = heading of v_{t+1} (or of -v_{t+1}, whichever is closer to
              yaw_t) when |v_{t+1}| > min_heading_speed, else yaw_t.

The inverse reads ``v_t`` from the state itself, so inverse-then-forward
reproduces the next logged position exactly (up to float32 rounding) one
step at a time. Because logged velocities and headings are not exactly the
finite differences of logged positions, replaying per-step log actions open
loop drifts; ``inverse_all(..., closed_loop=True)`` gives the teacher-forced
actions that track the logged positions exactly from the simulated states.

``apply_trajectory_update`` writes a ``TrajectoryUpdate`` into step t + 1 of a
trajectory with Waymax's rules (controlled objects take the update, the rest
replay the log).
"""

from __future__ import annotations

import dataclasses

from flax import struct
import jax
import jax.numpy as jnp

from prefalign import datatypes

__all__ = [
    'DynamicsConfig',
    'Action',
    'TrajectoryUpdate',
    'ACTION_DIM',
    'compute_update',
    'integrate',
    'forward',
    'inverse',
    'inverse_all',
    'apply_trajectory_update',
]

ACTION_DIM = 2  # (a_lon, a_lat)


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
  """Bounds and constants of the acceleration model.

  Frozen and hashable, so it can be a static argument of ``jax.jit``.

  Attributes:
    max_lon_accel: |a_lon| bound (m/s^2); unbounded by default. The dynamics
      are exactly invertible, and logged driving needs large per-step
      actions: WOMD positions jitter by about a centimetre, which enters a
      10 Hz action divided by dt^2 (1 cm is 1 m/s^2), so 1% of real vehicle
      steps need more than 13 m/s^2 and a few need over 100 m/s^2 (measured
      on the shared real scenarios). Bounding the action space is the job of
      the action vocabulary (the tokenizer's per-type ranges at its coarser
      token rate); set a bound here to make the simulator itself clip.
    max_lat_accel: |a_lat| bound (m/s^2); unbounded by default, as above.
    min_heading_speed: speed (m/s) above which the heading follows the
      velocity. 0.5 m/s is 5 cm per 0.1 s step: below that, the 1-2 cm jitter
      of logged positions of parked or creeping objects would swing the
      velocity direction by tens of degrees, so the heading is held instead.
      Waymax's bicycle inverse uses a similar 0.6 m/s.
    dt: step length (s).
  """
  max_lon_accel: float = float('inf')
  max_lat_accel: float = float('inf')
  min_heading_speed: float = 0.5
  dt: float = datatypes.TIME_INTERVAL

  @property
  def action_bounds(self) -> tuple[jax.Array, jax.Array]:
    """(low, high), each of shape (2,)."""
    high = jnp.array([self.max_lon_accel, self.max_lat_accel], jnp.float32)
    return -high, high


@struct.dataclass
class Action:
  """Per-object actions.

  Iterating yields ``(data, valid)``, so ``data, valid = inverse(...)`` works.

  Attributes:
    data: float32 (..., num_objects, 2) accelerations (a_lon, a_lat) in m/s^2.
    valid: bool (..., num_objects, 1).
  """
  data: jax.Array
  valid: jax.Array

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.valid.shape[:-1])

  def __iter__(self):
    return iter((self.data, self.valid))


@struct.dataclass
class TrajectoryUpdate:
  """The controllable part of the next state; every field (..., N, 1)."""
  x: jax.Array
  y: jax.Array
  yaw: jax.Array
  vel_x: jax.Array
  vel_y: jax.Array
  valid: jax.Array

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.x.shape)


def _rotate(vx: jax.Array, vy: jax.Array, yaw: jax.Array):
  c, s = jnp.cos(yaw), jnp.sin(yaw)
  return c * vx - s * vy, s * vx + c * vy


def _next_heading(vx: jax.Array, vy: jax.Array, yaw: jax.Array,
                  min_speed: float) -> jax.Array:
  """Heading after a step with velocity (vx, vy), starting from ``yaw``."""
  speed_sq = vx * vx + vy * vy
  moving = speed_sq > min_speed * min_speed
  # arctan2(0, 0) is finite, but its gradient is not: feed a dummy vector to
  # the branch that is not taken.
  safe_vx = jnp.where(moving, vx, 1.0)
  safe_vy = jnp.where(moving, vy, 0.0)
  forward_yaw = jnp.arctan2(safe_vy, safe_vx)
  # A reversing object moves against its heading; taking the candidate closer
  # to the old heading keeps its nose where it was instead of spinning it.
  backward_yaw = forward_yaw + jnp.pi
  d_fwd = jnp.abs(datatypes.wrap_yaw(forward_yaw - yaw))
  d_bwd = jnp.abs(datatypes.wrap_yaw(backward_yaw - yaw))
  new_yaw = datatypes.wrap_yaw(
      jnp.where(d_fwd <= d_bwd, forward_yaw, backward_yaw))
  # A held heading is returned bit for bit (re-wrapping would round it).
  return jnp.where(moving, new_yaw, yaw)


def _clip_action(data: jax.Array, config: DynamicsConfig) -> jax.Array:
  low, high = config.action_bounds
  return jnp.clip(data, low, high)


def integrate(ax: jax.Array, ay: jax.Array, x: jax.Array, y: jax.Array,
              yaw: jax.Array, vx: jax.Array, vy: jax.Array,
              config: DynamicsConfig = DynamicsConfig()):
  """One step from body-frame accelerations (ax, ay); no clipping.

  All arguments broadcast against each other (any shape).

  Returns:
    ``(x, y, yaw, vel_x, vel_y)`` at the next step.
  """
  dt = config.dt
  awx, awy = _rotate(ax, ay, yaw)
  nvx = vx + awx * dt
  nvy = vy + awy * dt
  nx = x + nvx * dt
  ny = y + nvy * dt
  nyaw = _next_heading(nvx, nvy, yaw, config.min_heading_speed)
  return nx, ny, nyaw, nvx, nvy


@jax.named_scope('dynamics.compute_update')
def compute_update(
    action: Action,
    trajectory_t: datatypes.Trajectory,
    config: DynamicsConfig = DynamicsConfig(),
) -> TrajectoryUpdate:
  """Integrates one step from the current states.

  Invalid actions are treated as zero acceleration (the object coasts at
  constant velocity); they do not invalidate the object, as in Waymax.

  Args:
    action: ``Action`` with data (..., num_objects, 2) and valid
      (..., num_objects, 1).
    trajectory_t: Trajectory (..., num_objects, 1), the states at step t.
    config: dynamics constants.

  Returns:
    TrajectoryUpdate (..., num_objects, 1) for step t + 1; its ``valid`` is
    ``trajectory_t.valid & action.valid``.
  """
  data = jnp.where(action.valid, _clip_action(action.data, config), 0.0)
  ax, ay = data[..., 0:1], data[..., 1:2]
  t = trajectory_t
  nx, ny, nyaw, nvx, nvy = integrate(ax, ay, t.x, t.y, t.yaw, t.vel_x,
                                     t.vel_y, config)
  return TrajectoryUpdate(x=nx, y=ny, yaw=nyaw, vel_x=nvx, vel_y=nvy,
                          valid=t.valid & action.valid)


def forward(
    action: jax.Array,
    valid: jax.Array,
    trajectory_t: datatypes.Trajectory,
    config: DynamicsConfig = DynamicsConfig(),
) -> TrajectoryUpdate:
  """``compute_update`` on a raw action array.

  Args:
    action: float32 (..., num_objects, 2) accelerations (a_lon, a_lat).
    valid: bool (..., num_objects).
    trajectory_t: Trajectory (..., num_objects, 1).
    config: dynamics constants.

  Returns:
    TrajectoryUpdate (..., num_objects, 1).
  """
  return compute_update(Action(data=action, valid=valid[..., None]),
                        trajectory_t, config)


def _pair_actions(cur: datatypes.Trajectory, nxt: datatypes.Trajectory,
                  config: DynamicsConfig):
  """Actions taking the states ``cur`` to the positions of ``nxt``.

  Both trajectories have the same shape; returns (data (..., 2), valid).
  """
  dt = config.dt
  nvx = (nxt.x - cur.x) / dt
  nvy = (nxt.y - cur.y) / dt
  awx = (nvx - cur.vel_x) / dt
  awy = (nvy - cur.vel_y) / dt
  ax, ay = _rotate(awx, awy, -cur.yaw)
  valid = cur.valid & nxt.valid
  data = jnp.stack([ax, ay], axis=-1)
  data = jnp.where(valid[..., None], _clip_action(data, config), 0.0)
  return data, valid


def _slice(traj: datatypes.Trajectory, t: jax.Array) -> datatypes.Trajectory:
  """(..., N, T) -> (..., N, 1) at a (possibly batched) index ``t``."""
  return datatypes._time_slice(traj, t)


@jax.named_scope('dynamics.inverse')
def inverse(
    trajectory: datatypes.Trajectory,
    metadata: datatypes.ObjectMetadata | None = None,
    timestep: jax.Array | int = 0,
    config: DynamicsConfig = DynamicsConfig(),
) -> Action:
  """The action taking ``trajectory[t]`` to the position ``trajectory[t+1]``.

  Mirrors Waymax's ``inverse(trajectory, metadata, timestep)``; ``metadata``
  is unused and may be None. Feeding a trajectory whose step t is the
  simulated state and step t + 1 the logged one gives the expert action that
  re-converges to the log.

  Args:
    trajectory: Trajectory (..., num_objects, num_timesteps).
    metadata: ObjectMetadata or None; unused (kept for Waymax signature
      compatibility).
    timestep: int, or int array of the batch shape (...), with
      0 <= timestep < num_timesteps - 1.
    config: dynamics constants.

  Returns:
    Action with data (..., num_objects, 2), clipped to the bounds and zero
    where invalid, and valid (..., num_objects, 1) = valid[t] & valid[t+1].
  """
  if metadata is not None and not isinstance(metadata,
                                             datatypes.ObjectMetadata):
    # Guards inverse(traj, t): the step is the third argument, as in Waymax.
    raise TypeError('inverse(trajectory, metadata, timestep): metadata must '
                    f'be ObjectMetadata or None, got {type(metadata)}.')
  timestep = jnp.asarray(timestep, jnp.int32)
  cur = _slice(trajectory, timestep)
  nxt = _slice(trajectory, timestep + 1)
  data, valid = _pair_actions(cur, nxt, config)
  return Action(data=data[..., 0, :], valid=valid)


@jax.named_scope('dynamics.inverse_all')
def inverse_all(
    trajectory: datatypes.Trajectory,
    config: DynamicsConfig = DynamicsConfig(),
    closed_loop: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Actions for every pair of consecutive steps.

  Two modes:
    * ``closed_loop=False``: ``inverse`` at every t on the logged states
      (vectorised). Each action reproduces position t + 1 from the *logged*
      state t.
    * ``closed_loop=True``: teacher forcing. A ``lax.scan`` keeps a simulated
      state that starts at each object's first valid logged state (and
      restarts from the log whenever an object reappears); the action at t
      takes the simulated state to the logged position at t + 1 and the
      simulated state is then advanced with ``compute_update``. Replaying
      these actions from the first state reproduces every logged position
      (unless clipped, after which they steer back to the log), which is the
      label a token model needs.

  Args:
    trajectory: Trajectory (..., num_objects, num_timesteps).
    config: dynamics constants.
    closed_loop: which mode (static).

  Returns:
    actions: float32 (..., num_objects, num_timesteps - 1, 2), zero where
      invalid.
    valid: bool (..., num_objects, num_timesteps - 1), valid[t] & valid[t+1].
  """
  if not closed_loop:
    cur = jax.tree.map(lambda a: a[..., :-1], trajectory)
    nxt = jax.tree.map(lambda a: a[..., 1:], trajectory)
    return _pair_actions(cur, nxt, config)

  # Time first, so that scan walks over it.
  steps = jax.tree.map(lambda a: jnp.moveaxis(a, -1, 0), trajectory)
  first = jax.tree.map(lambda a: a[0], steps)
  rest = jax.tree.map(lambda a: a[1:], steps)

  def body(sim, log_next):
    data, valid = _pair_actions(sim, log_next, config)
    nx, ny, nyaw, nvx, nvy = integrate(data[..., 0], data[..., 1], sim.x,
                                       sim.y, sim.yaw, sim.vel_x, sim.vel_y,
                                       config)
    advanced = log_next.replace(x=nx, y=ny, yaw=nyaw, vel_x=nvx, vel_y=nvy)
    # Only objects that were simulated (valid at t and t + 1) keep their
    # simulated state; the rest restart from the log.
    new_sim = jax.tree.map(lambda a, b: jnp.where(valid, a, b), advanced,
                           log_next)
    return new_sim, (data, valid)

  _, (data, valid) = jax.lax.scan(body, first, rest)
  return jnp.moveaxis(data, 0, -2), jnp.moveaxis(valid, 0, -1)


@jax.named_scope('dynamics.apply_trajectory_update')
def apply_trajectory_update(
    trajectory: datatypes.Trajectory,
    reference_trajectory: datatypes.Trajectory,
    update: TrajectoryUpdate,
    is_controlled: jax.Array,
    timestep: jax.Array | int,
    allow_object_injection: bool = False,
) -> datatypes.Trajectory:
  """Writes step ``timestep + 1`` of ``trajectory`` (Waymax semantics).

  * Controlled objects that are valid at ``timestep`` take the update for x,
    y, yaw, vel_x and vel_y, and carry z, length, width and height from
    ``timestep``; they stay valid (the update's own ``valid`` is ignored).
  * Every other object replays ``reference_trajectory`` at ``timestep + 1``
    and is valid there if it was valid at ``timestep`` and is valid in the
    reference at ``timestep + 1`` (with ``allow_object_injection``: if it is
    valid in the reference at ``timestep + 1``).
  * ``timestamp_micros`` always comes from the reference at ``timestep + 1``.
  * Numeric fields of states that end up invalid are set to -1.

  Args:
    trajectory: Trajectory (..., num_objects, num_timesteps), the simulation.
    reference_trajectory: Trajectory of the same shape, the log.
    update: TrajectoryUpdate (..., num_objects, 1).
    is_controlled: bool (..., num_objects).
    timestep: int or int array of the batch shape (...), the current step;
      ``timestep + 1`` must be < num_timesteps.
    allow_object_injection: see above (static).

  Returns:
    The trajectory with step ``timestep + 1`` replaced.
  """
  timestep = jnp.asarray(timestep, jnp.int32)
  cur = _slice(trajectory, timestep)
  log_next = _slice(reference_trajectory, timestep + 1)
  controlled = is_controlled[..., None] & cur.valid
  if allow_object_injection:
    other_valid = log_next.valid
  else:
    other_valid = cur.valid & log_next.valid
  new_valid = controlled | other_valid

  sim_next = cur.replace(
      x=update.x, y=update.y, yaw=update.yaw, vel_x=update.vel_x,
      vel_y=update.vel_y, valid=new_valid,
      timestamp_micros=log_next.timestamp_micros)
  nxt = jax.tree.map(lambda a, b: jnp.where(controlled, a, b), sim_next,
                     log_next.replace(valid=new_valid))
  nxt = nxt.fill_invalid()

  # A one-hot write instead of dynamic_update_slice, so that a batched
  # timestep works without vmap.
  num_t = trajectory.num_timesteps
  t_idx = jnp.broadcast_to(timestep, trajectory.shape[:-2])
  at_next = (jnp.arange(num_t) == (t_idx[..., None, None] + 1))
  return jax.tree.map(lambda full, one: jnp.where(at_next, one, full),
                      trajectory, nxt)
