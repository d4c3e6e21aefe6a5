"""Preference data: collected offline from the reference model, streamed back.

``collect`` samples R rollouts of every scenario with the frozen reference
model, ranks them (``ranking.rank_rollouts``) and writes one record per
scenario into sharded files of a directory::

  DIR/meta.json                     what was collected, and how
  DIR/preferences-00000.tfrecord    records of scenarios 0 .. S - 1
  DIR/preferences-00001.tfrecord    scenarios S .. 2S - 1, ...
  DIR/summary.json, DIR/distances.png   distance distributions (at the end)

A shard is written to a temporary name and renamed when complete, so an
interrupted collection resumes at the first missing shard and produces the
same records (scenario i samples with ``fold_in(key(seed), i)``). Shards use
the TFRecord framing of ``data.tfrecord`` (checksummed); each record is an
``.npz`` payload of a ``PreferenceRecord``.

A record holds token ids, not trajectories: the scenario (re-read from its
source file, checked by scenario id) and the ids determine the rollouts
(``rollout.replay_tokens``), and the logged demonstration (index -1 in
pairs, the adversarial baseline's preferred side) is re-tokenized from the
log. ``sequence_tokens`` rebuilds the model's teacher-forcing inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
import dataclasses
import functools
import io
import itertools
import json
import os
import pathlib
from typing import Any
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from prefalign import datatypes
from prefalign import fileio
from prefalign import rollout
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.model import tokenizer
from prefalign.preference import ranking as ranking_lib

__all__ = ['PreferenceRecord', 'encode_record', 'decode_record',
           'shard_path', 'read_records', 'collect', 'sequence_tokens',
           'summarize', 'record_states', 'training_example', 'relabel',
           'compact', 'LOG']

LOG = ranking_lib.LOG
_SHARD = 'preferences-{:05d}.tfrecord'
_ARRAYS = ('sequences', 'sequence_rollout', 'pairs', 'distances',
           'ot_distances', 'ade', 'agent_distances', 'agent_counted')


@dataclasses.dataclass
class PreferenceRecord:
  """The preference data of one scenario (R rollouts, U sequences, P pairs).

  Attributes:
    scenario_id: the scenario's id.
    source: the WOMD file it was read from.
    record: its record index in that file.
    sequences: int16 (U, N, K) token ids of every rollout some pair uses.
    sequence_rollout: int32 (U,) which rollout each sequence is (-1: the
      logged demonstration, closed-loop tokenized).
    pairs: int32 (P, 2) (preferred, unpreferred) indices into ``sequences``.
    distances: float32 (R,) the distance the ranking used.
    ot_distances: float32 (R,) OT occupancy distance of every rollout.
    ade: float32 (R,) mean displacement from the log.
    agent_distances: float32 (R, E) per-agent OT distance.
    agent_counted: bool (E,) agents in the scene distance.
  """
  scenario_id: str
  source: str
  record: int
  sequences: np.ndarray
  sequence_rollout: np.ndarray
  pairs: np.ndarray
  distances: np.ndarray
  ot_distances: np.ndarray
  ade: np.ndarray
  agent_distances: np.ndarray
  agent_counted: np.ndarray

  @property
  def preferred_rollouts(self) -> np.ndarray:
    """int32 (P,) rollout index of each pair's preferred side (-1: log)."""
    return self.sequence_rollout[self.pairs[:, 0]]

  @property
  def unpreferred_rollouts(self) -> np.ndarray:
    return self.sequence_rollout[self.pairs[:, 1]]


def encode_record(rec: PreferenceRecord) -> bytes:
  """The record as ``.npz`` bytes (no pickling)."""
  buf = io.BytesIO()
  np.savez_compressed(
      buf, scenario_id=np.array(rec.scenario_id), source=np.array(rec.source),
      record=np.array(rec.record, np.int64),
      **{k: np.asarray(getattr(rec, k)) for k in _ARRAYS})
  return buf.getvalue()


def decode_record(data: bytes, where: str = '<bytes>') -> PreferenceRecord:
  """Inverse of ``encode_record``; ``where`` names the record in errors."""
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      fields = {k: z[k] for k in z.files}
    rec = PreferenceRecord(
        scenario_id=str(fields.pop('scenario_id')),
        source=str(fields.pop('source')),
        record=int(fields.pop('record')),
        **{k: fields.pop(k) for k in _ARRAYS})
  except (ValueError, KeyError, OSError, TypeError) as e:
    raise tfrecord.DataError(f'{where}: not a preference record ({e})') from e
  u = rec.sequences.shape[0]
  if rec.pairs.ndim != 2 or rec.pairs.shape[1] != 2 or (
      rec.pairs.size and (rec.pairs.min() < 0 or rec.pairs.max() >= u)):
    raise tfrecord.DataError(f'{where} ({rec.scenario_id}): pairs index '
                             f'outside the {u} stored sequences')
  return rec


