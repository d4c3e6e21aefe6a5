"""The bridge to Waymax: conversion, dynamics, environment, actor, metrics.

Everything but the import guard needs the real Waymax (``waymo-waymax``,
installed from its git repository with TensorFlow) and skips without it.
"""

import functools
import importlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign import rollout
from prefalign.data import womd
from prefalign.sim import dynamics
from prefalign.sim import env as sim_env
from tests.rollout_test import CONFIG  # noqa: E402
from tests.rollout_test import scenes_and_model  # noqa: E402

SKIP = ('Waymax is not installed (waymo-waymax comes from its git '
        'repository, with TensorFlow; README "Running inside Waymax")')
N = 10  # the object rows of those scenes


def test_a_package_that_is_not_waymax_is_refused(monkeypatch):
  """The PyPI project under Waymax's import name must not pass for it."""
  impostor = types.ModuleType('waymax')
  impostor.__file__ = '/site-packages/waymax/__init__.py'
  monkeypatch.setitem(sys.modules, 'waymax', impostor)
  for sub in ('agents', 'config', 'datatypes', 'dynamics', 'env', 'metrics'):
    monkeypatch.delitem(sys.modules, f'waymax.{sub}', raising=False)
  monkeypatch.delitem(sys.modules, 'prefalign.integrations.waymax',
                      raising=False)
  with pytest.raises(ImportError, match='waymo-waymax'):
    importlib.import_module('prefalign.integrations.waymax')
  # Importing the package itself never touches Waymax.
  assert 'prefalign.integrations.waymax' not in sys.modules


@pytest.fixture(scope='module')
def wx():
  pytest.importorskip('waymax.env', reason=SKIP)
  return importlib.import_module('prefalign.integrations.waymax')


@pytest.fixture(scope='module')
def setup():
  """Two synthetic scenes of N = 10 rows and a small random model (the
  sampler tests' own)."""
  state, _, params = scenes_and_model()
  return state, params


def _leaves_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  return ta, tb


def test_round_trip_conversion(wx, setup):
  state, _ = setup
  wx_dt = wx.wx_datatypes
  for s in (state, jax.tree.map(lambda a: a[0], state)):
    there = wx.to_waymax(s)
    assert isinstance(there, wx_dt.SimulatorState)
    assert isinstance(there.log_trajectory, wx_dt.Trajectory)
    assert isinstance(there.roadgraph_points, wx_dt.RoadgraphPoints)
    assert isinstance(there.log_traffic_light, wx_dt.TrafficLights)
    assert isinstance(there.object_metadata, wx_dt.ObjectMetadata)
    back = wx.from_waymax(there)
    assert isinstance(back, datatypes.SimulatorState)
    _leaves_equal(back, s)
    back.validate()
  # Waymax's own checks accept what we give it.
  wx.to_waymax(state.log_trajectory).validate()
  wx.to_waymax(state.roadgraph_points).validate()
  one = jax.tree.map(lambda a: a[0], state)
  assert wx.to_waymax(one).num_objects == N
  # Derived properties agree (Waymax computes them itself).
  np.testing.assert_allclose(
      np.asarray(wx.to_waymax(state.log_trajectory).bbox_corners),
      np.asarray(sim_env.geometry.box_corners(
          state.log_trajectory.x, state.log_trajectory.y,
          state.log_trajectory.length, state.log_trajectory.width,
          state.log_trajectory.yaw)), atol=1e-5)
  act = dynamics.Action(data=jnp.ones((2, N, 2)),
                        valid=jnp.ones((2, N, 1), bool))
  _leaves_equal(wx.from_waymax(wx.to_waymax(act)), act)
  with pytest.raises(TypeError, match='cannot convert'):
    wx.to_waymax(np.zeros(3))


