"""Offline collection of preference data from the reference model.

``collect`` samples R rollouts of every scenario with the frozen reference
model, ranks them (``ranking.rank_rollouts``) and writes one record per
scenario (``records.PreferenceRecord``) into the shards of a directory
(``records`` describes the layout), then the distance distributions of the
whole directory (``summarize``) to summary.json and distances.png.

A shard is written to a temporary name and renamed when complete, so an
interrupted collection resumes at the first missing shard and produces the
same records (scenario i samples with ``fold_in(key(seed), i)``).

A record stores token ids; ``sequence_tokens`` rebuilds the model's
teacher-forcing inputs from them (the logged demonstration, index -1 in
pairs and the adversarial baseline's preferred side, re-tokenized from the
log).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
import dataclasses
import functools
import itertools
import json
import operator
import os
import pathlib
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
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
from prefalign.preference import records as records_lib

__all__ = ['collect', 'sequence_tokens', 'summarize']


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
      np.asarray(sequence_rollout) == records_lib.LOG):
    return gen  # no log sequence: skip the (costly) closed-loop tokenizer
  log = tokenizer.tokenize(state.log_trajectory,
                           state.object_metadata.object_types,
                           config.tokenizer)
  is_log = jnp.asarray(sequence_rollout) == records_lib.LOG

  def pick(g, logged):
    mask = is_log.reshape(is_log.shape + (1,) * (g.ndim - 1))
    return jnp.where(mask, logged[None], g)

  return jax.tree.map(pick, gen, log)


def _unique_sequences(r: ranking_lib.Ranking) -> tuple[np.ndarray, np.ndarray]:
  """(int32 (U,) rollout index of each stored sequence, int32 (P, 2) pairs
  indexing them) of a ranking's (P,) preferred and unpreferred rollouts."""
  pref = np.asarray(r.preferred)
  unpref = np.asarray(r.unpreferred)
  used, inverse = np.unique(np.concatenate([pref, unpref]),
                            return_inverse=True)
  pairs = inverse.reshape(2, -1).T.astype(np.int32)
  return used.astype(np.int32), pairs


def _log_tokens(state: datatypes.SimulatorState,
                config: tokenizer.TokenizerConfig) -> jax.Array:
  """int (N, K) closed-loop token ids of an unbatched state's log."""
  return tokenizer.tokenize(state.log_trajectory,
                            state.object_metadata.object_types, config).tokens


def _sample_and_rank(params, states: datatypes.SimulatorState,
                     indices: jax.Array, root: jax.Array, *,
                     model_config: motion_lm.ModelConfig,
                     ranking_config: ranking_lib.RankingConfig,
                     num_rollouts: int, sampling: rollout.SamplingConfig):
  """Samples and ranks scenarios one after another (``lax.map``).

  Scenario ``i`` (``indices``) samples with ``fold_in(fold_in(root, i), 0)``
  and ranks with ``fold_in(fold_in(root, i), 1)``.

  Args:
    states: SimulatorState (D, ...).
    indices: int32 (D,) the scenarios' indices in the collection.

  Returns:
    ``(tokens int (D, R, N, K), Ranking with a leading (D,))``.
  """
  def one(args):
    state, index = args
    key = jax.random.fold_in(root, index)
    out = rollout.sample_rollouts(
        params, jax.tree.map(lambda a: a[None], state),
        jax.random.fold_in(key, 0), config=model_config,
        num_rollouts=num_rollouts, sampling=sampling)
    traj = jax.tree.map(lambda a: a[0], rollout.to_metric_trajectory(out))
    r = ranking_lib.rank_rollouts(state, traj, jax.random.fold_in(key, 1),
                                  ranking_config)
    return out.tokens[0], r

  return jax.lax.map(one, (states, indices))


