"""``prefalign-wosac``: the WOSAC realism metric on scenarios and rollouts.

Usage::

  prefalign-wosac --scenarios validation.tfrecord@150 \\
      --rollouts submission.binproto [--challenge 2024|2025] [--json]

``--rollouts`` takes official ``SimAgentsChallengeSubmission`` files (as
uploaded to the leaderboard) and this project's rollout files (TFRecords of
``ScenarioRollouts``). Every scenario that has rollouts is scored; a rollout
whose scenario id matches no scenario, and rollouts that break the
challenge's rules (32 rollouts, 80 steps, exactly the objects valid at the
current step, finite coordinates), stop the command with a message naming
the scenario and object.

Prints one line per scenario and the dataset aggregate (the mean over
scenarios, as the leaderboard reports it); with ``--json``, one JSON object
per scenario and a final ``{"aggregate": ...}`` object.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import sys
import time

import jax

from prefalign import compilation_cache
from prefalign import fileio
from prefalign.data import submission
from prefalign.data import submission_files
from prefalign.data import womd
from prefalign.metrics import wosac

_COLUMNS = ('metametric', 'kinematic', 'interactive', 'map_based',
            'min_average_displacement_error')


def _bucket(n: int, step: int) -> int:
  return max(step, -(-n // step) * step)


def num_evaluated(scenario) -> int:
  """Objects the metric scores: the SDC and the tracks_to_predict."""
  return len({scenario.sdc_track_index} |
             {r.track_index for r in scenario.tracks_to_predict})


# Static evaluated-object slots: WOSAC scores the SDC and at most 8
# tracks_to_predict, so one size serves every WOMD scenario.
EVALUATED_SLOTS = 9

# The shape classes a scenario is padded to: (objects, road-graph points,
# controlled lanes). Each scenario takes the first class that holds it
# (beyond the last, the last doubled until it does), so any number of
# scenarios compiles the metric once per class used: the 40 shared real
# scenarios (5-200 tracks, 5-38k points, 0-19 lanes) use two. Padding costs
# run time, not compilations: on 2 CPU cores a compilation takes 11-20 s and
# a padded scenario well under one (BENCHMARKS.md, "WOSAC shape classes").
SIZE_CLASSES = ((128, 32_768, 32), (256, 65_536, 64))


def evaluated_slots(num_evaluated: int) -> int:
  """Static evaluated-object slots for a scenario (``EVALUATED_SLOTS``)."""
  if num_evaluated <= EVALUATED_SLOTS:
    return EVALUATED_SLOTS
  return _bucket(num_evaluated, 8) + 1


def size_class(num_objects: int, num_points: int, num_lanes: int
               ) -> tuple[int, int, int]:
  """The first of ``SIZE_CLASSES`` that holds these counts (the last one
  doubled until it does, for larger scenarios)."""
  need = (num_objects, num_points, num_lanes)
  for sizes in SIZE_CLASSES:
    if all(n <= s for n, s in zip(need, sizes)):
      return sizes
  sizes = SIZE_CLASSES[-1]
  while not all(n <= s for n, s in zip(need, sizes)):
    sizes = tuple(2 * s for s in sizes)
  return sizes


def reader_config_for(scenario) -> womd.ReaderConfig:
  """Sizes that keep the whole scenario: its shape class.

  Nothing is dropped (the official metric sees every object and map
  feature), and the classes limit compilation to a few shapes.
  """
  info = womd.scenario_info(scenario)
  lanes = {ls.lane for d in scenario.dynamic_map_states
           for ls in d.lane_states}
  objects, points, lights = size_class(
      info['num_tracks'], info['num_roadgraph_points'], len(lanes))
  return womd.ReaderConfig(max_num_objects=objects,
                           max_roadgraph_points=points,
                           max_traffic_lights=lights)


# One program per (config, slots) and shape class.
_metric = jax.jit(wosac.scenario_metrics,
                  static_argnames=('config', 'max_evaluated'))


def evaluate(scenario_paths, rollout_paths, *, challenge: str = '2025',
             num_rollouts: int | None = submission.NUM_ROLLOUTS,
             progress=None):
  """Yields ``(scenario_id, metrics dict)`` for every scenario with rollouts.

  Raises:
    prefalign.data.DataError: on invalid rollouts, or rollouts of a scenario
      that is not among ``scenario_paths``.
  """
  config = wosac.get_config(challenge)
  rollouts = {}
  for proto in submission_files.read_rollouts(rollout_paths):
    if proto.scenario_id in rollouts:
      raise womd.DataError(f'rollouts given twice for scenario '
                           f'{proto.scenario_id!r}')
    rollouts[proto.scenario_id] = proto
  seen = set()
  for path, index, scenario in womd.read_scenarios(scenario_paths):
    proto = rollouts.get(scenario.scenario_id)
    if proto is None:
      continue
    seen.add(scenario.scenario_id)
    example = womd.state_from_scenario(scenario, reader_config_for(scenario),
                                       path=path, record=index)
    if num_rollouts is not None:
      submission.validate_scenario_rollouts(proto, example,
                                            num_rollouts=num_rollouts)
    traj = submission.trajectory_from_scenario_rollouts(proto, example)
    slots = evaluated_slots(num_evaluated(scenario))
    start = time.perf_counter()
    out = {k: float(v) for k, v in jax.device_get(_metric(
        example.state, traj, config=config, max_evaluated=slots)).items()}
    out['seconds'] = time.perf_counter() - start
    if progress:
      progress(scenario.scenario_id, out)
    yield scenario.scenario_id, out
  missing = sorted(set(rollouts) - seen)
  if missing:
    raise womd.DataError(
        f'rollouts of {len(missing)} scenario(s) match no scenario in '
        f'{list(scenario_paths)}: {missing[:5]}')


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='prefalign-wosac', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--scenarios', nargs='+', required=True,
                      help='WOMD Scenario TFRecords (files, globs, name@N)')
  parser.add_argument('--rollouts', nargs='+', required=True,
                      help='submission binprotos or rollout TFRecords')
  parser.add_argument('--challenge', default='2025', choices=('2024', '2025'),
                      help="2024: the 2024 leaderboard (time-to-collision "
                      "for every object type); 2025: the current metric")
  parser.add_argument('--num-rollouts', type=int,
                      default=submission.NUM_ROLLOUTS,
                      help='required rollouts per scenario (0: any)')
  parser.add_argument('--json', action='store_true',
                      help='JSON lines instead of a table')
  parser.add_argument('--compilation-cache', default='', metavar='DIR',
                      help='keep compiled metric programs in DIR, so that '
                      'later runs load them instead of compiling')
  args = parser.parse_args(argv)
  if args.compilation_cache:
    try:
      compilation_cache.enable(args.compilation_cache)
    except ValueError as e:
      print(f'prefalign-wosac: error: {e}', file=sys.stderr)
      return 2
  config = wosac.get_config(args.challenge)
  per_scenario = []
  if not args.json:
    print(f'{"scenario":<40} ' + ' '.join(f'{c[:11]:>11}' for c in _COLUMNS))
  try:
    for sid, m in evaluate(args.scenarios, args.rollouts,
                           challenge=args.challenge,
                           num_rollouts=args.num_rollouts or None):
      per_scenario.append(m)
      if args.json:
        print(json.dumps({'scenario_id': sid, 'challenge': args.challenge,
                          **m}), flush=True)
      else:
        print(f'{sid:<40} ' + ' '.join(f'{m[c]:>11.4f}' for c in _COLUMNS),
              flush=True)
  except womd.DataError as e:
    print(f'prefalign-wosac: error: {e}', file=sys.stderr)
    return 2
  except OSError as e:  # missing files, a full or read-only disk, ...
    print(f'prefalign-wosac: error: {fileio.describe_os_error(e)}',
          file=sys.stderr)
    return 2
  if not per_scenario:
    print('prefalign-wosac: error: no scenario has rollouts',
          file=sys.stderr)
    return 2
  agg = wosac.aggregate(per_scenario, config)
  if args.json:
    print(json.dumps({'aggregate': agg, 'challenge': args.challenge}))
  else:
    print(f'{"aggregate (" + str(len(per_scenario)) + " scenarios)":<40} ' +
          ' '.join(f'{agg[c]:>11.4f}' for c in _COLUMNS))
  return 0


if __name__ == '__main__':
  sys.exit(main())
