"""Does the OT preference distance track WOSAC realism? (DPA-OMF Fig. 3)

On shared real WOMD scenarios, a pre-trained checkpoint samples ``--rollouts``
(64) closed-loop rollouts per scenario; ``preference.rank_rollouts`` scores
each by its OT occupancy distance to the log and by its ADE. Two questions:

1. **Post-selection** (the paper's Fig. 3): sort the rollouts by a distance
   and cut them into ``--buckets`` equal groups (4 x 16 by default); the
   WOSAC 2025 realism of each group (the official metric over that group's
   rollouts) should fall from the closest group to the farthest if the
   distance tracks realism. Reported per distance (OT, ADE, a random order
   as the control): the realism of each bucket averaged over scenarios, the
   per-scenario Spearman correlation between bucket rank and realism, and
   the top-minus-bottom realism gap.
2. **Per rollout**: each rollout's own WOSAC score (the metric over that
   single rollout, i.e. how often its features fall in the log's bins) and
   its Spearman correlation with each distance across the rollouts of a
   scenario, over all rollouts and over the closer half only (where the
   paper says ADE saturates).

Correlations are reported with the sign flipped (closeness vs realism), so
positive means "closer is more realistic".

Writes ``OUT/signal.json`` and ``OUT/signal.png`` (``OUT/rows.jsonl`` keeps
finished scenarios: rerunning with the same ``--out`` resumes). Run::

  python benchmarks/preference_signal.py \
      --checkpoint runs/learning/pretrain_sumo/checkpoints \
      --out runs/signal [--scenarios 40] [--rollouts 64]

(the checkpoint: ``benchmarks/pretrain_learning.py``).
"""

import argparse
import glob
import json
import pathlib
import platform
import time

import _shared  # this folder
import jax
import numpy as np
from scipy import stats
import tqdm

from prefalign import evaluation
from prefalign import preference
from prefalign import rollout
from prefalign.data import womd
from prefalign.metrics import wosac
from prefalign.model import motion_lm
from prefalign.train import checkpoint
from prefalign.train import steps

DISTANCES = ('ot', 'ade', 'random')


