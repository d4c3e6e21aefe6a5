"""Batched, masked entropic optimal transport between empirical measures.

One small module between the preference ranking and the OT solver. The
problem it solves, for every index of the leading batch axes at once, is
the entropic OT cost between two uniform empirical measures::

  x: (..., n, D) support points, x_mask: (..., n) which of them count
  y: (..., m, D) support points, y_mask: (..., m)
  a = uniform over the valid x, b = uniform over the valid y
  C[i, j] = sum_k w_k |x[i, k] - y[j, k]|          (weighted L1 ground cost)
  P* = argmin_P <C, P> - epsilon H(P)  s.t.  P 1 = a, P^T 1 = b
  cost = <C, P*>                                    (the transport cost)

Two solvers give the same answer (the tests hold them to 1e-4):

* ``'native'`` (default): log-domain Sinkhorn written for this shape of
  problem: thousands of small (80 x 80) problems in one array, epsilon
  annealed geometrically from each problem's largest cost down to
  ``epsilon`` (``anneal``), over-relaxed potential updates (``relax``; costs
  with gaps, such as a collision feature of weight 10, otherwise converge
  very slowly), iterations in ``lax.scan`` chunks of 50 with a convergence
  check between chunks: a problem that is at ``epsilon`` with marginal
  error below ``threshold`` is frozen (so its result never depends on the
  rest of the batch), the loop ends when all are or at the cap, and each
  problem keeps its best potentials. Near convergence the updates turn
  plain again (relaxation would amplify float32 noise there).
* ``'ott'``: ott-jax's linear Sinkhorn solver (``ott.solvers.linear.solve``
  on a cost-matrix geometry, vmapped over the batch), the reference.

Both return the cost of the final plan *rounded* onto the transport polytope
(``_rounded_cost``): a plan stopped before convergence matches one marginal
only, and the mass it has not yet moved is the mass that has to cross the
cost's gaps, so its raw cost would read low by up to ~20 %.

With uniform marginals over equal numbers of points, exact OT is an
assignment problem; as epsilon -> 0 the cost converges to the assignment's
mean cost (tested against ``scipy.optimize.linear_sum_assignment``); the
entropic bias is an absolute amount (about 0.7 x epsilon on occupancy
features), which is why the default epsilon is 0.01 for distances of order
1. Masked points never change the result, and a problem with no valid point
on either side has cost 0 and ``ok`` False (never NaN). Nothing here calls
``jax.jit``; jit the caller with the options static.
"""

from __future__ import annotations

import dataclasses
import functools

from flax import struct
import jax
import jax.numpy as jnp

__all__ = ['SinkhornConfig', 'RANKING_SINKHORN', 'OTResult', 'cost_matrix',
           'transport_cost', 'BACKENDS']

BACKENDS = ('native', 'ott')
_CHUNK = 50  # native: iterations between convergence checks
_POLISH = 10.0  # native: plain iterations once within 10 x threshold


@dataclasses.dataclass(frozen=True)
class SinkhornConfig:
  """How the entropic OT problems are solved (hashable: pass it static).

  Attributes:
    epsilon: the entropic regularisation, in units of the ground cost. Its
      bias on the cost is an absolute amount, about 0.7 x epsilon on
      occupancy features (BENCHMARKS.md, "Preference ranking").
    num_iterations: the cap on Sinkhorn iterations (each updates both
      potentials).
    threshold: stop once every problem is at ``epsilon`` and its marginal
      error (L1) is below this (checked every 50 iterations; 0: always run
      the cap).
    anneal: decay factor of epsilon per iteration, starting from the largest
      cost of each problem (0 or 1: no annealing).
    relax: over-relaxation factor of the potential updates, in [1, 2)
      (``'native'`` only; 1 is plain Sinkhorn). 1.8 converges several times
      faster on costs with gaps (collisions); above ~1.9 it can diverge.
    backend: 'native' or 'ott'.
    dtype: the dtype of the iterations (the cost is returned in float32);
      bfloat16 halves memory traffic at some accuracy.
  """
  epsilon: float = 0.01
  num_iterations: int = 600
  threshold: float = 1e-3
  anneal: float = 0.95
  relax: float = 1.8
  backend: str = 'native'
  dtype: str = 'float32'

  def __post_init__(self):
    if self.backend not in BACKENDS:
      raise ValueError(f'SinkhornConfig.backend={self.backend!r} is not one '
                       f'of {BACKENDS}')
    if not self.epsilon > 0:
      raise ValueError(f'SinkhornConfig.epsilon must be > 0, got '
                       f'{self.epsilon}')
    if self.num_iterations < 1:
      raise ValueError('SinkhornConfig.num_iterations must be >= 1, got '
                       f'{self.num_iterations}')
    if not 0 <= self.anneal <= 1:
      raise ValueError(f'SinkhornConfig.anneal must be in [0, 1], got '
                       f'{self.anneal}')
    if not 1 <= self.relax < 2:
      raise ValueError(f'SinkhornConfig.relax must be in [1, 2), got '
                       f'{self.relax}')
    if self.threshold < 0:
      raise ValueError(f'SinkhornConfig.threshold must be >= 0, got '
                       f'{self.threshold}')
    if self.dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"SinkhornConfig.dtype must be 'float32' or "
                       f"'bfloat16', got {self.dtype!r}")


