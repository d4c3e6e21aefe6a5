"""The ``report`` stage: WORKDIR/report (HTML and markdown) with the results,
training curves, the ranking of one scenario's rollouts and a before /
after animation."""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import jax
import numpy as np

from experiments.stages import collect as collect_stage
from experiments.stages import common
from experiments.stages import compare as compare_stage
from prefalign import datatypes


def _report_pictures(config, workdir: pathlib.Path, out: pathlib.Path,
                     main: str) -> tuple[str | None, str | None, str]:
  """The ranking of one scenario's rollouts and the before / after GIF."""
  from prefalign import preference
  from prefalign import rollout
  from prefalign import viz
  r = config.report
  set_name, patterns = compare_stage.comparison_sets(config, workdir)[0]
  ex = common.read_example(
      patterns, r.scenario,
      common.reader_config(config, config.compare.max_num_objects),
      'config.report.scenario')
  mc, ref, _ = common.load_model(config, workdir, ex.state,
                                 common.reference_checkpoint(config, workdir))
  aligned = common.final_params(config, workdir, ex.state,
                                workdir / 'compare' / main / 'checkpoints')
  batch = jax.tree.map(lambda a: np.asarray(a)[None], ex.state)
  key = jax.random.fold_in(jax.random.key(config.seed), 2026)
  # Ranking: the reference's rollouts of a held-out scenario, ranked as the
  # collection ranks them, a quarter on each side (the paper: 16 of 64).
  rc = dataclasses.replace(collect_stage.ranking_config(config),
                           num_pairs=max(1, r.num_rollouts // 4))
  out_r = rollout.sample_rollouts_jit(ref, batch, key, config=mc,
                                      num_rollouts=r.num_rollouts)
  traj = jax.tree.map(lambda a: a[0], rollout.to_metric_trajectory(out_r))
  ranking = jax.device_get(
      preference.rank_rollouts_jit(ex.state, traj, key, config=rc))
  t = jax.device_get(out_r.trajectory)
  pos = np.where(t.valid[0][..., None],
                 np.stack([t.x[0], t.y[0]], -1), np.nan)
  ranking_png = out / 'ranking.png'
  fig = viz.plot_ranking(
      ex.state, pos, ranking.distances, preferred=ranking.preferred,
      unpreferred=ranking.unpreferred, path=ranking_png,
      title=f'{ex.scenario_id} ({set_name}): the reference model\'s '
      f'{r.num_rollouts} rollouts ranked by OT occupancy distance to the log')
  del fig
  # Before / after: one rollout of each model with the same sampling key.
  one = functools.partial(rollout.sample_rollouts_jit, config=mc,
                          num_rollouts=1)
  steps = r.animation_steps or None
  panels = {}
  sim = np.asarray(jax.device_get(out_r.valid[0, 0]))
  log = jax.tree.map(lambda a: np.asarray(a)[:, datatypes.CURRENT_TIME_INDEX
                                            + 1:], ex.state.log_trajectory)
  panels['log (demonstration)'] = log.replace(valid=log.valid & sim[:, None])
  for name, params in (('reference', ref), (main, aligned)):
    tr = jax.device_get(one(params, batch, jax.random.fold_in(key, 1)))
    panels[name] = jax.tree.map(lambda a: a[0, 0], tr.trajectory)
  panels = {k: jax.tree.map(lambda a: a[:, :steps], v)
            for k, v in panels.items()}
  gif = out / 'before_after.gif'
  viz.animate_rollouts(ex.state, panels, path=gif, dpi=r.animation_dpi,
                       stride=r.animation_stride,
                       fps=max(1, 10 // r.animation_stride))
  return ranking_png.name, gif.name, f'{ex.scenario_id} ({set_name})'


def run(config, workdir: pathlib.Path) -> str:
  """WORKDIR/report/index.html and report.md: results, curves, pictures."""
  from experiments import report
  out = workdir / 'report'
  if (out / 'index.html').exists():
    return f'{out / "index.html"} exists (skipped)'
  results_path = workdir / 'compare' / 'results.json'
  if not results_path.exists():
    raise ValueError(f'config.stages: the report needs {results_path} (the '
                     "'compare' stage); add 'compare' before 'report'")
  results = json.loads(results_path.read_text())
  methods = compare_stage.method_names(config)
  main = methods[0]
  out.mkdir(parents=True, exist_ok=True)
  ranking_png, gif, scenario = _report_pictures(config, workdir, out, main)
  curves = report.plot_curves(workdir, methods, out / 'curves.png')
  copy = lambda src, name=None: report.copy_figure(src, out, name)
  figures = [
      ('Before and after alignment', gif,
       f'{scenario}: the logged future, one rollout of the reference model '
       f'and one of {main}, sampled with the same key. Red outlines: boxes '
       'overlapping another box.'),
      ('The implicit preference: ranking one scenario\'s rollouts',
       ranking_png,
       'Left: every rollout\'s paths coloured by its OT distance between '
       'occupancy measures (collision, road-edge, clearance, effort, speed '
       'per step) and the log\'s. Middle: the closest quarter (preferred) '
       'against the farthest quarter (unpreferred). Right: the distances.'),
      ('Training curves', curves,
       'Pre-training next-token loss on training and held-out scenarios; '
       'alignment loss, held-out OT-pair accuracy and KL to the reference '
       'per method.'),
      ('Preference data: distances over the collection',
       copy(workdir / config.collect.output / 'distances.png',
            'distances.png'),
       'OT distance of the preferred and unpreferred rollouts of every '
       'collected scenario.'),
      ('Realism against KL (data scaling)',
       copy(workdir / 'compare' / 'scaling.png'),
       'Held-out realism of the main method trained on fractions of the '
       'preference data, against its KL to the reference.'),
      ('The data: one scenario', copy(workdir / 'inspect' / 'scenario.png'),
       'The first training scenario at its current step.'),
      ('The simulator replaying the log',
       copy(workdir / 'replay' / 'expert_replay.gif'),
       'The first scenario driven through the dynamics by the log.'),
  ]
  done = common.stage_log(workdir)
  stage_lines = [f'{r["stage"]}: {r["message"]} ({r["seconds"]:.0f} s)'
                 for r in done.values()]
  stage_lines.append(f'total of the stages above: '
                     f'{sum(r["seconds"] for r in done.values()) / 60:.1f} '
                     'min (the report itself not counted)')
  summary = {}
  if (workdir / 'pretrain' / 'summary.json').exists():
    summary = json.loads((workdir / 'pretrain' / 'summary.json').read_text())
  data = (f'{config.data.num_scenarios} SUMO scenarios on '
          f'{config.data.sumo_network} (+{common.num_heldout(config)} held '
          'out, another seed)' + (f' and WOMD files {config.data.extra_glob}'
                                  if config.data.extra_glob else '')
          if not config.data.womd_glob else
          f'WOMD files {config.data.womd_glob} (held out: '
          f'{config.data.womd_heldout_glob})')
  runs = results.get('runs', {})
  intro = [
      f'Data: {data}. Reference: the motion-token model '
      f'({summary.get("num_params", 0):,} parameters) pre-trained for '
      f'{summary.get("step", "?")} steps of {config.pretrain.batch_size} '
      'scenarios.',
      f'Preferences: {config.collect.num_rollouts} rollouts per scenario, '
      f'{config.collect.ranking.strategy.upper()} ranking, the '
      f'{config.collect.ranking.num_pairs} closest against the '
      f'{config.collect.ranking.num_pairs} farthest; '
      + ', '.join(f'{m}: {v["data"]["train_scenarios"]} training scenarios / '
                  f'{v["data"]["train_pairs"]} pairs, {v["config"]["loss"]} '
                  f'on {v["config"]["pairs_from"]} pairs, '
                  f'{v["config"]["num_steps"]} steps'
                  for m, v in runs.items() if m in methods) + '.',
      f'Realism: WOSAC 2025 meta-metric, {config.compare.num_rollouts} '
      f'rollouts per scenario, {config.compare.max_num_objects} object rows '
      '(the SDC, the tracks to predict and the nearest others; agents beyond '
      'them are neither simulated nor scored).',
      'The budget is whatever the config gives (the demo: sized for a '
      '2-core CPU in about 15 minutes); differences whose confidence '
      'interval spans 0 are not effects. BENCHMARKS.md ("Alignment") has a '
      'larger run.',
  ]
  paths = report.write(out, title='prefalign: preference alignment report',
                       intro=intro, results=results, main=main,
                       stage_lines=stage_lines, figures=figures)
  return f'{paths["html"]} and {paths["md"]}'
