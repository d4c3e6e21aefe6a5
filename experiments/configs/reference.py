"""The reference model worth aligning: varied data, a longer pre-training.

The demo pre-trains for two minutes on one SUMO intersection. Its rollouts
collide and leave the road late in the horizon (compounding error), the
map barely changes them, and parked cars drive off (BENCHMARKS.md "Where
the reference's collisions and off-road driving come from"). This config
trains the same ~1M-parameter model on SUMO traffic from six real networks
(urban junctions with pedestrians and cyclists, city streets, motorways)
and the shared real WOMD training scenarios: about 75 minutes of
training on an idle 2-core CPU, within its 2-hour budget (WOSAC 2025
realism 0.653 on held-out real scenarios, against the demo's 0.530)::

  python -m experiments.main --config=experiments/configs/reference.py \\
      --workdir=runs/reference

``arg='gpu'`` is the same job at accelerator sizes (more scenarios, rows
and steps; an hour or less on one H100/H200 by BENCHMARKS.md "The paper's
experiment on one accelerator"). Rerunning the command resumes from the
last checkpoint. Evaluate the result on held-out real scenarios with
``benchmarks/reference_diagnosis.py --checkpoint
runs/reference/pretrain/checkpoints``.

``arg='compare'`` aligns this reference with DPA-OMF and each baseline at
the CPU sizes of BENCHMARKS.md "Alignment" and scores them on the held-out
SUMO scenarios and the held-out real shard (about an hour on 2 cores after
the pre-training)::

  python -m experiments.main \\
      --config=experiments/configs/reference.py:compare \\
      --workdir=runs/reference
"""

import pathlib

from experiments.configs import compare
from experiments.configs import pretrain

# The shared real WOMD training shard (its sibling, 00001, is held out for
# evaluation and never trained on), when ../shared sits beside the checkout.
REAL = pathlib.Path(__file__).resolve().parents[3] / 'shared/data/womd/real'
REAL_TRAIN = REAL / 'real.tfrecord-00000-of-00002'
REAL_HELDOUT = REAL / 'real.tfrecord-00001-of-00002'
NETWORKS = ('research_intersection', 'ingolstadt', 'braunschweig', 'berlin',
            'a10', 'bremen_motorway')


def get_config(arg=None):
  """The reference's pre-training (``arg='gpu'``: accelerator sizes;
  ``arg='compare'``: then the alignment comparison on it)."""
  if arg not in (None, 'gpu', 'compare'):
    raise ValueError(f'experiments/configs/reference.py:{arg}: expected no '
                     "argument, 'gpu' or 'compare'")
  if arg == 'compare':
    return _comparison(reference(compare.get_config()))
  return reference(pretrain.get_config(), arg)


def reference(config, arg=None):
  """``config`` with the reference's data and pre-training sections."""
  config.data.sumo_network = ','.join(NETWORKS)
  config.data.num_scenarios = 1200  # 200 per network
  config.data.num_heldout_scenarios = 60  # 10 per network, another seed
  config.data.extra_glob = str(REAL_TRAIN) if REAL_TRAIN.exists() else ''

  p = config.pretrain
  p.batch_size = 8
  p.max_num_objects = 32
  p.num_steps = 4000
  p.optimizer.learning_rate = 1e-3
  p.optimizer.warmup_steps = 200
  p.log_every = 50
  p.eval_every = 500
  p.eval_batches = 4
  p.checkpoint_every = 250
  p.unigram_batches = 8
  p.shuffle_buffer = 256
  p.data_cache = 'data/cache'  # converted once, read back by index

  if arg == 'gpu':
    config.data.num_scenarios = 48_000  # 8,000 per network
    config.data.num_heldout_scenarios = 600
    p.batch_size = 32
    p.max_num_objects = 64
    p.num_steps = 20_000
    p.optimizer.warmup_steps = 500
    p.eval_every = 1000
    p.eval_batches = 16
    p.checkpoint_every = 1000
  return config


def _comparison(config):
  """The alignment comparison's sizes (BENCHMARKS.md "Alignment")."""
  c = config.collect
  c.per_source = 18  # from each network and the real shard: 126 scenes
  c.num_rollouts = 16
  c.ranking.num_pairs = 4
  c.max_num_objects = 32
  c.scenarios_per_shard = 16
  a = config.align
  a.num_steps = 60
  a.batch_size = 4
  a.optimizer.learning_rate = 5e-5
  a.optimizer.warmup_steps = 10
  a.kl_rollouts = 4
  a.eval_every = 20
  a.checkpoint_every = 20
  k = config.compare
  # Held-out SUMO (10 per network) and the real shard never trained on.
  k.eval_glob = str(REAL_HELDOUT) if REAL_HELDOUT.exists() else ''
  k.max_scenarios = 0
  k.num_rollouts = 32
  k.max_num_objects = 128
  k.scaling = ()
  return config
