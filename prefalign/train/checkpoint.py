"""Orbax checkpoints of the training state, with resume.

Resume order: a checkpoint in the workdir > ``init_from`` (parameters of
another run) > scratch. Saves are asynchronous; ``close`` waits for them.
"""

from __future__ import annotations

import pathlib
from typing import Optional

import jax
import orbax.checkpoint as ocp

from prefalign.train.state import TrainState

__all__ = ['Checkpointer', 'load_params']


class Checkpointer:
  """Saves and restores ``TrainState``s under ``directory``.

  Args:
    directory: where step folders go (created).
    max_to_keep: newest checkpoints kept.
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 3):
    self.directory = pathlib.Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def restore(self, state: TrainState) -> Optional[TrainState]:
    """The latest checkpoint restored into the structure and shardings of
    ``state`` (an abstract or concrete state), or None when there is none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.saveable())
    saved = self.manager.restore(step, args=ocp.args.StandardRestore(target))
    return state.from_saved(saved)

  def save(self, state: TrainState) -> bool:
    """Saves (asynchronously) at the state's step."""
    step = int(jax.device_get(state.step))
    return self.manager.save(step, args=ocp.args.StandardSave(
        state.saveable()), force=True)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def load_params(directory: str | pathlib.Path, params_like,
                step: Optional[int] = None):
  """Parameters of another run's checkpoint (for ``init_from``).

  Raises:
    FileNotFoundError: naming the directory when it holds no checkpoint.
  """
  manager = ocp.CheckpointManager(pathlib.Path(directory).absolute())
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {directory}')
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  params = restored['params']
  return jax.tree.map(lambda like, x: jax.numpy.asarray(x, like.dtype),
                      params_like, params)
