"""The WOSAC realism metric in JAX: likelihoods, buckets, meta-metric, minADE.

A drop-in for the official Waymo Open Sim Agents Challenge metric
(``waymo-open-dataset`` ``sim_agents_metrics``): the same features, the same
histogram and Bernoulli estimators with the official bins, ranges and
pseudocounts, the same masks and aggregation, under the 2024 and the 2025
challenge configs. Configs are data (``CHALLENGE_2024``, ``CHALLENGE_2025``).

Inputs are this project's types: the scenario as a ``SimulatorState`` (its
log), and the rollouts as a ``Trajectory`` of shape (R, N, 80) holding the 80
simulated future steps of every state row (rows that are not sim agents, i.e.
not valid at the current step, are ignored). ``scenario_metrics`` is a pure
function of arrays: jit it, and vmap it over scenarios of equal shape.

Where the official code yields NaN (a feature with no valid entry, e.g. the
vehicles-only time-to-collision of a scenario whose evaluated objects are all
pedestrians) this implementation returns likelihood 1 (no evidence against
the simulation), so that dataset means stay finite.
"""

from __future__ import annotations

import dataclasses

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from prefalign import datatypes
from prefalign.metrics import features as F

__all__ = [
    'full_trajectories',
    'sim_agents',
    'FeatureConfig',
    'MetricConfig',
    'CHALLENGE_2024',
    'CHALLENGE_2025',
    'get_config',
    'log_rollouts',
    'constant_velocity_rollouts',
    'metrics_from_features',
    'LIKELIHOOD_NAMES',
    'BUCKETS',
    'scenario_features',
    'ScenarioFeatures',
    'scenario_metrics',
    'batched_metrics',
    'aggregate',
    'histogram_log_likelihood',
    'bernoulli_log_likelihood',
    'evaluated_index',
]

NOW = datatypes.CURRENT_TIME_INDEX


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  """How one feature becomes a likelihood.

  Attributes:
    weight: its weight in the meta-metric.
    estimator: 'histogram' or 'bernoulli'.
    min_val, max_val, num_bins: histogram range and bins (values are clipped).
    pseudocount: added to every bin of the simulated histogram.
  """
  weight: float
  estimator: str = 'histogram'
  min_val: float = 0.0
  max_val: float = 1.0
  num_bins: int = 10
  pseudocount: float = 0.1


def _bern(weight):
  return FeatureConfig(weight, 'bernoulli', -0.5, 1.5, 2, 0.001)


@dataclasses.dataclass(frozen=True)
class MetricConfig:
  """A challenge's metric definition (frozen, hashable: a jit static arg).

  Attributes:
    name: e.g. '2024'.
    linear_speed ... traffic_light_violation: the ten features.
    ttc_vehicles_only: score time-to-collision for vehicles only (the 2025
      code; the 2024 leaderboard scored every object type).
  """
  name: str
  linear_speed: FeatureConfig
  linear_acceleration: FeatureConfig
  angular_speed: FeatureConfig
  angular_acceleration: FeatureConfig
  distance_to_nearest_object: FeatureConfig
  collision_indication: FeatureConfig
  time_to_collision: FeatureConfig
  distance_to_road_edge: FeatureConfig
  offroad_indication: FeatureConfig
  traffic_light_violation: FeatureConfig
  ttc_vehicles_only: bool = True


LIKELIHOOD_NAMES = (
    'linear_speed', 'linear_acceleration', 'angular_speed',
    'angular_acceleration', 'distance_to_nearest_object',
    'collision_indication', 'time_to_collision', 'distance_to_road_edge',
    'offroad_indication', 'traffic_light_violation')

BUCKETS = {
    'kinematic': ('linear_speed', 'linear_acceleration', 'angular_speed',
                  'angular_acceleration'),
    'interactive': ('distance_to_nearest_object', 'collision_indication',
                    'time_to_collision'),
    'map_based': ('distance_to_road_edge', 'offroad_indication',
                  'traffic_light_violation'),
}

