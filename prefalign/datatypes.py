"""Waymax-shaped simulator datatypes.

Every structure mirrors the Waymax datatype of the same name field for field:
names, dtypes, enum values, axis order ``(..., num_objects, num_timesteps)`` and
invalid fills (``-1`` for numbers, ``False`` for booleans). They are frozen
``flax.struct.dataclass`` pytrees, so they pass through ``jax.jit``,
``jax.vmap``, ``jax.tree.map`` and stack/slice along any leading batch axis.

``validate()`` checks shapes and dtypes with chex. It is deliberately not
called in ``__post_init__``: ``vmap`` and ``tree_map`` build placeholder
instances whose leaves are not arrays. Call it at data boundaries and in tests.

Constants follow the Waymo Open Motion Dataset (WOMD): 91 steps at 10 Hz,
current index 10, 80 simulated steps, up to 128 objects.
"""

from __future__ import annotations

from collections.abc import Sequence
import enum
from typing import Any

import chex
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    'TIME_INTERVAL',
    'TIMESTEP_MICROS_INTERVAL',
    'NUM_TIMESTEPS',
    'CURRENT_TIME_INDEX',
    'NUM_SIM_STEPS',
    'ObjectTypeIds',
    'MapElementIds',
    'TrafficLightStates',
    'Trajectory',
    'ObjectMetadata',
    'RoadgraphPoints',
    'TrafficLights',
    'SimulatorState',
    'stack',
    'wrap_yaw',
]

TIME_INTERVAL = 0.1  # seconds between steps (10 Hz)
TIMESTEP_MICROS_INTERVAL = 100_000
NUM_TIMESTEPS = 91  # 10 history + 1 current + 80 future
CURRENT_TIME_INDEX = 10
NUM_SIM_STEPS = NUM_TIMESTEPS - CURRENT_TIME_INDEX - 1  # 80


class ObjectTypeIds(enum.IntEnum):
  """Object types, as WOMD ``Track.ObjectType``."""
  UNSET = 0
  VEHICLE = 1
  PEDESTRIAN = 2
  CYCLIST = 3
  OTHER = 4


class MapElementIds(enum.IntEnum):
  """Road-graph point types, as the WOMD tf.Example ``roadgraph_samples/type``.

  ``DRIVEWAY`` (20) is an extension: WOMD v1.2 added driveway polygons, which
  the tf.Example schema (and hence Waymax) has no code for.
  """
  LANE_UNDEFINED = 0
  LANE_FREEWAY = 1
  LANE_SURFACE_STREET = 2
  LANE_BIKE_LANE = 3
  # 4 is unused in the WOMD spec.
  ROAD_LINE_UNKNOWN = 5
  ROAD_LINE_BROKEN_SINGLE_WHITE = 6
  ROAD_LINE_SOLID_SINGLE_WHITE = 7
  ROAD_LINE_SOLID_DOUBLE_WHITE = 8
  ROAD_LINE_BROKEN_SINGLE_YELLOW = 9
  ROAD_LINE_BROKEN_DOUBLE_YELLOW = 10
  ROAD_LINE_SOLID_SINGLE_YELLOW = 11
  ROAD_LINE_SOLID_DOUBLE_YELLOW = 12
  ROAD_LINE_PASSING_DOUBLE_YELLOW = 13
  ROAD_EDGE_UNKNOWN = 14
  ROAD_EDGE_BOUNDARY = 15
  ROAD_EDGE_MEDIAN = 16
  STOP_SIGN = 17
  CROSSWALK = 18
  SPEED_BUMP = 19
  DRIVEWAY = 20
  UNKNOWN = -1


class TrafficLightStates(enum.IntEnum):
  """Signal states, as WOMD ``TrafficSignalLaneState.State``."""
  UNKNOWN = 0
  ARROW_STOP = 1
  ARROW_CAUTION = 2
  ARROW_GO = 3
  STOP = 4
  CAUTION = 5
  GO = 6
  FLASHING_STOP = 7
  FLASHING_CAUTION = 8


def wrap_yaw(yaw: jax.Array) -> jax.Array:
  """Wraps angles to [-pi, pi)."""
  return (yaw + jnp.pi) % (2 * jnp.pi) - jnp.pi


