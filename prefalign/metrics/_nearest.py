"""Building blocks of the certified nearest-neighbour searches.

The road-edge, nearest-object and lane searches of ``metrics.features``
keep, for groups of queries, short candidate lists: those with the smallest
lower bound on their distance (a gap between bounding boxes). A list is
*certified* afterwards: any candidate left out is at least the least bound
left out away (``top_k_lower``), so a query whose best distance among its
candidates is below it has found its nearest. Queries that are not
certified are searched again exactly (``map_live`` over a compacted list),
so every search is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_INF = jnp.inf


def map_live(fn, xs, num_live: jax.Array, batch_size: int = 32):
  """``fn`` over the first ``num_live`` entries of ``xs``, chunk by chunk.

  For short compacted lists (``jnp.nonzero(..., size=budget)``) whose live
  entries come first: chunks wholly past ``num_live`` are skipped by
  ``lax.cond`` (so a budget costs nothing until it is used) and give zeros.
  Outside ``vmap`` only; under it both branches run.

  Args:
    fn: maps one entry (a pytree of leaves without the leading axis) to an
      array.
    xs: pytree of arrays with a leading axis of length ``budget``.
    num_live: int scalar, entries ``[0, num_live)`` are computed.
    batch_size: chunk length (static).

  Returns:
    ``fn`` stacked over the budget, zeros past the live chunks.
  """
  budget = jax.tree.leaves(xs)[0].shape[0]
  size = min(batch_size, budget)
  chunks = -(-budget // size)
  pad = chunks * size - budget
  padded = jax.tree.map(
      lambda a: jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)
                        ).reshape((chunks, size) + a.shape[1:]), xs)
  batched = jax.vmap(fn)
  out_shape = jax.eval_shape(batched, jax.tree.map(lambda a: a[0], padded))

  def chunk(args):
    i, c = args
    return jax.lax.cond(
        i * size < num_live, batched,
        lambda _: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                               out_shape), c)

  out = jax.lax.map(chunk, (jnp.arange(chunks), padded))
  return jax.tree.map(
      lambda a: a.reshape((chunks * size,) + a.shape[2:])[:budget], out)


def box_gap(lo_a, hi_a, lo_b, hi_b):
  """Euclidean distance between axis-aligned boxes (broadcasting; an empty
  box, lo = +inf and hi = -inf, is infinitely far)."""
  gap = jnp.maximum(0.0, jnp.maximum(lo_a - hi_b, lo_b - hi_a))
  return jnp.sqrt(jnp.sum(gap * gap, -1))


def top_k_lower(lb: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Indices (into the last axis) of the k smallest bounds, and the next one.

  Returns ``(indices (..., k), least bound left out (...))``.
  """
  # The next bound is the least one left out, not top_k(k + 1)'s last
  # value: using that makes the CPU backend lower top_k to a full sort.
  _, pos = jax.lax.top_k(-lb, k)
  rows = lb.reshape(-1, lb.shape[-1])
  left = rows.at[jnp.arange(rows.shape[0])[:, None],
                 pos.reshape(-1, k)].set(_INF)
  return pos, left.min(-1).reshape(lb.shape[:-1])
