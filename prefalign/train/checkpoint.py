"""Orbax checkpoints of the training state, with resume.

Resume order: a checkpoint in the workdir > ``init_from`` (parameters of
another run) > scratch. Saves are asynchronous; ``wait`` and ``close`` wait
for them. A step folder cut off while being written (killed mid-save) is
never taken for a checkpoint: it is set aside as ``STEP.incomplete``.
"""

from __future__ import annotations

import pathlib
import warnings
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
    self.set_aside = _set_aside_incomplete(self.directory)
    self._last_saved = None
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
    """Saves (asynchronously) at the state's step; a step already saved is
    not saved again (returns False)."""
    step = int(jax.device_get(state.step))
    if step in (self.manager.latest_step(), self._last_saved):
      return False
    self._last_saved = step
    return self.manager.save(step, args=ocp.args.StandardSave(
        state.saveable()), force=True)

  def wait(self) -> None:
    """Blocks until every save started has been written completely."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# Orbax writes this file when it finalises a step; a step folder without it
# was cut off while being written (or copied in part).
_COMPLETE_MARKER = '_CHECKPOINT_METADATA'


def _set_aside_incomplete(directory: pathlib.Path) -> list[pathlib.Path]:
  """Renames step folders that lack the completion marker to
  ``STEP.incomplete`` (never deletes them), so that resuming takes the
  newest complete checkpoint; returns the new paths. Orbax's own temporary
  folders (``STEP.orbax-checkpoint-tmp-*``) are never taken for steps, so
  they are left alone. Process 0 only."""
  if jax.process_index() != 0 or not directory.is_dir():
    return []
  moved = []
  for path in sorted(directory.iterdir()):
    if path.is_dir() and path.name.isdigit() and not (
        path / _COMPLETE_MARKER).exists():
      target = path.with_name(f'{path.name}.incomplete')
      n = 1
      while target.exists():
        target = path.with_name(f'{path.name}.incomplete-{n}')
        n += 1
      path.rename(target)
      warnings.warn(f'checkpoint {path} is incomplete (no {_COMPLETE_MARKER}:'
                    f' cut off while being written); set aside as {target}; '
                    'resuming from the newest complete one.')
      moved.append(target)
  return moved


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
