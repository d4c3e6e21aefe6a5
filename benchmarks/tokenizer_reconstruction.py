"""How closely motion tokens reproduce logged driving (real WOMD and SUMO).

Every object of every scenario is tokenized closed loop
(``prefalign.model.tokenizer.tokenize``) over the 80 steps (8 s) after the
current step (index 10), and two reconstructions are compared with the log,
for objects valid at the current step, over their log-valid future steps:

* ``closed loop``: ``Tokens.reconstruction``, the states the tokens produce
  while the tokenizer tracks the log (an object that leaves the log and
  comes back restarts from its logged state). Steps whose token has no label
  are not tracked; ``coverage`` is the fraction of log-valid future steps
  that are.
* ``detokenize``: ``detokenize`` of all 16 tokens from the start pose alone
  (open loop, what a model's sampled tokens become in the simulator). It
  equals the closed loop for objects logged throughout (the ``detokenize,
  logged throughout`` rows: objects valid at all 80 future steps); through a
  gap in the log, or after an object's last logged step, it coasts on the
  zero token and does not restart, so it drifts there.

Per object: ADE is the mean position error over its steps (tracked ones for
the closed loop, every log-valid one for detokenize), FDE the error at its
last such step; the tables give the mean and the 95th percentile over
objects, and the worst object's ADE.

Then a sweep of vocabularies (grid sizes, ``bin_power`` 1 and 2, and the
weight of the token-end velocity in the fit) on the real scenarios: vehicle
ADE of the closed loop and the time to tokenize all scenarios (jitted,
after compilation). Last, the per-type table on SUMO scenarios
(``research_intersection``, generated here unless ``--sumo_dir`` holds
them).

Run from the repository root (about 2 minutes on a 2-core CPU)::

  python benchmarks/tokenizer_reconstruction.py [--data ../shared/data/womd]
      [--sumo_dir /tmp/sumo32] [--json out.json]
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _shared

from prefalign import datatypes
from prefalign.data import sumo
from prefalign.data import womd
from prefalign.model import tokenizer

TYPES = {1: 'vehicle', 2: 'pedestrian', 3: 'cyclist'}
NOW = datatypes.CURRENT_TIME_INDEX
READER = womd.ReaderConfig(max_roadgraph_points=30000)
# (num_lon_bins, num_lat_bins, bin_power, velocity_weight); the default
# config is (13, 13, 2, 0.5).
SWEEP = [(9, 5, 1.0, 0.5), (9, 5, 2.0, 0.5), (11, 7, 1.0, 0.5),
         (11, 7, 2.0, 0.5), (13, 13, 1.0, 0.5), (13, 13, 2.0, 0.5),
         (21, 13, 1.0, 0.5), (21, 13, 2.0, 0.5), (33, 17, 1.0, 0.5),
         (33, 17, 2.0, 0.5), (13, 13, 2.0, 0.0), (13, 13, 2.0, 1.0)]


def read(pattern: str):
  """(log Trajectory (B, N, 91), object types (B, N)) of every scenario."""
  examples = list(womd.read_examples(pattern, READER))
  if not examples:
    raise SystemExit(f'no scenarios match {pattern}')
  state = datatypes.stack([e.state for e in examples])
  return (state.log_trajectory, state.object_metadata.object_types,
          len(examples))


def timed_tokenize(log, types, config):
  """Tokens of every object, with (compile + first run, steady run) times."""
  fn = jax.jit(lambda t, o: tokenizer.tokenize(t, o, config))
  start = time.perf_counter()
  jax.block_until_ready(fn(log, types))
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  out = jax.block_until_ready(fn(log, types))
  return out, first_s, time.perf_counter() - start


def _per_object(err: np.ndarray, mask: np.ndarray):
  """ADE and FDE (..., N) of errors (..., N, S) over the masked steps."""
  ade = (err * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
  last = mask.shape[-1] - 1 - np.argmax(mask[..., ::-1], axis=-1)
  fde = np.take_along_axis(err, last[..., None], -1)[..., 0]
  return ade, fde


def _stats(ade, fde, select) -> dict:
  if not select.any():
    return {'objects': 0}
  a, f = ade[select], fde[select]
  return {'objects': int(select.sum()), 'ade_mean': float(a.mean()),
          'ade_p95': float(np.percentile(a, 95)), 'ade_max': float(a.max()),
          'fde_mean': float(f.mean()), 'fde_p95': float(np.percentile(f, 95))}


def evaluate(log, types, out, config) -> dict:
  """Per-type errors of the closed loop and of detokenize (see the top)."""
  steps = slice(NOW + 1, NOW + 1 + config.num_steps)
  lx, ly = np.asarray(log.x)[..., steps], np.asarray(log.y)[..., steps]
  valid = np.asarray(log.valid)
  future = valid[..., steps] & valid[..., NOW, None]  # (B, N, 80)
  tracked = future & np.asarray(out.recon_valid)
  rec = out.reconstruction
  closed_err = np.hypot(np.asarray(rec.x) - lx, np.asarray(rec.y) - ly)
  start = jax.tree.map(lambda a: a[..., 0], out.start_pose)
  replay = jax.jit(
      lambda s, k, o: tokenizer.detokenize(s, k, o, config))(
          start, out.tokens, types)
  open_err = np.hypot(np.asarray(replay.x) - lx, np.asarray(replay.y) - ly)
  types = np.asarray(types)
  open_loop = _per_object(open_err, future)
  result = {}
  for ty, name in TYPES.items():
    is_type = types == ty
    closed = _stats(*_per_object(closed_err, tracked),
                    is_type & tracked.any(-1))
    closed['coverage'] = float(tracked[is_type].sum() /
                               max(future[is_type].sum(), 1))
    result[name] = {
        'closed_loop': closed,
        'detokenize': _stats(*open_loop, is_type & future.any(-1)),
        'detokenize_logged_throughout': _stats(*open_loop,
                                               is_type & future.all(-1)),
    }
  return result


def _config(lon, lat, power, weight):
  return tokenizer.TokenizerConfig(num_lon_bins=lon, num_lat_bins=lat,
                                   bin_power=power, velocity_weight=weight)


def _type_table(title: str, per_type: dict) -> None:
  print(f'\n{title}\n')
  print('| mode | type | objects | ADE mean (m) | ADE p95 (m) | FDE mean (m) '
        '| FDE p95 (m) | worst ADE (m) | coverage |')
  print('|---|---|---|---|---|---|---|---|---|')
  labels = {'closed_loop': 'closed loop', 'detokenize': 'detokenize',
            'detokenize_logged_throughout': 'detokenize, logged throughout'}
  for mode, label in labels.items():
    for name in TYPES.values():
      r = per_type[name][mode]
      cov = f'{r["coverage"]:.3f}' if 'coverage' in r else '-'
      if not r['objects']:
        print(f'| {label} | {name} | 0 | - | - | - | - | - | {cov} |')
        continue
      print(f'| {label} | {name} | {r["objects"]} | '
            f'{r["ade_mean"]:.3f} | {r["ade_p95"]:.3f} | '
            f'{r["fde_mean"]:.3f} | {r["fde_p95"]:.3f} | '
            f'{r["ade_max"]:.2f} | {cov} |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', default=str(_shared.WOMD),
                      help='the shared real WOMD folder')
  parser.add_argument('--sumo_dir', default=None,
                      help='where to generate (or reuse) the SUMO scenarios; '
                      'a temporary folder by default')
  parser.add_argument('--sumo_scenarios', type=int, default=32)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()

  result = {
      'date': time.strftime('%Y-%m-%d'),
      'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, '
                 f'{jax.devices()[0].device_kind}',
      'jax': jax.__version__,
  }
  start = time.perf_counter()
  log, types, count = read(f'{args.data}/real/real.tfrecord-*')
  result['real'] = {'scenarios': count,
                    'read_seconds': time.perf_counter() - start}
  default = tokenizer.TokenizerConfig()
  out, first_s, run_s = timed_tokenize(log, types, default)
  result['real'].update(first_call_seconds=first_s, tokenize_seconds=run_s,
                        types=evaluate(log, types, out, default))
  print(json.dumps(result['real'], indent=1), flush=True)

  result['sweep'] = []
  for lon, lat, power, weight in SWEEP:
    config = _config(lon, lat, power, weight)
    out, first_s, run_s = timed_tokenize(log, types, config)
    per_type = evaluate(log, types, out, config)
    row = {'num_lon_bins': lon, 'num_lat_bins': lat, 'bin_power': power,
           'velocity_weight': weight, 'vocab_size': config.vocab_size,
           'first_call_seconds': first_s, 'tokenize_seconds': run_s,
           **{f'{name}_ade_{k}': per_type[name]['closed_loop'][f'ade_{k}']
              for name in TYPES.values() for k in ('mean', 'p95')}}
    result['sweep'].append(row)
    print(json.dumps(row), flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    sumo_dir = pathlib.Path(args.sumo_dir or tmp)
    cfg = sumo.SumoConfig(network='research_intersection',
                          num_scenarios=args.sumo_scenarios, seed=0)
    start = time.perf_counter()
    sumo.generate(cfg, sumo_dir)
    generate_s = time.perf_counter() - start
    slog, stypes, scount = read(str(sumo_dir / f'{cfg.network}.tfrecord-*'))
  out, first_s, run_s = timed_tokenize(slog, stypes, default)
  result['sumo'] = {'network': cfg.network, 'scenarios': scount,
                    'generate_seconds': generate_s,
                    'first_call_seconds': first_s, 'tokenize_seconds': run_s,
                    'types': evaluate(slog, stypes, out, default)}

  real, sim = result['real'], result['sumo']
  _type_table(f'Real WOMD, {real["scenarios"]} scenarios, default config '
              f'(tokenize {real["tokenize_seconds"]:.2f} s after a '
              f'{real["first_call_seconds"]:.1f} s first call):',
              real['types'])
  _type_table(f'SUMO {sim["network"]}, {sim["scenarios"]} scenarios, '
              f'default config (generated in {sim["generate_seconds"]:.0f} '
              f's):', sim['types'])
  print('\nVocabulary sweep on the real scenarios (closed loop):\n')
  print('| grid (lon x lat) | bin_power | velocity weight | vocab | '
        'vehicle ADE mean (m) | vehicle ADE p95 (m) | pedestrian ADE mean '
        '(m) | cyclist ADE mean (m) | tokenize (s) | first call (s) |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for r in result['sweep']:
    print(f'| {r["num_lon_bins"]} x {r["num_lat_bins"]} | '
          f'{r["bin_power"]:g} | {r["velocity_weight"]:g} | '
          f'{r["vocab_size"]} | {r["vehicle_ade_mean"]:.3f} | '
          f'{r["vehicle_ade_p95"]:.3f} | {r["pedestrian_ade_mean"]:.3f} | '
          f'{r["cyclist_ade_mean"]:.3f} | {r["tokenize_seconds"]:.2f} | '
          f'{r["first_call_seconds"]:.1f} |')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
