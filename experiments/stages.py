"""The stages of the main job, each resumable from what the workdir holds.

``run(config, workdir)`` runs ``config.stages`` in order. A stage whose output
file already exists is skipped, so rerunning the same command after an
interruption continues where it stopped; outputs are written to a temporary
name and renamed when complete, so a half-written file is never mistaken for
a finished one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from prefalign import datatypes
from prefalign import fileio
from prefalign import model as model_lib
from prefalign.data import pipeline
from prefalign.data import sumo
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.sim import dynamics
from prefalign.sim import env
from prefalign.sim import replay

_SOURCES = ('sumo', 'synthetic')


def _check_files(patterns: str, key: str) -> None:
  """Comma-separated WOMD patterns must match files (errors name the key)."""
  try:
    womd.expand_paths(patterns.split(','))
  except FileNotFoundError as e:
    raise ValueError(f'{key}: {e}') from None


def _check(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Stops on bad config values before any work or compilation."""
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise ValueError(f'config.stages: unknown stage(s) {unknown}; known: '
                     f'{list(STAGES)}')
  if not config.data.womd_glob and config.data.source not in _SOURCES:
    raise ValueError(f'config.data.source={config.data.source!r} is not one '
                     f'of {_SOURCES} (or set config.data.womd_glob)')
  if (not config.data.womd_glob and config.data.source == 'sumo' and
      config.data.sumo_network not in sumo.NETWORKS):
    raise ValueError(f'config.data.sumo_network={config.data.sumo_network!r}'
                     f' is not one of {sorted(sumo.NETWORKS)}')
  if config.data.get('womd_heldout_glob', ''):
    if not config.data.womd_glob:
      raise ValueError('config.data.womd_heldout_glob needs '
                       'config.data.womd_glob (the training files)')
    _check_files(config.data.womd_heldout_glob,
                 'config.data.womd_heldout_glob')
  if config.data.womd_glob:
    _check_files(config.data.womd_glob, 'config.data.womd_glob')
  if 'report' in config.stages:
    if 'report' not in config or 'compare' not in config:
      raise ValueError("config.stages: 'report' needs the compare and "
                       'report sections (experiments/configs/demo.py)')
    if config.report.num_rollouts < 4:
      raise ValueError('config.report.num_rollouts must be >= 4, got '
                       f'{config.report.num_rollouts}')
  if config.data.num_scenarios < 1:
    raise ValueError('config.data.num_scenarios must be >= 1, got '
                     f'{config.data.num_scenarios}')
  if config.replay.batch_size < 1:
    raise ValueError('config.replay.batch_size must be >= 1, got '
                     f'{config.replay.batch_size}')
  if 'pretrain' in config.stages:
    from prefalign.train import parallel  # pylint: disable=g-import-not-at-top
    parallel.check_batch_size(config.pretrain.batch_size, parallel.make_mesh(),
                              'config.pretrain.batch_size')
    try:
      model_config(config)
    except ValueError as e:
      raise ValueError(f'config.model: {e}') from None
    if config.pretrain.eval_glob:
      _check_files(config.pretrain.eval_glob, 'config.pretrain.eval_glob')
  if 'align' in config.stages or 'compare' in config.stages:
    _check_align(config, pathlib.Path(workdir))
  if 'compare' in config.stages:
    _methods(config.compare.methods)
    _eval_sets_of(config, pathlib.Path(workdir))
  if 'evaluate' in config.stages and 'evaluate' in config:
    _simulator(config.evaluate.get('simulator', 'prefalign'), 1,
               model_config(config), 'config.evaluate.simulator')
  if 'collect' in config.stages:
    ranking_config(config)
    if config.collect.glob:
      _check_files(config.collect.glob, 'config.collect.glob')


def _reader_config(config) -> womd.ReaderConfig:
  return womd.ReaderConfig(
      max_num_objects=config.data.max_num_objects,
      max_roadgraph_points=config.data.max_roadgraph_points,
      max_traffic_lights=config.data.max_traffic_lights)


def _write_json(path: pathlib.Path, obj) -> None:
  fileio.atomic_write_text(path, json.dumps(obj, indent=1) + '\n')


def data_files(config, workdir: pathlib.Path) -> list[str]:
  if config.data.womd_glob:
    return womd.expand_paths(config.data.womd_glob.split(','))
  if config.data.source == 'sumo':
    return [str(workdir / 'data' / 'sumo' /
                f'{config.data.sumo_network}.tfrecord-*')]
  return [str(workdir / 'data' / 'synthetic.tfrecord')]


def _sumo_config(config, heldout: bool = False) -> sumo.SumoConfig:
  return sumo.SumoConfig(
      network=config.data.sumo_network,
      num_scenarios=(config.data.num_heldout_scenarios if heldout else
                     config.data.num_scenarios),
      # Another seed: other traffic demand, other ego choices.
      seed=config.seed + (1_000_003 if heldout else 0),
      radius=config.data.sumo_radius)


def _num_heldout(config) -> int:
  return config.data.get('num_heldout_scenarios', 0)


