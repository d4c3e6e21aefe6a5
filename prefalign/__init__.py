"""prefalign: multi-agent traffic simulation with preference alignment.

Every piece is a pure function over JAX pytrees; nothing here calls
``jax.jit``: the caller jits (pass configs static, or close over them) and
decides how to batch and shard. Map of the package:

* ``datatypes``: Waymax-shaped pytrees. ``SimulatorState`` holds
  ``log_trajectory`` / ``sim_trajectory`` (``Trajectory`` (..., N, T): N
  objects, T = 91 steps at 10 Hz, current step 10), ``object_metadata``
  (..., N), ``roadgraph_points`` (..., P) and ``log_traffic_light``
  (..., L, T). Leading axes ``...`` are batch axes.
* ``data``: WOMD ``Scenario`` protos <-> ``SimulatorState``
  (``read_examples``, ``state_from_scenario``, ``ReaderConfig`` for the
  padded sizes), batching pipelines, submission export, synthetic scenes.
* ``sim``: invertible dynamics, box / road-edge geometry, Waymax-style
  ``reset`` / ``step``, and the ``Environment`` the sampler steps.
* ``model``: the motion-token tokenizer (16 tokens of 0.5 s over the 8 s
  future) and model (``ModelConfig``, ``init``, ``log_probs``: (B, A, 16)).
* ``rollout``: ``sample_rollouts(params, state (B, ...), rng)`` ->
  ``Rollouts`` (B, R, A, ...): trajectories (B, R, A, 80), tokens and
  log-probabilities (B, R, A, 16); ``to_metric_trajectory`` makes them the
  metric's input; ``MotionLMActor`` is Waymax's actor interface.
* ``metrics``: the WOSAC metric, ``scenario_metrics(state, rollouts
  (R, N, 80), config)`` -> scalars, ``metrics.get_config('2024' | '2025')``,
  and its
  per-step ``features``.
* ``preference``: occupancy features, batched Sinkhorn OT and
  ``rank_rollouts(state, rollouts (R, N, 80), rng, config)`` -> ``Ranking``
  ((R,) distances, (P,) preferred / unpreferred indices); offline collection
  in ``preference.collection``.
* ``train``: ``TrainState``, ``losses``, the pre-training ``train_step`` and
  the preference ``preference_step(state, PreferenceBatch, rng, reference)``
  -> ``(state, metrics)``, data-parallel wrapping (``train.parallel``), the
  training and alignment jobs.
* ``evaluation``: WOSAC evaluation of a checkpoint beside log replay and
  constant velocity.

Plots (``prefalign.viz``, matplotlib), SUMO (``prefalign.data.sumo``),
the command lines (``prefalign.cli``) and the bridge to Waymax
(``prefalign.integrations.waymax``: datatypes, dynamics, environment and
actor; needs the optional Waymax install) are imported on their own.
"""

from prefalign import data
from prefalign import datatypes
from prefalign import evaluation
from prefalign import metrics
from prefalign import model
from prefalign import preference
from prefalign import rollout
from prefalign import sim
from prefalign import train
from prefalign.data.womd import ReaderConfig
from prefalign.data.womd import read_examples
from prefalign.data.womd import state_from_scenario
from prefalign.datatypes import ObjectMetadata
from prefalign.datatypes import ObjectTypeIds
from prefalign.datatypes import RoadgraphPoints
from prefalign.datatypes import SimulatorState
from prefalign.datatypes import TrafficLights
from prefalign.datatypes import Trajectory
from prefalign.metrics.wosac import scenario_metrics
from prefalign.model.motion_lm import ModelConfig
from prefalign.preference.ot import SinkhornConfig
from prefalign.preference.ranking import RankingConfig
from prefalign.preference.ranking import rank_rollouts
from prefalign.preference.ranking import rank_rollouts_jit
from prefalign.rollout import MotionLMActor
from prefalign.rollout import sample_rollouts
from prefalign.rollout import sample_rollouts_jit
from prefalign.rollout import to_metric_trajectory
from prefalign.train.state import TrainState
from prefalign.train.steps import PreferenceBatch
from prefalign.train.steps import PreferenceConfig
from prefalign.train.steps import preference_step

__version__ = '0.1.0'

__all__ = [
    # Subpackages and modules.
    'data',
    'datatypes',
    'evaluation',
    'metrics',
    'model',
    'preference',
    'rollout',
    'sim',
    'train',
    # Datatypes.
    'ObjectMetadata',
    'ObjectTypeIds',
    'RoadgraphPoints',
    'SimulatorState',
    'TrafficLights',
    'Trajectory',
    # Reading WOMD.
    'ReaderConfig',
    'read_examples',
    'state_from_scenario',
    # Model and sampler.
    'ModelConfig',
    'MotionLMActor',
    'sample_rollouts',
    'sample_rollouts_jit',
    'to_metric_trajectory',
    # WOSAC metric.
    'scenario_metrics',
    # OT ranking.
    'RankingConfig',
    'SinkhornConfig',
    'rank_rollouts',
    'rank_rollouts_jit',
    # Preference alignment.
    'PreferenceBatch',
    'PreferenceConfig',
    'TrainState',
    'preference_step',
]
