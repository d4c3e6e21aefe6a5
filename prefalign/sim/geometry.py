"""Oriented-box and road-edge geometry (vectorised, jittable, NaN-free).

Conventions:
  * A 5-DoF box is an array (..., 5) of (x, y, length, width, yaw); corners
    are listed from the front-right corner counter-clockwise.
  * Signed distances are negative inside / when overlapping.
  * ``EXTREMELY_LARGE_DISTANCE`` (1e10, the WOSAC constant) fills distances
    that do not exist (self pairs, invalid objects, empty road graphs).

The object-object distance follows WOSAC's ``compute_distance_to_nearest_
object`` (rounded-corner boxes); the road-edge distance follows WOSAC's
``compute_distance_to_road_edge``. Both are written from the definitions, not
ported.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from prefalign import datatypes

__all__ = [
    'EXTREMELY_LARGE_DISTANCE',
    'CORNER_ROUNDING_FACTOR',
    'Z_STRETCH_FACTOR',
    'CYCLIC_TOLERANCE_M2',
    'box_corners',
    'boxes_from_trajectory',
    'has_overlap',
    'pairwise_overlap',
    'signed_distance_between_polygons',
    'signed_distance_between_boxes',
    'pairwise_signed_distance',
    'distance_to_nearest_object',
    'segment_table',
    'segment_offsets',
    'signed_at',
    'distance_one_point',
    'signed_distance_to_polylines',
    'signed_distance_to_road_edge',
]

# WOSAC fill for distances that do not exist.
EXTREMELY_LARGE_DISTANCE = 1e10
# WOSAC: each box side is pulled in by min(length, width) * factor / 2, the
# distance is taken between these cores and both pull-ins are subtracted, i.e.
# boxes with corners rounded by that radius. 0 = sharp, 1 = capsule.
CORNER_ROUNDING_FACTOR = 0.7
# WOSAC: vertical offsets count 3x when choosing the nearest road-edge
# segment, so that an overpass above (or road below) is not picked.
Z_STRETCH_FACTOR = 3.0
# WOSAC: a polyline whose end is within 1 m (squared distance < 1 m^2, in 3-D)
# of its start is a closed loop.
CYCLIC_TOLERANCE_M2 = 1.0

_TINY = 1e-12


def _cross(ax, ay, bx, by):
  return ax * by - ay * bx


def _safe_norm(v: jax.Array, axis: int = -1) -> jax.Array:
  """Euclidean norm with a finite gradient at zero."""
  sq = jnp.sum(v * v, axis=axis)
  safe = jnp.where(sq > _TINY, sq, 1.0)
  return jnp.where(sq > _TINY, jnp.sqrt(safe), 0.0)


def _project(axes: jax.Array, points: jax.Array) -> jax.Array:
  """(..., K, 2) axes x (..., M, 2) points -> (..., K, M) dot products.

  Written as multiply-and-sum rather than einsum: a float32 matmul may run
  in TF32 on GPUs (~1e-3 relative error), centimetres at map coordinates.
  """
  return jnp.sum(axes[..., :, None, :] * points[..., None, :, :], axis=-1)


# Defined beside the datatypes (Trajectory.bbox_corners), which must not
# import this module: one implementation, both names.
box_corners = datatypes.box_corners


def boxes_from_trajectory(traj: datatypes.Trajectory) -> jax.Array:
  """(x, y, length, width, yaw) stacked on a new last axis: (..., 5)."""
  return traj.stack_fields(('x', 'y', 'length', 'width', 'yaw'))


def _corners5(box: jax.Array) -> jax.Array:
  return box_corners(box[..., 0], box[..., 1], box[..., 2], box[..., 3],
                     box[..., 4])


@jax.named_scope('geometry.has_overlap')
def has_overlap(box_a: jax.Array, box_b: jax.Array) -> jax.Array:
  """Separating-axis test between 5-DoF boxes (Waymax ``overlap`` rule).

  Both boxes' corners are projected on the two axes of each box; the boxes
  overlap only if the projections overlap by a strictly positive amount on
  all four axes, so touching boxes do not overlap.

  Args:
    box_a, box_b: (..., 5) broadcastable boxes.

  Returns:
    bool (...).
  """
  ca, cb = _corners5(box_a), _corners5(box_b)
  ca, cb = jnp.broadcast_arrays(ca, cb)
  ya, yb = jnp.broadcast_arrays(box_a[..., 4], box_b[..., 4])
  cos_a, sin_a = jnp.cos(ya), jnp.sin(ya)
  cos_b, sin_b = jnp.cos(yb), jnp.sin(yb)
  # (..., 4, 2): the longitudinal and lateral axis of each box. The lateral
  # axis is (-sin, cos) rather than the heading + pi/2, whose rounded cosine
  # would make side-by-side touching boxes overlap by ~1e-8.
  axes = jnp.stack([
      jnp.stack([cos_a, sin_a], -1), jnp.stack([-sin_a, cos_a], -1),
      jnp.stack([cos_b, sin_b], -1), jnp.stack([-sin_b, cos_b], -1)],
                   axis=-2)
  # (..., 4 axes, 4 corners)
  pa = _project(axes, ca)
  pb = _project(axes, cb)
  overlap = (jnp.minimum(pa.max(-1), pb.max(-1)) -
             jnp.maximum(pa.min(-1), pb.min(-1)))
  return jnp.all(overlap > 0, axis=-1)


@jax.named_scope('geometry.pairwise_overlap')
def pairwise_overlap(traj: datatypes.Trajectory) -> jax.Array:
  """Which pairs of objects overlap at one step.

  Args:
    traj: Trajectory whose fields have shape (..., num_objects) (one step).

  Returns:
    bool (..., num_objects, num_objects); False on the diagonal and for pairs
    with an invalid object.
  """
  boxes = boxes_from_trajectory(traj)
  ov = has_overlap(boxes[..., :, None, :], boxes[..., None, :, :])
  n = boxes.shape[-2]
  pair_valid = traj.valid[..., :, None] & traj.valid[..., None, :]
  return ov & pair_valid & ~jnp.eye(n, dtype=bool)


def _edge_normals(poly: jax.Array):
  """Outward unit normals of a counter-clockwise polygon (..., K, 2)."""
  edges = jnp.roll(poly, -1, axis=-2) - poly
  length = _safe_norm(edges)
  ok = length > 1e-6
  inv = jnp.where(ok, 1.0 / jnp.where(ok, length, 1.0), 0.0)
  normals = jnp.stack([edges[..., 1], -edges[..., 0]], axis=-1) * inv[..., None]
  return normals, ok


def _point_segment_distance(p: jax.Array, a: jax.Array,
                            b: jax.Array) -> jax.Array:
  """Distance from points p to segments [a, b]; all (..., 2)."""
  ab = b - a
  ap = p - a
  den = jnp.sum(ab * ab, -1)
  t = jnp.where(den > _TINY, jnp.sum(ap * ab, -1) / jnp.where(
      den > _TINY, den, 1.0), 0.0)
  t = jnp.clip(t, 0.0, 1.0)
  return _safe_norm(ap - ab * t[..., None])


def _polygon_gap(poly_p: jax.Array, poly_e: jax.Array) -> jax.Array:
  """Min distance from the vertices of poly_p to the edges of poly_e."""
  a = poly_e[..., None, :, :]  # (..., 1, M, 2) edge starts
  b = jnp.roll(poly_e, -1, axis=-2)[..., None, :, :]
  p = poly_p[..., :, None, :]  # (..., K, 1, 2)
  return _point_segment_distance(p, a, b).min(axis=(-2, -1))


@jax.named_scope('geometry.signed_distance_between_polygons')
def signed_distance_between_polygons(poly_a: jax.Array,
                                     poly_b: jax.Array) -> jax.Array:
  """Exact signed distance between convex counter-clockwise polygons.

  The signed distance is that of the origin to the Minkowski difference
  M = A - B (negative when the origin is inside, i.e. when they overlap).
  The support function of M along a unit n is max_a n.a - min_b n.b, and M's
  edge normals are A's normals and B's normals negated, so:
    * penetration depth = min over those normals of the support (> 0 iff the
      interiors overlap, by the separating-axis theorem);
    * otherwise the distance is attained between a vertex of one polygon and
      an edge of the other, so it is the min of those point-segment
      distances (the segments a - b they span lie inside M and include M's
      boundary edges).
  Zero-length edges are skipped, so degenerate boxes (segments) work.

  Args:
    poly_a: (..., K, 2) vertices, counter-clockwise.
    poly_b: (..., M, 2) vertices, counter-clockwise (batch-broadcastable).

  Returns:
    float32 (...).
  """
  na, oka = _edge_normals(poly_a)
  nb, okb = _edge_normals(poly_b)
  # Projections (..., normals, vertices).
  a_on_na = _project(na, poly_a)
  b_on_na = _project(na, poly_b)
  a_on_nb = _project(nb, poly_a)
  b_on_nb = _project(nb, poly_b)
  sup_a = a_on_na.max(-1) - b_on_na.min(-1)
  sup_b = b_on_nb.max(-1) - a_on_nb.min(-1)
  big = EXTREMELY_LARGE_DISTANCE
  sup_a = jnp.where(oka, sup_a, big)
  sup_b = jnp.where(okb, sup_b, big)
  depth = jnp.minimum(sup_a.min(-1), sup_b.min(-1))
  # Two points (or collinear segments) have no usable normal: M has no
  # interior, so they never overlap.
  depth = jnp.where(oka.any(-1) | okb.any(-1), depth, 0.0)
  gap = jnp.minimum(_polygon_gap(poly_a, poly_b), _polygon_gap(poly_b, poly_a))
  return jnp.where(depth > 0, -depth, gap)


def _shrink(box: jax.Array, factor: float):
  """Core box and pull-in radius of WOSAC's rounded-corner boxes."""
  radius = jnp.minimum(box[..., 2], box[..., 3]) * factor / 2
  core = jnp.concatenate([
      box[..., :2],
      box[..., 2:3] - 2 * radius[..., None],
      box[..., 3:4] - 2 * radius[..., None],
      box[..., 4:5],
  ], axis=-1)
  return core, radius


