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
import dataclasses
import functools
import itertools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from prefalign import datatypes
from prefalign.data import cache as scenario_cache
from prefalign.data import pipeline
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.train import checkpoint as checkpoint_lib
from prefalign.train import losses
from prefalign.train import parallel
from prefalign.train import runner
from prefalign.train import runtime
from prefalign.train import steps
from prefalign.train.state import TrainState

__all__ = ['TrainConfig', 'train_and_evaluate', 'check_config']


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
    data_cache: a folder: the training files are converted once into
      fixed-shape arrays there (``data.cache``; reused by later runs and
      resumed if interrupted) and every batch is read back by index, a
      fresh permutation per epoch (seed, epoch), so the loop does not wait
      on parsing; '' converts the files as it streams them.
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
  data_cache: str = ''


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
  if train and config.data_cache:
    yield from _cached_batches(patterns, config, skip_batches, with_ids,
                               stats)
    return
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


def _cached_batches(patterns, config: TrainConfig, skip_batches: int,
                    with_ids: bool, stats: womd.ReadStats | None):
  """``_local_batches`` from ``config.data_cache``: global batch ``k`` of
  epoch ``e`` is slice ``k`` of a permutation drawn from (seed, e), so a
  resumed run reads exactly the batches it would have."""
  cache = scenario_cache.build(
      list(patterns), config.reader, config.data_cache,
      skip_bad_records=config.skip_bad_records, stats=stats,
      progress=config.progress and jax.process_index() == 0)
  size, local = config.batch_size, config.batch_size // jax.process_count()
  per_epoch = len(cache) // size
  if per_epoch < 1:
    raise ValueError(f'data_cache {cache.folder}: {len(cache)} scenarios '
                     f'cannot fill one batch of batch_size={size}')
  order, order_epoch = None, -1
  for step in itertools.count(skip_batches):
    epoch, k = divmod(step, per_epoch)
    if epoch != order_epoch:
      order = np.random.default_rng([config.seed, epoch]).permutation(
          len(cache))
      order_epoch = epoch
    rows = order[k * size:(k + 1) * size]
    rows = rows[jax.process_index() * local:(jax.process_index() + 1) * local]
    state = cache.states(rows)
    yield (state, [cache.scenario_ids[i] for i in rows]) if with_ids else state


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
    if not runtime.any_process(local is not None):
      return
    yield no_tokens if local is None else local


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
  with runtime.workdir_lock(workdir, 'pre-training'):
    return _train_and_evaluate(config, workdir, callback)


def _initial_state(config: TrainConfig, sample, tx, mesh,
                   ckpt: checkpoint_lib.Checkpointer):
  """(state, number of parameters, where it came from): the newest
  checkpoint, else ``config.init_from``'s parameters, else a fresh init."""
  init = _init_fn(config, sample, tx)
  init_rng = jax.random.split(jax.random.key(config.seed))[0]
  state = jax.jit(init, out_shardings=parallel.replicated(mesh))(init_rng)
  num_params = motion_lm.count_params(state.params)
  restored = ckpt.restore(state)
  if restored is not None:
    return restored, num_params, f'resumed from step {int(restored.step)}'
  if config.init_from:
    params = checkpoint_lib.load_params(config.init_from, state.params)
    state = TrainState.create(parallel.replicate(params, mesh), tx)
    return state, num_params, f'initialised from {config.init_from}'
  return state, num_params, 'from scratch'


def _unigram(config: TrainConfig, mesh) -> jax.Array:
  """The unigram baseline: per-type token log-frequencies of training
  batches."""
  count_fn = jax.jit(
      functools.partial(steps.token_counts, model_config=config.model),
      in_shardings=(parallel.data_sharding(mesh),),
      out_shardings=parallel.replicated(mesh))
  counts = jnp.zeros((len(datatypes.ObjectTypeIds), config.model.vocab_size))
  for local in itertools.islice(
      _local_batches(config.train_files, config, train=True),
      config.unigram_batches):
    counts = counts + count_fn(parallel.shard_batch(local, mesh))
  return losses.unigram_log_probs(counts)


