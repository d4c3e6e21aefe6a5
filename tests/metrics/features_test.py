"""The pruned feature searches equal brute force on every path they take."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.data import synthetic
from prefalign.data import womd
from prefalign.metrics import _nearest
from prefalign.metrics import features as F
from prefalign.metrics import road_edge

SMALL = womd.ReaderConfig(max_num_objects=8, max_roadgraph_points=800,
                          max_traffic_lights=2)


def _scattered(num_rollouts=3, num_objects=24, num_steps=12, spread=30.0,
               seed=0):
  """Random boxes drifting over a square: many near ties, many far ones."""
  rng = np.random.default_rng(seed)
  shape = (num_rollouts, num_objects, num_steps)
  start = rng.uniform(-spread, spread, shape[:2] + (1, 2))
  drift = rng.normal(0, 0.8, shape[:2] + (1, 2)) * np.arange(num_steps)[:,
                                                                        None]
  xy = (start + drift).astype(np.float32)
  ones = np.ones(shape, np.float32)
  valid = rng.random(shape) > 0.15
  return datatypes.Trajectory(
      x=xy[..., 0], y=xy[..., 1], z=0 * ones,
      yaw=rng.uniform(-np.pi, np.pi, shape).astype(np.float32),
      vel_x=0 * ones, vel_y=0 * ones,
      length=rng.uniform(0.5, 5.0, shape).astype(np.float32) * ones,
      width=rng.uniform(0.5, 2.5, shape).astype(np.float32) * ones,
      height=1.5 * ones, valid=valid,
      timestamp_micros=np.zeros(shape, np.int32))


@pytest.mark.parametrize('num_candidates,redo_budget', [
    (1, 512),  # many uncertified pairs, all redone
    (1, 2),  # more than the budget: the whole call is brute force
    (4, 512),  # the usual path
])
def test_nearest_object_equals_brute_force(num_candidates, redo_budget):
  traj = _scattered()
  eval_index = jnp.array([0, 3, 5, 7])
  eval_mask = jnp.array([True, True, True, False])
  brute = F.distance_to_nearest_object(traj, eval_index, num_candidates=0,
                                       eval_mask=eval_mask)
  fast = jax.jit(lambda t: F.distance_to_nearest_object(
      t, eval_index, num_candidates=num_candidates, redo_budget=redo_budget,
      eval_mask=eval_mask))(traj)
  # Same pairs, same arithmetic; only XLA's fusion differs (float32 ulps).
  np.testing.assert_allclose(np.asarray(fast), np.asarray(brute), atol=1e-5)
  assert np.all(np.asarray(fast)[:, 3] == 1e10)  # padding slot


def _grid_roadgraph(seed=0, num_polylines=12, points=30):
  """Random wiggly road-edge polylines at two levels (z = 0 and 6 m)."""
  rng = np.random.default_rng(seed)
  xs, ys, zs, ids = [], [], [], []
  for i in range(num_polylines):
    start = rng.uniform(-40, 40, 2)
    heading = rng.uniform(-np.pi, np.pi)
    steps = np.cumsum(rng.normal(0, 0.3, points)) + heading
    xy = start + np.cumsum(np.stack([np.cos(steps), np.sin(steps)], -1) * 2.0,
                           0)
    xs.append(xy[:, 0])
    ys.append(xy[:, 1])
    zs.append(np.full(points, 6.0 * (i % 2)))
    ids.append(np.full(points, i))
  n = num_polylines * points
  cat = lambda a: np.concatenate(a).astype(np.float32)
  xyz = np.stack([cat(xs), cat(ys), cat(zs)], -1)
  d = np.zeros_like(xyz)
  d[:-1] = xyz[1:] - xyz[:-1]
  return datatypes.RoadgraphPoints(
      x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], dir_x=d[:, 0], dir_y=d[:, 1],
      dir_z=d[:, 2],
      types=np.full(n, int(datatypes.MapElementIds.ROAD_EDGE_BOUNDARY),
                    np.int32),
      ids=np.concatenate(ids).astype(np.int32), valid=np.ones(n, bool))


@pytest.mark.parametrize('tight', [True, False])
@pytest.mark.parametrize('search,redone', [
    (road_edge.GridConfig(), None),  # the default sizes
    # Lists far too short for most corners: most are searched again.
    (road_edge.GridConfig(chunk=2, group=2, grid=2, refine=2, cell_groups=2,
                          fine_chunks=1, slice=64, list_slice=16,
                          redo_slice=7), 'most'),
    # More chunks listed per cell than the map has: no cell threshold.
    (road_edge.GridConfig(chunk=4, cell_groups=4096, fine_chunks=2), None),
])
def test_road_edge_distance_equals_brute_force(search, redone, tight):
  traj = _scattered(num_rollouts=4, num_objects=10, num_steps=16)
  if tight:  # rollouts within centimetres of each other
    noise = np.random.default_rng(1).normal(0, 0.05, traj.x.shape)
    traj = traj.replace(x=(traj.x[:1] + noise).astype(np.float32),
                        y=(traj.y[:1] - noise).astype(np.float32),
                        yaw=np.broadcast_to(traj.yaw[:1], traj.yaw.shape))
  # Diverging rollouts (each starts anywhere in the square) spread the
  # grid's cells; corners the certificate leaves are searched again, and
  # every answer must be the brute-force one.
  roadgraph = _grid_roadgraph()
  eval_index = jnp.array([0, 1, 2, 9])
  brute = F.distance_to_road_edge(traj, eval_index, roadgraph, prune=False)
  fast = jax.jit(lambda t, r: F.distance_to_road_edge(
      t, eval_index, r, search=search))(traj, roadgraph)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(brute), atol=1e-5)
  assert np.isfinite(np.asarray(fast)).all()
  if redone == 'most':
    ev = jax.tree.map(lambda a: jnp.take(a, eval_index, axis=-2), traj)
    rg = jax.tree.map(jnp.asarray, roadgraph)
    _, listed, every = road_edge.grid_distance(
        F._edge_query_points(ev), ev.valid,
        road_edge.EdgeSearch.build(rg, rg.is_road_edge, 3.0, False), search)
    # Both searches again ran, on most corners and on some.
    assert int(listed) > ev.valid.sum() * 4 // 2 and int(every) > 0


def _crossing_red_light():
  """Eastbound vehicles crossing the synthetic signal's stop line on red."""
  scenario = synthetic.straight_road_scenario(num_vehicles=4,
                                              with_traffic_light=True)
  state = womd.state_from_scenario(scenario, SMALL).state
  log = jax.tree.map(np.asarray, state.log_trajectory)
  t = np.arange(81, dtype=np.float32)
  rng = np.random.default_rng(0)
  # Two rollouts; x from 100 m to 200 m passes the stop point (x = 160) at
  # step ~48 of 81, after the light turns red (log step 50 = index 40).
  x = 100.0 + 1.25 * t + rng.normal(0, 1.0, (2, log.x.shape[0], 1))
  traj = jax.tree.map(lambda a: np.broadcast_to(a[:, 10:], (2,) +
                                                a[:, 10:].shape).copy(), log)
  traj = traj.replace(x=x.astype(np.float32),
                      valid=np.ones_like(traj.valid))
  lights = jax.tree.map(lambda a: np.asarray(a)[..., 10:],
                        state.log_traffic_light)
  return traj, state.roadgraph_points, lights


