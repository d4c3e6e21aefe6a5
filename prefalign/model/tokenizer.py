"""Motion tokens: quantised body-frame accelerations held for a few steps.

A token is one ``(a_lon, a_lat)`` pair from a per-object-type grid, held for
``steps_per_token`` simulation steps (default 5: tokens at 2 Hz) while the
simulator's dynamics (``prefalign.sim.dynamics.integrate``) integrate the
10 Hz states. Holding a body-frame acceleration lets a single token turn an
object (the frame rotates with the heading at every 10 Hz step).

Why these choices:

* **2 Hz tokens.** MotionLM decodes at 2 Hz and SMART / CAT-K at 2 Hz
  (0.5 s motion tokens); 16 tokens per 8 s keeps the joint decoder's
  sequence short (cost grows with agents x tokens) while the 10 Hz physics
  keeps the trajectories smooth.
* **A 13 x 13 grid of accelerations, denser near zero.** MotionLM quantises a
  delta-of-delta (acceleration-like) action uniformly into 13 x 13 values; a
  power-law grid (``bin_power`` > 1) spends more of the vocabulary on the
  gentle accelerations most steps need, and still reaches hard braking.
  On the shared real scenarios 13 x 13 reconstructs vehicles to 0.04 m ADE
  over 8 s (BENCHMARKS.md), far inside the 0.25 m target, with a softmax
  small enough for a 1M-parameter model.
* **Per-type ranges.** Pedestrians never need a vehicle's braking range; a
  shared vocabulary whose values are scaled per type keeps one softmax for
  every agent (the model sees the type) with fine resolution for each.
* **Closed-loop tokenization** (as in SMART / CAT-K): every token is the grid
  value whose held acceleration brings the *reconstructed* state closest to
  the log over the token's steps, so quantisation error is corrected at the
  next token instead of accumulating. Replaying the tokens from the initial
  state reproduces ``reconstruction`` exactly (``detokenize``).
* **The end velocity counts too.** Fitting positions alone is unstable: with
  one held acceleration per token, the least-squares fit of the token's
  positions leaves a velocity error that the next token over-corrects, and
  the error alternates in sign and grows by about 1.26x per token (the
  linearised per-token map of (position, velocity) error has an eigenvalue
  of -1.26): tracking a plain circle (40 m radius, 12 m/s) with the
  13 x 13 grid swings by up to 1.7 m. Also matching the velocity at the
  token's end (weight ``velocity_weight``) damps that mode (largest
  eigenvalue 0.18 at 0.5; the circle is then tracked within 0.16 m).

Shapes follow the simulator: ``(..., num_objects, num_timesteps)``.
"""

from __future__ import annotations

import dataclasses

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from prefalign import datatypes
from prefalign.sim import dynamics

__all__ = [
    'TokenizerConfig',
    'TypeRange',
    'Tokens',
    'Pose',
    'action_table',
    'token_actions',
    'hold',
    'tokenize',
    'detokenize',
]

_T = datatypes.ObjectTypeIds
_NUM_TYPES = len(_T)


