"""The ``pretrain`` stage: next-token pre-training of the reference model."""

from __future__ import annotations

import json
import pathlib

from experiments.stages import common
from prefalign.data import womd


def run(config, workdir: pathlib.Path) -> str:
  """Next-token pre-training (resumes from the workdir's checkpoints)."""
  from prefalign import train
  p = config.pretrain
  eval_sets = []
  if common.heldout_files(config, workdir):
    eval_sets.append((common.heldout_name(config),
                      tuple(common.heldout_files(config, workdir))))
  if p.eval_glob:
    eval_sets.append(('womd', tuple(p.eval_glob.split(','))))
  train_config = train.TrainConfig(
      train_files=tuple(common.data_files(config, workdir)),
      eval_sets=tuple(eval_sets), model=common.model_config(config),
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
  common.write_json(out / 'summary.json', summary)
  evals = ', '.join(
      f'{name}: loss {m["loss"]:.3f} (unigram {m["unigram_loss"]:.3f}), '
      f'accuracy {m["accuracy"]:.3f}'
      for name, m in result['eval'].items() if 'loss' in m)
  skipped = (f'{result["data"]["skipped"]} bad records skipped; '
             if result['data']['skipped'] else '')
  return (f'{result["num_params"]:,} parameters, step {result["step"]}; '
          f'{evals}; {skipped}{out}')
