"""Occupancy features, rankings and pairs on small synthetic scenarios."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign.data import synthetic
from prefalign.data import womd
from prefalign.metrics import wosac
from prefalign.preference import occupancy
from prefalign.preference import ot
from prefalign.preference import ranking

# One worker runs the module: its tests rank the module's scene with the
# same few configs, each compiled once (cached below).
pytestmark = pytest.mark.xdist_group('preference_ranking')

READER = womd.ReaderConfig(max_num_objects=8, max_roadgraph_points=1200,
                           max_traffic_lights=2)


@pytest.fixture(scope='module')
def state():
  scenario = synthetic.straight_road_scenario(
      'rank-0', seed=3, num_vehicles=4, num_pedestrians=1, num_cyclists=0)
  return womd.state_from_scenario(scenario, READER).state


def _rollouts(state, num=8, seed=0):
  """Log replay, then copies pushed sideways by growing amounts."""
  log = wosac.log_rollouts(state, num)
  rng = np.random.default_rng(seed)
  scale = np.arange(num, dtype=np.float32)  # rollout 0: the log itself
  t = np.arange(80, dtype=np.float32) / 80
  shift = scale[:, None, None] * (0.4 + 0.1 * rng.random((num, 8, 1))) * t
  return log.replace(y=log.y + shift.astype(np.float32))


@functools.cache
def _rank_fn(config):
  return jax.jit(functools.partial(ranking.rank_rollouts, config=config))


# 8 rollouts unless a test needs another count: features of the same shapes
# are one compiled program (the persistent cache serves the module's tests).


def test_features_shapes_and_masks(state):
  roll = _rollouts(state, 8)
  phi = jax.jit(occupancy.occupancy_features)(state, roll)
  assert phi['features'].shape == (9, 8, 80, 5)
  assert np.all(np.isfinite(phi['features']))
  sim = np.asarray(wosac.sim_agents(state))
  np.testing.assert_array_equal(phi['agent_mask'], sim)
  valid = np.asarray(phi['valid'])
  assert not valid[:, ~sim].any()
  assert not valid[..., -2:].any()  # acceleration needs the next step
  # Rollout steps count only where the log's do.
  assert not np.any(valid[1:] & ~valid[:1])
  # Rollout 0 replays the log: identical features.
  np.testing.assert_allclose(phi['features'][1], phi['features'][0],
                             atol=1e-5)


@pytest.mark.parametrize('chunk', [2, 3])
def test_agent_chunks_give_the_features_of_one_call(state, chunk):
  roll = _rollouts(state, 8)
  one = jax.jit(functools.partial(occupancy.occupancy_features,
                                  agent_chunk=0))(state, roll)
  chunked = jax.jit(functools.partial(occupancy.occupancy_features,
                                      agent_chunk=chunk))(state, roll)
  assert np.asarray(one['agent_mask']).sum() < 8  # some chunks skip
  for key in ('features', 'valid', 'ade', 'agent_index', 'agent_mask'):
    np.testing.assert_array_equal(np.asarray(chunked[key]),
                                  np.asarray(one[key]), err_msg=key)


def test_ranking_does_not_depend_on_the_agent_chunk(state):
  roll = _rollouts(state, 8)
  rng = jax.random.key(1)
  one = _rank_fn(ranking.RankingConfig(num_pairs=2, agent_chunk=0))(
      state, roll, rng)
  chunked = _rank_fn(ranking.RankingConfig(num_pairs=2, agent_chunk=3))(
      state, roll, rng)
  # Features are bit-identical; the solver's float32 arithmetic is
  # vectorised differently for another batch size (ulps of the cost).
  for key in ('distances', 'agent_distances'):
    np.testing.assert_allclose(np.asarray(getattr(chunked, key)),
                               np.asarray(getattr(one, key)), rtol=1e-4,
                               atol=1e-6, err_msg=key)
  for key in ('agent_counted', 'order', 'preferred', 'unpreferred'):
    np.testing.assert_array_equal(np.asarray(getattr(chunked, key)),
                                  np.asarray(getattr(one, key)), err_msg=key)


def test_agent_chunks_skip_chunks_and_restore_the_order():
  calls = []

  def fn(i, m):
    calls.append(i.shape)
    return (jnp.where(m, 10 * i, 0)[None] + jnp.zeros((2, 1), jnp.int32),)

  index = jnp.arange(7, dtype=jnp.int32)
  mask = jnp.array([False, True, False, False, True, True, False])
  out = jax.jit(lambda i, m: occupancy.by_agent_chunks(fn, i, m, 2))(
      index, mask)[0]
  np.testing.assert_array_equal(np.asarray(out),
                                np.tile([0, 10, 0, 0, 40, 50, 0], (2, 1)))
  assert all(c == (2,) for c in calls)


def _assignment_errors(phi):
  """Default OT per (rollout, agent) against the exact assignment.

  Over the pairs with equal valid step counts (where exact OT is an
  assignment); error relative to max(exact, median exact), see
  ``ot_test._errors``.
  """
  from scipy import optimize
  weights = occupancy.feature_weights('all')
  got = np.asarray(ranking.agent_distances(phi, weights).cost)
  f, v = np.asarray(phi['features']), np.asarray(phi['valid'])
  exact, cost = [], []
  for r in range(1, f.shape[0]):
    for a in np.flatnonzero(np.asarray(phi['agent_mask'])):
      xm, ym = v[r, a], v[0, a]
      if xm.sum() < 2 or xm.sum() != ym.sum():
        continue
      c = np.asarray(ot.cost_matrix(f[r, a][xm], f[0, a][ym], weights))
      i, k = optimize.linear_sum_assignment(c)
      exact.append(c[i, k].mean())
      cost.append(got[r - 1, a])
  exact = np.asarray(exact)
  return (np.abs(np.asarray(cost) - exact) / np.maximum(exact,
                                                        np.median(exact)),
          exact)


def test_default_matches_the_assignment_on_occupancy_features(state):
  """Features of a scenario whose rollouts drift off the road and into
  each other (collisions, road-edge and clearance jumps)."""
  phi = jax.jit(occupancy.occupancy_features)(state, _rollouts(state, 8))
  err, exact = _assignment_errors(phi)
  assert len(exact) >= 20 and np.median(exact) > 0
  assert err.max() <= 1e-2, err


def test_default_ranking_orders_rollouts_as_exact_ot(state):
  """The ranking's Sinkhorn setting is chosen for the order it gives, not
  the cost (BENCHMARKS.md, "Preference ranking"): on drifting rollouts the
  scene distances sort exactly as the assignment's do."""
  from scipy import optimize
  config = ranking.RankingConfig()
  phi = jax.jit(occupancy.occupancy_features)(state, _rollouts(state, 12, 4))
  weights = occupancy.feature_weights('all')
  got = np.asarray(ranking.agent_distances(phi, weights,
                                           config.sinkhorn).cost)
  f, v = np.asarray(phi['features']), np.asarray(phi['valid'])
  counted = np.asarray(phi['agent_mask']) & v[0].any(-1)
  exact = np.zeros_like(got)
  for r in range(1, f.shape[0]):
    for a in np.flatnonzero(counted):
      xm, ym = v[r, a], v[0, a]
      assert xm.sum() == ym.sum()
      c = np.asarray(ot.cost_matrix(f[r, a][xm], f[0, a][ym], weights))
      i, k = optimize.linear_sum_assignment(c)
      exact[r - 1, a] = c[i, k].mean()
  scene = lambda d: np.asarray(ranking.scene_distances(
      jnp.asarray(d), jnp.asarray(counted)))
  np.testing.assert_array_equal(np.argsort(scene(got), kind='stable'),
                                np.argsort(scene(exact), kind='stable'))