# The ranking's setting: the cheapest measured with >= 99 % agreement of the
# preferred and unpreferred sets with exact OT on real model rollouts (100 %
# of top-16 and bottom-16 on 4 real scenes x 64 rollouts x 128 rows,
# Spearman >= 0.9998; 18x faster than the default on 2 CPU cores;
# BENCHMARKS.md "Preference ranking", ``benchmarks/ranking_agreement.py``).
# Its costs carry ~0.07 of entropic bias, the same for every rollout.
RANKING_SINKHORN = SinkhornConfig(epsilon=0.1, num_iterations=30, anneal=0.7)


@struct.dataclass
class OTResult:
  """Costs of a batch of OT problems.

  Attributes:
    cost: float32 (...,) the transport cost <C, P*> (0 where not ``ok``).
    ok: bool (...,) both sides had at least one valid point.
    marginal_error: float32 (...,) L1 distance of P*'s row and column sums
      from ``a`` and ``b`` before rounding; small when converged.
    iterations: int32 (...,) Sinkhorn iterations run.
  """
  cost: jax.Array
  ok: jax.Array
  marginal_error: jax.Array
  iterations: jax.Array


def cost_matrix(x: jax.Array, y: jax.Array, weights: jax.Array) -> jax.Array:
  """Weighted L1 ground cost.

  Args:
    x: (..., n, D).
    y: (..., m, D).
    weights: (D,) non-negative.

  Returns:
    (..., n, m): sum_k weights[k] * |x[..., i, k] - y[..., j, k]|.
  """
  weights = jnp.asarray(weights, x.dtype)
  # One fused term per feature: never materialises the (..., n, m, D)
  # differences (1 GB at 64 rollouts x 128 agents x 80 x 80 x 5).
  return sum(weights[k] * jnp.abs(x[..., :, None, k] - y[..., None, :, k])
             for k in range(x.shape[-1]))


def _log_marginal(mask: jax.Array) -> jax.Array:
  count = jnp.sum(mask, axis=-1, keepdims=True)
  return jnp.where(mask, -jnp.log(jnp.maximum(count, 1).astype(jnp.float32)),
                   -jnp.inf)