# challenge_2024_config.textproto, scored as the 2024 leaderboard did (pip
# waymo-open-dataset-tf-2-12-0 <= 1.6.4: time-to-collision for every type).
CHALLENGE_2024 = MetricConfig(
    name='2024',
    linear_speed=FeatureConfig(0.05, min_val=0.0, max_val=25.0, num_bins=10),
    linear_acceleration=FeatureConfig(0.05, min_val=-12.0, max_val=12.0,
                                      num_bins=11),
    angular_speed=FeatureConfig(0.05, min_val=-0.628, max_val=0.628,
                                num_bins=11),
    angular_acceleration=FeatureConfig(0.05, min_val=-3.14, max_val=3.14,
                                       num_bins=11),
    distance_to_nearest_object=FeatureConfig(0.10, min_val=-5.0, max_val=40.0,
                                             num_bins=10),
    collision_indication=_bern(0.25),
    time_to_collision=FeatureConfig(0.10, min_val=0.0, max_val=5.0,
                                    num_bins=10),
    distance_to_road_edge=FeatureConfig(0.10, min_val=-20.0, max_val=40.0,
                                        num_bins=10),
    offroad_indication=_bern(0.25),
    traffic_light_violation=_bern(0.0),
    ttc_vehicles_only=False,
)

# challenge_2025_sim_agents_config.textproto with the 2025 code (pip >= 1.6.5).
CHALLENGE_2025 = dataclasses.replace(
    CHALLENGE_2024, name='2025',
    distance_to_road_edge=dataclasses.replace(
        CHALLENGE_2024.distance_to_road_edge, weight=0.05),
    traffic_light_violation=_bern(0.05),
    ttc_vehicles_only=True)

_CONFIGS = {'2024': CHALLENGE_2024, '2025': CHALLENGE_2025}


def get_config(name: str) -> MetricConfig:
  """'2024' or '2025'."""
  try:
    return _CONFIGS[str(name)]
  except KeyError:
    raise ValueError(f'unknown WOSAC challenge {name!r}; choose one of '
                     f'{sorted(_CONFIGS)}') from None


# ---------------------------------------------------------------------------
# Estimators.


def _bins(values: jax.Array, cfg: FeatureConfig) -> jax.Array:
  """Histogram bin of each value: clipped, half-open bins, last bin closed.

  NaN goes to the last bin, as in the official ``tfp.stats.histogram``.
  """
  edges = jnp.asarray(
      np.linspace(cfg.min_val, cfg.max_val, cfg.num_bins + 1), jnp.float32)
  v = jnp.clip(values.astype(jnp.float32), edges[0], edges[-1])
  idx = jnp.searchsorted(edges, v, side='right') - 1
  idx = jnp.clip(idx, 0, cfg.num_bins - 1)
  return jnp.where(jnp.isnan(values), cfg.num_bins - 1, idx)


def histogram_log_likelihood(log_values: jax.Array, sim_values: jax.Array,
                             cfg: FeatureConfig) -> jax.Array:
  """Log-probability of each logged value under its object's sim histogram.

  Args:
    log_values: (..., E, T) logged feature values.
    sim_values: (..., R, E, T) simulated values; every rollout and step of an
      object is pooled into one histogram (``independent_timesteps``).
    cfg: bins, range and pseudocount.

  Returns:
    (..., E, T) log-likelihoods.
  """
  sim_bins = _bins(sim_values, cfg)
  onehot = jax.nn.one_hot(sim_bins, cfg.num_bins, dtype=jnp.float32)
  counts = onehot.sum(axis=(-4, -2)) + cfg.pseudocount  # (..., E, bins)
  logp = jnp.log(counts) - jnp.log(counts.sum(-1, keepdims=True))
  log_bins = _bins(log_values, cfg)
  return jnp.take_along_axis(logp, log_bins, axis=-1)