def box_corners(x: jax.Array, y: jax.Array, length: jax.Array,
                width: jax.Array, yaw: jax.Array) -> jax.Array:
  """Corners of oriented boxes.

  Args:
    x, y, length, width, yaw: broadcastable arrays (...).

  Returns:
    (..., 4, 2): front-right, front-left, rear-left, rear-right, which is
    counter-clockwise for positive dimensions.
  """
  x, y, length, width, yaw = jnp.broadcast_arrays(x, y, length, width, yaw)
  c, s = jnp.cos(yaw)[..., None], jnp.sin(yaw)[..., None]
  # Body-frame corner signs, front-right first, counter-clockwise.
  lon = jnp.array([1.0, 1.0, -1.0, -1.0]) * (length[..., None] / 2)
  lat = jnp.array([-1.0, 1.0, 1.0, -1.0]) * (width[..., None] / 2)
  cx = x[..., None] + c * lon - s * lat
  cy = y[..., None] + s * lon + c * lat
  return jnp.stack([cx, cy], axis=-1)


def _check(fields: dict[str, Any], dtypes: dict[str, Any],
           shape: tuple[int, ...], cls_name: str) -> None:
  for name, dtype in dtypes.items():
    value = fields[name]
    if np.shape(value) != shape:
      raise AssertionError(
          f'{cls_name}.{name} has shape {np.shape(value)}, expected {shape}.')
    chex.assert_type(value, dtype)


@struct.dataclass
class Trajectory:
  """Per-object, per-step states; every field has shape (..., N, T).

  Attributes:
    x, y, z: float32 box centre in the global frame (m).
    vel_x, vel_y: float32 velocity (m/s).
    yaw: float32 heading, counter-clockwise from +x (rad), as logged: WOMD
      keeps most headings in [-pi, pi) but not all; ``wrap_yaw`` wraps.
    valid: bool validity of the state.
    timestamp_micros: int32 time of the step.
    length, width, height: float32 box dimensions (m).

  Invalid states carry -1 in every numeric field.
  """
  x: jax.Array
  y: jax.Array
  z: jax.Array
  vel_x: jax.Array
  vel_y: jax.Array
  yaw: jax.Array
  valid: jax.Array
  timestamp_micros: jax.Array
  length: jax.Array
  width: jax.Array
  height: jax.Array

  _FLOATS = ('x', 'y', 'z', 'vel_x', 'vel_y', 'yaw', 'length', 'width',
             'height')

  @property
  def shape(self) -> tuple[int, ...]:
    """Batch prefix plus (N, T)."""
    return tuple(np.shape(self.x))

  @property
  def num_objects(self) -> int:
    return self.shape[-2]

  @property
  def num_timesteps(self) -> int:
    return self.shape[-1]

  @property
  def xy(self) -> jax.Array:
    """(..., N, T, 2)."""
    return jnp.stack([self.x, self.y], axis=-1)

  @property
  def xyz(self) -> jax.Array:
    """(..., N, T, 3)."""
    return jnp.stack([self.x, self.y, self.z], axis=-1)

  @property
  def vel_xy(self) -> jax.Array:
    """(..., N, T, 2)."""
    return jnp.stack([self.vel_x, self.vel_y], axis=-1)

  @property
  def speed(self) -> jax.Array:
    """(..., N, T) speed; -1 where invalid."""
    speed = jnp.sqrt(self.vel_x**2 + self.vel_y**2)
    return jnp.where(self.valid, speed, -1.0)

  @property
  def vel_yaw(self) -> jax.Array:
    """(..., N, T) direction of the velocity; -1 where invalid."""
    return jnp.where(self.valid, jnp.arctan2(self.vel_y, self.vel_x), -1.0)

  @property
  def bbox_corners(self) -> jax.Array:
    """(..., N, T, 4, 2) corners from front-right, counter-clockwise."""
    return box_corners(self.x, self.y, self.length, self.width, self.yaw)

  def stack_fields(self, names: Sequence[str]) -> jax.Array:
    """Stacks the named fields on a new last axis: (..., N, T, len(names))."""
    return jnp.stack([getattr(self, n) for n in names], axis=-1)

  @classmethod
  def zeros(cls, shape: Sequence[int]) -> Trajectory:
    """All-zero (and all-invalid) trajectory of shape (..., N, T)."""
    shape = tuple(shape)
    f = {n: jnp.zeros(shape, jnp.float32) for n in cls._FLOATS}
    return cls(valid=jnp.zeros(shape, jnp.bool_),
               timestamp_micros=jnp.zeros(shape, jnp.int32), **f)

  def validate(self) -> None:
    """Checks that every field has the same (..., N, T) shape and its dtype."""
    fields = {n: getattr(self, n) for n in self.__dataclass_fields__}
    dtypes = {n: jnp.float32 for n in self._FLOATS}
    dtypes.update(valid=jnp.bool_, timestamp_micros=jnp.int32)
    if len(self.shape) < 2:
      raise AssertionError(
          f'Trajectory needs at least 2 axes (N, T), got {self.shape}.')
    _check(fields, dtypes, self.shape, 'Trajectory')

  def fill_invalid(self) -> Trajectory:
    """Sets every numeric field of invalid states to -1."""
    def fill(v):
      return jnp.where(self.valid, v, jnp.asarray(-1, v.dtype))
    return self.replace(**{
        n: fill(getattr(self, n))
        for n in self._FLOATS + ('timestamp_micros',)})


