"""The ``align`` stage: preference alignment of the reference model."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import TYPE_CHECKING

from experiments.stages import common
from prefalign.data import womd

if TYPE_CHECKING:
  from prefalign import train


def align_config(config, workdir: pathlib.Path, **overrides
                 ) -> train.align.AlignConfig:
  """The AlignConfig of ``config.align`` (errors name the key).

  ``overrides`` replace AlignConfig fields (the comparison's methods).
  """
  from prefalign.train import align
  from prefalign.train import steps
  a = config.align
  dirs = tuple(a.preferences.split(',')) if a.preferences else (
      str(workdir / config.collect.output),)
  realism = (tuple(a.realism_glob.split(',')) if a.realism_glob else
             tuple(common.heldout_files(config, workdir)))
  try:
    objective = steps.PreferenceConfig(
        loss=a.loss, alpha=a.alpha, gamma=a.gamma, agents=a.agents,
        conservative=a.conservative, beta=a.beta, bc_weight=a.bc_weight)
  except ValueError as e:
    raise ValueError(f'config.align: {e}') from None
  fields = dict(
      preference_dirs=dirs,
      init_from=common.reference_checkpoint(config, workdir),
      model=common.model_config(config), objective=objective,
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


def check_config(config, workdir: pathlib.Path) -> None:
  """Config errors of the align stage that need no data."""
  from prefalign.preference import ranking
  from prefalign.train import parallel
  a = config.align
  for key in ('pairs_from', 'eval_pairs_from'):
    if a[key] not in ('',) + ranking.STRATEGIES:
      raise ValueError(f'config.align.{key}={a[key]!r} is not one of '
                       f"{('',) + ranking.STRATEGIES}")
  parallel.check_batch_size(a.batch_size, parallel.make_mesh(),
                            'config.align.batch_size')
  align_config(config, workdir)  # the objective's values


def run_align(ac, out: pathlib.Path) -> dict:
  """Aligns (resuming) unless ``out/summary.json`` exists; the summary."""
  from prefalign.train import align
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
  common.write_json(path, summary)
  return summary


def run(config, workdir: pathlib.Path) -> str:
  """Preference alignment of the reference model (resumable)."""
  out = workdir / config.align.output
  if (out / 'summary.json').exists():
    return f'{out / "summary.json"} exists (skipped)'
  s = run_align(align_config(config, workdir), out)
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
