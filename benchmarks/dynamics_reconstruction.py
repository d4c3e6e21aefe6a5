"""How faithfully the dynamics reproduce real logged driving.

Reads every shared real WOMD scenario and reports, per object type:

* read time: parsing and converting all scenarios (host, numpy);
* one-step error: the action inferred from logged states t and t + 1,
  integrated from the logged state t (open loop, one step at a time);
* 80-step closed-loop error from the current step (index 10) to the end, for
  objects valid at step 10, over their log-valid future steps:
  - ``expert``: the action at each step is inferred from the *simulated*
    state and the next logged one (Waymax's expert actor), clipped to the
    given bounds;
  - ``replay``: the per-step log actions are integrated without feedback.
  Per object we take the mean error over its valid future steps (ADE) and the
  error at its last valid step (FDE); the table shows the mean and the 95th
  percentile over objects.

Run (about a minute on a 2-core CPU)::

  python benchmarks/dynamics_reconstruction.py [--data ../shared/data/womd]
      [--json out.json]
"""

import argparse
import json
import pathlib
import platform
import time

import _shared  # this folder
import jax
import jax.numpy as jnp
import numpy as np

from prefalign import datatypes
from prefalign.data import womd
from prefalign.sim import dynamics
from prefalign.sim import env
from prefalign.sim import replay

TYPES = {1: 'vehicle', 2: 'pedestrian', 3: 'cyclist'}
BOUNDS = (None, 15.0, 10.0)  # |a_lon|, |a_lat| bounds (m/s^2); None: none


def _summary(per_object: np.ndarray) -> dict:
  return {'mean': float(per_object.mean()),
          'p95': float(np.percentile(per_object, 95)),
          'max': float(per_object.max()), 'objects': int(per_object.size)}


def closed_loop(state, mode, bound):
  config = env.EnvConfig(dynamics=dynamics.DynamicsConfig(
      max_lon_accel=float('inf') if bound is None else bound,
      max_lat_accel=float('inf') if bound is None else bound))
  run = jax.jit(jax.vmap(lambda s: replay.rollout(s, config, mode)))
  out = run(state)
  sim, log = out.sim_trajectory, out.log_trajectory
  future = slice(datatypes.CURRENT_TIME_INDEX + 1, None)
  err = np.asarray(jnp.hypot(sim.x - log.x, sim.y - log.y))[..., future]
  mask = (np.asarray(log.valid)[..., future] &
          np.asarray(log.valid)[..., datatypes.CURRENT_TIME_INDEX, None])
  ade = (err * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
  last = mask.shape[-1] - 1 - np.argmax(mask[..., ::-1], axis=-1)
  fde = np.take_along_axis(err, last[..., None], -1)[..., 0]
  return ade, fde, mask.any(-1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', default=str(_shared.WOMD),
                      help='the shared real WOMD folder')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  files = [f'{args.data}/official/*.tfrecord',
           f'{args.data}/real/real.tfrecord-*']

  start = time.perf_counter()
  examples = list(womd.read_examples(files))
  read_s = time.perf_counter() - start
  state = datatypes.stack([e.state for e in examples])
  types = np.asarray(state.object_metadata.object_types)
  result = {
      'date': time.strftime('%Y-%m-%d'),
      'machine': f'{platform.machine()}, {jax.devices()[0].device_kind}, '
                 f'{jax.local_device_count()} device(s)',
      'jax': jax.__version__,
      'num_scenarios': len(examples),
      'read_seconds': read_s,
  }

  unbounded = dynamics.DynamicsConfig(max_lon_accel=float('inf'),
                                      max_lat_accel=float('inf'))
  for name, cfg in (('one_step_unbounded', unbounded),
                    ('one_step_bound_15', dynamics.DynamicsConfig(
                        max_lon_accel=15.0, max_lat_accel=15.0))):
    err, valid = jax.jit(lambda t, c=cfg: replay.one_step_errors(t, c))(
        state.log_trajectory)
    err, valid = np.asarray(err), np.asarray(valid)
    result[name] = {}
    for ty, tname in TYPES.items():
      m = valid & (types == ty)[..., None]
      e = err[m]
      result[name][tname] = {'steps': int(e.size), 'max_m': float(e.max()),
                             'steps_over_1cm': int((e > 0.01).sum())}

  for mode in ('expert', 'replay'):
    for bound in (BOUNDS if mode == 'expert' else (None,)):
      start = time.perf_counter()
      ade, fde, has = closed_loop(state, mode, bound)
      key = f'{mode}_bound_{bound}' if bound else f'{mode}_unbounded'
      result[key] = {'seconds': time.perf_counter() - start}
      for ty, tname in TYPES.items():
        m = has & (types == ty)
        result[key][tname] = {'ade': _summary(ade[m]),
                              'fde': _summary(fde[m])}

  print(json.dumps(result, indent=1))
  print()
  print('| mode | type | objects | ADE mean (m) | ADE p95 (m) | '
        'FDE mean (m) | FDE p95 (m) |')
  print('|---|---|---|---|---|---|---|')
  for key, value in result.items():
    if not key.startswith(('expert', 'replay')):
      continue
    for tname in TYPES.values():
      r = value[tname]
      print(f'| {key} | {tname} | {r["ade"]["objects"]} | '
            f'{r["ade"]["mean"]:.4f} | {r["ade"]["p95"]:.4f} | '
            f'{r["fde"]["mean"]:.4f} | {r["fde"]["p95"]:.4f} |')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