def shard_path(directory: os.PathLike, index: int) -> pathlib.Path:
  return pathlib.Path(directory) / _SHARD.format(index)


def _shards(directory: pathlib.Path) -> list[pathlib.Path]:
  return sorted(directory.glob('preferences-*.tfrecord'))


def read_records(directory: os.PathLike) -> Iterator[PreferenceRecord]:
  """Streams every record of a preference directory, shard by shard.

  Raises:
    FileNotFoundError: no shard in ``directory``.
    tfrecord.DataError: a corrupt shard or record (named).
  """
  directory = pathlib.Path(directory)
  shards = _shards(directory)
  if not shards:
    raise FileNotFoundError(f'{directory}: no preference shards '
                            '(preferences-*.tfrecord); run the collect stage')
  for path in shards:
    for index, data in tfrecord.read_records(path):
      yield decode_record(data, f'{path} record {index}')


def sequence_tokens(state: datatypes.SimulatorState, sequences: jax.Array,
                    sequence_rollout: jax.Array,
                    config: motion_lm.ModelConfig) -> tokenizer.Tokens:
  """Teacher-forcing inputs of a record's sequences.

  Args:
    state: unbatched SimulatorState of the record's scenario.
    sequences: int (U, N, K) token ids.
    sequence_rollout: int (U,) rollout index, -1 for the logged
      demonstration.
    config: the model's config.

  Returns:
    Tokens (U, N, K): generated sequences replayed from the current state
    (``rollout.replay_tokens``), the log's its closed-loop tokenization.
  """
  gen = rollout.replay_tokens(state, sequences, config)
  if not isinstance(sequence_rollout, jax.core.Tracer) and not np.any(
      np.asarray(sequence_rollout) == LOG):
    return gen  # no log sequence: skip the (costly) closed-loop tokenizer
  log = tokenizer.tokenize(state.log_trajectory,
                           state.object_metadata.object_types,
                           config.tokenizer)
  is_log = jnp.asarray(sequence_rollout) == LOG

  def pick(g, logged):
    mask = is_log.reshape(is_log.shape + (1,) * (g.ndim - 1))
    return jnp.where(mask, logged[None], g)

  return jax.tree.map(pick, gen, log)


def _unique_sequences(r: ranking_lib.Ranking) -> tuple[np.ndarray, np.ndarray]:
  """(rollout index of each stored sequence, pairs indexing them)."""
  pref = np.asarray(r.preferred)
  unpref = np.asarray(r.unpreferred)
  used, inverse = np.unique(np.concatenate([pref, unpref]),
                            return_inverse=True)
  pairs = inverse.reshape(2, -1).T.astype(np.int32)
  return used.astype(np.int32), pairs


def _meta(config: dict) -> dict:
  return json.loads(json.dumps(config, sort_keys=True, default=str))


def _check_meta(directory: pathlib.Path, meta: dict) -> None:
  path = directory / 'meta.json'
  if not path.exists():
    fileio.atomic_write_text(path, json.dumps(meta, indent=1,
                                              sort_keys=True))
    return
  old = json.loads(path.read_text())
  if old != meta:
    keys = sorted(k for k in set(old) | set(meta)
                  if old.get(k) != meta.get(k))
    raise ValueError(
        f'{path}: this directory holds preference data collected with a '
        f'different setup ({", ".join(keys)} differ); use a new directory '
        'or remove it')


