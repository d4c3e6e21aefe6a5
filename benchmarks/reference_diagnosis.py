"""Where the reference model's collisions and off-road driving come from.

On real WOMD scenarios never trained on, a pre-trained checkpoint's
rollouts are scored with the WOSAC 2025 metric next to policies that each
remove one suspect:

* ``log``: the logged future (what the metric calls realistic);
* ``expert_tokens``: the log tokenized and detokenized from the current
  state (the tokenizer's own floor: no model, no sampling);
* ``model``: the model sampled as evaluation does (temperature 1);
* ``T=0.7``, ``T=0.5``, ``top_p=0.9``: sharper sampling;
* ``no_map``: the model with every road-graph point hidden from it (the
  metric still sees the map), which says how much the map conditioning
  keeps it on the road.

For every policy: realism, collision and off-road rates (WOSAC's
definitions, with 95 % bootstrap intervals over scenarios) and their
breakdown by object type and by whether the object moves at the current
step (> 0.5 m/s), plus when each (rollout, object)'s first collision and
first off-road step falls (0-1 s, 1-3 s, 3-8 s): early events point at the
start state and the first tokens, late ones at compounding error. The mean
ADE per group says, for objects standing still in the log, how far the
policy moves them. The
reader's dropped objects (beyond ``--objects`` rows) are counted.

Writes ``--json`` and prints tables. Run::

  python benchmarks/reference_diagnosis.py \\
      --checkpoint runs/demo/pretrain/checkpoints [--scenarios 20] \\
      [--policies model,T=0.7]
"""

import argparse
import json
import pathlib
import time

import _shared  # this folder
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from prefalign import datatypes
from prefalign import evaluation
from prefalign import rollout
from prefalign.metrics import wosac
from prefalign.model import motion_lm
from prefalign.model import tokenizer

NOW = datatypes.CURRENT_TIME_INDEX
TYPES = {'vehicle': 1, 'pedestrian': 2, 'cyclist': 3}
WINDOWS = {'0-1 s': (0, 10), '1-3 s': (10, 30), '3-8 s': (30, 80)}
SAMPLERS = {'model': {}, 'T=0.7': {'temperature': 0.7},
            'T=0.5': {'temperature': 0.5}, 'top_p=0.9': {'top_p': 0.9},
            'no_map': {}}


@jax.jit
def _score(state, traj):
  """WOSAC 2025 metrics and the per-(rollout, object) events."""
  f = wosac.scenario_features(state, traj)
  m = wosac.metrics_from_features(f, wosac.CHALLENGE_2025)
  first = lambda ev: jnp.argmax(ev & f.valid, -1) + 80 * ~jnp.any(
      ev & f.valid, -1)
  log = jax.tree.map(lambda a: a[f.eval_index, NOW], state.log_trajectory)
  return m, {'collision': first(f.collision)[1:],
             'offroad': first(f.offroad)[1:], 'ade': f.ade[1:],
             'type': f.object_type, 'mask': f.eval_mask,
             'moving': jnp.hypot(log.vel_x, log.vel_y) > 0.5}


@jax.jit
def _expert(state):
  """(1, N, 80) the log's tokens detokenized from the current state."""
  tok = motion_lm.ModelConfig().tokenizer
  types = state.object_metadata.object_types
  toks = tokenizer.tokenize(state.log_trajectory, types, tok)
  now = jax.tree.map(lambda a: a[:, NOW], state.log_trajectory)
  pose = tokenizer.detokenize(tokenizer.Pose.from_trajectory(now),
                              toks.tokens, types, tok)
  base = wosac.constant_velocity_rollouts(state, num_rollouts=1)
  return base.replace(x=pose.x[None], y=pose.y[None], yaw=pose.yaw[None],
                      vel_x=pose.vel_x[None], vel_y=pose.vel_y[None])


def _no_map(state):
  rg = state.roadgraph_points
  return state.replace(roadgraph_points=rg.replace(
      valid=np.zeros_like(rg.valid)))


def _trajectories(name, ex, params, mc, args, i):
  if name == 'log':
    return wosac.log_rollouts(ex.state, num_rollouts=1)
  if name == 'expert_tokens':
    return _expert(ex.state)
  seen = _no_map(ex.state) if name == 'no_map' else ex.state
  out = rollout.sample_rollouts_jit(
      params, jax.tree.map(lambda a: np.asarray(a)[None], seen),
      jax.random.fold_in(jax.random.key(0), i), config=mc,
      num_rollouts=args.rollouts,
      sampling=rollout.SamplingConfig(**SAMPLERS[name]))
  return jax.tree.map(lambda a: a[0], rollout.to_metric_trajectory(out))