@pytest.mark.parametrize('kwargs', [
    dict(budget=1),  # more crossings than the budget: every position
    dict(max_signal_runs=1),  # stop-segment search per signal and step
    dict(max_signal_segments=1),  # stop-segment search among every segment
])
def test_traffic_light_violation_paths_agree(kwargs):
  traj, roadgraph, lights = _crossing_red_light()
  eval_index = jnp.arange(4)
  usual = jax.jit(lambda t: F._traffic_light_violation(
      t, eval_index, roadgraph, lights))(traj)
  other = jax.jit(lambda t: F._traffic_light_violation(
      t, eval_index, roadgraph, lights, **kwargs))(traj)
  usual = np.asarray(usual)
  # Eastbound objects (rows 0 and 2, y = -2) run the red light once each.
  assert usual[:, [0, 2]].sum(-1).min() == 1
  assert not usual[:, [1, 3]].any()  # westbound lane: no signal
  np.testing.assert_array_equal(np.asarray(other), usual)


def test_map_live_computes_only_the_live_prefix():
  xs = jnp.arange(10.0)
  out = jax.jit(lambda n: _nearest.map_live(lambda v: v * 2 + 1, xs, n,
                                            batch_size=4))(jnp.int32(5))
  # Chunks [0, 4) and [4, 8) hold live entries; [8, 10) is skipped.
  np.testing.assert_array_equal(np.asarray(out),
                                [1, 3, 5, 7, 9, 11, 13, 15, 0, 0])