def _rect_signed_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """Exact signed distance between rectangles (..., 5), closed form.

  Rectangles are the case ``signed_distance_between_polygons`` handles in
  general, in a few dozen flops instead of a few hundred:
    * the penetration depth is the least overlap of the projections on the
      four edge normals, i.e. the two axes of each rectangle (the normals of
      the Minkowski difference), each a closed form in the half sizes;
    * separated, the distance is attained at a vertex of one rectangle, so it
      is the least distance of the 8 vertices to the other (solid)
      rectangle, a clamp in that rectangle's frame.
  Degenerate (zero-size) rectangles are handled (segments, points).
  """
  ca, sa = jnp.cos(a[..., 4]), jnp.sin(a[..., 4])
  cb, sb = jnp.cos(b[..., 4]), jnp.sin(b[..., 4])
  ha = (a[..., 2] / 2, a[..., 3] / 2)
  hb = (b[..., 2] / 2, b[..., 3] / 2)
  dx, dy = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
  # Axes: a's length and width directions, then b's.
  ax = ((ca, sa), (-sa, ca))
  bx = ((cb, sb), (-sb, cb))
  # |cos| of the angles between a's and b's axes.
  c11 = jnp.abs(ca * cb + sa * sb)
  c12 = jnp.abs(-ca * sb + sa * cb)
  overlap = jnp.stack([
      ha[0] + hb[0] * c11 + hb[1] * c12 - jnp.abs(dx * ax[0][0] +
                                                  dy * ax[0][1]),
      ha[1] + hb[0] * c12 + hb[1] * c11 - jnp.abs(dx * ax[1][0] +
                                                  dy * ax[1][1]),
      hb[0] + ha[0] * c11 + ha[1] * c12 - jnp.abs(dx * bx[0][0] +
                                                  dy * bx[0][1]),
      hb[1] + ha[0] * c12 + ha[1] * c11 - jnp.abs(dx * bx[1][0] +
                                                  dy * bx[1][1]),
  ], -1)
  depth = overlap.min(-1)
  signs = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])

  def vertices_to(rect_h, rect_axes, verts_h, verts_axes, ox, oy):
    # Vertices of the other rectangle, centred at (ox, oy) relative to this
    # one, in this one's frame; then the clamp distance.
    vx = (ox[..., None] + signs[:, 0] * verts_h[0][..., None] *
          verts_axes[0][0][..., None] + signs[:, 1] * verts_h[1][..., None] *
          verts_axes[1][0][..., None])
    vy = (oy[..., None] + signs[:, 0] * verts_h[0][..., None] *
          verts_axes[0][1][..., None] + signs[:, 1] * verts_h[1][..., None] *
          verts_axes[1][1][..., None])
    u = jnp.abs(vx * rect_axes[0][0][..., None] +
                vy * rect_axes[0][1][..., None]) - rect_h[0][..., None]
    v = jnp.abs(vx * rect_axes[1][0][..., None] +
                vy * rect_axes[1][1][..., None]) - rect_h[1][..., None]
    u, v = jnp.maximum(u, 0.0), jnp.maximum(v, 0.0)
    return _safe_norm(jnp.stack([u, v], -1)).min(-1)

  gap = jnp.minimum(vertices_to(ha, ax, hb, bx, dx, dy),
                    vertices_to(hb, bx, ha, ax, -dx, -dy))
  return jnp.where(depth > 0, -depth, gap)


