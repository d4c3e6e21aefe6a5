"""The official WOSAC metric on a scenario file and rollouts (official venv).

Usage::

  python official_metrics.py --scenarios FILE --submission FILE
      --config 2024 [--config 2025] [--config PATH.textproto] --out FILE.jsonl
      [--dump-features FILE.npz] [--scenario-ids ID,...]

``--scenarios`` is a TFRecord of ``Scenario`` protos (framing parsed by hand).
``--submission`` is either a ``SimAgentsChallengeSubmission`` binproto or a
TFRecord of ``ScenarioRollouts`` records (detected from the framing).
``--config`` names a challenge config shipped next to the official
``metrics`` module (``2024`` = challenge_2024_config.textproto, ``2025`` =
challenge_2025_sim_agents_config.textproto, absent from 1.6.4; ``test`` = the
package's utils/sim_agents/testdata/test_config.textproto) or a textproto
path; it is parsed here with ``text_format`` because the package's own
``load_metrics_config()`` opens a cwd-relative path.

For every scenario that has rollouts: ``validate_scenario_rollouts``, then the
metric features once (``metric_features.compute_scenario_rollouts_features``),
then per config ``compute_scenario_metrics_for_features_bundle`` (1.6.5+) or
``compute_scenario_metrics_for_bundle`` fed with the same features (1.6.4,
which has no features-bundle entry point) and ``aggregate_metrics_to_buckets``.
One JSON line per (scenario, config) goes to ``--out``; see ``result_line``.
``--dump-features`` saves every log and sim ``MetricFeatures`` array as
``{scenario_id}/{log|sim}/{field}`` in an ``.npz``.

Imports only the official package, numpy and the standard library (through the
sibling ``tfrecord_io``). It never imports prefalign.
"""

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import pathlib
import resource
import sys
import time

from google.protobuf import text_format
import numpy as np
import tfrecord_io
from waymo_open_dataset.protos import scenario_pb2
from waymo_open_dataset.protos import sim_agents_metrics_pb2
from waymo_open_dataset.protos import sim_agents_submission_pb2
from waymo_open_dataset.utils.sim_agents import submission_specs
from waymo_open_dataset.wdl_limited.sim_agents_metrics import metric_features
from waymo_open_dataset.wdl_limited.sim_agents_metrics import metrics

PACKAGE = 'waymo-open-dataset-tf-2-12-0'
# Config names, relative to the folder of the official `metrics.py`.
NAMED_CONFIGS = {
    '2024': 'challenge_2024_config.textproto',
    '2025': 'challenge_2025_sim_agents_config.textproto',
    # The config of the official metrics_test.py (every weight 1.0).
    'test': '../../utils/sim_agents/testdata/test_config.textproto',
}
# 1.6.5+ has the ChallengeType API and the features-bundle entry point.
HAS_CHALLENGE_TYPE = hasattr(submission_specs, 'ChallengeType')


def package_version() -> str:
  return importlib.metadata.version(PACKAGE)


def config_path(name: str) -> pathlib.Path:
  """The textproto of a named config (next to ``metrics.py``) or a path."""
  if name in NAMED_CONFIGS:
    path = (pathlib.Path(metrics.__file__).parent /
            NAMED_CONFIGS[name]).resolve()
    if not path.exists():
      raise SystemExit(f'config {name} ({path.name}) is not shipped with '
                       f'{PACKAGE}=={package_version()}')
    return path
  return pathlib.Path(name)


def load_config(name: str
                ) -> tuple[sim_agents_metrics_pb2.SimAgentMetricsConfig, str]:
  """Parses a config; returns it and the sha256 of its text."""
  text = config_path(name).read_text(encoding='utf-8')
  config = sim_agents_metrics_pb2.SimAgentMetricsConfig()
  text_format.Parse(text, config)
  return config, hashlib.sha256(text.encode()).hexdigest()


def read_rollouts(path: str) -> list:
  """ScenarioRollouts from a TFRecord of them or a submission binproto."""
  pb2 = sim_agents_submission_pb2
  if tfrecord_io.is_tfrecord(path):
    return [pb2.ScenarioRollouts.FromString(r)
            for r in tfrecord_io.records(path)]
  with open(path, 'rb') as f:
    submission = pb2.SimAgentsChallengeSubmission.FromString(f.read())
  return list(submission.scenario_rollouts)


def _challenge_args():
  return (submission_specs.ChallengeType.SIM_AGENTS,) if HAS_CHALLENGE_TYPE \
      else ()


def compute_features(scenario, rollouts):
  """Validates the rollouts and returns (log, sim) ``MetricFeatures``."""
  submission_specs.validate_scenario_rollouts(
      rollouts, scenario, *_challenge_args())
  return metric_features.compute_scenario_rollouts_features(
      scenario, rollouts, *_challenge_args())