def test_top_k_lower_is_a_certificate():
  rng = np.random.default_rng(1)
  lb = jnp.asarray(rng.random((6, 50)), jnp.float32)
  idx, nxt = _nearest.top_k_lower(lb, 5)
  srt = np.sort(np.asarray(lb), -1)
  np.testing.assert_allclose(np.sort(np.take_along_axis(
      np.asarray(lb), np.asarray(idx), -1), -1), srt[:, :5])
  np.testing.assert_allclose(np.asarray(nxt), srt[:, 5])


def test_road_edge_distance_on_a_real_map_equals_brute_force(shared_womd):
  """Rollouts that wander tens of metres off the road (a weak policy's) on
  a real map of thousands of half-metre road-edge segments, and an object
  parked ~100 km away for half the horizon (as log replay parks objects
  absent from the log): exact, and the parked corners do not stretch the
  grid (most corners are still certified)."""
  path = sorted((shared_womd / 'real').glob('real.tfrecord-*'))[0]
  ex = next(womd.read_examples([str(path)], womd.ReaderConfig(
      max_num_objects=32)))
  log = jax.tree.map(np.asarray, ex.state.log_trajectory)
  rng = np.random.default_rng(0)
  walk = np.cumsum(rng.normal(0, 0.6, (2,) + log.x.shape + (2,)), axis=-2)
  traj = jax.tree.map(lambda a: np.broadcast_to(a, (2,) + a.shape).copy(),
                      log)
  traj = traj.replace(x=(log.x + walk[..., 0]).astype(np.float32),
                      y=(log.y + walk[..., 1]).astype(np.float32),
                      valid=np.broadcast_to(log.valid[:, 10:11],
                                            traj.valid.shape).copy())
  eval_index = jnp.arange(16)
  here = np.ones(traj.valid.shape, bool)
  parked = int(np.flatnonzero(log.valid[:16].all(-1))[0])  # logged always
  here[:, parked, 45:] = False
  unparked = traj
  traj = jax.tree.map(np.asarray, datatypes.park_invalid(traj, here))
  roadgraph = ex.state.roadgraph_points
  brute = F.distance_to_road_edge(traj, eval_index, roadgraph, prune=False)
  fast = jax.jit(lambda t, r: F.distance_to_road_edge(t, eval_index, r))(
      traj, roadgraph)
  brute, fast = np.asarray(brute), np.asarray(fast)
  valid = brute > -1e9
  assert valid.sum() > 1000 and (brute[valid] > 5).mean() > 0.1
  assert brute[:, parked, 50].min() > 1e4  # parked far from every edge
  np.testing.assert_allclose(fast, brute, atol=1e-5)
  rg = jax.tree.map(jnp.asarray, roadgraph)
  search = road_edge.EdgeSearch.build(rg, rg.is_road_edge, 3.0, False)

  def searched_again(t):
    ev = jax.tree.map(lambda a: jnp.take(a, eval_index, axis=-2), t)
    _, listed, every = road_edge.grid_distance(F._edge_query_points(ev),
                                               ev.valid, search)
    return int(listed), int(every)

  # About the parked corners alone are searched again (the grid did not
  # stretch; its cells move a little with the other corners).
  parked_corners = 4 * int((~here[:, parked] & traj.valid[:, parked]).sum())
  (listed0, every0), (listed1, every1) = map(searched_again,
                                             (unparked, traj))
  assert abs(every1 - every0 - parked_corners) <= 0.05 * parked_corners
  assert abs(listed1 - listed0 - parked_corners) <= 0.05 * parked_corners