@jax.named_scope('geometry.signed_distance_between_boxes')
def signed_distance_between_boxes(
    box_a: jax.Array,
    box_b: jax.Array,
    corner_rounding_factor: float = 0.0,
) -> jax.Array:
  """Signed distance between (optionally rounded-corner) 5-DoF boxes.

  With ``corner_rounding_factor`` r > 0 each box is the set of points within
  rho = min(length, width) * r / 2 of its core, the box shrunk by rho on every
  side (WOSAC uses r = ``CORNER_ROUNDING_FACTOR``); the distance is the core
  distance minus both radii.

  Args:
    box_a, box_b: (..., 5) broadcastable boxes.
    corner_rounding_factor: r in [0, 1] (static).

  Returns:
    float32 (...), negative when overlapping.
  """
  if corner_rounding_factor:
    core_a, ra = _shrink(box_a, corner_rounding_factor)
    core_b, rb = _shrink(box_b, corner_rounding_factor)
  else:
    core_a, core_b, ra, rb = box_a, box_b, 0.0, 0.0
  core_a, core_b = jnp.broadcast_arrays(core_a, core_b)
  d = _rect_signed_distance(core_a, core_b)
  return d - ra - rb


@jax.named_scope('geometry.pairwise_signed_distance')
def pairwise_signed_distance(
    traj: datatypes.Trajectory,
    corner_rounding_factor: float = CORNER_ROUNDING_FACTOR,
) -> jax.Array:
  """Signed distances between all pairs of objects at one step.

  Args:
    traj: Trajectory whose fields have shape (..., num_objects) (one step).
    corner_rounding_factor: see ``signed_distance_between_boxes``.

  Returns:
    float32 (..., num_objects, num_objects); ``EXTREMELY_LARGE_DISTANCE`` on
    the diagonal and for pairs with an invalid object.
  """
  boxes = boxes_from_trajectory(traj)
  d = signed_distance_between_boxes(boxes[..., :, None, :],
                                    boxes[..., None, :, :],
                                    corner_rounding_factor)
  n = boxes.shape[-2]
  keep = (traj.valid[..., :, None] & traj.valid[..., None, :] &
          ~jnp.eye(n, dtype=bool))
  return jnp.where(keep, d, EXTREMELY_LARGE_DISTANCE)