def _native(cost: jax.Array, log_a: jax.Array, log_b: jax.Array,
            config: SinkhornConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Log-domain Sinkhorn on (B, n, m).

  Returns (<C, P> of the rounded plan, marginal error, iterations run).
  """
  dtype = jnp.dtype(config.dtype)
  c = cost.astype(dtype)
  eps = config.epsilon
  cap = config.num_iterations
  chunk = min(_CHUNK, cap)
  num_chunks = -(-cap // chunk)
  if 0 < config.anneal < 1:
    # Per problem: start where the kernel is smooth over the whole cost
    # range, shrink geometrically, hold at epsilon once reached. Masked
    # entries of ``cost`` are already 0 (``transport_cost``).
    start = jnp.maximum(jnp.max(cost, axis=(-2, -1)), eps)
    warm = jnp.ceil(jnp.log(start / eps) / -jnp.log(config.anneal))
  else:
    start = jnp.full(cost.shape[:1], eps, jnp.float32)
    warm = jnp.zeros(cost.shape[:1], jnp.float32)
  decay = jnp.float32(config.anneal if 0 < config.anneal < 1 else 1.0)
  la, lb = log_a.astype(dtype), log_b.astype(dtype)
  a = jnp.exp(log_a)

  def step(fgw, i):
    f0, g0, omega = fgw

    def relaxed(new, old):
      # Over-relaxation; masked points keep their -inf potential.
      return jnp.where(jnp.isfinite(new), old + omega[:, None] * (new - old),
                       new)

    e = jnp.maximum(eps, start * decay ** i.astype(jnp.float32))
    e = e.astype(dtype)[:, None]
    f = e * (la - jax.nn.logsumexp((g0[:, None, :] - c) / e[..., None],
                                   axis=-1))
    f = relaxed(f, f0)
    g = e * (lb - jax.nn.logsumexp((f[:, :, None] - c) / e[..., None],
                                   axis=-2))
    return (f, relaxed(g, g0), omega), None

  def plan_of(f, g):
    f, g = f.astype(jnp.float32), g.astype(jnp.float32)
    plan = jnp.exp((f[:, :, None] + g[:, None, :] - cost) / eps)
    return jnp.where(jnp.isfinite(plan), plan, 0.0)

  def error(f, g):
    return jnp.sum(jnp.abs(jnp.sum(plan_of(f, g), -1) - a), -1)

  # Each problem is frozen once it is at epsilon and converged, so its
  # result never depends on the rest of the batch; the loop ends when all
  # are frozen or at the cap. Until then each keeps its best potentials
  # (at epsilon): a guard against a rare oscillating problem.
  def cond(carry):
    k, _, _, _, done = carry
    return (k < num_chunks) & ~jnp.all(done)

  def body(carry):
    k, fg, (best, best_err), iters, done = carry
    # Over-relaxed while far from converged; plain near the end, where
    # relaxation would amplify float32 noise in the potentials.
    omega = jnp.where(best_err > _POLISH * config.threshold,
                      jnp.asarray(config.relax, dtype), jnp.asarray(1, dtype))
    new = jax.lax.scan(step, fg + (omega,),
                       k * chunk + jnp.arange(chunk))[0][:2]
    keep = lambda x, y: jnp.where(done[:, None], x, y)
    fg = jax.tree.map(keep, fg, new)
    end = (k + 1) * chunk
    at_eps = end >= warm
    err = error(*fg)
    take = ~at_eps | (err <= best_err)
    best = jax.tree.map(lambda x, y: jnp.where(take[:, None], x, y), fg,
                        best)
    best_err = jnp.where(take, err, best_err)
    iters = jnp.where(done, iters, end)
    done = done | (at_eps & (err <= config.threshold))
    return k + 1, fg, (best, best_err), iters, done

  # Masked points start (and stay) at -inf, so that they never take part.
  fg = (jnp.where(jnp.isfinite(la), 0, la), jnp.where(jnp.isfinite(lb), 0, lb))
  batch = cost.shape[:1]
  _, _, ((f, g), _), iters, _ = jax.lax.while_loop(
      cond, body, (0, fg, (fg, jnp.full(batch, jnp.inf, jnp.float32)),
                   jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool)))
  cost_value, err = _rounded_cost(plan_of(f, g), cost, a, jnp.exp(log_b))
  return cost_value, err, iters


def _rounded_cost(plan: jax.Array, cost: jax.Array, a: jax.Array,
                  b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """<C, P> of the plan rounded onto the transport polytope, and P's error.

  A Sinkhorn plan stopped early matches one marginal only. Where the cost
  has gaps (a collision step costs 10 more than its neighbours), the mass
  still missing is exactly the mass that has to cross a gap, and <C, P> of
  the raw plan misses its cost (up to ~20 % of the distance). Rounding
  (Altschuler, Weed and Rigollet, 2017) scales the rows, then the columns,
  down to their marginals and sends the remaining mass from the rows that
  lack it to the columns that lack it (a rank-one plan), so the cost is
  that of a feasible plan: never below the exact OT cost, and equal to the
  raw plan's when Sinkhorn has converged.

  Args:
    plan: (B, n, m) non-negative and finite.
    cost: (B, n, m).
    a: (B, n), b: (B, m) the marginals (0 on masked points).

  Returns:
    (cost of the rounded plan (B,), L1 error of both marginals of ``plan``
    (B,)).
  """
  rows = jnp.sum(plan, -1)
  err = (jnp.sum(jnp.abs(rows - a), -1) +
         jnp.sum(jnp.abs(jnp.sum(plan, -2) - b), -1))
  plan = plan * jnp.minimum(1.0, a / jnp.maximum(rows, 1e-30))[..., None]
  cols = jnp.sum(plan, -2)
  plan = plan * jnp.minimum(1.0, b / jnp.maximum(cols, 1e-30))[..., None, :]
  need_a = jnp.maximum(a - jnp.sum(plan, -1), 0.0)
  need_b = jnp.maximum(b - jnp.sum(plan, -2), 0.0)
  total = jnp.sum(need_a, -1)
  extra = jnp.einsum('bi,bij,bj->b', need_a, cost, need_b) / jnp.maximum(
      total, 1e-30)
  return jnp.sum(plan * cost, axis=(-2, -1)) + extra, err


def _ott(cost: jax.Array, log_a: jax.Array, log_b: jax.Array,
         config: SinkhornConfig
         ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """ott-jax's Sinkhorn on (B, n, m), vmapped over B.

  Returns:
    (B,) rounded transport costs, (B,) marginal errors of the rounded plans
    and (B,) int32 iteration counts, as ``_native``.
  """
  # Imported here: only this backend needs ott-jax at run time.
  from ott.geometry import epsilon_scheduler
  from ott.geometry import geometry
  from ott.solvers import linear

  def one(c, la, lb):
    a, b = jnp.exp(la), jnp.exp(lb)
    if 0 < config.anneal < 1:
      start = jnp.maximum(jnp.max(c), config.epsilon)
      eps = epsilon_scheduler.Epsilon(
          target=config.epsilon, init=start / config.epsilon,
          decay=config.anneal)
    else:
      eps = config.epsilon
    geom = geometry.Geometry(cost_matrix=c, epsilon=eps)
    out = linear.solve(geom, a=a, b=b, threshold=config.threshold,
                       max_iterations=config.num_iterations,
                       inner_iterations=1, lse_mode=True)
    return out.matrix, jnp.asarray(out.n_iters, jnp.int32)

  plans, iterations = jax.vmap(one)(cost, log_a, log_b)
  plans = jnp.where(jnp.isfinite(plans), plans, 0.0)
  value, err = _rounded_cost(plans, cost, jnp.exp(log_a), jnp.exp(log_b))
  return value, err, iterations


@functools.partial(jax.named_call, name='ot.transport_cost')
def transport_cost(x: jax.Array, x_mask: jax.Array, y: jax.Array,
                   y_mask: jax.Array, weights: jax.Array,
                   config: SinkhornConfig = SinkhornConfig(),
                   cost: jax.Array | None = None) -> OTResult:
  """Entropic OT costs between masked uniform measures, batched.

  Args:
    x: (..., n, D) first measure's support (e.g. a rollout's per-step
      features). Leading axes of ``x`` and ``y`` broadcast.
    x_mask: bool (..., n) valid points of x.
    y: (..., m, D) second measure's support (e.g. the logged expert's).
    y_mask: bool (..., m).
    weights: (D,) ground-cost weights.
    config: solver options (static under jit).
    cost: optional precomputed (..., n, m) ground cost (then ``x``, ``y``,
      ``weights`` only set the shapes).

  Returns:
    ``OTResult`` with the broadcast leading shape.
  """
  if cost is None:
    cost = cost_matrix(x, y, weights)
  x_mask = jnp.asarray(x_mask, bool)
  y_mask = jnp.asarray(y_mask, bool)
  lead = jnp.broadcast_shapes(cost.shape[:-2], x_mask.shape[:-1],
                              y_mask.shape[:-1])
  n, m = cost.shape[-2:]
  cost = jnp.broadcast_to(cost, lead + (n, m)).reshape(-1, n, m)
  x_mask = jnp.broadcast_to(x_mask, lead + (n,)).reshape(-1, n)
  y_mask = jnp.broadcast_to(y_mask, lead + (m,)).reshape(-1, m)
  ok = jnp.any(x_mask, -1) & jnp.any(y_mask, -1)
  # Empty problems are solved on full masks (finite, never NaN), then zeroed.
  x_mask = x_mask | ~ok[:, None]
  y_mask = y_mask | ~ok[:, None]
  cost = jnp.where(x_mask[:, :, None] & y_mask[:, None, :], cost, 0.0)
  solve = _native if config.backend == 'native' else _ott
  value, err, iterations = solve(cost.astype(jnp.float32),
                                 _log_marginal(x_mask),
                                 _log_marginal(y_mask), config)
  value = jnp.where(ok, value, 0.0)
  err = jnp.where(ok, err, 0.0)
  return OTResult(cost=value.reshape(lead), ok=ok.reshape(lead),
                  marginal_error=err.reshape(lead),
                  iterations=iterations.reshape(lead))
