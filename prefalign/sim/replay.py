"""Driving the simulator with the log: expert tracking and action replay.

Two ways to reproduce a logged scenario through the dynamics, both used to
measure how faithfully the action space represents real driving:

* ``expert``: Waymax's expert actor. At every step the action is the inverse
  of (simulated state at t -> logged position at t + 1), clipped to the
  dynamics' bounds, so the simulation tracks the log and only clipping (or a
  gap in the log) makes it deviate. This is the closed-loop teacher a token
  model is trained on.
* ``replay``: the per-step log actions (inverse of logged state t -> logged
  position t + 1) are computed once and integrated from the current state
  without feedback. Logged velocities are estimates that do not exactly match
  the finite differences of logged positions, so this drifts.

Both are pure functions of a ``SimulatorState``; callers jit them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prefalign import datatypes
from prefalign.sim import dynamics as dynamics_lib
from prefalign.sim import env as env_lib

__all__ = [
    'expert_action',
    'rollout',
    'one_step_errors',
]


@jax.named_scope('replay.expert_action')
def expert_action(state: datatypes.SimulatorState,
                  config: dynamics_lib.DynamicsConfig = (
                      dynamics_lib.DynamicsConfig())
                  ) -> dynamics_lib.Action:
  """The action taking the current simulated state to the next logged one.

  Args:
    state: SimulatorState at step t < num_timesteps - 1.
    config: dynamics constants.

  Returns:
    Action with data (..., num_objects, 2) and valid (..., num_objects, 1).
  """
  cur = state.current_sim_trajectory
  nxt = datatypes._time_slice(
      state.log_trajectory, state.timestep + 1)
  pair = jax.tree.map(lambda a, b: jnp.concatenate([a, b], -1), cur, nxt)
  return dynamics_lib.inverse(pair, None, 0, config)


@jax.named_scope('replay.rollout')
def rollout(state: datatypes.SimulatorState,
            config: env_lib.EnvConfig = env_lib.EnvConfig(),
            mode: str = 'expert') -> datatypes.SimulatorState:
  """Resets ``state`` and simulates to the end of the log.

  Args:
    state: an unbatched or batched SimulatorState.
    config: environment settings (which objects are controlled, dynamics).
    mode: ``'expert'`` (closed loop) or ``'replay'`` (log actions, open loop);
      static.

  Returns:
    The final state; ``sim_trajectory`` holds the whole simulation.
  """
  if mode not in ('expert', 'replay'):
    raise ValueError(f"mode must be 'expert' or 'replay', got {mode!r}.")
  state = env_lib.reset(state, config)
  num_steps = state.num_timesteps - config.init_steps
  log_actions, log_valid = dynamics_lib.inverse_all(state.log_trajectory,
                                                    config.dynamics)
  controlled = env_lib.control_mask(state, config)

  def body(s, _):
    if mode == 'expert':
      action = expert_action(s, config.dynamics)
    else:
      t = jnp.broadcast_to(s.timestep, s.shape)
      idx = t[..., None, None, None]
      data = jnp.take_along_axis(log_actions, idx, axis=-2)[..., 0, :]
      valid = jnp.take_along_axis(log_valid, t[..., None, None], axis=-1)
      action = dynamics_lib.Action(data=data, valid=valid)
    return env_lib.step(s, action, config, controlled), None

  state, _ = jax.lax.scan(body, state, None, length=num_steps)
  return state


@jax.named_scope('replay.one_step_errors')
def one_step_errors(trajectory: datatypes.Trajectory,
                    config: dynamics_lib.DynamicsConfig = (
                        dynamics_lib.DynamicsConfig())
                    ) -> tuple[jax.Array, jax.Array]:
  """Open-loop inverse-then-forward error of every logged step.

  For every t, the action is inferred from the logged states t and t + 1 and
  integrated from the logged state t.

  Args:
    trajectory: Trajectory (..., num_objects, num_timesteps).
    config: dynamics constants.

  Returns:
    error: float32 (..., num_objects, num_timesteps - 1), the 2-D distance
      between the predicted and the logged position at t + 1.
    valid: bool, the same shape: both steps valid.
  """
  actions, valid = dynamics_lib.inverse_all(trajectory, config)
  cur = jax.tree.map(lambda a: a[..., :-1], trajectory)
  nxt = jax.tree.map(lambda a: a[..., 1:], trajectory)
  update = dynamics_lib.compute_update(
      dynamics_lib.Action(data=actions, valid=valid[..., None]),
      jax.tree.map(lambda a: a[..., None], cur), config)
  # compute_update works on (..., N, 1) slices; here the step axis plays the
  # object role, so squeeze the trailing axis back.
  err = jnp.hypot(update.x[..., 0] - nxt.x, update.y[..., 0] - nxt.y)
  return jnp.where(valid, err, 0.0), valid
