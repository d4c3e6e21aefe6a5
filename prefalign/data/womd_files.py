"""WOMD ``Scenario`` files: paths, records parsed and checked, counts.

Reads real Waymo Open Motion Dataset files (and anything written in the same
format, such as this project's SUMO traffic) without TensorFlow:
``expand_paths`` turns files, globs and ``name@N`` shard patterns into
paths, ``read_scenarios`` yields each record's ``Scenario`` after the
structural checks of ``check_scenario`` (which do not depend on a
``ReaderConfig``), counting what it read and skipped in ``ReadStats``, and
``scenario_info`` describes one scenario. ``womd`` converts the scenarios
into padded ``SimulatorState`` pytrees and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import glob as glob_lib
import os
from typing import TYPE_CHECKING

from google.protobuf import message as pb_message
import numpy as np

from prefalign import fileio
from prefalign.data import tfrecord
from prefalign.data import womd_map
from prefalign.data.protos import scenario_pb2

if TYPE_CHECKING:
  from prefalign.data.womd import ScenarioExample

__all__ = [
    'ReadStats',
    'DataError',
    'parse_scenario',
    'check_scenario',
    'read_scenarios',
    'expand_paths',
    'scenario_info',
]

DataError = tfrecord.DataError
PathLike = str | os.PathLike


@dataclasses.dataclass
class ReadStats:
  """Counts of what a read kept and skipped.

  Attributes:
    num_read: scenarios read (and converted, where converting).
    num_skipped: bad records skipped (``skip_bad_records``).
    errors: the message of each skipped record, naming file and record.
    num_truncated: converted scenarios with tracks beyond
      ``max_num_objects``.
    num_dropped_objects: tracks left out of those scenarios.
    num_dropped_sim_agents: of which valid at the current step.
  """
  num_read: int = 0
  num_skipped: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)
  num_truncated: int = 0
  num_dropped_objects: int = 0
  num_dropped_sim_agents: int = 0

  def skip(self, err: Exception) -> None:
    self.num_skipped += 1
    self.errors.append(str(err))

  def count(self, example: ScenarioExample) -> None:
    """Adds a converted scenario's dropped tracks."""
    if example.num_dropped_objects:
      self.num_truncated += 1
      self.num_dropped_objects += example.num_dropped_objects
      self.num_dropped_sim_agents += example.num_dropped_sim_agents

  def summary(self) -> dict:
    """The counts as JSON-able numbers (the first 5 errors)."""
    return {'read': self.num_read, 'skipped': self.num_skipped,
            'errors': self.errors[:5], 'truncated': self.num_truncated,
            'dropped_objects': self.num_dropped_objects,
            'dropped_sim_agents': self.num_dropped_sim_agents}


# ---------------------------------------------------------------------------
# Parsing and checking.


def parse_scenario(data: bytes, *, path: PathLike | None = None,
                   record: int | None = None) -> scenario_pb2.Scenario:
  """Parses one record into a ``Scenario`` and checks its structure.

  Raises:
    DataError: the bytes are not a serialised Scenario, or the Scenario is
      malformed (see ``check_scenario``); the message names file and record.
  """
  scenario = scenario_pb2.Scenario()
  try:
    scenario.ParseFromString(data)
  except pb_message.DecodeError as e:
    raise DataError(f'record is not a WOMD Scenario proto ({e})', path=path,
                    record=record) from None
  check_scenario(scenario, path=path, record=record)
  return scenario


def check_scenario(scenario: scenario_pb2.Scenario, *,
                   path: PathLike | None = None,
                   record: int | None = None) -> None:
  """Structural checks that do not depend on a ReaderConfig.

  Raises:
    DataError: naming the file, record, scenario and offending track.
  """
  sid = scenario.scenario_id or None

  def fail(msg):
    raise DataError(msg, path=path, record=record, scenario_id=sid)

  num_steps = len(scenario.timestamps_seconds)
  if not scenario.scenario_id and not num_steps and not scenario.tracks:
    fail('record is not a WOMD Scenario: it has no scenario_id, no '
         'timestamps_seconds and no tracks')
  if num_steps == 0:
    fail('scenario has no timestamps_seconds')
  ts = np.asarray(scenario.timestamps_seconds, np.float64)
  if not np.all(np.isfinite(ts)):
    fail('timestamps_seconds contains NaN or infinity')
  if num_steps > 1 and np.any(np.diff(ts) <= 0):
    bad = int(np.argmax(np.diff(ts) <= 0))
    fail(f'timestamps_seconds are not strictly increasing (step {bad + 1}: '
         f'{ts[bad + 1]} after {ts[bad]})')
  if not scenario.tracks:
    fail('scenario has no tracks')
  if not 0 <= scenario.current_time_index < num_steps:
    fail(f'current_time_index {scenario.current_time_index} is outside the '
         f'{num_steps} steps')
  for i, track in enumerate(scenario.tracks):
    if len(track.states) != num_steps:
      fail(f'track {i} (id {track.id}) has {len(track.states)} states but '
           f'the scenario has {num_steps} timestamps')
  if not 0 <= scenario.sdc_track_index < len(scenario.tracks):
    fail(f'sdc_track_index {scenario.sdc_track_index} is not a track index '
         f'(the scenario has {len(scenario.tracks)} tracks)')
  for req in scenario.tracks_to_predict:
    if not 0 <= req.track_index < len(scenario.tracks):
      fail(f'tracks_to_predict names track index {req.track_index}, but the '
           f'scenario has {len(scenario.tracks)} tracks')
  if scenario.dynamic_map_states and (
      len(scenario.dynamic_map_states) != num_steps):
    fail(f'{len(scenario.dynamic_map_states)} dynamic_map_states for '
         f'{num_steps} timestamps')


