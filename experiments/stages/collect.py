"""The ``collect`` stage: the reference model's rollouts ranked by the OT
distance of their occupancy measures to the log, written as preference
shards."""

from __future__ import annotations

from collections.abc import Iterator
import itertools
import os
import pathlib
from typing import TYPE_CHECKING

from experiments import sections
from experiments.stages import common
from prefalign.data import womd

if TYPE_CHECKING:
  from prefalign import preference


def ranking_config(config) -> preference.RankingConfig:
  """The RankingConfig of ``config.collect.ranking`` (errors name the
  key)."""
  from prefalign import preference
  rc = sections.build(preference.RankingConfig, config.collect.ranking,
                      'config.collect.ranking')
  try:
    rc.check(config.collect.num_rollouts)
  except ValueError as e:
    raise ValueError(f'config.collect.num_rollouts: {e}') from None
  return rc


def collect_files(config, workdir: pathlib.Path) -> list[str]:
  """``config.collect.glob``'s files, or the training files' patterns: one
  per source (see ``examples``)."""
  if config.collect.glob:
    return womd.expand_paths(config.collect.glob.split(','))
  return common.data_files(config, workdir)


def examples(files: list[str], reader: womd.ReaderConfig,
             per_source: int) -> Iterator[womd.ScenarioExample]:
  """The scenarios of ``files`` in order; with ``per_source`` only the first
  ``per_source`` of each source (each file, or each network's pattern of
  the embedded data): a collection that samples every network, not only
  the first."""
  for source in files:
    yield from itertools.islice(womd.read_examples([source], reader),
                                per_source or None)


def run(config, workdir: pathlib.Path) -> str:
  """Preference data: rank the reference model's rollouts, write shards."""
  from prefalign.preference import collection
  c = config.collect
  out = workdir / c.output
  if (out / 'summary.json').exists():
    return f'{out / "summary.json"} exists (skipped)'
  reader = common.reader_config(config, c.max_num_objects)
  files = collect_files(config, workdir)
  first = next(examples(files, reader, c.per_source))
  mc, params, ckpt = common.load_model(config, workdir, first.state,
                                       c.checkpoint)
  summary = collection.collect(
      params, mc, examples(files, reader, c.per_source), out,
      ranking_config=ranking_config(config), num_rollouts=c.num_rollouts,
      sampling=common.sampling_config(c, 'config.collect'),
      scenarios_per_shard=c.scenarios_per_shard, seed=config.seed,
      max_scenarios=c.max_scenarios,
      keep_all_rollouts=c.keep_all_rollouts,
      meta={'checkpoint': os.path.abspath(ckpt), 'files': files,
            **({'per_source': c.per_source} if c.per_source else {})})
  gap = summary['gap']
  return (f'{summary["num_scenarios"]} scenarios, {summary["num_pairs"]} '
          f'pairs; OT distance median '
          f'{summary["ot_distance"].get("median", float("nan")):.3f}, '
          f'preferred-unpreferred gap median '
          f'{gap.get("median", float("nan")):.3f}; OT/ADE rank correlation '
          f'{summary["ot_ade_spearman"]:.2f}; {out}')