def test_waymax_env_steps_as_ours(wx, setup):
  """Reset, then random actions: Waymax's environment on our dynamics model
  and ours give the same whole trajectories, log replay included."""
  state, _ = setup
  one = jax.tree.map(lambda a: a[0], state)
  env = wx.make_environment(N)
  ours = sim_env.StepEnvironment()

  @jax.jit
  def run(s, key):
    a = env.reset(wx.to_waymax(s))
    b = ours.reset(s)
    for k in jax.random.split(key, 30):
      act = dynamics.Action(
          data=3.0 * jax.random.normal(k, (N, 2)),
          valid=jnp.ones((N, 1), bool))
      a = env.step(a, wx.to_waymax(act))
      b = ours.step(b, act)
    return wx.from_waymax(a), b

  a, b = run(one, jax.random.key(2))
  assert int(a.timestep) == int(b.timestep) == 40
  valid = np.asarray(b.sim_trajectory.valid)
  np.testing.assert_array_equal(np.asarray(a.sim_trajectory.valid), valid)
  for name in ('x', 'y', 'yaw', 'vel_x', 'vel_y'):
    np.testing.assert_allclose(
        np.asarray(getattr(a.sim_trajectory, name))[valid],
        np.asarray(getattr(b.sim_trajectory, name))[valid], atol=1e-4,
        err_msg=name)
  # The inverse round-trips through Waymax's interface too.
  inv = env.dynamics.inverse(wx.to_waymax(b.sim_trajectory),
                             wx.to_waymax(b.object_metadata), 12)
  ours_inv = dynamics.inverse(b.sim_trajectory, None, 12)
  np.testing.assert_allclose(np.asarray(inv.data), np.asarray(ours_inv.data),
                             atol=1e-4)


def _max_gap(a: datatypes.Trajectory, b: datatypes.Trajectory, valid):
  return max(float(np.max(np.abs(np.asarray(getattr(a, f)) -
                                 np.asarray(getattr(b, f)))[valid]))
             for f in ('x', 'y'))


@pytest.mark.parametrize('dynamics_name', ['acceleration', 'state'])
def test_rollout_through_waymax_equals_ours(wx, setup, dynamics_name):
  """Waymax's own ``env.rollout`` with our actor, and the sampler handed a
  Waymax environment, reproduce the native sampler for the same key."""
  state, params = setup
  model = (wx.AccelerationDynamics() if dynamics_name == 'acceleration' else
           wx.wx_dynamics.StateDynamics())
  env = wx.make_environment(N, dynamics_model=model)
  rng = jax.random.key(7)
  # Waymax's rollout gives the actor the first half of its split key.
  actor_key = jax.random.split(rng, 2)[0]
  one = jax.tree.map(lambda a: a[:1], state)
  native = jax.jit(functools.partial(
      rollout.sample_rollouts, config=CONFIG, num_rollouts=1))(
          params, one, actor_key)

  actor = wx.actor(CONFIG, dynamics_model=model)
  out = jax.jit(functools.partial(
      wx.wx_env.rollout, actor=actor, env=env, rollout_num_steps=80))(
          wx.to_waymax(jax.tree.map(lambda a: a[0], state)), rng=rng,
          actor_params=params)
  final = wx.from_waymax(jax.tree.map(lambda a: a[-1], out.state))
  assert int(final.timestep) == 90
  now = datatypes.CURRENT_TIME_INDEX
  valid = np.asarray(native.valid)[0, 0]
  sim = jax.tree.map(lambda a: a[:, now + 1:], final.sim_trajectory)
  ref = jax.tree.map(lambda a: a[0, 0], native.trajectory)
  gap = _max_gap(sim, ref, valid)
  assert gap < 1e-4, gap
  np.testing.assert_array_equal(np.asarray(sim.valid)[valid], True)
  # Waymax's metrics were computed along the way.
  assert out.metrics['overlap'].value.shape == (81, N)

  # The very same sampler, handed the Waymax environment, 4 rollouts of 2
  # scenarios.
  def sampler(e):
    return jax.jit(functools.partial(rollout.sample_rollouts, config=CONFIG,
                                     num_rollouts=4, env=e))

  in_waymax = sampler(wx.WaymaxEnvironment(env))
  a = in_waymax(params, state, rng)
  b = sampler(None)(params, state, rng)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  valid = np.asarray(b.trajectory.valid)
  np.testing.assert_array_equal(np.asarray(a.trajectory.valid), valid)
  gap = _max_gap(a.trajectory, b.trajectory, valid)
  assert gap < 1e-4, gap
  in_waymax(params, state, jax.random.key(8))
  assert in_waymax._cache_size() == 1


def test_other_waymax_dynamics_run_the_sampler(wx, setup):
  """With Waymax's bicycle model the actions are its inverse of our next
  state: the rollouts run and stay close to ours while the model's limits
  allow."""
  state, params = setup
  env = wx.make_environment(
      N, dynamics_model=wx.wx_dynamics.InvertibleBicycleModel())
  out = jax.jit(functools.partial(
      rollout.sample_rollouts, config=CONFIG, num_rollouts=2,
      env=wx.WaymaxEnvironment(env)))(params, state, jax.random.key(3))
  valid = np.asarray(out.trajectory.valid)
  assert valid.any()
  assert np.isfinite(np.asarray(out.trajectory.x)[valid]).all()


