"""The WOSAC realism metric and its per-step features, in JAX.

``wosac.scenario_metrics(state, rollouts, config)`` scores one scenario:
``state`` an unbatched SimulatorState (the log), ``rollouts`` a Trajectory
(R, N, 80) with rows as the state's (``rollout.to_metric_trajectory``);
it returns scalars (the meta-metric, buckets, the ten likelihoods, rates,
minADE). ``features`` holds the per-object per-step features the
preference ranking shares. Pure functions: jit them with the config static
(or closed over).
"""

from prefalign.metrics import features
from prefalign.metrics import road_edge
from prefalign.metrics import wosac
from prefalign.metrics.wosac import BUCKETS
from prefalign.metrics.wosac import CHALLENGE_2024
from prefalign.metrics.wosac import CHALLENGE_2025
from prefalign.metrics.wosac import LIKELIHOOD_NAMES
from prefalign.metrics.wosac import FeatureConfig
from prefalign.metrics.wosac import MetricConfig
from prefalign.metrics.wosac import ScenarioFeatures
from prefalign.metrics.wosac import aggregate
from prefalign.metrics.wosac import batched_metrics
from prefalign.metrics.wosac import constant_velocity_rollouts
from prefalign.metrics.wosac import get_config
from prefalign.metrics.wosac import log_rollouts
from prefalign.metrics.wosac import metrics_from_features
from prefalign.metrics.wosac import scenario_features
from prefalign.metrics.wosac import scenario_metrics

__all__ = [
    'features',
    'road_edge',
    'wosac',
    'aggregate',
    'batched_metrics',
    'BUCKETS',
    'CHALLENGE_2024',
    'CHALLENGE_2025',
    'constant_velocity_rollouts',
    'FeatureConfig',
    'get_config',
    'LIKELIHOOD_NAMES',
    'log_rollouts',
    'MetricConfig',
    'metrics_from_features',
    'scenario_features',
    'ScenarioFeatures',
    'scenario_metrics',
]
