"""Data: WOMD TFRecords <-> SimulatorState, and batching pipelines.

``womd`` converts WOMD ``Scenario`` protos into states (``read_examples``,
``state_from_scenario``) from the files ``womd_files`` reads and checks
(``read_scenarios``), with the map and signals of ``womd_map``;
``womd_export`` writes states back (``scenario_from_state``). ``pipeline``
batches them, ``submission`` turns rollouts into WOSAC ``ScenarioRollouts``
and checks them, ``submission_files`` writes and reads official submissions
and our rollout files, ``tfrecord`` is the TensorFlow-free record framing and
``synthetic`` builds small scenarios in code. ``sumo`` (SUMO traffic; its
parts in ``sumo_config``, ``sumo_traffic``, ``sumo_network`` and
``sumo_scenarios``) is imported on its own: ``from prefalign.data import
sumo``.
"""

from prefalign.data import pipeline
from prefalign.data import submission
from prefalign.data import submission_files
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.data import womd_export
from prefalign.data import womd_files
from prefalign.data import womd_map
from prefalign.data.submission import NUM_ROLLOUTS
from prefalign.data.submission import scenario_rollouts_from_trajectory
from prefalign.data.submission import sim_agent_mask
from prefalign.data.submission import trajectory_from_scenario_rollouts
from prefalign.data.submission import validate_scenario_rollouts
from prefalign.data.submission_files import pack_submission
from prefalign.data.submission_files import read_rollouts
from prefalign.data.submission_files import submission_shard_names
from prefalign.data.submission_files import write_rollouts
from prefalign.data.submission_files import write_submission
from prefalign.data.submission_files import write_submission_shards
from prefalign.data.tfrecord import DataError
from prefalign.data.tfrecord import RecordError
from prefalign.data.tfrecord import TFRecordWriter
from prefalign.data.tfrecord import read_records
from prefalign.data.tfrecord import write_records
from prefalign.data.womd import ReaderConfig
from prefalign.data.womd import ScenarioExample
from prefalign.data.womd import read_examples
from prefalign.data.womd import state_from_scenario
from prefalign.data.womd_export import scenario_from_state
from prefalign.data.womd_files import ReadStats
from prefalign.data.womd_files import expand_paths
from prefalign.data.womd_files import parse_scenario
from prefalign.data.womd_files import read_scenarios
from prefalign.data.womd_files import scenario_info

__all__ = [
    'pipeline',
    'submission',
    'submission_files',
    'synthetic',
    'tfrecord',
    'womd',
    'womd_export',
    'womd_files',
    'womd_map',
    'DataError',
    'RecordError',
    'read_records',
    'write_records',
    'TFRecordWriter',
    'expand_paths',
    'parse_scenario',
    'read_examples',
    'read_scenarios',
    'ReaderConfig',
    'ReadStats',
    'scenario_from_state',
    'scenario_info',
    'ScenarioExample',
    'state_from_scenario',
    'NUM_ROLLOUTS',
    'pack_submission',
    'read_rollouts',
    'scenario_rollouts_from_trajectory',
    'sim_agent_mask',
    'submission_shard_names',
    'trajectory_from_scenario_rollouts',
    'validate_scenario_rollouts',
    'write_rollouts',
    'write_submission',
    'write_submission_shards',
]
