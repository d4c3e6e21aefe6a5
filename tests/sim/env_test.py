"""Tests for prefalign.sim.env."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.sim import dynamics
from prefalign.sim import env

T = 16  # 11 warm-up steps + 5 simulated ones keep the tests small
N = 5
DT = datatypes.TIME_INTERVAL
EDGE = int(datatypes.MapElementIds.ROAD_EDGE_BOUNDARY)
FIELDS = ('x', 'y', 'z', 'vel_x', 'vel_y', 'yaw', 'valid', 'timestamp_micros',
          'length', 'width', 'height')


def road(half_width=4.0, length=200.0, spacing=10.0):
  """Straight road along +x; edges point so that the road is on the left."""
  xs = np.arange(-50.0, length + 1e-6, spacing, dtype=np.float32)
  right = np.stack([xs, np.full_like(xs, -half_width)], -1)
  left = np.stack([xs[::-1], np.full_like(xs, half_width)], -1)
  xy = np.concatenate([right, left])
  p = len(xy)
  ids = np.repeat(np.array([1, 2], np.int32), len(xs))
  zeros = jnp.zeros(p, jnp.float32)
  return datatypes.RoadgraphPoints(
      x=jnp.asarray(xy[:, 0]), y=jnp.asarray(xy[:, 1]), z=zeros,
      dir_x=zeros, dir_y=zeros, dir_z=zeros,
      types=jnp.full(p, EDGE, jnp.int32), ids=jnp.asarray(ids),
      valid=jnp.ones(p, bool))


def make_state(offset=0.0, curve=0.0):
  """5 objects over 16 steps.

  0: SDC, eastbound at y = -2, accelerating and drifting by ``curve``.
  1: modeled, westbound at y = 2; missing from the log at step 12.
  2: a track that appears at step 11.
  3: a track that leaves the log at step 12.
  4: padding.
  """
  t = np.arange(T) * DT
  x = np.zeros((N, T), np.float32)
  y = np.zeros((N, T), np.float32)
  vx = np.zeros((N, T), np.float32)
  vy = np.zeros((N, T), np.float32)
  yaw = np.zeros((N, T), np.float32)
  x[0] = offset + 10 * t + 0.5 * t**2
  vx[0] = 10 + t
  y[0] = -2 + curve * t**2
  vy[0] = 2 * curve * t
  x[1], y[1], vx[1], yaw[1] = offset + 100 - 8 * t, 2.0, -8.0, np.pi - 1e-6
  x[2], y[2], vx[2] = offset + 40 + 5 * t, -2.0, 5.0
  x[3], y[3], vx[3] = offset + 70 + 1.0 * t, 2.5, 1.0
  valid = np.ones((N, T), bool)
  valid[1, 12] = False
  valid[2, :11] = False
  valid[3, 12:] = False
  valid[4] = False
  full = lambda v: jnp.asarray(np.broadcast_to(v, (N, T)), jnp.float32)
  log = datatypes.Trajectory(
      x=full(x), y=full(y), z=full(0.8), vel_x=full(vx), vel_y=full(vy),
      yaw=full(yaw), valid=jnp.asarray(valid),
      timestamp_micros=jnp.asarray(
          np.broadcast_to(np.arange(T, dtype=np.int32) * 100_000, (N, T))),
      length=full(np.array([[4.5], [4.5], [4.0], [0.8], [1.0]])),
      width=full(np.array([[2.0], [2.0], [1.8], [0.8], [1.0]])),
      height=full(1.6)).fill_invalid()
  meta = datatypes.ObjectMetadata(
      ids=jnp.array([1, 2, 3, 4, -1], jnp.int32),
      object_types=jnp.array([1, 1, 1, 2, 0], jnp.int32),
      is_sdc=jnp.array([1, 0, 0, 0, 0], bool),
      is_modeled=jnp.array([0, 1, 0, 0, 0], bool),
      is_valid=jnp.array([1, 1, 1, 1, 0], bool),
      objects_of_interest=jnp.zeros(N, bool),
      is_controlled=jnp.zeros(N, bool))
  rg = road()
  rg = rg.replace(x=rg.x + offset)
  state = datatypes.SimulatorState(
      sim_trajectory=log, log_trajectory=log,
      log_traffic_light=datatypes.TrafficLights.zeros((1, T)),
      object_metadata=meta, timestep=jnp.array(0, jnp.int32),
      roadgraph_points=rg)
  state.validate()
  return state


def at(traj, t):
  return jax.tree.map(lambda a: a[..., t], traj)


def expert_action(state):
  """Inverse dynamics from the simulated state to the next logged position."""
  nxt = jax.tree.map(
      lambda a: jnp.take(a, state.timestep + 1, axis=-1)[..., None],
      state.log_trajectory)
  pair = jax.tree.map(lambda s, logged: jnp.concatenate([s, logged], -1),
                      state.current_sim_trajectory, nxt)
  return dynamics.inverse(pair, None, 0)


def random_action(seed=0):
  rng = np.random.default_rng(seed)
  return dynamics.Action(
      data=jnp.asarray(rng.uniform(-3, 3, (N, 2)), jnp.float32),
      valid=jnp.ones((N, 1), bool))


def test_reset():
  state = make_state()
  out = env.reset(state)
  assert out.timestep.dtype == jnp.int32 and int(out.timestep) == 10
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(out.sim_trajectory, f)[:, :11],
                                  getattr(state.log_trajectory, f)[:, :11])
  assert not bool(out.sim_trajectory.valid[:, 11:].any())
  np.testing.assert_array_equal(out.sim_trajectory.x[:, 11:], -1.0)
  assert int(out.remaining_timesteps) == T - 11
  out = env.reset(state, env.EnvConfig(init_steps=3))
  assert int(out.timestep) == 2
  assert not bool(out.sim_trajectory.valid[:, 3:].any())


def test_uncontrolled_objects_replay_the_log():
  cfg = env.EnvConfig(controlled_object='sdc')
  state = env.reset(make_state(curve=0.5), cfg)
  action = random_action()
  out = env.step(state, action, cfg)
  assert int(out.timestep) == 11
  sim, log = at(out.sim_trajectory, 11), at(state.log_trajectory, 11)
  for f in ('x', 'y', 'yaw', 'vel_x', 'length'):
    np.testing.assert_array_equal(np.asarray(getattr(sim, f))[[1, 3]],
                                  np.asarray(getattr(log, f))[[1, 3]])
  # Object 2 was invalid at step 10: no injection by default.
  assert not bool(sim.valid[2])
  # The SDC follows the dynamics.
  upd = dynamics.compute_update(
      dynamics.Action(action.data[:1], action.valid[:1]),
      jax.tree.map(lambda a: a[:1, 10:11], state.sim_trajectory))
  np.testing.assert_allclose(sim.x[0], upd.x[0, 0], atol=1e-6)
  np.testing.assert_allclose(sim.yaw[0], upd.yaw[0, 0], atol=1e-6)
  assert abs(float(sim.x[0] - log.x[0])) > 1e-3
  # Uncontrolled object 3 leaves with the log at step 12.
  out = env.step(out, action, cfg)
  assert not bool(out.sim_trajectory.valid[3, 12])
  assert float(out.sim_trajectory.x[3, 12]) == -1.0


def test_expert_actions_follow_the_log():
  cfg = env.EnvConfig(controlled_object='valid')
  state = env.reset(make_state(curve=0.8), cfg)
  log = state.log_trajectory
  step = jax.jit(lambda s: env.step(s, expert_action(s), cfg))
  while int(state.timestep) < T - 1:
    state = step(state)
  sim = state.sim_trajectory
  both = np.asarray(sim.valid & log.valid)
  np.testing.assert_allclose(np.where(both, sim.x, 0),
                             np.where(both, log.x, 0), atol=1e-4)
  np.testing.assert_allclose(np.where(both, sim.y, 0),
                             np.where(both, log.y, 0), atol=1e-4)


def test_validity_rules():
  # VALID, no new objects: controlled = valid at step 10.
  cfg = env.EnvConfig()
  state = env.reset(make_state())
  np.testing.assert_array_equal(env.control_mask(state, cfg),
                                [True, True, False, True, False])
  s1 = env.step(state, random_action(), cfg)
  s2 = env.step(s1, random_action(1), cfg)
  v = np.asarray(s2.sim_trajectory.valid)
  # Controlled objects stay valid when the log drops them (1 and 3 at 12).
  assert v[1, 12] and v[3, 12] and v[0, 12]
  # Object 2 never enters; padding never becomes valid.
  assert not v[2, 11:].any() and not v[4].any()

  # With new objects after warm-up, object 2 is injected from the log and
  # then driven.
  cfg = env.EnvConfig(allow_new_objects_after_warmup=True)
  np.testing.assert_array_equal(env.control_mask(state, cfg),
                                [True, True, True, True, False])
  s1 = env.step(state, random_action(), cfg)
  assert bool(s1.sim_trajectory.valid[2, 11])
  assert float(s1.sim_trajectory.x[2, 11]) == float(
      state.log_trajectory.x[2, 11])
  s2 = env.step(s1, random_action(), cfg)
  upd = dynamics.compute_update(
      dynamics.Action(random_action().data[2:3], jnp.ones((1, 1), bool)),
      jax.tree.map(lambda a: a[2:3, 11:12], s1.sim_trajectory))
  np.testing.assert_allclose(s2.sim_trajectory.x[2, 12], upd.x[0, 0],
                             atol=1e-6)
  assert not bool(s2.sim_trajectory.valid[4].any())


def test_control_masks():
  state = env.reset(make_state())
  masks = {
      'sdc': [1, 0, 0, 0, 0],
      'modeled': [0, 1, 0, 0, 0],
      'non_sdc': [0, 1, 1, 1, 0],
  }
  for kind, want in masks.items():
    got = env.control_mask(state, env.EnvConfig(controlled_object=kind))
    np.testing.assert_array_equal(got, np.array(want, bool))
  assert env.EnvConfig(controlled_object='sdc') == env.EnvConfig(
      controlled_object=env.ControlledObject.SDC)
  with pytest.raises(ValueError):
    env.EnvConfig(controlled_object='everyone')


def test_update_state_by_log():
  state = env.reset(make_state())
  out = env.update_state_by_log(state, 2)
  assert int(out.timestep) == 12
  for f in FIELDS:
    np.testing.assert_array_equal(getattr(out.sim_trajectory, f)[:, :13],
                                  getattr(state.log_trajectory, f)[:, :13])
  assert not bool(out.sim_trajectory.valid[:, 13:].any())


def _stack(states):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def test_batched_vmap_and_direct():
  cfg = env.EnvConfig()
  states = [make_state(offset=o, curve=c)
            for o, c in ((0.0, 0.0), (30.0, 0.5), (-20.0, -0.3))]
  actions = [random_action(i) for i in range(3)]
  want = [env.step(env.reset(s, cfg), a, cfg) for s, a in zip(states, actions)]
  batch, act = _stack(states), _stack(actions)

  reset_b = jax.vmap(functools.partial(env.reset, config=cfg))(batch)
  got = jax.vmap(functools.partial(env.step, config=cfg))(reset_b, act)
  np.testing.assert_array_equal(got.timestep, [11, 11, 11])
  # Directly on the batched state, with a batched timestep.
  direct = env.step(env.reset(batch, cfg), act, cfg)
  assert direct.timestep.shape == (3,)
  for b, w in enumerate(want):
    for f in FIELDS:
      np.testing.assert_allclose(getattr(got.sim_trajectory, f)[b],
                                 getattr(w.sim_trajectory, f), atol=1e-5)
      np.testing.assert_allclose(getattr(direct.sim_trajectory, f)[b],
                                 getattr(w.sim_trajectory, f), atol=1e-5)
  # Different timesteps per scenario.
  mixed = direct.replace(timestep=jnp.array([11, 12, 11], jnp.int32))
  mixed = mixed.replace(sim_trajectory=_stack([
      w.sim_trajectory if b != 1 else env.update_state_by_log(
          w, 1).sim_trajectory for b, w in enumerate(want)]))
  stepped = env.step(mixed, act, cfg)
  np.testing.assert_array_equal(stepped.timestep, [12, 13, 12])
  one = env.step(env.update_state_by_log(want[1], 1), actions[1], cfg)
  np.testing.assert_allclose(stepped.sim_trajectory.x[1],
                             one.sim_trajectory.x, atol=1e-5)
  m = env.metrics(stepped)
  assert m['overlap'][0].shape == (3, N)


def test_jit_compiles_once_and_matches_eager():
  cfg = env.EnvConfig()

  @chex.assert_max_traces(n=1)
  def traced_step(state, action):
    return env.step(state, action, cfg), env.metrics(state)

  step_jit = jax.jit(traced_step)
  state = env.reset(make_state(curve=0.4), cfg)
  eager = state
  for i in range(4):
    action = random_action(i)
    state, m = step_jit(state, action)
    m_eager = env.metrics(eager)
    eager = env.step(eager, action, cfg)
    for f in FIELDS:
      np.testing.assert_allclose(getattr(state.sim_trajectory, f),
                                 getattr(eager.sim_trajectory, f), atol=1e-5)
    for k in m:
      np.testing.assert_allclose(m[k][0], m_eager[k][0], atol=1e-5)
      np.testing.assert_array_equal(m[k][1], m_eager[k][1])
  chex.clear_trace_counter()

  traces = []

  def counted_reset(state):
    traces.append(1)
    return env.reset(state, cfg)

  reset_jit = jax.jit(counted_reset)
  for o in (0.0, 5.0, 9.0):
    r = reset_jit(make_state(offset=o))
  assert len(traces) == 1
  assert int(r.timestep) == 10


def test_metrics():
  state = env.reset(make_state())
  m = env.metrics(state)
  val, valid = m['log_divergence']
  np.testing.assert_array_equal(valid, [True, True, False, True, False])
  np.testing.assert_allclose(val, 0.0)
  # Put object 3 (a pedestrian at y = 2.5) onto the SDC and the SDC
  # half off the road.
  sim = state.sim_trajectory
  sim = sim.replace(x=sim.x.at[3, 10].set(sim.x[0, 10] + 1.0),
                    y=sim.y.at[3, 10].set(-4.0).at[0, 10].set(-3.5))
  m = env.metrics(state.replace(sim_trajectory=sim))
  np.testing.assert_array_equal(m['overlap'][0], [1, 0, 0, 1, 0])
  np.testing.assert_array_equal(m['overlap'][1],
                                [True, True, False, True, False])
  np.testing.assert_array_equal(m['offroad'][0], [1, 0, 0, 1, 0])
  np.testing.assert_allclose(m['log_divergence'][0][0], 1.5, atol=1e-5)
  # Without road edges nothing is off-road and offroad is not valid.
  rg = state.roadgraph_points
  rg = rg.replace(types=jnp.full_like(rg.types, 2))
  m = env.metrics(state.replace(sim_trajectory=sim, roadgraph_points=rg))
  assert not bool(m['offroad'][0].any()) and not bool(m['offroad'][1].any())
