"""Log replay through the dynamics: expert tracking, action replay, errors."""

import glob

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.data import synthetic
from prefalign.data import womd
from prefalign.sim import dynamics
from prefalign.sim import env
from prefalign.sim import replay

SMALL = womd.ReaderConfig(max_num_objects=8, max_roadgraph_points=600,
                          max_traffic_lights=2)


def _future_error(final):
  sim, log = final.sim_trajectory, final.log_trajectory
  mask = log.valid[..., 11:] & log.valid[..., 10:11]
  err = jnp.hypot(sim.x - log.x, sim.y - log.y)[..., 11:]
  return np.asarray(jnp.where(mask, err, 0.0)), np.asarray(mask)


def test_expert_rollout_tracks_the_log_and_compiles_once():
  scenario = synthetic.straight_road_scenario(invalid_gap=(2, 30, 40))
  state = womd.state_from_scenario(scenario, SMALL).state

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(s):
    return replay.rollout(s, env.EnvConfig(), 'expert')

  final = run(state)
  final = run(state)  # second call: no retrace
  assert int(final.timestep) == 90
  err, mask = _future_error(final)
  assert mask.sum() > 300
  assert err.max() < 1e-3
  # Waymax semantics: a controlled object stays valid through a gap in its
  # log (it coasts on an invalid, i.e. zero, action) and re-joins the log.
  assert np.asarray(final.sim_trajectory.valid)[2, 31:41].all()


def test_bounded_expert_deviates_and_recovers():
  scenario = synthetic.straight_road_scenario(num_vehicles=2)
  # A 3 m lateral jump in the log at step 50 needs far more than 2 m/s^2.
  for s in scenario.tracks[0].states[50:]:
    s.center_y += 3.0
  state = womd.state_from_scenario(scenario, SMALL).state
  tight = env.EnvConfig(dynamics=dynamics.DynamicsConfig(
      max_lon_accel=2.0, max_lat_accel=2.0))
  err, _ = _future_error(jax.jit(replay.rollout, static_argnums=(1, 2))(
      state, tight, 'expert'))
  assert err[0, 50 - 11] > 2.0  # cannot follow the jump at once
  free, _ = _future_error(jax.jit(replay.rollout)(state))
  assert free[0].max() < 1e-3


def test_replay_of_log_actions_drifts_only_when_velocities_disagree():
  scenario = synthetic.straight_road_scenario()
  state = womd.state_from_scenario(scenario, SMALL).state
  err, _ = _future_error(jax.jit(replay.rollout, static_argnums=(1, 2))(
      state, env.EnvConfig(), 'replay'))
  assert err.max() < 1e-3  # synthetic velocities match the positions
  for s in scenario.tracks[1].states:  # logged speed 0.5 m/s too high
    s.velocity_x += 0.5 if s.velocity_x > 0 else -0.5
  state = womd.state_from_scenario(scenario, SMALL).state
  err, _ = _future_error(jax.jit(replay.rollout, static_argnums=(1, 2))(
      state, env.EnvConfig(), 'replay'))
  assert err[1].max() > 0.5


def test_replay_rejects_unknown_mode():
  state = womd.state_from_scenario(synthetic.straight_road_scenario(),
                                   SMALL).state
  with pytest.raises(ValueError, match='mode'):
    replay.rollout(state, env.EnvConfig(), 'teleport')


@pytest.mark.data
def test_real_vehicles_one_step_within_1cm(shared_womd):
  """Inverse-then-forward reproduces every logged vehicle step within 1 cm."""
  files = (glob.glob(str(shared_womd / 'official' / '*.tfrecord')) +
           glob.glob(str(shared_womd / 'real' / 'real.tfrecord-*')))
  states = [e.state for e in womd.read_examples(files)]
  batch = datatypes.stack(states)
  err, valid = jax.jit(replay.one_step_errors)(batch.log_trajectory)
  vehicles = (np.asarray(batch.object_metadata.object_types) == 1)[..., None]
  mask = np.asarray(valid) & vehicles
  assert mask.sum() > 100_000
  assert np.asarray(err)[mask].max() < 0.01
  # Closed loop: the expert tracks every vehicle within 1 cm over 80 steps.
  final = jax.jit(jax.vmap(replay.rollout))(batch)
  err, mask = _future_error(final)
  assert err[mask & vehicles].max() < 0.01