@dataclasses.dataclass(frozen=True)
class TypeRange:
  """Acceleration range of one object type (m/s^2).

  Attributes:
    lon_min: strongest braking (negative).
    lon_max: strongest forward acceleration.
    lat_max: strongest lateral acceleration either way.
  """
  lon_min: float
  lon_max: float
  lat_max: float


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """The action vocabulary and the token rate.

  Frozen and hashable: a static argument of ``jax.jit``.

  Attributes:
    steps_per_token: simulation steps (10 Hz) each token is held for.
    num_lon_bins: odd number of longitudinal values (zero is one of them).
    num_lat_bins: odd number of lateral values.
    bin_power: grid spacing; value = range * |u|^power for u uniform in
      [-1, 1], so 1 is uniform and larger values are denser near zero.
    vehicle, pedestrian, cyclist: per-type ranges. Unset and 'other' objects
      use the vehicle range.
    start: the step tokens start from (WOSAC's current step, 10).
    num_steps: simulated steps after ``start`` (80); a multiple of
      ``steps_per_token``.
    dynamics: the integrator (unbounded: the grid is the bound).
    velocity_weight: weight of the token-end velocity error in the
      closed-loop fit, in units of the token's duration: the cost adds
      ``velocity_weight * (steps_per_token * dt)**2 * |v_end - v_log|**2``
      (m^2) to the summed squared position errors. 0 fits positions only,
      which oscillates (see the module docstring).
  """
  steps_per_token: int = 5
  num_lon_bins: int = 13
  num_lat_bins: int = 13
  bin_power: float = 2.0
  vehicle: TypeRange = TypeRange(-12.0, 8.0, 6.0)
  pedestrian: TypeRange = TypeRange(-4.0, 4.0, 4.0)
  cyclist: TypeRange = TypeRange(-8.0, 6.0, 5.0)
  start: int = datatypes.CURRENT_TIME_INDEX
  num_steps: int = datatypes.NUM_SIM_STEPS
  dynamics: dynamics.DynamicsConfig = dynamics.DynamicsConfig()
  velocity_weight: float = 0.5

  def __post_init__(self):
    for name in ('num_lon_bins', 'num_lat_bins'):
      n = getattr(self, name)
      if n < 1 or n % 2 == 0:
        raise ValueError(f'TokenizerConfig.{name} must be odd and positive '
                         f'(zero acceleration is a bin), got {n}')
    if self.steps_per_token < 1:
      raise ValueError('TokenizerConfig.steps_per_token must be >= 1, got '
                       f'{self.steps_per_token}')
    if self.num_steps % self.steps_per_token:
      raise ValueError(
          f'TokenizerConfig.num_steps={self.num_steps} is not a multiple of '
          f'steps_per_token={self.steps_per_token}')
    if self.bin_power <= 0:
      raise ValueError(f'TokenizerConfig.bin_power must be > 0, got '
                       f'{self.bin_power}')
    if not self.velocity_weight >= 0:  # also rejects NaN
      raise ValueError('TokenizerConfig.velocity_weight must be >= 0, got '
                       f'{self.velocity_weight}')

  @property
  def vocab_size(self) -> int:
    return self.num_lon_bins * self.num_lat_bins

  @property
  def num_tokens(self) -> int:
    """Tokens per object over ``num_steps`` (16 by default)."""
    return self.num_steps // self.steps_per_token

  def ranges(self) -> tuple[TypeRange, ...]:
    """One range per ``ObjectTypeIds`` value."""
    by_type = {_T.PEDESTRIAN: self.pedestrian, _T.CYCLIST: self.cyclist}
    return tuple(by_type.get(t, self.vehicle) for t in _T)


def _grid(n: int, power: float) -> np.ndarray:
  u = np.linspace(-1.0, 1.0, n)
  return np.sign(u) * np.abs(u)**power


def action_table(config: TokenizerConfig) -> np.ndarray:
  """float32 (num_types, vocab_size, 2): the (a_lon, a_lat) of every token.

  Token ``i * num_lat_bins + j`` is longitudinal bin i and lateral bin j;
  the middle token of every type is (0, 0).
  """
  lon_u = _grid(config.num_lon_bins, config.bin_power)
  lat_u = _grid(config.num_lat_bins, config.bin_power)
  table = np.zeros((_NUM_TYPES, config.vocab_size, 2), np.float32)
  for t, r in enumerate(config.ranges()):
    lon = np.where(lon_u < 0, -lon_u * r.lon_min, lon_u * r.lon_max)
    lat = lat_u * r.lat_max
    table[t, :, 0] = np.repeat(lon, config.num_lat_bins)
    table[t, :, 1] = np.tile(lat, config.num_lon_bins)
  return table


def _type_index(object_types: jax.Array) -> jax.Array:
  return jnp.clip(object_types, 0, _NUM_TYPES - 1)


def token_actions(tokens: jax.Array, object_types: jax.Array,
                  config: TokenizerConfig) -> jax.Array:
  """Accelerations of tokens.

  Args:
    tokens: int (..., num_objects, ...) token ids.
    object_types: int (..., num_objects), broadcast against the leading axes
      of ``tokens`` (append axes for trailing token axes).
    config: the vocabulary.

  Returns:
    float32 (*tokens.shape, 2).
  """
  table = jnp.asarray(action_table(config))
  return table[_type_index(object_types), tokens]