def heldout_files(config, workdir: pathlib.Path) -> list[str]:
  """The held-out scenarios: generated SUMO ones, or
  ``config.data.womd_heldout_glob`` with WOMD (none for synthetic)."""
  if config.data.womd_glob:
    glob = config.data.get('womd_heldout_glob', '')
    return womd.expand_paths(glob.split(',')) if glob else []
  if config.data.source != 'sumo' or not _num_heldout(config):
    return []
  return [str(workdir / 'data' / 'sumo_heldout' /
              f'{config.data.sumo_network}.tfrecord-*')]


def heldout_name(config) -> str:
  """The held-out set's name in tables and metrics."""
  return 'womd_heldout' if config.data.womd_glob else 'sumo_heldout'


def model_config(config) -> 'model_lib.ModelConfig':
  """The frozen ModelConfig of ``config.model``."""
  m = config.model
  return model_lib.ModelConfig(
      width=m.width, num_heads=m.num_heads, encoder_layers=m.encoder_layers,
      decoder_layers=m.decoder_layers, mlp_ratio=m.mlp_ratio,
      map_neighbours=m.map_neighbours, agent_neighbours=m.agent_neighbours,
      scene=model_lib.SceneConfig(num_map_chunks=m.num_map_chunks),
      tokenizer=model_lib.TokenizerConfig(
          steps_per_token=m.steps_per_token, num_lon_bins=m.num_lon_bins,
          num_lat_bins=m.num_lat_bins))


def stage_data(config, workdir: pathlib.Path) -> str:
  """Writes the embedded default scenarios (or checks the WOMD files)."""
  files = data_files(config, workdir)
  if config.data.womd_glob:
    return f'{len(files)} WOMD file(s) matched {config.data.womd_glob!r}'
  if config.data.source == 'sumo':
    messages, skipped = [], True
    parts = [('sumo', False)] + ([('sumo_heldout', True)]
                                 if _num_heldout(config) else [])
    for folder, heldout in parts:
      out = workdir / 'data' / folder
      before = (out / 'manifest.json').read_text() if (
          out / 'manifest.json').exists() else None
      sumo_config = _sumo_config(config, heldout)
      bar = tqdm.tqdm(total=sumo_config.num_scenarios,
                      desc=f'data ({folder})')
      try:
        manifest = sumo.generate(
            sumo_config, out,
            progress=lambda done, _, bar=bar: bar.update(done - bar.n))
      finally:
        bar.close()
      c = manifest['counts']
      messages.append(
          f'{manifest["num_scenarios"]} scenarios of SUMO traffic on '
          f'{manifest["network"]} in {out} ({c["vehicle"]} vehicles, '
          f'{c["pedestrian"]} pedestrians, {c["cyclist"]} cyclists)')
      skipped &= (before is not None and
                  before == (out / 'manifest.json').read_text())
    done = '; '.join(messages)
    return f'{done} exist (skipped)' if skipped else f'wrote {done}'
  path = pathlib.Path(files[0])
  if path.exists():
    return f'{path} exists (skipped)'
  path.parent.mkdir(parents=True, exist_ok=True)
  fileio.remove_temporaries(path.parent, path.name)  # a killed run's
  rng = np.random.default_rng(config.seed)
  with tfrecord.TFRecordWriter(path) as writer:
    for i in tqdm.trange(config.data.num_scenarios, desc='data'):
      scenario = synthetic.straight_road_scenario(
          f'synthetic-{config.seed}-{i:04d}', seed=int(rng.integers(2**31)),
          num_vehicles=int(rng.integers(2, 9)),
          num_pedestrians=int(rng.integers(0, 3)),
          num_cyclists=int(rng.integers(0, 2)),
          with_traffic_light=bool(i % 2 == 0))
      writer.write(scenario.SerializeToString())
  return f'wrote {config.data.num_scenarios} scenarios to {path}'


def stage_inspect(config, workdir: pathlib.Path) -> str:
  """One JSON line of counts per scenario, and a picture of the first."""
  out = workdir / 'inspect'
  info_path = out / 'info.jsonl'
  if info_path.exists():
    return f'{info_path} exists (skipped)'
  out.mkdir(parents=True, exist_ok=True)
  from prefalign import viz  # pylint: disable=g-import-not-at-top
  stats = womd.ReadStats()
  lines, first = [], None
  for path, index, scenario in tqdm.tqdm(
      womd.read_scenarios(data_files(config, workdir),
                          skip_bad_records=config.data.skip_bad_records,
                          stats=stats), desc='inspect'):
    lines.append(json.dumps({'file': path, 'record': index,
                             **womd.scenario_info(scenario)}))
    if first is None:
      first = womd.state_from_scenario(
          scenario, womd.ReaderConfig(max_num_objects=None,
                                      max_roadgraph_points=None,
                                      max_traffic_lights=None))
  png = out / 'scenario.png'
  viz.plot_scenario(first.state, path=str(png), title=first.scenario_id)
  fileio.atomic_write_text(info_path, '\n'.join(lines) + '\n')
  return (f'{stats.num_read} scenarios ({stats.num_skipped} bad records '
          f'skipped); counts in {info_path}, picture in {png}')


def _errors(final: datatypes.SimulatorState):
  """Per-object ADE over log-valid future steps of objects valid now."""
  sim, log = final.sim_trajectory, final.log_trajectory
  now = datatypes.CURRENT_TIME_INDEX
  mask = log.valid[..., now + 1:] & log.valid[..., now:now + 1]
  err = jnp.hypot(sim.x - log.x, sim.y - log.y)[..., now + 1:]
  ade = jnp.where(mask, err, 0).sum(-1) / jnp.maximum(mask.sum(-1), 1)
  return ade, mask.any(-1)


