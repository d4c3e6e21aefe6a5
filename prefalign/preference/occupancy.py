"""The preference feature space: per-agent, per-step features phi(o).

DPA-OMF compares a rollout with the logged demonstration through the
occupancy measure of each agent in a "semantically meaningful feature
space": the uniform mixture over the agent's valid steps of five features,
the realism metric's own (method.md section 4.2). They come from
``prefalign.metrics.features``, the implementation the WOSAC metric uses;
this module only selects, normalises and masks them:

==============  ========================================  ==================
feature         definition (per agent, per future step)   normalised
==============  ========================================  ==================
collision       1 if the box overlaps another object's    as is {0, 1}
road_edge       signed distance of the most off-road      clip(d, -5, 5) / 5
                corner to the road edge (m, > 0 off road)
clearance       signed distance to the nearest object (m) clip(d, 0, 10) / 10
control_effort  |acceleration| = sqrt(a_lon^2 + (v w)^2)  clip(a / 4, 0, 2)
                (m/s^2; a_lon the change of speed, v w
                the lateral acceleration from the yaw rate)
speed           3-D speed (m/s)                           clip(v / 10, 0, 4)
==============  ========================================  ==================

Each is O(1) after normalisation, so the default weights [10, 5, 2, 1, 1]
(the paper's) say how much each matters. A step counts when the object is
valid there and its central-difference kinematics are defined (so the last
two steps, whose acceleration needs the future, never count); a rollout's
step counts only where the log's does, so both measures cover the same
steps (a simulated agent is valid at every future step; the log is not).

Feature sets for the paper's ablation (Table 2) zero the weights of the
features left out: 'all'; 'collision' (collision, clearance); 'progress'
(speed); 'comfort' (control effort); 'map' (road edge); or a comma-separated
list of feature names.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prefalign import datatypes
from prefalign.metrics import features as F
from prefalign.metrics import wosac

__all__ = ['FEATURE_NAMES', 'FEATURE_SETS', 'DEFAULT_WEIGHTS',
           'feature_weights', 'agent_rows', 'by_agent_chunks',
           'occupancy_features']

FEATURE_NAMES = ('collision', 'road_edge', 'clearance', 'control_effort',
                 'speed')
DEFAULT_WEIGHTS = (10.0, 5.0, 2.0, 1.0, 1.0)
FEATURE_SETS = {
    'all': FEATURE_NAMES,
    'collision': ('collision', 'clearance'),
    'progress': ('speed',),
    'comfort': ('control_effort',),
    'map': ('road_edge',),
}
ROAD_EDGE_SCALE = 5.0  # m
CLEARANCE_SCALE = 10.0  # m
EFFORT_SCALE = 4.0  # m/s^2
SPEED_SCALE = 10.0  # m/s
_NOW = datatypes.CURRENT_TIME_INDEX


def feature_weights(feature_set: str = 'all',
                    weights=DEFAULT_WEIGHTS) -> np.ndarray:
  """(5,) float32 ground-cost weights of a feature set.

  Args:
    feature_set: a key of ``FEATURE_SETS`` or comma-separated feature names.
    weights: the weights of all five features, in ``FEATURE_NAMES`` order.

  Raises:
    ValueError: unknown set or feature name, wrong number of weights,
      negative weights, or nothing left with a positive weight.
  """
  weights = np.asarray(weights, np.float32)
  if weights.shape != (len(FEATURE_NAMES),):
    raise ValueError(f'weights: expected {len(FEATURE_NAMES)} values (one per '
                     f'feature {FEATURE_NAMES}), got {weights.tolist()}')
  if np.any(weights < 0) or not np.all(np.isfinite(weights)):
    raise ValueError(f'weights must be finite and >= 0, got '
                     f'{weights.tolist()}')
  if feature_set in FEATURE_SETS:
    names = FEATURE_SETS[feature_set]
  else:
    names = tuple(n.strip() for n in feature_set.split(',') if n.strip())
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown or not names:
      raise ValueError(
          f'feature set {feature_set!r}: expected one of '
          f'{sorted(FEATURE_SETS)} or comma-separated names from '
          f'{FEATURE_NAMES}')
  keep = np.array([n in names for n in FEATURE_NAMES])
  out = np.where(keep, weights, 0.0).astype(np.float32)
  if not np.any(out > 0):
    raise ValueError(f'feature set {feature_set!r} with weights '
                     f'{weights.tolist()} leaves no feature with a positive '
                     'weight')
  return out


def agent_rows(state: datatypes.SimulatorState, agents: str = 'sim',
               max_evaluated: int = 16) -> tuple[jax.Array, jax.Array]:
  """Rows whose occupancy measures are compared.

  Args:
    state: unbatched SimulatorState.
    agents: 'sim' (every simulated object: all N rows, masked to the objects
      valid at the current step; the paper's up to 128 agents) or
      'evaluated' (WOSAC's SDC + tracks_to_predict, ``max_evaluated`` slots).
    max_evaluated: slots for 'evaluated'.

  Returns:
    ``(index, mask)``, int32 (E,) rows and bool (E,) which count.
  """
  if agents == 'sim':
    n = state.object_metadata.ids.shape[-1]
    return jnp.arange(n, dtype=jnp.int32), wosac.sim_agents(state)
  if agents == 'evaluated':
    return wosac.evaluated_index(state, max_evaluated)
  raise ValueError(f"agents must be 'sim' or 'evaluated', got {agents!r}")


def _agent_features(full: datatypes.Trajectory, index: jax.Array,
                    mask: jax.Array, edge: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
  """(phi (R + 1, E, 80, 5), valid (R + 1, E, 80)) of the rows ``index``,
  given their road-edge distances ``edge`` (R + 1, E, 80)."""
  ev = jax.tree.map(lambda a: jnp.take(a, index, axis=-2), full)
  speed, accel, ang_speed, _ = F.kinematic_features(ev.x, ev.y, ev.z, ev.yaw)
  kin_ok = F.central_valid(F.central_valid(ev.valid))
  fut = lambda a: a[..., _NOW + 1:]
  future = jax.tree.map(fut, full)
  dist = F.distance_to_nearest_object(future, index, eval_mask=mask)
  speed, accel, ang_speed = fut(speed), fut(accel), fut(ang_speed)
  effort = jnp.sqrt(accel**2 + (speed * ang_speed)**2)
  phi = jnp.stack([
      (dist < 0).astype(jnp.float32),
      jnp.clip(edge, -ROAD_EDGE_SCALE, ROAD_EDGE_SCALE) / ROAD_EDGE_SCALE,
      jnp.clip(dist, 0.0, CLEARANCE_SCALE) / CLEARANCE_SCALE,
      jnp.clip(effort / EFFORT_SCALE, 0.0, 2.0),
      jnp.clip(speed / SPEED_SCALE, 0.0, 4.0),
  ], axis=-1)
  valid = fut(ev.valid) & fut(kin_ok) & mask[:, None]
  valid = valid & jnp.all(jnp.isfinite(phi), axis=-1)
  # A rollout's step counts where the log's does: both measures cover the
  # same steps, so a rollout that reproduces the log has distance ~0.
  valid = valid.at[1:].set(valid[1:] & valid[:1])
  return jnp.where(valid[..., None], phi, 0.0), valid


def by_agent_chunks(fn, index: jax.Array, mask: jax.Array, chunk: int):
  """``fn(index, mask)`` over chunks of agents, skipping chunks of none.

  The agents that count come first (stable order), chunks of ``chunk``
  agents run one after another under ``lax.map``, and a chunk with no agent
  that counts is skipped by ``lax.cond`` (zeros), so the work follows the
  number of agents in the scene rather than the padded row count: real
  WOMD scenes read with 128 rows simulate about a third of them. Every
  per-agent quantity is computed exactly as in one call (the agents do not
  interact through ``fn``'s outputs). Under ``vmap`` the skip becomes a
  select (both branches run).

  Args:
    fn: ``(index (C,), mask (C,)) -> pytree`` of arrays with the agent axis
      at position 1 (e.g. (R + 1, C, ...)); zeros where ``mask`` is False.
    index: int32 (E,) rows; mask: bool (E,) which count.
    chunk: agents per call (static; 0 or >= E: one call).

  Returns:
    ``fn``'s pytree for all E agents in their original order.
  """
  e = index.shape[0]
  if not chunk or chunk >= e:
    return fn(index, mask)
  num = -(-e // chunk)
  order = jnp.argsort(~mask, stable=True)
  pad = num * chunk - e
  idx = jnp.pad(index[order], (0, pad)).reshape(num, chunk)
  ok = jnp.pad(mask[order], (0, pad)).reshape(num, chunk)
  shapes = jax.eval_shape(fn, idx[0], ok[0])

  def one(args):
    i, m = args
    return jax.lax.cond(
        jnp.any(m), lambda _: fn(i, m),
        lambda _: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                               shapes), None)

  out = jax.lax.map(one, (idx, ok))  # leaves (num, A, chunk, ...)
  inverse = jnp.argsort(order)

  def restore(a):
    a = jnp.moveaxis(a, 0, 1)  # (A, num, chunk, ...)
    a = a.reshape((a.shape[0], num * chunk) + a.shape[3:])[:, :e]
    return jnp.take(a, inverse, axis=1)

  return jax.tree.map(restore, out)


@jax.named_scope('occupancy.occupancy_features')
def occupancy_features(state: datatypes.SimulatorState,
                       rollouts: datatypes.Trajectory, *,
                       agents: str = 'sim', max_evaluated: int = 16,
                       road_edge_kwargs=None,
                       agent_chunk: int = 16) -> dict[str, jax.Array]:
  """phi(o) of the log and every rollout, per agent and future step.

  Args:
    state: unbatched SimulatorState (the log, N objects, 91 steps).
    rollouts: Trajectory (R, N, 80), the simulated future of every row (as
      ``rollout.to_metric_trajectory`` or ``metrics.wosac.log_rollouts``
      give it).
    agents, max_evaluated: which rows (``agent_rows``); static.
    road_edge_kwargs: passed to ``metrics.features.distance_to_road_edge``.
    agent_chunk: agents per call of the object-distance features
      (``by_agent_chunks``; static, 0: all at once). Chunks of padding rows
      cost nothing; the result does not depend on it. The road-edge search
      runs over all agents at once (its cost follows the valid corners).

  Returns:
    'features': float32 (R + 1, E, 80, 5) in ``FEATURE_NAMES`` order, row 0
      the logged demonstration, 0 where not valid;
    'valid': bool (R + 1, E, 80) the steps of each occupancy measure;
    'agent_index': int32 (E,); 'agent_mask': bool (E,);
    'ade': float32 (R, E) each rollout's mean displacement from the log over
      the log's valid future steps.
  """
  index, mask = agent_rows(state, agents, max_evaluated)
  full = wosac.full_trajectories(state, rollouts)  # (R + 1, N, 91)
  fut = lambda a: a[..., _NOW + 1:]
  # The road-edge search over every agent at once: its grid is built once
  # per scene, and it searches only the valid corners.
  edge = F.distance_to_road_edge(jax.tree.map(fut, full), index,
                                 state.roadgraph_points, eval_mask=mask,
                                 **(road_edge_kwargs or {}))
  phi, valid = by_agent_chunks(
      lambda pos, m: _agent_features(full, index[pos], m, edge[:, pos]),
      jnp.arange(index.shape[0]), mask, agent_chunk)

  ev_x = jnp.take(full.x[1:], index, axis=-2)
  ev_y = jnp.take(full.y[1:], index, axis=-2)
  log_ev = jax.tree.map(lambda a: jnp.take(a, index, axis=0),
                        state.log_trajectory)
  err = jnp.hypot(fut(ev_x) - fut(log_ev.x), fut(ev_y) - fut(log_ev.y))
  log_ok = fut(log_ev.valid)
  ade = jnp.sum(jnp.where(log_ok, err, 0.0), -1) / jnp.maximum(
      jnp.sum(log_ok, -1), 1)
  return {'features': phi, 'valid': valid, 'agent_index': index,
          'agent_mask': mask, 'ade': ade}
