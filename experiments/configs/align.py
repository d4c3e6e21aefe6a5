"""Preference alignment of the pre-trained model (DPA-OMF).

Collects preference data with the reference model if the workdir has none
(``collect``), then aligns it with multi-agent Contrastive Preference
Learning (``prefalign.train.align``): held-out pair accuracy, preferred /
unpreferred likelihoods and KL(policy || reference) every ``eval_every``
steps, WOSAC realism of the held-out SUMO set at the end. Run in the
pre-training workdir::

  python -m experiments.main --config=experiments/configs/align.py \\
      --workdir=runs/pretrain

Baselines behind switches, on the same collected rollouts (collect with
``--config.collect.keep_all_rollouts=True``)::

  --config.align.loss=sft                      # SFT-bestOA
  --config.align.pairs_from=adversarial        # adversarial AFD
  --config.align.pairs_from=ade                # ADE-ranked preferences
  --config.align.pairs_from=random             # random preferences

with ``--config.align.output=align_<name>``. ``experiments/configs/
compare.py`` runs all of them and writes the results table.
"""

import ml_collections

from experiments.configs import collect


def get_config(arg=None):
  """The alignment config (``arg='runlocal'``: a CPU-sized run)."""
  config = collect.get_config(arg)
  config.stages = ('data', 'pretrain', 'collect', 'align')
  config.collect.keep_all_rollouts = True
  a = config.align = ml_collections.ConfigDict()
  a.output = 'align'  # directory under WORKDIR
  a.checkpoint = ''  # reference; empty: collect.checkpoint, else pretrain's
  a.preferences = ''  # preference dirs (comma-separated); empty: collect's
  # Objective (prefalign.train.steps.PreferenceConfig).
  a.loss = 'cpl'  # cpl (DPA-OMF) | sft (SFT-bestOA) | dpo
  a.alpha = 0.1  # CPL temperature on the rollout score
  a.gamma = 1.0  # discount per token
  a.agents = 'mean'  # mean | sum over a rollout's agents
  # CPL's lambda on the unpreferred score: plain CPL (1) pushed both
  # likelihoods down (held-out pair accuracy 0.76 -> 0.69, KL 0.4 per token
  # in 60 steps of our SUMO run); lambda < 1 keeps the preferred one up.
  a.conservative = 0.5
  a.beta = 0.1  # DPO's KL strength
  a.bc_weight = 0.0  # next-token loss on the log (regulariser)
  # Pairs: '' keeps the collected ones; a strategy re-pairs the same
  # rollouts (ot | ade | adversarial | random).
  a.pairs_from = ''
  a.num_pairs = 0  # 0: as collected
  a.pairing = 'rank'  # rank | random | all
  a.eval_pairs_from = 'ot'  # held-out pairs (the same for every method)
  a.heldout_fraction = 0.1  # scenarios held out (by scenario-id hash)
  a.max_scenarios = 0  # training scenarios used (0: all)
  # Optimisation.
  a.batch_size = 8  # scenarios per step; a multiple of the device count
  a.num_steps = 2000
  a.learning_rate = 1e-4
  a.warmup_steps = 100
  a.weight_decay = 0.01
  a.grad_clip = 1.0
  a.shuffle_buffer = 64
  a.log_every = 20
  a.eval_every = 200
  a.checkpoint_every = 200
  a.keep_checkpoints = 2
  # Monitoring.
  a.kl_scenarios = 8  # held-out scenarios of the KL estimate
  a.kl_rollouts = 8  # policy rollouts each
  a.realism_glob = ''  # WOMD patterns; empty: the held-out SUMO set
  a.realism_scenarios = 32  # scored scenarios (0: all)
  a.realism_rollouts = 32  # rollouts each (WOSAC: 32)
  a.realism_every = 0  # steps between scores (0: at the end only)
  if arg == 'runlocal':
    a.batch_size = 8
    a.num_steps = 4
    a.warmup_steps = 1
    a.log_every = 2
    a.eval_every = 2
    a.checkpoint_every = 2
    a.heldout_fraction = 0.25
    a.kl_scenarios = 2
    a.kl_rollouts = 2
    a.realism_scenarios = 2
    a.realism_rollouts = 2
  return config