def stage_replay(config, workdir: pathlib.Path) -> str:
  """Drives every scenario through the dynamics with the log's actions."""
  out = workdir / 'replay'
  summary_path = out / 'summary.json'
  if summary_path.exists():
    return f'{summary_path} exists (skipped)'
  out.mkdir(parents=True, exist_ok=True)
  bound = config.replay.accel_bound or float('inf')
  env_config = env.EnvConfig(dynamics=dynamics.DynamicsConfig(
      max_lon_accel=bound, max_lat_accel=bound))
  runs = {mode: jax.jit(jax.vmap(
      lambda s, m=mode: _errors(replay.rollout(s, env_config, m))))
          for mode in ('expert', 'replay')}
  per_type = {m: {} for m in runs}
  examples = pipeline.scenarios(
      data_files(config, workdir), pipeline.PipelineConfig(
          reader=_reader_config(config),
          skip_bad_records=config.data.skip_bad_records))
  first = None
  num = 0
  for batch in tqdm.tqdm(pipeline.batches(examples, config.replay.batch_size,
                                          drop_remainder=False),
                         desc='replay', unit='batch'):
    first = first or batch
    num += batch.batch_size
    types = np.asarray(batch.state.object_metadata.object_types)
    for mode, fn in runs.items():
      ade, has = jax.device_get(fn(batch.state))
      for t, name in ((1, 'vehicle'), (2, 'pedestrian'), (3, 'cyclist')):
        per_type[mode].setdefault(name, []).extend(
            ade[has & (types == t)].tolist())
  summary = {'scenarios': num, 'accel_bound': config.replay.accel_bound}
  for mode, types in per_type.items():
    summary[mode] = {
        name: {'objects': len(v), 'ade_mean_m': float(np.mean(v)),
               'ade_p95_m': float(np.percentile(v, 95))}
        for name, v in types.items() if v}
  if config.replay.animate and first is not None:
    from prefalign import viz  # pylint: disable=g-import-not-at-top
    one = jax.tree.map(lambda a: a[0], first.state)
    final = jax.jit(lambda s: replay.rollout(s, env_config, 'expert'))(one)
    viz.animate_rollout(one, jax.device_get(final.sim_trajectory),
                        path=str(out / 'expert_replay.gif'),
                        title=first.scenario_ids[0])
  _write_json(summary_path, summary)
  veh = summary['replay'].get('vehicle', {})
  return (f'{num} scenarios; expert tracking ADE (vehicles) '
          f'{summary["expert"].get("vehicle", {}).get("ade_mean_m", 0):.4f} m,'
          f' open-loop log-action replay ADE {veh.get("ade_mean_m", 0):.3f} m;'
          f' {summary_path}')


def stage_pretrain(config, workdir: pathlib.Path) -> str:
  """Next-token pre-training (resumes from the workdir's checkpoints)."""
  from prefalign import train  # pylint: disable=g-import-not-at-top
  p = config.pretrain
  eval_sets = []
  if heldout_files(config, workdir):
    eval_sets.append((heldout_name(config),
                      tuple(heldout_files(config, workdir))))
  if p.eval_glob:
    eval_sets.append(('womd', tuple(p.eval_glob.split(','))))
  train_config = train.TrainConfig(
      train_files=tuple(data_files(config, workdir)),
      eval_sets=tuple(eval_sets), model=model_config(config),
      optimizer=train.OptimizerConfig(
          learning_rate=p.learning_rate, warmup_steps=p.warmup_steps,
          total_steps=p.num_steps, weight_decay=p.weight_decay,
          grad_clip=p.grad_clip),
      reader=womd.ReaderConfig(
          max_num_objects=p.max_num_objects,
          max_roadgraph_points=config.data.max_roadgraph_points,
          max_traffic_lights=config.data.max_traffic_lights),
      batch_size=p.batch_size, num_steps=p.num_steps, seed=config.seed,
      shuffle_buffer=p.shuffle_buffer, log_every=p.log_every,
      eval_every=p.eval_every, eval_batches=p.eval_batches,
      checkpoint_every=p.checkpoint_every,
      keep_checkpoints=p.keep_checkpoints,
      unigram_batches=p.unigram_batches, init_from=p.init_from,
      skip_bad_records=config.data.skip_bad_records)
  out = workdir / 'pretrain'
  if (out / 'summary.json').exists():
    done = json.loads((out / 'summary.json').read_text())
    if done['step'] >= p.num_steps:
      return f'{out / "summary.json"} exists (skipped)'
  result = train.train_and_evaluate(train_config, out)
  summary = {'step': result['step'], 'num_params': result['num_params'],
             'eval': result['eval'], 'train': result['train'],
             'data': result['data']}
  _write_json(out / 'summary.json', summary)
  evals = ', '.join(
      f'{name}: loss {m["loss"]:.3f} (unigram {m["unigram_loss"]:.3f}), '
      f'accuracy {m["accuracy"]:.3f}'
      for name, m in result['eval'].items() if 'loss' in m)
  skipped = (f'{result["data"]["skipped"]} bad records skipped; '
             if result['data']['skipped'] else '')
  return (f'{result["num_params"]:,} parameters, step {result["step"]}; '
          f'{evals}; {skipped}{out}')


