"""The training loop both jobs share: steps, logs, evaluations, checkpoints.

Pre-training (``loop.train_and_evaluate``) and preference alignment
(``align.align_and_evaluate``) differ in their data, their step and what
they measure, not in the loop around them. ``run`` is that loop: from step
``start`` to ``schedule.num_steps`` it calls ``hooks.step``, stops on a
non-finite loss or gradient with the last good state checkpointed, sums the
step metrics over a logging window and writes ``hooks.log``'s summary of
them, evaluates every ``eval_every`` steps (and at the end), checkpoints
every ``checkpoint_every`` steps (and at the end), and turns SIGTERM /
SIGINT into a checkpoint and ``runtime.Preempted`` between steps::

  state, last, results = runner.run(
      state, start, runner.Schedule(num_steps=1000, log_every=50,
                                    eval_every=500, checkpoint_every=500),
      runner.Hooks(step=one_step, log=summarise, evaluate=evaluate),
      checkpointer=ckpt, writer=writer, name='pretrain')

The caller owns (and closes) the data, the checkpointer and the writer.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import tqdm

from prefalign.train import checkpoint as checkpoint_lib
from prefalign.train import runtime

__all__ = ['Schedule', 'Hooks', 'run']

Metrics = dict[str, float]


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When the loop does what (in steps).

  Attributes:
    num_steps: the step the run ends at.
    log_every: steps between training-metric logs (and at the end).
    eval_every: steps between evaluations (and at the end).
    checkpoint_every: steps between checkpoints (and at the end).
  """
  num_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int

  def due(self, done: int, every: int) -> bool:
    return done % every == 0 or done == self.num_steps


def _no_postfix(metrics: Metrics) -> dict[str, str]:
  return {'loss': f'{metrics.get("loss", 0):.3f}'}


@dataclasses.dataclass(frozen=True)
class Hooks:
  """What a job puts into the loop.

  Attributes:
    step: ``(state, step) -> (state, metrics, batch)``: one training step
      from ``step`` (0-based); ``metrics`` are the step's device scalars
      (summed over a logging window; ``metrics['nonfinite']`` set when the
      step refused a non-finite update), ``batch`` says which data it was
      (named if the step turns out non-finite).
    log: ``(sums, steps, seconds) -> metrics``: the training metrics to log
      from a window's summed step metrics (host floats), its step count and
      its wall time.
    evaluate: ``(state, step) -> results``: held-out evaluation (it writes
      its own metrics); its last value is returned by ``run``.
    after_evaluation: ``(state, step)``, after the evaluation slot of every
      step (e.g. a slower periodic metric), or None.
    after_log: ``(step)``, after every training log (e.g. data counters),
      or None.
    postfix: the progress bar's postfix from the logged metrics.
  """
  step: Callable[[Any, int], tuple[Any, dict[str, Any], str]]
  log: Callable[[Metrics, int, float], Metrics]
  evaluate: Callable[[Any, int], dict[str, Any]]
  after_evaluation: Callable[[Any, int], None] | None = None
  after_log: Callable[[int], None] | None = None
  postfix: Callable[[Metrics], dict[str, str]] = _no_postfix


def run(state: Any, start: int, schedule: Schedule, hooks: Hooks, *,
        checkpointer: checkpoint_lib.Checkpointer,
        writer: runtime.MetricsWriter, name: str, progress: bool = True,
        results: dict[str, Any] | None = None,
        callback: Callable[[int, dict], None] | None = None
        ) -> tuple[Any, Metrics, dict[str, Any]]:
  """Runs steps ``start`` .. ``schedule.num_steps`` (resumed runs included).

  Args:
    state: the (restored) training state at step ``start``.
    start: the first step to run.
    schedule: when to log, evaluate and checkpoint.
    hooks: the job's step, log summary and evaluation.
    checkpointer: where checkpoints go (also on preemption and non-finite
      stops).
    writer: the job's metrics writer (training logs go to split 'train').
    name: the progress bar's label.
    progress: show a progress bar (process 0 only).
    results: an evaluation already made at ``start``, or None.
    callback: ``callback(step, metrics)`` after every step (tests use it to
      interrupt a run).

  Returns:
    (final state, last logged training metrics, last evaluation). A run
    with no step left is evaluated once at ``start`` (unless ``results``).

  Raises:
    runtime.Preempted: a termination signal came; the state is saved.
    FloatingPointError: a non-finite loss, gradient or logged metric; the
      last good state is saved.
  """
  last: Metrics = {}
  window, t0, n0 = None, time.perf_counter(), start
  bar = tqdm.tqdm(total=schedule.num_steps, initial=start, desc=name,
                  disable=not progress or jax.process_index() != 0)
  preemption = runtime.PreemptionGuard()
  try:
    for step in range(start, schedule.num_steps):
      state, metrics, batch = hooks.step(state, step)
      done = step + 1
      runtime.stop_on_nonfinite(metrics, state, checkpointer, done, batch)
      window = metrics if window is None else jax.tree.map(
          jnp.add, window, metrics)
      if schedule.due(done, schedule.log_every):
        host = {k: float(v) for k, v in jax.device_get(window).items()}
        last = hooks.log(host, done - n0, time.perf_counter() - t0)
        runtime.check_finite(last, done)
        writer.write(done, 'train', last)
        if hooks.after_log is not None:
          hooks.after_log(done)
        bar.set_postfix(**hooks.postfix(last))
        window, t0, n0 = None, time.perf_counter(), done
      bar.update(1)
      if schedule.due(done, schedule.eval_every):
        results = hooks.evaluate(state, done)
      if hooks.after_evaluation is not None:
        hooks.after_evaluation(state, done)
      if schedule.due(done, schedule.checkpoint_every):
        checkpointer.save(state)
      if callback is not None:
        callback(done, metrics)
      preemption.stop_if_requested(state, checkpointer, done,
                                   schedule.num_steps)
    if results is None:
      results = hooks.evaluate(state, start)
  finally:
    preemption.restore()
    bar.close()
  return state, last, results