def test_environment_is_checked(wx, setup):
  state, params = setup
  with pytest.raises(ValueError, match='controlled_object'):
    wx.WaymaxEnvironment(wx.make_environment(
        N, controlled_object=wx.wx_config.ObjectType.SDC))
  with pytest.raises(ValueError, match='max_num_objects=12'):
    rollout.sample_rollouts(params, state, jax.random.key(0), config=CONFIG,
                            env=wx.WaymaxEnvironment(wx.make_environment(12)))
  with pytest.raises(TypeError, match='Waymax environment'):
    wx.WaymaxEnvironment(sim_env.StepEnvironment())


def test_waymax_metrics_agree_with_our_geometry(wx, setup):
  """Overlap and off-road by Waymax and by ``sim.env.metrics`` on the same
  simulated states (closed-loop rollouts of an untrained model, which
  collide and leave the road often)."""
  state, params = setup
  out = jax.jit(functools.partial(
      rollout.sample_rollouts, config=CONFIG, num_rollouts=8))(
          params, state, jax.random.key(4))
  traj = out.trajectory  # (B, R, N, 80)
  b, r = traj.x.shape[:2]
  # One simulator state per (scenario, rollout, step).
  flat = jax.tree.map(lambda a: jnp.moveaxis(a, -1, 2).reshape(-1, N, 1),
                      traj)
  steps = flat.x.shape[0] // (b * r)
  rows = lambda a: jnp.repeat(a, r * steps, axis=0)
  states = datatypes.SimulatorState(
      sim_trajectory=flat, log_trajectory=flat,
      log_traffic_light=jax.tree.map(lambda a: rows(a)[..., :1],
                                     state.log_traffic_light),
      object_metadata=jax.tree.map(rows, state.object_metadata),
      timestep=jnp.zeros(flat.x.shape[0], jnp.int32),
      roadgraph_points=jax.tree.map(rows, state.roadgraph_points))

  @jax.jit
  def both(s):
    w = wx.to_waymax(wx.with_wosac_road_edges(s))
    return (wx.wx_metrics.OverlapMetric().compute(w),
            wx.wx_metrics.OffroadMetric().compute(w), sim_env.metrics(s),
            sim_env.geometry.signed_distance_to_road_edge(
                jax.tree.map(lambda a: a[..., 0], s.sim_trajectory),
                s.roadgraph_points))

  rg = wx.with_wosac_road_edges(state.roadgraph_points)
  assert not np.any(np.asarray(rg.types) ==
                    datatypes.MapElementIds.ROAD_EDGE_UNKNOWN)
  continued = np.asarray(rg.ids) == np.roll(np.asarray(rg.ids), 1, -1)
  assert np.all(np.hypot(np.asarray(rg.dir_x), np.asarray(rg.dir_y))[
      continued & np.asarray(rg.valid)] > 0.5)
  np.testing.assert_array_equal(np.asarray(rg.x),
                                np.asarray(state.roadgraph_points.x))
  w_overlap, w_offroad, ours, dist = both(states)
  valid = np.asarray(flat.valid[..., 0])
  ov_w = np.asarray(w_overlap.value)[valid]
  ov_o = np.asarray(ours['overlap'][0])[valid]
  assert ov_o.sum() > 0  # the check sees overlaps
  np.testing.assert_array_equal(ov_w, ov_o)
  off_w = np.asarray(w_offroad.value)[valid] > 0
  off_o = np.asarray(ours['offroad'][0])[valid] > 0
  assert 0 < off_o.sum() < off_o.size
  d = np.asarray(dist)[valid]
  np.testing.assert_array_equal(off_o, d > 0)
  # Waymax signs by the nearest road-edge *point*, we by the nearest
  # segment: they may disagree only within a short distance of the edge.
  near = np.abs(d) < 0.1
  disagree = off_w != off_o
  assert not (disagree & ~near).any(), np.asarray(dist)[valid][disagree]
  assert disagree.mean() < 0.01, disagree.mean()


