"""Tests for prefalign.sim.geometry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.sim import geometry

BIG = geometry.EXTREMELY_LARGE_DISTANCE
EDGE = int(datatypes.MapElementIds.ROAD_EDGE_BOUNDARY)
LANE = int(datatypes.MapElementIds.LANE_SURFACE_STREET)


def box(x, y, length, width, yaw):
  return jnp.array([x, y, length, width, yaw], jnp.float32)


def one_step_traj(boxes, valid=None):
  """Trajectory with fields (N,) from rows (x, y, length, width, yaw)."""
  b = np.asarray(boxes, np.float32)
  n = b.shape[0]
  valid = np.ones(n, bool) if valid is None else np.asarray(valid)
  zeros = jnp.zeros(n, jnp.float32)
  return datatypes.Trajectory(
      x=jnp.asarray(b[:, 0]), y=jnp.asarray(b[:, 1]), z=zeros + 0.8,
      vel_x=zeros, vel_y=zeros, yaw=jnp.asarray(b[:, 4]),
      valid=jnp.asarray(valid), timestamp_micros=jnp.zeros(n, jnp.int32),
      length=jnp.asarray(b[:, 2]), width=jnp.asarray(b[:, 3]),
      height=zeros + 1.6)


def roadgraph(polylines, types=None, pad_to=None):
  """RoadgraphPoints from a list of (K, 2) or (K, 3) point arrays."""
  xs, ids, tps = [], [], []
  for k, pl in enumerate(polylines):
    pl = np.asarray(pl, np.float32)
    if pl.shape[1] == 2:
      pl = np.concatenate([pl, np.zeros((len(pl), 1), np.float32)], 1)
    xs.append(pl)
    ids += [k + 7] * len(pl)
    tps += [EDGE if types is None else types[k]] * len(pl)
  xyz = np.concatenate(xs) if xs else np.zeros((0, 3), np.float32)
  ids, tps = np.array(ids, np.int32), np.array(tps, np.int32)
  valid = np.ones(len(xyz), bool)
  p = len(xyz)
  if pad_to is not None:
    pad = pad_to - p
    xyz = np.concatenate([xyz, -np.ones((pad, 3), np.float32)])
    ids = np.concatenate([ids, -np.ones(pad, np.int32)])
    tps = np.concatenate([tps, -np.ones(pad, np.int32)])
    valid = np.concatenate([valid, np.zeros(pad, bool)])
  d = np.zeros_like(xyz)
  rg = datatypes.RoadgraphPoints(
      x=jnp.asarray(xyz[:, 0]), y=jnp.asarray(xyz[:, 1]),
      z=jnp.asarray(xyz[:, 2]), dir_x=jnp.asarray(d[:, 0]),
      dir_y=jnp.asarray(d[:, 1]), dir_z=jnp.asarray(d[:, 2]),
      types=jnp.asarray(tps), ids=jnp.asarray(ids), valid=jnp.asarray(valid))
  rg.validate()
  return rg


def straight_road(half_width=4.0, length=100.0, spacing=5.0):
  """Road along +x for y in [-hw, hw]; edges drivable-side-left."""
  xs = np.arange(0.0, length + 1e-6, spacing)
  right = np.stack([xs, np.full_like(xs, -half_width)], -1)  # along +x
  left = np.stack([xs[::-1], np.full_like(xs, half_width)], -1)  # along -x
  return roadgraph([right, left], pad_to=len(xs) * 2 + 5)


# Jitted once per shape: much faster than op-by-op dispatch on small CPUs.
_polyline_distance = jax.jit(
    geometry.signed_distance_to_polylines,
    static_argnames=('z_stretch', 'empty_value', 'query_chunk_size',
                     'wrap_all_closed'))
box_distance = jax.jit(geometry.signed_distance_between_boxes,
                       static_argnums=2)
pairwise_distance = jax.jit(geometry.pairwise_signed_distance,
                            static_argnums=1)
nearest_distance = jax.jit(geometry.distance_to_nearest_object,
                           static_argnums=1)


def sdist(points, rg, **kw):
  return np.asarray(_polyline_distance(jnp.asarray(points, jnp.float32), rg,
                                       **kw))


# ----------------------------------------------------------------- boxes


def test_box_corners_order_and_orientation():
  c = geometry.box_corners(1.0, 2.0, 4.0, 2.0, 0.0)
  np.testing.assert_allclose(c, [[3, 1], [3, 3], [-1, 3], [-1, 1]], atol=1e-6)
  c = geometry.box_corners(0.0, 0.0, 4.0, 2.0, np.pi / 2)
  # Front-right of a box facing +y is at +x side, front.
  np.testing.assert_allclose(c, [[1, 2], [-1, 2], [-1, -2], [1, -2]],
                             atol=1e-6)
  rng = np.random.default_rng(0)
  b = rng.uniform([-9, -9, 1, 1, -4], [9, 9, 6, 3, 4], (50, 5))
  c = np.asarray(geometry.box_corners(*[jnp.asarray(b[:, i]) for i in
                                         range(5)]))
  assert c.shape == (50, 4, 2)
  x, y = c[..., 0], c[..., 1]
  area = 0.5 * np.sum(x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y, -1)
  np.testing.assert_allclose(area, b[:, 2] * b[:, 3], rtol=1e-4)  # CCW


@pytest.mark.parametrize('b2,expected', [
    (box(3.0, 0.5, 4, 2, 0.3), True),  # overlapping
    (box(6.0, 0.0, 4, 2, 0.0), False),  # separated
    (box(4.0, 0.0, 4, 2, 0.0), False),  # touching front to back
    (box(0.0, 2.0, 4, 2, 0.0), False),  # touching side to side
    (box(3.9, 0.0, 4, 2, 0.0), True),  # 10 cm of overlap
    # A diamond off the corner: the axis-aligned extents overlap but the
    # box's diagonal separates them.
    (box(2.0 + 1.2, 1.0 + 1.2, 2, 2, np.pi / 4), False),
    (box(2.0 + 0.6, 1.0 + 0.6, 2, 2, np.pi / 4), True),
])
def test_has_overlap(b2, expected):
  b1 = box(0.0, 0.0, 4, 2, 0.0)
  assert bool(geometry.has_overlap(b1, b2)) is expected
  assert bool(geometry.has_overlap(b2, b1)) is expected


def test_pairwise_overlap_masks_self_and_invalid():
  traj = one_step_traj([[0, 0, 4, 2, 0], [1, 0, 4, 2, 0], [2, 0, 4, 2, 0],
                        [20, 0, 4, 2, 0]], valid=[True, True, False, True])
  ov = np.asarray(geometry.pairwise_overlap(traj))
  expected = np.zeros((4, 4), bool)
  expected[0, 1] = expected[1, 0] = True
  np.testing.assert_array_equal(ov, expected)


def _np_polygon_distance(pa, pb, samples=400):
  """Brute force: dense boundary sampling / dense axis sweep (float64)."""
  pa, pb = np.asarray(pa, np.float64), np.asarray(pb, np.float64)

  def boundary(p):
    s = np.linspace(0, 1, samples, endpoint=False)[:, None, None]
    a, b = p, np.roll(p, -1, 0)
    return (a[None] + s * (b - a)[None]).reshape(-1, 2)

  def inside(pt, p):
    e = np.roll(p, -1, 0) - p
    d = pt - p
    return np.all(e[:, 0] * d[:, 1] - e[:, 1] * d[:, 0] >= 0)

  ba, bb = boundary(pa), boundary(pb)
  overlap = (any(inside(q, pb) for q in pa) or any(inside(q, pa) for q in pb)
             or any(inside(q, pb) for q in ba[::7]))
  if not overlap:
    return np.sqrt(((ba[:, None] - bb[None]) ** 2).sum(-1)).min()
  # Penetration depth: smallest translation separating them, swept over
  # directions.
  ang = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
  n = np.stack([np.cos(ang), np.sin(ang)], -1)
  pa_n, pb_n = pa @ n.T, pb @ n.T
  return -(pa_n.max(0) - pb_n.min(0)).min()


def test_signed_distance_known_values():
  b1 = box(0.0, 0.0, 4, 2, 0.0)
  # Separated along x by a 1.5 m gap.
  d = box_distance(b1, box(5.5, 0.3, 4, 2, 0.0))
  np.testing.assert_allclose(d, 1.5, atol=1e-5)
  # Corner to corner: gap vector (1, 1).
  d = box_distance(b1, box(5.0, 3.0, 4, 2, 0.0))
  np.testing.assert_allclose(d, np.sqrt(2.0), atol=1e-5)
  # Overlapping: 0.4 m of penetration along x (smaller than along y).
  d = box_distance(b1, box(3.6, 0.0, 4, 2, 0.0))
  np.testing.assert_allclose(d, -0.4, atol=1e-5)
  # Identical boxes: penetration is the smaller dimension.
  d = box_distance(b1, b1)
  np.testing.assert_allclose(d, -2.0, atol=1e-5)
  # Touching.
  d = box_distance(b1, box(4.0, 0.0, 4, 2, 0.0))
  np.testing.assert_allclose(d, 0.0, atol=1e-5)


def test_signed_distance_rounded_corners():
  b1 = box(0.0, 0.0, 4, 2, 0.0)
  r = 2.0 * 0.7 / 2  # min(L, W) * factor / 2 for both boxes
  # Face to face: rounding changes nothing.
  d = box_distance(b1, box(5.5, 0.0, 4, 2, 0.0),
                                             0.7)
  np.testing.assert_allclose(d, 1.5, atol=1e-5)
  # Corner to corner: distance between core corners minus both radii.
  d = box_distance(b1, box(5.0, 3.0, 4, 2, 0.0),
                                             0.7)
  core_gap = np.hypot(1.0 + 2 * r, 1.0 + 2 * r)
  np.testing.assert_allclose(d, core_gap - 2 * r, atol=1e-5)
  # Sharp corners touching do not collide once rounded.
  d = box_distance(b1, box(4.0, 2.0, 4, 2, 0.0),
                                             0.7)
  assert float(d) > 0.5
  # Capsules (factor 1): degenerate cores still give exact distances.
  d = box_distance(b1, box(0.0, 3.0, 4, 2, 0.0),
                                             1.0)
  np.testing.assert_allclose(d, 1.0, atol=1e-5)
  d = box_distance(b1, box(0.0, 1.5, 4, 2, 0.0),
                                             1.0)
  np.testing.assert_allclose(d, -0.5, atol=1e-5)


def _np_corners(b):
  x, y, length, width, yaw = b
  rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
  local = np.array([[1, -1], [1, 1], [-1, 1], [-1, -1]]) * [length / 2,
                                                              width / 2]
  return local @ rot.T + [x, y]


def test_signed_distance_random_vs_brute_force():
  rng = np.random.default_rng(1)
  b = rng.uniform([-3, -3, 1, 0.5, -np.pi], [3, 3, 6, 3, np.pi], (60, 2, 5))
  b[:, 0, :2] = 0
  want = np.array([_np_polygon_distance(_np_corners(p[0]), _np_corners(p[1]))
                   for p in b])
  got = np.asarray(box_distance(jnp.asarray(b[:, 0], jnp.float32),
                                jnp.asarray(b[:, 1], jnp.float32)))
  assert (want < 0).sum() > 10 and (want > 0).sum() > 10  # both regimes
  np.testing.assert_allclose(got, want, atol=2e-3)


def test_pairwise_signed_distance_and_nearest():
  traj = one_step_traj([[0, 0, 4, 2, 0], [5.5, 0, 4, 2, 0], [0, 3.5, 4, 2, 0],
                        [3, 0, 4, 2, 0]], valid=[True, True, True, False])
  d = np.asarray(pairwise_distance(traj, 0.0))
  assert d[0, 0] == BIG and d[3, 0] == BIG and d[0, 3] == BIG
  np.testing.assert_allclose(d[0, 1], 1.5, atol=1e-5)
  np.testing.assert_allclose(d[0, 2], 1.5, atol=1e-5)
  np.testing.assert_allclose(d, d.T, atol=1e-5)
  # (N, T) version: time as the last axis.
  two = jax.tree.map(lambda a: jnp.stack([a, a], -1), traj)
  near = np.asarray(nearest_distance(two, 0.0))
  assert near.shape == (4, 2)
  np.testing.assert_allclose(near[:3, 0], [1.5, 1.5, 1.5], atol=1e-5)
  assert near[3, 0] == BIG


def test_box_distance_is_nan_free_with_gradients():
  def f(b):
    return box_distance(b[0], b[1], 0.7)
  for b in ([[0, 0, 4, 2, 0], [0, 0, 4, 2, 0]],  # identical
            [[0, 0, 4, 2, 0], [4, 0, 4, 2, 0]],  # touching
            [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0]],  # points
            [[-1, -1, -1, -1, -1], [0, 0, 4, 2, 0]]):  # invalid fill
    b = jnp.asarray(b, jnp.float32)
    assert np.isfinite(f(b)) and np.all(np.isfinite(jax.grad(f)(b)))


# ------------------------------------------------------------ road edges


def test_straight_road_sign_convention():
  rg = straight_road()
  pts = [[50, 0, 0], [50, 3, 0], [50, -3.5, 0], [50, -5, 0], [50, 6, 0],
         [-2, 0, 0], [50, 4, 0]]
  np.testing.assert_allclose(
      sdist(pts, rg), [-4, -1, -0.5, 1, 2, -np.hypot(2, 4), 0], atol=1e-5)


def test_polylines_are_not_joined_across_ids():
  # Two edges stored back to back; a bogus segment joining the end of one to
  # the start of the next would run through (50, 0).
  a = [[0, -4], [50, -4], [100, -4]]
  b = [[100, 4], [50, 4], [0, 4]]
  rg = roadgraph([a, b])
  np.testing.assert_allclose(sdist([[100, 0, 0]], rg), [-4], atol=1e-5)


def test_convex_corner():
  # 135 degree left turn: the drivable area is a narrow wedge; a point just
  # beyond the corner is left of the first segment but off-road.
  rg = roadgraph([[[0, 0], [10, 0], [0, 10]]])
  d = sdist([[11, 0.5, 0], [5, 1, 0], [9.5, 0.2, 0]], rg)
  np.testing.assert_allclose(d[0], np.hypot(1, 0.5), atol=1e-5)
  assert d[1] < 0 and d[2] < 0


def test_concave_corner():
  # 135 degree right turn: the off-road area is a narrow wedge; a point just
  # beyond the corner is right of the first segment but on-road.
  rg = roadgraph([[[0, 0], [10, 0], [0, -10]]])
  d = sdist([[11, -0.5, 0], [5, -1, 0], [5, 1, 0]], rg)
  np.testing.assert_allclose(d[0], -np.hypot(1, 0.5), atol=1e-5)
  assert d[1] > 0 and d[2] < 0


def test_closed_polyline_wraps_at_its_start():
  # Counter-clockwise sliver triangle, closed (last point = first point).
  tri = [[0, 0], [10, -1], [10, 1], [0, 0]]
  # The other polyline is longer: WOSAC's padded tensors do not wrap the
  # triangle (the default reproduces that); wrap_all_closed=True does.
  other = np.stack([np.linspace(50, 60, 6), np.full(6, 50.0)], -1)
  rg = roadgraph([tri, other])
  q = [[-0.5, 0.1, 0], [5, 0, 0]]
  d = sdist(q, rg, wrap_all_closed=True)
  np.testing.assert_allclose(d[0], np.hypot(0.5, 0.1), atol=1e-5)
  assert d[1] < 0
  # Official semantics: no wrap at the start, so the sign is the first
  # segment's own: the point lies on its left (drivable) side.
  d = sdist(q, rg)
  np.testing.assert_allclose(d[0], -np.hypot(0.5, 0.1), atol=1e-5)
  # As the longest polyline, the triangle wraps under both rules.
  rg = roadgraph([tri])
  np.testing.assert_allclose(sdist(q, rg)[0], np.hypot(0.5, 0.1), atol=1e-5)


def test_z_stretch_picks_the_right_level():
  # Ground-level edge along y = 0 (road at y > 0); an overpass edge 1.5 m up
  # along y = 3 (its road at y > 3). A car at ground level, y = 2, is 2 m
  # inside the ground road, 1 m outside the overpass road in 2-D.
  ground = [[0, 0, 0], [100, 0, 0]]
  bridge = [[0, 3, 1.5], [100, 3, 1.5]]
  rg = roadgraph([bridge, ground])
  q = [[50, 2, 0]]
  np.testing.assert_allclose(sdist(q, rg), [-2.0], atol=1e-5)
  np.testing.assert_allclose(sdist(q, rg, z_stretch=1.0), [1.0], atol=1e-5)


def _np_polyline_distance(q, polylines, z_stretch=3.0, wrap_all=False):
  """Reference: the WOSAC rule written over a list of polylines (float64).

  As WOSAC, closed polylines wrap only when they are among the longest,
  unless ``wrap_all``.
  """
  best = None
  longest = max(len(pl) for pl in polylines)
  for pl in polylines:
    pl = np.asarray(pl, np.float64)
    cyclic = np.sum((pl[0] - pl[-1])**2) < 1.0
    cyclic = cyclic and (wrap_all or len(pl) == longest)
    a, v = pl[:-1], pl[1:] - pl[:-1]
    d = q - a
    rel = (d[:, :2] * v[:, :2]).sum(-1) / (v[:, :2]**2).sum(-1)
    n = np.sign(d[:, 0] * v[:, 1] - d[:, 1] * v[:, 0])
    off = d - v * np.clip(rel, 0, 1)[:, None]
    d3 = np.sqrt(off[:, 0]**2 + off[:, 1]**2 + (z_stretch * off[:, 2])**2)
    for i in range(len(v)):
      if best is None or d3[i] < best[0]:
        k = len(v)
        prior = i - 1 if i > 0 else (k - 1 if cyclic else None)
        nxt = i + 1 if i < k - 1 else (0 if cyclic else None)
        sign = n[i]
        if rel[i] < 0 and prior is not None:
          cvx = v[prior, 0] * v[i, 1] - v[prior, 1] * v[i, 0] > 0
          sign = max(n[i], n[prior]) if cvx else min(n[i], n[prior])
        elif rel[i] > 1 and nxt is not None:
          cvx = v[i, 0] * v[nxt, 1] - v[i, 1] * v[nxt, 0] > 0
          sign = max(n[i], n[nxt]) if cvx else min(n[i], n[nxt])
        best = (d3[i], sign * np.hypot(off[i, 0], off[i, 1]))
  return best[1]


def test_random_polylines_match_reference():
  rng = np.random.default_rng(7)
  polylines = []
  for k in range(8):
    m = int(rng.integers(2, 12))
    pts = np.concatenate([rng.uniform(-20, 20, (1, 2)) +
                          rng.normal(0, 4, (m, 2)).cumsum(0),
                          rng.uniform(-1, 1, (m, 1))], -1)
    if k % 3 == 0:  # close the loop
      pts = np.concatenate([pts, pts[:1]])
    polylines.append(pts.astype(np.float32))
  rg = roadgraph(polylines, pad_to=sum(map(len, polylines)) + 3)
  q = rng.uniform([-30, -30, -1], [30, 30, 1], (300, 3)).astype(np.float32)
  for wrap_all in (False, True):
    got = sdist(q, rg, wrap_all_closed=wrap_all)
    want = np.array([_np_polyline_distance(p.astype(np.float64), polylines,
                                           wrap_all=wrap_all) for p in q])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert (want < 0).sum() > 30 and (want > 0).sum() > 30


def test_empty_and_edgeless_road_graphs():
  pts = jnp.zeros((5, 3))
  d = sdist(pts, roadgraph([]))
  np.testing.assert_array_equal(d, -BIG)
  lanes_only = roadgraph([[[0, 0], [10, 0]]], types=[LANE], pad_to=6)
  d = sdist(pts, lanes_only)
  np.testing.assert_array_equal(d, -BIG)
  d = sdist(pts, lanes_only, empty_value=123.0)
  np.testing.assert_array_equal(d, 123.0)
  # An explicit mask makes the lane count.
  d = sdist(pts, lanes_only, mask=lanes_only.valid)
  np.testing.assert_allclose(d, 0.0, atol=1e-6)


def test_chunking_and_batching():
  rg = straight_road()
  rng = np.random.default_rng(2)
  pts = rng.uniform([-10, -10, -1], [110, 10, 1], (37, 3)).astype(np.float32)
  ref = sdist(pts, rg, query_chunk_size=1000)
  np.testing.assert_allclose(sdist(pts, rg, query_chunk_size=5), ref,
                             atol=1e-6)
  # Against the plain 2-D formula for this road.
  x, y = pts[:, 0], pts[:, 1]
  dy = np.abs(y) - 4  # distance to the nearer edge, negative between them
  inside_x = (x >= 0) & (x <= 100)
  np.testing.assert_allclose(ref[inside_x], dy[inside_x], atol=1e-4)
  # A leading batch axis.
  rgb = jax.tree.map(lambda a: jnp.stack([a, a]), rg)
  got = np.asarray(_polyline_distance(jnp.stack([pts, pts[::-1]]), rgb))
  np.testing.assert_allclose(got[0], ref, atol=1e-6)
  np.testing.assert_allclose(got[1], ref[::-1], atol=1e-6)


def test_signed_distance_to_road_edge_boxes():
  rg = straight_road()
  traj = one_step_traj([[50, 0, 4, 2, 0], [50, 3.5, 4, 2, 0],
                        [50, 0, 4, 2, np.pi / 2], [50, 0, 4, 2, 0]],
                       valid=[True, True, True, False])
  d = np.asarray(geometry.signed_distance_to_road_edge(traj, rg))
  np.testing.assert_allclose(d[:3], [-3.0, 0.5, -2.0], atol=1e-5)
  assert d[3] == -BIG
  # (N, T) trajectories and jit.
  two = jax.tree.map(lambda a: jnp.stack([a, a], -1), traj)
  f = jax.jit(geometry.signed_distance_to_road_edge)
  np.testing.assert_allclose(f(two, rg)[:3], np.stack([d[:3]] * 2, -1),
                             atol=1e-5)


def test_closed_form_rectangle_distance_equals_polygon_distance():
  rng = np.random.default_rng(11)
  n = 20000
  def boxes():
    return np.stack([rng.uniform(-5, 5, n), rng.uniform(-5, 5, n),
                     rng.uniform(0, 6, n), rng.uniform(0, 3, n),
                     rng.uniform(-4, 4, n)], -1).astype(np.float32)
  a, b = boxes(), boxes()
  b[:500, 3] = 0.0  # segments
  a[500:1000, 2:4] = 0.0  # points
  fast = jax.jit(geometry._rect_signed_distance)(a, b)
  general = jax.jit(lambda a, b: geometry.signed_distance_between_polygons(
      geometry._corners5(a), geometry._corners5(b)))(a, b)
  np.testing.assert_allclose(fast, general, atol=1e-5)
  fast = np.asarray(fast)
  assert (fast < 0).sum() > 1000 and (fast > 0).sum() > 1000
