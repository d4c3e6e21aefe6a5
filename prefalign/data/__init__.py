"""Data: WOMD TFRecords <-> SimulatorState, and batching pipelines."""

from prefalign.data.tfrecord import DataError
from prefalign.data.tfrecord import read_records
from prefalign.data.tfrecord import RecordError
from prefalign.data.tfrecord import TFRecordWriter
from prefalign.data.tfrecord import write_records
from prefalign.data.womd import expand_paths
from prefalign.data.womd import parse_scenario
from prefalign.data.womd import read_examples
from prefalign.data.womd import read_scenarios
from prefalign.data.womd import ReaderConfig
from prefalign.data.womd import ReadStats
from prefalign.data.womd import scenario_from_state
from prefalign.data.womd import scenario_info
from prefalign.data.womd import ScenarioExample
from prefalign.data.womd import state_from_scenario

__all__ = [
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
]
