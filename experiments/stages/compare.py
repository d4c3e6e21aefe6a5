"""The ``compare`` stage: DPA-OMF next to its baselines, a data-scaling sweep
and a feature ablation, all from one collection, in one table with
bootstrap confidence intervals."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import ml_collections

from experiments import sections
from experiments.stages import align as align_stage
from experiments.stages import collect as collect_stage
from experiments.stages import common
from prefalign import fileio
from prefalign.data import womd


def method_names(config) -> list[str]:
  """The methods run: ``config.compare.main``, then the baselines."""
  c = config.compare
  known = sorted(c.methods.keys())
  if not isinstance(c.baselines, tuple):
    raise ValueError(f'config.compare.baselines={c.baselines!r}: expected a '
                     "tuple of method names, e.g. ('sft_bestoa', 'afd')")
  for key, name in [('main', c.main)] + [('baselines', b)
                                         for b in c.baselines]:
    if name not in known:
      raise ValueError(f'config.compare.{key}: {name!r} is not one of '
                       f'config.compare.methods {known}')
  names = [c.main, *c.baselines]
  if len(set(names)) != len(names):
    raise ValueError(f'config.compare.baselines: {names} names a method '
                     'twice')
  return names


def method_section(config, name: str) -> ml_collections.ConfigDict:
  """``config.align`` with method ``name``'s keys replaced."""
  return sections.merged(config.align, config.compare.methods[name],
                         f'config.compare.methods.{name}')


def check_methods(config, workdir: pathlib.Path) -> None:
  """Every method's alignment config (errors name the method's key)."""
  for name in method_names(config):
    align_stage.check_config(config, workdir, method_section(config, name),
                             f'config.compare.methods.{name}')


def comparison_sets(config, workdir: pathlib.Path) -> list[tuple[str, list]]:
  """The comparison's evaluation sets (an error when there is none)."""
  sets = common.eval_sets(config, workdir, config.compare.eval_glob)
  if not sets:
    raise ValueError('config.compare: nothing to evaluate on (no held-out '
                     'SUMO set, no config.data.womd_heldout_glob and no '
                     'config.compare.eval_glob)')
  return sets


def _score(params, mc, patterns, config, path: pathlib.Path, *,
           max_scenarios: int) -> list[dict]:
  """Per-scenario WOSAC 2025 metrics of a model on a set (cached in path)."""
  from prefalign import evaluation
  if path.exists():
    return json.loads(path.read_text())
  path.parent.mkdir(parents=True, exist_ok=True)
  c = config.compare
  res = evaluation.evaluate_files(
      params, mc, patterns,
      reader=common.reader_config(config, c.max_num_objects),
      num_rollouts=c.num_rollouts, challenges=('2025',),
      max_scenarios=max_scenarios, baselines=False,
      seed=config.seed, progress=True)
  rows = [{'scenario_id': r['scenario_id'], **r['2025']['model']}
          for r in res['per_scenario']]
  common.write_json(path, rows)
  return rows


_TABLE = ('metametric', 'kinematic', 'interactive', 'map_based',
          'min_average_displacement_error', 'simulated_collision_rate',
          'simulated_offroad_rate')


def _table(scores: dict[str, dict[str, list[dict]]],
           summaries: dict[str, dict]) -> tuple[dict, str]:
  """results.json content and results.md of the comparison."""
  from prefalign import evaluation
  results, lines = {}, []
  for set_name, by_method in scores.items():
    ref = {r['scenario_id']: r for r in by_method['reference']}
    results[set_name] = {}
    lines += [f'## {set_name} ({len(ref)} scenarios; mean [95 % bootstrap '
              'CI over scenarios])', '',
              '| method | ' + ' | '.join(_TABLE) +
              ' | realism - reference | held-out pair accuracy | KL per '
              'token |', '|---|' + '---|' * (len(_TABLE) + 3)]
    for method, rows in by_method.items():
      stats = {k: evaluation.bootstrap([r[k] for r in rows])
               for k in _TABLE}
      diff = evaluation.bootstrap(
          [r['metametric'] - ref[r['scenario_id']]['metametric']
           for r in rows if r['scenario_id'] in ref])
      s = summaries.get(method, {})
      acc = s.get('heldout', {}).get('accuracy')
      kl = s.get('kl', {}).get('kl_per_token')
      if method == 'reference':
        acc = s.get('reference_accuracy')
      results[set_name][method] = {'metrics': stats, 'diff_vs_reference':
                                   diff, 'heldout_accuracy': acc, 'kl': kl}
      cell = lambda b: (f'{b["mean"]:.4f} [{b["ci"][0]:.4f}, '
                        f'{b["ci"][1]:.4f}]' if b.get('n') else '-')
      lines.append(
          f'| {method} | ' + ' | '.join(cell(stats[k]) for k in _TABLE) +
          f' | {cell(diff) if method != "reference" else "-"} | '
          f'{"-" if acc is None else f"{acc:.3f}"} | '
          f'{"-" if kl is None else f"{kl:.4f}"} |')
    lines.append('')
  return results, '\n'.join(lines)


def _reference_accuracy(workdir: pathlib.Path, method: str) -> float | None:
  """Held-out pair accuracy of the reference (an align run's step 0)."""
  path = workdir / 'compare' / method / 'metrics.jsonl'
  if not path.exists():
    return None
  for line in path.read_text().splitlines():
    row = json.loads(line)
    if row['step'] == 0 and row['split'] == 'eval/heldout':
      return row['accuracy']
  return None


