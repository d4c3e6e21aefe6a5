"""``prefalign-wosac``'s shape classes against per-scenario rounding.

The CLI pads each scenario to one of a few shape classes
(``prefalign.cli.wosac.SIZE_CLASSES``, 9 evaluated slots) so that a set of
scenarios compiles the metric once per class. Before, it rounded each size
up on its own (objects to 64, road-graph points to 8,192, lanes to 16,
evaluated slots to 2/4/6/9): less padding, many more shapes. This script
scores the same rollouts of the shared real scenarios both ways, in one run,
and reports per policy the number of compilations (distinct shapes), the
total wall time (compilations included), the steady time per scenario, and
the largest difference of any metric field between the two (padding must
not change a number).

Rollouts: constant velocity with a per-rollout speed factor (0.8 to 1.2),
so the rollouts differ, collide and leave the road; they depend only on
each object's own row, not on the padding.

Run from the repository root (about 10 minutes on 2 CPU cores)::

  python benchmarks/wosac_shapes.py [--challenge 2025] [--json out.json]
"""

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _shared

from prefalign.cli import wosac as wosac_cli
from prefalign.data import womd
from prefalign.metrics import wosac


def _round_up(n: int, step: int) -> int:
  return max(step, -(-n // step) * step)


def rounded_shapes(scenario) -> tuple[womd.ReaderConfig, int]:
  """The previous policy: each size rounded up on its own."""
  info = womd.scenario_info(scenario)
  lanes = {ls.lane for d in scenario.dynamic_map_states
           for ls in d.lane_states}
  n = wosac_cli.num_evaluated(scenario)
  slots = next((s for s in (2, 4, 6, 9) if n <= s), _round_up(n, 8) + 1)
  return womd.ReaderConfig(
      max_num_objects=_round_up(info['num_tracks'], 64),
      max_roadgraph_points=_round_up(info['num_roadgraph_points'], 8192),
      max_traffic_lights=_round_up(len(lanes), 16)), slots


def class_shapes(scenario) -> tuple[womd.ReaderConfig, int]:
  """The CLI's policy: shape classes."""
  return (wosac_cli.reader_config_for(scenario),
          wosac_cli.evaluated_slots(wosac_cli.num_evaluated(scenario)))


@jax.jit
def _rollouts(state):
  """(32, N, 80) constant-velocity rollouts, rollout r at speed factor
  0.8 + 0.4 r / 31 (parked objects stay parked)."""
  cv = wosac.constant_velocity_rollouts(state, 32)
  now = state.log_trajectory
  x0 = now.x[:, wosac.NOW][None, :, None]
  y0 = now.y[:, wosac.NOW][None, :, None]
  f = (0.8 + 0.4 * jnp.arange(32) / 31)[:, None, None]
  return cv.replace(x=x0 + f * (cv.x - x0), y=y0 + f * (cv.y - y0))


def score(paths, policy, config) -> dict:
  """{'rows': {scenario_id: metrics}, 'compilations', 'wall_s',
  'steady_s' (median per scenario, after compilation)}."""
  fns, rows, steady = {}, {}, []
  start = time.perf_counter()
  for path, index, scenario in womd.read_scenarios(paths):
    reader, slots = policy(scenario)
    ex = womd.state_from_scenario(scenario, reader, path=path, record=index)
    key = (reader, slots)
    fresh = key not in fns
    if fresh:
      fns[key] = jax.jit(lambda s, r, slots=slots: wosac.scenario_metrics(
          s, r, config, max_evaluated=slots))
    traj = _rollouts(ex.state)
    t0 = time.perf_counter()
    out = jax.device_get(fns[key](ex.state, traj))
    if not fresh:
      steady.append(time.perf_counter() - t0)
    rows[scenario.scenario_id] = {k: float(v) for k, v in out.items()}
  return {'rows': rows, 'compilations': len(fns),
          'wall_s': time.perf_counter() - start,
          'steady_s': statistics.median(steady) if steady else float('nan')}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', default=str(_shared.WOMD))
  parser.add_argument('--challenge', default='2025')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  paths = sorted(str(p) for p in
                 (pathlib.Path(args.data) / 'real').glob('real.tfrecord-*'))
  if not paths:
    sys.exit(f'no real WOMD files under {args.data}/real')
  config = wosac.get_config(args.challenge)
  results = {name: score(paths, policy, config) for name, policy in
             (('rounded', rounded_shapes), ('classes', class_shapes))}
  a, b = results['rounded']['rows'], results['classes']['rows']
  worst = max(abs(a[sid][k] - b[sid][k]) for sid in a for k in a[sid])
  out = {'date': time.strftime('%Y-%m-%d'),
         'machine': f'{platform.machine()}, {jax.devices()[0].device_kind}, '
                    f'{jax.device_count()} device(s)',
         'jax': jax.__version__, 'challenge': args.challenge,
         'scenarios': len(a), 'largest_difference': worst,
         **{name: {k: v for k, v in r.items() if k != 'rows'}
            for name, r in results.items()}}
  print(f'{len(a)} scenarios, WOSAC {args.challenge}')
  print('| shapes | compilations | wall (s) | steady per scenario (s) |')
  print('|---|---|---|---|')
  for name, r in results.items():
    print(f'| {name} | {r["compilations"]} | {r["wall_s"]:.1f} | '
          f'{r["steady_s"]:.3f} |')
  print(f'largest |rounded - classes| over every field: {worst:.2e}')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
  np.testing.assert_array_less(worst, 1e-5)


if __name__ == '__main__':
  main()