@dataclasses.dataclass(frozen=True)
class _Sampler:
  """What every scenario of one collection is sampled and ranked with.

  Attributes:
    params: the reference model's parameters, on every device of the mesh.
    run: ``(params, states (D, ...), indices (D,)) -> (tokens, rankings)``:
      ``_sample_and_rank`` over the mesh, one scenario per device (D the
      mesh's size).
    tokenize: jitted ``_log_tokens``.
    mesh: the devices (``'data'`` axis).
    num_rollouts: R.
    keep_all_rollouts: store every rollout and the log, not only the paired.
  """
  params: Any
  run: Callable
  tokenize: Callable
  mesh: Mesh
  num_rollouts: int
  keep_all_rollouts: bool


def _sampler(params, model_config: motion_lm.ModelConfig,
             ranking_config: ranking_lib.RankingConfig, *, num_rollouts: int,
             sampling: rollout.SamplingConfig, seed: int,
             keep_all_rollouts: bool, mesh: Mesh) -> _Sampler:
  """The jitted programs of one collection (see ``collect``'s arguments)."""
  root = jax.random.key(seed)
  body = functools.partial(
      _sample_and_rank, root=root, model_config=model_config,
      ranking_config=ranking_config, num_rollouts=num_rollouts,
      sampling=sampling)
  # Each device samples and ranks its own scenarios: the ranking's skips
  # (agent chunks without agents) stay branches and its searches run as
  # many slices as its own scene needs, which they would not under vmap.
  run = jax.jit(jax.shard_map(
      body, mesh=mesh, in_specs=(P(), P('data'), P('data')),
      out_specs=P('data'), check_vma=False))
  return _Sampler(
      params=jax.device_put(params, NamedSharding(mesh, P())), run=run,
      tokenize=jax.jit(functools.partial(_log_tokens,
                                         config=model_config.tokenizer)),
      mesh=mesh, num_rollouts=num_rollouts,
      keep_all_rollouts=keep_all_rollouts)


def _records(sampler: _Sampler, group: list[womd.ScenarioExample],
             start: int) -> list[records_lib.PreferenceRecord | None]:
  """Samples and ranks scenarios ``start`` .. of one call (at most one per
  device; the call is padded to the mesh with copies of the last).

  Returns:
    Each scenario's record: the token ids (U, N, K) of the paired rollouts
    (of all R and the log with ``keep_all_rollouts``), the pairs and every
    distance; None when no agent counts in the scene distance.
  """
  size = sampler.mesh.devices.size
  padded = group + [group[-1]] * (size - len(group))
  states = datatypes.stack([ex.state for ex in padded])
  indices = np.arange(start, start + size, dtype=np.int32)
  sharding = NamedSharding(sampler.mesh, P('data'))
  tokens, ranked = jax.device_get(sampler.run(
      sampler.params, jax.device_put(states, sharding),
      jax.device_put(indices, sharding)))
  return [_record(sampler, ex, tokens[j],
                  jax.tree.map(operator.itemgetter(j), ranked))
          for j, ex in enumerate(group)]


def _record(sampler: _Sampler, ex: womd.ScenarioExample, tokens: np.ndarray,
            r: ranking_lib.Ranking) -> records_lib.PreferenceRecord | None:
  """One scenario's record from its (R, N, K) tokens and its ranking."""
  if not np.any(r.agent_counted):
    return None
  used, pairs = _unique_sequences(r)
  if sampler.keep_all_rollouts:  # every rollout and the log; pairs re-indexed
    every = np.arange(records_lib.LOG, sampler.num_rollouts, dtype=np.int32)
    pairs = np.searchsorted(every, used)[pairs]
    used = every
  ids = np.asarray(tokens)[np.maximum(used, 0)]
  if np.any(used == records_lib.LOG):
    ids[used == records_lib.LOG] = np.asarray(sampler.tokenize(ex.state))
  return records_lib.PreferenceRecord(
      scenario_id=ex.scenario_id, source=str(ex.path or ''),
      record=int(ex.record if ex.record is not None else -1),
      sequences=ids.astype(np.int16), sequence_rollout=used,
      pairs=pairs, distances=np.asarray(r.distances, np.float32),
      ot_distances=np.asarray(r.ot_distances, np.float32),
      ade=np.asarray(r.ade, np.float32),
      agent_distances=np.asarray(r.agent_distances, np.float32),
      agent_counted=np.asarray(r.agent_counted))


