"""Speed and accuracy of the OT ranking at the paper's scale.

One scenario's ranking solves R x A entropic OT problems of T x T (64
rollouts x 128 agents x 80 x 80 by default, 5 features, weights [10, 5, 2,
1, 1]). Features are occupancy-like (smooth speed / clearance / road-edge /
effort curves plus rare binary collisions on both sides, the hard case for
Sinkhorn); they do not change the work. Each solver configuration is
compiled, warmed up and timed (median of ``--repeats``), and its accuracy
is measured on ``--exact`` of the problems against the exact assignment
(``scipy.optimize.linear_sum_assignment``; uniform marginals over equal
numbers of points make exact OT an assignment problem).

Run from the repository root (add ``--quick`` for a 16 x 32 smoke run)::

  python benchmarks/sinkhorn_ranking.py [--rollouts 64] [--agents 128]
      [--json out.json]
"""

import argparse
import functools
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import numpy as np
from scipy import optimize

from prefalign.preference import occupancy
from prefalign.preference import ot

PLAIN = dict(relax=1.0, threshold=0.0)
CONFIGS = [
    # The tracker's anchor: plain Sinkhorn, 100 iterations at epsilon 0.05.
    ('native', dict(epsilon=0.05, num_iterations=100, anneal=0.0, **PLAIN)),
    ('ott', dict(epsilon=0.05, num_iterations=100, anneal=0.0, **PLAIN)),
    # The previous default: annealed, 200 plain iterations at 0.05.
    ('native', dict(epsilon=0.05, num_iterations=200, anneal=0.9, **PLAIN)),
    # The default: epsilon 0.01, annealed x0.95, over-relaxed (1.8), <= 600.
    ('native', dict()),
    ('native', dict(num_iterations=300)),
    ('native', dict(epsilon=0.02, num_iterations=300)),
    ('native', dict(dtype='bfloat16')),
    ('native', dict(relax=1.0)),
    ('ott', dict(relax=1.0)),
]


def features(rollouts, agents, steps, seed=0):
  rng = np.random.default_rng(seed)
  t = np.linspace(0, 1, steps)[None, None, :, None]
  base = 0.5 + 0.5 * np.sin(t * rng.uniform(1, 6, (1, agents, 1, 5)) +
                            rng.uniform(0, 6, (1, agents, 1, 5)))
  x = base + 0.15 * np.sin(t * rng.uniform(1, 6, (rollouts, agents, 1, 5)))
  x[..., 0] = rng.random((rollouts, agents, steps)) < 0.1
  y = base[0].copy()
  y[..., 0] = rng.random((agents, steps)) < 0.1
  return x.astype(np.float32), y.astype(np.float32)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--rollouts', type=int, default=64)
  parser.add_argument('--agents', type=int, default=128)
  parser.add_argument('--steps', type=int, default=80)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--exact', type=int, default=64)
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--configs', default='',
                      help='comma-separated indices into CONFIGS (all)')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  if args.quick:
    args.rollouts, args.agents, args.repeats = 16, 32, 1
  x, y = features(args.rollouts, args.agents, args.steps)
  w = occupancy.feature_weights('all')
  xm = np.ones(x.shape[:-1], bool)
  ym = np.ones(y.shape[:-1], bool)
  flat_x = x.reshape(-1, args.steps, 5)
  idx = np.random.default_rng(1).choice(len(flat_x), args.exact,
                                        replace=False)
  y_of = lambda i: y[i % args.agents]
  exact = []
  for i in idx:
    c = np.asarray(ot.cost_matrix(flat_x[i], y_of(i), w))
    r, k = optimize.linear_sum_assignment(c)
    exact.append(c[r, k].mean())
  exact = np.asarray(exact)
  rows = []
  chosen = ([CONFIGS[int(i)] for i in args.configs.split(',')]
            if args.configs else CONFIGS)
  for backend, kw in chosen:
    config = ot.SinkhornConfig(backend=backend, **kw)
    fn = jax.jit(functools.partial(ot.transport_cost, config=config))
    t0 = time.perf_counter()
    out = fn(x, xm, y[None], ym[None], w)
    jax.block_until_ready(out.cost)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(x, xm, y[None], ym[None], w).cost)
      times.append(time.perf_counter() - t0)
    cost = np.asarray(out.cost).reshape(-1)[idx]
    rel = np.abs(cost - exact) / exact
    iters = np.asarray(out.iterations).reshape(-1)
    row = {'backend': backend, **dataclass_dict(config),
           'seconds': statistics.median(times), 'first_call_s': first,
           'rel_error_median': float(np.median(rel)),
           'rel_error_p95': float(np.percentile(rel, 95)),
           'rel_error_max': float(rel.max()),
           'marginal_error_median': float(np.median(out.marginal_error)),
           'iterations_median': float(np.median(iters)),
           'iterations_max': int(iters.max())}
    rows.append(row)
    print(json.dumps(row), flush=True)
  result = {'device': jax.devices()[0].device_kind,
            'backend': jax.default_backend(), 'jax': jax.__version__,
            'cpus': os.cpu_count(), 'machine': platform.machine(),
            'rollouts': args.rollouts, 'agents': args.agents,
            'steps': args.steps, 'problems': args.rollouts * args.agents,
            'results': rows}
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))


def dataclass_dict(config):
  return {k: getattr(config, k) for k in ('epsilon', 'num_iterations',
                                          'anneal', 'relax', 'dtype',
                                          'threshold')}


if __name__ == '__main__':
  main()
