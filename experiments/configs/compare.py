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


def get_config(arg=None):
  """The comparison config (``arg='runlocal'``: a CPU-sized run)."""
  config = align.get_config(arg)
  config.stages = ('data', 'pretrain', 'collect', 'compare')
  c = config.compare = ml_collections.ConfigDict()
  # name:pairs_from:loss; the first is the method the sweep and ablation use.
  c.methods = ('dpa_omf:ot:cpl,sft_bestoa:ot:sft,afd:adversarial:cpl,'
               'ade:ade:cpl,random:random:cpl')
  # Data scaling: fractions of the training scenarios (the full set is the
  # first method's run).
  c.scaling = '0.25,0.5'
  # Feature ablation: feature sets collected again (same rollouts) and
  # aligned with the first method, e.g. 'collision,progress,comfort,map'.
  c.ablation = ''
  c.eval_glob = ''  # more WOMD patterns to score, reported as 'womd'
  c.max_scenarios = 0  # per set (0: all)
  c.num_rollouts = 32  # rollouts per scenario (WOSAC: 32)
  c.max_num_objects = 128  # objects simulated per scenario
  if arg == 'runlocal':
    c.scaling = '0.5'
    c.max_scenarios = 2
    c.num_rollouts = 2
    c.max_num_objects = 16
  return config
