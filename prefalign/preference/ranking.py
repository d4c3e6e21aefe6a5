"""Implicit preferences: rank rollouts by their distance to the demonstration.

For one scenario with R rollouts of the reference model (method.md 4.3-4.5):

1. ``occupancy.occupancy_features`` gives every agent's per-step features in
   the log and in each rollout;
2. per agent, the distance between a rollout and the log is the entropic OT
   cost between the two occupancy measures (uniform over valid steps) under
   the weighted L1 ground cost (``ot.transport_cost``);
3. the scene distance aggregates the agents counted in both (mean by
   default, or sum);
4. rollouts are ranked by it; the ``num_pairs`` closest are preferred, the
   ``num_pairs`` farthest unpreferred, and pairs are formed.

``rank_rollouts`` does all of it in one jittable function (pass ``config``
static). Strategies for the paper's baselines share the interface:

* ``'ot'``: the OT occupancy distance (DPA-OMF);
* ``'ade'``: mean displacement from the log over agents (the "L2" ranking);
* ``'adversarial'``: the logged demonstration (index -1) is preferred over
  ``num_pairs`` generated rollouts, whatever their distance (SPIN-style AFD);
* ``'random'``: a random ranking (no signal; a control).

Pairings of the preferred and unpreferred sets: ``'rank'`` pairs the k-th
closest with the k-th of the farthest set (rank k with rank R - P + k, so
every pair spans the same rank gap R - P), ``'random'`` a random one-to-one
matching, ``'all'`` every preferred with every unpreferred (P^2 pairs).
"""

from __future__ import annotations

import dataclasses

from flax import struct
import jax
import jax.numpy as jnp

from prefalign import datatypes
from prefalign.preference import occupancy
from prefalign.preference import ot

__all__ = ['STRATEGIES', 'PAIRINGS', 'AGGREGATES', 'RankingConfig', 'Ranking',
           'agent_distances', 'scene_distances', 'make_pairs',
           'rank_rollouts', 'rank_rollouts_jit', 'num_pairs_of']

STRATEGIES = ('ot', 'ade', 'adversarial', 'random')
PAIRINGS = ('rank', 'random', 'all')
AGGREGATES = ('mean', 'sum')
LOG = -1  # the index that stands for the logged demonstration in pairs


@dataclasses.dataclass(frozen=True)
class RankingConfig:
  """How rollouts are ranked and paired (hashable: pass it static).

  Attributes:
    strategy: one of ``STRATEGIES``.
    feature_set: ``occupancy.FEATURE_SETS`` key or comma-separated names.
    weights: ground-cost weights of the five features (FEATURE_NAMES order).
    agents: 'sim' (all simulated agents) or 'evaluated' (WOSAC's).
    max_evaluated: slots for agents='evaluated'.
    aggregate: 'mean' or 'sum' over the agents counted.
    sinkhorn: the OT solver's options; by default ``ot.RANKING_SINKHORN``,
      chosen for the order it gives the rollouts, not for the cost.
    num_pairs: P, the size of the preferred and of the unpreferred set.
    pairing: one of ``PAIRINGS``.
    agent_chunk: agents per call of the features and of the OT solver
      (``occupancy.by_agent_chunks``): chunks of agents not counted cost
      nothing, and each chunk's Sinkhorn loop stops on its own; 0 solves
      all agents at once (more parallel work per step on an accelerator).
      The result does not depend on it.
  """
  strategy: str = 'ot'
  feature_set: str = 'all'
  weights: tuple[float, ...] = occupancy.DEFAULT_WEIGHTS
  agents: str = 'sim'
  max_evaluated: int = 16
  aggregate: str = 'mean'
  sinkhorn: ot.SinkhornConfig = ot.RANKING_SINKHORN
  num_pairs: int = 16
  pairing: str = 'rank'
  agent_chunk: int = 16

  def __post_init__(self):
    for name, allowed in (('strategy', STRATEGIES), ('pairing', PAIRINGS),
                          ('aggregate', AGGREGATES),
                          ('agents', ('sim', 'evaluated'))):
      if getattr(self, name) not in allowed:
        raise ValueError(f'RankingConfig.{name}={getattr(self, name)!r} is '
                         f'not one of {allowed}')
    if self.num_pairs < 1:
      raise ValueError(f'RankingConfig.num_pairs must be >= 1, got '
                       f'{self.num_pairs}')
    object.__setattr__(self, 'weights', tuple(float(w) for w in self.weights))
    occupancy.feature_weights(self.feature_set, self.weights)  # validates

  def check(self, num_rollouts: int) -> None:
    """Raises if ``num_rollouts`` cannot supply the pairs."""
    need = self.num_pairs if self.strategy == 'adversarial' else (
        2 * self.num_pairs)
    if num_rollouts < need:
      raise ValueError(
          f'{num_rollouts} rollouts cannot give {self.num_pairs} preferred '
          f'and unpreferred rollouts (strategy {self.strategy!r} needs '
          f'>= {need}); lower num_pairs or sample more rollouts')


