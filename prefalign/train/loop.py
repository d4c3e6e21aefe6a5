"""``train_and_evaluate``: next-token pre-training of the motion-token model.

One function runs a whole pre-training job from a frozen ``TrainConfig``
(the experiments' ml_collections configs are converted at the boundary;
this library never sees a ConfigDict)::

  train_and_evaluate(TrainConfig(train_files=('data/*.tfrecord',), ...),
                     workdir)

It checks the config before compiling anything, restores the newest
checkpoint in ``workdir`` (else ``init_from``, else scratch), streams
shuffled batches of scenarios (each process reads its own files), runs the
data-parallel ``train_step``, and periodically evaluates held-out sets
(token loss and accuracy next to a per-type unigram baseline), writes
TensorBoard events and ``metrics.jsonl`` in the workdir and saves
checkpoints. Restarting the same command continues from the last checkpoint
and ends with the same parameters as an uninterrupted run: the data order is
a function of the seed and the step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import pathlib
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from prefalign import datatypes
from prefalign import fileio
from prefalign.data import pipeline
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.train import checkpoint as checkpoint_lib
from prefalign.train import losses
from prefalign.train import parallel
from prefalign.train import steps
from prefalign.train.state import TrainState

__all__ = ['TrainConfig', 'train_and_evaluate', 'check_config', 'Preempted',
           'PreemptionGuard', 'stop_on_nonfinite']


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A pre-training job.

  Attributes:
    train_files: WOMD TFRecord patterns (globs or name@N) to train on.
    eval_sets: (name, patterns) pairs of held-out sets.
    model: the model.
    optimizer: AdamW and its schedule (``total_steps`` should be
      ``num_steps``).
    reader: sizes of converted scenarios (objects, map points, signals).
    batch_size: global batch (scenarios per step), a multiple of the device
      count.
    num_steps: training steps.
    seed: root of parameter init and data order.
    shuffle_buffer: scenarios held for shuffling.
    log_every: steps between training-metric logs.
    eval_every: steps between evaluations (and at the end).
    eval_batches: batches per held-out set and evaluation (0: all).
    checkpoint_every: steps between checkpoints (and at the end).
    keep_checkpoints: newest checkpoints kept.
    unigram_batches: training batches counted for the unigram baseline.
    init_from: a checkpoint directory whose parameters start a new run.
    num_devices: devices of the data mesh (None: all).
    progress: show a progress bar.
    skip_bad_records: skip and count unreadable or unusable records (their
      file, record and reason go to the log and the result's 'data')
      instead of stopping at the first one.
  """
  train_files: tuple[str, ...]
  eval_sets: tuple[tuple[str, tuple[str, ...]], ...] = ()
  model: motion_lm.ModelConfig = motion_lm.ModelConfig()
  optimizer: steps.OptimizerConfig = steps.OptimizerConfig()
  reader: womd.ReaderConfig = womd.ReaderConfig()
  batch_size: int = 16
  num_steps: int = 10_000
  seed: int = 0
  shuffle_buffer: int = 256
  log_every: int = 50
  eval_every: int = 1000
  eval_batches: int = 8
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  unigram_batches: int = 16
  init_from: str = ''
  num_devices: int | None = None
  progress: bool = True
  skip_bad_records: bool = False


def check_config(config: TrainConfig, mesh) -> None:
  """Stops with a message naming the config key, before any compilation."""
  parallel.check_batch_size(config.batch_size, mesh, 'batch_size')
  for name in ('num_steps', 'log_every', 'eval_every', 'checkpoint_every',
               'keep_checkpoints', 'shuffle_buffer'):
    if getattr(config, name) < 1:
      raise ValueError(f'{name} must be >= 1, got {getattr(config, name)}')
  if not config.train_files:
    raise ValueError('train_files is empty: give WOMD TFRecord patterns')
  sets = [('train_files', config.train_files)] + [
      (f'eval_sets[{name!r}]', pats) for name, pats in config.eval_sets]
  for key, patterns in sets:
    try:
      womd.expand_paths(list(patterns))
    except FileNotFoundError as e:
      raise ValueError(f'{key}: {e}') from None
  if config.optimizer.total_steps != config.num_steps:
    raise ValueError(
        f'optimizer.total_steps={config.optimizer.total_steps} differs from '
        f'num_steps={config.num_steps}: the schedule would not end with the '
        'run')


def _pipeline_config(config: TrainConfig, *, train: bool):
  return pipeline.PipelineConfig(
      reader=config.reader, shuffle=train,
      shuffle_buffer=config.shuffle_buffer if train else 1,
      seed=config.seed, num_epochs=None if train else 1,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      skip_bad_records=config.skip_bad_records)


