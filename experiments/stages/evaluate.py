"""The ``evaluate`` stage: WOSAC realism of a checkpoint next to log replay and
constant velocity, optionally a challenge submission."""

from __future__ import annotations

import dataclasses
import pathlib

import jax

from experiments.stages import common
from prefalign.data import womd


def check_challenges(challenges) -> None:
  """``config.evaluate.challenges``: a tuple of WOSAC metric configs."""
  from prefalign.metrics import wosac
  if not isinstance(challenges, tuple) or not challenges:
    raise ValueError(f'config.evaluate.challenges={challenges!r}: expected '
                     "a non-empty tuple, e.g. ('2024', '2025')")
  for name in challenges:
    try:
      wosac.get_config(name)
    except ValueError as e:
      raise ValueError(f'config.evaluate.challenges: {e}') from None


def run(config, workdir: pathlib.Path) -> str:
  """WOSAC realism of a checkpoint, log replay and constant velocity."""
  from prefalign import evaluation
  from prefalign.data import submission
  from prefalign.data import submission_files
  e = config.evaluate
  sampling = common.sampling_config(e, 'config.evaluate')
  out = workdir / 'evaluate'
  report_path = out / 'report.json'
  if report_path.exists():
    return f'{report_path} exists (skipped)'
  out.mkdir(parents=True, exist_ok=True)
  # A submission must hold every sim agent: refuse scenarios with more.
  reader = common.reader_config(config, e.max_num_objects,
                                drop_sim_agents=not e.submission)
  sets = (common.eval_sets(config, workdir, config.evaluate.eval_glob) or
          [('data', common.data_files(config, workdir))])
  first = next(womd.read_examples(sets[0][1], reader))
  mc, params, ckpt = common.load_model(config, workdir, first.state,
                                       config.evaluate.checkpoint)
  env = common.simulator(e.simulator,
                         first.state.num_objects, mc,
                         'config.evaluate.simulator')
  results, exported = {}, {}
  for name, patterns in sets:
    protos = []

    def export(ex, traj, protos=protos):
      # Only the sim agents' rows are written; they are all valid.
      protos.append(submission.scenario_rollouts_from_trajectory(
          ex.state, ex.scenario_id, traj))

    res = evaluation.evaluate_files(
        params, mc, patterns, reader=reader, num_rollouts=e.num_rollouts,
        sampling=sampling,
        challenges=tuple(e.challenges),
        max_scenarios=e.max_scenarios, seed=config.seed,
        keep=e.num_animations, on_rollouts=export if e.submission else None,
        env=env)
    results[name] = res
    from prefalign import viz
    for sid, state, traj in res['kept'][:e.num_animations]:
      viz.animate_rollout(state, jax.tree.map(lambda a: a[0], traj),
                          path=str(out / f'{name}_{sid}_rollout0.gif'),
                          title=f'{sid} (rollout 0)')
    if e.submission:
      path = out / f'{name}_submission.binproto'
      submission_files.write_submission(
          path, protos, account_name=e.submission_account,
          unique_method_name=e.submission_method,
          authors=e.submission_authors.split(','),
          affiliation=e.submission_affiliation,
          description=e.submission_description,
          method_link=e.submission_link,
          num_model_parameters=e.submission_num_parameters,
          acknowledge_complies_with_closed_loop_requirement=True)
      exported[name] = str(path)
  report = {'checkpoint': ckpt, 'num_rollouts': e.num_rollouts,
            'simulator': e.simulator,
            'sampling': dataclasses.asdict(sampling),
            'submissions': exported,
            'sets': {k: {'aggregate': v['aggregate'],
                         'per_scenario': v['per_scenario'],
                         'data': v['data']}
                     for k, v in results.items()}}
  (out / 'report.md').write_text(evaluation.markdown_report(
      results, f'WOSAC evaluation of {ckpt}'))
  common.write_json(report_path, report)
  parts = []
  for name, res in results.items():
    agg = res['aggregate'][sorted(res['aggregate'])[-1]]
    parts.append(f'{name}: realism model {agg["model"]["metametric"]:.4f}'
                 + (f', constant velocity '
                    f'{agg["constant_velocity"]["metametric"]:.4f}, log '
                    f'replay {agg["log_replay"]["metametric"]:.4f}'
                    if 'log_replay' in agg else '')
                 + (f' ({res["data"]["dropped_sim_agents"]} sim agents '
                    f'beyond max_num_objects={e.max_num_objects} not scored)'
                    if res['data']['dropped_sim_agents'] else ''))
  return '; '.join(parts) + f'; {out / "report.md"}'
