"""The JAX WOSAC metric: closed forms, official parity, properties."""

import chex
import jax
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.data import submission
from prefalign.data import submission_files
from prefalign.data import synthetic
from prefalign.data import womd
from prefalign.metrics import wosac
from tests.parity import expected_md

# One worker runs the module: most tests score the same scene with the same
# config, so the metric compiles once (module-level cache below).
pytestmark = pytest.mark.xdist_group('metrics_wosac')

SMALL = womd.ReaderConfig(max_num_objects=8, max_roadgraph_points=800,
                          max_traffic_lights=2)
FULL = womd.ReaderConfig(max_num_objects=None, max_roadgraph_points=None,
                         max_traffic_lights=None)


def log_rollouts(state, num=32, noise=0.0, offset=(0.0, 0.0), seed=0):
  """(num, N, 80) rollouts: the logged future, optionally perturbed."""
  log = jax.tree.map(np.asarray, state.log_trajectory)
  fut = jax.tree.map(lambda a: np.broadcast_to(a[:, 11:], (num,) +
                                               a[:, 11:].shape).copy(), log)
  rng = np.random.default_rng(seed)
  x = fut.x + offset[0] + noise * rng.normal(size=fut.x.shape)
  y = fut.y + offset[1] + noise * rng.normal(size=fut.y.shape)
  return fut.replace(x=x.astype(np.float32), y=y.astype(np.float32),
                     valid=np.ones_like(fut.valid))


_metrics = {}


def metrics(state, rollouts, challenge='2025'):
  if challenge not in _metrics:
    cfg = wosac.get_config(challenge)
    _metrics[challenge] = jax.jit(
        lambda s, r: wosac.scenario_metrics(s, r, cfg, max_evaluated=9))
  return {k: float(v) for k, v in
          jax.device_get(_metrics[challenge](state, rollouts)).items()}


@pytest.fixture(scope='module')
def straight():
  scenario = synthetic.straight_road_scenario(num_vehicles=4,
                                              num_pedestrians=1,
                                              num_cyclists=1,
                                              with_traffic_light=False)
  return womd.state_from_scenario(scenario, SMALL).state


def test_closed_forms_of_perfect_replay(straight):
  """The values of wosac.md section 5 for 32 exact copies of the log."""
  m = metrics(straight, log_rollouts(straight))
  np.testing.assert_allclose(m['linear_speed_likelihood'],
                             (32 * 79 + 0.1) / (2560 + 10 * 0.1), rtol=1e-5)
  np.testing.assert_allclose(m['angular_speed_likelihood'],
                             (32 * 79 + 0.1) / (2560 + 11 * 0.1), rtol=1e-5)
  for name in ('linear_acceleration', 'angular_acceleration'):
    np.testing.assert_allclose(m[f'{name}_likelihood'],
                               (32 * 78 + 0.1) / (2560 + 11 * 0.1), rtol=1e-5)
  for name in ('collision_indication', 'offroad_indication',
               'traffic_light_violation'):
    np.testing.assert_allclose(m[f'{name}_likelihood'],
                               (32 + 0.001) / (32 + 0.002), rtol=1e-6)
  assert m['min_average_displacement_error'] == 0.0
  # Perfect replay still scores below 1 (time-marginal histograms).
  assert 0.5 < m['metametric'] < 1.0
  assert m['num_evaluated'] == 3


def test_ade_counts_the_history(straight):
  m = metrics(straight, log_rollouts(straight, offset=(1.0, 0.0)))
  np.testing.assert_allclose(m['min_average_displacement_error'], 80 / 91,
                             rtol=1e-5)
  np.testing.assert_allclose(m['average_displacement_error'], 80 / 91,
                             rtol=1e-5)


def test_noise_lowers_realism_and_buckets_combine(straight):
  exact = metrics(straight, log_rollouts(straight))
  noisy = metrics(straight, log_rollouts(straight, noise=0.5))
  assert noisy['metametric'] < exact['metametric']
  assert noisy['kinematic'] < exact['kinematic']
  for m in (exact, noisy):
    np.testing.assert_allclose(
        m['metametric'],
        0.2 * m['kinematic'] + 0.45 * m['interactive'] +
        0.35 * m['map_based'], rtol=1e-5)


def _transform(state, rollouts, angle, shift):
  c, s = np.cos(angle), np.sin(angle)

  def move(t):
    x, y = np.asarray(t.x), np.asarray(t.y)
    vx, vy = np.asarray(t.vel_x), np.asarray(t.vel_y)
    ok = np.asarray(t.valid)
    nx = np.where(ok, c * x - s * y + shift[0], x)
    ny = np.where(ok, s * x + c * y + shift[1], y)
    return t.replace(x=nx.astype(np.float32), y=ny.astype(np.float32),
                     vel_x=(c * vx - s * vy).astype(np.float32),
                     vel_y=(s * vx + c * vy).astype(np.float32),
                     yaw=np.where(ok, np.asarray(t.yaw) + angle,
                                  t.yaw).astype(np.float32))

  rg = state.roadgraph_points
  x, y = np.asarray(rg.x), np.asarray(rg.y)
  dx, dy = np.asarray(rg.dir_x), np.asarray(rg.dir_y)
  ok = np.asarray(rg.valid)
  rg = rg.replace(
      x=np.where(ok, c * x - s * y + shift[0], x).astype(np.float32),
      y=np.where(ok, s * x + c * y + shift[1], y).astype(np.float32),
      dir_x=(c * dx - s * dy).astype(np.float32),
      dir_y=(s * dx + c * dy).astype(np.float32))
  state = state.replace(log_trajectory=move(state.log_trajectory),
                        sim_trajectory=move(state.sim_trajectory),
                        roadgraph_points=rg)
  return state, move(rollouts)


