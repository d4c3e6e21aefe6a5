"""Converted scenarios on disk, read back by index: the loops' input path.

Parsing a WOMD record and converting it to a padded ``SimulatorState``
costs tens of milliseconds of Python per scenario, more than an accelerator
step takes for a whole batch. A cache converts each file set once, with one
``ReaderConfig``, into fixed-shape numpy arrays (``.npy``, one per state
leaf and shard of ``shard_size`` scenarios); training then reads batches by
index from memory-mapped files, a copy per leaf::

  cache = scenario_cache.build(['train.tfrecord@64'], reader, 'runs/cache')
  state = cache.states([3, 17, 5])   # SimulatorState with a leading [3]
  cache.scenario_ids[3], cache.sources[3]  # 'id', (path, record)

Layout: ``ROOT/KEY/`` where ``KEY`` hashes the files (paths, sizes,
modification times) and the reader config, so a changed file or config
gets a new cache and a stale one is never read. Each shard is written to a
temporary folder and renamed when complete; ``manifest.json`` is written
last. An interrupted build resumes: complete shards are kept and their
records are not converted again.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import jax
import numpy as np
import tqdm

from prefalign import datatypes
from prefalign import fileio
from prefalign.data import pipeline
from prefalign.data import synthetic
from prefalign.data import womd

__all__ = ['ScenarioCache', 'build', 'open_cache', 'cache_key']

MANIFEST = 'manifest.json'
_VERSION = 1


def _template(reader: womd.ReaderConfig) -> datatypes.SimulatorState:
  """A state of ``reader``'s shapes: the tree every shard must match."""
  return womd.state_from_scenario(
      synthetic.straight_road_scenario('template'), reader).state


def _leaf_names(state) -> list[str]:
  return [jax.tree_util.keystr(path) for path, _ in
          jax.tree_util.tree_flatten_with_path(state)[0]]


def cache_key(patterns: str | Sequence[str],
              reader: womd.ReaderConfig) -> str:
  """The folder name of a file set read with ``reader``."""
  paths = womd.expand_paths(patterns)
  files = []
  for p in paths:
    st = os.stat(p)
    files.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
  blob = json.dumps([_VERSION, files, repr(reader)]).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


@dataclasses.dataclass
class ScenarioCache:
  """A built cache, memory-mapped.

  Attributes:
    folder: the cache's folder (``ROOT/KEY``).
    scenario_ids: every scenario's id, in file order.
    sources: every scenario's ``(path, record)``.
  """
  folder: pathlib.Path
  scenario_ids: list[str]
  sources: list[tuple[str, int]]
  _treedef: object
  _shards: list[list[np.ndarray]]
  _shard_size: int

  def __len__(self) -> int:
    return len(self.scenario_ids)

  def states(self, indices: Sequence[int]) -> datatypes.SimulatorState:
    """The scenarios ``indices``, stacked on a leading axis (numpy)."""
    idx = np.asarray(indices, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
      raise IndexError(f'{self.folder}: scenario index out of range [0, '
                       f'{len(self)}): {idx.tolist()}')
    shard, row = np.divmod(idx, self._shard_size)
    leaves = []
    for k in range(len(self._shards[0])):
      leaves.append(np.stack([self._shards[s][k][r]
                              for s, r in zip(shard, row)]))
    return jax.tree.unflatten(self._treedef, leaves)


def _shard_name(k: int) -> str:
  return f'shard-{k:05d}'


def _write_shard(folder: pathlib.Path, k: int,
                 examples: list[womd.ScenarioExample]) -> None:
  """One shard folder, renamed into place when complete."""
  final = folder / _shard_name(k)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=folder, prefix=f'.{final.name}.',
                                      suffix=fileio.TEMP_SUFFIX))
  try:
    stacked = datatypes.stack([ex.state for ex in examples])
    for i, leaf in enumerate(jax.tree.leaves(stacked)):
      np.save(tmp / f'leaf-{i:03d}.npy', np.asarray(leaf))
    (tmp / 'index.json').write_text(json.dumps(
        [[ex.scenario_id, ex.path, ex.record] for ex in examples]))
    try:
      os.rename(tmp, final)
    except OSError:
      if not (final / 'index.json').exists():  # not another builder's
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def build(patterns: str | Sequence[str], reader: womd.ReaderConfig,
          root: str | os.PathLike, *, shard_size: int = 256,
          skip_bad_records: bool = False,
          stats: womd.ReadStats | None = None,
          progress: bool = False) -> ScenarioCache:
  """Converts the files once (resuming a partial build) and opens them.

  Args:
    patterns: WOMD TFRecord files, globs or ``name@N``.
    reader: the conversion's sizes and checks.
    root: where caches live; this one goes to ``root/cache_key(...)``.
    shard_size: scenarios per shard (memory while building is one shard).
    skip_bad_records: skip and count bad records instead of raising.
    stats: receives the read / skipped counts of the records converted.
    progress: a progress bar over the records converted.

  Returns:
    The opened ``ScenarioCache``.
  """
  folder = pathlib.Path(root) / cache_key(patterns, reader)
  if (folder / MANIFEST).exists():
    return open_cache(folder, reader)
  folder.mkdir(parents=True, exist_ok=True)
  done = []  # the complete shards of an interrupted build, in order
  while (index := folder / _shard_name(len(done)) / 'index.json').exists():
    done.append(json.loads(index.read_text()))
  kept = {(p, r) for rows in done for _, p, r in rows}
  stats = stats if stats is not None else womd.ReadStats()
  config = pipeline.PipelineConfig(reader=reader,
                                   skip_bad_records=skip_bad_records)
  examples = pipeline.scenarios(patterns, config, stats=stats,
                                skip_records=kept)
  if progress:
    examples = tqdm.tqdm(examples, desc=f'cache {folder.name}',
                         unit='scenario', initial=len(kept))
  k, group = len(done), []
  for ex in examples:
    group.append(ex)
    if len(group) == shard_size:
      _write_shard(folder, k, group)
      k, group = k + 1, []
  if group:
    _write_shard(folder, k, group)
    k += 1
  if k == 0:
    raise ValueError(f'no usable scenario in {patterns!r} to cache')
  fileio.atomic_write_text(folder / MANIFEST, json.dumps({
      'version': _VERSION, 'shards': k, 'shard_size': shard_size,
      'leaves': _leaf_names(_template(reader)), 'reader': repr(reader),
      'patterns': [str(p) for p in womd.expand_paths(patterns)]}, indent=1))
  return open_cache(folder, reader)


