"""Orbax checkpoints of the training state, with resume.

Resume order: a checkpoint in the workdir > ``init_from`` (parameters of
another run) > scratch. Saves are asynchronous; ``wait`` and ``close`` wait
for them. A step folder cut off while being written (killed mid-save) is
never taken for a checkpoint: it is set aside as ``STEP.incomplete``.

Completeness rests on a marker of ours, ``prefalign_complete.json``, written
into a step folder only after orbax reports that step's save finished
(``wait_until_finished``: before the next save starts, and on ``wait`` and
``close``). Orbax's own ``_CHECKPOINT_METADATA`` is written at the start of a
save: it proves completeness only where the step folder appears by an atomic
rename (local disks), not on object stores that write in place (GCS). Orbax's
``commit_success.txt`` (written last where it writes in place) counts too. A
checkpoint directory written before these markers (no ``COMPLETION_MARKERS``
file in it) is judged by the old rule once, and its steps marked.
"""

from __future__ import annotations

import json
import pathlib
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from prefalign import fileio
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
    _adopt_legacy(self.directory)
    self._last_saved = None
    self._unmarked: list[int] = []  # saved, not yet known to be finished
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, state: TrainState) -> TrainState | None:
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
    self._mark_finished()  # orbax would wait for the previous save here too
    saved = self.manager.save(step, args=ocp.args.StandardSave(
        state.saveable()), force=True)
    if saved:
      self._unmarked.append(step)
    return saved

  def _mark_finished(self) -> None:
    """Waits for the saves in flight, then marks their step folders
    complete (process 0)."""
    self.manager.wait_until_finished()
    steps, self._unmarked = self._unmarked, []
    if jax.process_index() == 0:
      for step in steps:
        folder = self.directory / str(step)
        if folder.is_dir():  # not already removed by max_to_keep
          _mark_complete(folder, step)

  def wait(self) -> None:
    """Blocks until every save started has been written completely."""
    self._mark_finished()

  def close(self) -> None:
    self._mark_finished()
    self.manager.close()


# Ours, written into a step folder after orbax finished saving it.
_COMPLETE_MARKER = 'prefalign_complete.json'
# In the checkpoint directory: its steps carry ``_COMPLETE_MARKER``.
_MARKED_DIR = 'COMPLETION_MARKERS'
# Orbax's marker written last when it writes a step in place (object stores).
_ORBAX_COMMIT = 'commit_success.txt'
# Orbax writes this at the start of a save: a sign of completeness only where
# the step folder appears by rename (the rule before our markers).
_ORBAX_METADATA = '_CHECKPOINT_METADATA'


def _mark_complete(folder: pathlib.Path, step: int) -> None:
  fileio.atomic_write_text(folder / _COMPLETE_MARKER, json.dumps(
      {'step': step, 'finished': time.strftime('%Y-%m-%dT%H:%M:%S')}))


def _is_complete(folder: pathlib.Path, marked: bool) -> bool:
  if marked:
    return ((folder / _COMPLETE_MARKER).exists() or
            (folder / _ORBAX_COMMIT).exists())
  return (folder / _ORBAX_METADATA).exists()


def _adopt_legacy(directory: pathlib.Path) -> None:
  """Marks a directory's steps as carrying our markers: those written before
  them were judged complete by the old rule (``_set_aside_incomplete``) and
  get their marker now. Process 0 only."""
  if jax.process_index() != 0:
    return
  directory.mkdir(parents=True, exist_ok=True)
  if (directory / _MARKED_DIR).exists():
    return
  for path in sorted(directory.iterdir()):
    if path.is_dir() and path.name.isdigit():
      _mark_complete(path, int(path.name))
  fileio.atomic_write_text(
      directory / _MARKED_DIR,
      f'Step folders here are complete once they hold {_COMPLETE_MARKER}.\n')


def _set_aside_incomplete(directory: pathlib.Path) -> list[pathlib.Path]:
  """Renames step folders that lack the completion marker to
  ``STEP.incomplete`` (never deletes them), so that resuming takes the
  newest complete checkpoint; returns the new paths. Orbax's own temporary
  folders (``STEP.orbax-checkpoint-tmp-*``) are never taken for steps, so
  they are left alone. Process 0 only."""
  if jax.process_index() != 0 or not directory.is_dir():
    return []
  moved = []
  marked = (directory / _MARKED_DIR).exists()
  marker = _COMPLETE_MARKER if marked else _ORBAX_METADATA
  for path in sorted(directory.iterdir()):
    if path.is_dir() and path.name.isdigit() and not _is_complete(path,
                                                                  marked):
      target = path.with_name(f'{path.name}.incomplete')
      n = 1
      while target.exists():
        target = path.with_name(f'{path.name}.incomplete-{n}')
        n += 1
      path.rename(target)
      warnings.warn(f'checkpoint {path} is incomplete (no {marker}: cut off'
                    f' while being written); set aside as {target}; '
                    'resuming from the newest complete one.', stacklevel=2)
      moved.append(target)
  return moved


def load_params(directory: str | pathlib.Path, params_like,
                step: int | None = None):
  """Parameters of another run's checkpoint (for ``init_from``).

  Raises:
    FileNotFoundError: naming the directory when it holds no checkpoint.
  """
  directory = pathlib.Path(directory).absolute()
  if step is None:  # the newest complete one (never a cut-off save)
    marked = (directory / _MARKED_DIR).exists()
    complete = [int(p.name) for p in directory.iterdir()
                if p.is_dir() and p.name.isdigit() and
                _is_complete(p, marked)] if directory.is_dir() else []
    step = max(complete, default=None)
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {directory}')
  manager = ocp.CheckpointManager(directory)
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  # Uncommitted arrays on the default device: restored as saved, they would
  # keep the training mesh's sharding (replicated over every device), and
  # every jitted call on them would then run once per device (8x the work
  # on a CPU host with 8 forced devices). Training re-places them itself.
  return jax.tree.map(
      lambda like, x: jax.numpy.asarray(np.asarray(x), like.dtype),
      params_like, restored['params'])
