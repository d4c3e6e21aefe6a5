"""The stages of the main job, each resumable from what the workdir holds.

``run(config, workdir)`` runs ``config.stages`` in order. A stage whose output
file already exists is skipped, so rerunning the same command after an
interruption continues where it stopped; outputs are written to a temporary
name and renamed when complete, so a half-written file is never mistaken for
a finished one.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from prefalign import datatypes
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


def _check(config: ml_collections.ConfigDict) -> None:
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
      try:
        womd.expand_paths(config.pretrain.eval_glob.split(','))
      except FileNotFoundError as e:
        raise ValueError(f'config.pretrain.eval_glob: {e}') from None
  if 'collect' in config.stages:
    ranking_config(config)
    if config.collect.glob:
      try:
        womd.expand_paths(config.collect.glob.split(','))
      except FileNotFoundError as e:
        raise ValueError(f'config.collect.glob: {e}') from None


def _reader_config(config) -> womd.ReaderConfig:
  return womd.ReaderConfig(
      max_num_objects=config.data.max_num_objects,
      max_roadgraph_points=config.data.max_roadgraph_points,
      max_traffic_lights=config.data.max_traffic_lights)


def _write_json(path: pathlib.Path, obj) -> None:
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(obj, indent=1) + '\n')
  os.replace(tmp, path)


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
  """The generated held-out SUMO files (none for WOMD or synthetic)."""
  if config.data.womd_glob or config.data.source != 'sumo' or not _num_heldout(
      config):
    return []
  return [str(workdir / 'data' / 'sumo_heldout' /
              f'{config.data.sumo_network}.tfrecord-*')]


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
  tmp = info_path.with_suffix('.tmp')
  tmp.write_text('\n'.join(lines) + '\n')
  os.replace(tmp, info_path)
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
    eval_sets.append(('sumo_heldout', tuple(heldout_files(config, workdir))))
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
      unigram_batches=p.unigram_batches, init_from=p.init_from)
  out = workdir / 'pretrain'
  result = train.train_and_evaluate(train_config, out)
  summary = {'step': result['step'], 'num_params': result['num_params'],
             'eval': result['eval'], 'train': result['train']}
  _write_json(out / 'summary.json', summary)
  evals = ', '.join(
      f'{name}: loss {m["loss"]:.3f} (unigram {m["unigram_loss"]:.3f}), '
      f'accuracy {m["accuracy"]:.3f}'
      for name, m in result['eval'].items() if 'loss' in m)
  return (f'{result["num_params"]:,} parameters, step {result["step"]}; '
          f'{evals}; {out}')


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


def _eval_sets(config, workdir: pathlib.Path) -> list[tuple[str, list[str]]]:
  sets = []
  if heldout_files(config, workdir):
    sets.append(('sumo_heldout', heldout_files(config, workdir)))
  if config.evaluate.eval_glob:
    sets.append(('womd', config.evaluate.eval_glob.split(',')))
  if not sets:
    sets.append(('data', data_files(config, workdir)))
  return sets


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
  reader = womd.ReaderConfig(
      max_num_objects=e.max_num_objects,
      max_roadgraph_points=config.data.max_roadgraph_points,
      max_traffic_lights=config.data.max_traffic_lights)
  sets = _eval_sets(config, workdir)
  first = next(womd.read_examples(sets[0][1], reader))
  mc, params, ckpt = _load_model(config, workdir, first.state,
                                 config.evaluate.checkpoint)
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
        keep=e.num_animations, on_rollouts=export if e.submission else None)
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
            'sampling': {'temperature': e.temperature, 'top_k': e.top_k,
                         'top_p': e.top_p},
            'submissions': exported,
            'sets': {k: {'aggregate': v['aggregate'],
                         'per_scenario': v['per_scenario']}
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
                    if 'log_replay' in agg else ''))
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
        pairing=c.pairing, sinkhorn=sinkhorn)
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
      meta={'checkpoint': os.path.abspath(ckpt), 'files': files})
  gap = summary['gap']
  return (f'{summary["num_scenarios"]} scenarios, {summary["num_pairs"]} '
          f'pairs; OT distance median '
          f'{summary["ot_distance"].get("median", float("nan")):.3f}, '
          f'preferred-unpreferred gap median '
          f'{gap.get("median", float("nan")):.3f}; OT/ADE rank correlation '
          f'{summary["ot_ade_spearman"]:.2f}; {out}')


STAGES: dict[str, Callable] = {
    'data': stage_data,
    'inspect': stage_inspect,
    'replay': stage_replay,
    'pretrain': stage_pretrain,
    'evaluate': stage_evaluate,
    'collect': stage_collect,
}


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs the configured stages in order, printing one line per stage."""
  _check(config)
  root = pathlib.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / 'config.json').write_text(config.to_json_best_effort(indent=1))
  start = time.perf_counter()
  for name in config.stages:
    t0 = time.perf_counter()
    message = STAGES[name](config, root)
    print(f'[{name}] {message} ({time.perf_counter() - t0:.1f} s)',
          flush=True)
  print(f'done in {time.perf_counter() - start:.1f} s; outputs in {root}')
