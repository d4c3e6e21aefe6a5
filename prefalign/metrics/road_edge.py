"""The certified road-edge search of ``features.distance_to_road_edge``.

WOSAC's road-edge distance of a box corner is the signed distance to the
nearest road-edge segment (nearest in a space with z stretched). Searching
every segment for every corner is what makes the metric slow on real maps,
so corners are searched in groups: ``metrics._nearest`` gives each group a
short candidate list with a certificate (no segment outside it can be
nearer than the threshold); queries the certificate does not cover are
redone by brute force, up to a budget, and past it the caller's brute force
runs instead. The answer is the same either way.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from prefalign import datatypes
from prefalign.metrics import _nearest
from prefalign.sim import geometry

__all__ = ['EdgeSearch', 'nearest_in_group', 'certified_search',
           'pruned_distance']

_BIG = geometry.EXTREMELY_LARGE_DISTANCE


class EdgeSearch(NamedTuple):
  """The road-edge segments of one map, laid out for the certified search.

  Attributes:
    table: ``geometry.segment_table`` of the road edges.
    lo, hi: (S, 3) bounding boxes of the segments in stretched space.
    stretch: (3,) the search space's scale (z stretched).
    z_stretch: the vertical weight.
  """
  table: dict[str, jax.Array]
  lo: jax.Array
  hi: jax.Array
  stretch: jax.Array
  z_stretch: float

  @classmethod
  def build(cls, roadgraph: datatypes.RoadgraphPoints, mask: jax.Array,
            z_stretch: float, wrap_all_closed: bool) -> EdgeSearch:
    """The search over the segments of ``roadgraph`` where ``mask``."""
    table = geometry.segment_table(roadgraph, mask, wrap_all_closed)
    # Distances are measured in a space with z stretched: the nearest
    # segment is the one nearest there (the magnitude returned is the 2-D
    # distance).
    stretch = jnp.array([1.0, 1.0, z_stretch], jnp.float32)
    a, v = table['start'] * stretch, table['vec'] * stretch
    return cls(table=table, lo=jnp.minimum(a, a + v),
               hi=jnp.maximum(a, a + v), stretch=stretch,
               z_stretch=z_stretch)


def nearest_in_group(s: EdgeSearch, qs: jax.Array, idx: jax.Array):
  """(M, 3) queries, (k,) candidates -> each query's nearest candidate and
  its stretched distance."""
  # Same arithmetic as the brute-force search, so near-ties break alike.
  _, off = geometry.segment_offsets(
      qs[:, None, :], s.table['start'][idx], s.table['vec'][idx])
  d2 = off[..., 0]**2 + off[..., 1]**2 + (s.z_stretch * off[..., 2])**2
  d2 = jnp.where(s.table['valid'][idx], d2, jnp.inf)
  j = jnp.argmin(d2, axis=-1)  # candidates are sorted: ties -> lowest
  best = jnp.take_along_axis(d2, j[:, None], -1)[:, 0]
  return idx[j], jnp.sqrt(best)


def certified_search(s: EdgeSearch, pts_groups: jax.Array,
                      valid: jax.Array, win: int, *, budget_rows: int,
                      redo_budget: int, pool_size: int, pooled: bool = False
                      ) -> tuple[jax.Array, jax.Array]:
  """Certified search over (O, G, M, 3) groups; (signed, fits budget).

  ``pooled``: each object first keeps its ``pool_size`` nearest segments.
  ``budget_rows``: the rollout count the redo budget is scaled by.
  """
  table = s.table
  stretched = pts_groups * s.stretch
  pool = pool_threshold = None
  if pooled and pool_size < s.lo.shape[0]:
    pool, pool_threshold = _nearest.object_pool(
        stretched, valid, s.lo, s.hi, table['valid'], pool_size)
  cand, threshold = _nearest.nearest_candidates(
      stretched, valid, s.lo, s.hi, table['valid'], window=win, pool=pool,
      pool_threshold=pool_threshold)
  nearest, best = jax.vmap(jax.vmap(
      lambda qs, idx: nearest_in_group(s, qs, idx)))(pts_groups, cand)
  # Queries whose list is not certified (far from every edge, or in a
  # group spread wide) are redone by brute force, up to a budget.
  unsure = (valid & (best >= threshold[..., None])).reshape(-1)
  num_unsure = jnp.sum(unsure)
  budget = min(redo_budget * max(budget_rows, 16), unsure.shape[0])
  (redo,) = jnp.nonzero(unsure, size=budget, fill_value=0)
  q_flat = pts_groups.reshape(-1, 3)
  signed = jax.vmap(lambda q, i: geometry.signed_at(q, i, table))(
      q_flat, nearest.reshape(-1))
  again = _nearest.map_live(
      lambda q: geometry.distance_one_point(q, table, s.z_stretch),
      q_flat[redo], num_unsure)
  keep = jnp.arange(budget) < num_unsure
  signed = signed.at[redo].set(jnp.where(keep, again, signed[redo]))
  return signed, num_unsure <= budget


def pruned_distance(pts: jax.Array, valid: jax.Array, s: EdgeSearch,
                          brute, *, window: int, redo_budget: int,
                          pool_size: int) -> jax.Array:
  """(B, E, T, 4) signed corner distances by the certified searches:
  groups across the rollouts first, then per rollout, then ``brute``."""
  b, e, t = valid.shape
  search = functools.partial(certified_search, s, budget_rows=b,
                             redo_budget=redo_budget, pool_size=pool_size)
  # First, groups of one corner of one object at one step across the
  # rollouts: rollouts that stay close share one list (cheapest).
  across, ok = search(
      jnp.transpose(pts, (1, 2, 3, 0, 4)).reshape(e, t * 4, b, 3),
      jnp.broadcast_to(jnp.moveaxis(valid, 0, 2)[:, :, None, :],
                       (e, t, 4, b)).reshape(e, t * 4, b), window)

  def per_rollout(_):
    # Rollouts that diverge (a learned policy's samples spread over tens
    # of metres) leave those groups uncertified. Then the groups are the
    # four corners of one box at one step of one rollout (a box wide),
    # per evaluated object over its rollouts and steps, searching the
    # object's pool of nearest segments over everywhere it goes.
    groups = jnp.transpose(pts, (1, 0, 2, 3, 4)).reshape(e, b * t, 4, 3)
    group_valid = jnp.broadcast_to(
        jnp.transpose(valid, (1, 0, 2))[..., None],
        (e, b, t, 4)).reshape(e, b * t, 4)
    signed, fits = search(groups, group_valid, min(window, t), pooled=True)
    return jax.lax.cond(
        fits,
        lambda _: jnp.transpose(signed.reshape(e, b, t, 4), (1, 0, 2, 3)),
        brute, None)

  d = jax.lax.cond(
      ok, lambda _: jnp.transpose(across.reshape(e, t, 4, b), (3, 0, 1, 2)),
      per_rollout, None)
  return jnp.where(jnp.any(s.table['valid']), d, -_BIG)