def _differences(old, new, prefix: str = '') -> list[str]:
  """Dotted keys whose values differ between two JSON-like trees."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new)):
      out += _differences(old.get(k), new.get(k), f'{prefix}{k}.')
    return out
  return [] if old == new else [f'{prefix[:-1]} ({old!r} vs {new!r})']


def check_model(directory: os.PathLike,
                model_config: motion_lm.ModelConfig) -> None:
  """Refuses preference data collected with another model config.

  A record stores token ids of the collecting model's tokenizer, and its
  pairs were ranked from that model's rollouts: read by another model the
  ids mean other motions (or index past the vocabulary). The collection's
  ``meta.json`` names its model config.

  Raises:
    ValueError: naming the directory and each differing config key, or the
      missing meta.json.
  """
  path = pathlib.Path(directory) / 'meta.json'
  if not path.exists():
    raise ValueError(
        f'{path} is missing: the preference shards in {directory} cannot be '
        'matched to a model config (collect writes it); collect them again')
  try:
    stored = json.loads(path.read_text()).get('model')
  except (json.JSONDecodeError, AttributeError) as e:
    raise ValueError(f'{path}: not a collection meta.json ({e})') from None
  want = _meta(dataclasses.asdict(model_config))
  diffs = _differences(stored, want)
  if diffs:
    raise ValueError(
        f'{directory}: preference shards collected with a different model '
        f'config (stored vs this run): {"; ".join(diffs[:6])}'
        f'{" ..." if len(diffs) > 6 else ""}. Align the model that collected '
        'them, or collect again with this one')


def collect(params, model_config: motion_lm.ModelConfig,
            examples: Iterable[womd.ScenarioExample],
            directory: os.PathLike, *,
            ranking_config: ranking_lib.RankingConfig = (
                ranking_lib.RankingConfig()),
            num_rollouts: int = 64, temperature: float = 1.0,
            top_k: int = 0, top_p: float = 1.0,
            scenarios_per_shard: int = 64, seed: int = 0,
            max_scenarios: int = 0, keep_all_rollouts: bool = False,
            meta: dict | None = None,
            progress: bool = True,
            on_record: Callable[[PreferenceRecord], None] | None = None
            ) -> dict[str, Any]:
  """Samples, ranks and writes the preference data of some scenarios.

  Args:
    params: the reference model's parameters.
    model_config: its config.
    examples: scenarios (``womd.read_examples``); read in order.
    directory: output directory (created; resumed if it holds shards of the
      same setup).
    ranking_config: how rollouts are ranked and paired.
    num_rollouts: R, rollouts per scenario (the paper: 64).
    temperature, top_k, top_p: sampling.
    scenarios_per_shard: scenarios per shard file.
    seed: scenario i samples with ``fold_in(key(seed), i)``.
    max_scenarios: stop after this many (0: all).
    keep_all_rollouts: store the tokens of all R rollouts and the log's
      closed-loop tokenization, not only those the pairs use, so ``relabel``
      can re-pair the same rollouts with another strategy (the baselines at
      one sampling and ranking cost; R x N x K int16 per scenario).
    meta: extra JSON-able facts stored in meta.json (e.g. the checkpoint).
    progress: a progress bar.
    on_record: called with each new record.

  Returns:
    ``summarize`` of every record in the directory, also written to
    summary.json (with distances.png).
  """
  ranking_config.check(num_rollouts)
  if scenarios_per_shard < 1:
    raise ValueError(f'scenarios_per_shard must be >= 1, got '
                     f'{scenarios_per_shard}')
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  setup = _meta({'ranking': dataclasses.asdict(ranking_config),
                 'model': dataclasses.asdict(model_config),
                 'num_rollouts': num_rollouts, 'temperature': temperature,
                 'top_k': top_k, 'top_p': top_p,
                 'scenarios_per_shard': scenarios_per_shard, 'seed': seed,
                 'keep_all_rollouts': keep_all_rollouts, **(meta or {})})
  _check_meta(directory, setup)
  sample = jax.jit(functools.partial(
      rollout.sample_rollouts, config=model_config, num_rollouts=num_rollouts,
      temperature=temperature, top_k=top_k, top_p=top_p))
  rank = jax.jit(functools.partial(ranking_lib.rank_rollouts,
                                   config=ranking_config))
  tokenize = jax.jit(lambda s: tokenizer.tokenize(
      s.log_trajectory, s.object_metadata.object_types,
      model_config.tokenizer).tokens)
  root = jax.random.key(seed)
  it = iter(examples)
  if max_scenarios:
    it = itertools.islice(it, max_scenarios)
  bar = tqdm.tqdm(total=max_scenarios or None, desc='collect',
                  unit='scenario', disable=not progress)
  index, skipped = 0, []
  for shard in itertools.count():
    chunk = list(itertools.islice(it, scenarios_per_shard))
    if not chunk:
      break
    path = shard_path(directory, shard)
    if path.exists():  # written by an earlier run: resume after it
      index += len(chunk)
      bar.update(len(chunk))
      continue
    with tfrecord.TFRecordWriter(path) as writer:
      for ex in chunk:
        key = jax.random.fold_in(root, index)
        batch = jax.tree.map(lambda a: np.asarray(a)[None], ex.state)
        out = sample(params, batch, jax.random.fold_in(key, 0))
        traj = jax.tree.map(lambda a: a[0], rollout.to_metric_trajectory(out))
        r = jax.device_get(rank(ex.state, traj, jax.random.fold_in(key, 1)))
        index += 1
        bar.update(1)
        if not np.any(r.agent_counted):
          skipped.append(ex.scenario_id)
          continue
        used, pairs = _unique_sequences(r)
        if keep_all_rollouts:  # every rollout and the log; pairs re-indexed
          pairs = np.searchsorted(np.arange(LOG, num_rollouts), used)[pairs]
          used = np.arange(LOG, num_rollouts, dtype=np.int32)
        ids = np.asarray(out.tokens[0])[np.maximum(used, 0)]
        if np.any(used == LOG):
          ids[used == LOG] = np.asarray(tokenize(ex.state))
        rec = PreferenceRecord(
            scenario_id=ex.scenario_id, source=str(ex.path or ''),
            record=int(ex.record if ex.record is not None else -1),
            sequences=ids.astype(np.int16), sequence_rollout=used,
            pairs=pairs, distances=np.asarray(r.distances, np.float32),
            ot_distances=np.asarray(r.ot_distances, np.float32),
            ade=np.asarray(r.ade, np.float32),
            agent_distances=np.asarray(r.agent_distances, np.float32),
            agent_counted=np.asarray(r.agent_counted))
        writer.write(encode_record(rec))
        if on_record is not None:
          on_record(rec)
  bar.close()
  if index == 0:
    raise ValueError('collect: no scenarios to read')
  # One pass over the shards serves the summary and the plot.
  columns = _distance_columns(read_records(directory))
  summary = _summary(columns)
  summary['skipped_no_agents'] = skipped
  fileio.atomic_write_text(directory / 'summary.json',
                           json.dumps(summary, indent=1))
  _plot(columns, directory / 'distances.png')
  return summary


def _stats(x: np.ndarray) -> dict[str, float]:
  if x.size == 0:
    return {}
  q = np.percentile(x, [5, 25, 50, 75, 95])
  return {'mean': float(np.mean(x)), 'std': float(np.std(x)),
          'p5': float(q[0]), 'p25': float(q[1]), 'median': float(q[2]),
          'p75': float(q[3]), 'p95': float(q[4])}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
  ra = np.argsort(np.argsort(a)).astype(np.float64)
  rb = np.argsort(np.argsort(b)).astype(np.float64)
  if ra.std() == 0 or rb.std() == 0:
    return float('nan')
  return float(np.corrcoef(ra, rb)[0, 1])


def _distance_columns(records: Iterable[PreferenceRecord]
                      ) -> dict[str, list]:
  """Per record: every rollout's OT distance, the ranking distances of each
  pair's sides (the log at 0), the OT distances of the generated sides, the
  log-preferred count and the OT/ADE rank correlation."""
  cols = {k: [] for k in ('ot', 'pref', 'unpref', 'ot_pref', 'ot_unpref',
                          'num_log', 'rho')}
  for rec in records:
    d = np.concatenate([rec.distances, [0.0]])  # index -1: the log
    p, u = rec.preferred_rollouts, rec.unpreferred_rollouts
    cols['ot'].append(rec.ot_distances)
    cols['pref'].append(d[p])
    cols['unpref'].append(d[u])
    cols['ot_pref'].append(rec.ot_distances[p[p >= 0]])
    cols['ot_unpref'].append(rec.ot_distances[u[u >= 0]])
    cols['num_log'].append(int(np.sum(p == LOG)))
    cols['rho'].append(_spearman(rec.ot_distances, rec.ade))
  return cols


def _cat(xs: list) -> np.ndarray:
  return np.concatenate(xs) if xs else np.zeros(0)


def _summary(cols: dict[str, list]) -> dict[str, Any]:
  pref, unpref = _cat(cols['pref']), _cat(cols['unpref'])
  rho = np.asarray(cols['rho'], np.float64)
  return {
      'num_scenarios': len(cols['ot']), 'num_pairs': int(pref.size),
      'num_log_pairs': int(sum(cols['num_log'])),
      'ot_distance': _stats(_cat(cols['ot'])),
      'preferred_distance': _stats(pref),
      'unpreferred_distance': _stats(unpref), 'gap': _stats(unpref - pref),
      'ot_ade_spearman': (float(np.nanmean(rho)) if np.any(np.isfinite(rho))
                          else float('nan')),
  }


def record_states(records: Iterable[PreferenceRecord],
                  reader: womd.ReaderConfig = womd.ReaderConfig()
                  ) -> Iterator[tuple[PreferenceRecord,
                                      datatypes.SimulatorState]]:
  """Each record with its scenario re-read from the record's source file.

  Every source file is read once, front to back, for the records that name
  it (records of one file in any order).

  Raises:
    FileNotFoundError: a record's source file is gone (named).
    tfrecord.DataError: the file has no such record, or another scenario
      there (named: file, record, both ids).
  """
  by_source: dict[str, list[PreferenceRecord]] = {}
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


def training_example(rec: PreferenceRecord, state: datatypes.SimulatorState,
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
  toks = _sequence_tokens_jit(config)(state, jnp.asarray(seq, jnp.int32),
                                      jnp.asarray(which))
  pairs = np.zeros((num_pairs, 2), np.int32)
  pairs[:p] = rec.pairs
  return {'state': jax.tree.map(np.asarray, state),
          'tokens': jax.tree.map(np.asarray, toks), 'pairs': pairs,
          'pair_valid': np.arange(num_pairs) < p}


def compact(rec: PreferenceRecord) -> PreferenceRecord:
  """The record with only the sequences its pairs use (pairs re-indexed)."""
  used, inverse = np.unique(rec.pairs.reshape(-1), return_inverse=True)
  return dataclasses.replace(
      rec, sequences=rec.sequences[used],
      sequence_rollout=rec.sequence_rollout[used],
      pairs=inverse.reshape(-1, 2).astype(np.int32))


def _rng(scenario_id: str, seed: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(scenario_id.encode())])


def relabel(rec: PreferenceRecord, strategy: str, *, num_pairs: int,
            pairing: str = 'rank', seed: int = 0) -> PreferenceRecord:
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
    A compact record (``compact``) with the new pairs; ``distances`` is
    what the strategy ranked by.

  Raises:
    ValueError: the record does not hold every rollout and the log, or too
      few rollouts for the pairs (named).
  """
  num = rec.ot_distances.shape[0]
  have = set(rec.sequence_rollout.tolist())
  if not have >= set(range(LOG, num)):
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
    pref = np.full_like(unpref, LOG)
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
  return compact(dataclasses.replace(
      rec, pairs=pairs, distances=np.asarray(distances, np.float32)))