def _load_model(config, workdir: pathlib.Path, sample_state,
                checkpoint_dir: str = ''):
  """The model config and the parameters of a checkpoint directory.

  ``checkpoint_dir`` empty: the pre-training run's (WORKDIR/pretrain).
  """
  from prefalign.model import motion_lm  # pylint: disable=g-import-not-at-top
  from prefalign.train import checkpoint  # pylint: disable=g-import-not-at-top
  from prefalign.train import steps  # pylint: disable=g-import-not-at-top
  mc = model_config(config)
  batch = jax.tree.map(lambda a: np.asarray(a)[None], sample_state)
  # Shapes only: nothing is tokenized or initialised.
  like = jax.eval_shape(lambda b: motion_lm.init(
      jax.random.key(0), mc, *steps.model_inputs(b, mc)), batch)
  path = checkpoint_dir or str(workdir / 'pretrain' / 'checkpoints')
  return mc, checkpoint.load_params(path, like), path


def _eval_sets(config, workdir: pathlib.Path,
               eval_glob: str) -> list[tuple[str, list[str]]]:
  """The held-out set (if any) and ``eval_glob``'s files, reported as
  'womd'."""
  sets = []
  heldout = heldout_files(config, workdir)
  if heldout:
    sets.append((heldout_name(config), heldout))
  if eval_glob:
    sets.append(('womd', eval_glob.split(',')))
  return sets


def _simulator(name: str, num_objects: int, model_config, key: str):
  """The sampler's environment called ``name`` at config ``key``."""
  if name == 'prefalign':
    return None
  if name == 'waymax':
    try:
      from prefalign.integrations import waymax as wx  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError(f'{key}=waymax: {e}') from e
    # WaymaxEnvironment takes its dynamics from AccelerationDynamics.
    return wx.WaymaxEnvironment(wx.make_environment(
        num_objects, dynamics_model=wx.AccelerationDynamics(
            model_config.tokenizer.dynamics)))
  raise ValueError(f'{key}={name!r}: expected prefalign or waymax.')


def stage_evaluate(config, workdir: pathlib.Path) -> str:
  """WOSAC realism of a checkpoint, log replay and constant velocity."""
  from prefalign import evaluation  # pylint: disable=g-import-not-at-top
  from prefalign.data import submission  # pylint: disable=g-import-not-at-top
  e = config.evaluate
  out = workdir / 'evaluate'
  report_path = out / 'report.json'
  if report_path.exists():
    return f'{report_path} exists (skipped)'
  out.mkdir(parents=True, exist_ok=True)
  # A submission must hold every sim agent: refuse scenarios with more.
  reader = womd.ReaderConfig(
      max_num_objects=e.max_num_objects,
      max_roadgraph_points=config.data.max_roadgraph_points,
      max_traffic_lights=config.data.max_traffic_lights,
      drop_sim_agents=not e.submission)
  sets = (_eval_sets(config, workdir, config.evaluate.eval_glob) or
          [('data', data_files(config, workdir))])
  first = next(womd.read_examples(sets[0][1], reader))
  mc, params, ckpt = _load_model(config, workdir, first.state,
                                 config.evaluate.checkpoint)
  env = _simulator(e.get('simulator', 'prefalign'), first.state.num_objects,
                   mc, 'config.evaluate.simulator')
  results, exported = {}, {}
  for name, patterns in sets:
    protos = []

    def export(ex, traj, protos=protos):
      # Only the sim agents' rows are written; they are all valid.
      protos.append(submission.scenario_rollouts_from_trajectory(
          ex.state, ex.scenario_id, traj))

    res = evaluation.evaluate_files(
        params, mc, patterns, reader=reader, num_rollouts=e.num_rollouts,
        temperature=e.temperature, top_k=e.top_k, top_p=e.top_p,
        challenges=tuple(e.challenges.split(',')),
        max_scenarios=e.max_scenarios, seed=config.seed,
        keep=e.num_animations, on_rollouts=export if e.submission else None,
        env=env)
    results[name] = res
    from prefalign import viz  # pylint: disable=g-import-not-at-top
    for sid, state, traj in res['kept'][:e.num_animations]:
      viz.animate_rollout(state, jax.tree.map(lambda a: a[0], traj),
                          path=str(out / f'{name}_{sid}_rollout0.gif'),
                          title=f'{sid} (rollout 0)')
    if e.submission:
      path = out / f'{name}_submission.binproto'
      submission.write_submission(
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
            'simulator': e.get('simulator', 'prefalign'),
            'sampling': {'temperature': e.temperature, 'top_k': e.top_k,
                         'top_p': e.top_p},
            'submissions': exported,
            'sets': {k: {'aggregate': v['aggregate'],
                         'per_scenario': v['per_scenario'],
                         'data': v['data']}
                     for k, v in results.items()}}
  (out / 'report.md').write_text(evaluation.markdown_report(
      results, f'WOSAC evaluation of {ckpt}'))
  _write_json(report_path, report)
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