@struct.dataclass
class Pose:
  """Kinematic state the tokens act on; every field has the same shape."""
  x: jax.Array
  y: jax.Array
  yaw: jax.Array
  vel_x: jax.Array
  vel_y: jax.Array

  @classmethod
  def from_trajectory(cls, traj: datatypes.Trajectory) -> Pose:
    return cls(x=traj.x, y=traj.y, yaw=traj.yaw, vel_x=traj.vel_x,
               vel_y=traj.vel_y)

  def where(self, mask: jax.Array, other: Pose) -> Pose:
    return jax.tree.map(lambda a, b: jnp.where(mask, a, b), self, other)


def hold(pose: Pose, action: jax.Array,
         config: TokenizerConfig) -> tuple[Pose, Pose]:
  """Integrates one token: ``action`` held for ``steps_per_token`` steps.

  Args:
    pose: Pose of any shape S (the start states).
    action: float32 (*S, 2) body-frame (a_lon, a_lat).
    config: token length and dynamics.

  Returns:
    ``(end, path)``: the Pose after the token (shape S) and the Pose at every
    step of the token, shape (*S, steps_per_token), the last equal to ``end``.
  """
  ax, ay = action[..., 0], action[..., 1]
  s = (pose.x, pose.y, pose.yaw, pose.vel_x, pose.vel_y)
  path = []
  for _ in range(config.steps_per_token):
    s = dynamics.integrate(ax, ay, *s, config.dynamics)
    path.append(s)
  end = Pose(*s)
  stacked = Pose(*(jnp.stack([p[i] for p in path], axis=-1)
                   for i in range(5)))
  return end, stacked


@struct.dataclass
class Tokens:
  """Closed-loop tokens of a log and the states they reproduce.

  With K = num_tokens and S = steps_per_token:

  Attributes:
    tokens: int32 (..., num_objects, K) token ids (the zero-acceleration
      token where invalid).
    valid: bool (..., num_objects, K): the object is tracked at the token's
      first step and logged at its last; the label of next-token training.
    reconstruction: Pose (..., num_objects, K * S): the states the tokens
      produce at steps start + 1 .. start + K * S. An object that appears
      (or reappears) in the log restarts from its logged state at the first
      token boundary where it is valid.
    recon_valid: bool (..., num_objects, K * S): the object is tracked.
    start_pose: Pose (..., num_objects, K): the state each token starts from
      (the decoder's per-step input).
    start_valid: bool (..., num_objects, K): the object is tracked there.
  """
  tokens: jax.Array
  valid: jax.Array
  reconstruction: Pose
  recon_valid: jax.Array
  start_pose: Pose
  start_valid: jax.Array


