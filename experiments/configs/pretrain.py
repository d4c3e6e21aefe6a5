"""Next-token pre-training of the motion-token model (the reference model).

Run from the repository root::

  python -m experiments.main --config=experiments/configs/pretrain.py \
      --workdir=runs/pretrain

On real WOMD shards instead of the embedded SUMO data (globs or name@N
patterns, comma-separated; each host reads its own files)::

  python -m experiments.main --config=experiments/configs/pretrain.py \
      --workdir=runs/pretrain_womd \
      --config.data.womd_glob='/data/womd/training/training.tfrecord-*' \
      --config.pretrain.eval_glob='/data/womd/validation/*'

A CPU-sized run: ``--config=experiments/configs/pretrain.py:runlocal``.
Multi-host: add ``--config.distributed=True`` (calls
``jax.distributed.initialize()``). Rerunning the same command resumes from
the last checkpoint in ``WORKDIR/pretrain/checkpoints``.

Stages: ``data`` (SUMO scenarios for training and a held-out set from
another seed) and ``pretrain`` (``prefalign.train.train_and_evaluate``;
TensorBoard events and ``metrics.jsonl`` in ``WORKDIR/pretrain``).
"""

import ml_collections

from experiments.configs import base


def get_config(arg=None):
  """The pre-training config; ``arg='runlocal'`` shrinks it to a CPU run."""
  config = base.get_config()
  config.stages = ('data', 'pretrain')
  config.data.num_scenarios = 2000  # SUMO training scenarios
  config.data.num_heldout_scenarios = 200  # SUMO held out (another seed)

  config.model = base.model_config()

  config.pretrain = ml_collections.ConfigDict()
  config.pretrain.batch_size = 16  # global; a multiple of the device count
  config.pretrain.num_steps = 20_000  # training steps
  config.pretrain.learning_rate = 1e-3  # peak AdamW learning rate
  config.pretrain.warmup_steps = 500  # linear warm-up
  config.pretrain.weight_decay = 0.01  # AdamW decoupled weight decay
  config.pretrain.grad_clip = 1.0  # global-norm clip (0: none)
  config.pretrain.shuffle_buffer = 256  # scenarios held for shuffling
  config.pretrain.log_every = 50  # steps between training logs
  config.pretrain.eval_every = 1000  # steps between evaluations
  config.pretrain.eval_batches = 16  # batches per held-out set (0: all)
  config.pretrain.checkpoint_every = 1000  # steps between checkpoints
  config.pretrain.keep_checkpoints = 3  # newest checkpoints kept
  config.pretrain.unigram_batches = 32  # batches counted for the baseline
  # More held-out WOMD files (patterns, comma-separated), e.g. the shared
  # real scenarios; evaluated as 'womd'.
  config.pretrain.eval_glob = ''
  config.pretrain.init_from = ''  # checkpoint dir of a run to start from
  config.pretrain.max_num_objects = 64  # agents per training scenario

  if arg == 'runlocal':
    config.data.num_scenarios = 64
    config.data.num_heldout_scenarios = 16
    config.data.sumo_network = 'cross'
    # The cross network's scenarios hold 6-8k road-graph points: padding
    # them to 30k would make every map computation ~4x larger.
    config.data.max_roadgraph_points = 8192
    config.pretrain.batch_size = 8
    config.pretrain.num_steps = 20
    config.pretrain.warmup_steps = 5
    config.pretrain.log_every = 5
    config.pretrain.eval_every = 10
    config.pretrain.eval_batches = 2
    config.pretrain.checkpoint_every = 10
    config.pretrain.unigram_batches = 2
    config.pretrain.max_num_objects = 16
    config.model.width = 32
    config.model.num_heads = 2
    config.model.decoder_layers = 1
    config.model.num_map_chunks = 64
  return config