def open_cache(folder: str | os.PathLike,
               reader: womd.ReaderConfig) -> ScenarioCache:
  """Opens a built cache (``build`` returns one already opened).

  Raises:
    ValueError: naming the file, if the manifest is missing or unreadable,
      was written for another reader config, or a shard does not match it.
  """
  folder = pathlib.Path(folder)
  path = folder / MANIFEST
  try:
    manifest = json.loads(path.read_text())
    num, size = int(manifest['shards']), int(manifest['shard_size'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: not a scenario cache manifest ({e}); '
                     f'delete {folder} to rebuild it') from None
  template = _template(reader)
  names = _leaf_names(template)
  if manifest.get('leaves') != names or manifest.get('reader') != repr(
      reader):
    raise ValueError(f'{path}: written for another state layout or reader '
                     f'config ({manifest.get("reader")}); delete {folder} '
                     'to rebuild it')
  want = [np.shape(a) for a in jax.tree.leaves(template)]
  shards, ids, sources = [], [], []
  for k in range(num):
    shard = folder / _shard_name(k)
    try:
      rows = json.loads((shard / 'index.json').read_text())
      leaves = [np.load(shard / f'leaf-{i:03d}.npy', mmap_mode='r')
                for i in range(len(names))]
    except (OSError, ValueError) as e:
      raise ValueError(f'{shard}: unreadable cache shard ({e}); delete '
                       f'{folder} to rebuild it') from None
    for name, leaf, shape in zip(names, leaves, want):
      if leaf.shape[1:] != shape or leaf.shape[0] != len(rows):
        raise ValueError(f'{shard}: leaf {name} has shape {leaf.shape}, '
                         f'expected ({len(rows)}, *{shape}); delete '
                         f'{folder} to rebuild it')
    if k < num - 1 and len(rows) != size:
      raise ValueError(f'{shard}: {len(rows)} scenarios, expected {size}; '
                       f'delete {folder} to rebuild it')
    shards.append(leaves)
    ids.extend(r[0] for r in rows)
    sources.extend((r[1], r[2]) for r in rows)
  return ScenarioCache(folder=folder, scenario_ids=ids, sources=sources,
                       _treedef=jax.tree.structure(template), _shards=shards,
                       _shard_size=size)