def scenario_metrics(config, scenario, rollouts, log_features, sim_features
                     ) -> sim_agents_metrics_pb2.SimAgentMetrics:
  """Per-scenario ``SimAgentMetrics`` from precomputed features."""
  if hasattr(metrics, 'compute_scenario_metrics_for_features_bundle'):
    return metrics.compute_scenario_metrics_for_features_bundle(
        config, scenario.scenario_id, log_features, sim_features)
  # 1.6.4: the metric is computed inside `compute_scenario_metrics_for_bundle`,
  # which calls `metric_features.compute_scenario_rollouts_features`; hand it
  # the features computed once instead of recomputing them per config.
  original = metric_features.compute_scenario_rollouts_features
  metric_features.compute_scenario_rollouts_features = (
      lambda *unused_args, **unused_kwargs: (log_features, sim_features))
  try:
    return metrics.compute_scenario_metrics_for_bundle(
        config, scenario, rollouts)
  finally:
    metric_features.compute_scenario_rollouts_features = original


def features_arrays(features) -> dict[str, np.ndarray]:
  """Every field of a ``MetricFeatures`` as a numpy array."""
  return {f.name: np.asarray(getattr(features, f.name))
          for f in dataclasses.fields(features)}


def proto_fields(message) -> dict[str, object]:
  """Every field of a flat proto (set or not) as a JSON-able dict."""
  return {f.name: getattr(message, f.name)
          for f in message.DESCRIPTOR.fields}


def result_line(scenario, rollouts, config_name, config_sha, scenario_result,
                buckets, feature_seconds, metric_seconds, n_evaluated):
  """One JSON-able record for a (scenario, config) pair."""
  return {
      'scenario_id': scenario.scenario_id,
      'config': config_name,
      'config_sha256': config_sha,
      'package': PACKAGE,
      'package_version': package_version(),
      'n_rollouts': len(rollouts.joint_scenes),
      'n_sim_agents': len(rollouts.joint_scenes[0].simulated_trajectories),
      'n_evaluated': n_evaluated,
      'metrics': proto_fields(scenario_result),
      'buckets': proto_fields(buckets),
      'feature_seconds': round(feature_seconds, 3),
      'metric_seconds': round(metric_seconds, 3),
      # Peak resident memory of this process so far (kB on Linux).
      'max_rss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--scenarios', required=True,
                      help='TFRecord of Scenario protos')
  parser.add_argument('--submission', required=True,
                      help='SimAgentsChallengeSubmission binproto or TFRecord '
                      'of ScenarioRollouts')
  parser.add_argument('--config', action='append', required=True,
                      help='2024, 2025, test or a textproto path (repeatable)')
  parser.add_argument('--out', required=True, help='JSON-lines output')
  parser.add_argument('--dump-features', default=None,
                      help='.npz for the log and sim MetricFeatures arrays')
  parser.add_argument('--scenario-ids', default='',
                      help='comma-separated ids to score (default: all with '
                      'rollouts)')
  args = parser.parse_args(argv)

  configs = [(name, *load_config(name)) for name in args.config]
  by_id = {r.scenario_id: r for r in read_rollouts(args.submission)}
  keep = set(filter(None, args.scenario_ids.split(','))) or set(by_id)
  missing = keep - set(by_id)
  if missing:
    raise SystemExit(f'no rollouts for {sorted(missing)}')

  dump, done = {}, set()
  with open(args.out, 'w', encoding='utf-8') as out:
    for payload in tfrecord_io.records(args.scenarios):
      scenario = scenario_pb2.Scenario.FromString(payload)
      if scenario.scenario_id not in keep:
        continue
      rollouts = by_id[scenario.scenario_id]
      start = time.perf_counter()
      log_features, sim_features = compute_features(scenario, rollouts)
      feature_seconds = time.perf_counter() - start
      if args.dump_features:
        for prefix, features in (('log', log_features), ('sim', sim_features)):
          for name, value in features_arrays(features).items():
            dump[f'{scenario.scenario_id}/{prefix}/{name}'] = value
      for name, config, sha in configs:
        start = time.perf_counter()
        result = scenario_metrics(config, scenario, rollouts, log_features,
                                  sim_features)
        buckets = metrics.aggregate_metrics_to_buckets(config, result)
        line = result_line(scenario, rollouts, name, sha, result, buckets,
                           feature_seconds, time.perf_counter() - start,
                           int(np.asarray(log_features.object_id).size))
        out.write(json.dumps(line) + '\n')
        out.flush()
      done.add(scenario.scenario_id)
      print(f'{scenario.scenario_id}: features {feature_seconds:.1f} s',
            file=sys.stderr, flush=True)
  if keep - done:
    raise SystemExit(f'scenarios not found in {args.scenarios}: '
                     f'{sorted(keep - done)}')
  if args.dump_features:
    np.savez_compressed(args.dump_features, **dump)
  return 0


if __name__ == '__main__':
  sys.exit(main())
