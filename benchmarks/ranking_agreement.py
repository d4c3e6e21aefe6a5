"""Which Sinkhorn setting ranks rollouts as exact OT does, and how fast.

The ranking only needs the *order* of a scenario's rollouts (which ones are
preferred, which unpreferred), not accurate costs. So settings are judged by
what the method consumes: on real model rollouts, each setting's scene
distances against exact OT on the same problems:

* **top-P / bottom-P agreement**: the share of the P preferred (closest)
  and P unpreferred (farthest) rollouts that exact OT picks too (P = 16 of
  64 by default, the paper's);
* **Spearman** of the R scene distances with the exact ones;
* the seconds of ``ranking.agent_distances`` per scenario (after
  compilation, one scenario per call, ``--agent_chunk`` agents per solver
  call).

Exact OT: per (rollout, agent) problem, uniform measures over the same
number of steps are an assignment problem
(``scipy.optimize.linear_sum_assignment``); problems whose two sides count
different numbers of steps are solved as a linear program (HiGHS). Scene
distances aggregate exactly as ``rank_rollouts`` does (mean over counted
agents).

Rollouts: a pre-trained checkpoint samples ``--rollouts`` closed-loop
rollouts of ``--objects`` rows on shared real WOMD scenarios (cached in
``OUT/rollouts-*.npz``, so a rerun only re-solves). Run from the repository
root::

  python benchmarks/ranking_agreement.py \
      --checkpoint runs/demo/pretrain/checkpoints \
      [--scenarios 8] [--rollouts 64] [--objects 128] \
      [--out runs/ranking_agreement] [--configs all] [--json out.json]
"""

import argparse
import dataclasses
import functools
import json
import pathlib
import platform
import time

import _shared  # this folder
import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize
from scipy import stats
import tqdm

from prefalign import datatypes
from prefalign import rollout
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.preference import occupancy
from prefalign.preference import ot
from prefalign.preference import ranking
from prefalign.train import checkpoint
from prefalign.train import steps

# (name, SinkhornConfig overrides), cheapest last within each epsilon.
CONFIGS = {
    'old-default': dict(epsilon=0.01, num_iterations=600, anneal=0.95),
    'eps0.01-300': dict(epsilon=0.01, num_iterations=300, anneal=0.95),
    'eps0.02-200': dict(epsilon=0.02, num_iterations=200, anneal=0.9),
    'eps0.05-100': dict(epsilon=0.05, num_iterations=100, anneal=0.85),
    'eps0.05-50': dict(epsilon=0.05, num_iterations=50, anneal=0.8),
    'eps0.1-50': dict(epsilon=0.1, num_iterations=50, anneal=0.8),
    'eps0.1-30': dict(epsilon=0.1, num_iterations=30, anneal=0.7),
    'eps0.2-30': dict(epsilon=0.2, num_iterations=30, anneal=0.7),
    'eps0.2-20': dict(epsilon=0.2, num_iterations=20, anneal=0.6),
    'eps0.5-10': dict(epsilon=0.5, num_iterations=10, anneal=0.5),
    'plain0.05-100': dict(epsilon=0.05, num_iterations=100, anneal=0.0,
                          relax=1.0, threshold=0.0),
    'default': {},
}


def exact_cost(c: np.ndarray, nx: int, ny: int) -> float:
  """Exact OT cost between uniform measures on the rows/columns of ``c``."""
  if nx == ny:
    r, k = optimize.linear_sum_assignment(c)
    return float(c[r, k].mean())
  # Unequal counts: the transportation LP (rows sum to 1/nx, columns 1/ny).
  a_eq = np.zeros((nx + ny, nx * ny))
  for i in range(nx):
    a_eq[i, i * ny:(i + 1) * ny] = 1
  for j in range(ny):
    a_eq[nx + j, j::ny] = 1
  b_eq = np.concatenate([np.full(nx, 1 / nx), np.full(ny, 1 / ny)])
  res = optimize.linprog(c.reshape(-1), A_eq=a_eq, b_eq=b_eq, bounds=(0, None),
                         method='highs')
  return float(res.fun)


def exact_agent_distances(phi, weights) -> np.ndarray:
  """(R, E) exact per-agent OT costs (0 where not counted)."""
  feats, valid = np.asarray(phi['features']), np.asarray(phi['valid'])
  counted = np.asarray(phi['agent_mask']) & valid[0].any(-1)
  out = np.zeros(valid[1:].shape[:2], np.float64)
  for e in np.flatnonzero(counted):
    y = feats[0, e][valid[0, e]]
    for r in range(out.shape[0]):
      x = feats[r + 1, e][valid[r + 1, e]]
      if not len(x):
        continue
      c = np.sum(weights * np.abs(x[:, None, :] - y[None, :, :]), -1)
      out[r, e] = exact_cost(c, len(x), len(y))
  return out


def scene(agent_d: np.ndarray, counted: np.ndarray) -> np.ndarray:
  return np.asarray(ranking.scene_distances(
      jnp.asarray(agent_d, jnp.float32), jnp.asarray(counted)))


def agreement(d: np.ndarray, exact: np.ndarray, p: int) -> dict:
  order, ref = np.argsort(d, kind='stable'), np.argsort(exact, kind='stable')
  return {
      'top': len(set(order[:p]) & set(ref[:p])) / p,
      'bottom': len(set(order[-p:]) & set(ref[-p:])) / p,
      'spearman': float(stats.spearmanr(d, exact).statistic),
  }


