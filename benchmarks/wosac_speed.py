"""Speed of the JAX WOSAC metric against the official one, in one run.

Same scenarios, same rollouts, same machine, one after the other:

* the official metric (``waymo-open-dataset`` 1.6.7, 2025 config) in its own
  virtual environment (built and cached by ``tests/parity/official_env.py``),
  timed inside its process (feature + metric seconds; TensorFlow's import is
  not counted);
* ``prefalign.metrics.scenario_metrics`` jitted on the CPU: the first call
  (compilation + run) and the median of 3 further calls.

Scenarios: the official test pair (Waymo's test submission for scenario
637f20cafde22ff8) and the small real scenarios of
``tests/parity/official_cache.REAL_PARITY_SCENARIOS`` with 32 ``perturbed``
rollouts each. Needs ``../shared/data/womd`` and network access for the
official venv the first time. Takes several minutes (the official metric
needs 30-90 s per scenario on 2 cores).

Run from the repository root::

  python benchmarks/wosac_speed.py [--json out.json]
"""

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _shared

from prefalign.cli import wosac as wosac_cli
from prefalign.data import submission
from prefalign.data import submission_files
from prefalign.data import womd
from tests.parity import official_cache
from tests.parity import official_env


def ours(scenario_path, rollout_path, challenge):
  """(compile_and_first_s, steady_s, metametric) per scenario id."""
  out = {}
  protos = {p.scenario_id: p
            for p in submission_files.read_rollouts(rollout_path)}
  for path, index, scenario in womd.read_scenarios(scenario_path):
    if scenario.scenario_id not in protos:
      continue
    example = womd.state_from_scenario(
        scenario, wosac_cli.reader_config_for(scenario), path=path,
        record=index)
    traj = submission.trajectory_from_scenario_rollouts(
        protos[scenario.scenario_id], example)
    slots = wosac_cli.evaluated_slots(wosac_cli.num_evaluated(scenario))
    fn = jax.jit(lambda s, r, slots=slots: wosac_cli.wosac.scenario_metrics(
        s, r, wosac_cli.wosac.get_config(challenge), max_evaluated=slots))
    state, traj = jax.device_put((example.state, traj))
    start = time.perf_counter()
    first = jax.block_until_ready(fn(state, traj))
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(3):
      start = time.perf_counter()
      jax.block_until_ready(fn(state, traj))
      runs.append(time.perf_counter() - start)
    out[scenario.scenario_id] = (compile_s, statistics.median(runs),
                                 float(first['metametric']))
  return out


def official(scenario_path, rollout_path):
  """{scenario_id: (seconds, metametric)} from a fresh official run."""
  tmp = official_cache.PARITY_CACHE / 'bench.jsonl'
  official_env.run_official(
      official_cache.OFFICIAL_METRICS, '--scenarios', str(scenario_path),
      '--submission', str(rollout_path), '--config', '2025', '--out',
      str(tmp), flavour='metrics-1.6.7')
  out = {}
  for line in tmp.read_text().splitlines():
    row = json.loads(line)
    out[row['scenario_id']] = (row['feature_seconds'] + row['metric_seconds'],
                               row['metrics']['metametric'])
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', default=str(_shared.WOMD),
                      help='the shared real WOMD folder')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  data = pathlib.Path(args.data)
  pairs = [(data / 'official' / 'motion_data_one_scenario.tfrecord',
            data / 'official' / 'test_submission.binproto')]
  real = official_cache.real_subset(data)
  pairs.append((real, official_cache.rollouts(real, 'perturbed', seed=0)))

  rows = []
  for scenarios, rollouts in pairs:
    theirs = official(scenarios, rollouts)
    mine = ours(scenarios, rollouts, '2025')
    for sid, (t_off, m_off) in theirs.items():
      compile_s, steady, m_ours = mine[sid]
      rows.append(dict(scenario_id=sid, official_s=t_off,
                       ours_s=steady, ours_first_call_s=compile_s,
                       ratio=t_off / steady,
                       metametric_official=m_off, metametric_ours=m_ours))
  result = {
      'date': time.strftime('%Y-%m-%d'),
      'machine': f'{platform.machine()}, {jax.devices()[0].device_kind}',
      'jax': jax.__version__,
      'rows': rows,
      'total_official_s': sum(r['official_s'] for r in rows),
      'total_ours_s': sum(r['ours_s'] for r in rows),
  }
  result['ratio_of_totals'] = (result['total_official_s'] /
                               result['total_ours_s'])
  print('| scenario | official (s) | ours (s) | ratio | ours first call '
        '(compile + run, s) | realism official / ours |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| `{r["scenario_id"]}` | {r["official_s"]:.1f} | '
          f'{r["ours_s"]:.3f} | {r["ratio"]:.0f}x | '
          f'{r["ours_first_call_s"]:.1f} | {r["metametric_official"]:.4f} / '
          f'{r["metametric_ours"]:.4f} |')
  print(f'| all | {result["total_official_s"]:.1f} | '
        f'{result["total_ours_s"]:.3f} | {result["ratio_of_totals"]:.0f}x | '
        '| |')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  np.testing.assert_allclose(
      [r['metametric_ours'] for r in rows],
      [r['metametric_official'] for r in rows], atol=1e-3)


if __name__ == '__main__':
  main()
