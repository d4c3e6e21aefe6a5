"""The ``pretrain`` stage: next-token pre-training of the reference model."""

from __future__ import annotations

import json
import pathlib

from experiments import sections
from experiments.stages import common


def train_config(config, workdir: pathlib.Path):
  """The TrainConfig of ``config.pretrain`` and the data sections."""
  from prefalign import train
  p = config.pretrain
  eval_sets = []
  if common.heldout_files(config, workdir):
    eval_sets.append((common.heldout_name(config),
                      tuple(common.heldout_files(config, workdir))))
  if p.eval_glob:
    eval_sets.append(('womd', tuple(p.eval_glob.split(','))))
  return sections.build(
      train.TrainConfig, p, 'config.pretrain',
      ignore=('eval_glob', 'max_num_objects'),
      train_files=tuple(common.data_files(config, workdir)),
      eval_sets=tuple(eval_sets), model=common.model_config(config),
      optimizer=sections.build(train.OptimizerConfig, p.optimizer,
                               'config.pretrain.optimizer',
                               total_steps=p.num_steps),
      reader=common.reader_config(config, p.max_num_objects),
      seed=config.seed, skip_bad_records=config.data.skip_bad_records,
      data_cache=str(workdir / p.data_cache) if p.data_cache else '')


def run(config, workdir: pathlib.Path) -> str:
  """Next-token pre-training (resumes from the workdir's checkpoints)."""
  from prefalign import train
  p = config.pretrain
  train_config_ = train_config(config, workdir)
  out = workdir / 'pretrain'
  if (out / 'summary.json').exists():
    done = json.loads((out / 'summary.json').read_text())
    if done['step'] >= p.num_steps:
      return f'{out / "summary.json"} exists (skipped)'
  result = train.train_and_evaluate(train_config_, out)
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
