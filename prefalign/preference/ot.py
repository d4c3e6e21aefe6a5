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
  problem: thousands of small (80 x 80) problems in one array, a fixed
  number of iterations in a ``lax.scan`` (no data-dependent loop, so the
  batch never waits for its slowest member), and epsilon annealed
  geometrically from the cost's scale down to ``epsilon`` (``anneal``), which
  reaches a given accuracy in far fewer iterations than a fixed epsilon
  (BENCHMARKS.md, "Preference ranking").
* ``'ott'``: ott-jax's linear Sinkhorn solver (``ott.solvers.linear.solve``
  on a cost-matrix geometry, vmapped over the batch), the reference.

With uniform marginals over equal numbers of points, exact OT is an
assignment problem; as epsilon -> 0 the cost converges to the assignment's
mean cost (tested against ``scipy.optimize.linear_sum_assignment``). Masked
points never change the result, and a problem with no valid point on either
side has cost 0 and ``ok`` False (never NaN). Nothing here calls ``jax.jit``;
jit the caller with the options static.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ['SinkhornConfig', 'OTResult', 'cost_matrix', 'transport_cost',
           'BACKENDS']

BACKENDS = ('native', 'ott')


@dataclasses.dataclass(frozen=True)
class SinkhornConfig:
  """How the entropic OT problems are solved (hashable: pass it static).

  Attributes:
    epsilon: the entropic regularisation, in units of the ground cost.
    num_iterations: Sinkhorn iterations (each updates both potentials).
      ``'ott'`` treats it as the iteration cap.
    threshold: ``'ott'`` only: stop when the marginal error (L1) is below it.
    anneal: decay factor of epsilon per iteration, starting from the largest
      cost of each problem (0 or 1: no annealing).
    backend: 'native' or 'ott'.
    dtype: the dtype of the iterations (the cost is returned in float32);
      bfloat16 halves memory traffic at some accuracy.
  """
  epsilon: float = 0.05
  num_iterations: int = 200
  threshold: float = 1e-3
  anneal: float = 0.9
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
    if self.dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"SinkhornConfig.dtype must be 'float32' or "
                       f"'bfloat16', got {self.dtype!r}")


@struct.dataclass
class OTResult:
  """Costs of a batch of OT problems.

  Attributes:
    cost: float32 (...,) the transport cost <C, P*> (0 where not ``ok``).
    ok: bool (...,) both sides had at least one valid point.
    marginal_error: float32 (...,) L1 distance of P*'s row sums from ``a``
      (column sums match ``b`` after the last update); small when converged.
  """
  cost: jax.Array
  ok: jax.Array
  marginal_error: jax.Array


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
            config: SinkhornConfig) -> tuple[jax.Array, jax.Array]:
  """Log-domain Sinkhorn on (B, n, m); returns (<C, P>, marginal error)."""
  dtype = jnp.dtype(config.dtype)
  c = cost.astype(dtype)
  eps = config.epsilon
  iters = config.num_iterations
  if 0 < config.anneal < 1:
    # Per problem: start where the kernel is smooth over the whole cost
    # range, shrink geometrically, hold at epsilon for the last iterations.
    # Masked entries of ``cost`` are already 0 (``transport_cost``).
    start = jnp.maximum(jnp.max(cost, axis=(-2, -1)), eps)
    decay = config.anneal ** jnp.arange(iters, dtype=jnp.float32)
    schedule = jnp.maximum(eps, start[None, :] * decay[:, None])  # (I, B)
  else:
    schedule = jnp.full((iters, cost.shape[0]), eps, jnp.float32)
  la, lb = log_a.astype(dtype), log_b.astype(dtype)

  def body(fg, e):
    f, g = fg
    e = e.astype(dtype)[:, None]
    f = e * (la - jax.nn.logsumexp((g[:, None, :] - c) / e[..., None],
                                   axis=-1))
    g = e * (lb - jax.nn.logsumexp((f[:, :, None] - c) / e[..., None],
                                   axis=-2))
    return (f, g), None

  zeros = lambda n: jnp.zeros(cost.shape[:1] + (n,), dtype)
  (f, g), _ = jax.lax.scan(body, (zeros(cost.shape[1]), zeros(cost.shape[2])),
                           schedule)
  f, g = f.astype(jnp.float32), g.astype(jnp.float32)
  plan = jnp.exp((f[:, :, None] + g[:, None, :] - cost) / eps)
  plan = jnp.where(jnp.isfinite(plan), plan, 0.0)
  err = jnp.sum(jnp.abs(jnp.sum(plan, -1) - jnp.exp(log_a)), -1)
  return jnp.sum(plan * cost, axis=(-2, -1)), err


def _ott(cost: jax.Array, log_a: jax.Array, log_b: jax.Array,
         config: SinkhornConfig) -> tuple[jax.Array, jax.Array]:
  """ott-jax's Sinkhorn on (B, n, m), vmapped over B."""
  # Imported here: only this backend needs ott-jax at run time.
  from ott.geometry import epsilon_scheduler  # pylint: disable=g-import-not-at-top
  from ott.geometry import geometry  # pylint: disable=g-import-not-at-top
  from ott.solvers import linear  # pylint: disable=g-import-not-at-top

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
    plan = jnp.where(jnp.isfinite(out.matrix), out.matrix, 0.0)
    err = jnp.sum(jnp.abs(jnp.sum(plan, -1) - a))
    return jnp.sum(plan * c), err

  return jax.vmap(one)(cost, log_a, log_b)


@functools.partial(jax.named_call, name='ot.transport_cost')
def transport_cost(x: jax.Array, x_mask: jax.Array, y: jax.Array,
                   y_mask: jax.Array, weights: jax.Array,
                   config: SinkhornConfig = SinkhornConfig(),
                   cost: Optional[jax.Array] = None) -> OTResult:
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
  value, err = solve(cost.astype(jnp.float32), _log_marginal(x_mask),
                     _log_marginal(y_mask), config)
  value = jnp.where(ok, value, 0.0)
  err = jnp.where(ok, err, 0.0)
  return OTResult(cost=value.reshape(lead), ok=ok.reshape(lead),
                  marginal_error=err.reshape(lead))