def num_pairs_of(config: RankingConfig) -> int:
  """Pairs per scenario."""
  if config.pairing == 'all' and config.strategy != 'adversarial':
    return config.num_pairs**2
  return config.num_pairs


@struct.dataclass
class Ranking:
  """The ranking of one scenario's R rollouts (E agent slots, P pairs).

  Attributes:
    distances: float32 (R,) the scene distance the strategy ranks by (OT
      for 'ot' and 'adversarial', ADE for 'ade', random for 'random').
    ot_distances: float32 (R,) the OT occupancy distance.
    ade: float32 (R,) mean displacement from the log over the agents.
    agent_distances: float32 (R, E) per-agent OT distance (0 where not
      counted).
    agent_counted: bool (E,) agents in the aggregate (valid in the log's
      future and simulated).
    order: int32 (R,) rollout indices, closest first (by ``distances``).
    preferred: int32 (P,) rollout index of each pair's preferred side (-1:
      the logged demonstration).
    unpreferred: int32 (P,) rollout index of each pair's unpreferred side.
  """
  distances: jax.Array
  ot_distances: jax.Array
  ade: jax.Array
  agent_distances: jax.Array
  agent_counted: jax.Array
  order: jax.Array
  preferred: jax.Array
  unpreferred: jax.Array


def agent_distances(phi: dict[str, jax.Array], weights: jax.Array,
                    sinkhorn: ot.SinkhornConfig = ot.SinkhornConfig(),
                    agent_chunk: int = 0) -> ot.OTResult:
  """Per-agent OT distance of every rollout's occupancy measure to the log's.

  Args:
    phi: ``occupancy.occupancy_features`` output ('features' (R + 1, E, T,
      D), 'valid' (R + 1, E, T); row 0 the log).
    weights: (D,) ground-cost weights.
    sinkhorn: solver options.
    agent_chunk: agents per solver call (static; 0: all at once); chunks
      with no agent valid in the log are skipped (cost 0, ``ok`` False).

  Returns:
    ``OTResult`` with shape (R, E).
  """
  def solve(i, _):
    x, x_mask = phi['features'][1:, i], phi['valid'][1:, i]
    y, y_mask = phi['features'][:1, i], phi['valid'][:1, i]
    return ot.transport_cost(x, x_mask, y, y_mask, weights, sinkhorn)

  e = phi['valid'].shape[1]
  present = jnp.any(phi['valid'][0], -1)
  return occupancy.by_agent_chunks(solve, jnp.arange(e), present,
                                   agent_chunk)


def scene_distances(agent_d: jax.Array, counted: jax.Array,
                    aggregate: str = 'mean') -> jax.Array:
  """(R,) aggregate over counted agents of (R, E) distances (0 if none)."""
  total = jnp.sum(jnp.where(counted, agent_d, 0.0), axis=-1)
  if aggregate == 'sum':
    return total
  return total / jnp.maximum(jnp.sum(counted, axis=-1), 1)