@jax.named_scope('geometry.distance_to_nearest_object')
def distance_to_nearest_object(
    traj: datatypes.Trajectory,
    corner_rounding_factor: float = CORNER_ROUNDING_FACTOR,
) -> jax.Array:
  """WOSAC distance to the nearest other valid object.

  Args:
    traj: Trajectory (..., num_objects, num_timesteps).
    corner_rounding_factor: see ``signed_distance_between_boxes``.

  Returns:
    float32 (..., num_objects, num_timesteps); ``EXTREMELY_LARGE_DISTANCE``
    for invalid objects and when no other object is valid. Memory is
    O(num_timesteps * num_objects^2 * 32) floats; ``lax.map`` over time in the
    caller if that is too much.
  """
  by_step = jax.tree.map(lambda a: jnp.swapaxes(a, -1, -2), traj)
  d = pairwise_signed_distance(by_step, corner_rounding_factor)
  return jnp.swapaxes(d.min(axis=-1), -1, -2)


# ---------------------------------------------------------------------------
# Road edges.


def segment_table(roadgraph: datatypes.RoadgraphPoints,
                   mask: jax.Array,
                   wrap_all_closed: bool = False) -> dict[str, jax.Array]:
  """Per-segment data of one (unbatched) road graph; arrays (S,), S = P - 1.

  Segment i joins point i to point i + 1 when both are valid, selected by
  ``mask`` and carry the same id. Runs of joined points are polylines; the
  prior/next segment of a polyline's first/last segment wraps around when the
  polyline is closed (end within ``CYCLIC_TOLERANCE_M2`` of the start) and,
  unless ``wrap_all_closed``, it is one of the longest polylines: the official
  code pads polylines to a common length, which hides the wrap of every
  shorter closed polyline, and this default reproduces it.
  """
  p = roadgraph.num_points
  xyz = roadgraph.xyz
  ok = roadgraph.valid & mask
  link = ok[:-1] & ok[1:] & (roadgraph.ids[:-1] == roadgraph.ids[1:])
  idx = jnp.arange(p)
  starts_run = jnp.concatenate([jnp.array([True]), ~link])
  ends_run = jnp.concatenate([~link, jnp.array([True])])
  first_pt = jax.lax.cummax(jnp.where(starts_run, idx, 0))
  last_pt = jax.lax.cummin(jnp.where(ends_run, idx, p - 1), reverse=True)
  seg = idx[:-1]
  s, e = first_pt[:-1], last_pt[:-1]
  gap = xyz[e] - xyz[s]
  cyclic = jnp.sum(gap * gap, -1) < CYCLIC_TOLERANCE_M2
  if not wrap_all_closed:
    run_len = e - s + 1
    cyclic &= run_len == jnp.max(jnp.where(link, run_len, 0))
  has_prior = link & ((seg > s) | cyclic)
  has_next = link & ((seg < e - 1) | cyclic)
  prior = jnp.where(seg > s, seg - 1, e - 1)
  nxt = jnp.where(seg < e - 1, seg + 1, s)
  start = xyz[:-1]
  vec = xyz[1:] - xyz[:-1]
  # Left turns (counter-clockwise) make the drivable side locally convex.
  convex_before = _cross(vec[prior, 0], vec[prior, 1], vec[:, 0],
                         vec[:, 1]) > 0
  convex_after = _cross(vec[:, 0], vec[:, 1], vec[nxt, 0], vec[nxt, 1]) > 0
  return dict(start=start, vec=vec, valid=link, has_prior=has_prior,
              has_next=has_next, prior=prior, next=nxt,
              convex_before=convex_before, convex_after=convex_after)