def _plot_scaling(points: list[dict], path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for p in points:
    lo, hi = p['realism']['ci']
    ax.errorbar(p['kl'], p['realism']['mean'],
                yerr=[[p['realism']['mean'] - lo], [hi - p['realism']['mean']]],
                fmt='o', capsize=3)
    ax.annotate(p['label'], (p['kl'], p['realism']['mean']),
                textcoords='offset points', xytext=(5, 5), fontsize=8)
  ax.set(xlabel='KL(policy || reference) per token (held-out scenarios)',
         ylabel='WOSAC 2025 realism (held-out SUMO)',
         title='preference data scaling')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fileio.save_figure(fig, path, dpi=110)
  plt.close(fig)


def _sweep_runs(config, workdir: pathlib.Path, base, main: str,
                out: pathlib.Path) -> dict[str, tuple]:
  """The main method's data-scaling and feature-ablation runs:
  {name: (AlignConfig, run directory)}; an ablation's feature set is
  collected first (the same rollouts, ranked by those features)."""
  from prefalign.train import align
  extra: dict[str, Any] = {}
  num_train = len(align.split_records(base)[0]) if config.compare.scaling \
      else 0
  for f in config.compare.scaling:
    n = max(1, int(round(f * num_train)))
    extra[f'{main}_x{f:g}'] = (dataclasses.replace(base, max_scenarios=n),
                               out / f'{main}_x{f:g}')
  for fs in config.compare.ablation:
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.collect.ranking.feature_set = fs
    sub.collect.output = f'{config.collect.output}_{fs}'
    collect_stage.run(sub, workdir)
    extra[f'{main}_{fs}'] = (dataclasses.replace(
        base, preference_dirs=(str(workdir / sub.collect.output),)),
                             out / f'{main}_{fs}')
  return extra


def run(config, workdir: pathlib.Path) -> str:
  """DPA-OMF next to its baselines, a data-scaling sweep and a feature
  ablation, all from one collection; a results table with bootstrap CIs."""
  c = config.compare
  out = workdir / 'compare'
  if (out / 'results.json').exists():
    return f'{out / "results.json"} exists (skipped)'
  out.mkdir(parents=True, exist_ok=True)
  methods = method_names(config)
  sets = comparison_sets(config, workdir)
  first = next(womd.read_examples(sets[0][1], womd.ReaderConfig(
      max_num_objects=c.max_num_objects)))
  mc, ref_params, _ = common.load_model(
      config, workdir, first.state,
      common.reference_checkpoint(config, workdir))
  runs: dict[str, Any] = {}
  for name in methods:
    ac = align_stage.align_config(config, workdir,
                                  method_section(config, name),
                                  f'config.compare.methods.{name}')
    # Realism is scored below, on every set, with the same seeds.
    runs[name] = (dataclasses.replace(ac, realism_files=()), out / name)
  main = methods[0]
  extra = _sweep_runs(config, workdir, runs[main][0], main, out)
  summaries = {}
  for name, (ac, run_dir) in {**runs, **extra}.items():
    print(f'[compare] aligning {name}', flush=True)
    summaries[name] = align_stage.run_align(ac, run_dir)
  summaries['reference'] = {'reference_accuracy':
                            _reference_accuracy(workdir, main)}
  first_set = sets[0][0]
  params = {'reference': ref_params}
  scores: dict[str, dict[str, list]] = {}
  for set_name, patterns in sets:
    scores[set_name] = {}
    for name in ['reference'] + methods + (
        list(extra) if set_name == first_set else []):
      if name not in params:
        params[name] = common.final_params(config, workdir, first.state,
                                           out / name / 'checkpoints')
      print(f'[compare] scoring {name} on {set_name}', flush=True)
      scores[set_name][name] = _score(
          params[name], mc, patterns, config,
          out / name / f'scores_{set_name}.json',
          max_scenarios=c.max_scenarios)
  results, table = _table(scores, summaries)
  if c.scaling:
    from prefalign import evaluation
    points = []
    for name in [f'{main}_x{f:g}' for f in c.scaling] + [main]:
      count = summaries[name]['data']['train_scenarios']
      points.append({'label': f'{name} ({count} scenarios)',
                     'kl': summaries[name]['kl'].get('kl_per_token', 0.0),
                     'realism': evaluation.bootstrap(
                         [r['metametric'] for r in scores[first_set][name]])})
    points.append({'label': 'reference', 'kl': 0.0,
                   'realism': evaluation.bootstrap(
                       [r['metametric']
                        for r in scores[first_set]['reference']])})
    _plot_scaling(points, out / 'scaling.png')
    results['scaling'] = points
  results['runs'] = {k: {kk: v[kk] for kk in ('data', 'heldout', 'kl',
                                               'config') if kk in v}
                     for k, v in summaries.items() if k != 'reference'}
  (out / 'results.md').write_text('# Alignment comparison\n\n' + table)
  common.write_json(out / 'results.json', results)
  line = ', '.join(
      f'{m}: {results[first_set][m]["metrics"]["metametric"]["mean"]:.4f}'
      for m in results[first_set])
  return f'realism on {first_set}: {line}; {out / "results.md"}'
