"""Offline preference collection with the pre-trained reference model.

For every training scenario: sample ``num_rollouts`` closed-loop rollouts
with the frozen reference model, rank them by the OT distance between each
agent's occupancy measure and the logged demonstration's, and write the
``num_pairs`` closest vs ``num_pairs`` farthest rollouts as preference pairs
into ``WORKDIR/preferences/`` (sharded, resumable; ``summary.json`` and
``distances.png`` at the end). Run in the pre-training workdir (its
checkpoint and training scenarios are the defaults; a missing pre-training
run is trained first)::

  python -m experiments.main --config=experiments/configs/collect.py \\
      --workdir=runs/pretrain

  # real WOMD scenarios, the ADE baseline ranking:
  python -m experiments.main --config=experiments/configs/collect.py \\
      --workdir=runs/pretrain --config.collect.glob='/data/womd/train/*' \\
      --config.collect.ranking.strategy=ade \\
      --config.collect.output=preferences_ade
"""

import ml_collections

from experiments import sections
from experiments.configs import pretrain
from prefalign import preference
from prefalign import rollout


def get_config(arg=None):
  """The collection config (``arg='runlocal'``: a CPU-sized run)."""
  config = pretrain.get_config(arg)
  config.stages = ('data', 'pretrain', 'collect')
  c = config.collect = ml_collections.ConfigDict()
  c.checkpoint = ''  # reference model; empty: WORKDIR/pretrain/checkpoints
  c.glob = ''  # WOMD files to collect on (comma-separated); empty: the data
  c.output = 'preferences'  # directory under WORKDIR
  c.max_scenarios = 0  # 0: every scenario
  # The first N scenarios of each source (each file of collect.glob, or each
  # network and extra file of the embedded data; 0: all), so that a small
  # collection samples every network rather than only the first.
  c.per_source = 0
  c.max_num_objects = 128  # agents per scenario (WOSAC simulates <= 128)
  c.scenarios_per_shard = 64
  c.num_rollouts = 64  # K rollouts ranked per scenario (the paper: 64)
  # Sampling of the reference model (prefalign.rollout.SamplingConfig).
  c.sampling = sections.section(rollout.SamplingConfig())
  # Ranking and pairing (prefalign.preference.RankingConfig; its defaults):
  # strategy ot | ade | adversarial | random; feature_set all | collision |
  # progress | comfort | map | names; weights of (collision, road_edge,
  # clearance, effort, speed); agents sim | evaluated; num_pairs preferred
  # (closest) against as many unpreferred (farthest); pairing rank | random
  # | all; agent_chunk agents per features/OT call (0: all). Its Sinkhorn
  # (``sinkhorn``, prefalign.preference.SinkhornConfig) is RANKING_SINKHORN,
  # the cheapest setting that ranks as exact OT does (BENCHMARKS.md
  # "Preference ranking"). E.g. --config.collect.ranking.strategy=ade,
  # --config.collect.ranking.weights='(10, 5, 2, 1, 1)'.
  c.ranking = sections.section(preference.RankingConfig())
  # Store every rollout's tokens (not only the paired ones) so alignment can
  # re-pair the same rollouts for the baselines (align.pairs_from).
  c.keep_all_rollouts = False
  if arg == 'runlocal':
    c.max_scenarios = 8
    c.num_rollouts = 16
    c.ranking.num_pairs = 4
    c.max_num_objects = 64
    c.scenarios_per_shard = 4
  return config
