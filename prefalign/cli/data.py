"""``prefalign-data``: inspect WOMD-format scenario files.

Usage::

  prefalign-data info FILE [FILE ...] [--skip-bad-records]
  prefalign-data plot FILE --out scenario.png [--scenario-id ID]
  prefalign-data sumo --network NAME --num-scenarios N --out DIR [--seed S]
  prefalign-data sumo --list

``info`` prints one JSON object per scenario (its id, track and map-feature
counts, road-graph points, SDC, tracks_to_predict, steps with signal states)
and, on stderr, a summary line. Bad records stop the command with a message
naming the file and record, or are skipped and counted with
``--skip-bad-records``.

``sumo`` simulates traffic on a real road network shipped with SUMO and
writes WOMD-format scenarios (``prefalign.data.sumo``): sharded TFRecords and
``manifest.json`` in DIR. ``--list`` names the networks.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import sys
import time

from prefalign import fileio
from prefalign.data import womd


def _info(args: argparse.Namespace) -> int:
  stats = womd.ReadStats()
  start = time.perf_counter()
  for path, index, scenario in womd.read_scenarios(
      args.files, skip_bad_records=args.skip_bad_records, stats=stats):
    info = {'file': path, 'record': index, **womd.scenario_info(scenario)}
    print(json.dumps(info), flush=True)
  elapsed = time.perf_counter() - start
  print(f'{stats.num_read} scenarios read, {stats.num_skipped} bad records '
        f'skipped, in {elapsed:.2f} s', file=sys.stderr)
  for err in stats.errors:
    print(f'skipped: {err}', file=sys.stderr)
  return 0


def _plot(args: argparse.Namespace) -> int:
  from prefalign import viz
  config = womd.ReaderConfig(max_num_objects=None, max_roadgraph_points=None,
                             max_traffic_lights=None)
  for example in womd.read_examples(args.file, config):
    if args.scenario_id in (None, example.scenario_id):
      viz.plot_scenario(example.state, path=args.out,
                        title=example.scenario_id)
      print(f'wrote {args.out} ({example.scenario_id})')
      return 0
  print(f'no scenario {args.scenario_id!r} in {args.file}', file=sys.stderr)
  return 1


def _sumo(args: argparse.Namespace) -> int:
  from prefalign.data import sumo
  if args.list:
    for name, net in sumo.NETWORKS.items():
      print(f'{name:24s} {net.description}')
    return 0
  if not args.out or not args.network:
    print('prefalign-data sumo: --network and --out are required (or '
          '--list)', file=sys.stderr)
    return 2
  cfg = sumo.SumoConfig(network=args.network,
                        num_scenarios=args.num_scenarios, seed=args.seed,
                        radius=args.radius)
  bar = None

  def progress(done, _):
    nonlocal bar
    try:
      import tqdm
    except ImportError:
      return
    if bar is None:  # made at the first scenario: errors come before it
      bar = tqdm.tqdm(total=args.num_scenarios, unit='scenario',
                      desc=f'SUMO {args.network}')
    bar.update(done - bar.n)

  try:
    manifest = sumo.generate(cfg, args.out, progress=progress)
  except sumo.SumoError as e:
    print(f'prefalign-data sumo: error: {e}', file=sys.stderr)
    return 2
  finally:
    if bar is not None:
      bar.close()
  print(json.dumps({k: manifest[k] for k in (
      'network', 'seed', 'num_scenarios', 'counts', 'files',
      'total_seconds')}))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='prefalign-data', description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  info = sub.add_parser('info', help='one JSON line of counts per scenario')
  info.add_argument('files', nargs='+', help='TFRecord files, globs or @N')
  info.add_argument('--skip-bad-records', action='store_true',
                    help='skip and count bad records instead of stopping')
  info.set_defaults(run=_info)
  plot = sub.add_parser('plot', help='draw one scenario to a PNG')
  plot.add_argument('file')
  plot.add_argument('--out', required=True)
  plot.add_argument('--scenario-id', default=None,
                    help='which scenario (default: the first)')
  plot.set_defaults(run=_plot)
  gen = sub.add_parser('sumo', help='generate scenarios with SUMO')
  gen.add_argument('--network', default=None,
                   help='a network name (see --list)')
  gen.add_argument('--num-scenarios', type=int, default=64)
  gen.add_argument('--out', default=None, help='output folder')
  gen.add_argument('--seed', type=int, default=0)
  gen.add_argument('--radius', type=float, default=60.0,
                   help='keep objects within this distance of the ego (m)')
  gen.add_argument('--list', action='store_true',
                   help='list the networks and exit')
  gen.set_defaults(run=_sumo)
  args = parser.parse_args(argv)
  try:
    return args.run(args)
  except (womd.DataError, fileio.LockedError) as e:
    print(f'prefalign-data: error: {e}', file=sys.stderr)
    return 2
  except OSError as e:  # missing files, a full or read-only disk, ...
    print(f'prefalign-data: error: {fileio.describe_os_error(e)}',
          file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