def _spearman(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if np.ptp(a) == 0 or np.ptp(b) == 0:
    return float('nan')
  return float(stats.spearmanr(a, b).statistic)


def _summary(values) -> dict:
  """Mean, median, fraction > 0 and a 95 % bootstrap interval of the mean
  over scenarios (2,000 resamples, fixed seed)."""
  out = evaluation.bootstrap(values)
  if 'ci' in out:
    out['ci95'] = out.pop('ci')
  return out


def _parse_args():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--checkpoint', required=True)
  parser.add_argument('--glob', default=str(_shared.WOMD / 'real' /
                                            'real.tfrecord-*'))
  parser.add_argument('--out', default='runs/signal')
  parser.add_argument('--scenarios', type=int, default=40)
  parser.add_argument('--skip', type=int, default=0,
                      help='scenarios to skip first (e.g. a training part)')
  parser.add_argument('--rollouts', type=int, default=64)
  parser.add_argument('--buckets', type=int, default=4)
  parser.add_argument('--objects', type=int, default=128)
  parser.add_argument('--agents', default='sim', choices=('sim', 'evaluated'))
  parser.add_argument('--temperature', type=float, default=1.0)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  if args.rollouts % args.buckets:
    parser.error('--rollouts must be a multiple of --buckets')
  return args


def _jitted(args, mc: motion_lm.ModelConfig):
  """The sampler, the ranking, the metric of a set of rollouts and the
  metric of each rollout alone."""
  ranking_config = preference.RankingConfig(
      agents=args.agents, num_pairs=min(16, args.rollouts // 2))
  sample = jax.jit(lambda p, s, k: rollout.sample_rollouts(
      p, s, k, config=mc, num_rollouts=args.rollouts,
      sampling=rollout.SamplingConfig(temperature=args.temperature)))
  rank = jax.jit(lambda s, t, k: preference.rank_rollouts(
      s, t, k, ranking_config))
  metric = jax.jit(lambda s, t: wosac.scenario_metrics(s, t)['metametric'])
  single = jax.jit(lambda s, t: jax.lax.map(
      lambda r: wosac.scenario_metrics(
          s, jax.tree.map(lambda a: a[None], r))['metametric'], t))
  return sample, rank, metric, single


def _scenario_row(ex, i: int, params, fns, args, fresh: bool) -> dict:
  """One scenario: sample, rank three ways, score buckets and rollouts."""
  sample, rank, metric, single = fns
  state = ex.state
  per_bucket = args.rollouts // args.buckets
  key = jax.random.fold_in(jax.random.key(args.seed), i)
  k_sample, k_rank, k_random = jax.random.split(key, 3)
  t0 = time.perf_counter()
  r = sample(params, jax.tree.map(lambda a: a[None], state), k_sample)
  traj = jax.tree.map(lambda a: a[0], rollout.to_metric_trajectory(r))
  jax.block_until_ready(traj)
  t1 = time.perf_counter()
  ranking = rank(state, traj, k_rank)
  d = {'ot': np.asarray(ranking.ot_distances),
       'ade': np.asarray(ranking.ade),
       'random': np.asarray(jax.random.uniform(k_random, (args.rollouts,)))}
  t2 = time.perf_counter()
  buckets = {}
  for name in DISTANCES:
    order = np.argsort(d[name], kind='stable')
    buckets[name] = [float(metric(state, jax.tree.map(
        lambda a, idx=order[b * per_bucket:(b + 1) * per_bucket]: a[idx],
        traj))) for b in range(args.buckets)]
  own = np.asarray(single(state, traj))
  everyone = float(metric(state, traj))
  t3 = time.perf_counter()
  row = {'scenario_id': ex.scenario_id, 'realism_all': everyone,
         'num_evaluated': int(np.sum(np.asarray(
             wosac.evaluated_index(state, 16)[1]))),
         'buckets': buckets, 'single_rollout_realism': own.tolist(),
         'distances': {k: v.tolist() for k, v in d.items()},
         'seconds': {'sample': t1 - t0, 'rank': t2 - t1,
                     'metric': t3 - t2, 'compiled_here': fresh}}
  for name in DISTANCES:
    closeness = -d[name]
    row[f'{name}_bucket_spearman'] = _spearman(
        -np.arange(args.buckets), buckets[name])
    row[f'{name}_gap'] = buckets[name][0] - buckets[name][-1]
    row[f'{name}_rollout_spearman'] = _spearman(closeness, own)
    half = np.argsort(d[name], kind='stable')[:args.rollouts // 2]
    row[f'{name}_rollout_spearman_closer_half'] = _spearman(
        closeness[half], own[half])
  row['ot_ade_spearman'] = _spearman(d['ot'], d['ade'])
  return row


def _result(rows: list[dict], args) -> dict:
  """The summary over scenarios (signal.json without its rows)."""
  result = {
      'date': time.strftime('%Y-%m-%d'),
      'machine': f'{jax.devices()[0].device_kind} ({jax.default_backend()}),'
                 f' jax {jax.__version__}, {platform.machine()}',
      'args': vars(args), 'num_scenarios': len(rows),
      # Median over scenarios timed after compilation.
      'seconds_per_scenario': {
          k: float(np.median([r['seconds'][k] for r in rows
                              if 'seconds' in r and
                              not r['seconds']['compiled_here']] or [np.nan]))
          for k in ('sample', 'rank', 'metric')},
      'realism_all_mean': float(np.mean([r['realism_all'] for r in rows])),
      'ot_ade_spearman': _summary([r['ot_ade_spearman'] for r in rows]),
  }
  for name in DISTANCES:
    curve = np.asarray([r['buckets'][name] for r in rows])
    result[name] = {
        'bucket_realism_mean': curve.mean(0).tolist(),
        'bucket_realism_sem': (curve.std(0, ddof=1) / np.sqrt(len(rows))
                               ).tolist() if len(rows) > 1 else None,
        'gap': _summary([r[f'{name}_gap'] for r in rows]),
        'bucket_spearman': _summary([r[f'{name}_bucket_spearman']
                                     for r in rows]),
        'rollout_spearman': _summary([r[f'{name}_rollout_spearman']
                                      for r in rows]),
        'rollout_spearman_closer_half': _summary(
            [r[f'{name}_rollout_spearman_closer_half'] for r in rows]),
    }
  return result


def main():
  args = _parse_args()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  files = sorted(glob.glob(args.glob))
  if not files:
    raise SystemExit(f'no files match {args.glob}')
  examples = womd.read_examples(files,
                                womd.ReaderConfig(max_num_objects=args.objects))
  mc = motion_lm.ModelConfig()
  fns = _jitted(args, mc)
  params = None
  # One line per finished scenario: a rerun with the same --out resumes.
  done_path = out / 'rows.jsonl'
  rows = ([json.loads(line) for line in done_path.read_text().splitlines()]
          if done_path.exists() else [])
  done = {r['scenario_id'] for r in rows}
  bar = tqdm.tqdm(total=args.scenarios, initial=len(rows), desc='scenarios',
                  unit='scn')
  for i, ex in enumerate(examples):
    if i < args.skip or ex.scenario_id in done:
      continue
    if len(rows) >= args.scenarios:
      break
    fresh = params is None  # this run's first scenario pays compilation
    if fresh:
      batch = jax.tree.map(lambda a: np.asarray(a)[None], ex.state)
      like = jax.eval_shape(lambda b: motion_lm.init(
          jax.random.key(0), mc, *steps.model_inputs(b, mc)), batch)
      params = checkpoint.load_params(args.checkpoint, like)
    row = _scenario_row(ex, i, params, fns, args, fresh)
    rows.append(row)
    with done_path.open('a') as f:
      f.write(json.dumps(row) + '\n')
    bar.set_postfix(realism=f'{row["realism_all"]:.3f}',
                    ot=f'{row["ot_gap"]:+.3f}', ade=f'{row["ade_gap"]:+.3f}')
    bar.update()
  bar.close()
  if not rows:
    raise SystemExit('no scenarios read')
  result = _result(rows, args)
  result['scenarios'] = rows
  (out / 'signal.json').write_text(json.dumps(result, indent=1))
  _plot(result, out / 'signal.png', args)
  brief = {k: v for k, v in result.items() if k != 'scenarios'}
  print(json.dumps(brief, indent=1))


def _plot(result, path, args):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  x = np.arange(1, args.buckets + 1)
  for name, style in zip(DISTANCES, ('o-', 's-', 'x--')):
    mean = np.asarray(result[name]['bucket_realism_mean'])
    sem = result[name]['bucket_realism_sem']
    ax.errorbar(x, mean, yerr=sem, fmt=style, capsize=3,
                label={'ot': 'OT occupancy distance', 'ade': 'ADE',
                       'random': 'random order'}[name])
  ax.set_xticks(x)
  ax.set_xlabel(f'rollouts sorted by distance to the log, in groups of '
                f'{args.rollouts // args.buckets} (1 = closest)')
  ax.set_ylabel('WOSAC 2025 realism of the group')
  ax.set_title(f'{result["num_scenarios"]} real scenarios, '
               f'{args.rollouts} rollouts each')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


if __name__ == '__main__':
  main()