def bernoulli_log_likelihood(log_values: jax.Array, sim_values: jax.Array,
                             cfg: FeatureConfig) -> jax.Array:
  """Log-probability of each logged boolean under the rollouts' frequency.

  Args:
    log_values: bool (..., E).
    sim_values: bool (..., R, E).
    cfg: the (2-bin) pseudocount.

  Returns:
    (..., E) log-likelihoods.
  """
  return histogram_log_likelihood(
      log_values.astype(jnp.float32)[..., None],
      sim_values.astype(jnp.float32)[..., None], cfg)[..., 0]


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over ``mask``; 0 (likelihood 1) when nothing is valid."""
  total = jnp.sum(jnp.where(mask, x, 0.0))
  count = jnp.sum(mask)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


# ---------------------------------------------------------------------------
# Features of one scenario.


def _evaluated_mask(state: datatypes.SimulatorState, xp=jnp):
  """(..., N) bool: the SDC and tracks_to_predict, valid at the current step."""
  meta, log = state.object_metadata, state.log_trajectory
  return ((xp.asarray(meta.is_sdc) | xp.asarray(meta.is_modeled)) &
          xp.asarray(meta.is_valid) & xp.asarray(log.valid)[..., NOW])


def evaluated_index(state: datatypes.SimulatorState,
                    max_evaluated: int) -> tuple[jax.Array, jax.Array]:
  """Rows of the evaluated objects (SDC + tracks_to_predict), padded.

  Returns:
    ``(index, mask)``, each (max_evaluated,): the rows sorted by object id
    (as the official code orders them), then other rows with mask False.
  """
  evaluated = _evaluated_mask(state, jnp)
  key = jnp.where(evaluated, state.object_metadata.ids,
                  jnp.iinfo(jnp.int32).max)
  order = jnp.argsort(key, stable=True)[:max_evaluated]
  return order, evaluated[order]


def _check_slots(state: datatypes.SimulatorState, max_evaluated: int) -> None:
  """Raises if more objects are evaluated than there are slots.

  Only possible outside ``jit`` (with concrete arrays); under ``jit`` the
  caller must size ``max_evaluated`` (``prefalign-wosac`` does).
  """
  if isinstance(state.object_metadata.is_sdc, jax.core.Tracer):
    return
  count = int(np.sum(_evaluated_mask(state, np)))
  if count > max_evaluated:
    raise ValueError(f'{count} evaluated objects (SDC + tracks_to_predict) '
                     f'but max_evaluated={max_evaluated}; raise it')


def sim_agents(state: datatypes.SimulatorState) -> jax.Array:
  """(N,) bool: the objects a rollout simulates (valid at the current step)."""
  return state.object_metadata.is_valid & state.log_trajectory.valid[:, NOW]


def full_trajectories(state: datatypes.SimulatorState,
                       rollouts: datatypes.Trajectory) -> datatypes.Trajectory:
  """(R + 1, N, 91): row 0 the log, rows 1.. the rollouts after the history.

  As the official converter: only sim agents take part; the simulation is
  valid at every future step; in the future, boxes (the log's too) keep
  their size at the current step.
  """
  log = state.log_trajectory
  held = {n: jnp.concatenate([
      getattr(log, n)[:, :NOW + 1],
      jnp.broadcast_to(getattr(log, n)[:, NOW:NOW + 1],
                       getattr(log, n)[:, NOW + 1:].shape)], axis=-1)
          for n in ('length', 'width', 'height')}
  log = log.replace(**held)
  agents = sim_agents(state)
  r = rollouts.x.shape[0]
  hist = jax.tree.map(lambda a: a[:, :NOW + 1], log)

  def sim_field(name):
    h = jnp.broadcast_to(getattr(hist, name), (r,) + getattr(hist, name).shape)
    if name in ('length', 'width', 'height'):
      f = jnp.broadcast_to(getattr(log, name)[:, NOW:NOW + 1],
                           rollouts.x.shape)
    elif name == 'valid':
      f = jnp.ones(rollouts.x.shape, bool)
    elif name == 'timestamp_micros':
      f = jnp.broadcast_to(getattr(log, name)[:, NOW + 1:], rollouts.x.shape)
    else:
      f = getattr(rollouts, name)
    return jnp.concatenate([h, f.astype(h.dtype)], axis=-1)

  sim = datatypes.Trajectory(**{
      n: sim_field(n) for n in datatypes.Trajectory.__dataclass_fields__})
  both = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], 0), log, sim)
  return both.replace(valid=both.valid & agents[None, :, None])


def log_rollouts(state: datatypes.SimulatorState,
                 num_rollouts: int = 32) -> datatypes.Trajectory:
  """(R, N, 80) rollouts that replay the log's future exactly.

  The "log replay" reference of a dataset. The metric takes rollouts as
  valid everywhere, so objects absent from the log at a step are parked far
  away (100 m apart) where they touch nothing.
  """
  fut = datatypes.park_invalid(
      jax.tree.map(lambda a: a[..., NOW + 1:], state.log_trajectory))
  return jax.tree.map(
      lambda a: jnp.broadcast_to(a, (num_rollouts,) + a.shape), fut)


def constant_velocity_rollouts(state: datatypes.SimulatorState,
                               num_rollouts: int = 32
                               ) -> datatypes.Trajectory:
  """(R, N, 80) rollouts that keep every object's current velocity.

  The baseline every learned simulator must beat: each object valid at the
  current step moves on in a straight line at its logged current velocity
  (heading and box held); the rest are parked far away, as in
  ``log_rollouts``.
  """
  traj = state.log_trajectory
  now = jax.tree.map(lambda a: a[..., NOW:NOW + 1], traj)
  num_t = traj.num_timesteps - NOW - 1
  t = datatypes.TIME_INTERVAL * jnp.arange(1, num_t + 1, dtype=jnp.float32)
  x = now.x + now.vel_x * t
  y = now.y + now.vel_y * t
  ok = jnp.broadcast_to(now.valid, x.shape)
  full = lambda a: jnp.broadcast_to(a, x.shape)
  fut = jax.tree.map(lambda a: a[..., NOW + 1:], traj).replace(
      x=x, y=y, z=full(now.z),
      yaw=full(now.yaw), vel_x=full(now.vel_x), vel_y=full(now.vel_y),
      length=full(now.length), width=full(now.width),
      height=full(now.height))
  fut = datatypes.park_invalid(fut, ok).replace(valid=jnp.ones_like(ok))
  return jax.tree.map(
      lambda a: jnp.broadcast_to(a, (num_rollouts,) + a.shape), fut)


@struct.dataclass
class ScenarioFeatures:
  """Every WOSAC feature of a scenario's evaluated objects, log and
  rollouts: per-step arrays have a leading axis of R + 1 (index 0: the log)
  over the 80 future steps, E evaluated-object slots.

  Attributes:
    linear_speed, linear_acceleration, angular_speed, angular_acceleration:
      float32 (R + 1, E, 80).
    distance_to_nearest_object: float32 (R + 1, E, 80), < 0 overlapping.
    collision: bool (R + 1, E, 80).
    time_to_collision: float32 (R + 1, E, 80).
    distance_to_road_edge: float32 (R + 1, E, 80), > 0 off road.
    offroad: bool (R + 1, E, 80).
    traffic_light_violation: bool (R + 1, E, 80).
    ade: float32 (R + 1, E) average displacement from the log.
    eval_index: int32 (E,) rows of the evaluated objects.
    eval_mask: bool (E,) False for padding slots.
    object_type: int32 (E,).
    valid: bool (E, 80) log validity of the evaluated objects' future.
  """
  linear_speed: jax.Array
  linear_acceleration: jax.Array
  angular_speed: jax.Array
  angular_acceleration: jax.Array
  distance_to_nearest_object: jax.Array
  collision: jax.Array
  time_to_collision: jax.Array
  distance_to_road_edge: jax.Array
  offroad: jax.Array
  traffic_light_violation: jax.Array
  ade: jax.Array
  eval_index: jax.Array
  eval_mask: jax.Array
  object_type: jax.Array
  valid: jax.Array


def scenario_features(state: datatypes.SimulatorState,
                      rollouts: datatypes.Trajectory, *,
                      max_evaluated: int = 16,
                      road_edge_kwargs: dict | None = None
                      ) -> ScenarioFeatures:
  """Every WOSAC feature of the evaluated objects, log and rollouts.

  Args:
    state: unbatched SimulatorState with N objects and 91 steps.
    rollouts: Trajectory (R, N, 80), the simulated future of every row.
    max_evaluated: static number of evaluated-object slots E.
    road_edge_kwargs: passed to the road-edge distance.

  Returns:
    ``ScenarioFeatures`` (leading axis R + 1, index 0 the log).
  """
  _check_slots(state, max_evaluated)
  eval_index, eval_mask = evaluated_index(state, max_evaluated)
  full = full_trajectories(state, rollouts)  # (R + 1, N, 91)
  ev = jax.tree.map(lambda a: jnp.take(a, eval_index, axis=-2), full)
  speed, accel, ang_speed, ang_accel = F.kinematic_features(
      ev.x, ev.y, ev.z, ev.yaw)
  fut = lambda a: a[..., NOW + 1:]
  future = jax.tree.map(fut, full)
  dist = F.distance_to_nearest_object(future, eval_index,
                                      eval_mask=eval_mask)
  ttc = fut(F.time_to_collision(full, eval_index))
  edge = F.distance_to_road_edge(future, eval_index, state.roadgraph_points,
                                 eval_mask=eval_mask,
                                 **(road_edge_kwargs or {}))
  from_now = jax.tree.map(lambda a: a[..., NOW:], full)
  lights = jax.tree.map(lambda a: a[..., NOW:], state.log_traffic_light)
  red = F.traffic_light_violation(from_now, eval_index,
                                  state.roadgraph_points, lights)[..., 1:]

  log = state.log_trajectory
  log_ev = jax.tree.map(lambda a: jnp.take(a, eval_index, axis=0), log)
  err = jnp.sqrt((ev.x - log_ev.x)**2 + (ev.y - log_ev.y)**2 +
                 (ev.z - log_ev.z)**2)
  valid_steps = jnp.sum(log_ev.valid, -1)
  ade = jnp.sum(jnp.where(log_ev.valid, err, 0.0), -1) / jnp.maximum(
      valid_steps, 1)
  return ScenarioFeatures(
      linear_speed=fut(speed), linear_acceleration=fut(accel),
      angular_speed=fut(ang_speed), angular_acceleration=fut(ang_accel),
      distance_to_nearest_object=dist, collision=dist < 0.0,
      time_to_collision=ttc, distance_to_road_edge=edge,
      offroad=edge > 0.0, traffic_light_violation=red, ade=ade,
      eval_index=eval_index, eval_mask=eval_mask,
      object_type=state.object_metadata.object_types[eval_index],
      valid=fut(log_ev.valid) & eval_mask[:, None])


# ---------------------------------------------------------------------------
# Metrics of one scenario.


def scenario_metrics(state: datatypes.SimulatorState,
                     rollouts: datatypes.Trajectory,
                     config: MetricConfig = CHALLENGE_2025, *,
                     max_evaluated: int = 16,
                     road_edge_kwargs: dict | None = None
                     ) -> dict[str, jax.Array]:
  """WOSAC metrics of one scenario (jit with ``config`` static).

  Args:
    state: unbatched SimulatorState (the log).
    rollouts: Trajectory (R, N, 80), R = 32 for the challenge.
    config: CHALLENGE_2024 or CHALLENGE_2025 (or your own).
    max_evaluated: evaluated-object slots (SDC + tracks_to_predict, at most 9
      in WOMD).
    road_edge_kwargs: passed to the road-edge distance.

  Returns:
    Scalars: '<feature>_likelihood' for the ten features, 'metametric',
    'kinematic', 'interactive', 'map_based', 'average_displacement_error',
    'min_average_displacement_error', 'simulated_collision_rate',
    'simulated_offroad_rate', 'simulated_traffic_light_violation_rate',
    'num_evaluated'.
  """
  f = scenario_features(state, rollouts, max_evaluated=max_evaluated,
                        road_edge_kwargs=road_edge_kwargs)
  return metrics_from_features(f, config)


def metrics_from_features(f: ScenarioFeatures,
                          config: MetricConfig = CHALLENGE_2025
                          ) -> dict[str, jax.Array]:
  """``scenario_metrics`` from ``scenario_features`` already computed.

  The features do not depend on the challenge config, so scoring one set of
  rollouts under several configs computes them once.
  """
  valid = f.valid  # (E, 80), log validity of the future
  eval_mask = f.eval_mask
  is_vehicle = f.object_type == datatypes.ObjectTypeIds.VEHICLE
  speed_valid = F.central_valid(valid)
  accel_valid = F.central_valid(speed_valid)
  out = {}

  def hist(name, values, mask):
    ll = histogram_log_likelihood(values[0], values[1:],
                                  getattr(config, name))
    out[f'{name}_likelihood'] = jnp.exp(_masked_mean(ll, mask))

  hist('linear_speed', f.linear_speed, speed_valid)
  hist('angular_speed', f.angular_speed, speed_valid)
  hist('linear_acceleration', f.linear_acceleration, accel_valid)
  hist('angular_acceleration', f.angular_acceleration, accel_valid)
  hist('distance_to_nearest_object', f.distance_to_nearest_object, valid)
  ttc_mask = valid & (is_vehicle[:, None] if config.ttc_vehicles_only else
                      True)
  hist('time_to_collision', f.time_to_collision, ttc_mask)
  hist('distance_to_road_edge', f.distance_to_road_edge, valid)

  def indication(values, mask):
    return jnp.any(values & mask, axis=-1)  # (R + 1, E)

  def bern(name, ind):
    ll = bernoulli_log_likelihood(ind[0], ind[1:], getattr(config, name))
    out[f'{name}_likelihood'] = jnp.exp(_masked_mean(ll, eval_mask))

  collided = indication(f.collision, valid)
  offroad = indication(f.offroad, valid)
  red = indication(f.traffic_light_violation, valid & is_vehicle[:, None])
  bern('collision_indication', collided)
  bern('offroad_indication', offroad)
  bern('traffic_light_violation', red)

  num_eval = jnp.sum(eval_mask)
  per_rollout = lambda ind: _masked_mean(
      ind[1:].astype(jnp.float32),
      jnp.broadcast_to(eval_mask, ind[1:].shape))
  out['simulated_collision_rate'] = per_rollout(collided)
  out['simulated_offroad_rate'] = per_rollout(offroad)
  out['simulated_traffic_light_violation_rate'] = per_rollout(
      indication(f.traffic_light_violation, valid))
  ade = f.ade[1:]  # (R, E)
  mean_over_objects = jnp.sum(jnp.where(eval_mask, ade, 0.0), -1) / jnp.maximum(
      num_eval, 1)
  out['average_displacement_error'] = jnp.mean(mean_over_objects)
  out['min_average_displacement_error'] = jnp.min(mean_over_objects)
  out['num_evaluated'] = num_eval
  out.update(_combine(out, config))
  return out


def batched_metrics(states: datatypes.SimulatorState,
                    rollouts: datatypes.Trajectory,
                    config: MetricConfig = CHALLENGE_2025,
                    **kwargs) -> dict[str, jax.Array]:
  """``scenario_metrics`` over a batch of equally shaped scenarios.

  Uses ``lax.map`` rather than ``vmap`` so that each scenario keeps the fast
  path of the certified nearest-segment searches (under ``vmap`` their
  brute-force fallback runs too).

  Args:
    states: SimulatorState with a leading batch axis [S].
    rollouts: Trajectory (S, R, N, 80).
    config, **kwargs: as ``scenario_metrics``.

  Returns:
    The same keys, each of shape (S,).
  """
  return jax.lax.map(
      lambda sr: scenario_metrics(sr[0], sr[1], config, **kwargs),
      (states, rollouts))


def _combine(likelihoods: dict, config: MetricConfig) -> dict:
  """Meta-metric and buckets from the ten likelihoods."""
  out = {'metametric': sum(getattr(config, n).weight *
                           likelihoods[f'{n}_likelihood']
                           for n in LIKELIHOOD_NAMES)}
  for bucket, names in BUCKETS.items():
    weights = [getattr(config, n).weight for n in names]
    total = sum(weights)
    if total == 0:
      raise ValueError(f'bucket {bucket!r} has zero weight in config '
                       f'{config.name!r}')
    out[bucket] = sum(w * likelihoods[f'{n}_likelihood']
                      for w, n in zip(weights, names)) / total
  return out


def aggregate(per_scenario: list[dict], config: MetricConfig) -> dict:
  """Dataset metrics: the mean of every field over scenarios (official).

  The buckets are recomputed from the mean likelihoods, as the official
  ``aggregate_metrics_to_buckets`` does (identical to their mean, since both
  are linear).
  """
  if not per_scenario:
    raise ValueError('no scenarios to aggregate')
  keys = [k for k in per_scenario[0] if k not in ('scenario_id',)]
  mean = {k: float(np.mean([float(m[k]) for m in per_scenario])) for k in keys}
  mean.update({k: float(v) for k, v in _combine(mean, config).items()})
  mean['num_scenarios'] = len(per_scenario)
  return mean
