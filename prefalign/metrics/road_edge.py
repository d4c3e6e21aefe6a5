"""The certified road-edge search of ``features.distance_to_road_edge``.

WOSAC's road-edge distance of a box corner is the signed distance to the
nearest road-edge segment (nearest in a space with z stretched). Searching
every segment for every corner (O(queries x segments)) is what makes the
metric and the preference features slow on real maps: 64 rollouts x 128
agents x 80 steps x 4 corners against ~4,000-8,000 half-metre segments.

The search here is exact, and its cost follows the number of corners, not
how far the rollouts spread:

1. **Chunks.** Road-edge segments, sorted along a Z-order curve of their
   midpoints (neighbours in space are neighbours in the order), are cut
   into chunks of ``chunk`` segments, each with a bounding box (stretched
   space).
2. **Grids.** A grid of coarse cells covers the corners (it stretches
   with them, up to ``margin`` past the road edges). Each coarse cell lists
   the ``cell_groups`` groups of ``group`` neighbouring chunks of least gap
   to it; each of its ``refine`` x ``refine`` fine cells lists the
   ``fine_chunks`` chunks of least gap among those. With each list goes a
   threshold: the least gap of what it left out. Selections run per cell,
   not per corner.
3. **Certificate.** A corner ``q`` searches the segments its fine cell
   lists; if its best distance ``d`` is below the cell's threshold minus
   ``q``'s distance to the cell, no segment left out can be nearer (by the
   triangle inequality), so ``d`` is exact. A corner that fails searches
   its coarse cell's list the same way, and one that fails that too every
   segment. Each search runs in slices, for as many slices as there are
   such corners (none usually). The answer is always exact.

Ties between segments at the same distance go to the lowest index, as in
the brute-force search, so both give identical distances.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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
    chunk: neighbouring segments per bounding box.
    group: neighbouring chunks per box the coarse cells choose among.
    grid: coarse cells per side of the grid over the corners (0: from the
      number of boxes, 16 to 64).
    refine: fine cells per side of a coarse cell.
    cell_groups: groups listed per coarse cell (of the whole map's).
    fine_chunks: chunks listed per fine cell (of its coarse cell's).
    margin: how far past the road edges' bounding box the grid reaches (m).
    slice: corners per slice of the first search (fine cells).
    list_slice: corners per slice of the search over a coarse cell's list.
    redo_slice: corners per slice of the search over every segment.
  """
  chunk: int = 4
  group: int = 4
  grid: int = 0
  refine: int = 4
  cell_groups: int = 16
  fine_chunks: int = 16
  margin: float = 50.0
  slice: int = 16384
  list_slice: int = 2048
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


