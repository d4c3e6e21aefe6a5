"""The stages of the main job, each resumable from what the workdir holds.

``run(config, workdir)`` runs ``config.stages`` in order. A stage whose output
file already exists is skipped, so rerunning the same command after an
interruption continues where it stopped; outputs are written to a temporary
name and renamed when complete, so a half-written file is never mistaken for
a finished one.

One module per stage, each with ``run(config, workdir) -> str`` (the line
printed for it): ``data``, ``inspection`` (the ``inspect`` stage), ``replay``,
``pretrain``, ``evaluate``, ``collect``, ``align``, ``compare`` and
``report``; ``common`` holds what several share (data files, readers, the
model config, checkpoints, evaluation sets). This package checks the config
before any work (``check``) and runs the stages in order under the workdir's
lock (``run``).
"""

from __future__ import annotations

from collections.abc import Callable
import json
import pathlib
import time

import ml_collections

from experiments.stages import align as align_stage
from experiments.stages import collect as collect_stage
from experiments.stages import common
from experiments.stages import compare as compare_stage
from experiments.stages import data as data_stage
from experiments.stages import evaluate as evaluate_stage
from experiments.stages import inspection as inspection_stage
from experiments.stages import pretrain as pretrain_stage
from experiments.stages import replay as replay_stage
from experiments.stages import report as report_stage
from prefalign import fileio
from prefalign.data import sumo


def check(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Stops on bad config values before any work or compilation."""
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise ValueError(f'config.stages: unknown stage(s) {unknown}; known: '
                     f'{list(STAGES)}')
  if not config.data.womd_glob and config.data.source not in common.SOURCES:
    raise ValueError(f'config.data.source={config.data.source!r} is not one '
                     f'of {common.SOURCES} (or set config.data.womd_glob)')
  if not config.data.womd_glob and config.data.source == 'sumo':
    networks = common.sumo_networks(config)
    unknown = [n for n in networks if n not in sumo.NETWORKS]
    if unknown or not networks or len(set(networks)) < len(networks):
      raise ValueError(
          f'config.data.sumo_network={config.data.sumo_network!r}: give '
          f'one or more distinct networks, comma-separated, of '
          f'{sorted(sumo.NETWORKS)}'
          + (f' ({", ".join(map(repr, unknown))} unknown)' if unknown
             else ''))
    if config.data.num_scenarios < len(networks):
      raise ValueError(
          f'config.data.num_scenarios={config.data.num_scenarios} is fewer '
          f'than the {len(networks)} networks of config.data.sumo_network')
  if config.data.extra_glob:
    if config.data.womd_glob:
      raise ValueError('config.data.extra_glob adds WOMD files to the '
                       'embedded data; with config.data.womd_glob list them '
                       'there instead')
    common.check_files(config.data.extra_glob, 'config.data.extra_glob')
  if config.data.womd_heldout_glob:
    if not config.data.womd_glob:
      raise ValueError('config.data.womd_heldout_glob needs '
                       'config.data.womd_glob (the training files)')
    common.check_files(config.data.womd_heldout_glob,
                       'config.data.womd_heldout_glob')
  if config.data.womd_glob:
    common.check_files(config.data.womd_glob, 'config.data.womd_glob')
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
    from prefalign.train import parallel
    parallel.check_batch_size(config.pretrain.batch_size, parallel.make_mesh(),
                              'config.pretrain.batch_size')
    pretrain_stage.train_config(config, pathlib.Path(workdir))
    if config.pretrain.eval_glob:
      common.check_files(config.pretrain.eval_glob, 'config.pretrain.eval_glob')
  if 'align' in config.stages or 'compare' in config.stages:
    align_stage.check_config(config, pathlib.Path(workdir))
  if 'compare' in config.stages:
    compare_stage.check_methods(config, pathlib.Path(workdir))
    compare_stage.comparison_sets(config, pathlib.Path(workdir))
  if 'evaluate' in config.stages and 'evaluate' in config:
    common.sampling_config(config.evaluate, 'config.evaluate')
    evaluate_stage.check_challenges(config.evaluate.challenges)
    common.simulator(config.evaluate.simulator, 1,
                     common.model_config(config), 'config.evaluate.simulator')
  if 'collect' in config.stages:
    collect_stage.ranking_config(config)
    common.sampling_config(config.collect, 'config.collect')
    if config.collect.glob:
      common.check_files(config.collect.glob, 'config.collect.glob')
    if not isinstance(config.collect.per_source, int) or (
        config.collect.per_source < 0):
      raise ValueError(f'config.collect.per_source='
                       f'{config.collect.per_source!r}: expected a count '
                       '>= 0 (0: every scenario of each source)')


STAGES: dict[str, Callable] = {
    'data': data_stage.run,
    'inspect': inspection_stage.run,
    'replay': replay_stage.run,
    'pretrain': pretrain_stage.run,
    'evaluate': evaluate_stage.run,
    'collect': collect_stage.run,
    'align': align_stage.run,
    'compare': compare_stage.run,
    'report': report_stage.run,
}


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs the configured stages in order, printing one line per stage."""
  check(config, workdir)
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