@functools.lru_cache(maxsize=8)
def _sequence_tokens_jit(config: motion_lm.ModelConfig):
  return jax.jit(lambda s, q, w: sequence_tokens(s, q, w, config))


def summarize(records: Iterable[PreferenceRecord]) -> dict[str, Any]:
  """Distance distributions of a preference dataset.

  Returns:
    'num_scenarios', 'num_pairs', 'num_log_pairs'; 'ot_distance' (all
    rollouts), 'preferred_distance', 'unpreferred_distance' and 'gap'
    (unpreferred - preferred ranking distance per pair; > 0 for rankings),
    each as mean/std/percentiles; 'ot_ade_spearman' (mean over scenarios of
    the rank correlation of OT and ADE across rollouts).
  """
  return _summary(_distance_columns(records))


def _plot(cols: dict[str, list], path: pathlib.Path) -> pathlib.Path:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 3.5))
  bins = np.histogram_bin_edges(_cat(cols['ot']), bins=40)
  for key, label in (('ot', 'all rollouts'), ('ot_pref', 'preferred'),
                     ('ot_unpref', 'unpreferred')):
    ax.hist(_cat(cols[key]), bins=bins, alpha=0.5, label=label)
  ax.set_xlabel('OT occupancy distance to the log (scene mean)')
  ax.set_ylabel('rollouts')
  ax.legend()
  fig.tight_layout()
  fileio.save_figure(fig, path, dpi=110)
  plt.close(fig)
  return path


def plot_distances(directory: os.PathLike) -> pathlib.Path:
  """DIR/distances.png: OT distances of all, preferred, unpreferred rollouts."""
  return _plot(_distance_columns(read_records(directory)),
               pathlib.Path(directory) / 'distances.png')
