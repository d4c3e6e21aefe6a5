"""The main job: data to an aligned model and a report, on one machine.

Run from the repository root (``make demo`` does this in its own venv)::

  python -m experiments.main --config=experiments/configs/demo.py \\
      --workdir=runs/demo

Stages, in order, each skipped when its output is already in the workdir
(so rerunning the command after an interruption continues where it
stopped):

  data      SUMO traffic on a real road network (Braunschweig's research
            intersection), written as WOMD scenarios; a held-out set from
            another seed
  inspect   counts per scenario and a picture of the first
  replay    the log driven through the simulator's dynamics (reconstruction)
  pretrain  next-token pre-training of the motion-token model (reference)
  collect   the reference's own rollouts ranked by OT occupancy distance to
            the log: preference pairs, no human labels
  compare   DPA-OMF (multi-agent CPL on the OT pairs) and its baselines on
            the same rollouts (SFT-bestOA, adversarial AFD), WOSAC 2025
            realism of each and of the reference on the held-out scenarios
            with 95 % bootstrap CIs
  report    WORKDIR/report/index.html and report.md: the table, training
            curves, the ranking of one scenario's rollouts, before / after
            animations

Real WOMD files instead of the embedded data (training files, and held-out
files to evaluate on)::

  --config.data.womd_glob='../shared/data/womd/real/real.tfrecord-00000-of-00002'
  --config.data.womd_heldout_glob='../shared/data/womd/real/real.tfrecord-00001-of-00002'

The budget is sized for a 2-core CPU (7.4 minutes measured); ``pretrain.py``,
``collect.py``, ``align.py`` and ``compare.py`` hold the full-size settings
and document every field. ``arg='runlocal'`` is a tiny end-to-end run (a
minute or two; the tests and the Colab notebook use it).
"""

import ml_collections

from experiments.configs import compare


def get_config(arg=None):
  """The main job's config (``arg='runlocal'``: tiny, for tests/notebooks)."""
  config = compare.get_config()
  config.stages = ('data', 'inspect', 'replay', 'pretrain', 'collect',
                   'compare', 'report')
  config.data.sumo_network = 'research_intersection'
  config.data.num_scenarios = 64
  config.data.num_heldout_scenarios = 16
  config.replay.animate = True

  p = config.pretrain
  p.batch_size = 8
  p.num_steps = 120
  p.optimizer.learning_rate = 1e-3
  p.optimizer.warmup_steps = 12
  p.max_num_objects = 24
  p.shuffle_buffer = 64
  p.log_every = 10
  p.eval_every = 60
  p.eval_batches = 2
  p.checkpoint_every = 60
  p.unigram_batches = 4

  c = config.collect
  c.max_num_objects = 24
  c.max_scenarios = 40  # of the 64 (the rest only pre-train)
  c.num_rollouts = 8
  c.ranking.num_pairs = 2  # closest quarter vs farthest (paper: 16 of 64)
  c.scenarios_per_shard = 32

  a = config.align
  a.batch_size = 4
  a.num_steps = 16
  a.optimizer.learning_rate = 2e-4
  a.optimizer.warmup_steps = 4
  a.log_every = 5
  a.eval_every = 8
  a.checkpoint_every = 8
  a.heldout_fraction = 0.25  # 6 of the 40 collected scenarios (by id hash)
  a.shuffle_buffer = 32
  a.kl_scenarios = 4
  a.kl_rollouts = 4

  m = config.compare
  m.baselines = ('sft_bestoa', 'afd')
  m.scaling = ()
  m.max_scenarios = 0  # every held-out scenario
  m.num_rollouts = 16
  m.max_num_objects = 24

  r = config.report = ml_collections.ConfigDict()
  r.scenario = 0  # index of the pictured scenario in the held-out set
  r.num_rollouts = 64  # rollouts ranked in the ranking picture (the paper: 64)
  r.animation_steps = 0  # steps animated before / after (0: all 80)
  r.animation_stride = 2  # every 2nd 10 Hz step: a 5 Hz GIF, in real time
  r.animation_dpi = 75  # GIF resolution

  if arg == 'runlocal':
    _shrink_to_runlocal(config)
  return config


def _shrink_to_runlocal(config: ml_collections.ConfigDict) -> None:
  """The tiny end-to-end run: every stage's wiring, in a minute or two."""
  p, c, a = config.pretrain, config.collect, config.align
  m, r = config.compare, config.report
  config.data.sumo_network = 'cross'
  # The cross network's scenarios hold 6-8k road-graph points: padding
  # them to 30k would make every map computation ~4x larger.
  config.data.max_roadgraph_points = 8192
  config.data.num_scenarios = 8  # 6 to align on, 3 in the x0.5 run
  config.data.num_heldout_scenarios = 2
  config.replay.animate = False
  p.batch_size = 8
  p.num_steps = 4
  p.optimizer.warmup_steps = 1
  p.log_every = 2
  p.eval_every = 2
  p.eval_batches = 1
  p.checkpoint_every = 2
  p.unigram_batches = 1
  p.max_num_objects = 16
  config.model.width = 32
  config.model.num_heads = 2
  config.model.decoder_layers = 1
  config.model.scene.num_map_chunks = 64
  c.max_scenarios = 0
  c.max_num_objects = 16
  c.num_rollouts = 4
  c.ranking.num_pairs = 1
  c.scenarios_per_shard = 8
  a.batch_size = 8
  a.num_steps = 2
  a.optimizer.warmup_steps = 1
  a.log_every = 1
  a.eval_every = 1
  a.checkpoint_every = 2
  a.heldout_fraction = 0.25
  a.kl_scenarios = 1
  a.kl_rollouts = 2
  m.baselines = ('sft_bestoa',)
  m.max_scenarios = 1
  # The collection's rollout count and object rows everywhere: the
  # collection, the comparison and the report then share one compiled
  # sampler (and the report's ranking the collection's).
  m.num_rollouts = 4
  m.max_num_objects = 16
  r.num_rollouts = 4
  r.animation_steps = 20
