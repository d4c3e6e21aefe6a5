"""The ``inspect`` stage: counts per scenario and a picture of the first."""

from __future__ import annotations

import json
import pathlib

import tqdm

from experiments.stages import common
from prefalign import fileio
from prefalign.data import womd


def run(config, workdir: pathlib.Path) -> str:
  """One JSON line of counts per scenario, and a picture of the first."""
  out = workdir / 'inspect'
  info_path = out / 'info.jsonl'
  if info_path.exists():
    return f'{info_path} exists (skipped)'
  out.mkdir(parents=True, exist_ok=True)
  from prefalign import viz
  stats = womd.ReadStats()
  lines, first = [], None
  for path, index, scenario in tqdm.tqdm(
      womd.read_scenarios(common.data_files(config, workdir),
                          skip_bad_records=config.data.skip_bad_records,
                          stats=stats), desc='inspect'):
    lines.append(json.dumps({'file': path, 'record': index,
                             **womd.scenario_info(scenario)}))
    if first is None:
      first = womd.state_from_scenario(
          scenario, womd.ReaderConfig(max_num_objects=None,
                                      max_roadgraph_points=None,
                                      max_traffic_lights=None))
  png = out / 'scenario.png'
  viz.plot_scenario(first.state, path=str(png), title=first.scenario_id)
  fileio.atomic_write_text(info_path, '\n'.join(lines) + '\n')
  return (f'{stats.num_read} scenarios ({stats.num_skipped} bad records '
          f'skipped); counts in {info_path}, picture in {png}')