def _side(q: jax.Array, start: jax.Array, vec: jax.Array) -> jax.Array:
  """-1 left of the segment's line (drivable side), +1 right, 0 on it."""
  d = q[..., :2] - start[..., :2]
  return jnp.sign(_cross(d[..., 0], d[..., 1], vec[..., 0], vec[..., 1]))


def segment_offsets(q: jax.Array, start: jax.Array, vec: jax.Array):
  """(rel, off) of points q (..., 3) to segments (..., 3), WOSAC style.

  ``rel`` is the 2-D projection parameter; ``off`` the 3-D offset from the
  segment point at the clipped ``rel`` to q.
  """
  d = q - start
  len2 = vec[..., 0]**2 + vec[..., 1]**2
  rel = jnp.where(len2 > 0,
                  (d[..., 0] * vec[..., 0] + d[..., 1] * vec[..., 1]) /
                  jnp.where(len2 > 0, len2, 1.0), 0.0)
  off = d - vec * jnp.clip(rel, 0.0, 1.0)[..., None]
  return rel, off


def signed_at(q: jax.Array, i: jax.Array, table: dict[str, jax.Array]
               ) -> jax.Array:
  """Signed 2-D distance of q (3,) to road-edge segment ``i`` (the nearest)."""
  start, vec = table['start'], table['vec']
  rel_i, off = segment_offsets(q, start[i], vec[i])
  n = _side(q, start[i], vec[i])
  j, k = table['prior'][i], table['next'][i]
  n_prior = _side(q, start[j], vec[j])
  n_next = _side(q, start[k], vec[k])
  # Past a joint, the point is off-road if it is off-road for either segment
  # at a convex joint, and only if it is for both at a concave one.
  before = jnp.where(table['convex_before'][i], jnp.maximum(n, n_prior),
                     jnp.minimum(n, n_prior))
  after = jnp.where(table['convex_after'][i], jnp.maximum(n, n_next),
                    jnp.minimum(n, n_next))
  sign = jnp.where((rel_i < 0) & table['has_prior'][i], before,
                   jnp.where((rel_i > 1) & table['has_next'][i], after, n))
  return sign * _safe_norm(off[..., :2])