def _evaluator(config: TrainConfig, mesh, no_tokens,
               writer: runtime.MetricsWriter):
  """(state, step) -> {set name: token loss / accuracy next to the
  unigram baseline} over ``config.eval_sets``."""
  repl = parallel.replicated(mesh)
  eval_fn = jax.jit(
      functools.partial(steps.eval_step, model_config=config.model),
      in_shardings=(repl, parallel.data_sharding(mesh), repl),
      out_shardings=repl)
  unigram = _unigram(config, mesh)

  def evaluate(state, step: int) -> dict[str, dict[str, float]]:
    results = {}
    for name, patterns in config.eval_sets:
      total = None
      read = womd.ReadStats()
      batches = _local_batches(patterns, config, train=False, stats=read)
      if config.eval_batches:
        batches = itertools.islice(batches, config.eval_batches)
      for local in _in_lockstep(batches, no_tokens):
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
  return evaluate


def _train_log(batch_size: int):
  """The training log of a window: token loss and accuracy, norms, rates."""
  def log(host: dict[str, float], n: int, elapsed: float):
    values = _summarise(host)
    values.update(
        grad_norm=host['grad_norm'] / n, param_norm=host['param_norm'] / n,
        learning_rate=host['learning_rate'] / n,
        steps_per_second=n / elapsed,
        examples_per_second=n * batch_size / elapsed,
        tokens_per_second=host['count'] / elapsed)
    return values
  return log


def _skip_reporter(data_stats: womd.ReadStats, writer: runtime.MetricsWriter):
  """After each log: prints and logs the bad records skipped since."""
  reported = 0

  def report(done: int) -> None:
    nonlocal reported
    if data_stats.num_skipped > reported:
      for err in data_stats.errors[reported:]:
        print(f'skipped a bad record: {err}', flush=True)
      reported = data_stats.num_skipped
      writer.write(done, 'data', {'skipped_records': float(reported)})
  return report


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
  loop_rng = jax.random.split(jax.random.key(config.seed))[1]
  ckpt = checkpoint_lib.Checkpointer(
      workdir / 'checkpoints', max_to_keep=config.keep_checkpoints)
  writer = runtime.MetricsWriter(workdir)
  state, num_params, origin = _initial_state(config, sample, tx, mesh, ckpt)
  start = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    print(f'pre-training {num_params:,} parameters on {mesh.devices.size} '
          f'device(s), {origin}', flush=True)
  train_fn = parallel.jit_step(
      functools.partial(steps.train_step, model_config=config.model,
                        optimizer_config=config.optimizer), mesh)
  evaluate = _evaluator(config, mesh, no_tokens, writer)
  data_stats = womd.ReadStats()
  batches = pipeline.prefetch(
      _local_batches(config.train_files, config, train=True,
                     skip_batches=start, with_ids=True, stats=data_stats),
      size=2)

  def one_step(state, step: int):
    local, ids = next(batches)
    rng = jax.random.fold_in(loop_rng, step)
    state, metrics = train_fn(state, parallel.shard_batch(local, mesh), rng)
    return state, metrics, f'the batch of scenarios {ids}'

  try:
    state, last_train, results = runner.run(
        state, start, runner.Schedule(
            num_steps=config.num_steps, log_every=config.log_every,
            eval_every=config.eval_every,
            checkpoint_every=config.checkpoint_every),
        runner.Hooks(step=one_step, log=_train_log(config.batch_size),
                     evaluate=evaluate,
                     after_log=_skip_reporter(data_stats, writer)),
        checkpointer=ckpt, writer=writer, name='pretrain',
        progress=config.progress, callback=callback)
  finally:
    batches.close()  # ends the reading thread
    ckpt.close()
    writer.close()
  return {'step': int(jax.device_get(state.step)), 'num_params': num_params,
          'eval': results, 'train': last_train, 'params': state.params,
          'data': data_stats.summary()}
