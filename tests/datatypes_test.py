"""Datatypes: shapes, validate(), pytree behaviour under jit / vmap / stack."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.data import synthetic
from prefalign.data import womd

SMALL = womd.ReaderConfig(max_num_objects=8, max_roadgraph_points=600,
                          max_traffic_lights=2)


@pytest.fixture(scope='module')
def state():
  return womd.state_from_scenario(synthetic.straight_road_scenario(),
                                  SMALL).state


def test_enum_values_match_womd():
  assert datatypes.ObjectTypeIds.PEDESTRIAN == 2
  assert datatypes.MapElementIds.ROAD_LINE_UNKNOWN == 5
  assert datatypes.MapElementIds.ROAD_LINE_PASSING_DOUBLE_YELLOW == 13
  assert datatypes.MapElementIds.ROAD_EDGE_MEDIAN == 16
  assert datatypes.MapElementIds.SPEED_BUMP == 19
  assert datatypes.TrafficLightStates.FLASHING_CAUTION == 8


@pytest.mark.parametrize('batch', [(), (3,), (2, 5)])
def test_zeros_and_validate(batch):
  traj = datatypes.Trajectory.zeros(batch + (4, 91))
  traj.validate()
  assert traj.shape == batch + (4, 91)
  assert (traj.num_objects, traj.num_timesteps) == (4, 91)
  assert traj.xyz.shape == batch + (4, 91, 3)
  datatypes.ObjectMetadata.zeros(batch + (4,)).validate()
  datatypes.RoadgraphPoints.zeros(batch + (7,)).validate()
  datatypes.TrafficLights.zeros(batch + (2, 91)).validate()


def test_validate_catches_bad_dtype_and_shape():
  traj = datatypes.Trajectory.zeros((4, 91))
  with pytest.raises(AssertionError):
    traj.replace(x=jnp.zeros((4, 90))).validate()
  with pytest.raises(AssertionError):
    traj.replace(valid=jnp.zeros((4, 91), jnp.int32)).validate()


def test_state_properties(state):
  state.validate()
  assert state.shape == ()
  assert state.num_objects == 8 and state.num_timesteps == 91
  assert int(state.remaining_timesteps) == 80 and not bool(state.is_done)
  cur = state.current_sim_trajectory
  assert cur.shape == (8, 1)
  np.testing.assert_array_equal(cur.x[:, 0], state.log_trajectory.x[:, 10])
  speed = state.log_trajectory.speed
  assert (speed[~state.log_trajectory.valid] == -1).all()


def test_stack_vmap_and_slice(state):
  batch = datatypes.stack([state, state, state])
  batch.validate()
  assert batch.shape == (3,)
  assert batch.current_log_trajectory.shape == (3, 8, 1)
  # vmap over the batch rebuilds the unbatched structure.
  xs = jax.vmap(lambda s: s.current_sim_trajectory.x[:, 0])(batch)
  assert xs.shape == (3, 8)
  one = jax.tree.map(lambda x: x[1], batch)
  one.validate()
  chex.assert_trees_all_equal(one, state)
  # Per-scenario timesteps.
  batch = batch.replace(timestep=np.array([10, 20, 30], np.int32))
  cur = batch.current_log_trajectory.x[:, 0, 0]
  np.testing.assert_array_equal(
      cur, state.log_trajectory.x[0, [10, 20, 30]])
  vm = jax.vmap(lambda s: s.current_log_trajectory.x[0, 0])(batch)
  np.testing.assert_array_equal(vm, cur)


def test_jit_compiles_once(state):
  @jax.jit
  @chex.assert_max_traces(n=1)
  def advance(s):
    return s.replace(timestep=s.timestep + 1)

  s = jax.device_put(state)
  for _ in range(3):
    s = advance(s)
  assert int(s.timestep) == 13
  s.validate()


def test_bbox_corners_and_wrap(state):
  corners = state.log_trajectory.bbox_corners
  assert corners.shape == (8, 91, 4, 2)
  assert np.allclose(datatypes.wrap_yaw(jnp.array([np.pi, -np.pi, 3 * np.pi])),
                     -np.pi)