def test_invariant_to_rigid_transform(straight):
  rollouts = log_rollouts(straight, noise=0.3, seed=3)
  base = metrics(straight, rollouts)
  moved = metrics(*_transform(straight, rollouts, 0.7, (120.0, -45.0)))
  for k, v in base.items():
    np.testing.assert_allclose(moved[k], v, atol=2e-3, err_msg=k)


def test_invariant_to_object_order(straight):
  rollouts = log_rollouts(straight, noise=0.3, seed=4)
  base = metrics(straight, rollouts)
  perm = np.random.default_rng(0).permutation(straight.num_objects)
  shuffled = straight.replace(
      log_trajectory=jax.tree.map(lambda a: np.asarray(a)[perm],
                                  straight.log_trajectory),
      sim_trajectory=jax.tree.map(lambda a: np.asarray(a)[perm],
                                  straight.sim_trajectory),
      object_metadata=jax.tree.map(lambda a: np.asarray(a)[perm],
                                   straight.object_metadata))
  moved = metrics(shuffled, jax.tree.map(lambda a: np.asarray(a)[:, perm],
                                         rollouts))
  for k, v in base.items():
    np.testing.assert_allclose(moved[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_no_nan_on_degenerate_scenes():
  scenario = synthetic.straight_road_scenario(num_vehicles=3,
                                              num_pedestrians=0,
                                              num_cyclists=0)
  # Track 1 (a tracks_to_predict object) is valid at the current step only;
  # track 2 stands still.
  for j, st in enumerate(scenario.tracks[1].states):
    st.valid = j == 10
  for st in scenario.tracks[2].states:
    st.center_x, st.velocity_x = 30.0, 0.0
  scenario.ClearField('map_features')
  state = womd.state_from_scenario(
      scenario, womd.ReaderConfig(max_num_objects=8, max_roadgraph_points=16,
                                  max_traffic_lights=2,
                                  require_roadgraph=False)).state
  for challenge in ('2024', '2025'):
    m = metrics(state, log_rollouts(state, noise=0.2), challenge)
    assert all(np.isfinite(v) for v in m.values()), m


def test_scenario_metrics_compiles_once(straight):
  # The program of metrics(straight, ...): the persistent cache serves it.
  fn = jax.jit(chex.assert_max_traces(
      lambda s, r: wosac.scenario_metrics(s, r, wosac.CHALLENGE_2025,
                                          max_evaluated=9), n=1))
  for seed in range(3):
    out = fn(straight, log_rollouts(straight, noise=0.1, seed=seed))
  assert np.isfinite(float(out['metametric']))


def test_unknown_challenge():
  with pytest.raises(ValueError, match='2023'):
    wosac.get_config('2023')


# --------------------------------------------------------------------------
# Parity with the official numbers (shared/data/womd/official/EXPECTED.md).

# Columns of EXPECTED.md section 3a (read at test time: WOMD-derived numbers
# stay in the shared folder).
COLUMNS = {'2024': '1.6.4, 2024', '2025': '1.6.7, 2025'}
BUCKET_NAMES = {'kinematic_metrics': 'kinematic',
                'interactive_metrics': 'interactive',
                'map_based_metrics': 'map_based'}


def expected_numbers(shared_womd, challenge):
  text = (shared_womd / 'official' / 'EXPECTED.md').read_text('utf-8')
  tables = expected_md.parse_tables(text)
  table = next(v for k, v in tables.items() if k.startswith('3a.'))
  out = {}
  for (_, field), value in expected_md.expected_column(
      table, COLUMNS[challenge]).items():
    if value is not None:
      out[BUCKET_NAMES.get(field, field)] = value
  return out


@pytest.mark.data
@pytest.mark.parametrize('challenge', ['2024', '2025'])
@pytest.mark.parametrize('reader', ['full'])
def test_official_submission_parity(shared_womd, challenge, reader):
  cfg = FULL if reader == 'full' else womd.ReaderConfig()
  example = next(womd.read_examples(
      shared_womd / 'official' / 'motion_data_one_scenario.tfrecord', cfg))
  (rollouts_proto,) = list(submission_files.read_rollouts(
      shared_womd / 'official' / 'test_submission.binproto'))
  rollouts = submission.trajectory_from_scenario_rollouts(rollouts_proto,
                                                          example)
  got = metrics(example.state, rollouts, challenge)
  expected = expected_numbers(shared_womd, challenge)
  assert len(expected) >= 17
  for key, want in expected.items():
    assert abs(got[key] - want) < 1e-4, (key, got[key], want)


def test_batched_metrics_equal_per_scenario(straight):
  other = womd.state_from_scenario(
      synthetic.straight_road_scenario('other', seed=5, num_vehicles=4,
                                       num_pedestrians=1, num_cyclists=1,
                                       with_traffic_light=False), SMALL).state
  r1 = log_rollouts(straight, noise=0.2, seed=1)
  r2 = log_rollouts(other, noise=0.2, seed=2)
  states = datatypes.stack([straight, other])
  rollouts = datatypes.stack([r1, r2])
  got = jax.jit(lambda s, r: wosac.batched_metrics(
      s, r, wosac.CHALLENGE_2025, max_evaluated=9))(states, rollouts)
  for i, (s, r) in enumerate(((straight, r1), (other, r2))):
    one = metrics(s, r)
    for k, v in one.items():
      np.testing.assert_allclose(float(got[k][i]), v, rtol=1e-5, atol=1e-6)


def test_too_few_evaluated_slots_is_an_error(straight):
  with pytest.raises(ValueError, match='3 evaluated objects'):
    wosac.scenario_metrics(straight, log_rollouts(straight),
                           max_evaluated=2)
