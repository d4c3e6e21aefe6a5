"""The boxes of a rollout, and which of them overlap another box.

A rollout is given as a Trajectory (N, T) or as positions (N, T, 2) (with an
optional yaw, (N, T, 3)); ``rollout_arrays`` turns either into the arrays of
(N, T) boxes the animations draw, and ``overlapping`` marks the boxes that
overlap another valid box at the same step (``geometry.has_overlap``).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from prefalign import datatypes
from prefalign.sim import geometry
from prefalign.viz import layout

# (x, y, yaw, length, width, valid), each (N, T).
RolloutArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                      np.ndarray, np.ndarray]


def _heading_from_motion(x: np.ndarray, y: np.ndarray, valid: np.ndarray,
                         start: np.ndarray, yaw0: np.ndarray) -> np.ndarray:
  """Headings along the direction of motion, held while (nearly) stationary.

  Args:
    x, y, valid: (N, T) positions and their validity.
    start: (N, 2) positions before step 0.
    yaw0: (N,) headings before step 0.

  Returns:
    (N, T) float64 yaw.
  """
  yaw = np.empty_like(x)
  prev = start
  heading = yaw0.astype(np.float64)
  for k in range(x.shape[1]):
    cur = np.stack([x[:, k], y[:, k]], -1)
    d = cur - prev
    moving = valid[:, k] & (np.hypot(d[:, 0], d[:, 1]) > 0.05)
    heading = np.where(moving, np.arctan2(d[:, 1], d[:, 0]), heading)
    yaw[:, k] = heading
    prev = np.where(valid[:, k, None], cur, prev)
  return yaw


def rollout_arrays(state: datatypes.SimulatorState,
                   trajectories: Any) -> RolloutArrays:
  """The boxes of a rollout, from a Trajectory or from positions.

  Args:
    state: the unbatched numpy SimulatorState the rollout belongs to.
    trajectories: a Trajectory (N, T), or a float array (N, T, 2) of positions
      or (N, T, 3) of positions and yaw (non-finite positions are invalid).
      Array boxes take their size, and a heading before step 0, from the log
      at ``state.timestep`` (or the object's first valid logged step);
      without a yaw they head along their motion.

  Returns:
    (x, y, yaw, length, width, valid), each (N, T).

  Raises:
    ValueError: for a batched Trajectory, another shape or another N.
  """
  meta_valid = np.asarray(state.object_metadata.is_valid, bool)
  num_objects = meta_valid.shape[0]
  log = state.log_trajectory
  t0 = int(state.timestep)
  if isinstance(trajectories, datatypes.Trajectory):
    tr = layout.to_numpy(trajectories)
    if np.ndim(tr.x) != 2 or np.shape(tr.x)[0] != num_objects:
      raise ValueError(f'trajectories must be an unbatched Trajectory (N, T) '
                       f'with N = {num_objects}, got {np.shape(tr.x)}.')
    valid = np.asarray(tr.valid, bool) & meta_valid[:, None]
    return (tr.x, tr.y, tr.yaw, tr.length, tr.width, valid)
  arr = np.asarray(trajectories, np.float64)
  if arr.ndim != 3 or arr.shape[0] != num_objects or arr.shape[-1] < 2:
    raise ValueError(f'trajectories must be (N, T, 2) positions or (N, T, 3) '
                     f'with yaw, N = {num_objects}, got {arr.shape}.')
  x, y = arr[..., 0], arr[..., 1]
  valid = np.isfinite(x) & np.isfinite(y) & meta_valid[:, None]
  lv = np.asarray(log.valid, bool)
  pick = np.where(lv[:, t0], t0, np.argmax(lv, axis=1))
  rows = np.arange(num_objects)
  length = np.asarray(log.length)[rows, pick]
  width = np.asarray(log.width)[rows, pick]
  if arr.shape[-1] >= 3:
    yaw = arr[..., 2]
  else:
    start = np.stack([np.asarray(log.x)[rows, pick],
                      np.asarray(log.y)[rows, pick]], -1)
    yaw = _heading_from_motion(x, y, valid, start,
                               np.asarray(log.yaw)[rows, pick])
  bc = lambda a: np.broadcast_to(a[:, None], x.shape)
  return x, y, yaw, bc(length), bc(width), valid


@jax.jit
def _box_overlaps(boxes: jax.Array) -> jax.Array:
  """(T, N, N) bool overlaps of (T, N, 5) boxes (compiled once per shape)."""
  return geometry.has_overlap(boxes[:, :, None, :], boxes[:, None, :, :])


def overlapping(x: np.ndarray, y: np.ndarray, yaw: np.ndarray,
                length: np.ndarray, width: np.ndarray,
                valid: np.ndarray) -> np.ndarray:
  """Which boxes overlap another valid box.

  Args:
    x, y, yaw, length, width, valid: (N, T) boxes, as ``rollout_arrays``
      returns.

  Returns:
    (N, T) bool: the object's box overlaps another valid box at that step.
  """
  boxes = np.stack([x, y, length, width, yaw], -1).transpose(1, 0, 2)
  ov = np.array(_box_overlaps(boxes.astype(np.float32)))
  v = valid.T
  ov &= v[:, :, None] & v[:, None, :]
  ov &= ~np.eye(x.shape[0], dtype=bool)[None]
  return ov.any(-1).T