def _chunks(examples: Iterable[womd.ScenarioExample], size: int,
            max_scenarios: int) -> Iterator[list[womd.ScenarioExample]]:
  """The scenarios of each shard in turn: ``size`` each, the last fewer."""
  it = iter(examples)
  if max_scenarios:
    it = itertools.islice(it, max_scenarios)
  while chunk := list(itertools.islice(it, size)):
    yield chunk


def _write_shard(sampler: _Sampler, path: pathlib.Path,
                 chunk: list[womd.ScenarioExample], start: int,
                 bar: tqdm.tqdm,
                 on_record: (Callable[[records_lib.PreferenceRecord], None]
                             | None)) -> list[str]:
  """Writes the records of scenarios ``start`` .. of one shard.

  Returns:
    The ids of the scenarios without a record (no agent counted).
  """
  skipped = []
  size = sampler.mesh.devices.size
  with tfrecord.TFRecordWriter(path) as writer:
    for at in range(0, len(chunk), size):
      group = chunk[at:at + size]
      for ex, rec in zip(group, _records(sampler, group, start + at)):
        bar.update(1)
        if rec is None:
          skipped.append(ex.scenario_id)
          continue
        writer.write(records_lib.encode_record(rec))
        if on_record is not None:
          on_record(rec)
  return skipped


def _write_summary(directory: pathlib.Path,
                   skipped: list[str]) -> dict[str, Any]:
  """DIR/summary.json and DIR/distances.png of every record in DIR."""
  # One pass over the shards serves the summary and the plot.
  columns = _distance_columns(records_lib.read_records(directory))
  summary = _summary(columns)
  summary['skipped_no_agents'] = skipped
  fileio.atomic_write_text(directory / 'summary.json',
                           json.dumps(summary, indent=1))
  _plot(columns, directory / 'distances.png')
  return summary