def distance_one_point(q: jax.Array, table: dict[str, jax.Array],
                        z_stretch: float) -> jax.Array:
  """Signed 2-D distance of one query point (3,) to the road edges."""
  _, off = segment_offsets(q, table['start'], table['vec'])
  # Squared distances: same argmin, no sqrt over all segments.
  dist3 = off[:, 0]**2 + off[:, 1]**2 + (z_stretch * off[:, 2])**2
  dist3 = jnp.where(table['valid'], dist3, jnp.inf)
  return signed_at(q, jnp.argmin(dist3), table)


@jax.named_scope('geometry.signed_distance_to_polylines')
def signed_distance_to_polylines(
    points: jax.Array,
    roadgraph: datatypes.RoadgraphPoints,
    mask: jax.Array | None = None,
    z_stretch: float = Z_STRETCH_FACTOR,
    empty_value: float = -EXTREMELY_LARGE_DISTANCE,
    query_chunk_size: int = 256,
    wrap_all_closed: bool = False,
) -> jax.Array:
  """WOSAC signed distance from points to road-edge polylines.

  Road edges are oriented with the drivable area on their left, so on-road
  distances are negative. For each point:
    1. the nearest segment is the one at the least 3-D distance with
       vertical offsets multiplied by ``z_stretch`` (3 in WOSAC), measured at
       the point's 2-D projection onto the segment;
    2. the magnitude is the 2-D distance to that segment;
    3. the sign is the side of the segment (2-D cross product), except when
       the projection falls before the segment's start (after its end) and
       the polyline continues there: then a locally convex joint (left turn)
       takes the off-road side of either segment and a concave one the
       on-road side of either. Closed polylines wrap around.

  This matches WOSAC's ``_compute_signed_distance_to_polylines``, including
  its handling of closed polylines: padding polylines to a common length, it
  wraps a closed polyline only if it is one of the longest
  (``wrap_all_closed=True`` wraps every closed polyline, the geometrically
  consistent rule). WOSAC raises on a map with no road edges; here such
  points get ``empty_value``.

  Complexity: O(Q * S) time, S = P - 1 segments. Queries are processed in
  chunks of ``query_chunk_size`` with ``lax.map``, so the peak temporary
  memory is O(query_chunk_size * S) per batch element (about 30 MB per
  temporary for 256 queries and 30000 points), never O(Q * S).

  Args:
    points: (..., Q, 3) query points; the batch prefix must equal the road
      graph's.
    roadgraph: RoadgraphPoints (..., P).
    mask: bool (..., P), which points are road edges; defaults to
      ``roadgraph.is_road_edge``.
    z_stretch: vertical weight for the nearest-segment search (static).
    empty_value: returned when there is no road-edge segment (static).
    query_chunk_size: queries per ``lax.map`` step (static).
    wrap_all_closed: see above (static).

  Returns:
    float32 (..., Q).
  """
  if mask is None:
    mask = roadgraph.is_road_edge
  batch = roadgraph.shape[:-1]
  if points.shape[:-2] != batch:
    raise ValueError(f'points batch {points.shape[:-2]} does not match the '
                     f'road graph batch {batch}.')
  num_q = points.shape[-2]
  if roadgraph.num_points < 2 or num_q == 0:
    return jnp.full(points.shape[:-1], empty_value, jnp.float32)

  def single(pts, rg, m):
    table = segment_table(rg, m, wrap_all_closed)
    fn = lambda q: distance_one_point(q, table, z_stretch)
    out = jax.lax.map(fn, pts, batch_size=min(query_chunk_size, num_q))
    return jnp.where(jnp.any(table['valid']), out, empty_value)

  fn = single
  for _ in batch:
    fn = jax.vmap(fn)
  return fn(points.astype(jnp.float32), roadgraph, mask)


