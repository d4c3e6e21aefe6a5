"""What alignment training reads from a preference directory.

``record_states`` pairs each record (``records.read_records``) with its
scenario, re-read from the record's source file; ``training_example`` turns
one into padded preference-step inputs (the teacher-forcing tokens of its
sequences, ``collection.sequence_tokens``). ``relabel`` re-pairs a record's
rollouts with another ranking strategy (the paper's baselines on one
collection, made with ``keep_all_rollouts=True``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import dataclasses
import pathlib
from typing import Any
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from prefalign import datatypes
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.preference import collection
from prefalign.preference import ranking as ranking_lib
from prefalign.preference import records as records_lib

__all__ = ['record_states', 'training_example', 'relabel']

# ``collection.sequence_tokens`` compiled once per model config (ModelConfig
# is hashable) and input shape: (U, N, K) sequences, (U,) rollout indices.
_sequence_tokens_jit = jax.jit(collection.sequence_tokens,
                               static_argnames='config')


def record_states(records: Iterable[records_lib.PreferenceRecord],
                  reader: womd.ReaderConfig = womd.ReaderConfig()
                  ) -> Iterator[tuple[records_lib.PreferenceRecord,
                                      datatypes.SimulatorState]]:
  """Each record with its scenario re-read from the record's source file.

  Every source file is read once, front to back, for the records that name
  it (records of one file in any order).

  Raises:
    FileNotFoundError: a record's source file is gone (named).
    tfrecord.DataError: the file has no such record, or another scenario
      there (named: file, record, both ids).
  """
  by_source: dict[str, list[records_lib.PreferenceRecord]] = {}
  for rec in records:
    by_source.setdefault(rec.source, []).append(rec)
  for source, recs in by_source.items():
    if not pathlib.Path(source).exists():
      raise FileNotFoundError(
          f'{source}: the scenario file of {len(recs)} preference record(s) '
          f'(first: {recs[0].scenario_id}) is missing')
    wanted = {r.record: r for r in recs}
    found = set()
    for path, index, scenario in womd.read_scenarios([source]):
      rec = wanted.get(index)
      if rec is None:
        continue
      ex = womd.state_from_scenario(scenario, reader, path=path, record=index)
      if ex.scenario_id != rec.scenario_id:
        raise tfrecord.DataError(
            f'{source} record {index}: scenario {ex.scenario_id!r}, but the '
            f'preference record expects {rec.scenario_id!r} (the file '
            'changed since collection)')
      found.add(index)
      yield rec, ex.state
    missing = sorted(set(wanted) - found)
    if missing:
      raise tfrecord.DataError(
          f'{source}: no record {missing[0]} (scenario '
          f'{wanted[missing[0]].scenario_id}); the file is shorter than at '
          'collection')


def training_example(rec: records_lib.PreferenceRecord,
                     state: datatypes.SimulatorState,
                     config: motion_lm.ModelConfig, *, num_sequences: int,
                     num_pairs: int) -> dict[str, Any]:
  """One scenario's preference-step inputs, padded to fixed sizes.

  Args:
    rec: a record.
    state: its scenario (``record_states``).
    config: the model's config.
    num_sequences: U, sequences after padding (>= the record's).
    num_pairs: P, pairs after padding (>= the record's).

  Returns:
    numpy leaves of one row of ``train.steps.PreferenceBatch``: 'state',
    'tokens' (U, N, K), 'pairs' (P, 2), 'pair_valid' (P,). Padding
    sequences repeat the first; padding pairs are (0, 0) and not valid.
  """
  u, p = rec.sequences.shape[0], rec.pairs.shape[0]
  vocab = config.tokenizer.vocab_size
  if rec.sequences.size and (rec.sequences.min() < 0 or
                             rec.sequences.max() >= vocab):
    raise tfrecord.DataError(
        f'token ids {int(rec.sequences.min())}..'
        f'{int(rec.sequences.max())} outside the vocabulary [0, {vocab}) of '
        'this model (collected with another tokenizer?)',
        path=rec.source or None, record=rec.record,
        scenario_id=rec.scenario_id)
  if u > num_sequences or p > num_pairs:
    raise ValueError(
        f'{rec.scenario_id}: {u} sequences / {p} pairs do not fit the '
        f'padding of {num_sequences} / {num_pairs}')
  seq = np.concatenate([rec.sequences, np.repeat(rec.sequences[:1],
                                                 num_sequences - u, 0)])
  which = np.concatenate([rec.sequence_rollout,
                          np.repeat(rec.sequence_rollout[:1],
                                    num_sequences - u)])
  toks = _sequence_tokens_jit(state, jnp.asarray(seq, jnp.int32),
                              jnp.asarray(which), config=config)
  pairs = np.zeros((num_pairs, 2), np.int32)
  pairs[:p] = rec.pairs
  return {'state': jax.tree.map(np.asarray, state),
          'tokens': jax.tree.map(np.asarray, toks), 'pairs': pairs,
          'pair_valid': np.arange(num_pairs) < p}


def _rng(scenario_id: str, seed: int) -> np.random.Generator:
  """The random choices of ``relabel`` for one scenario."""
  return np.random.default_rng([seed, zlib.crc32(scenario_id.encode())])


def relabel(rec: records_lib.PreferenceRecord, strategy: str, *,
            num_pairs: int, pairing: str = 'rank',
            seed: int = 0) -> records_lib.PreferenceRecord:
  """Re-pairs a record's rollouts with another ranking strategy.

  The rollouts, their OT distances and ADE are the collection's; only the
  pairs change, so every strategy sees the same samples (the paper's
  baselines under one data budget). Strategies as
  ``ranking.rank_rollouts``: 'ot' and 'ade' rank by the stored distances,
  'random' by a random permutation, 'adversarial' prefers the logged
  demonstration over ``num_pairs`` random rollouts. Random choices depend
  on ``seed`` and the scenario id only.

  Args:
    rec: a record collected with ``keep_all_rollouts=True``.
    strategy: one of ``ranking.STRATEGIES``.
    num_pairs: P (2P <= R; P <= R for 'adversarial').
    pairing: one of ``ranking.PAIRINGS``.
    seed: root of the random choices.

  Returns:
    A compact record (``records.compact``) with the new pairs; ``distances`` is
    what the strategy ranked by.

  Raises:
    ValueError: the record does not hold every rollout and the log, or too
      few rollouts for the pairs (named).
  """
  num = rec.ot_distances.shape[0]
  have = set(rec.sequence_rollout.tolist())
  if not have >= set(range(records_lib.LOG, num)):
    raise ValueError(
        f'{rec.scenario_id}: the record holds {len(have)} of its {num} '
        'rollouts (+ the log); relabel needs a collection with '
        'keep_all_rollouts=True')
  config = ranking_lib.RankingConfig(strategy=strategy, num_pairs=num_pairs,
                                     pairing=pairing)
  try:
    config.check(num)
  except ValueError as e:
    raise ValueError(f'{rec.scenario_id}: {e}') from None
  rng = _rng(rec.scenario_id, seed)
  distances = {'ot': rec.ot_distances, 'ade': rec.ade,
               'adversarial': rec.ot_distances,
               'random': rng.random(num).astype(np.float32)}[strategy]
  if strategy == 'adversarial':
    unpref = rng.permutation(num)[:num_pairs]
    pref = np.full_like(unpref, records_lib.LOG)
  else:
    order = np.argsort(distances, kind='stable')
    best, worst = order[:num_pairs], order[num - num_pairs:]
    if pairing == 'rank':
      pref, unpref = best, worst
    elif pairing == 'random':
      pref, unpref = best, rng.permutation(worst)
    else:
      pref, unpref = np.repeat(best, num_pairs), np.tile(worst, num_pairs)
  index = {r: i for i, r in enumerate(rec.sequence_rollout.tolist())}
  pairs = np.array([[index[int(a)], index[int(b)]]
                    for a, b in zip(pref, unpref)], np.int32)
  return records_lib.compact(dataclasses.replace(
      rec, pairs=pairs, distances=np.asarray(distances, np.float32)))