def ranking_config(config) -> 'preference.RankingConfig':
  """The RankingConfig of ``config.collect`` (errors name the key)."""
  from prefalign import preference  # pylint: disable=g-import-not-at-top
  c = config.collect
  try:
    weights = tuple(float(w) for w in str(c.weights).split(','))
  except ValueError:
    raise ValueError(f'config.collect.weights={c.weights!r}: expected 5 '
                     'comma-separated numbers') from None
  try:
    sinkhorn = preference.SinkhornConfig(
        epsilon=c.epsilon, num_iterations=c.num_iterations,
        threshold=c.threshold, anneal=c.anneal, relax=c.relax,
        backend=c.backend)
    rc = preference.RankingConfig(
        strategy=c.strategy, feature_set=c.feature_set, weights=weights,
        agents=c.agents, aggregate=c.aggregate, num_pairs=c.num_pairs,
        pairing=c.pairing, sinkhorn=sinkhorn, agent_chunk=c.agent_chunk)
    rc.check(c.num_rollouts)
  except ValueError as e:
    raise ValueError(f'config.collect: {e}') from None
  return rc


def collect_files(config, workdir: pathlib.Path) -> list[str]:
  if config.collect.glob:
    return womd.expand_paths(config.collect.glob.split(','))
  return data_files(config, workdir)


def stage_collect(config, workdir: pathlib.Path) -> str:
  """Preference data: rank the reference model's rollouts, write shards."""
  from prefalign.preference import dataset  # pylint: disable=g-import-not-at-top
  c = config.collect
  out = workdir / c.output
  if (out / 'summary.json').exists():
    return f'{out / "summary.json"} exists (skipped)'
  reader = womd.ReaderConfig(
      max_num_objects=c.max_num_objects,
      max_roadgraph_points=config.data.max_roadgraph_points,
      max_traffic_lights=config.data.max_traffic_lights)
  files = collect_files(config, workdir)
  first = next(womd.read_examples(files, reader))
  mc, params, ckpt = _load_model(config, workdir, first.state, c.checkpoint)
  summary = dataset.collect(
      params, mc, womd.read_examples(files, reader), out,
      ranking_config=ranking_config(config), num_rollouts=c.num_rollouts,
      temperature=c.temperature, top_k=c.top_k, top_p=c.top_p,
      scenarios_per_shard=c.scenarios_per_shard, seed=config.seed,
      max_scenarios=c.max_scenarios,
      keep_all_rollouts=c.get('keep_all_rollouts', False),
      meta={'checkpoint': os.path.abspath(ckpt), 'files': files})
  gap = summary['gap']
  return (f'{summary["num_scenarios"]} scenarios, {summary["num_pairs"]} '
          f'pairs; OT distance median '
          f'{summary["ot_distance"].get("median", float("nan")):.3f}, '
          f'preferred-unpreferred gap median '
          f'{gap.get("median", float("nan")):.3f}; OT/ADE rank correlation '
          f'{summary["ot_ade_spearman"]:.2f}; {out}')


def _reference_checkpoint(config, workdir: pathlib.Path) -> str:
  return (config.align.checkpoint or config.collect.checkpoint or
          str(workdir / 'pretrain' / 'checkpoints'))


def align_config(config, workdir: pathlib.Path, **overrides
                 ) -> 'train.align.AlignConfig':
  """The AlignConfig of ``config.align`` (errors name the key).

  ``overrides`` replace AlignConfig fields (the comparison's methods).
  """
  from prefalign.train import align  # pylint: disable=g-import-not-at-top
  from prefalign.train import steps  # pylint: disable=g-import-not-at-top
  a = config.align
  dirs = tuple(a.preferences.split(',')) if a.preferences else (
      str(workdir / config.collect.output),)
  realism = (tuple(a.realism_glob.split(',')) if a.realism_glob else
             tuple(heldout_files(config, workdir)))
  try:
    objective = steps.PreferenceConfig(
        loss=a.loss, alpha=a.alpha, gamma=a.gamma, agents=a.agents,
        conservative=a.conservative, beta=a.beta, bc_weight=a.bc_weight)
  except ValueError as e:
    raise ValueError(f'config.align: {e}') from None
  fields = dict(
      preference_dirs=dirs, init_from=_reference_checkpoint(config, workdir),
      model=model_config(config), objective=objective,
      optimizer=steps.OptimizerConfig(
          learning_rate=a.learning_rate, warmup_steps=a.warmup_steps,
          total_steps=a.num_steps, weight_decay=a.weight_decay,
          grad_clip=a.grad_clip),
      reader=womd.ReaderConfig(
          max_num_objects=config.collect.max_num_objects,
          max_roadgraph_points=config.data.max_roadgraph_points,
          max_traffic_lights=config.data.max_traffic_lights),
      pairs_from=a.pairs_from, num_pairs=a.num_pairs, pairing=a.pairing,
      eval_pairs_from=a.eval_pairs_from,
      heldout_fraction=a.heldout_fraction, max_scenarios=a.max_scenarios,
      batch_size=a.batch_size, num_steps=a.num_steps, seed=config.seed,
      shuffle_buffer=a.shuffle_buffer, log_every=a.log_every,
      eval_every=a.eval_every, checkpoint_every=a.checkpoint_every,
      keep_checkpoints=a.keep_checkpoints, kl_scenarios=a.kl_scenarios,
      kl_rollouts=a.kl_rollouts, realism_files=realism,
      realism_scenarios=a.realism_scenarios,
      realism_rollouts=a.realism_rollouts, realism_every=a.realism_every)
  fields.update(overrides)
  fields['optimizer'] = dataclasses.replace(fields['optimizer'],
                                            total_steps=fields['num_steps'])
  return align.AlignConfig(**fields)