@jax.named_scope('geometry.signed_distance_to_road_edge')
def signed_distance_to_road_edge(
    traj: datatypes.Trajectory,
    roadgraph: datatypes.RoadgraphPoints,
    mask: jax.Array | None = None,
    **kwargs,
) -> jax.Array:
  """WOSAC distance to road edge: the most off-road of the 4 bottom corners.

  Args:
    traj: Trajectory whose fields have shape batch + rest, where batch is the
      road graph's batch prefix (e.g. (..., num_objects, num_timesteps)).
    roadgraph: RoadgraphPoints (..., P).
    mask: bool (..., P) road-edge points; defaults to
      ``roadgraph.is_road_edge``.
    **kwargs: passed to ``signed_distance_to_polylines``.

  Returns:
    float32 of the trajectory's shape; ``-EXTREMELY_LARGE_DISTANCE`` where the
    object is invalid (as WOSAC), so that it never counts as off-road.
  """
  batch = roadgraph.shape[:-1]
  shape = traj.shape
  corners = box_corners(traj.x, traj.y, traj.length, traj.width, traj.yaw)
  # Corners sit on the ground: the bottom face of the 3-D box.
  z = jnp.broadcast_to((traj.z - traj.height / 2)[..., None],
                       corners.shape[:-1])
  pts = jnp.concatenate([corners, z[..., None]], axis=-1)
  pts = pts.reshape(batch + (math.prod(shape[len(batch):]) * 4, 3))
  d = signed_distance_to_polylines(pts, roadgraph, mask, **kwargs)
  d = d.reshape(shape + (4,)).max(axis=-1)
  return jnp.where(traj.valid, d, -EXTREMELY_LARGE_DISTANCE)