def _chunks(s: EdgeSearch, size: int, multiple: int):
  """Segments cut into spatially compact chunks of ``size``.

  Valid segments are sorted along a Z-order curve of their midpoints, so a
  chunk holds neighbouring segments even across the ends of polylines.

  Returns ``(members (C, size) segment indices, member_ok (C, size),
  lo (C, 3), hi (C, 3))``, C a multiple of ``multiple``: boxes in
  stretched space, empty (lo = +inf, hi = -inf) for chunks without a
  segment.
  """
  valid = s.table['valid']
  n = valid.shape[0]
  num = -(-n // (size * multiple)) * multiple
  pad = num * size - n
  mid = jnp.where(valid[:, None], 0.5 * (s.lo + s.hi)[:, :2], _INF)
  order = jnp.argsort(_morton(mid), stable=True)
  members = jnp.pad(order, (0, pad)).reshape(num, size)
  ok = jnp.pad(valid[order], (0, pad)).reshape(num, size)
  lo = jnp.where(ok[..., None], s.lo[members], _INF).min(axis=1)
  hi = jnp.where(ok[..., None], s.hi[members], -_INF).max(axis=1)
  return members, ok, lo, hi


def _grid(xy: jax.Array, valid: jax.Array, cells: int, map_lo: jax.Array,
          map_hi: jax.Array, margin: float):
  """Origin and cell size (2,) of a ``cells`` x ``cells`` grid.

  The grid covers the valid ``xy`` (Q, 2) points' bounding box clipped to
  the map's (``map_lo``, ``map_hi``) grown by ``margin``: a point parked far
  from the map (an object absent from the log) neither stretches the cells
  nor is lost (it falls in a border cell, at its distance from it).
  """
  any_valid = jnp.any(valid)
  lo = jnp.where(valid[:, None], xy, _INF).min(0)
  hi = jnp.where(valid[:, None], xy, -_INF).max(0)
  clip = lambda v: jnp.clip(v, map_lo - margin, map_hi + margin)
  origin = jnp.where(any_valid, clip(lo), 0.0)
  size = jnp.maximum((jnp.where(any_valid, clip(hi), 0.0) - origin) / cells,
                     1e-3)
  return origin, size


def _auto_grid(boxes: int) -> int:
  """Coarse cells per side for ``boxes`` boxes: 16 to 64, growing with the
  square root of their number (the grid's cost is per cell, the search's
  per corner)."""
  side = int(np.sqrt(max(boxes, 1)) / 8)
  return int(min(64, max(16, 2 ** int(np.round(np.log2(max(side, 1)))))))


def _cell_of(xy: jax.Array, origin: jax.Array, size: jax.Array, cells: int):
  """(...) row-major cell index of (..., 2) points, clamped to the grid."""
  ij = jnp.clip(jnp.floor((xy - origin) / size).astype(jnp.int32), 0,
                cells - 1)
  return ij[..., 0] * cells + ij[..., 1]


def _cell_boxes(origin: jax.Array, size: jax.Array, cells: int):
  """(cells**2, 2) lower and upper corners of the cells, row-major."""
  edges = origin + size * jnp.arange(cells)[:, None]  # (cells, 2)
  lo = jnp.stack(jnp.broadcast_arrays(edges[:, None, 0], edges[None, :, 1]),
                 -1).reshape(-1, 2)
  return lo, lo + size


def _nearest_chunks(lo: jax.Array, hi: jax.Array, chunks: jax.Array,
                    c_lo: jax.Array, c_hi: jax.Array, k: int):
  """Each cell's ``k`` chunks of least 2-D gap among ``chunks``.

  Args:
    lo, hi: (M, 2) cells (columns in z).
    chunks: (M, K) or (K,) chunk indices to choose from.
    c_lo, c_hi: (C, 3) chunk boxes.
    k: static list length.

  Returns:
    ``(listed (M, k), threshold (M,))``: a chunk of ``chunks`` left out is
    at least ``threshold`` from the cell (inf when none is left out).
  """
  chunks = jnp.broadcast_to(chunks, lo.shape[:1] + chunks.shape[-1:])
  if k >= chunks.shape[-1]:
    return chunks, jnp.full(lo.shape[:1], _INF)
  lb = _nearest.box_gap(lo[:, None], hi[:, None], c_lo[chunks][..., :2],
                        c_hi[chunks][..., :2])
  pos, threshold = _nearest.top_k_lower(lb, k)
  return jnp.take_along_axis(chunks, pos, axis=-1), threshold


def _nearest_listed(q: jax.Array, seg: jax.Array, seg_ok: jax.Array,
                    s: EdgeSearch):
  """(M, 3) corners, (M, K) candidate segments -> each corner's nearest
  candidate (lowest index on ties) and its stretched distance (M,)."""
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
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Signed distance of every corner to the road edges, exactly.

  Args:
    pts: (..., 4, 3) box corners (unstretched), e.g. (B, E, T, 4, 3).
    valid: (...) which boxes count.
    s: the map's ``EdgeSearch``.
    config: static sizes.

  Returns:
    ``(signed (..., 4), coarse, every)``: WOSAC's signed 2-D distance of
    each corner (0 where not valid; ``-1e10`` on a map without road edges);
    how many corners their fine cell's certificate left, searched again
    over their coarse cell's list (int32); and how many of those that
    certificate left too, searched over every segment (int32).
  """
  shape = valid.shape
  q = pts.reshape(-1, 3)
  ok = jnp.repeat(valid.reshape(-1), 4)
  table = s.table
  members, member_ok, c_lo, c_hi = _chunks(s, config.chunk, config.group)

  # Two grids over the corners (module docstring, step 2).
  has_chunk = jnp.any(member_ok, axis=1)[:, None]
  map_lo = jnp.where(has_chunk, c_lo[:, :2], _INF).min(0)
  map_hi = jnp.where(has_chunk, c_hi[:, :2], -_INF).max(0)
  coarse = config.grid or _auto_grid(q.shape[0] // 4)
  fine = coarse * config.refine
  origin, size = _grid(q[:, :2], ok, coarse, map_lo, map_hi, config.margin)
  coarse_lo, coarse_hi = _cell_boxes(origin, size, coarse)
  # Coarse cells choose among groups of ``group`` neighbouring chunks (a
  # group's box bounds its chunks'): a selection over fewer, larger boxes.
  grouped = jnp.arange(members.shape[0]).reshape(-1, config.group)
  picked, coarse_thr = _nearest_chunks(
      coarse_lo, coarse_hi, jnp.arange(grouped.shape[0]),
      c_lo[grouped].min(1), c_hi[grouped].max(1), config.cell_groups)
  coarse_list = grouped[picked].reshape(picked.shape[0], -1)
  fine_lo, fine_hi = _cell_boxes(origin, size / config.refine, fine)
  parent = _cell_of(0.5 * (fine_lo + fine_hi), origin, size, coarse)
  fine_list, fine_thr = _nearest_chunks(
      fine_lo, fine_hi, coarse_list[parent], c_lo, c_hi, config.fine_chunks)
  # A chunk outside the coarse list is at least the coarse threshold from
  # the coarse cell, so from each of its fine cells.
  fine_thr = jnp.minimum(fine_thr, coarse_thr[parent])
  signed_of = jax.vmap(lambda p, i: geometry.signed_at(p, i, table))

  def search(at, cell, lists, thresholds, lo, hi):
    """Corners ``at`` against the segments their cells list; unsure
    unless nearer than the cell's threshold less their gap to the cell."""
    c = cell[at]
    seg = members[lists[c]].reshape(at.shape[0], -1)
    seg_ok = member_ok[lists[c]].reshape(seg.shape)
    near, dist = _nearest_listed(q[at], seg, seg_ok, s)
    xy = q[at, :2]
    to_cell = _nearest.box_gap(xy, xy, lo[c], hi[c])
    unsure = ok[at] & ~(dist < thresholds[c] - to_cell - _MARGIN)
    return signed_of(q[at], near), unsure

  def whole_map(at):
    d = jax.vmap(lambda p: geometry.distance_one_point(
        p, table, s.z_stretch))(q[at])
    return d, jnp.zeros(at.shape, bool)

  fine_cell = _cell_of(q[:, :2], origin, size / config.refine, fine)
  coarse_cell = _cell_of(q[:, :2], origin, size, coarse)
  # The valid corners in slices, so that the candidates gathered stay small.
  signed, unsure = _search_again(
      jnp.zeros(ok.shape, jnp.float32), ok,
      lambda at: search(at, fine_cell, fine_list, fine_thr, fine_lo,
                        fine_hi), config.slice)
  signed, still = _search_again(
      signed, unsure, lambda at: search(at, coarse_cell, coarse_list,
                                        coarse_thr, coarse_lo, coarse_hi),
      config.list_slice)
  signed, _ = _search_again(signed, still, whole_map, config.redo_slice)
  signed = jnp.where(jnp.any(table['valid']), signed, -_BIG)
  return (signed.reshape(shape + (4,)), jnp.sum(unsure, dtype=jnp.int32),
          jnp.sum(still, dtype=jnp.int32))


def _search_again(signed: jax.Array, unsure: jax.Array, search,
                  size: int) -> tuple[jax.Array, jax.Array]:
  """``signed`` with the ``unsure`` entries searched (again).

  ``search(at (size,) indices) -> (signed (size,), still unsure (size,))``
  runs on ``size`` of them at a time, for as many slices as there are (none
  when nothing is unsure). Returns the updated ``signed`` and which entries
  are still unsure.
  """
  n = unsure.shape[0]
  size = min(size, n)
  slices = -(-n // size)
  num = jnp.sum(unsure, dtype=jnp.int32)
  (idx,) = jnp.nonzero(unsure, size=slices * size, fill_value=0)

  def body(i, carry):
    out, still = carry
    at = jax.lax.dynamic_slice(idx, (i * size,), (size,))
    live = i * size + jnp.arange(size) < num
    d, again = search(at)
    # Dead slots point past the end and are dropped (never a duplicate
    # write to a live index).
    at = jnp.where(live, at, n)
    return (out.at[at].set(d, mode='drop'),
            still.at[at].set(again, mode='drop'))

  return jax.lax.fori_loop(0, (num + size - 1) // size, body,
                           (signed, jnp.zeros_like(unsure)))