def _check_align(config, workdir: pathlib.Path) -> None:
  """Config errors of the align stage that need no data."""
  from prefalign.preference import ranking  # pylint: disable=g-import-not-at-top
  from prefalign.train import parallel  # pylint: disable=g-import-not-at-top
  a = config.align
  for key in ('pairs_from', 'eval_pairs_from'):
    if a[key] not in ('',) + ranking.STRATEGIES:
      raise ValueError(f'config.align.{key}={a[key]!r} is not one of '
                       f"{('',) + ranking.STRATEGIES}")
  parallel.check_batch_size(a.batch_size, parallel.make_mesh(),
                            'config.align.batch_size')
  align_config(config, workdir)  # the objective's values


def _run_align(ac, out: pathlib.Path) -> dict:
  """Aligns (resuming) unless ``out/summary.json`` exists; the summary."""
  from prefalign.train import align  # pylint: disable=g-import-not-at-top
  path = out / 'summary.json'
  if path.exists():
    return json.loads(path.read_text())
  result = align.align_and_evaluate(ac, out)
  summary = {k: v for k, v in result.items() if k != 'params'}
  summary['config'] = {'loss': ac.objective.loss,
                       'pairs_from': ac.pairs_from or 'collected',
                       'max_scenarios': ac.max_scenarios,
                       'num_steps': ac.num_steps,
                       'init_from': ac.init_from}
  _write_json(path, summary)
  return summary


def stage_align(config, workdir: pathlib.Path) -> str:
  """Preference alignment of the reference model (resumable)."""
  out = workdir / config.align.output
  if (out / 'summary.json').exists():
    return f'{out / "summary.json"} exists (skipped)'
  s = _run_align(align_config(config, workdir), out)
  h, k = s['heldout'], s['kl']
  parts = [f'step {s["step"]}; {s["data"]["train_scenarios"]} scenarios / '
           f'{s["data"]["train_pairs"]} pairs']
  if h:
    parts.append(f'held-out pair accuracy {h["accuracy"]:.3f} '
                 f'({int(h["pairs"])} pairs)')
  if k:
    parts.append(f'KL(policy||reference) {k["kl_per_token"]:.4f} per token')
  if s['realism']:
    parts.append(f'realism {s["realism"]["metametric"]:.4f}')
  return '; '.join(parts) + f'; {out}'


def _methods(spec: str) -> list[tuple[str, str, str]]:
  """'name:pairs_from:loss,...' -> [(name, pairs_from, loss)]."""
  from prefalign.preference import ranking  # pylint: disable=g-import-not-at-top
  from prefalign.train import steps  # pylint: disable=g-import-not-at-top
  out = []
  for item in filter(None, spec.split(',')):
    parts = item.split(':')
    if (len(parts) != 3 or parts[1] not in ranking.STRATEGIES or
        parts[2] not in steps.PREFERENCE_LOSSES):
      raise ValueError(
          f'config.compare.methods: {item!r} is not name:pairs_from:loss '
          f'(pairs_from in {ranking.STRATEGIES}, loss in '
          f'{steps.PREFERENCE_LOSSES})')
    out.append(tuple(parts))
  if len({m[0] for m in out}) != len(out):
    raise ValueError(f'config.compare.methods: repeated names in {spec!r}')
  return out


def _score(params, mc, patterns, config, path: pathlib.Path, *,
           max_scenarios: int) -> list[dict]:
  """Per-scenario WOSAC 2025 metrics of a model on a set (cached in path)."""
  from prefalign import evaluation  # pylint: disable=g-import-not-at-top
  if path.exists():
    return json.loads(path.read_text())
  path.parent.mkdir(parents=True, exist_ok=True)
  c = config.compare
  res = evaluation.evaluate_files(
      params, mc, patterns, reader=womd.ReaderConfig(
          max_num_objects=c.max_num_objects,
          max_roadgraph_points=config.data.max_roadgraph_points,
          max_traffic_lights=config.data.max_traffic_lights),
      num_rollouts=c.num_rollouts, challenges=('2025',),
      max_scenarios=max_scenarios, baselines=False,
      seed=config.seed, progress=True)
  rows = [{'scenario_id': r['scenario_id'], **r['2025']['model']}
          for r in res['per_scenario']]
  _write_json(path, rows)
  return rows


_TABLE = ('metametric', 'kinematic', 'interactive', 'map_based',
          'min_average_displacement_error', 'simulated_collision_rate',
          'simulated_offroad_rate')


def _table(scores: dict[str, dict[str, list[dict]]],
           summaries: dict[str, dict]) -> tuple[dict, str]:
  """results.json content and results.md of the comparison."""
  from prefalign import evaluation  # pylint: disable=g-import-not-at-top
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


def _reference_accuracy(workdir: pathlib.Path, method: str) -> Optional[float]:
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
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
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


