"""What several stages share: the config's data files and readers, the
model config, checkpoints, evaluation sets and the stage log."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

from experiments import sections
from prefalign import fileio
from prefalign import model as model_lib
from prefalign import rollout
from prefalign.data import sumo
from prefalign.data import womd

# The embedded default's sources (config.data.source).
SOURCES = ('sumo', 'synthetic')


def sampling_config(section, key: str) -> rollout.SamplingConfig:
  """The SamplingConfig of a stage's ``sampling`` section (errors name
  it)."""
  return sections.build(rollout.SamplingConfig, section.sampling,
                        f'{key}.sampling')


def check_files(patterns: str, key: str) -> None:
  """Comma-separated WOMD patterns must match files (errors name the key)."""
  try:
    womd.expand_paths(patterns.split(','))
  except FileNotFoundError as e:
    raise ValueError(f'{key}: {e}') from None


def reader_config(config, max_num_objects: int | None,
                  **fields) -> womd.ReaderConfig:
  """The ReaderConfig of ``config.data``'s map and signal sizes with a
  stage's object rows (and other ReaderConfig ``fields``)."""
  return womd.ReaderConfig(
      max_num_objects=max_num_objects,
      max_roadgraph_points=config.data.max_roadgraph_points,
      max_traffic_lights=config.data.max_traffic_lights, **fields)


def write_json(path: pathlib.Path, obj) -> None:
  fileio.atomic_write_text(path, json.dumps(obj, indent=1) + '\n')


def data_files(config, workdir: pathlib.Path) -> list[str]:
  """The training files: the WOMD files, or the embedded data's files and
  ``config.data.extra_glob``'s."""
  if config.data.womd_glob:
    return womd.expand_paths(config.data.womd_glob.split(','))
  extra = (womd.expand_paths(config.data.extra_glob.split(','))
           if config.data.extra_glob else [])
  if config.data.source == 'sumo':
    return [str(folder / f'{network}.tfrecord-*')
            for network, folder, _ in sumo_parts(config, workdir)] + extra
  return [str(workdir / 'data' / 'synthetic.tfrecord')] + extra


def sumo_networks(config) -> list[str]:
  """``config.data.sumo_network``: one network or several, comma-separated."""
  return [n.strip() for n in config.data.sumo_network.split(',') if n.strip()]


def sumo_parts(config, workdir: pathlib.Path, heldout: bool = False
               ) -> list[tuple[str, pathlib.Path, sumo.SumoConfig]]:
  """(network, folder, SumoConfig) of each network's generated scenarios.

  The scenarios are shared out evenly between the networks (the first ones
  take the remainder; a network left with none is not listed). One network
  writes to ``data/sumo`` (or ``data/sumo_heldout``), several to a folder
  each below it.
  """
  networks = sumo_networks(config)
  total = (config.data.num_heldout_scenarios if heldout else
           config.data.num_scenarios)
  root = workdir / 'data' / ('sumo_heldout' if heldout else 'sumo')
  parts = []
  for i, network in enumerate(networks):
    count = total // len(networks) + (i < total % len(networks))
    if not count:
      continue
    parts.append((network, root if len(networks) == 1 else root / network,
                  sumo.SumoConfig(
                      network=network, num_scenarios=count,
                      # Another seed: other traffic demand, other egos.
                      seed=config.seed + (1_000_003 if heldout else 0),
                      radius=config.data.sumo_radius)))
  return parts


def num_heldout(config) -> int:
  return config.data.num_heldout_scenarios


def heldout_files(config, workdir: pathlib.Path) -> list[str]:
  """The held-out scenarios: generated SUMO ones, or
  ``config.data.womd_heldout_glob`` with WOMD (none for synthetic)."""
  if config.data.womd_glob:
    glob = config.data.womd_heldout_glob
    return womd.expand_paths(glob.split(',')) if glob else []
  if config.data.source != 'sumo' or not num_heldout(config):
    return []
  return [str(folder / f'{network}.tfrecord-*')
          for network, folder, _ in sumo_parts(config, workdir, True)]


def heldout_name(config) -> str:
  """The held-out set's name in tables and metrics."""
  return 'womd_heldout' if config.data.womd_glob else 'sumo_heldout'


def model_config(config) -> model_lib.ModelConfig:
  """The frozen ModelConfig of ``config.model``."""
  return sections.build(model_lib.ModelConfig, config.model, 'config.model')


def load_model(config, workdir: pathlib.Path, sample_state,
                checkpoint_dir: str = ''):
  """The model config and the parameters of a checkpoint directory.

  ``checkpoint_dir`` empty: the pre-training run's (WORKDIR/pretrain).
  """
  from prefalign.model import motion_lm
  from prefalign.train import checkpoint
  from prefalign.train import steps
  mc = model_config(config)
  batch = jax.tree.map(lambda a: np.asarray(a)[None], sample_state)
  # Shapes only: nothing is tokenized or initialised.
  like = jax.eval_shape(lambda b: motion_lm.init(
      jax.random.key(0), mc, *steps.model_inputs(b, mc)), batch)
  path = checkpoint_dir or str(workdir / 'pretrain' / 'checkpoints')
  return mc, checkpoint.load_params(path, like), path


def eval_sets(config, workdir: pathlib.Path,
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


def simulator(name: str, num_objects: int, model_config, key: str):
  """The sampler's environment called ``name`` at config ``key``."""
  if name == 'prefalign':
    return None
  if name == 'waymax':
    try:
      from prefalign.integrations import waymax as wx
    except ImportError as e:
      raise ValueError(f'{key}=waymax: {e}') from e
    # WaymaxEnvironment takes its dynamics from AccelerationDynamics.
    return wx.WaymaxEnvironment(wx.make_environment(
        num_objects, dynamics_model=wx.AccelerationDynamics(
            model_config.tokenizer.dynamics)))
  raise ValueError(f'{key}={name!r}: expected prefalign or waymax.')


def read_example(patterns: list[str], index: int, reader: womd.ReaderConfig,
                  key: str) -> womd.ScenarioExample:
  """The ``index``-th scenario of some files (errors name the config key)."""
  count = 0
  for count, ex in enumerate(womd.read_examples(patterns, reader), 1):
    if count == index + 1:
      return ex
  raise ValueError(f'{key}={index}: the files {patterns} hold only {count} '
                   'scenario(s)')


def reference_checkpoint(config, workdir: pathlib.Path) -> str:
  return (config.align.checkpoint or config.collect.checkpoint or
          str(workdir / 'pretrain' / 'checkpoints'))


def final_params(config, workdir, sample_state, directory: pathlib.Path):
  return load_model(config, workdir, sample_state, str(directory))[1]


def stage_log(workdir: pathlib.Path) -> dict[str, dict]:
  """The last run of each stage that did work (WORKDIR/stages.jsonl)."""
  path = workdir / 'stages.jsonl'
  out: dict[str, dict] = {}
  if path.exists():
    for line in path.read_text().splitlines():
      row = json.loads(line)
      if not row['message'].endswith('(skipped)'):
        out[row['stage']] = row
  return out
