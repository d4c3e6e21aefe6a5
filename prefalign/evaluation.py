"""WOSAC evaluation of a model next to log replay and constant velocity.

``evaluate_files`` streams scenarios, samples rollouts with the jitted
sampler, scores them with this project's JAX WOSAC metric (any of the 2024 /
2025 configs) and does the same for two references on the same scenarios:
``log_replay`` (the logged future: the ceiling) and ``constant_velocity``
(every object keeps its current velocity: the floor a learned simulator must
beat). ``markdown_report`` renders the result as tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import functools
import itertools
import logging
from typing import Any

import jax
import numpy as np
import tqdm

from prefalign import rollout
from prefalign.data import womd
from prefalign.metrics import wosac
from prefalign.model import motion_lm
from prefalign.sim import env as sim_env

__all__ = ['POLICIES', 'evaluate_files', 'markdown_report', 'bootstrap',
           'SUMMARY']

POLICIES = ('model', 'constant_velocity', 'log_replay')
SUMMARY = ('metametric', 'kinematic', 'interactive', 'map_based',
            'min_average_displacement_error', 'simulated_collision_rate',
            'simulated_offroad_rate', 'simulated_traffic_light_violation_rate')


def evaluate_files(
    params, model_config: motion_lm.ModelConfig,
    patterns: Sequence[str], *,
    reader: womd.ReaderConfig = womd.ReaderConfig(),
    num_rollouts: int = 32,
    sampling: rollout.SamplingConfig = rollout.SamplingConfig(),
    challenges: Sequence[str] = ('2024', '2025'),
    max_scenarios: int = 0, baselines: bool = True, seed: int = 0,
    keep: int = 0, progress: bool = True,
    on_scenario: Callable[[dict], None] | None = None,
    on_rollouts: Callable[[womd.ScenarioExample, Any], None] | None = None,
    env: sim_env.Environment | None = None,
) -> dict[str, Any]:
  """Samples and scores every scenario of some WOMD files.

  Args:
    params: model parameters.
    model_config: the model's config.
    patterns: WOMD TFRecord files, globs or name@N patterns.
    reader: scenario sizes (WOSAC simulates up to 128 objects).
    num_rollouts: rollouts per scenario (WOSAC: 32).
    sampling: how the model's tokens are drawn.
    challenges: metric configs ('2024', '2025').
    max_scenarios: stop after this many (0: all).
    baselines: also score log replay and constant velocity.
    seed: rng of the sampler (scenario i uses fold_in(seed key, i)).
    keep: keep the first ``keep`` (state, model rollouts) for pictures.
    progress: a progress bar.
    on_scenario: called with each scenario's metrics as they come.
    on_rollouts: called as ``on_rollouts(example, trajectory)`` with the
      model's rollouts, Trajectory (R, N, 80) as the metric takes them (for
      submission export).
    env: the simulator the model's rollouts run in (``sample_rollouts``'s
      ``env``; None: prefalign's own; a
      ``prefalign.integrations.waymax.WaymaxEnvironment`` runs them in
      Waymax). The references need no simulator.

  Returns:
    {'aggregate': {challenge: {policy: dataset metrics}}, 'per_scenario':
    [{'scenario_id', challenge: {policy: metrics}, and 'dropped_sim_agents'
    where ``reader.max_num_objects`` left some out}], 'kept': [(scenario_id,
    state, Trajectory (R, N, 80))], 'data': ``womd.ReadStats.summary()``}.
    Pass ``reader=ReaderConfig(drop_sim_agents=False)`` to refuse such
    scenarios instead.
  """
  configs = {c: wosac.get_config(c) for c in challenges}
  challenges = tuple(challenges)
  root = jax.random.key(seed)
  per_scenario, kept = [], []
  stats = womd.ReadStats()
  examples: Iterable = womd.read_examples(list(patterns), reader,
                                          stats=stats)
  if max_scenarios:
    examples = itertools.islice(examples, max_scenarios)
  for i, ex in enumerate(tqdm.tqdm(examples, desc='evaluate', unit='scenario',
                                   disable=not progress)):
    batch = jax.tree.map(lambda a: np.asarray(a)[None], ex.state)
    out = rollout.sample_rollouts_jit(
        params, batch, jax.random.fold_in(root, i), config=model_config,
        num_rollouts=num_rollouts, sampling=sampling, env=env)
    sims = {'model': jax.tree.map(lambda a: a[0],
                                  rollout.to_metric_trajectory(out))}
    if baselines:
      sims['constant_velocity'] = _constant_velocity(
          ex.state, num_rollouts=num_rollouts)
      sims['log_replay'] = _log_replay(ex.state, num_rollouts=num_rollouts)
    if on_rollouts is not None:
      on_rollouts(ex, jax.device_get(sims['model']))
    row = {'scenario_id': ex.scenario_id}
    if ex.num_dropped_sim_agents:  # scored without them: say so
      row['dropped_sim_agents'] = ex.num_dropped_sim_agents
    scores = {name: jax.device_get(_metric(ex.state, traj,
                                           challenges=challenges))
              for name, traj in sims.items()}
    for c in configs:
      row[c] = {name: {k: float(v) for k, v in scores[name][c].items()}
                for name in sims}
    per_scenario.append(row)
    if on_scenario is not None:
      on_scenario(row)
    if len(kept) < keep:
      kept.append((ex.scenario_id, ex.state,
                   jax.device_get(jax.tree.map(lambda a: a[0],
                                               out.trajectory))))
  if not per_scenario:
    raise ValueError(f'no scenarios read from {list(patterns)}')
  aggregate = {
      c: {name: wosac.aggregate([r[c][name] for r in per_scenario], config)
          for name in per_scenario[0][c]}
      for c, config in configs.items()}
  if stats.num_dropped_sim_agents:
    logging.warning(
        'evaluate: %d sim agents of %d scenarios were beyond '
        'reader.max_num_objects=%s and are not in the metric (WOSAC scores '
        'up to 128)', stats.num_dropped_sim_agents, stats.num_truncated,
        reader.max_num_objects)
  return {'aggregate': aggregate, 'per_scenario': per_scenario,
          'kept': kept, 'data': stats.summary()}


# Compiled once per setting and shape in a process (scoring several
# checkpoints compiles them once).
_constant_velocity = jax.jit(wosac.constant_velocity_rollouts,
                             static_argnames=('num_rollouts',))
_log_replay = jax.jit(wosac.log_rollouts, static_argnames=('num_rollouts',))


@functools.partial(jax.jit, static_argnames=('challenges',))
def _metric(state, traj, *, challenges: tuple[str, ...]):
  """Each challenge's metrics of rollouts; the features are computed once
  and scored under every config."""
  features = wosac.scenario_features(state, traj)
  return {c: wosac.metrics_from_features(features, wosac.get_config(c))
          for c in challenges}


def markdown_report(results: dict[str, dict], title: str) -> str:
  """Tables of ``{set name: evaluate_files(...)}``, one per set and config."""
  lines = [f'# {title}', '']
  for set_name, res in results.items():
    for challenge, by_policy in res['aggregate'].items():
      n = next(iter(by_policy.values()))['num_scenarios']
      lines += [f'## {set_name}: WOSAC {challenge} ({n} scenarios)', '',
                '| policy | ' + ' | '.join(SUMMARY) + ' |',
                '|---|' + '---|' * len(SUMMARY)]
      for policy, m in by_policy.items():
        lines.append(f'| {policy} | ' + ' | '.join(
            f'{m[k]:.4f}' for k in SUMMARY) + ' |')
      lines.append('')
      likelihoods = sorted(k for k in next(iter(by_policy.values()))
                           if k.endswith('_likelihood'))
      lines += ['| policy | ' + ' | '.join(
          k[:-len('_likelihood')] for k in likelihoods) + ' |',
                '|---|' + '---|' * len(likelihoods)]
      for policy, m in by_policy.items():
        lines.append(f'| {policy} | ' + ' | '.join(
            f'{m[k]:.4f}' for k in likelihoods) + ' |')
      lines.append('')
  return '\n'.join(lines)



def bootstrap(values, *, num: int = 2000, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
  """Mean of per-scenario values with a bootstrap confidence interval.

  Args:
    values: per-scenario numbers (non-finite ones are dropped).
    num: resamples (with replacement, over scenarios).
    seed: the resampling's seed (fixed: the same values give the same
      interval).
    level: coverage of the percentile interval.

  Returns:
    {'n', 'mean', 'median', 'ci' ([low, high]), 'frac_positive'}; {'n': 0}
    when nothing is finite.
  """
  v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
  if not v.size:
    return {'n': 0}
  boot = np.random.default_rng(seed).choice(v, (num, v.size)).mean(1)
  tail = 100 * (1 - level) / 2
  return {'n': int(v.size), 'mean': float(v.mean()),
          'median': float(np.median(v)),
          'ci': [float(np.percentile(boot, tail)),
                 float(np.percentile(boot, 100 - tail))],
          'frac_positive': float((v > 0).mean())}