def stage_compare(config, workdir: pathlib.Path) -> str:
  """DPA-OMF next to its baselines, a data-scaling sweep and a feature
  ablation, all from one collection; a results table with bootstrap CIs."""
  c = config.compare
  out = workdir / 'compare'
  if (out / 'results.json').exists():
    return f'{out / "results.json"} exists (skipped)'
  out.mkdir(parents=True, exist_ok=True)
  methods = _methods(c.methods)
  sets = _eval_sets_of(config, workdir)
  first = next(womd.read_examples(sets[0][1], womd.ReaderConfig(
      max_num_objects=c.max_num_objects)))
  mc, ref_params, _ = _load_model(config, workdir, first.state,
                                  _reference_checkpoint(config, workdir))
  runs: dict[str, Any] = {}
  for name, pairs_from, loss in methods:
    ac = align_config(config, workdir, pairs_from=pairs_from,
                      realism_files=())
    ac = dataclasses.replace(ac, objective=dataclasses.replace(
        ac.objective, loss=loss))
    runs[name] = (ac, out / name)
  scaling = [float(f) for f in filter(None, str(c.scaling).split(','))]
  ablation = list(filter(None, c.ablation.split(',')))
  main = methods[0][0] if methods else None
  extra: dict[str, Any] = {}
  if main:
    base = runs[main][0]
    from prefalign.train import align  # pylint: disable=g-import-not-at-top
    num_train = len(align.split_records(base)[0])
    for f in scaling:
      n = max(1, int(round(f * num_train)))
      extra[f'{main}_x{f:g}'] = (dataclasses.replace(base, max_scenarios=n),
                                 out / f'{main}_x{f:g}')
    for fs in ablation:
      sub = ml_collections.ConfigDict(config.to_dict())
      sub.collect.feature_set = fs
      sub.collect.output = f'{config.collect.output}_{fs}'
      stage_collect(sub, workdir)
      extra[f'{main}_{fs}'] = (dataclasses.replace(
          base, preference_dirs=(str(workdir / sub.collect.output),)),
                               out / f'{main}_{fs}')
  summaries = {}
  for name, (ac, run_dir) in {**runs, **extra}.items():
    print(f'[compare] aligning {name}', flush=True)
    summaries[name] = _run_align(ac, run_dir)
  if main:
    summaries['reference'] = {'reference_accuracy':
                              _reference_accuracy(workdir, main)}
  first_set = sets[0][0]
  params = {'reference': ref_params}
  scores: dict[str, dict[str, list]] = {}
  for set_name, patterns in sets:
    scores[set_name] = {}
    for name in ['reference'] + [m[0] for m in methods] + (
        list(extra) if set_name == first_set else []):
      if name not in params:
        params[name] = _final_params(config, workdir, first.state,
                                     out / name / 'checkpoints')
      print(f'[compare] scoring {name} on {set_name}', flush=True)
      scores[set_name][name] = _score(
          params[name], mc, patterns, config,
          out / name / f'scores_{set_name}.json',
          max_scenarios=c.max_scenarios)
  results, table = _table(scores, summaries)
  if scaling and main:
    from prefalign import evaluation  # pylint: disable=g-import-not-at-top
    points = []
    for name in [f'{main}_x{f:g}' for f in scaling] + [main]:
      points.append({'label': f'{name} ({summaries[name]["data"]["train_scenarios"]}'
                             ' scenarios)',
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
  _write_json(out / 'results.json', results)
  line = ', '.join(
      f'{m}: {results[first_set][m]["metrics"]["metametric"]["mean"]:.4f}'
      for m in results[first_set])
  return f'realism on {first_set}: {line}; {out / "results.md"}'


def _eval_sets_of(config, workdir: pathlib.Path) -> list[tuple[str, list]]:
  """The comparison's evaluation sets (an error when there is none)."""
  sets = _eval_sets(config, workdir, config.compare.eval_glob)
  if not sets:
    raise ValueError('config.compare: nothing to evaluate on (no held-out '
                     'SUMO set, no config.data.womd_heldout_glob and no '
                     'config.compare.eval_glob)')
  return sets


def _final_params(config, workdir, sample_state, directory: pathlib.Path):
  return _load_model(config, workdir, sample_state, str(directory))[1]


def _read_example(patterns: list[str], index: int, reader: womd.ReaderConfig,
                  key: str) -> womd.ScenarioExample:
  """The ``index``-th scenario of some files (errors name the config key)."""
  count = 0
  for count, ex in enumerate(womd.read_examples(patterns, reader), 1):
    if count == index + 1:
      return ex
  raise ValueError(f'{key}={index}: the files {patterns} hold only {count} '
                   'scenario(s)')


def _report_pictures(config, workdir: pathlib.Path, out: pathlib.Path,
                     main: str) -> tuple[Optional[str], Optional[str], str]:
  """The ranking of one scenario's rollouts and the before / after GIF."""
  from prefalign import preference  # pylint: disable=g-import-not-at-top
  from prefalign import rollout  # pylint: disable=g-import-not-at-top
  from prefalign import viz  # pylint: disable=g-import-not-at-top
  r = config.report
  set_name, patterns = _eval_sets_of(config, workdir)[0]
  ex = _read_example(patterns, r.scenario, womd.ReaderConfig(
      max_num_objects=config.compare.max_num_objects,
      max_roadgraph_points=config.data.max_roadgraph_points,
      max_traffic_lights=config.data.max_traffic_lights), 'config.report.scenario')
  mc, ref, _ = _load_model(config, workdir, ex.state,
                           _reference_checkpoint(config, workdir))
  aligned = _final_params(config, workdir, ex.state,
                          workdir / 'compare' / main / 'checkpoints')
  batch = jax.tree.map(lambda a: np.asarray(a)[None], ex.state)
  key = jax.random.fold_in(jax.random.key(config.seed), 2026)
  # Ranking: the reference's rollouts of a held-out scenario, ranked as the
  # collection ranks them, a quarter on each side (the paper: 16 of 64).
  rc = dataclasses.replace(ranking_config(config),
                           num_pairs=max(1, r.num_rollouts // 4))
  out_r = jax.jit(functools.partial(
      rollout.sample_rollouts, config=mc, num_rollouts=r.num_rollouts))(
          ref, batch, key)
  traj = jax.tree.map(lambda a: a[0], rollout.to_metric_trajectory(out_r))
  ranking = jax.device_get(jax.jit(functools.partial(
      preference.rank_rollouts, config=rc))(ex.state, traj, key))
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
  one = jax.jit(functools.partial(rollout.sample_rollouts, config=mc,
                                  num_rollouts=1))
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


def stage_report(config, workdir: pathlib.Path) -> str:
  """WORKDIR/report/index.html and report.md: results, curves, pictures."""
  from experiments import report  # pylint: disable=g-import-not-at-top
  out = workdir / 'report'
  if (out / 'index.html').exists():
    return f'{out / "index.html"} exists (skipped)'
  results_path = workdir / 'compare' / 'results.json'
  if not results_path.exists():
    raise ValueError(f'config.stages: the report needs {results_path} (the '
                     "'compare' stage); add 'compare' before 'report'")
  results = json.loads(results_path.read_text())
  methods = [m[0] for m in _methods(config.compare.methods)]
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
  done = _stage_log(workdir)
  stage_lines = [f'{r["stage"]}: {r["message"]} ({r["seconds"]:.0f} s)'
                 for r in done.values()]
  stage_lines.append(f'total of the stages above: '
                     f'{sum(r["seconds"] for r in done.values()) / 60:.1f} '
                     'min (the report itself not counted)')
  summary = {}
  if (workdir / 'pretrain' / 'summary.json').exists():
    summary = json.loads((workdir / 'pretrain' / 'summary.json').read_text())
  data = (f'{config.data.num_scenarios} SUMO scenarios on '
          f'{config.data.sumo_network} (+{_num_heldout(config)} held out, '
          'another seed)' if not config.data.womd_glob else
          f'WOMD files {config.data.womd_glob} (held out: '
          f'{config.data.womd_heldout_glob})')
  runs = results.get('runs', {})
  intro = [
      f'Data: {data}. Reference: the motion-token model '
      f'({summary.get("num_params", 0):,} parameters) pre-trained for '
      f'{summary.get("step", "?")} steps of {config.pretrain.batch_size} '
      'scenarios.',
      f'Preferences: {config.collect.num_rollouts} rollouts per scenario, '
      f'{config.collect.strategy.upper()} ranking, the '
      f'{config.collect.num_pairs} closest against the '
      f'{config.collect.num_pairs} farthest; '
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


def _stage_log(workdir: pathlib.Path) -> dict[str, dict]:
  """The last run of each stage that did work (WORKDIR/stages.jsonl)."""
  path = workdir / 'stages.jsonl'
  out: dict[str, dict] = {}
  if path.exists():
    for line in path.read_text().splitlines():
      row = json.loads(line)
      if not row['message'].endswith('(skipped)'):
        out[row['stage']] = row
  return out


STAGES: dict[str, Callable] = {
    'data': stage_data,
    'inspect': stage_inspect,
    'replay': stage_replay,
    'pretrain': stage_pretrain,
    'evaluate': stage_evaluate,
    'collect': stage_collect,
    'align': stage_align,
    'compare': stage_compare,
    'report': stage_report,
}


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs the configured stages in order, printing one line per stage."""
  _check(config, workdir)
  root = pathlib.Path(workdir)
  if root.exists() and not root.is_dir():
    raise ValueError(f'--workdir {root} is a file, not a folder')
  root.mkdir(parents=True, exist_ok=True)
  # One job per workdir: a second stops here, naming the first.
  with fileio.DirLock(root, what='experiments.main'):
    _run_locked(config, root)


def _run_locked(config: ml_collections.ConfigDict, root: pathlib.Path
                ) -> None:
  """``run`` with the workdir's lock held."""
  fileio.atomic_write_text(root / 'config.json',
                           config.to_json_best_effort(indent=1))
  start = time.perf_counter()
  for name in config.stages:
    t0 = time.perf_counter()
    message = STAGES[name](config, root)
    seconds = time.perf_counter() - t0
    print(f'[{name}] {message} ({seconds:.1f} s)', flush=True)
    with (root / 'stages.jsonl').open('a') as f:
      f.write(json.dumps({'stage': name, 'message': message,
                          'seconds': round(seconds, 1),
                          'finished': time.strftime('%Y-%m-%dT%H:%M:%S')})
              + '\n')
  print(f'done in {time.perf_counter() - start:.1f} s; outputs in {root}')
