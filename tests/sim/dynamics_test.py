"""Tests for prefalign.sim.dynamics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.sim import dynamics

DT = datatypes.TIME_INTERVAL
CFG = dynamics.DynamicsConfig()
BOUNDED = dynamics.DynamicsConfig(max_lon_accel=15.0, max_lat_accel=15.0)


def make_traj(x, y, yaw, vx, vy, valid=None, z=None, length=4.5, width=2.0,
              height=1.6):
  """Trajectory from (N, T) numpy arrays (dimensions broadcast)."""
  x = np.asarray(x, np.float32)
  shape = x.shape
  full = lambda v: np.broadcast_to(np.asarray(v, np.float32), shape).copy()
  valid = np.ones(shape, bool) if valid is None else np.asarray(valid, bool)
  ts = np.broadcast_to(np.arange(shape[-1], dtype=np.int32) * 100_000, shape)
  traj = datatypes.Trajectory(
      x=jnp.asarray(x), y=jnp.asarray(full(y)),
      z=jnp.asarray(full(0.0 if z is None else z)),
      vel_x=jnp.asarray(full(vx)), vel_y=jnp.asarray(full(vy)),
      yaw=jnp.asarray(full(yaw)), valid=jnp.asarray(valid),
      timestamp_micros=jnp.asarray(ts), length=jnp.asarray(full(length)),
      width=jnp.asarray(full(width)), height=jnp.asarray(full(height)))
  traj.validate()
  return traj.fill_invalid()


def random_smooth_traj(seed, num_objects=6, num_steps=40):
  """Curvy, accelerating tracks with logged velocity/yaw slightly off."""
  rng = np.random.default_rng(seed)
  t = np.arange(num_steps) * DT
  speed0 = rng.uniform(0.0, 15.0, (num_objects, 1))
  accel = rng.uniform(-2.0, 2.0, (num_objects, 1))
  yaw_rate = rng.uniform(-0.4, 0.4, (num_objects, 1))
  yaw0 = rng.uniform(-np.pi, np.pi, (num_objects, 1))
  speed = np.maximum(speed0 + accel * t, 0.0)
  heading = yaw0 + yaw_rate * t
  vx, vy = speed * np.cos(heading), speed * np.sin(heading)
  x0 = rng.uniform(-100, 100, (num_objects, 1))
  y0 = rng.uniform(-100, 100, (num_objects, 1))
  x = x0 + np.cumsum(vx, axis=1) * DT
  y = y0 + np.cumsum(vy, axis=1) * DT
  # Logged velocities and headings are noisy: the inverse must use them as
  # they are.
  vx_log = vx + rng.normal(0, 0.2, vx.shape)
  vy_log = vy + rng.normal(0, 0.2, vy.shape)
  yaw_log = datatypes.wrap_yaw(heading + rng.normal(0, 0.05, heading.shape))
  return make_traj(x, y, np.asarray(yaw_log), vx_log, vy_log)


def step_slice(traj, t):
  return jax.tree.map(lambda a: a[..., t:t + 1], traj)


def check_one_step_reproduction(traj, tol=1e-4):
  for t in range(traj.num_timesteps - 1):
    action = dynamics.inverse(traj, None, t, BOUNDED)
    assert np.all(np.abs(action.data) < 15.0)  # smooth motion: never clipped
    upd = dynamics.compute_update(action, step_slice(traj, t), BOUNDED)
    np.testing.assert_allclose(upd.x[..., 0], traj.x[..., t + 1], atol=tol,
                               rtol=0)
    np.testing.assert_allclose(upd.y[..., 0], traj.y[..., t + 1], atol=tol,
                               rtol=0)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_inverse_then_forward_random_smooth(seed):
  check_one_step_reproduction(random_smooth_traj(seed))


def test_inverse_then_forward_reversing_vehicle():
  t = np.arange(30) * DT
  # Heading +x, backing up at 2 m/s while braking, i.e. x decreasing.
  v = -2.0 + 0.5 * t
  x = 10.0 + np.cumsum(v) * DT
  traj = make_traj(x[None], 3.0, 0.0, v[None], 0.0)
  check_one_step_reproduction(traj)
  # The forward dynamics keep the heading (no flip to pi) while reversing.
  action = dynamics.inverse(traj, None, 0)
  upd = dynamics.compute_update(action, step_slice(traj, 0))
  assert abs(float(upd.vel_x[0, 0])) > CFG.min_heading_speed
  np.testing.assert_allclose(upd.yaw, 0.0, atol=1e-6)


def test_inverse_then_forward_stopped_vehicle():
  traj = make_traj(np.full((1, 10), 5.0), -2.0, 1.0, 0.0, 0.0)
  check_one_step_reproduction(traj)
  data, valid = dynamics.inverse(traj, None, 3)
  np.testing.assert_allclose(data, 0.0, atol=1e-6)
  assert bool(valid.all())
  upd = dynamics.compute_update(dynamics.Action(data, valid),
                                step_slice(traj, 3))
  np.testing.assert_allclose(upd.yaw, 1.0, atol=1e-7)


def test_forward_then_inverse_recovers_action():
  rng = np.random.default_rng(3)
  n = 64
  x = rng.uniform(-50, 50, (n, 1))
  y = rng.uniform(-50, 50, (n, 1))
  yaw = rng.uniform(-np.pi, np.pi, (n, 1))
  vx = rng.uniform(-10, 10, (n, 1))
  vy = rng.uniform(-10, 10, (n, 1))
  traj0 = make_traj(x, y, yaw, vx, vy)
  act = rng.uniform(-10, 10, (n, 2)).astype(np.float32)
  upd = dynamics.forward(jnp.asarray(act), jnp.ones((n,), bool), traj0)
  traj = make_traj(np.concatenate([x, upd.x], 1),
                   np.concatenate([y, upd.y], 1),
                   np.concatenate([yaw, upd.yaw], 1),
                   np.concatenate([vx, upd.vel_x], 1),
                   np.concatenate([vy, upd.vel_y], 1))
  data, valid = dynamics.inverse(traj, None, 0)
  assert bool(valid.all())
  # Positions of ~50 m in float32, divided by dt^2, give ~1e-3 m/s^2 noise.
  np.testing.assert_allclose(data, act, atol=5e-3)


def test_clipping():
  traj0 = make_traj(np.zeros((2, 1)), 0.0, 0.3, 5.0, 0.0)
  big = jnp.array([[40.0, -30.0], [-100.0, 2.0]])
  clipped = jnp.array([[15.0, -15.0], [-15.0, 2.0]])
  valid = jnp.ones((2,), bool)
  upd_big = dynamics.forward(big, valid, traj0, BOUNDED)
  upd_clip = dynamics.forward(clipped, valid, traj0, BOUNDED)
  for f in ('x', 'y', 'yaw', 'vel_x', 'vel_y'):
    np.testing.assert_array_equal(getattr(upd_big, f), getattr(upd_clip, f))
  # A 1 m jump in one step needs ~100 m/s^2: the inverse clips it.
  traj = make_traj(np.array([[0.0, 1.0]]), 0.0, 0.0, 0.0, 0.0)
  data, _ = dynamics.inverse(traj, None, 0, BOUNDED)
  np.testing.assert_allclose(data, [[15.0, 0.0]], atol=1e-5)
  # Unbounded by default: the same jump is reproduced exactly.
  data, _ = dynamics.inverse(traj, None, 0)
  np.testing.assert_allclose(data, [[100.0, 0.0]], rtol=1e-5)
  tight = dynamics.DynamicsConfig(max_lon_accel=2.0, max_lat_accel=1.0)
  traj = make_traj(np.array([[0.0, 0.0]]), np.array([[0.0, -1.0]]), 0.0, 0.0,
                   0.0)
  data, _ = dynamics.inverse(traj, None, 0, tight)
  np.testing.assert_allclose(data, [[0.0, -1.0]], atol=1e-5)


def test_invalid_action_coasts_and_invalid_pair_is_zero():
  traj0 = make_traj(np.zeros((1, 1)), 0.0, 0.0, 3.0, 0.0)
  upd = dynamics.forward(jnp.array([[5.0, 5.0]]), jnp.array([False]), traj0)
  np.testing.assert_allclose(upd.x, 0.3, atol=1e-6)
  np.testing.assert_allclose(upd.vel_x, 3.0, atol=1e-6)
  assert not bool(upd.valid.any())
  traj = make_traj(np.array([[0.0, 1.0, 2.0]]), 0.0, 0.0, 10.0, 0.0,
                   valid=np.array([[True, False, True]]))
  data, valid = dynamics.inverse(traj, None, 0)
  np.testing.assert_array_equal(data, 0.0)
  assert not bool(valid.any())


def test_heading_rule():
  # yaw, (vx, vy) at t, action -> expected yaw at t + 1.
  yaw = np.array([[0.0], [0.0], [0.5], [0.0], [np.pi - 0.01], [0.2]])
  vx = np.array([[5.0], [-5.0], [0.1], [-4.0], [-3.0], [0.0]])
  vy = np.array([[0.0], [0.0], [0.1], [1.0], [-0.1], [4.0]])
  traj0 = make_traj(np.zeros((6, 1)), 0.0, yaw, vx, vy)
  upd = dynamics.forward(jnp.zeros((6, 2)), jnp.ones((6,), bool), traj0)
  got = np.asarray(upd.yaw[:, 0])
  np.testing.assert_allclose(got[0], 0.0, atol=1e-6)  # forward
  np.testing.assert_allclose(got[1], 0.0, atol=1e-6)  # reversing: kept
  np.testing.assert_allclose(got[2], 0.5, atol=1e-7)  # slow: held
  # Reversing with a lateral component: heading = direction of -v.
  np.testing.assert_allclose(got[3], np.arctan2(-1.0, 4.0), atol=1e-5)
  # Wrapped into [-pi, pi).
  assert -np.pi <= got[4] < np.pi
  np.testing.assert_allclose(
      datatypes.wrap_yaw(got[4] - np.arctan2(-0.1, -3.0)), 0.0, atol=1e-5)
  # Sideways motion of a fast object turns it along the velocity.
  np.testing.assert_allclose(got[5], np.pi / 2, atol=1e-5)
  # The threshold is configurable.
  slow = dynamics.DynamicsConfig(min_heading_speed=0.01)
  upd = dynamics.forward(jnp.zeros((6, 2)), jnp.ones((6,), bool), traj0,
                         slow)
  np.testing.assert_allclose(upd.yaw[2, 0], np.pi / 4, atol=1e-5)


def test_inverse_all_matches_inverse_and_batched_timestep():
  traj = random_smooth_traj(4, num_steps=12)
  data, valid = dynamics.inverse_all(traj)
  assert data.shape == (6, 11, 2) and valid.shape == (6, 11)
  for t in range(11):
    a = dynamics.inverse(traj, None, t)
    np.testing.assert_allclose(data[:, t], a.data, atol=1e-6)
    np.testing.assert_array_equal(valid[:, t], a.valid[:, 0])
  # Batched trajectory with one timestep per batch element.
  batch = jax.tree.map(lambda a: jnp.stack([a, a]), traj)
  a = dynamics.inverse(batch, None, jnp.array([2, 7]))
  np.testing.assert_allclose(a.data[0], data[:, 2], atol=1e-6)
  np.testing.assert_allclose(a.data[1], data[:, 7], atol=1e-6)


def test_inverse_all_closed_loop_replays_log():
  traj = random_smooth_traj(5, num_steps=60)
  valid = np.ones((6, 60), bool)
  valid[2, 20:25] = False  # a gap: the object restarts from the log
  traj = make_traj(traj.x, traj.y, traj.yaw, traj.vel_x, traj.vel_y, valid)
  data, act_valid = dynamics.inverse_all(traj, closed_loop=True)
  # Replay open loop from the first state, restarting where the log does.
  state = step_slice(traj, 0)
  xs = [state.x]
  for t in range(59):
    upd = dynamics.compute_update(
        dynamics.Action(data[:, t], act_valid[:, t, None]), state)
    log_next = step_slice(traj, t + 1)
    moved = log_next.replace(x=upd.x, y=upd.y, yaw=upd.yaw, vel_x=upd.vel_x,
                             vel_y=upd.vel_y)
    keep = act_valid[:, t, None]
    state = jax.tree.map(lambda a, b, k=keep: jnp.where(k, a, b), moved,
                         log_next)
    xs.append(state.x)
  xs = np.concatenate(xs, 1)
  np.testing.assert_allclose(np.where(valid, xs, 0),
                             np.where(valid, traj.x, 0), atol=1e-3)
  # The per-step log actions, replayed open loop, drift (noisy velocities).
  open_data, _ = dynamics.inverse_all(traj)
  assert not np.allclose(open_data, data, atol=1e-2)


def make_pair():
  """Sim and log trajectories of 4 objects over 3 steps."""
  log = make_traj(
      x=np.array([[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]]),
      y=np.array([[0, 0, 0], [5, 5, 5], [-5, -5, -5], [8, 8, 8]]),
      yaw=0.0, vx=10.0, vy=0.0,
      valid=np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], bool),
      z=np.array([[0.0, 0.1, 0.2]] * 4), length=np.array([[4.0, 4.0, 5.0]]))
  sim = make_traj(
      x=np.array([[0, 0.5, 0], [10, 10.5, 0], [20, 20.5, 0], [30, 30.5, 0]]),
      y=0.0, yaw=0.0, vx=5.0, vy=0.0,
      valid=np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [1, 1, 0]], bool),
      z=0.7, length=4.0)
  return sim, log


@pytest.mark.parametrize('inject', [False, True])
def test_apply_trajectory_update(inject):
  sim, log = make_pair()
  t = 1
  upd = dynamics.TrajectoryUpdate(
      x=jnp.full((4, 1), 99.0), y=jnp.full((4, 1), 98.0),
      yaw=jnp.full((4, 1), 0.5), vel_x=jnp.full((4, 1), 1.0),
      vel_y=jnp.full((4, 1), 2.0), valid=jnp.zeros((4, 1), bool))
  controlled = jnp.array([True, True, True, False])
  out = dynamics.apply_trajectory_update(sim, log, upd, controlled, t, inject)
  # Steps other than t + 1 are untouched.
  for f in ('x', 'valid', 'z'):
    np.testing.assert_array_equal(getattr(out, f)[:, :2],
                                  getattr(sim, f)[:, :2])
  # Controlled and valid: the update, z and dims carried from t, stays valid
  # even where the log is invalid (object 1) and the update says invalid.
  for i in (0, 1):
    assert bool(out.valid[i, 2])
    assert float(out.x[i, 2]) == 99.0 and float(out.y[i, 2]) == 98.0
    assert float(out.yaw[i, 2]) == 0.5 and float(out.vel_y[i, 2]) == 2.0
    assert float(out.z[i, 2]) == pytest.approx(0.7)
    assert float(out.length[i, 2]) == 4.0
  np.testing.assert_array_equal(out.timestamp_micros[:2, 2],
                                log.timestamp_micros[:2, 2])
  # Controlled but invalid now (object 2): injected from the log or not.
  if inject:
    assert bool(out.valid[2, 2]) and float(out.x[2, 2]) == 22.0
  else:
    assert not bool(out.valid[2, 2]) and float(out.x[2, 2]) == -1.0
  # Uncontrolled (object 3): the log at t + 1, dims included.
  assert bool(out.valid[3, 2]) and float(out.x[3, 2]) == 32.0
  assert float(out.length[3, 2]) == 5.0
  assert float(out.z[3, 2]) == pytest.approx(0.2)


def test_jit_matches_eager():
  traj = random_smooth_traj(6, num_steps=5)
  a = dynamics.inverse(traj, None, 2)
  f = jax.jit(dynamics.compute_update, static_argnames='config')
  u1 = f(a, step_slice(traj, 2))
  u2 = dynamics.compute_update(a, step_slice(traj, 2))
  for f1, f2 in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
    np.testing.assert_allclose(f1, f2, atol=1e-6)
  g = jax.jit(dynamics.inverse_all, static_argnames=('config', 'closed_loop'))
  for cl in (False, True):
    np.testing.assert_allclose(g(traj, closed_loop=cl)[0],
                               dynamics.inverse_all(traj, closed_loop=cl)[0],
                               atol=1e-5)


def test_inverse_rejects_timestep_as_metadata():
  traj = random_smooth_traj(7, num_steps=4)
  with pytest.raises(TypeError):
    dynamics.inverse(traj, 2)