def test_default_matches_the_assignment_on_real_features(shared_womd):
  """A real scenario; rollouts: the log, constant velocity and the log
  pushed sideways, which mixes collisions, off-road and speed changes."""
  import glob
  files = sorted(glob.glob(str(shared_womd / 'real' / 'real.tfrecord-*')))
  ex = next(iter(womd.read_examples(
      files[:1], womd.ReaderConfig(max_num_objects=24))))
  st = ex.state
  log = wosac.log_rollouts(st, 4)
  cv = wosac.constant_velocity_rollouts(st, 2)
  t = np.arange(80, dtype=np.float32) / 80
  push = (np.array([0.5, 1.5, 3.0, 6.0], np.float32)[:, None, None] *
          np.sin(6 * t + np.arange(24, dtype=np.float32)[:, None]))
  pushed = log.replace(x=log.x + push, y=log.y + 0.5 * push)
  rollouts = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), pushed, cv)
  phi = jax.jit(occupancy.occupancy_features)(st, rollouts)
  err, exact = _assignment_errors(phi)
  assert len(exact) >= 30
  assert err.max() <= 1e-2, (err.max(), np.median(err))


def test_log_replay_ranks_first_and_order_follows_the_push(state):
  r = _rank_fn(ranking.RankingConfig(num_pairs=2))(
      state, _rollouts(state), jax.random.key(0))
  assert int(r.order[0]) == 0
  d = np.asarray(r.distances)
  # The log's own distance is the entropic bias (the ranking's epsilon is
  # 0.1, chosen for the order), not 0; it still ranks first.
  assert d[0] < d[1:].min()
  assert np.all(np.diff(d) > 0), d  # monotone in the push
  np.testing.assert_array_equal(r.preferred, [0, 1])
  np.testing.assert_array_equal(r.unpreferred, [6, 7])


