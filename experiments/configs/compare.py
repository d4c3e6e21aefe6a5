"""DPA-OMF against its baselines, with a data-scaling sweep and an ablation.

One collection (every rollout kept) serves all methods, so they see the
same rollouts and the same data budget; each method is an alignment run in
``WORKDIR/compare/<name>``. The reference and every aligned model are then
scored with WOSAC 2025 on the held-out SUMO set (and ``eval_glob``, e.g. the
shared real WOMD scenarios), with the same sampling seeds, and
``WORKDIR/compare/results.md`` / ``results.json`` report each metric with a
95 % bootstrap CI over scenarios, the paired realism difference to the
reference, held-out pair accuracy and KL(policy || reference);
``scaling.png`` plots realism against KL for the data-scaling sweep::

  python -m experiments.main --config=experiments/configs/compare.py \\
      --workdir=runs/pretrain \\
      --config.compare.eval_glob='../shared/data/womd/real/real.tfrecord-*'

Every part resumes: finished runs and scores are read back.
"""

import ml_collections

from experiments.configs import align


def methods(**specs: tuple[str, str]) -> ml_collections.ConfigDict:
  """``name=(pairs_from, loss)`` -> the methods' sections (overrides of
  config.align: ``pairs_from`` and ``objective.loss``)."""
  return ml_collections.ConfigDict({
      name: {'pairs_from': pairs_from, 'objective': {'loss': loss}}
      for name, (pairs_from, loss) in specs.items()})


def get_config(arg=None):
  """The comparison config (``arg='runlocal'``: a CPU-sized run)."""
  config = align.get_config(arg)
  config.stages = ('data', 'pretrain', 'collect', 'compare')
  c = config.compare = ml_collections.ConfigDict()
  # The methods known: each an alignment run whose config is config.align
  # with the method's keys replaced (any key of config.align, nested
  # sections too, e.g. --config.compare.methods.afd.num_steps=100).
  c.methods = methods(
      dpa_omf=('ot', 'cpl'), sft_bestoa=('ot', 'sft'),
      afd=('adversarial', 'cpl'), ade=('ade', 'cpl'),
      random=('random', 'cpl'))
  # The methods run, in the table's order: ``main`` (the one the scaling
  # sweep and the ablation use) and the baselines, e.g.
  # --config.compare.baselines='("sft_bestoa",)'.
  c.main = 'dpa_omf'
  c.baselines = ('sft_bestoa', 'afd', 'ade', 'random')
  # Data scaling: fractions of the training scenarios (the full set is the
  # main method's run).
  c.scaling = (0.25, 0.5)
  # Feature ablation: feature sets (RankingConfig.feature_set) collected
  # again (same rollouts) and aligned with the main method, e.g.
  # ('collision', 'progress', 'comfort', 'map').
  c.ablation = ()
  c.eval_glob = ''  # more WOMD patterns to score, reported as 'womd'
  c.max_scenarios = 0  # per set (0: all)
  c.num_rollouts = 32  # rollouts per scenario (WOSAC: 32)
  c.max_num_objects = 128  # objects simulated per scenario
  if arg == 'runlocal':
    c.scaling = (0.5,)
    c.max_scenarios = 2
    c.num_rollouts = 2
    c.max_num_objects = 16
  return config
