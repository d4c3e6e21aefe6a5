"""Streaming scenarios from many files: sharding, filtering, padding, batching.

A pipeline is a chain of plain Python iterators (no TensorFlow)::

  examples = pipeline.scenarios(['train.tfrecord@64'], config)
  for batch in pipeline.batches(examples, batch_size=8):
    batch.state           # SimulatorState with a leading [8] axis (numpy)
    batch.scenario_ids    # the 8 scenario ids, in order

Every converted scenario already has the fixed sizes of its ``ReaderConfig``
(objects, road-graph points, signals, steps), so batching is a stack. For
multi-host training each JAX process reads its own share of the files
(``process_index`` / ``process_count``); when there are fewer files than
processes, records are split instead.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator, Sequence
import dataclasses
import queue
import threading

import numpy as np

from prefalign import datatypes
from prefalign.data import womd

__all__ = [
    'PipelineConfig',
    'Batch',
    'scenarios',
    'batches',
    'prefetch',
    'shuffle',
    'shard_paths',
]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """What to read and how.

  Attributes:
    reader: sizes and checks of each converted scenario.
    shuffle: shuffle the file order every epoch, and examples within a buffer.
    shuffle_buffer: examples held for shuffling (1: no example shuffling).
    seed: seed of the shuffles (epoch e uses seed + e).
    num_epochs: passes over the files (None: forever).
    process_index, process_count: this host's share of the data.
    skip_bad_records: skip and count bad records instead of raising.
  """
  reader: womd.ReaderConfig = womd.ReaderConfig()
  shuffle: bool = False
  shuffle_buffer: int = 1
  seed: int = 0
  num_epochs: int | None = 1
  process_index: int = 0
  process_count: int = 1
  skip_bad_records: bool = False


@dataclasses.dataclass
class Batch:
  """A stacked batch of scenarios.

  Attributes:
    state: SimulatorState with leading batch axis [B].
    scenario_ids: the B scenario ids.
    sources: the B ``(path, record)`` pairs the scenarios came from.
  """
  state: datatypes.SimulatorState
  scenario_ids: list[str]
  sources: list[tuple[str | None, int | None]]

  @property
  def batch_size(self) -> int:
    return len(self.scenario_ids)


def shard_paths(paths: Sequence[str], process_index: int,
                process_count: int) -> tuple[list[str], bool]:
  """This process's files, and whether records must be split instead.

  Returns:
    ``(paths, split_records)``: with at least as many files as processes each
    process takes every ``process_count``-th file; otherwise every process
    reads all files and keeps every ``process_count``-th record.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is outside '
                     f'[0, {process_count}).')
  if len(paths) >= process_count:
    return list(paths[process_index::process_count]), False
  return list(paths), True


def scenarios(
    patterns: str | Sequence[str],
    config: PipelineConfig = PipelineConfig(), *,
    filter_fn: Callable[[womd.ScenarioExample], bool] | None = None,
    stats: womd.ReadStats | None = None,
    skip_records: Container[tuple[str, int]] = (),
) -> Iterator[womd.ScenarioExample]:
  """Streams converted scenarios from files, globs or ``name@N`` patterns.

  Args:
    patterns: what to read; a pattern that matches nothing raises
      FileNotFoundError naming it.
    config: sharding, shuffling, epochs and conversion.
    filter_fn: keep only examples for which it returns True.
    stats: receives read / skipped counts.
    skip_records: ``(path, record)`` pairs passed over without converting
      (e.g. those a resumed cache build already holds).
  """
  paths = womd.expand_paths(patterns)
  mine, split_records = shard_paths(paths, config.process_index,
                                    config.process_count)
  stats = stats if stats is not None else womd.ReadStats()
  epoch = 0
  while config.num_epochs is None or epoch < config.num_epochs:
    order = list(mine)
    if config.shuffle:
      np.random.default_rng(config.seed + epoch).shuffle(order)
    stream = _convert(order, config, stats, split_records, skip_records)
    if config.num_epochs is None:  # an endless stream must yield something
      stream = _nonempty(stream, paths, stats)
    if filter_fn is not None:
      stream = (ex for ex in stream if filter_fn(ex))
    if config.shuffle and config.shuffle_buffer > 1:
      stream = shuffle(stream, config.shuffle_buffer,
                       np.random.default_rng(config.seed + 7919 * epoch + 1))
    yield from stream
    epoch += 1


def _convert(paths, config, stats, split_records, skip_records=()):
  count = 0
  for path, index, scenario in womd.read_scenarios(
      paths, skip_bad_records=config.skip_bad_records, stats=stats):
    mine = count % config.process_count == config.process_index
    count += 1
    if (split_records and not mine) or (path, index) in skip_records:
      continue
    ex = womd.convert_counted(scenario, config.reader, stats, path=path,
                              record=index,
                              skip_bad_records=config.skip_bad_records)
    if ex is not None:
      yield ex


def _nonempty(stream, paths, stats):
  empty = True
  for ex in stream:
    empty = False
    yield ex
  if empty:
    first = f'; first: {stats.errors[0]}' if stats.errors else ''
    raise ValueError(
        f'no usable scenario in {len(paths)} file(s) {paths[:3]} for this '
        f'process ({stats.num_skipped} bad records skipped{first})')


def shuffle(stream: Iterable, size: int,
            rng: np.random.Generator) -> Iterator:
  """A shuffle buffer: holds ``size`` items, yields a random one of them."""
  buf = []
  for ex in stream:
    buf.append(ex)
    if len(buf) >= size:
      yield buf.pop(int(rng.integers(len(buf))))
  rng.shuffle(buf)
  yield from buf


def batches(examples: Iterable[womd.ScenarioExample], batch_size: int, *,
            drop_remainder: bool = True) -> Iterator[Batch]:
  """Stacks consecutive examples into batches of ``batch_size``.

  Raises:
    ValueError: if two examples of one batch differ in shape (they were read
      with different ReaderConfigs); the scenario ids are named.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  group: list[womd.ScenarioExample] = []
  for ex in examples:
    group.append(ex)
    if len(group) == batch_size:
      yield _stack(group)
      group = []
  if group and not drop_remainder:
    yield _stack(group)


def _stack(group: list[womd.ScenarioExample]) -> Batch:
  shapes = {ex.scenario_id: (ex.state.log_trajectory.shape,
                             ex.state.roadgraph_points.shape,
                             ex.state.log_traffic_light.shape)
            for ex in group}
  if len(set(shapes.values())) > 1:
    raise ValueError(f'cannot batch scenarios of different shapes: {shapes}')
  return Batch(state=datatypes.stack([ex.state for ex in group]),
               scenario_ids=[ex.scenario_id for ex in group],
               sources=[(ex.path, ex.record) for ex in group])


_END = object()


def prefetch(iterator: Iterable, size: int = 2) -> Iterator:
  """Runs ``iterator`` in a background thread, ``size`` items ahead.

  Reading and converting scenarios is host work; prefetching overlaps it with
  device steps. Exceptions raised by the producer are re-raised here. When the
  consumer stops early (``close()``, an error, garbage collection) the thread
  ends too: it never stays blocked on a full queue holding the iterator.
  """
  q: queue.Queue = queue.Queue(maxsize=max(1, size))
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in iterator:
        if not put(item):
          return
      put(_END)
    except BaseException as e:
      put(e)

  thread = threading.Thread(target=produce, daemon=True,
                            name='prefalign-prefetch')
  thread.start()
  try:
    while True:
      item = q.get()
      if item is _END:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    thread.join(timeout=5.0)