@jax.named_scope('tokenizer.tokenize')
def tokenize(trajectory: datatypes.Trajectory, object_types: jax.Array,
             config: TokenizerConfig = TokenizerConfig()) -> Tokens:
  """Closed-loop tokenization of logged trajectories.

  At every token boundary each tracked object tries every token of its
  type's grid from its reconstructed state and keeps the one whose held
  acceleration passes closest to the log: summed squared position error
  over the token's logged steps, plus ``config.velocity_weight`` times the
  squared velocity error at the token's end.

  Args:
    trajectory: the log, Trajectory (..., num_objects, num_timesteps) with
      num_timesteps >= start + num_steps + 1.
    object_types: int (..., num_objects) ``ObjectTypeIds``.
    config: the vocabulary and the token rate.

  Returns:
    ``Tokens``; see its docstring for shapes.
  """
  steps = config.steps_per_token
  first = config.start
  if trajectory.num_timesteps < first + config.num_steps + 1:
    raise ValueError(
        f'tokenize needs {first + config.num_steps + 1} steps (start '
        f'{first} + {config.num_steps}), the trajectory has '
        f'{trajectory.num_timesteps}')
  table = jnp.asarray(action_table(config))[_type_index(object_types)]
  # [..., N, V, 2]
  span = trajectory.replace(**{  # the steps tokens cover, time first
      k: jnp.moveaxis(getattr(trajectory, k)[..., first:first +
                                              config.num_steps + 1], -1, 0)
      for k in ('x', 'y', 'yaw', 'vel_x', 'vel_y', 'valid')})

  def at(t):
    return Pose(x=span.x[t], y=span.y[t], yaw=span.yaw[t],
                vel_x=span.vel_x[t], vel_y=span.vel_y[t])

  zero_token = (config.num_lon_bins // 2) * config.num_lat_bins + (
      config.num_lat_bins // 2)

  def body(carry, k):
    pose, active = carry
    t0 = k * steps
    # Objects not tracked restart from the log where it is valid.
    log0 = at(t0)
    restart = ~active & span.valid[t0]
    pose = log0.where(restart, pose)
    active = active | restart
    # Every candidate token from every object's state: [..., N, V].
    cand = jax.tree.map(lambda a: a[..., None], pose)
    _, path = hold(cand, table, config)  # [..., N, V, S]
    idx = t0 + 1 + jnp.arange(steps)
    lx = jnp.moveaxis(span.x[idx], 0, -1)[..., None, :]  # [..., N, 1, S]
    ly = jnp.moveaxis(span.y[idx], 0, -1)[..., None, :]
    lv = jnp.moveaxis(span.valid[idx], 0, -1)[..., None, :]
    err = jnp.where(lv, (path.x - lx)**2 + (path.y - ly)**2, 0.0).sum(-1)
    # The logged end velocity is the finite difference of logged positions,
    # not the logged velocity field: the integrator's v_{t+1} is exactly
    # (p_{t+1} - p_t) / dt, and logged velocities disagree with it.
    t1 = t0 + steps
    dt = config.dynamics.dt
    lvx = (span.x[t1] - span.x[t1 - 1]) / dt
    lvy = (span.y[t1] - span.y[t1 - 1]) / dt
    vel_err = ((path.vel_x[..., -1] - lvx[..., None])**2 +
               (path.vel_y[..., -1] - lvy[..., None])**2)  # [..., N, V]
    has_vel = (span.valid[t1] & span.valid[t1 - 1])[..., None]
    err = err + jnp.where(
        has_vel, config.velocity_weight * (steps * dt)**2 * vel_err, 0.0)
    best = jnp.argmin(err, axis=-1)
    valid = active & span.valid[t0 + steps]
    token = jnp.where(valid, best, zero_token).astype(jnp.int32)
    chosen = jnp.take_along_axis(table, token[..., None, None], axis=-2)[
        ..., 0, :]
    end, walk = hold(pose, chosen, config)
    # Objects whose token has no label stop being tracked (they restart
    # from the log when it is valid again).
    return (end, valid), (token, valid, walk, pose, active)

  init = (at(0), jnp.zeros_like(span.valid[0]))
  _, (tokens, valid, walk, starts, start_valid) = jax.lax.scan(
      body, init, jnp.arange(config.num_tokens))
  # Time-major -> (..., N, K) and (..., N, K * S).
  tokens = jnp.moveaxis(tokens, 0, -1)
  valid = jnp.moveaxis(valid, 0, -1)
  start_valid = jnp.moveaxis(start_valid, 0, -1)
  starts = jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), starts)
  walk = jax.tree.map(
      lambda a: jnp.moveaxis(a, 0, -2).reshape(*a.shape[1:-1], -1), walk)
  recon_valid = jnp.repeat(valid, steps, axis=-1)
  return Tokens(tokens=tokens, valid=valid, reconstruction=walk,
                recon_valid=recon_valid, start_pose=starts,
                start_valid=start_valid)


@jax.named_scope('tokenizer.detokenize')
def detokenize(initial: Pose, tokens: jax.Array, object_types: jax.Array,
               config: TokenizerConfig = TokenizerConfig()) -> Pose:
  """Replays tokens from initial states (open loop; no log needed).

  Args:
    initial: Pose (..., num_objects) at step ``start``.
    tokens: int (..., num_objects, K) token ids.
    object_types: int (..., num_objects).
    config: the vocabulary and the token rate.

  Returns:
    Pose (..., num_objects, K * steps_per_token): states at steps
    start + 1 .. start + K * steps_per_token.
  """
  actions = token_actions(tokens, object_types[..., None], config)

  def body(pose, action):
    end, walk = hold(pose, action, config)
    return end, walk

  _, walk = jax.lax.scan(body, initial, jnp.moveaxis(actions, -2, 0))
  return jax.tree.map(
      lambda a: jnp.moveaxis(a, 0, -2).reshape(*a.shape[1:-1], -1), walk)
