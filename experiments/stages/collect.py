"""The ``collect`` stage: the reference model's rollouts ranked by the OT
distance of their occupancy measures to the log, written as preference
shards."""

from __future__ import annotations

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
  if config.collect.glob:
    return womd.expand_paths(config.collect.glob.split(','))
  return common.data_files(config, workdir)


def run(config, workdir: pathlib.Path) -> str:
  """Preference data: rank the reference model's rollouts, write shards."""
  from prefalign.preference import collection
  c = config.collect
  out = workdir / c.output
  if (out / 'summary.json').exists():
    return f'{out / "summary.json"} exists (skipped)'
  reader = common.reader_config(config, c.max_num_objects)
  files = collect_files(config, workdir)
  first = next(womd.read_examples(files, reader))
  mc, params, ckpt = common.load_model(config, workdir, first.state,
                                       c.checkpoint)
  summary = collection.collect(
      params, mc, womd.read_examples(files, reader), out,
      ranking_config=ranking_config(config), num_rollouts=c.num_rollouts,
      sampling=common.sampling_config(c, 'config.collect'),
      scenarios_per_shard=c.scenarios_per_shard, seed=config.seed,
      max_scenarios=c.max_scenarios,
      keep_all_rollouts=c.keep_all_rollouts,
      meta={'checkpoint': os.path.abspath(ckpt), 'files': files})
  gap = summary['gap']
  return (f'{summary["num_scenarios"]} scenarios, {summary["num_pairs"]} '
          f'pairs; OT distance median '
          f'{summary["ot_distance"].get("median", float("nan")):.3f}, '
          f'preferred-unpreferred gap median '
          f'{gap.get("median", float("nan")):.3f}; OT/ADE rank correlation '
          f'{summary["ot_ade_spearman"]:.2f}; {out}')
