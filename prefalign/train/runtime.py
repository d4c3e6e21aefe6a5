"""What a training job needs around its steps, whichever the loop.

* ``MetricsWriter``: TensorBoard events and ``metrics.jsonl`` (process 0).
* ``PreemptionGuard`` and ``Preempted``: SIGTERM / SIGINT become a
  checkpoint and a clean stop between steps, shared by every process.
* ``stop_on_nonfinite`` and ``check_finite``: a non-finite loss or gradient
  stops the run with the last good state checkpointed.
* ``workdir_lock``: one run per workdir.
* ``any_process``: a flag set in any process (a collective).

``runner.run`` drives them; pre-training (``loop``) and alignment
(``align``) are both built on it.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import signal
import threading
from typing import Any

import jax
import numpy as np

from prefalign import fileio
from prefalign.train import checkpoint as checkpoint_lib

__all__ = ['MetricsWriter', 'Preempted', 'PreemptionGuard', 'any_process',
           'stop_on_nonfinite', 'check_finite', 'workdir_lock']


class MetricsWriter:
  """TensorBoard events and a JSON-lines log (process 0 only)."""

  def __init__(self, workdir: pathlib.Path):
    self.enabled = jax.process_index() == 0
    self.jsonl = workdir / 'metrics.jsonl'
    self.tb = None
    if self.enabled:
      try:
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(str(workdir / 'tensorboard'))
      except ImportError:
        self.tb = None

  def write(self, step: int, split: str, values: dict[str, float]) -> None:
    if not self.enabled:
      return
    with self.jsonl.open('a') as f:
      f.write(json.dumps({'step': step, 'split': split, **values}) + '\n')
    if self.tb is not None:
      for k, v in values.items():
        self.tb.add_scalar(f'{split}/{k}', v, step)
      self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


class Preempted(Exception):
  """Training stopped on a termination signal after saving a checkpoint.

  Attributes:
    step: the step checkpointed.
    signal_name: the signal received (e.g. 'SIGTERM').
    directory: the checkpoint directory; rerunning the same command
      resumes from it.
  """

  def __init__(self, step: int, signal_name: str, directory):
    self.step = step
    self.signal_name = signal_name
    self.directory = directory
    super().__init__(
        f'{signal_name} received: stopped after step {step}, checkpoint '
        f'saved in {directory}; rerun the same command to resume.')


def any_process(flag: bool) -> bool:
  """True if ``flag`` is set in any process (a collective when there are
  several, so that every process stops at the same step)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


class PreemptionGuard:
  """Turns SIGTERM (and SIGINT) into a request the loop honours between
  steps: it saves a checkpoint and raises ``Preempted`` instead of dying
  mid-step. With several processes the request is shared after every step,
  so a signal to any of them stops all at the same step. A second signal of
  the same kind gets the default behaviour. Only the main thread can
  install handlers; elsewhere it does nothing."""

  SIGNALS = ('SIGTERM', 'SIGINT')

  def __init__(self):
    self.requested = ''
    self._old = {}
    if threading.current_thread() is not threading.main_thread():
      return
    for name in self.SIGNALS:
      sig = getattr(signal, name)
      self._old[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # a second signal: let it through
      signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.requested = signal.Signals(signum).name

  def stop_if_requested(self, state, ckpt: checkpoint_lib.Checkpointer,
                        step: int, num_steps: int) -> None:
    """After a step: if a signal came, checkpoint ``state`` and raise
    ``Preempted`` (unless the run just finished)."""
    if step >= num_steps or not any_process(bool(self.requested)):
      return
    ckpt.save(state)
    ckpt.wait()
    raise Preempted(step, self.requested or 'SIGTERM (to another process)',
                    ckpt.directory)

  def restore(self) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}


def stop_on_nonfinite(metrics: dict[str, Any], state,
                      ckpt: checkpoint_lib.Checkpointer, step: int,
                      batch: str) -> None:
  """Stops the run if the step's loss or gradients were not finite.

  The step itself kept the last good state (``steps._apply``); it is
  checkpointed, then ``FloatingPointError`` names the step and ``batch``
  (which scenarios or records). Reads one scalar back per step.
  """
  if not float(jax.device_get(metrics['nonfinite'])):
    return
  ckpt.save(state)
  ckpt.wait()
  raise FloatingPointError(
      f'non-finite loss or gradients at step {step} (loss '
      f'{float(metrics["mean_loss"])}, gradient norm '
      f'{float(metrics["grad_norm"])}) on {batch} (process '
      f'{jax.process_index()}); the last good state (step '
      f'{int(jax.device_get(state.step))}) is checkpointed in '
      f'{ckpt.directory}. Inspect that data or lower the learning rate, '
      'then rerun to resume.')


def check_finite(values: dict[str, float], step: int) -> None:
  bad = [k for k, v in values.items() if not math.isfinite(v)]
  if bad:
    raise FloatingPointError(f'non-finite training metrics {bad} at step '
                             f'{step}: {values}')


def workdir_lock(workdir: pathlib.Path, what: str):
  """One run per workdir: a second run in it stops at once with a
  ``fileio.LockedError`` naming the first (instead of both appending every
  ``metrics.jsonl`` line and racing on the checkpoints). Held by process 0
  (the workdir is shared between processes)."""
  if jax.process_index() != 0:
    return contextlib.nullcontext()
  return fileio.DirLock(workdir, what=what)
