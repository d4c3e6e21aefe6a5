"""A stateless multi-agent environment with Waymax semantics.

Functions take and return ``SimulatorState`` and never call ``jax.jit``; the
config is a frozen, hashable dataclass, so it can be a static argument:

  step = jax.jit(env.step, static_argnames='config')

A batch of scenarios (states stacked on a leading axis) runs through
``jax.vmap(functools.partial(env.step, config=config))``; ``reset``, ``step``
and ``metrics`` also run on the batched state directly, with one
``timestep`` per scenario.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Protocol, runtime_checkable

from flax import struct
import jax
import jax.numpy as jnp

from prefalign import datatypes
from prefalign.sim import dynamics as dynamics_lib
from prefalign.sim import geometry

__all__ = [
    'ControlledObject',
    'EnvConfig',
    'reset',
    'step',
    'control_mask',
    'update_state_by_log',
    'metrics',
    'Environment',
    'StepEnvironment',
    'KinematicEnvironment',
    'current_state',
]


class ControlledObject(enum.Enum):
  """Which objects the policy drives (Waymax ``ObjectType``)."""
  VALID = 'valid'  # every object with a track
  SDC = 'sdc'  # the self-driving car only
  MODELED = 'modeled'  # WOMD ``tracks_to_predict``
  NON_SDC = 'non_sdc'  # every object with a track except the SDC


@dataclasses.dataclass(frozen=True)
class EnvConfig:
  """Environment settings (frozen, hashable: a valid jit static argument).

  Attributes:
    init_steps: logged steps copied in by ``reset`` (11 for WOMD: the history
      and the current step), so the first action acts on step init_steps - 1.
    controlled_object: a ``ControlledObject`` or its string value.
    allow_new_objects_after_warmup: if False and ``controlled_object`` is
      VALID, only objects valid at init_steps - 1 are controlled, and objects
      that are invalid at a step never become valid later (no injection from
      the log). If True, objects appear when the log makes them valid.
    dynamics: the dynamics model's constants.
  """
  init_steps: int = datatypes.CURRENT_TIME_INDEX + 1
  controlled_object: ControlledObject | str = ControlledObject.VALID
  allow_new_objects_after_warmup: bool = False
  dynamics: dynamics_lib.DynamicsConfig = dynamics_lib.DynamicsConfig()

  def __post_init__(self):
    # Accept the string spelling but store the enum, so equal configs hash
    # equally (one jit trace).
    object.__setattr__(self, 'controlled_object',
                       ControlledObject(self.controlled_object))
    if self.init_steps < 1:
      raise ValueError(f'init_steps must be >= 1, got {self.init_steps}.')


def _step_mask(num_t: int, t: jax.Array, batch: tuple[int, ...]) -> jax.Array:
  """bool (..., 1, T): True at the steps <= t."""
  t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), batch)
  return jnp.arange(num_t) <= t[..., None, None]


@jax.named_scope('env.reset')
def reset(state: datatypes.SimulatorState,
          config: EnvConfig = EnvConfig()) -> datatypes.SimulatorState:
  """Starts a rollout: the sim holds the first ``init_steps`` logged steps.

  Args:
    state: a SimulatorState (any ``sim_trajectory`` and ``timestep``).
    config: environment settings.

  Returns:
    The state with ``sim_trajectory`` equal to the log on steps
    [0, init_steps) and invalid (-1 / False) after, and ``timestep`` =
    init_steps - 1 (shape: the batch shape).
  """
  log = state.log_trajectory
  if config.init_steps > log.num_timesteps:
    raise ValueError(f'init_steps={config.init_steps} exceeds the '
                     f'{log.num_timesteps} logged steps.')
  t = jnp.full(state.shape, config.init_steps - 1, jnp.int32)
  keep = _step_mask(log.num_timesteps, t, state.shape)
  sim = log.replace(valid=log.valid & keep).fill_invalid()
  return state.replace(sim_trajectory=sim, timestep=t)


@jax.named_scope('env.update_state_by_log')
def update_state_by_log(state: datatypes.SimulatorState,
                        num_steps: int) -> datatypes.SimulatorState:
  """Copies the logged steps (t, t + num_steps] into the sim; t += num_steps.

  Args:
    state: SimulatorState at step t.
    num_steps: static number of steps to replay.

  Returns:
    The advanced state.
  """
  t = jnp.asarray(state.timestep, jnp.int32)
  log, sim = state.log_trajectory, state.sim_trajectory
  batch = log.shape[:-2]
  upto = _step_mask(log.num_timesteps, t + num_steps, batch)
  after = ~_step_mask(log.num_timesteps, t, batch)
  window = upto & after
  sim = jax.tree.map(lambda s, logged: jnp.where(window, logged, s), sim, log)
  return state.replace(sim_trajectory=sim, timestep=t + num_steps)


@jax.named_scope('env.control_mask')
def control_mask(state: datatypes.SimulatorState,
                 config: EnvConfig = EnvConfig()) -> jax.Array:
  """bool (..., num_objects): the objects the policy drives.

  For VALID without new objects after warm-up this is the sim validity at
  step init_steps - 1 (Waymax); otherwise it comes from the metadata.
  """
  meta = state.object_metadata
  kind = config.controlled_object
  if kind is ControlledObject.VALID:
    if config.allow_new_objects_after_warmup:
      return meta.is_valid
    return state.sim_trajectory.valid[..., config.init_steps - 1]
  if kind is ControlledObject.SDC:
    return meta.is_sdc
  if kind is ControlledObject.MODELED:
    return meta.is_modeled
  if kind is ControlledObject.NON_SDC:
    return meta.is_valid & ~meta.is_sdc
  raise ValueError(f'Unknown controlled_object {kind!r}.')


@jax.named_scope('env.step')
def step(
    state: datatypes.SimulatorState,
    action: dynamics_lib.Action,
    config: EnvConfig = EnvConfig(),
    is_controlled: jax.Array | None = None,
) -> datatypes.SimulatorState:
  """Advances the simulation by one step.

  Controlled objects (valid at the current step) move by the dynamics;
  everything else replays the log (see
  ``dynamics.apply_trajectory_update``).

  Args:
    state: SimulatorState at step t < num_timesteps - 1.
    action: Action with data (..., num_objects, 2), valid
      (..., num_objects, 1).
    config: environment settings.
    is_controlled: bool (..., num_objects) overriding ``control_mask``.

  Returns:
    The state at step t + 1.
  """
  if is_controlled is None:
    is_controlled = control_mask(state, config)
  t = jnp.asarray(state.timestep, jnp.int32)
  cur = state.current_sim_trajectory
  update = dynamics_lib.compute_update(action, cur, config.dynamics)
  sim = dynamics_lib.apply_trajectory_update(
      state.sim_trajectory, state.log_trajectory, update, is_controlled, t,
      allow_object_injection=config.allow_new_objects_after_warmup)
  return state.replace(sim_trajectory=sim, timestep=t + 1)


def _squeeze_time(traj: datatypes.Trajectory) -> datatypes.Trajectory:
  return jax.tree.map(lambda a: a[..., 0], traj)


@jax.named_scope('env.metrics')
def metrics(state: datatypes.SimulatorState
            ) -> dict[str, tuple[jax.Array, jax.Array]]:
  """Per-object metrics at the current step.

  Returns:
    A dict of (value float32 (..., num_objects), valid bool
    (..., num_objects)) pairs:
      overlap: 1.0 if the box overlaps any other valid box (Waymax rule:
        strict separating-axis overlap); valid where the object is valid.
      offroad: 1.0 if the WOSAC signed distance to the road edge is > 0;
        valid where the object is valid and the map has a road edge (Waymax
        marks every object valid).
      log_divergence: 2-D distance between the simulated and logged centre;
        valid where both are valid.
  """
  cur = _squeeze_time(state.current_sim_trajectory)
  log = _squeeze_time(state.current_log_trajectory)

  overlap = jnp.any(geometry.pairwise_overlap(cur), axis=-1)

  rg = state.roadgraph_points
  has_edge = jnp.any(rg.is_road_edge, axis=-1)[..., None]
  offroad = geometry.signed_distance_to_road_edge(cur, rg) > 0

  both = cur.valid & log.valid
  div = jnp.sqrt((cur.x - log.x)**2 + (cur.y - log.y)**2)
  return {
      'overlap': (overlap.astype(jnp.float32), cur.valid),
      'offroad': ((offroad & has_edge).astype(jnp.float32),
                  cur.valid & has_edge),
      'log_divergence': (jnp.where(both, div, 0.0), both),
  }


# ---------------------------------------------------------------------------
# Environments as the rollout sampler takes them.


def current_state(state: datatypes.SimulatorState) -> datatypes.Trajectory:
  """The simulated states at ``state.timestep``: Trajectory (..., N)."""
  return _squeeze_time(state.current_sim_trajectory)


@runtime_checkable
class Environment(Protocol):
  """What ``rollout.sample_rollouts`` needs of a simulator.

  The sampler calls ``reset`` once on the scenarios (B, ...), repeats the
  result for its R rollouts along axis 0, then per 10 Hz step calls
  ``step`` with every object's action and reads ``current``. It never looks
  inside the environment's state, so any simulator fits: this module's
  (``StepEnvironment``, ``KinematicEnvironment``) or Waymax's
  (``prefalign.integrations.waymax.WaymaxEnvironment``).

  Attributes:
    dynamics: the ``DynamicsConfig`` the environment integrates actions with;
      it must equal the model's (``TokenizerConfig.dynamics``), or the
      tokens would mean other motions than those the model learnt.
  """
  dynamics: dynamics_lib.DynamicsConfig

  def reset(self, state: datatypes.SimulatorState) -> Any:
    """The environment's state at the current step of ``state`` (B, ...);
    every leaf has the leading batch axis B."""

  def step(self, env_state: Any, action: dynamics_lib.Action) -> Any:
    """One 10 Hz step; ``action``: data (BR, N, 2), valid (BR, N, 1)."""

  def current(self, env_state: Any) -> datatypes.Trajectory:
    """Trajectory (BR, N): every object's state after the last step."""