def make_pairs(distances: jax.Array, rng: jax.Array, *, num_pairs: int,
               pairing: str = 'rank') -> tuple[jax.Array, jax.Array]:
  """Preferred and unpreferred rollout indices from scene distances.

  Args:
    distances: float32 (R,), smaller is preferred.
    rng: a key (used by pairing='random').
    num_pairs: P; needs 2P <= R.
    pairing: one of ``PAIRINGS``.

  Returns:
    ``(preferred, unpreferred)``, int32 (P,) each (P^2 for 'all').
  """
  return _pairs(jnp.argsort(distances, stable=True).astype(jnp.int32), rng,
                num_pairs, pairing)


def _pairs(order: jax.Array, rng: jax.Array, num_pairs: int,
           pairing: str) -> tuple[jax.Array, jax.Array]:
  """``make_pairs`` from the ranking order (closest first)."""
  best = order[:num_pairs]
  worst = order[order.shape[-1] - num_pairs:]
  if pairing == 'rank':
    return best, worst
  if pairing == 'random':
    return best, jax.random.permutation(rng, worst)
  return (jnp.repeat(best, num_pairs), jnp.tile(worst, num_pairs))


@jax.named_scope('ranking.rank_rollouts')
def rank_rollouts(state: datatypes.SimulatorState,
                  rollouts: datatypes.Trajectory, rng: jax.Array,
                  config: RankingConfig = RankingConfig(), *,
                  phi: dict[str, jax.Array] | None = None) -> Ranking:
  """Ranks one scenario's rollouts and forms its preference pairs.

  Args:
    state: unbatched SimulatorState (the logged demonstration).
    rollouts: Trajectory (R, N, 80), every row as the metric takes it
      (``rollout.to_metric_trajectory``).
    rng: a key (random pairing, random and adversarial strategies).
    config: static.
    phi: precomputed ``occupancy.occupancy_features`` (same agents).

  Returns:
    ``Ranking``.
  """
  num_rollouts = rollouts.x.shape[0]
  config.check(num_rollouts)
  if phi is None:
    phi = occupancy.occupancy_features(
        state, rollouts, agents=config.agents,
        max_evaluated=config.max_evaluated, agent_chunk=config.agent_chunk)
  weights = jnp.asarray(occupancy.feature_weights(config.feature_set,
                                                  config.weights))
  res = agent_distances(phi, weights, config.sinkhorn, config.agent_chunk)
  counted = phi['agent_mask'] & jnp.any(phi['valid'][0], -1)
  per_agent = jnp.where(counted & res.ok, res.cost, 0.0)
  ot_d = scene_distances(per_agent, counted & res.ok, config.aggregate)
  ade = scene_distances(phi['ade'], counted[None], config.aggregate)
  pair_rng, strat_rng = jax.random.split(rng)
  if config.strategy == 'ade':
    distances = ade
  elif config.strategy == 'random':
    distances = jax.random.uniform(strat_rng, (num_rollouts,))
  else:
    distances = ot_d
  order = jnp.argsort(distances, stable=True).astype(jnp.int32)
  if config.strategy == 'adversarial':
    unpreferred = jax.random.permutation(
        strat_rng, num_rollouts)[:config.num_pairs].astype(jnp.int32)
    preferred = jnp.full_like(unpreferred, LOG)
  else:
    preferred, unpreferred = _pairs(order, pair_rng, config.num_pairs,
                                    config.pairing)
  return Ranking(distances=distances, ot_distances=ot_d, ade=ade,
                 agent_distances=per_agent, agent_counted=counted,
                 order=order, preferred=preferred, unpreferred=unpreferred)


_rank_rollouts = jax.jit(rank_rollouts, static_argnames=('config',))


def rank_rollouts_jit(state: datatypes.SimulatorState,
                      rollouts: datatypes.Trajectory, rng: jax.Array,
                      config: RankingConfig = RankingConfig(), *,
                      phi: dict[str, jax.Array] | None = None) -> Ranking:
  """``rank_rollouts`` compiled: the one jitted copy the stages share
  (the report; the collection ranks inside its own per-device program),
  one program per config and input shape in a process; every argument is
  passed on by keyword so that jit's cache sees the same call however it
  is made. Arguments as ``rank_rollouts``."""
  return _rank_rollouts(state, rollouts, rng, config=config, phi=phi)
