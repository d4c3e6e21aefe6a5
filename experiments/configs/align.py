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

  --config.align.objective.loss=sft            # SFT-bestOA
  --config.align.pairs_from=adversarial        # adversarial AFD
  --config.align.pairs_from=ade                # ADE-ranked preferences
  --config.align.pairs_from=random             # random preferences

with ``--config.align.output=align_<name>``. ``experiments/configs/
compare.py`` runs all of them and writes the results table.
"""

from experiments import sections
from experiments.configs import collect


def get_config(arg=None):
  """The alignment config (``arg='runlocal'``: a CPU-sized run)."""
  config = collect.get_config(arg)
  config.stages = ('data', 'pretrain', 'collect', 'align')
  config.collect.keep_all_rollouts = True
  # prefalign.train.align.AlignConfig's fields (its defaults; below, where
  # this job differs) with the objective (``objective``, PreferenceConfig:
  # loss cpl (DPA-OMF) | sft (SFT-bestOA) | dpo, alpha, gamma, agents,
  # conservative, beta, bc_weight) and the optimizer (OptimizerConfig)
  # nested. pairs_from: '' keeps the collected pairs, a strategy (ot | ade |
  # adversarial | random) re-pairs the same rollouts; eval_pairs_from: the
  # held-out pairs (the same for every method).
  from prefalign.train import align
  a = config.align = sections.section(
      align.AlignConfig(preference_dirs=(), init_from=''), exclude=(
          'preference_dirs', 'init_from', 'model', 'reader', 'seed',
          'realism_files', 'num_devices', 'progress',
          'optimizer.total_steps'))  # total_steps = num_steps
  # CPL's lambda on the unpreferred score: plain CPL (1) pushed both
  # likelihoods down (held-out pair accuracy 0.76 -> 0.69, KL 0.4 per token
  # in 60 steps of our SUMO run); lambda < 1 keeps the preferred one up.
  a.objective.conservative = 0.5
  a.num_steps = 2000
  a.optimizer.warmup_steps = 100
  a.log_every = 20
  a.eval_every = 200
  a.checkpoint_every = 200
  a.kl_scenarios = 8  # held-out scenarios of the KL estimate
  a.realism_scenarios = 32  # scored scenarios (0: all)
  a.realism_rollouts = 32  # rollouts each (WOSAC: 32)
  # The stage's own keys.
  a.output = 'align'  # directory under WORKDIR
  a.checkpoint = ''  # reference; empty: collect.checkpoint, else pretrain's
  a.preferences = ''  # preference dirs (comma-separated); empty: collect's
  a.realism_glob = ''  # WOMD patterns; empty: the held-out SUMO set
  if arg == 'runlocal':
    a.batch_size = 8
    a.num_steps = 4
    a.optimizer.warmup_steps = 1
    a.log_every = 2
    a.eval_every = 2
    a.checkpoint_every = 2
    a.heldout_fraction = 0.25
    a.kl_scenarios = 2
    a.kl_rollouts = 2
    a.realism_scenarios = 2
    a.realism_rollouts = 2
  return config
