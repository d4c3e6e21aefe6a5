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
      --config.collect.strategy=ade --config.collect.output=preferences_ade
"""

import ml_collections

from experiments.configs import pretrain


def get_config(arg=None):
  """The collection config (``arg='runlocal'``: a CPU-sized run)."""
  config = pretrain.get_config(arg)
  config.stages = ('data', 'pretrain', 'collect')
  c = config.collect = ml_collections.ConfigDict()
  c.checkpoint = ''  # reference model; empty: WORKDIR/pretrain/checkpoints
  c.glob = ''  # WOMD files to collect on (comma-separated); empty: the data
  c.output = 'preferences'  # directory under WORKDIR
  c.max_scenarios = 0  # 0: every scenario
  c.max_num_objects = 128  # agents per scenario (WOSAC simulates <= 128)
  c.scenarios_per_shard = 64
  c.num_rollouts = 64  # K rollouts ranked per scenario (the paper: 64)
  c.temperature = 1.0  # sampling of the reference model
  c.top_k = 0
  c.top_p = 1.0
  # Ranking (prefalign.preference.ranking.RankingConfig).
  c.strategy = 'ot'  # ot | ade | adversarial | random
  c.feature_set = 'all'  # all | collision | progress | comfort | map | names
  c.weights = '10,5,2,1,1'  # collision, road_edge, clearance, effort, speed
  c.agents = 'sim'  # sim (all simulated agents) | evaluated (WOSAC's)
  c.aggregate = 'mean'  # over agents: mean | sum
  c.num_pairs = 16  # preferred = the 16 closest, unpreferred = 16 farthest
  c.pairing = 'rank'  # rank | random | all
  # Store every rollout's tokens (not only the paired ones) so alignment can
  # re-pair the same rollouts for the baselines (align.pairs_from).
  c.keep_all_rollouts = False
  c.agent_chunk = 16  # agents per features/OT call; 0: all at once
  # Sinkhorn (prefalign.preference.ot.RANKING_SINKHORN: the cheapest setting
  # that ranks as exact OT does; BENCHMARKS.md "Preference ranking").
  c.epsilon = 0.1  # entropic bias ~0.7 x epsilon, the same for each rollout
  c.num_iterations = 30  # cap; stops earlier once converged
  c.threshold = 1e-3  # marginal error (L1) that counts as converged
  c.anneal = 0.7  # epsilon decay per iteration from the largest cost
  c.relax = 1.8  # over-relaxation of the updates, in [1, 2)
  c.backend = 'native'  # native | ott
  if arg == 'runlocal':
    c.max_scenarios = 8
    c.num_rollouts = 16
    c.num_pairs = 4
    c.max_num_objects = 64
    c.scenarios_per_shard = 4
  return config