def _breakdown(events: list[dict]) -> dict:
  """Pooled (rollout, object) rates by type, motion and first-event time."""
  cat = {k: np.concatenate([np.broadcast_to(e[k], e['collision'].shape)
                            .reshape(-1) for e in events])
         for k in ('collision', 'offroad', 'ade', 'type', 'mask', 'moving')}
  groups = {'all': cat['mask']}
  groups.update({t: cat['mask'] & (cat['type'] == v)
                 for t, v in TYPES.items()})
  groups['moving'] = cat['mask'] & cat['moving']
  groups['static'] = cat['mask'] & ~cat['moving']
  out = {}
  for g, sel in groups.items():
    row = {'n': int(sel.sum()),
           'ade': float(cat['ade'][sel].mean()) if sel.any() else float('nan')}
    for ev in ('collision', 'offroad'):
      step = cat[ev][sel]
      row[ev] = float(np.mean(step < 80)) if step.size else float('nan')
      for w, (lo, hi) in WINDOWS.items():
        row[f'{ev} {w}'] = (float(np.mean((step >= lo) & (step < hi)))
                            if step.size else float('nan'))
    out[g] = row
  return out


POLICIES = ('log', 'expert_tokens') + tuple(SAMPLERS)


def _policy_list(text: str) -> tuple[str, ...]:
  """``--policies``: checked when the arguments are parsed, before any
  work."""
  names = tuple(n.strip() for n in text.split(',') if n.strip())
  unknown = [n for n in names if n not in POLICIES]
  if unknown or not names:
    raise argparse.ArgumentTypeError(
        f'{unknown or "none"} not among {", ".join(POLICIES)}')
  return names


def _policies(parser):
  parser.add_argument(
      '--policies', type=_policy_list, default=POLICIES,
      help=f'comma-separated, of {", ".join(POLICIES)} (default: all)')


def main():
  args, _, _, examples, stats, mc, params = (
      _shared.checkpoint_on_real_scenarios(__doc__.split('\n')[0],
                                           _policies))
  result = {'date': time.strftime('%Y-%m-%d'), 'checkpoint': args.checkpoint,
            'files': args.files, 'scenarios': len(examples),
            'rollouts': args.rollouts, 'reader': stats.summary(),
            'policies': {}}
  for name in args.policies:
    metrics, events = [], []
    for i, ex in enumerate(tqdm.tqdm(examples, desc=name, unit='scenario')):
      m, ev = jax.device_get(_score(ex.state, _trajectories(
          name, ex, params, mc, args, i)))
      metrics.append({k: float(v) for k, v in m.items()})
      events.append(ev)
    agg = wosac.aggregate(metrics, wosac.CHALLENGE_2025)
    row = {k: float(agg[k]) for k in evaluation.SUMMARY}
    for k in ('metametric', 'simulated_collision_rate',
              'simulated_offroad_rate'):
      row[f'{k} ci'] = evaluation.bootstrap([m[k] for m in metrics])['ci']
    row['breakdown'] = _breakdown(events)
    result['policies'][name] = row
    print(name, json.dumps({k: v for k, v in row.items()
                            if k != 'breakdown'}), flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  _print(result)


def _print(result):
  pol = result['policies']
  print('| policy | realism | collision | off-road |')
  print('|---|---|---|---|')
  for name, r in pol.items():
    cell = lambda k, r=r: (f'{r[k]:.3f} [{r[k + " ci"][0]:.3f}, '
                           f'{r[k + " ci"][1]:.3f}]')
    print(f'| {name} | {cell("metametric")} | '
          f'{cell("simulated_collision_rate")} | '
          f'{cell("simulated_offroad_rate")} |')
  for ev in ('collision', 'offroad'):
    groups = list(next(iter(pol.values()))['breakdown'])
    print(f'\n{ev}: rate (first event 0-1 s / 1-3 s / 3-8 s) per group')
    print('| policy | ' + ' | '.join(groups) + ' |')
    print('|---|' + '---|' * len(groups))
    for name, r in pol.items():
      b = r['breakdown']
      print(f'| {name} | ' + ' | '.join(
          f'{b[g][ev]:.2f} ({b[g][f"{ev} 0-1 s"]:.2f}/'
          f'{b[g][f"{ev} 1-3 s"]:.2f}/{b[g][f"{ev} 3-8 s"]:.2f})'
          for g in groups) + ' |')
  print('\nmean ADE (m) per group')
  print('| policy | ' + ' | '.join(groups) + ' |')
  print('|---|' + '---|' * len(groups))
  for name, r in pol.items():
    print(f'| {name} | ' + ' | '.join(
        f'{r["breakdown"][g]["ade"]:.2f}' for g in groups) + ' |')
  print('\nobjects per group: ' + ', '.join(
      f'{g} {v["n"]}' for g, v in
      next(iter(pol.values()))['breakdown'].items()) +
        ' ((rollout, object) pairs of the first policy)')


if __name__ == '__main__':
  main()