def _local_batches(patterns, config: TrainConfig, *, train: bool,
                   skip_batches: int = 0, with_ids: bool = False,
                   stats: womd.ReadStats | None = None) -> Iterator[Any]:
  """This process's rows of every global batch, as numpy states (with
  ``with_ids``: ``(state, scenario ids)`` pairs)."""
  local = config.batch_size // jax.process_count()
  examples = pipeline.scenarios(list(patterns),
                                _pipeline_config(config, train=train),
                                stats=stats)
  # Resuming replays the data order up to the checkpoint: skipping converted
  # examples costs host time (a few ms each) but keeps the order exactly a
  # function of (seed, step).
  examples = itertools.islice(examples, skip_batches * local, None)
  for batch in pipeline.batches(examples, local, drop_remainder=train):
    state = batch.state
    if batch.batch_size < local:  # pad a short last eval batch
      state = _pad_batch(batch.state, local)
    yield (state, list(batch.scenario_ids)) if with_ids else state


def _no_token_rows(state: datatypes.SimulatorState, count: int):
  """``count`` copies of the first row with every object invalid (they add
  no token)."""
  rows = jax.tree.map(lambda a: np.repeat(a[:1], count, 0), state)
  return rows.replace(log_trajectory=rows.log_trajectory.replace(
      valid=np.zeros_like(rows.log_trajectory.valid)))


def _pad_batch(state: datatypes.SimulatorState, size: int):
  """Pads ``state`` to ``size`` rows that add no token."""
  n = jax.tree.leaves(state)[0].shape[0]
  filler = _no_token_rows(state, size - n)
  return jax.tree.map(lambda a, b: np.concatenate([a, b]), state, filler)


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


def _in_lockstep(batches: Iterator[Any], no_tokens) -> Iterator[Any]:
  """This process's batches until no process has one left.

  Processes read different files, so their shares of a held-out set can
  differ in length; one whose share ran out feeds ``no_tokens`` (a batch
  that adds nothing to the sums) so that every process joins every
  collective evaluation step.
  """
  it = iter(batches)
  while True:
    local = next(it, None)
    if not _any_process(local is not None):
      return
    yield no_tokens if local is None else local


def _any_process(flag: bool) -> bool:
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
    if step >= num_steps or not _any_process(bool(self.requested)):
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


def _summarise(sums: dict[str, float]) -> dict[str, float]:
  n = sums['count']
  out = {'tokens': n}
  if n > 0:
    out['loss'] = sums['loss'] / n
    out['accuracy'] = sums['correct'] / n
    if 'unigram_loss' in sums:
      out['unigram_loss'] = sums['unigram_loss'] / n
      out['unigram_accuracy'] = sums['unigram_correct'] / n
  return out


def _init_fn(config: TrainConfig, sample, tx):
  """rng -> a fresh TrainState for batches shaped like ``sample``."""
  scene, toks = jax.eval_shape(
      functools.partial(steps.model_inputs, model_config=config.model),
      sample)

  def init(rng):
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (scene, toks))
    params = motion_lm.init(rng, config.model, *zeros)
    return TrainState.create(params, tx)
  return init


