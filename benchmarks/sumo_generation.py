"""SUMO scenario generation: speed, and how real the logs look to WOSAC.

Per network (``prefalign.data.sumo.NETWORKS``), in one run:

* generation speed: ``sumo.generate`` end to end (demand, simulation, map,
  cutting, writing), single process (SUMO is single-threaded), as scenarios
  per minute, with the simulation's share;
* every scenario through the WOMD reader and ``SimulatorState.validate()``;
* WOSAC (2025) on *log replay* (32 rollouts equal to the logged future):
  realism meta-metric, and the collision and off-road rates of the evaluated
  objects (SDC + tracks_to_predict) in the log. Off-road and collisions
  should be near zero for a sane map; realism should sit where real WOMD
  log replay does, which the last row measures on the shared real scenarios
  (when ``../shared/data/womd`` exists).

Run from the repository root::

  python benchmarks/sumo_generation.py [--num-scenarios 100] [--json out.json]
"""

import argparse
import json
import pathlib
import platform
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _shared

from prefalign.data import sumo
from prefalign.data import womd
from prefalign.metrics import wosac


def log_replay(path_glob, limit):
  """Mean log-replay realism, collision and off-road rates over scenarios.

  One padded shape for all the scenarios of a call (the largest map, 128
  objects, 9 evaluated slots), so the metric compiles once.
  """
  config = wosac.get_config('2025')
  scenarios = []
  for path, index, scenario in womd.read_scenarios(path_glob):
    if len(scenarios) == limit:
      break
    scenarios.append((path, index, scenario))
  points = max(womd.scenario_info(s)['num_roadgraph_points']
               for _, _, s in scenarios)
  shapes = womd.ReaderConfig(max_num_objects=128,
                             max_roadgraph_points=-(-points // 4096) * 4096,
                             max_traffic_lights=64)
  fn = jax.jit(lambda s, r: wosac.scenario_metrics(s, r, config,
                                                   max_evaluated=9))
  rows = []
  for path, index, scenario in scenarios:
    example = womd.state_from_scenario(scenario, shapes, path=path,
                                       record=index)
    example.state.validate()
    m = fn(example.state, wosac.log_rollouts(example.state))
    rows.append([float(m['metametric']),
                 float(m['simulated_collision_rate']),
                 float(m['simulated_offroad_rate'])])
  a = np.asarray(rows)
  return dict(num=len(rows), realism=float(a[:, 0].mean()),
              realism_min=float(a[:, 0].min()),
              realism_max=float(a[:, 0].max()),
              collision_rate=float(a[:, 1].mean()),
              offroad_rate=float(a[:, 2].mean()))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--networks', nargs='+', default=[
      n for n in sumo.NETWORKS if n != 'cross'])
  parser.add_argument('--num-scenarios', type=int, default=100)
  parser.add_argument('--metric-scenarios', type=int, default=40,
                      help='scenarios per network scored by WOSAC')
  parser.add_argument('--data', default=str(_shared.WOMD),
                      help='the shared real WOMD folder')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.networks:
      out = pathlib.Path(tmp) / name
      start = time.perf_counter()
      manifest = sumo.generate(
          sumo.SumoConfig(network=name, num_scenarios=args.num_scenarios),
          out)
      seconds = time.perf_counter() - start
      rep = log_replay(str(out / f'{name}.tfrecord-*'), args.metric_scenarios)
      rows.append(dict(network=name, scenarios=manifest['num_scenarios'],
                       seconds=seconds,
                       per_minute=manifest['num_scenarios'] * 60 / seconds,
                       simulation_seconds=manifest['simulation_seconds'],
                       counts=manifest['counts'], **rep))
      print(json.dumps(rows[-1]), flush=True)
  real = pathlib.Path(args.data) / 'real'
  if real.exists():
    rep = log_replay(str(real / '*.tfrecord-*'), 10_000)
    rows.append(dict(network='real WOMD (shared)', **rep))
    print(json.dumps(rows[-1]), flush=True)
  print('\n| network | scenarios/min (sim share) | objects veh/ped/cyc | '
        'log-replay realism mean [min, max] | collision rate | off-road '
        'rate |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    speed = '-'
    if 'per_minute' in r:
      ratio = r['simulation_seconds'] / r['seconds']
      speed = f'{r["per_minute"]:.0f} ({ratio:.0%})'
    c = r.get('counts')
    objs = (f'{c["vehicle"]}/{c["pedestrian"]}/{c["cyclist"]}' if c else '-')
    print(f'| {r["network"]} | {speed} | {objs} | {r["realism"]:.3f} '
          f'[{r["realism_min"]:.3f}, {r["realism_max"]:.3f}] (n={r["num"]}) | '
          f'{r["collision_rate"]:.3f} | {r["offroad_rate"]:.3f} |')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(dict(
        date=time.strftime('%Y-%m-%d'), machine=platform.machine(),
        sumo=sumo.sumo_version(), rows=rows), indent=1))


if __name__ == '__main__':
  main()