# ---------------------------------------------------------------------------
# Files.


def expand_paths(patterns: PathLike | Sequence[PathLike]) -> list[str]:
  """Expands files, globs and ``name@N`` shard patterns into sorted paths.

  ``data/train.tfrecord@4`` means ``data/train.tfrecord-0000i-of-00004``.

  Raises:
    FileNotFoundError: when a pattern matches nothing (it is named).
  """
  if isinstance(patterns, (str, os.PathLike)):
    patterns = [patterns]
  out = []
  for pat in patterns:
    pat = os.fspath(pat)
    base, _, shards = pat.rpartition('@')
    if base and shards.isdigit():
      n = int(shards)
      matched = [f'{base}-{i:05d}-of-{n:05d}' for i in range(n)]
      missing = [m for m in matched if not os.path.exists(m)]
      if missing:
        raise FileNotFoundError(f'shard pattern {pat!r}: missing {missing[0]}'
                                + (f' and {len(missing) - 1} more'
                                   if len(missing) > 1 else ''))
    elif glob_lib.has_magic(pat):
      # Never a writer's temporary file (a killed run's leftover).
      matched = [m for m in fileio.glob_files(pat) if not os.path.isdir(m)]
    else:
      matched = [pat] if os.path.exists(pat) else []
    if not matched:
      raise FileNotFoundError(f'no file matches {pat!r}')
    for m in matched:
      if os.path.isdir(m):
        raise DataError(f'{m} is a directory, not a TFRecord file (give its '
                        f'files, e.g. {os.path.join(m, "*.tfrecord*")!r})')
    out.extend(matched)
  return out


def read_scenarios(
    paths: PathLike | Sequence[PathLike], *,
    skip_bad_records: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[tuple[str, int, scenario_pb2.Scenario]]:
  """Yields ``(path, record_index, Scenario)`` from WOMD TFRecord files.

  Args:
    paths: files, globs or ``name@N`` shard patterns.
    skip_bad_records: skip (and count in ``stats``) records that fail their
      checksum or are not valid Scenarios, instead of raising. Reading goes
      on after each: past a record whose payload is bad, and from the next
      valid frame after broken framing (``tfrecord.read_records``).
    stats: receives counts of read and skipped records.

  Raises:
    DataError: on the first bad record unless ``skip_bad_records``.
  """
  stats = stats if stats is not None else ReadStats()
  for path in expand_paths(paths):
    for index, data in tfrecord.read_records(
        path, skip_bad_records=skip_bad_records):
      if isinstance(data, tfrecord.RecordError):
        # Skipped exactly: a bad payload is one record; after broken framing
        # the reader has resynchronised on the next valid frame.
        stats.skip(data)
        continue
      try:
        scenario = parse_scenario(data, path=path, record=index)
      except DataError as e:
        if not skip_bad_records:
          raise
        stats.skip(e)
        continue
      stats.num_read += 1
      yield path, index, scenario


_TYPE_NAMES = {1: 'vehicle', 2: 'pedestrian', 3: 'cyclist', 4: 'other',
               0: 'unset'}


def scenario_info(scenario: scenario_pb2.Scenario) -> dict:
  """Counts describing one scenario (what ``prefalign-data info`` prints)."""
  per_type: dict[str, int] = {}
  for t in scenario.tracks:
    name = _TYPE_NAMES.get(t.object_type, str(t.object_type))
    per_type[name] = per_type.get(name, 0) + 1
  features: dict[str, int] = {}
  num_points = 0
  for f in scenario.map_features:
    kind = f.WhichOneof('feature_data') or 'empty'
    features[kind] = features.get(kind, 0) + 1
    num_points += womd_map.feature_num_points(f)
  current = scenario.current_time_index
  valid_now = sum(
      1 for t in scenario.tracks
      if len(t.states) > current and t.states[current].valid)
  return {
      'scenario_id': scenario.scenario_id,
      'num_tracks': len(scenario.tracks),
      'tracks_per_type': dict(sorted(per_type.items())),
      'num_valid_at_current': valid_now,
      'num_map_features': dict(sorted(features.items())),
      'num_roadgraph_points': num_points,
      'sdc_track_index': scenario.sdc_track_index,
      'tracks_to_predict': [r.track_index for r in scenario.tracks_to_predict],
      'objects_of_interest': list(scenario.objects_of_interest),
      'num_traffic_light_steps': sum(
          1 for d in scenario.dynamic_map_states if len(d.lane_states)),
      'num_timesteps': len(scenario.timestamps_seconds),
      'current_time_index': current,
  }