def train_and_evaluate(config: TrainConfig, workdir: str | pathlib.Path, *,
                       callback: Callable[[int, dict], None] | None = None
                       ) -> dict[str, Any]:
  """Runs (or resumes) pre-training; returns the final evaluation.

  Args:
    config: the job.
    workdir: checkpoints, ``metrics.jsonl``, TensorBoard events.
    callback: called as ``callback(step, train_metrics)`` after every step
      (tests use it to interrupt a run).

  Returns:
    {'step', 'num_params', 'eval': {set name: metrics}, 'train': last
    training metrics, 'params', 'data': this run's reading of the training
    files (``womd.ReadStats.summary``: records read and skipped, tracks
    dropped by ``reader.max_num_objects``)}.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lock(workdir, 'pre-training'):
    return _train_and_evaluate(config, workdir, callback)


def workdir_lock(workdir: pathlib.Path, what: str):
  """One run per workdir: a second run in it stops at once with a
  ``fileio.LockedError`` naming the first (instead of both appending every
  ``metrics.jsonl`` line and racing on the checkpoints). Held by process 0
  (the workdir is shared between processes)."""
  if jax.process_index() != 0:
    return contextlib.nullcontext()
  return fileio.DirLock(workdir, what=what)


def _train_and_evaluate(config, workdir, callback):
  """``train_and_evaluate`` with the workdir's lock held."""
  mesh = parallel.make_mesh(config.num_devices)
  check_config(config, mesh)

  tx = steps.make_optimizer(config.optimizer)
  sample = next(_local_batches(config.train_files, config, train=False))
  # What a process whose held-out share ran out feeds while others evaluate.
  no_tokens = _no_token_rows(sample, config.batch_size // jax.process_count())
  sample = jax.tree.map(
      lambda a: np.zeros((config.batch_size,) + a.shape[1:], a.dtype), sample)
  init = _init_fn(config, sample, tx)
  root = jax.random.key(config.seed)
  init_rng, loop_rng = jax.random.split(root)
  repl = parallel.replicated(mesh)
  state = jax.jit(init, out_shardings=repl)(init_rng)
  num_params = motion_lm.count_params(state.params)

  ckpt = checkpoint_lib.Checkpointer(
      workdir / 'checkpoints', max_to_keep=config.keep_checkpoints)
  writer = MetricsWriter(workdir)
  restored = ckpt.restore(state)
  if restored is not None:
    state = restored
    origin = f'resumed from step {int(state.step)}'
  elif config.init_from:
    params = checkpoint_lib.load_params(config.init_from, state.params)
    state = TrainState.create(parallel.replicate(params, mesh), tx)
    origin = f'initialised from {config.init_from}'
  else:
    origin = 'from scratch'
  start = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    print(f'pre-training {num_params:,} parameters on {mesh.devices.size} '
          f'device(s), {origin}', flush=True)

  train_fn = parallel.jit_step(
      functools.partial(steps.train_step, model_config=config.model,
                        optimizer_config=config.optimizer), mesh)
  data = parallel.data_sharding(mesh)
  eval_fn = jax.jit(
      functools.partial(steps.eval_step, model_config=config.model),
      in_shardings=(repl, data, repl), out_shardings=repl)
  count_fn = jax.jit(
      functools.partial(steps.token_counts, model_config=config.model),
      in_shardings=(data,), out_shardings=repl)

  # The unigram baseline: per-type token frequencies of training batches.
  counts = jnp.zeros((len(datatypes.ObjectTypeIds), config.model.vocab_size))
  for local in itertools.islice(
      _local_batches(config.train_files, config, train=True),
      config.unigram_batches):
    counts = counts + count_fn(parallel.shard_batch(local, mesh))
  unigram = losses.unigram_log_probs(counts)

  def evaluate(step: int) -> dict[str, dict[str, float]]:
    results = {}
    for name, patterns in config.eval_sets:
      total = None
      read = womd.ReadStats()
      batches = _local_batches(patterns, config, train=False, stats=read)
      if config.eval_batches:
        batches = itertools.islice(batches, config.eval_batches)
      batches = _in_lockstep(batches, no_tokens)
      for local in batches:
        sums = eval_fn(state.params, parallel.shard_batch(local, mesh),
                       unigram)
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
      if total is None:
        continue
      values = _summarise({k: float(v) for k, v in
                           jax.device_get(total).items()})
      if read.num_skipped:
        values['skipped_records'] = float(read.num_skipped)
      writer.write(step, f'eval/{name}', values)
      results[name] = values
    return results

  data_stats = womd.ReadStats()
  batches = pipeline.prefetch(
      _local_batches(config.train_files, config, train=True,
                     skip_batches=start, with_ids=True, stats=data_stats),
      size=2)
  num_skipped = 0
  last_train: dict[str, float] = {}
  results: dict[str, dict[str, float]] = {}
  window = None
  t0, n0 = time.perf_counter(), start
  bar = tqdm.tqdm(total=config.num_steps, initial=start, desc='pretrain',
                  disable=not config.progress or jax.process_index() != 0)
  preemption = PreemptionGuard()
  try:
    for step in range(start, config.num_steps):
      local, ids = next(batches)
      rng = jax.random.fold_in(loop_rng, step)
      state, metrics = train_fn(state, parallel.shard_batch(local, mesh), rng)
      done = step + 1
      stop_on_nonfinite(metrics, state, ckpt, done,
                        f'the batch of scenarios {ids}')
      window = metrics if window is None else jax.tree.map(
          jnp.add, window, metrics)
      if done % config.log_every == 0 or done == config.num_steps:
        host = {k: float(v) for k, v in jax.device_get(window).items()}
        n = done - n0
        elapsed = time.perf_counter() - t0
        last_train = _summarise(host)
        last_train.update(
            grad_norm=host['grad_norm'] / n, param_norm=host['param_norm'] / n,
            learning_rate=host['learning_rate'] / n,
            steps_per_second=n / elapsed,
            examples_per_second=n * config.batch_size / elapsed,
            tokens_per_second=host['count'] / elapsed)
        check_finite(last_train, done)
        writer.write(done, 'train', last_train)
        if data_stats.num_skipped > num_skipped:
          for err in data_stats.errors[num_skipped:]:
            print(f'skipped a bad record: {err}', flush=True)
          num_skipped = data_stats.num_skipped
          writer.write(done, 'data', {'skipped_records': float(num_skipped)})
        bar.set_postfix(loss=f'{last_train.get("loss", 0):.3f}')
        window, t0, n0 = None, time.perf_counter(), done
      bar.update(1)
      if done % config.eval_every == 0 or done == config.num_steps:
        results = evaluate(done)
      if done % config.checkpoint_every == 0 or done == config.num_steps:
        ckpt.save(state)
      if callback is not None:
        callback(done, metrics)
      preemption.stop_if_requested(state, ckpt, done, config.num_steps)
  finally:
    preemption.restore()
    batches.close()  # ends the reading thread
    bar.close()
    ckpt.close()
    writer.close()
  if start >= config.num_steps:
    results = evaluate(start)
  return {'step': int(jax.device_get(state.step)), 'num_params': num_params,
          'eval': results, 'train': last_train, 'params': state.params,
          'data': data_stats.summary()}
