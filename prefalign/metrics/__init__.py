"""The WOSAC realism metric and its per-step features, in JAX."""

from prefalign.metrics import features
from prefalign.metrics.wosac import aggregate
from prefalign.metrics.wosac import batched_metrics
from prefalign.metrics.wosac import CHALLENGE_2024
from prefalign.metrics.wosac import CHALLENGE_2025
from prefalign.metrics.wosac import FeatureConfig
from prefalign.metrics.wosac import get_config
from prefalign.metrics.wosac import MetricConfig
from prefalign.metrics.wosac import scenario_features
from prefalign.metrics.wosac import scenario_metrics

__all__ = [
    'features',
    'aggregate',
    'batched_metrics',
    'CHALLENGE_2024',
    'CHALLENGE_2025',
    'FeatureConfig',
    'get_config',
    'MetricConfig',
    'scenario_features',
    'scenario_metrics',
]
