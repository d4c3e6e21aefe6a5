"""Exact nearest-segment search for many clustered queries, with pruning.

The WOSAC road-edge distance asks, for every corner of every evaluated box at
every step of every rollout, which of thousands of road-edge segments is
nearest. Brute force is O(queries x segments). Queries come in tight groups
(one object at one step across the rollouts), so each group keeps a short
list of candidate segments, those with the smallest lower bound on their
distance (the gap between the group's bounding box and the segment's).

The lists are *certified* afterwards: once the caller knows each query's best
distance d* among its candidates, any segment left out is at least the
threshold away (its lower bound is no smaller than the first one left out),
so if every d* is below its group's threshold the candidates contain every
query's nearest segment. A call whose lists cannot be certified falls back to
brute force, so the result is always exact.

Two levels: per object over the whole horizon (cuts the map to the object's
surroundings), then per object and step among those.
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


def _box_gap(lo_a, hi_a, lo_b, hi_b):
  """Euclidean distance between axis-aligned boxes (broadcasting)."""
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


def object_pool(groups: jax.Array, group_valid: jax.Array,
                seg_lo: jax.Array, seg_hi: jax.Array, seg_ok: jax.Array,
                size: int) -> tuple[jax.Array, jax.Array]:
  """Level 0: each object's ``size`` nearest segments over all its queries.

  One box per object bounds every query of it (all rollouts and steps), so
  the list is a certificate for all of them at once and the levels below
  search it instead of the whole map.

  Args:
    groups: (O, G, M, D) query points; group_valid (O, G, M).
    seg_lo, seg_hi: (S, D) segment boxes; seg_ok (S,).
    size: static list length (< S).

  Returns:
    ``(pool (O, size) segment indices, threshold (O,))``: a segment outside
    an object's pool is at least ``threshold`` from each of its queries.
  """
  o, _, _, d = groups.shape
  flat = groups.reshape(o, -1, d)
  ok = group_valid.reshape(o, -1)
  nan = jnp.where(ok[..., None], flat, jnp.nan)
  any_o = jnp.any(ok, axis=1)
  lo = jnp.where(any_o[:, None], jnp.nanmin(nan, axis=1), 0.0)
  hi = jnp.where(any_o[:, None], jnp.nanmax(nan, axis=1), 0.0)
  lb = _box_gap(lo[:, None, :], hi[:, None, :], seg_lo, seg_hi)
  return top_k_lower(jnp.where(seg_ok, lb, _INF), size)


def nearest_candidates(groups: jax.Array, group_valid: jax.Array,
                       seg_lo: jax.Array, seg_hi: jax.Array,
                       seg_ok: jax.Array, *, window: int = 40,
                       k_window: int = 768, k_group: int = 128,
                       pool: jax.Array | None = None,
                       pool_threshold: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array]:
  """Candidate lists of nearest segments for grouped queries.

  Args:
    groups: (O, G, M, D) query points: O objects, G groups each (e.g. steps x
      corners, consecutive groups close in time), M points per group (e.g.
      rollouts), in the space the distance is measured in.
    group_valid: (O, G, M) which queries count.
    seg_lo, seg_hi: (S, D) boxes bounding where each segment's distance is
      measured to; seg_ok (S,) validity.
    window: consecutive groups that share a first-level list.
    k_window, k_group: static list lengths of the two levels.
    pool, pool_threshold: optional (O, S0) per-object segment indices and
      (O,) their certificate (``object_pool``): the levels search the pool
      instead of every segment.

  Returns:
    ``(cand (O, G, k) sorted segment indices, threshold (O, G))``: a segment
    outside a group's list is at least ``threshold`` from each of its
    queries. If every query's best distance among its candidates is below
    its group's threshold, the lists hold every query's nearest segment.
  """
  o, g, _, d = groups.shape
  s = seg_lo.shape[0]
  nan = jnp.where(group_valid[..., None], groups, jnp.nan)
  any_g = jnp.any(group_valid, axis=2)
  # Empty groups get a degenerate box at the origin; they are never scored.
  lo_g = jnp.where(any_g[..., None], jnp.nanmin(nan, axis=2), 0.0)
  hi_g = jnp.where(any_g[..., None], jnp.nanmax(nan, axis=2), 0.0)

  # Level 1: windows of consecutive groups, against every segment.
  w = min(window, g)
  nw = -(-g // w)
  pad = nw * w - g
  padded = lambda a, v: jnp.pad(a, ((0, 0), (0, pad)) + ((0, 0),) *
                                (a.ndim - 2), constant_values=v)
  any_w = padded(any_g, False).reshape(o, nw, w)
  lo_w = jnp.where(any_w[..., None], padded(lo_g, 0.0).reshape(o, nw, w, d),
                   _INF).min(axis=2)
  hi_w = jnp.where(any_w[..., None], padded(hi_g, 0.0).reshape(o, nw, w, d),
                   -_INF).max(axis=2)
  has_w = jnp.any(any_w, axis=2)
  lo_w = jnp.where(has_w[..., None], lo_w, 0.0)
  hi_w = jnp.where(has_w[..., None], hi_w, 0.0)
  if pool is None:
    seg_box = (seg_lo, seg_hi, seg_ok)
  else:  # (O, 1, S0, ...): each object's own pool
    s = pool.shape[-1]
    seg_box = tuple(a[pool][:, None] for a in (seg_lo, seg_hi, seg_ok))
  lb1 = _box_gap(lo_w[..., None, :], hi_w[..., None, :], *seg_box[:2])
  lb1 = jnp.where(seg_box[2], lb1, _INF)  # (O, W, S)
  k1 = min(k_window, s)
  if k1 < s:
    pos1, thr1 = top_k_lower(lb1, k1)  # (O, W, k1) positions
  else:
    pos1 = jnp.broadcast_to(jnp.arange(s), (o, nw, s))
    thr1 = jnp.full((o, nw), _INF)
  if pool is None:
    pool = pos1
  else:
    pool = jnp.take_along_axis(pool[:, None, :], pos1, axis=-1)
    thr1 = jnp.minimum(thr1, pool_threshold[:, None])

  # Level 2: each group against its window's list.
  p_lo, p_hi, p_ok = seg_lo[pool], seg_hi[pool], seg_ok[pool]  # (O, W, k1)
  grouped = lambda a: padded(a, 0.0).reshape((o, nw, w) + a.shape[2:])
  lb2 = _box_gap(grouped(lo_g)[..., None, :], grouped(hi_g)[..., None, :],
                 p_lo[:, :, None], p_hi[:, :, None])  # (O, W, w, k1)
  lb2 = jnp.where(p_ok[:, :, None], lb2, _INF)
  k2 = min(k_group, k1)
  if k2 < k1:
    pos, thr2 = top_k_lower(lb2, k2)
  else:
    pos = jnp.broadcast_to(jnp.arange(k1), lb2.shape)
    thr2 = jnp.full(lb2.shape[:-1], _INF)
  cand = jnp.take_along_axis(pool[:, :, None], pos, axis=-1)
  cand = jnp.sort(cand, axis=-1).reshape(o, nw * w, k2)[:, :g]
  threshold = jnp.minimum(thr1[:, :, None], thr2).reshape(o, nw * w)[:, :g]
  return cand, threshold
