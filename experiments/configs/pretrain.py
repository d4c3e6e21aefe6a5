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

from experiments import sections
from experiments.configs import base


def get_config(arg=None):
  """The pre-training config; ``arg='runlocal'`` shrinks it to a CPU run."""
  config = base.get_config()
  config.stages = ('data', 'pretrain')
  config.data.num_scenarios = 2000  # SUMO training scenarios
  config.data.num_heldout_scenarios = 200  # SUMO held out (another seed)

  config.model = base.model_config()

  # prefalign.train.TrainConfig's fields (its defaults; below, where this
  # job differs), the optimizer (OptimizerConfig) nested; the data, model
  # and seed come from their own sections.
  from prefalign import train
  p = config.pretrain = sections.section(
      train.TrainConfig(train_files=()), exclude=(
          'train_files', 'eval_sets', 'model', 'reader', 'seed',
          'num_devices', 'progress', 'skip_bad_records',
          'optimizer.total_steps'))  # total_steps = num_steps
  p.num_steps = 20_000  # training steps
  p.optimizer.warmup_steps = 500  # linear warm-up of the AdamW peak rate
  p.eval_batches = 16  # batches per held-out set (0: all)
  p.unigram_batches = 32  # batches counted for the baseline
  # The stage's own keys. More held-out WOMD files (patterns,
  # comma-separated), e.g. the shared real scenarios; evaluated as 'womd'.
  p.eval_glob = ''
  p.max_num_objects = 64  # agents per training scenario
  # Convert the training files once into fixed-shape arrays in this folder
  # (relative to the workdir) and read batches from them: an accelerator
  # step is faster than parsing a batch ('': parse as the loop streams).
  p.data_cache = ''

  if arg == 'runlocal':
    config.data.num_scenarios = 64
    config.data.num_heldout_scenarios = 16
    config.data.sumo_network = 'cross'
    # The cross network's scenarios hold 6-8k road-graph points: padding
    # them to 30k would make every map computation ~4x larger.
    config.data.max_roadgraph_points = 8192
    p.batch_size = 8
    p.num_steps = 20
    p.optimizer.warmup_steps = 5
    p.log_every = 5
    p.eval_every = 10
    p.eval_batches = 2
    p.checkpoint_every = 10
    p.unigram_batches = 2
    p.max_num_objects = 16
    config.model.width = 32
    config.model.num_heads = 2
    config.model.decoder_layers = 1
    config.model.scene.num_map_chunks = 64
  return config