def sampled_rollouts(args, out: pathlib.Path) -> list:
  """[(state, metric trajectory)] for the first ``--scenarios`` scenarios."""
  reader = womd.ReaderConfig(max_num_objects=args.objects)
  files = sorted(str(p) for p in (_shared.WOMD / 'real').glob(
      'real.tfrecord-*'))
  if not files:
    raise SystemExit(f'no shared real WOMD files under {_shared.WOMD}')
  mc = motion_lm.ModelConfig()
  sample = jax.jit(lambda p, s, k: rollout.sample_rollouts(
      p, s, k, config=mc, num_rollouts=args.rollouts))
  params, pairs = None, []
  examples = womd.read_examples(files, reader)
  for i, ex in zip(range(args.scenarios), examples):
    path = out / f'rollouts-{ex.scenario_id}-{args.rollouts}.npz'
    if path.exists():
      with np.load(path) as z:
        traj = datatypes.Trajectory(**{k: z[k] for k in z.files})
    else:
      if params is None:
        batch = jax.tree.map(lambda a: np.asarray(a)[None], ex.state)
        like = jax.eval_shape(lambda b: motion_lm.init(
            jax.random.key(0), mc, *steps.model_inputs(b, mc)), batch)
        params = checkpoint.load_params(args.checkpoint, like)
      r = sample(params, jax.tree.map(lambda a: a[None], ex.state),
                 jax.random.key(i))
      traj = jax.tree.map(lambda a: np.asarray(a[0]),
                          rollout.to_metric_trajectory(r))
      np.savez(path, **{f.name: getattr(traj, f.name)
                        for f in dataclasses.fields(traj)})
    pairs.append((ex.state, traj))
  return pairs


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', required=True)
  parser.add_argument('--scenarios', type=int, default=8)
  parser.add_argument('--rollouts', type=int, default=64)
  parser.add_argument('--objects', type=int, default=128)
  parser.add_argument('--pairs', type=int, default=16)
  parser.add_argument('--configs', default='all')
  parser.add_argument('--repeats', type=int, default=1)
  parser.add_argument('--agent_chunk', type=int,
                      default=ranking.RankingConfig().agent_chunk)
  parser.add_argument('--out', default='runs/ranking_agreement')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  names = list(CONFIGS) if args.configs == 'all' else args.configs.split(',')
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  pairs = sampled_rollouts(args, out)
  weights = occupancy.feature_weights()
  features = jax.jit(occupancy.occupancy_features)
  phis, exact = [], []
  for state, traj in tqdm.tqdm(pairs, desc='exact OT', unit='scn'):
    phi = jax.tree.map(np.asarray, features(state, traj))
    counted = phi['agent_mask'] & phi['valid'][0].any(-1)
    phis.append(phi)
    exact.append(scene(exact_agent_distances(phi, weights), counted))
  rows = {}
  for name in names:
    config = ot.SinkhornConfig(**CONFIGS[name])
    fn = jax.jit(functools.partial(ranking.agent_distances,
                                   weights=jnp.asarray(weights),
                                   sinkhorn=config,
                                   agent_chunk=args.agent_chunk))
    jax.block_until_ready(fn(phis[0]))
    per, times, iters = [], [], []
    for phi, ex in zip(phis, exact):
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = jax.block_until_ready(fn(phi))
        times.append(time.perf_counter() - t0)
      counted = phi['agent_mask'] & phi['valid'][0].any(-1)
      d = scene(np.where(counted & np.asarray(res.ok), np.asarray(res.cost),
                         0.0), counted & np.asarray(res.ok))
      per.append(agreement(d, ex, args.pairs))
      iters.append(int(np.max(res.iterations)))
    rows[name] = {
        'config': dataclasses.asdict(config),
        'seconds': float(np.median(times)),
        'top_mean': float(np.mean([p['top'] for p in per])),
        'top_min': float(np.min([p['top'] for p in per])),
        'bottom_mean': float(np.mean([p['bottom'] for p in per])),
        'bottom_min': float(np.min([p['bottom'] for p in per])),
        'spearman_mean': float(np.mean([p['spearman'] for p in per])),
        'spearman_min': float(np.min([p['spearman'] for p in per])),
        'iterations_max': int(np.max(iters)),
    }
    print(name, json.dumps(rows[name]), flush=True)
  result = {
      'date': time.strftime('%Y-%m-%d'),
      'machine': f'{jax.devices()[0].device_kind} ({jax.default_backend()}),'
                 f' jax {jax.__version__}, {platform.machine()}',
      'args': vars(args), 'rows': rows,
      'counted_agents': [int(np.sum(p['agent_mask'] &
                                    p['valid'][0].any(-1))) for p in phis]}
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  print(f'| setting | epsilon | anneal | cap | ran (max) | s / scenario | '
        f'top-{args.pairs} | bottom-{args.pairs} | Spearman (mean / min) |')
  print('|---|---|---|---|---|---|---|---|---|')
  for name, r in rows.items():
    c = r['config']
    print(f'| {name} | {c["epsilon"]:g} | {c["anneal"]:g} | '
          f'{c["num_iterations"]} | {r["iterations_max"]} | '
          f'{r["seconds"]:.2f} | {100 * r["top_mean"]:.1f} % '
          f'(min {100 * r["top_min"]:.0f} %) | {100 * r["bottom_mean"]:.1f} % '
          f'(min {100 * r["bottom_min"]:.0f} %) | {r["spearman_mean"]:.4f} / '
          f'{r["spearman_min"]:.4f} |')


if __name__ == '__main__':
  main()