def test_masked_agents_never_change_the_result(state):
  roll = _rollouts(state)
  sim = np.asarray(wosac.sim_agents(state))
  # Move the rows that are not simulated somewhere else entirely.
  moved = roll.replace(x=jnp.where(sim[None, :, None], roll.x, -3e4))
  fn = _rank_fn(ranking.RankingConfig(num_pairs=2))
  a = fn(state, roll, jax.random.key(0))
  b = fn(state, moved, jax.random.key(0))
  np.testing.assert_allclose(a.distances, b.distances, rtol=1e-5)


@pytest.mark.parametrize('pairing', ranking.PAIRINGS)
def test_pairings(pairing):
  d = jnp.asarray(np.random.default_rng(0).permutation(12), jnp.float32)
  pref, unpref = ranking.make_pairs(d, jax.random.key(1), num_pairs=3,
                                    pairing=pairing)
  if pairing == 'all':
    assert len(pref) == 9
    assert set(zip(np.asarray(pref), np.asarray(unpref))) == {
        (p, u) for p in np.argsort(d)[:3] for u in np.argsort(d)[-3:]}
    return
  np.testing.assert_array_equal(pref, np.argsort(d)[:3])
  assert set(np.asarray(unpref)) == set(np.argsort(d)[-3:])
  if pairing == 'rank':
    np.testing.assert_array_equal(unpref, np.argsort(d)[-3:])


def test_strategies(state):
  roll = _rollouts(state)
  key = jax.random.key(2)
  adv = _rank_fn(ranking.RankingConfig(strategy='adversarial', num_pairs=3))(
      state, roll, key)
  np.testing.assert_array_equal(adv.preferred, [-1, -1, -1])
  assert len(set(np.asarray(adv.unpreferred))) == 3
  ade = _rank_fn(ranking.RankingConfig(strategy='ade', num_pairs=2))(
      state, roll, key)
  np.testing.assert_allclose(ade.distances, ade.ade)
  assert int(ade.order[0]) == 0
  rnd = _rank_fn(ranking.RankingConfig(strategy='random', num_pairs=2))(
      state, roll, key)
  assert not np.allclose(rnd.distances, rnd.ot_distances)
  np.testing.assert_allclose(rnd.ot_distances, ade.ot_distances, rtol=1e-6)


def test_no_valid_agent_gives_zeros_not_nan(state):
  empty = state.replace(object_metadata=state.object_metadata.replace(
      is_valid=jnp.zeros_like(state.object_metadata.is_valid)))
  r = _rank_fn(ranking.RankingConfig(num_pairs=2))(
      empty, _rollouts(state), jax.random.key(0))
  assert not np.any(r.agent_counted)
  np.testing.assert_array_equal(r.distances, 0.0)
  assert np.all(np.isfinite(r.ade))


def test_feature_sets():
  np.testing.assert_array_equal(occupancy.feature_weights('all'),
                                [10, 5, 2, 1, 1])
  np.testing.assert_array_equal(occupancy.feature_weights('collision'),
                                [10, 0, 2, 0, 0])
  np.testing.assert_array_equal(
      occupancy.feature_weights('speed,road_edge'), [0, 5, 0, 0, 1])
  with pytest.raises(ValueError, match='feature set'):
    occupancy.feature_weights('safety')
  with pytest.raises(ValueError, match='5 values'):
    occupancy.feature_weights('all', (1, 2))


@pytest.mark.parametrize('kw,match', [
    (dict(strategy='l2'), 'strategy'), (dict(pairing='greedy'), 'pairing'),
    (dict(aggregate='max'), 'aggregate'), (dict(num_pairs=0), 'num_pairs'),
    (dict(feature_set='nope'), 'feature set')])
def test_bad_ranking_config_is_named(kw, match):
  with pytest.raises(ValueError, match=match):
    ranking.RankingConfig(**kw)


def test_too_few_rollouts_is_named(state):
  with pytest.raises(ValueError, match='8 rollouts cannot give 16'):
    ranking.rank_rollouts(state, _rollouts(state), jax.random.key(0),
                          ranking.RankingConfig())


def test_ott_backend_ranks_the_same(state):
  pytest.importorskip('ott')
  roll = _rollouts(state)
  a = _rank_fn(ranking.RankingConfig(num_pairs=2))(state, roll,
                                                   jax.random.key(0))
  b = _rank_fn(ranking.RankingConfig(
      num_pairs=2, sinkhorn=ot.SinkhornConfig(backend='ott')))(
          state, roll, jax.random.key(0))
  np.testing.assert_array_equal(a.order, b.order)
