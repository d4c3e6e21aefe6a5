"""The certified road-edge search of ``features.distance_to_road_edge``.

WOSAC's road-edge distance of a box corner is the signed distance to the
nearest road-edge segment (nearest in a space with z stretched). Searching
every segment for every corner (O(queries x segments)) is what makes the
metric and the preference features slow on real maps: 64 rollouts x 128
agents x 80 steps x 4 corners against ~4,000-8,000 half-metre segments.

The search here is exact and its cost does not depend on how far the
rollouts spread:

1. **Chunks.** Road-edge segments, sorted along a Z-order curve of their
   midpoints (neighbours in space are neighbours in the order), are cut
   into chunks of ``chunk`` segments, each with a bounding box (stretched
   space).
2. **Grid.** A ``grid`` x ``grid`` grid of cells covers the boxes' centres
   (it stretches with them); each cell keeps the ``cell_chunks`` chunks of
   least box gap to it, and the least gap left out as its threshold.
3. **Corners.** The four corners of one box at one step of one rollout
   share the cell of the box's centre; each ranks the cell's chunks by
   their gap to it and searches the segments of the ``corner_chunks``
   nearest.
4. **Certificate.** A corner ``q`` whose best distance ``d`` is below both
   the least gap of a chunk of the cell it left out
   and the cell's threshold minus ``q``'s distance to the cell (a chunk
   outside the cell's list is at least that far from ``q``, by the
   triangle inequality) has found its nearest segment. Every other corner
   is searched again over every segment, in slices, for as many slices as
   there are such corners (none usually): the answer is always exact.

Ties between segments at the same distance go to the lowest index, as in
the brute-force search, so both give identical distances.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from prefalign import datatypes
from prefalign.metrics import _nearest
from prefalign.sim import geometry

__all__ = ['EdgeSearch', 'GridConfig', 'grid_distance']

_BIG = geometry.EXTREMELY_LARGE_DISTANCE
_INF = jnp.inf
# Certificates compare float32 distances computed two ways; a margin keeps
# rounding from certifying a near-tie.
_MARGIN = 1e-3  # m


class GridConfig(NamedTuple):
  """Sizes of the search (static; the result does not depend on them).

  Attributes:
    chunk: consecutive segments per bounding box.
    grid: cells per side of the grid over the queries.
    cell_chunks: chunks listed per cell.
    corner_chunks: chunks searched per corner, the nearest of its cell's.
    redo_slice: corners per slice of the exact re-search.
  """
  chunk: int = 8
  grid: int = 64
  cell_chunks: int = 64
  corner_chunks: int = 8
  redo_slice: int = 256


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


def _morton(xy: jax.Array) -> jax.Array:
  """(S,) Morton (Z-order) codes of (S, 2) points: 16 bits per axis over
  their bounding box (non-finite points last)."""
  ok = jnp.all(jnp.isfinite(xy), -1)
  lo = jnp.where(ok[:, None], xy, _INF).min(0)
  hi = jnp.where(ok[:, None], xy, -_INF).max(0)
  scale = 65535.0 / jnp.maximum(hi - lo, 1e-6)
  cell = jnp.clip((jnp.where(ok[:, None], xy, lo) - lo) * scale, 0, 65535)
  cell = cell.astype(jnp.uint32)

  def spread(v):  # 16 bits to the even bits of 32
    v = (v | (v << 8)) & 0x00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F
    v = (v | (v << 2)) & 0x33333333
    return (v | (v << 1)) & 0x55555555

  code = spread(cell[:, 0]) | (spread(cell[:, 1]) << 1)
  return jnp.where(ok, code, jnp.uint32(0xFFFFFFFF))


def _chunks(s: EdgeSearch, size: int):
  """Segments cut into spatially compact chunks of ``size``.

  Valid segments are sorted along a Z-order curve of their midpoints, so a
  chunk holds neighbouring segments even across the ends of polylines.

  Returns ``(members (C, size) segment indices, member_ok (C, size),
  lo (C, 3), hi (C, 3))``: boxes in stretched space, empty (lo = +inf,
  hi = -inf) for chunks without a segment.
  """
  valid = s.table['valid']
  n = valid.shape[0]
  num = -(-n // size)
  pad = num * size - n
  mid = jnp.where(valid[:, None], 0.5 * (s.lo + s.hi)[:, :2], _INF)
  order = jnp.argsort(_morton(mid), stable=True)
  members = jnp.pad(order, (0, pad)).reshape(num, size)
  ok = jnp.pad(valid[order], (0, pad)).reshape(num, size)
  lo = jnp.where(ok[..., None], s.lo[members], _INF).min(axis=1)
  hi = jnp.where(ok[..., None], s.hi[members], -_INF).max(axis=1)
  return members, ok, lo, hi


def _cells(centre: jax.Array, valid: jax.Array, grid: int):
  """A ``grid`` x ``grid`` grid over the valid ``centre`` (Q, 2) points.

  Returns ``(cell (Q,) index of each point's cell, lo (grid**2, 2),
  hi (grid**2, 2))``.
  """
  any_valid = jnp.any(valid)
  cmin = jnp.where(any_valid, jnp.where(valid[:, None], centre, _INF).min(0),
                   0.0)
  cmax = jnp.where(any_valid, jnp.where(valid[:, None], centre, -_INF).max(0),
                   0.0)
  size = jnp.maximum((cmax - cmin) / grid, 1e-3)
  ij = jnp.clip(jnp.floor((centre - cmin) / size).astype(jnp.int32), 0,
                grid - 1)
  ij = jnp.where(valid[:, None], ij, 0)
  edges = cmin + size * jnp.arange(grid)[:, None]  # (grid, 2)
  lo = jnp.stack(jnp.broadcast_arrays(edges[:, None, 0], edges[None, :, 1]),
                 -1).reshape(-1, 2)
  return ij[:, 0] * grid + ij[:, 1], lo, lo + size


def _nearest_listed(q: jax.Array, seg: jax.Array, seg_ok: jax.Array,
                    s: EdgeSearch):
  """(..., 3) corners, (..., K) candidate segments -> each corner's nearest
  candidate (lowest index on ties) and its stretched distance (...)."""
  table = s.table
  # Same arithmetic as the brute-force search (geometry.distance_one_point).
  _, off = geometry.segment_offsets(q[..., None, :], table['start'][seg],
                                    table['vec'][seg])
  d2 = off[..., 0]**2 + off[..., 1]**2 + (s.z_stretch * off[..., 2])**2
  d2 = jnp.where(seg_ok, d2, _INF)
  best = d2.min(-1)
  big = jnp.iinfo(jnp.int32).max
  nearest = jnp.where(d2 == best[..., None], seg, big).min(-1)
  return jnp.where(jnp.isfinite(best), nearest, 0), jnp.sqrt(best)


def grid_distance(pts: jax.Array, valid: jax.Array, s: EdgeSearch,
                  config: GridConfig = GridConfig()
                  ) -> tuple[jax.Array, jax.Array]:
  """Signed distance of every corner to the road edges, exactly.

  Args:
    pts: (..., 4, 3) box corners (unstretched), e.g. (B, E, T, 4, 3).
    valid: (...) which boxes count.
    s: the map's ``EdgeSearch``.
    config: static sizes.

  Returns:
    ``(signed (..., 4), redone)``: WOSAC's signed 2-D distance of each
    corner (any value where not valid; ``-1e10`` on a map without road
    edges), and how many corners the certificate left to the exact
    re-search (int32 scalar).
  """
  shape = valid.shape
  q = pts.reshape(-1, 4, 3)
  ok = valid.reshape(-1)
  table = s.table
  members, member_ok, c_lo, c_hi = _chunks(s, config.chunk)
  num_chunks = members.shape[0]

  # One cell per box (four corners): the cell of its centre.
  qs = q * s.stretch
  cell, cell_lo, cell_hi = _cells(qs.mean(1)[:, :2], ok, config.grid)

  # Each cell's nearest chunks (2-D gaps: a cell is a column in z).
  lb_cell = _nearest.box_gap(cell_lo[:, None], cell_hi[:, None],
                             c_lo[None, :, :2], c_hi[None, :, :2])
  k_cell = min(config.cell_chunks, num_chunks)
  if k_cell < num_chunks:
    listed, thr_cell = _nearest.top_k_lower(lb_cell, k_cell)
  else:
    listed = jnp.broadcast_to(jnp.arange(num_chunks), lb_cell.shape)
    thr_cell = jnp.full(lb_cell.shape[:1], _INF)

  # Each corner's nearest chunks among its cell's.
  cand = listed[cell][:, None, :]  # (G, 1, k_cell)
  lb_corner = _nearest.box_gap(qs[..., None, :], qs[..., None, :],
                               c_lo[cand], c_hi[cand])  # (G, 4, k_cell)
  k_corner = min(config.corner_chunks, k_cell)
  if k_corner < k_cell:
    pos, thr_corner = _nearest.top_k_lower(lb_corner, k_corner)
    picked = jnp.take_along_axis(cand, pos, axis=-1)  # (G, 4, k_corner)
  else:
    picked = jnp.broadcast_to(cand, lb_corner.shape)
    thr_corner = jnp.full(lb_corner.shape[:-1], _INF)
  seg = members[picked].reshape(picked.shape[:2] + (-1,))
  seg_ok = member_ok[picked].reshape(seg.shape)
  nearest, best = _nearest_listed(q, seg, seg_ok, s)  # (G, 4)

  # The certificate, per corner (module docstring, step 4).
  to_cell = _nearest.box_gap(qs[..., :2], qs[..., :2],
                             cell_lo[cell][:, None], cell_hi[cell][:, None])
  bound = jnp.minimum(thr_corner, thr_cell[cell][:, None] - to_cell)
  unsure = (ok[:, None] & ~(best < bound - _MARGIN)).reshape(-1)

  q_flat = q.reshape(-1, 3)
  signed = jax.vmap(lambda p, i: geometry.signed_at(p, i, table))(
      q_flat, nearest.reshape(-1))
  signed = _redo(signed, unsure, q_flat, s, config.redo_slice)
  signed = jnp.where(jnp.any(table['valid']), signed, -_BIG)
  return signed.reshape(shape + (4,)), jnp.sum(unsure, dtype=jnp.int32)


def _redo(signed: jax.Array, unsure: jax.Array, q: jax.Array, s: EdgeSearch,
          size: int) -> jax.Array:
  """``signed`` with the ``unsure`` queries searched over every segment,
  ``size`` at a time, for as many slices as there are of them."""
  n = unsure.shape[0]
  size = min(size, n)
  slices = -(-n // size)
  num = jnp.sum(unsure, dtype=jnp.int32)
  (idx,) = jnp.nonzero(unsure, size=slices * size, fill_value=0)

  def body(i, out):
    at = jax.lax.dynamic_slice(idx, (i * size,), (size,))
    live = i * size + jnp.arange(size) < num
    d = jax.vmap(lambda p: geometry.distance_one_point(p, s.table,
                                                       s.z_stretch))(q[at])
    # Dead slots point past the end and are dropped (never a duplicate
    # write to a live index).
    return out.at[jnp.where(live, at, n)].set(d, mode='drop')

  return jax.lax.fori_loop(0, (num + size - 1) // size, body, signed)