@dataclasses.dataclass(frozen=True)
class StepEnvironment:
  """This module's ``reset`` / ``step`` as an ``Environment``.

  Carries the whole ``SimulatorState`` (every object, every step), so the
  objects the policy does not drive replay the log exactly as in Waymax.
  Hashable, so it can be a static argument of ``jax.jit``.
  """
  config: EnvConfig = EnvConfig()

  @property
  def dynamics(self) -> dynamics_lib.DynamicsConfig:
    return self.config.dynamics

  def reset(self, state: datatypes.SimulatorState
            ) -> datatypes.SimulatorState:
    return reset(state, self.config)

  def step(self, env_state: datatypes.SimulatorState,
           action: dynamics_lib.Action) -> datatypes.SimulatorState:
    return step(env_state, action, self.config)

  def current(self, env_state: datatypes.SimulatorState
              ) -> datatypes.Trajectory:
    return current_state(env_state)


@struct.dataclass
class KinematicState:
  """``KinematicEnvironment``'s state: the current step only.

  Attributes:
    current: Trajectory (..., N), every object's state now.
    controlled: bool (..., N), the objects the policy drives.
  """
  current: datatypes.Trajectory
  controlled: jax.Array


@dataclasses.dataclass(frozen=True)
class KinematicEnvironment:
  """The sampler's default: ``step``'s dynamics on the current step alone.

  Driven objects move exactly as ``StepEnvironment`` moves them (the same
  ``compute_update``); objects the policy does not drive are held where
  they were and marked invalid, since the sampler never reads them. Carrying
  (..., N) instead of (..., N, 91) per rollout keeps 64-rollout collection
  cheap. Hashable.
  """
  config: EnvConfig = EnvConfig()

  @property
  def dynamics(self) -> dynamics_lib.DynamicsConfig:
    return self.config.dynamics

  def reset(self, state: datatypes.SimulatorState) -> KinematicState:
    started = reset(state, self.config)
    controlled = control_mask(started, self.config)
    cur = current_state(started)
    return KinematicState(current=cur.replace(valid=cur.valid & controlled),
                          controlled=controlled)

  def step(self, env_state: KinematicState,
           action: dynamics_lib.Action) -> KinematicState:
    cur = env_state.current
    update = dynamics_lib.compute_update(
        action, jax.tree.map(lambda a: a[..., None], cur), self.config.dynamics)
    keep = env_state.controlled & cur.valid
    pick = lambda new, old: jnp.where(keep, new[..., 0], old)
    nxt = cur.replace(x=pick(update.x, cur.x), y=pick(update.y, cur.y),
                      yaw=pick(update.yaw, cur.yaw),
                      vel_x=pick(update.vel_x, cur.vel_x),
                      vel_y=pick(update.vel_y, cur.vel_y))
    return env_state.replace(current=nxt)

  def current(self, env_state: KinematicState) -> datatypes.Trajectory:
    return env_state.current
