"""The shared base of every config: data, replay and the model.

Stages ``data`` (scenarios in WOMD format), ``inspect`` (counts and a
picture of a scenario) and ``replay`` (the scenarios driven through the
simulator's dynamics by the log: reconstruction errors and an animation)::

  python -m experiments.main --config=experiments/configs/base.py \
      --workdir=runs/data

Real WOMD files instead of the embedded SUMO data::

  --config.data.womd_glob='../shared/data/womd/real/real.tfrecord-*'

The other configs (``pretrain``, ``evaluate``, ``collect``, ``align``,
``compare``, ``demo``) build on this one.
"""

import ml_collections

from experiments import sections


def model_config() -> ml_collections.ConfigDict:
  """The motion-token model (``prefalign.model.ModelConfig``; ~1M params).

  Its keys are ModelConfig's fields with its defaults, the nested ``scene``
  (``SceneConfig``: map chunks kept, points per chunk) and ``tokenizer``
  (``TokenizerConfig``: the (a_lon, a_lat) grid held for ``steps_per_token``
  10 Hz steps) included, e.g. ``--config.model.scene.num_map_chunks=64``.
  """
  from prefalign import model
  return sections.section(model.ModelConfig())


def get_config(arg=None):
  """The data stages' config; ``arg='runlocal'`` shrinks it further."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # root of every random choice of the job
  config.stages = ('data', 'inspect', 'replay')  # which stages, in order
  config.distributed = False  # jax.distributed.initialize() (multi-host)
  # A folder for compiled programs, so that a rerun or a resumed job loads
  # them instead of compiling ('': none; prefalign.compilation_cache).
  config.compilation_cache = ''
  # Explicit multi-process launch (else found from SLURM / Open MPI / TPU pod
  # environments): host:port of process 0, number of processes, this one's id.
  config.coordinator_address = ''
  config.num_processes = 0
  config.process_id = -1

  config.data = ml_collections.ConfigDict()
  # Embedded default: SUMO traffic on a real road network, written as WOMD
  # scenarios ('sumo'); 'synthetic' is a procedural straight road.
  config.data.source = 'sumo'
  config.data.num_scenarios = 64  # scenarios to generate
  # Generated held-out scenarios (another seed; 0: none).
  config.data.num_heldout_scenarios = 0
  # prefalign-data sumo --list names the networks; several, comma-separated,
  # share num_scenarios (and the held-out ones) evenly.
  config.data.sumo_network = 'research_intersection'
  config.data.sumo_radius = 60.0  # objects within this of the ego (m)
  # Real WOMD TFRecords (globs or name@N shard patterns; comma-separated)
  # instead of generated data; empty means the embedded default.
  config.data.womd_glob = ''
  # With womd_glob: held-out WOMD files to evaluate on (e.g. validation
  # shards); the generated SUMO data has its own held-out set.
  config.data.womd_heldout_glob = ''
  # WOMD files trained on besides the embedded data (globs or name@N
  # patterns; comma-separated), e.g. real training scenarios next to SUMO's.
  config.data.extra_glob = ''
  config.data.max_num_objects = 128  # object rows per scenario
  config.data.max_roadgraph_points = 30_000  # road-graph points per scenario
  config.data.max_traffic_lights = 32  # controlled lanes per scenario
  config.data.skip_bad_records = False  # skip and count, instead of stopping

  config.replay = ml_collections.ConfigDict()
  config.replay.batch_size = 8  # scenarios per jitted call
  # |a_lon|, |a_lat| bound of the expert (m/s^2); 0 means unbounded.
  config.replay.accel_bound = 0.0
  config.replay.animate = True  # write a GIF of the first scenario

  if arg == 'runlocal':
    config.data.num_scenarios = 4
    config.data.sumo_network = 'cross'
    config.replay.animate = False
  return config
