"""The ``align`` stage: preference alignment of the reference model."""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

from experiments import sections
from experiments.stages import common

if TYPE_CHECKING:
  from prefalign import train


def align_config(config, workdir: pathlib.Path, section=None,
                 key: str = 'config.align') -> train.align.AlignConfig:
  """The AlignConfig of ``config.align`` (errors name the key).

  ``section`` (named ``key`` in errors) replaces ``config.align``: a
  comparison method's (``config.align`` with the method's overrides).
  """
  from prefalign.train import align
  from prefalign.train import steps
  a = config.align if section is None else section
  dirs = tuple(a.preferences.split(',')) if a.preferences else (
      str(workdir / config.collect.output),)
  realism = (tuple(a.realism_glob.split(',')) if a.realism_glob else
             tuple(common.heldout_files(config, workdir)))
  return sections.build(
      align.AlignConfig, a, key,
      ignore=('output', 'checkpoint', 'preferences', 'realism_glob'),
      preference_dirs=dirs,
      init_from=common.reference_checkpoint(config, workdir),
      model=common.model_config(config),
      optimizer=sections.build(steps.OptimizerConfig, a.optimizer,
                               f'{key}.optimizer',
                               total_steps=a.num_steps),
      reader=common.reader_config(config, config.collect.max_num_objects),
      seed=config.seed, realism_files=realism)


def check_config(config, workdir: pathlib.Path, section=None,
                 key: str = 'config.align') -> None:
  """Config errors of the align stage that need no data (``section`` and
  ``key`` as in ``align_config``)."""
  from prefalign.preference import ranking
  from prefalign.train import parallel
  ac = align_config(config, workdir, section, key)
  for name in ('pairs_from', 'eval_pairs_from'):
    if getattr(ac, name) not in ('',) + ranking.STRATEGIES:
      raise ValueError(f'{key}.{name}={getattr(ac, name)!r} is not one of '
                       f"{('',) + ranking.STRATEGIES}")
  parallel.check_batch_size(ac.batch_size, parallel.make_mesh(),
                            f'{key}.batch_size')


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