@struct.dataclass
class ObjectMetadata:
  """Per-object static information; every field has shape (..., N).

  Attributes:
    ids: int32 track id (-1 for padding rows).
    object_types: int32 ``ObjectTypeIds``.
    is_sdc: bool, the self-driving car (exactly one per scenario).
    is_modeled: bool, listed in ``tracks_to_predict``.
    is_valid: bool, the row holds a real track (False for padding).
    objects_of_interest: bool, listed in ``objects_of_interest``.
    is_controlled: bool, driven by a policy rather than the log.
  """
  ids: jax.Array
  object_types: jax.Array
  is_sdc: jax.Array
  is_modeled: jax.Array
  is_valid: jax.Array
  objects_of_interest: jax.Array
  is_controlled: jax.Array

  _BOOLS = ('is_sdc', 'is_modeled', 'is_valid', 'objects_of_interest',
            'is_controlled')

  @property
  def shape(self) -> tuple[int, ...]:
    """Batch prefix plus (N,)."""
    return tuple(np.shape(self.ids))

  @property
  def num_objects(self) -> int:
    return self.shape[-1]

  @classmethod
  def zeros(cls, shape: Sequence[int]) -> ObjectMetadata:
    shape = tuple(shape)
    b = {n: jnp.zeros(shape, jnp.bool_) for n in cls._BOOLS}
    return cls(ids=jnp.zeros(shape, jnp.int32),
               object_types=jnp.zeros(shape, jnp.int32), **b)

  def validate(self) -> None:
    fields = {n: getattr(self, n) for n in self.__dataclass_fields__}
    dtypes = {n: jnp.bool_ for n in self._BOOLS}
    dtypes.update(ids=jnp.int32, object_types=jnp.int32)
    _check(fields, dtypes, self.shape, 'ObjectMetadata')