def collect(params, model_config: motion_lm.ModelConfig,
            examples: Iterable[womd.ScenarioExample],
            directory: os.PathLike, *,
            ranking_config: ranking_lib.RankingConfig = (
                ranking_lib.RankingConfig()),
            num_rollouts: int = 64,
            sampling: rollout.SamplingConfig = rollout.SamplingConfig(),
            scenarios_per_shard: int = 64, seed: int = 0,
            max_scenarios: int = 0, keep_all_rollouts: bool = False,
            meta: dict | None = None,
            mesh: Mesh | None = None,
            progress: bool = True,
            on_record: (Callable[[records_lib.PreferenceRecord], None]
                        | None) = None) -> dict[str, Any]:
  """Samples, ranks and writes the preference data of some scenarios.

  Args:
    params: the reference model's parameters.
    model_config: its config.
    examples: scenarios (``womd.read_examples``); read in order.
    directory: output directory (created; resumed if it holds shards of the
      same setup).
    ranking_config: how rollouts are ranked and paired.
    num_rollouts: R, rollouts per scenario (the paper: 64).
    sampling: how the reference model's tokens are drawn.
    scenarios_per_shard: scenarios per shard file.
    seed: scenario i samples with ``fold_in(key(seed), i)``.
    max_scenarios: stop after this many (0: all).
    keep_all_rollouts: store the tokens of all R rollouts and the log's
      closed-loop tokenization, not only those the pairs use, so
      ``dataset.relabel`` can re-pair the same rollouts with another
      strategy (the baselines at one sampling and ranking cost;
      R x N x K int16 per scenario).
    meta: extra JSON-able facts stored in meta.json (e.g. the checkpoint).
    mesh: this process's devices (a ``'data'`` axis, as
      ``train.parallel.make_mesh`` gives; by default every local device):
      each call samples and ranks one scenario per device. The records do
      not depend on it. With several processes (``jax.distributed``) every
      process reads the same ``examples`` and writes shards ``k`` with ``k
      mod process_count == process_index``; all return the summary of
      every shard (``skipped_no_agents`` lists this process's scenarios).
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
  records_lib.check_meta(directory, records_lib.meta_json({
      'ranking': dataclasses.asdict(ranking_config),
      'model': dataclasses.asdict(model_config),
      'num_rollouts': num_rollouts, 'temperature': sampling.temperature,
      'top_k': sampling.top_k, 'top_p': sampling.top_p,
      # Only a non-default precision is recorded, so collections written
      # before the option existed still resume.
      **({'dtype': sampling.dtype} if sampling.dtype != 'float32' else {}),
      'scenarios_per_shard': scenarios_per_shard, 'seed': seed,
      'keep_all_rollouts': keep_all_rollouts, **(meta or {})}))
  if mesh is None:
    mesh = Mesh(np.asarray(jax.local_devices()), ('data',))
  sampler = _sampler(params, model_config, ranking_config,
                     num_rollouts=num_rollouts, sampling=sampling, seed=seed,
                     keep_all_rollouts=keep_all_rollouts, mesh=mesh)
  bar = tqdm.tqdm(total=max_scenarios or None, desc='collect',
                  unit='scenario', disable=not progress)
  index, skipped = 0, []
  process, processes = jax.process_index(), jax.process_count()
  for shard, chunk in enumerate(_chunks(examples, scenarios_per_shard,
                                        max_scenarios)):
    path = records_lib.shard_path(directory, shard)
    # Several hosts: shard k is written by process k mod process_count.
    if path.exists() or shard % processes != process:
      bar.update(len(chunk))  # an earlier run's (resumed after), or another
    else:                     # host's
      skipped += _write_shard(sampler, path, chunk, index, bar, on_record)
    index += len(chunk)
  bar.close()
  if index == 0:
    raise ValueError('collect: no scenarios to read')
  if processes > 1:
    _wait_for_every_process()
  return _write_summary(directory, skipped)


def _wait_for_every_process() -> None:
  """Returns when every process has written its shards."""
  multihost_utils.sync_global_devices('prefalign.collect')


def _stats(x: np.ndarray) -> dict[str, float]:
  """Mean, std and the 5/25/50/75/95th percentiles of x (any shape)."""
  if x.size == 0:
    return {}
  q = np.percentile(x, [5, 25, 50, 75, 95])
  return {'mean': float(np.mean(x)), 'std': float(np.std(x)),
          'p5': float(q[0]), 'p25': float(q[1]), 'median': float(q[2]),
          'p75': float(q[3]), 'p95': float(q[4])}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman rank correlation of (R,) a and (R,) b (nan if one is flat)."""
  ra = np.argsort(np.argsort(a)).astype(np.float64)
  rb = np.argsort(np.argsort(b)).astype(np.float64)
  if ra.std() == 0 or rb.std() == 0:
    return float('nan')
  return float(np.corrcoef(ra, rb)[0, 1])


def _distance_columns(records: Iterable[records_lib.PreferenceRecord]
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
    cols['num_log'].append(int(np.sum(p == records_lib.LOG)))
    cols['rho'].append(_spearman(rec.ot_distances, rec.ade))
  return cols


def _cat(xs: list) -> np.ndarray:
  """The 1-D arrays of xs end to end (empty if none)."""
  return np.concatenate(xs) if xs else np.zeros(0)


def _summary(cols: dict[str, list]) -> dict[str, Any]:
  """``summarize`` of the columns of ``_distance_columns``."""
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


def summarize(records: Iterable[records_lib.PreferenceRecord]
              ) -> dict[str, Any]:
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
  """Histograms of the OT distances of all, preferred, unpreferred rollouts
  (the columns of ``_distance_columns``) saved to ``path``."""
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
