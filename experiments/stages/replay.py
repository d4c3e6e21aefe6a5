"""The ``replay`` stage: the log driven through the simulator's dynamics
(expert tracking, and open-loop replay of the log's actions)."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from experiments.stages import common
from prefalign import datatypes
from prefalign.data import pipeline
from prefalign.sim import dynamics
from prefalign.sim import env
from prefalign.sim import replay


def _errors(final: datatypes.SimulatorState):
  """Per-object ADE over log-valid future steps of objects valid now."""
  sim, log = final.sim_trajectory, final.log_trajectory
  now = datatypes.CURRENT_TIME_INDEX
  mask = log.valid[..., now + 1:] & log.valid[..., now:now + 1]
  err = jnp.hypot(sim.x - log.x, sim.y - log.y)[..., now + 1:]
  ade = jnp.where(mask, err, 0).sum(-1) / jnp.maximum(mask.sum(-1), 1)
  return ade, mask.any(-1)


def run(config, workdir: pathlib.Path) -> str:
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
      common.data_files(config, workdir), pipeline.PipelineConfig(
          reader=common.reader_config(config,
                                       config.data.max_num_objects),
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
    from prefalign import viz
    one = jax.tree.map(lambda a: a[0], first.state)
    final = jax.jit(lambda s: replay.rollout(s, env_config, 'expert'))(one)
    viz.animate_rollout(one, jax.device_get(final.sim_trajectory),
                        path=str(out / 'expert_replay.gif'),
                        title=first.scenario_ids[0])
  common.write_json(summary_path, summary)
  veh = summary['replay'].get('vehicle', {})
  return (f'{num} scenarios; expert tracking ADE (vehicles) '
          f'{summary["expert"].get("vehicle", {}).get("ade_mean_m", 0):.4f} m,'
          f' open-loop log-action replay ADE {veh.get("ade_mean_m", 0):.3f} m;'
          f' {summary_path}')