@struct.dataclass
class RoadgraphPoints:
  """Road-graph polylines as points; every field has shape (..., P).

  Points of one polyline are consecutive and in polyline order, so segment i
  joins point i to point i + 1 whenever both carry the same ``ids``.

  Attributes:
    x, y, z: float32 point position (m).
    dir_x, dir_y, dir_z: float32 unit vector to the next point of the same
      polyline (zero at a polyline's last point).
    types: int32 ``MapElementIds``.
    ids: int32 id of the map feature the point belongs to.
    valid: bool, False for padding.
  """
  x: jax.Array
  y: jax.Array
  z: jax.Array
  dir_x: jax.Array
  dir_y: jax.Array
  dir_z: jax.Array
  types: jax.Array
  ids: jax.Array
  valid: jax.Array

  _FLOATS = ('x', 'y', 'z', 'dir_x', 'dir_y', 'dir_z')

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(np.shape(self.x))

  @property
  def num_points(self) -> int:
    return self.shape[-1]

  @property
  def xy(self) -> jax.Array:
    return jnp.stack([self.x, self.y], axis=-1)

  @property
  def xyz(self) -> jax.Array:
    return jnp.stack([self.x, self.y, self.z], axis=-1)

  @property
  def dir_xy(self) -> jax.Array:
    return jnp.stack([self.dir_x, self.dir_y], axis=-1)

  @property
  def dir_xyz(self) -> jax.Array:
    return jnp.stack([self.dir_x, self.dir_y, self.dir_z], axis=-1)

  @property
  def is_road_edge(self) -> jax.Array:
    """(..., P) bool: valid road-edge points (boundary, median or unknown)."""
    t = self.types
    return self.valid & ((t == MapElementIds.ROAD_EDGE_BOUNDARY) |
                         (t == MapElementIds.ROAD_EDGE_MEDIAN) |
                         (t == MapElementIds.ROAD_EDGE_UNKNOWN))

  @classmethod
  def zeros(cls, shape: Sequence[int]) -> RoadgraphPoints:
    shape = tuple(shape)
    f = {n: jnp.zeros(shape, jnp.float32) for n in cls._FLOATS}
    return cls(types=jnp.zeros(shape, jnp.int32),
               ids=jnp.zeros(shape, jnp.int32),
               valid=jnp.zeros(shape, jnp.bool_), **f)

  def validate(self) -> None:
    fields = {n: getattr(self, n) for n in self.__dataclass_fields__}
    dtypes = {n: jnp.float32 for n in self._FLOATS}
    dtypes.update(types=jnp.int32, ids=jnp.int32, valid=jnp.bool_)
    _check(fields, dtypes, self.shape, 'RoadgraphPoints')


@struct.dataclass
class TrafficLights:
  """Signal states per controlled lane and step; fields (..., L, T).

  Attributes:
    x, y, z: float32 stop point of the controlled lane (m).
    state: int32 ``TrafficLightStates``.
    lane_ids: int32 map-feature id of the controlled lane.
    valid: bool, whether the signal was observed at that step.
  """
  x: jax.Array
  y: jax.Array
  z: jax.Array
  state: jax.Array
  lane_ids: jax.Array
  valid: jax.Array

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(np.shape(self.x))

  @property
  def num_traffic_lights(self) -> int:
    return self.shape[-2]

  @property
  def num_timesteps(self) -> int:
    return self.shape[-1]

  @property
  def xy(self) -> jax.Array:
    return jnp.stack([self.x, self.y], axis=-1)

  @classmethod
  def zeros(cls, shape: Sequence[int]) -> TrafficLights:
    shape = tuple(shape)
    return cls(x=jnp.zeros(shape, jnp.float32),
               y=jnp.zeros(shape, jnp.float32),
               z=jnp.zeros(shape, jnp.float32),
               state=jnp.zeros(shape, jnp.int32),
               lane_ids=jnp.zeros(shape, jnp.int32),
               valid=jnp.zeros(shape, jnp.bool_))

  def validate(self) -> None:
    fields = {n: getattr(self, n) for n in self.__dataclass_fields__}
    dtypes = dict(x=jnp.float32, y=jnp.float32, z=jnp.float32,
                  state=jnp.int32, lane_ids=jnp.int32, valid=jnp.bool_)
    if len(self.shape) < 2:
      raise AssertionError(
          f'TrafficLights needs at least 2 axes (L, T), got {self.shape}.')
    _check(fields, dtypes, self.shape, 'TrafficLights')


