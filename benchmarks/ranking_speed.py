"""Where one scenario's ranking spends its time, at the paper's scale.

``ranking.rank_rollouts`` (the default ``RankingConfig``) on real model
rollouts: a pre-trained checkpoint samples ``--rollouts`` closed-loop
rollouts of ``--objects`` rows on shared real WOMD scenarios (cached in
``OUT``, shared with ``ranking_agreement.py``). After compilation, per
scenario (median over ``--repeats``):

* **rank**: the whole jitted ``rank_rollouts`` (features, OT, pairs);
* **features**: ``occupancy.occupancy_features`` alone;
* **road_edge**: ``metrics.features.distance_to_road_edge`` of the simulated
  agents over the log and every rollout (the features' largest part);
* **sinkhorn**: ``ranking.agent_distances`` on precomputed features.

Run from the repository root::

  python benchmarks/ranking_speed.py \\
      --checkpoint runs/demo/pretrain/checkpoints \\
      [--scenarios 4] [--rollouts 64] [--objects 128] [--repeats 3] \\
      [--out runs/ranking_agreement] [--json out.json]
"""

import argparse
import functools
import json
import pathlib
import platform
import time

import jax
import numpy as np
import ranking_agreement  # this folder

from prefalign.metrics import features as F
from prefalign.metrics import wosac
from prefalign.preference import occupancy
from prefalign.preference import ranking


def _road_edge(state, traj):
  """The road-edge distances the features compute, as they compute them."""
  index, mask = occupancy.agent_rows(state)
  full = wosac.full_trajectories(state, traj)
  future = jax.tree.map(lambda a: a[..., wosac.NOW + 1:], full)
  return F.distance_to_road_edge(future, index, state.roadgraph_points,
                                 eval_mask=mask)


def _timed(fn, calls, repeats):
  """(first call s, [median s per call]) over ``calls`` (arg tuples)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*calls[0]))
  first = time.perf_counter() - t0
  per = []
  for args in calls:
    ts = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      ts.append(time.perf_counter() - t0)
    per.append(float(np.median(ts)))
  return first, per


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', required=True)
  parser.add_argument('--scenarios', type=int, default=4)
  parser.add_argument('--rollouts', type=int, default=64)
  parser.add_argument('--objects', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--only', default='rank,features,road_edge,sinkhorn')
  parser.add_argument('--out', default='runs/ranking_agreement')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  pairs = ranking_agreement.sampled_rollouts(args, out)
  config = ranking.RankingConfig()
  feats = jax.jit(functools.partial(occupancy.occupancy_features,
                                    agent_chunk=config.agent_chunk))
  weights = occupancy.feature_weights(config.feature_set, config.weights)
  paths = {
      'rank': (ranking.rank_rollouts_jit,
               [(s, t, jax.random.key(i)) for i, (s, t) in
                enumerate(pairs)]),
      'features': (feats, pairs),
      'road_edge': (jax.jit(_road_edge), pairs),
      'sinkhorn': (jax.jit(functools.partial(
          ranking.agent_distances, sinkhorn=config.sinkhorn,
          agent_chunk=config.agent_chunk)),
                   [(feats(s, t), weights) for s, t in pairs]),
  }
  counted = [int(np.sum(np.asarray(wosac.sim_agents(s)))) for s, _ in pairs]
  result = {'date': time.strftime('%Y-%m-%d'),
            'machine': f'{jax.devices()[0].device_kind} '
                       f'({jax.default_backend()}), jax {jax.__version__}, '
                       f'{platform.machine()}',
            'args': vars(args), 'simulated_agents': counted, 'rows': {}}
  for name in args.only.split(','):
    fn, calls = paths[name]
    first, per = _timed(fn, calls, args.repeats)
    result['rows'][name] = {'first_s': first, 'per_scenario_s': per,
                            'median_s': float(np.median(per))}
    print(name, json.dumps(result['rows'][name]), flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  print(f'simulated agents per scenario: {counted}')
  print('| path | first call (s) | median s / scenario | per scenario (s) |')
  print('|---|---|---|---|')
  for name, r in result['rows'].items():
    print(f'| {name} | {r["first_s"]:.1f} | {r["median_s"]:.2f} | '
          + ', '.join(f'{t:.2f}' for t in r['per_scenario_s']) + ' |')


if __name__ == '__main__':
  main()