def test_no_dependency_names_the_squatted_distribution():
  """``waymax`` on PyPI is not Waymax: no requirement of any extra may name
  it (Waymax is ``waymo-waymax``, from its git repository)."""
  import pathlib
  import re

  import tomllib
  meta = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] /
                        'pyproject.toml').read_text())['project']
  reqs = list(meta['dependencies'])
  for extra in meta.get('optional-dependencies', {}).values():
    reqs += extra
  names = {re.match(r'[A-Za-z0-9_.\-]+', r).group(0).lower() for r in reqs}
  assert 'waymax' not in names
  assert 'tensorflow>=2.11' in meta['optional-dependencies']['waymax-deps']


def test_evaluation_inside_waymax_scores_as_natively(wx, tmp_path):
  """``--config.evaluate.simulator=waymax``: the evaluate stage samples in
  Waymax and scores what the native simulator scores."""
  del wx
  import json
  import shutil

  from experiments import stages
  from experiments.configs import evaluate
  config = evaluate.get_config('runlocal')
  config.stages = ('data', 'pretrain', 'evaluate')
  config.data.num_scenarios = 4
  config.data.num_heldout_scenarios = 2
  config.pretrain.num_steps = 2
  config.pretrain.eval_every = 2
  config.pretrain.checkpoint_every = 2
  config.evaluate.num_rollouts = 2
  config.evaluate.max_scenarios = 2
  config.evaluate.max_num_objects = 16
  config.evaluate.num_animations = 0
  native = tmp_path / 'native'
  stages.run(config, str(native))
  inside = tmp_path / 'waymax'
  shutil.copytree(native, inside)
  shutil.rmtree(inside / 'evaluate')
  config.evaluate.simulator = 'waymax'
  stages.run(config, str(inside))
  reports = [json.loads((d / 'evaluate' / 'report.json').read_text())
             for d in (native, inside)]
  assert reports[1]['simulator'] == 'waymax'
  a, b = (r['sets']['sumo_heldout']['per_scenario'] for r in reports)
  assert len(a) == len(b) == 2
  for ra, rb in zip(a, b):
    for name in ('metametric', 'min_average_displacement_error',
                 'simulated_collision_rate'):
      assert rb['2025']['model'][name] == pytest.approx(
          ra['2025']['model'][name], abs=1e-4), name


@pytest.mark.data
def test_waymax_metrics_agree_on_real_logs(wx, shared_womd):
  """Overlap and off-road of logged WOMD states (the official file and
  four converted real scenarios, every 10th step)."""
  files = [str(shared_womd / 'official' / 'motion_data_one_scenario.tfrecord'),
           str(sorted((shared_womd / 'real').glob('real.tfrecord-*'))[0])]
  examples = [next(womd.read_examples(files[0]))] + list(
      womd.read_examples(files[1]))[:4]

  @jax.jit
  def both(s):
    w = wx.to_waymax(wx.with_wosac_road_edges(s))
    cur = jax.tree.map(lambda a: a[..., 0], s.current_sim_trajectory)
    return (wx.wx_metrics.OverlapMetric().compute(w).value,
            wx.wx_metrics.OffroadMetric().compute(w).value,
            sim_env.metrics(s)['overlap'][0],
            sim_env.geometry.signed_distance_to_road_edge(
                cur, s.roadgraph_points))

  counts = dict(objects=0, overlap=0, offroad=0, disagree=0, far=0)
  for ex in examples:
    logged = sim_env.reset(ex.state, sim_env.EnvConfig(init_steps=91))
    for t in range(0, 91, 10):
      s = logged.replace(timestep=jnp.int32(t))
      ov_w, off_w, ov_o, d = both(s)
      v = np.asarray(s.sim_trajectory.valid[:, t])
      np.testing.assert_array_equal(np.asarray(ov_w)[v] > 0,
                                    np.asarray(ov_o)[v] > 0)
      off_w, d = np.asarray(off_w)[v] > 0, np.asarray(d)[v]
      counts['objects'] += int(v.sum())
      counts['overlap'] += int((np.asarray(ov_o)[v] > 0).sum())
      counts['offroad'] += int(off_w.sum())
      counts['disagree'] += int((off_w != (d > 0)).sum())
      counts['far'] += int(((off_w != (d > 0)) & (np.abs(d) >= 0.1)).sum())
  assert counts['overlap'] > 0 and counts['offroad'] > 0, counts
  assert counts['far'] == 0, counts
  assert counts['disagree'] <= 0.005 * counts['objects'], counts