@struct.dataclass
class SimulatorState:
  """The whole simulator state of one scenario (or a batch of them).

  Attributes:
    sim_trajectory: Trajectory (..., N, T); steps after ``timestep`` are
      invalid.
    log_trajectory: Trajectory (..., N, T), the logged demonstration.
    log_traffic_light: TrafficLights (..., L, T).
    object_metadata: ObjectMetadata (..., N).
    timestep: int32 (...), the index of the last executed step.
    roadgraph_points: RoadgraphPoints (..., P).
    sdc_paths: always None here (WOMD does not publish SDC route samples); kept
      so that the field set matches Waymax's.
  """
  sim_trajectory: Trajectory
  log_trajectory: Trajectory
  log_traffic_light: TrafficLights
  object_metadata: ObjectMetadata
  timestep: jax.Array
  roadgraph_points: RoadgraphPoints
  sdc_paths: Any | None = None

  @property
  def shape(self) -> tuple[int, ...]:
    """The batch dimensions."""
    return self.object_metadata.shape[:-1]

  @property
  def batch_dims(self) -> tuple[int, ...]:
    return self.shape

  @property
  def num_objects(self) -> int:
    return self.object_metadata.num_objects

  @property
  def num_timesteps(self) -> int:
    return self.log_trajectory.num_timesteps

  @property
  def is_done(self) -> jax.Array:
    return self.timestep + 1 >= self.num_timesteps

  @property
  def remaining_timesteps(self) -> jax.Array:
    return self.num_timesteps - self.timestep - 1

  @property
  def current_sim_trajectory(self) -> Trajectory:
    """Trajectory (..., N, 1) at ``timestep``."""
    return _time_slice(self.sim_trajectory, self.timestep)

  @property
  def current_log_trajectory(self) -> Trajectory:
    """Trajectory (..., N, 1) of the log at ``timestep``."""
    return _time_slice(self.log_trajectory, self.timestep)

  def validate(self) -> None:
    """Checks every part and that their shapes agree."""
    for part in (self.sim_trajectory, self.log_trajectory,
                 self.log_traffic_light, self.object_metadata,
                 self.roadgraph_points):
      part.validate()
    batch = self.shape
    n, t = self.log_trajectory.shape[-2:]
    if self.sim_trajectory.shape != self.log_trajectory.shape:
      raise AssertionError(
          f'sim_trajectory {self.sim_trajectory.shape} and log_trajectory '
          f'{self.log_trajectory.shape} differ in shape.')
    if self.log_trajectory.shape != batch + (n, t):
      raise AssertionError(
          f'log_trajectory {self.log_trajectory.shape} does not match the '
          f'metadata batch {batch} and N={self.num_objects}.')
    if self.log_traffic_light.shape[:-2] != batch or (
        self.log_traffic_light.shape[-1] != t):
      raise AssertionError(
          f'log_traffic_light {self.log_traffic_light.shape} does not match '
          f'batch {batch} and T={t}.')
    if self.roadgraph_points.shape[:-1] != batch:
      raise AssertionError(
          f'roadgraph_points {self.roadgraph_points.shape} does not match '
          f'batch {batch}.')
    if np.shape(self.timestep) not in (batch, ()):
      raise AssertionError(
          f'timestep has shape {np.shape(self.timestep)}, expected {batch}.')
    chex.assert_type(self.timestep, jnp.int32)


# Where the metric's rollouts put objects that are not there: far from any
# scene and 100 m apart, so they touch nothing (every row counts as valid).
PARK_START = 1e5
PARK_SPACING = 100.0


def park_invalid(traj: Trajectory, valid: jax.Array | None = None
                 ) -> Trajectory:
  """``traj`` with x, y moved far away where ``valid`` is False.

  Args:
    traj: (..., N, T) trajectories.
    valid: (..., N, T) bool, broadcastable; ``traj.valid`` when None.

  Returns:
    The trajectories with row ``i``'s invalid steps at ``PARK_START +
    PARK_SPACING * i`` (metres) in x and y; every other field unchanged.
  """
  valid = traj.valid if valid is None else valid
  rows = jnp.arange(traj.x.shape[-2], dtype=jnp.float32)[:, None]
  spot = PARK_START + PARK_SPACING * rows
  return traj.replace(x=jnp.where(valid, traj.x, spot),
                      y=jnp.where(valid, traj.y, spot))


def _time_slice(traj: Trajectory, t: jax.Array) -> Trajectory:
  """Slices (..., N, T) to (..., N, 1) at per-batch index ``t``."""
  t = jnp.asarray(t)

  def take(x):
    idx = jnp.broadcast_to(t, x.shape[:-2]).astype(jnp.int32)
    idx = jnp.broadcast_to(idx[..., None, None], x.shape[:-1] + (1,))
    return jnp.take_along_axis(x, idx, axis=-1)

  return jax.tree.map(take, traj)


def stack(trees: Sequence[Any], axis: int = 0) -> Any:
  """Stacks equally-shaped pytrees (e.g. states) along a new leading axis."""
  if not trees:
    raise ValueError('Nothing to stack: got an empty sequence.')
  return jax.tree.map(lambda *xs: np.stack(xs, axis=axis), *trees)
