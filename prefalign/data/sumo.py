"""SUMO traffic on real road networks, written as WOMD ``Scenario`` protos.

The embedded default data: nothing downstream knows it from WOMD. One call of
:func:`generate` does, for a network shipped inside the ``eclipse-sumo``
package (``NETWORKS``):

1. **Demand.** ``randomTrips`` (SUMO's own tool) draws trips for cars and
   trucks, bicycles where the network lets them ride, and pedestrians where
   it has sidewalks, from vehicle-type distributions that vary speed factor,
   acceleration, deceleration, headway, gap, impatience and driver
   imperfection (``_VTYPES``), all seeded.
2. **Simulation.** ``sumo`` runs headless at 10 Hz (``--step-length 0.1``)
   with continuous lane changes (``--lanechange.duration``) and writes
   floating-car data (CSV) and every signal's state at every step.
3. **Map.** From the network (``sumolib``): lane centre lines, junction
   (internal) lanes included, as freeway / surface-street / bike lanes;
   broken white lines between neighbouring lanes of a road; road edges as
   the boundary of the union of every drivable lane and junction, oriented
   as in WOMD (drivable area on the left, so the WOSAC road-edge distance is
   negative on the road); crosswalks. Resampled every ``point_spacing`` m.
4. **Scenarios.** 9.1 s windows (91 steps at 10 Hz, current index 10) after
   a warm-up, each around an ego car (the SDC) that is present over the
   whole window; objects that come within ``radius`` of the ego; up to 8
   ``tracks_to_predict`` chosen as WOSAC's are (present over the window,
   moving or near the ego); 3-D boxes from the vehicle types; the map cropped
   to a square around the ego; signal states per controlled junction lane
   and step, with the stop point at the junction entry.

Deterministic for a seed (SUMO and randomTrips are seeded; the choices here
use ``numpy.random.default_rng(seed)``). Output: sharded TFRecords of
``Scenario`` protos and ``manifest.json`` (network, seed, SUMO version,
counts), written atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import csv
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from prefalign import datatypes
from prefalign import fileio
from prefalign.data import tfrecord
from prefalign.data.protos import map_pb2
from prefalign.data.protos import scenario_pb2

__all__ = [
    'NETWORKS', 'Network', 'SumoConfig', 'SumoError', 'generate',
    'network_map', 'simulate', 'sumo_home', 'cut_scenarios',
]

DT = datatypes.TIME_INTERVAL
NUM_STEPS = datatypes.NUM_TIMESTEPS
CURRENT = datatypes.CURRENT_TIME_INDEX
_STATE = map_pb2.TrafficSignalLaneState


class SumoError(ValueError):
  """A SUMO generation problem, with the network or setting at fault named."""


@dataclasses.dataclass(frozen=True)
class Network:
  """A road network shipped inside the ``eclipse-sumo`` package.

  Attributes:
    name: the name ``prefalign-data sumo --network`` takes.
    path: the ``.net.xml[.gz]`` file, relative to ``$SUMO_HOME/tools/game``.
    description: where it is and what it has.
    vehicle_period: seconds between car/truck insertions (randomTrips ``-p``).
    bicycle_period, pedestrian_period: the same for bicycles and pedestrians
      (0: none).
    min_trip_m: shortest straight-line trip randomTrips draws.
    egos_per_window: default of ``SumoConfig.egos_per_window`` (large
      networks hold many egos ``radius`` apart at once).
  """
  name: str
  path: str
  description: str
  vehicle_period: float
  bicycle_period: float = 0.0
  pedestrian_period: float = 0.0
  min_trip_m: float = 100.0
  egos_per_window: int = 3


NETWORKS: dict[str, Network] = {n.name: n for n in (
    Network('research_intersection', 'fokr_bs_demo/fokr_bs.net.xml.gz',
            'Braunschweig research intersection (signalised; cars, trucks, '
            'bicycles on bike lanes, pedestrians on sidewalks and '
            'crosswalks)', vehicle_period=1.0, bicycle_period=6.0,
            pedestrian_period=3.0),
    Network('ingolstadt', 'fkk_in/ingolstadt.net.xml.gz',
            'Ingolstadt junctions with traffic lights, bike lanes and '
            'sidewalks', vehicle_period=1.2, bicycle_period=8.0,
            pedestrian_period=4.0),
    Network('braunschweig', 'bs3d/bs.net.xml',
            'central Braunschweig, urban streets and a signal',
            vehicle_period=0.5, bicycle_period=0.0, pedestrian_period=2.0,
            min_trip_m=300.0, egos_per_window=6),
    Network('berlin', 'DRT/osm.net.xml',
            'south-east Berlin urban area (OpenStreetMap), 21 signals, '
            'crosswalks', vehicle_period=0.3, bicycle_period=4.0,
            pedestrian_period=1.0, min_trip_m=500.0, egos_per_window=16),
    Network('a10', 'A10KW/osm.net.xml',
            'the A10 motorway near Berlin with its ramps',
            vehicle_period=0.3, min_trip_m=1000.0, egos_per_window=10),
    Network('bremen_motorway', 'highway/highway.net.xml',
            'a motorway near Bremen', vehicle_period=0.5,
            min_trip_m=1000.0, egos_per_window=8),
    Network('cross', 'cross/cross.net.xml',
            'a small synthetic signalised crossing (tests)',
            vehicle_period=1.5, min_trip_m=50.0),
)}


# Vehicle types: (id, vClass, object type, length, width, height,
# probability within its distribution, SUMO attributes). Lengths and widths
# are the boxes written to the scenarios and the ones SUMO simulates.
_VTYPES = (
    ('car_calm', 'passenger', 1, 4.5, 1.8, 1.5, 0.30,
     'speedFactor="normc(0.95,0.05,0.8,1.1)" accel="2.2" decel="4.0" '
     'tau="1.4" minGap="3.0" impatience="0.0" sigma="0.3"'),
    ('car_normal', 'passenger', 1, 4.7, 1.85, 1.5, 0.35,
     'speedFactor="normc(1.0,0.08,0.8,1.2)" accel="2.6" decel="4.5" '
     'tau="1.0" minGap="2.5" impatience="0.3" sigma="0.5"'),
    ('car_sporty', 'passenger', 1, 4.4, 1.8, 1.4, 0.15,
     'speedFactor="normc(1.1,0.1,0.9,1.35)" accel="3.5" decel="6.0" '
     'tau="0.8" minGap="2.0" impatience="0.7" sigma="0.6" lcAssertive="1.5"'),
    ('suv', 'passenger', 1, 4.9, 1.95, 1.75, 0.10,
     'speedFactor="normc(1.0,0.08,0.8,1.2)" accel="2.4" decel="4.5" '
     'tau="1.1" minGap="2.5" impatience="0.3" sigma="0.5"'),
    ('van', 'delivery', 1, 5.9, 2.05, 2.5, 0.05,
     'speedFactor="normc(0.95,0.06,0.8,1.1)" accel="2.0" decel="4.0" '
     'tau="1.2" minGap="2.5" sigma="0.5"'),
    ('truck', 'truck', 1, 9.5, 2.5, 3.4, 0.05,
     'speedFactor="normc(0.9,0.05,0.8,1.0)" accel="1.3" decel="4.0" '
     'tau="1.5" minGap="3.0" sigma="0.4"'),
    ('bicycle', 'bicycle', 3, 1.75, 0.65, 1.7, 1.0,
     'speedFactor="normc(1.0,0.15,0.6,1.4)" maxSpeed="7.0" accel="1.2" '
     'decel="3.0" sigma="0.5"'),
    ('pedestrian', 'pedestrian', 2, 0.55, 0.6, 1.75, 1.0,
     'speedFactor="normc(1.0,0.1,0.7,1.3)"'),
)
_TYPE_INFO = {t[0]: t for t in _VTYPES}
_DRIVABLE = ('passenger', 'truck', 'bus', 'delivery', 'motorcycle')
_OBJECT_TYPE = np.array([t[2] for t in _VTYPES])  # WOMD type per vType
_MOTOR = np.array([t[1] in _DRIVABLE for t in _VTYPES])


@dataclasses.dataclass(frozen=True)
class SumoConfig:
  """How scenarios are cut from a SUMO run.

  Attributes:
    network: a key of ``NETWORKS``.
    num_scenarios: how many to write.
    seed: seeds randomTrips, SUMO and every choice here.
    radius: objects that come within this distance (m) of the ego at the
      same step are kept.
    map_margin: the map is cropped to the ego's path's bounding box grown
      by radius + margin.
    max_objects: the nearest ones are kept beyond this (WOMD: 128).
    max_tracks_to_predict: WOSAC evaluates the SDC plus these (WOMD: 8).
    warmup_s: simulated seconds before the first window (traffic builds up).
    window_stride_s: seconds between the starts of successive windows.
    egos_per_window: scenarios cut from one window, around egos at least
      ``radius`` apart (None: the network's default).
    point_spacing: road-graph sampling (m; WOMD: about 0.5).
    lane_change_duration: seconds a lane change takes (continuous lateral
      motion).
    shard_size: scenarios per TFRecord shard.
  """
  network: str = 'research_intersection'
  num_scenarios: int = 64
  seed: int = 0
  radius: float = 60.0
  map_margin: float = 30.0
  max_objects: int = 128
  max_tracks_to_predict: int = 8
  warmup_s: float = 60.0
  window_stride_s: float = 3.0
  egos_per_window: int | None = None
  point_spacing: float = 0.5
  lane_change_duration: float = 3.0
  shard_size: int = 64

  def check(self) -> Network:
    """The network, or a SumoError naming the bad setting."""
    if self.network not in NETWORKS:
      raise SumoError(f'unknown SUMO network {self.network!r}; choose one of '
                      f'{sorted(NETWORKS)}')
    for key in ('num_scenarios', 'max_objects', 'egos_per_window',
                'shard_size'):
      if getattr(self, key) is not None and getattr(self, key) < 1:
        raise SumoError(f'SumoConfig.{key} must be >= 1, got '
                        f'{getattr(self, key)}')
    for key in ('radius', 'point_spacing', 'window_stride_s'):
      if not getattr(self, key) > 0:
        raise SumoError(f'SumoConfig.{key} must be > 0, got '
                        f'{getattr(self, key)}')
    if not 0 <= self.max_tracks_to_predict <= 8:
      raise SumoError('SumoConfig.max_tracks_to_predict must be in [0, 8]')
    return NETWORKS[self.network]


def sumo_home() -> pathlib.Path:
  """``$SUMO_HOME`` of the installed ``eclipse-sumo`` package."""
  try:
    import sumo
  except ImportError as e:
    raise SumoError('SUMO is not installed: pip install eclipse-sumo sumolib '
                    '(the project\'s own install does this)') from e
  return pathlib.Path(sumo.SUMO_HOME)


def network_path(network: Network) -> pathlib.Path:
  path = sumo_home() / 'tools' / 'game' / network.path
  if not path.exists():
    raise SumoError(f'network {network.name!r}: {path} is missing from the '
                    'installed eclipse-sumo package')
  return path


def sumo_version() -> str:
  out = subprocess.run([str(sumo_home() / 'bin' / 'sumo'), '--version'],
                       capture_output=True, text=True, check=False).stdout
  return out.splitlines()[0].strip() if out else 'unknown'


# ---------------------------------------------------------------------------
# Map.


def _resample(xyz: np.ndarray, spacing: float) -> np.ndarray:
  """Points every ``spacing`` m along a polyline (ends kept)."""
  if len(xyz) < 2:
    return xyz
  seg = np.linalg.norm(np.diff(xyz[:, :2], axis=0), axis=-1)
  s = np.concatenate([[0.0], np.cumsum(seg)])
  if s[-1] <= 0:
    return xyz[:1]
  n = max(int(np.ceil(s[-1] / spacing)), 1)
  t = np.linspace(0.0, s[-1], n + 1)
  return np.stack([np.interp(t, s, xyz[:, k]) for k in range(3)], -1)


def _start_on_longest_side(ring: np.ndarray) -> np.ndarray:
  """A closed ring (first point repeated) restarted mid-way along its
  longest side, so that its ends (where the WOSAC sign looks at one segment
  only) lie on a straight stretch rather than at a corner."""
  pts = ring[:-1]
  if len(pts) < 3:
    return ring
  side = np.linalg.norm(np.roll(pts, -1, 0) - pts, axis=-1)
  i = int(np.argmax(side))
  mid = (pts[i] + pts[(i + 1) % len(pts)]) / 2
  order = np.concatenate([pts[i + 1:], pts[:i + 1]])
  return np.concatenate([[mid], order, [mid]])


def _xyz(shape) -> np.ndarray:
  a = np.asarray(shape, np.float64)
  if a.ndim != 2 or len(a) == 0:
    return np.zeros((0, 3))
  if a.shape[1] == 2:
    a = np.concatenate([a, np.zeros((len(a), 1))], -1)
  return a


@dataclasses.dataclass
class NetworkMap:
  """A network's map as WOMD-typed polylines, plus its signal links.

  Attributes:
    points: (P, 3) every polyline's resampled points, one after another.
    polyline: (P,) index of each point's polyline.
    kinds: per polyline, ``('lane', LaneType)``, ``('road_line', type)``,
      ``('road_edge', type)`` or ``('crosswalk', 0)``.
    lane_ids: SUMO lane id -> map-feature id (polyline index + 1, as for
      every feature).
    links: per signal link ``(tls id, link index, feature id of the
      controlled junction lane, stop point (3,))``.
    drivable_area_m2: area enclosed by the road edges.
  """
  points: np.ndarray
  polyline: np.ndarray
  kinds: list
  lane_ids: dict
  links: list
  drivable_area_m2: float


@functools.lru_cache(maxsize=8)
def network_map(name: str, point_spacing: float = 0.5) -> NetworkMap:
  """The map of a ``NETWORKS`` entry (cached per process)."""
  import shapely
  from shapely import geometry as sg
  import sumolib

  network = NETWORKS[name]
  net = sumolib.net.readNet(str(network_path(network)), withInternal=True,
                            withPedestrianConnections=True)
  polylines, kinds = [], []
  lane_ids = {}
  drivable = []

  def is_drivable(lane):
    return any(lane.allows(c) for c in _DRIVABLE)

  edges = sorted(net.getEdges(withInternal=True), key=lambda e: e.getID())
  for edge in edges:
    function = edge.getFunction() or 'normal'
    if function == 'walkingarea':
      continue
    for lane in edge.getLanes():
      shape = _xyz(lane.getShape3D() if hasattr(lane, 'getShape3D') else
                   lane.getShape())
      if len(shape) < 2:
        continue
      if function == 'crossing':
        poly = sg.LineString(shape[:, :2]).buffer(lane.getWidth() / 2,
                                                  cap_style='flat')
        if poly.area > 0:
          ring = np.asarray(poly.exterior.coords)[:-1]
          z = np.full((len(ring), 1), shape[:, 2].mean())
          polylines.append(np.concatenate([ring, z], -1))
          kinds.append(('crosswalk', 0))
        continue
      if is_drivable(lane):
        motorway = 'motorway' in (edge.getType() or '') or (
            edge.getSpeed() >= 25.0 and function == 'normal')
        lane_type = (map_pb2.LaneCenter.TYPE_FREEWAY if motorway else
                     map_pb2.LaneCenter.TYPE_SURFACE_STREET)
      elif lane.allows('bicycle') and not lane.allows('pedestrian'):
        lane_type = map_pb2.LaneCenter.TYPE_BIKE_LANE
      else:
        continue  # sidewalks: outside the road edges, as in WOMD
      # Roadway (bike lanes included): inside the road edges.
      drivable.append(sg.LineString(shape[:, :2]).buffer(
          lane.getWidth() / 2, cap_style='flat'))
      lane_ids[lane.getID()] = len(polylines) + 1
      polylines.append(shape)
      kinds.append(('lane', lane_type))
    # Lane markings between neighbouring drivable lanes of a road.
    if function == 'normal':
      lanes = [lane for lane in edge.getLanes() if is_drivable(lane)]
      for right, left in zip(lanes[:-1], lanes[1:]):
        a, b = _xyz(right.getShape()), _xyz(left.getShape())
        if len(a) == len(b) and len(a) >= 2 and right.getIndex() + 1 == (
            left.getIndex()):
          polylines.append((a + b) / 2)
          kinds.append(('road_line',
                        map_pb2.RoadLine.TYPE_BROKEN_SINGLE_WHITE))
  for node in net.getNodes():
    shape = node.getShape()
    if len(shape) >= 3 and any(is_drivable(lane) for e in node.getIncoming()
                               for lane in e.getLanes()):
      poly = sg.Polygon(np.asarray(shape)[:, :2])
      if poly.is_valid and poly.area > 0:
        drivable.append(poly)
  if not drivable:
    raise SumoError(f'network {name!r} has no drivable lanes')
  # Lanes of one road touch exactly; a closing by 0.5 m merges float seams
  # and the narrow gaps SUMO leaves between opposite carriageways (painted
  # medians), which would otherwise become slivers whose sharp tips give the
  # road-edge sign trouble. Tiny leftover holes are dropped.
  area = shapely.union_all(drivable).buffer(0.5, join_style='mitre').buffer(
      -0.5, join_style='mitre')
  area = shapely.make_valid(area)
  parts = [g for g in getattr(area, 'geoms', [area])
           if isinstance(g, sg.Polygon) and g.area > 1.0]
  for poly in parts:
    poly = sg.polygon.orient(poly, 1.0)  # exterior CCW, holes CW: road left
    rings = [poly.exterior] + [r for r in poly.interiors
                               if sg.Polygon(r).area > 2.0]
    for k, ring in enumerate(rings):
      xy = _start_on_longest_side(np.asarray(ring.coords))
      if len(xy) < 4:
        continue
      polylines.append(np.concatenate([xy, np.zeros((len(xy), 1))], -1))
      kinds.append(('road_edge', map_pb2.RoadEdge.TYPE_ROAD_EDGE_BOUNDARY
                    if k == 0 else map_pb2.RoadEdge.TYPE_ROAD_EDGE_MEDIAN))

  pts, which = [], []
  for i, (shape, kind) in enumerate(zip(polylines, kinds)):
    p = shape if kind[0] == 'crosswalk' else _resample(shape, point_spacing)
    pts.append(p)
    which.append(np.full(len(p), i))

  links = []
  for tls in net.getTrafficLights():
    seen = set()
    for in_lane, out_lane, index in tls.getConnections():
      if (index, in_lane.getID()) in seen:
        continue
      seen.add((index, in_lane.getID()))
      via = None
      for conn in in_lane.getOutgoing():
        if conn.getToLane() is out_lane and conn.getTLLinkIndex() == index:
          via = conn.getViaLaneID()
      target = via if via in lane_ids else out_lane.getID()
      if target not in lane_ids:
        continue
      stop = _xyz(in_lane.getShape())[-1]
      links.append((tls.getID(), int(index), lane_ids[target], stop))
  return NetworkMap(
      points=np.concatenate(pts), polyline=np.concatenate(which),
      kinds=kinds, lane_ids=lane_ids, links=links,
      drivable_area_m2=float(area.area))


# ---------------------------------------------------------------------------
# Simulation.


def _vtypes_xml() -> str:
  rows = ['<additional>', '  <vTypeDistribution id="motor">']
  for tid, vclass, _, length, width, height, prob, attrs in _VTYPES:
    if vclass in ('bicycle', 'pedestrian'):
      continue
    rows.append(f'    <vType id="{tid}" vClass="{vclass}" length="{length}" '
                f'width="{width}" height="{height}" probability="{prob}" '
                f'{attrs}/>')
  rows.append('  </vTypeDistribution>')
  for tid, vclass, _, length, width, height, _, attrs in _VTYPES:
    if vclass in ('bicycle', 'pedestrian'):
      rows.append(f'  <vType id="{tid}" vClass="{vclass}" length="{length}" '
                  f'width="{width}" height="{height}" {attrs}/>')
  rows.append('</additional>')
  return '\n'.join(rows) + '\n'


@dataclasses.dataclass
class Tracks:
  """Floating-car data of one run, as contiguous per-object tracks.

  A SUMO object that disappears (teleport) and comes back starts a new
  track. Rows are grouped by track, in step order.

  Attributes:
    start, end: (K,) first step and one past the last step of each track.
    offset: (K,) index of each track's first row.
    type_id: (K,) index into ``_VTYPES``.
    name: (K,) SUMO id of each track's object.
    x, y, z, yaw, speed: (R,) rows; x, y the box centre.
    tls: tls id -> (steps,) state strings.
    num_steps: steps simulated.
  """
  start: np.ndarray
  end: np.ndarray
  offset: np.ndarray
  type_id: np.ndarray
  name: list
  x: np.ndarray
  y: np.ndarray
  z: np.ndarray
  yaw: np.ndarray
  speed: np.ndarray
  tls: dict
  num_steps: int


def _run(cmd: Sequence[str], what: str, cwd: pathlib.Path, env: dict):
  proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True,
                        text=True, check=False)
  if proc.returncode != 0:
    tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
    raise SumoError(f'{what} failed (exit {proc.returncode}):\n{tail}')
  return proc


def simulate(network: Network, seed: int, duration_s: float,
             workdir: pathlib.Path, lane_change_duration: float = 3.0
             ) -> Tracks:
  """Demand + one headless SUMO run at 10 Hz; its tracks and signal states."""
  home = sumo_home()
  env = dict(os.environ, SUMO_HOME=str(home))
  net = network_path(network)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'vtypes.add.xml').write_text(_vtypes_xml())
  (workdir / 'tls.add.xml').write_text(
      '<additional>\n  <timedEvent type="SaveTLSStates" dest="tls.xml"/>\n'
      '</additional>\n')
  random_trips = [sys.executable, str(home / 'tools' / 'randomTrips.py'),
                  '-n', str(net), '-b', '0', '-e', f'{duration_s:.1f}',
                  '-a', 'vtypes.add.xml']
  demand = [('motor', 'v', network.vehicle_period, [
      '--edge-permission', 'passenger', '--fringe-factor', '5',
      '--min-distance', str(network.min_trip_m), '--validate',
      '--trip-attributes', 'type="motor" departLane="best" '
      'departSpeed="max"'])]
  if network.bicycle_period:
    demand.append(('bicycle', 'b', network.bicycle_period, [
        '--edge-permission', 'bicycle', '--validate',
        '--min-distance', '50', '--trip-attributes', 'type="bicycle"']))
  if network.pedestrian_period:
    demand.append(('pedestrian', 'p', network.pedestrian_period, [
        '--pedestrians', '--min-distance', '30',
        '--trip-attributes', 'type="pedestrian"']))
  route_files = []
  for k, (kind, prefix, period, extra) in enumerate(demand):
    out = f'{kind}.trips.xml'
    _run(random_trips + ['-o', out, '-p', str(period), '--prefix', prefix,
                         '--seed', str(seed * 7 + k)] + extra,
         f'randomTrips ({kind}) on network {network.name!r}', workdir, env)
    route_files.append(out)
  _run([str(home / 'bin' / 'sumo'), '-n', str(net), '-r',
        ','.join(route_files), '-a', 'vtypes.add.xml,tls.add.xml',
        '--step-length', str(DT), '-b', '0', '-e', f'{duration_s:.1f}',
        '--seed', str(seed), '--fcd-output', 'fcd.csv',
        '--summary-output', 'summary.xml',
        '--lanechange.duration', str(lane_change_duration),
        '--time-to-teleport', '120', '--ignore-route-errors', 'true',
        '--collision.action', 'warn', '--no-step-log', 'true',
        '--no-warnings', 'true', '--xml-validation', 'never'],
       f'sumo on network {network.name!r}', workdir, env)
  return _read_run(workdir, int(round(duration_s / DT)) + 1)


_SUMMARY_STEP = re.compile(rb'<step time="([^"]+)"[^>]*? running="(\d+)"')


def _check_complete(workdir: pathlib.Path) -> None:
  """Raises SumoError unless SUMO's outputs are whole.

  SUMO exits 0 even when it failed to write its outputs (a full disk), so a
  cut file would otherwise give silently shorter tracks. fcd.csv must end
  with a whole line, tls.xml (where written) and summary.xml with their
  closing tags; and the last step at which summary.xml counts running
  objects must be in fcd.csv (a cut on a line boundary).
  """
  def fail(name, why):
    raise SumoError(f'SUMO\'s output {workdir / name} is incomplete ({why});'
                    ' is the disk full?')
  fcd = workdir / 'fcd.csv'
  if not fcd.exists() or fcd.stat().st_size == 0:
    fail('fcd.csv', 'missing or empty')
  with open(fcd, 'rb') as f:
    f.seek(max(fcd.stat().st_size - 4096, 0))
    tail = f.read()
  if not tail.endswith(b'\n'):
    fail('fcd.csv', 'it ends mid-line')
  for name, closing in (('tls.xml', b'</tlsStates>'),
                        ('summary.xml', b'</summary>')):
    path = workdir / name
    if path.exists() and not path.read_bytes().rstrip().endswith(closing):
      fail(name, f'no closing {closing.decode()}')
  summary = workdir / 'summary.xml'
  if summary.exists():
    running = [float(t) for t, n in _SUMMARY_STEP.findall(
        summary.read_bytes()) if int(n) > 0]
    lines = tail.rstrip(b'\n').split(b'\n')
    last = lines[-1].split(b';')[0] if len(lines) > 1 else b''
    try:
      last_time = float(last)
    except ValueError:
      last_time = None
    if running and (last_time is None or
                    round(last_time / DT) < round(running[-1] / DT)):
      fail('fcd.csv', f'its last step is {last.decode(errors="replace")!r} '
           f'where summary.xml has objects until {running[-1]:.2f} s')


def _read_run(workdir: pathlib.Path, num_steps: int) -> Tracks:
  """Parses fcd.csv and tls.xml of a run (checked whole first)."""
  _check_complete(workdir)
  type_index = {t[0]: i for i, t in enumerate(_VTYPES)}
  per_object: dict[str, list] = {}
  with open(workdir / 'fcd.csv', newline='') as f:
    reader = csv.reader(f, delimiter=';')
    header = next(reader, None)
    need = ('timestep_time', 'vehicle_id', 'vehicle_x', 'vehicle_y',
            'vehicle_angle', 'vehicle_type', 'vehicle_speed')
    if header is None or any(n not in header for n in need):
      raise SumoError(f'{workdir / "fcd.csv"}: no header with the columns '
                      f'{", ".join(need)}')
    col = {name: i for i, name in enumerate(header)}
    ct, ci, cx, cy = (col['timestep_time'], col['vehicle_id'],
                      col['vehicle_x'], col['vehicle_y'])
    ca, cty, cs = col['vehicle_angle'], col['vehicle_type'], col[
        'vehicle_speed']
    cz = col.get('vehicle_z')
    for row in reader:
      if len(row) <= ci or not row[ci]:
        continue
      if len(row) < len(header):
        raise SumoError(f'{workdir / "fcd.csv"}, line {reader.line_num}: '
                        f'{len(row)} of {len(header)} columns (a cut '
                        'output; is the disk full?)')
      per_object.setdefault(row[ci], []).append(
          (round(float(row[ct]) / DT), float(row[cx]), float(row[cy]),
           float(row[cz]) if cz is not None and row[cz] else 0.0,
           float(row[ca]), float(row[cs]), row[cty]))
  starts, ends, offsets, types, names = [], [], [], [], []
  cols = [[] for _ in range(5)]
  total = 0
  for name in sorted(per_object):
    rows = per_object[name]
    a = np.asarray([r[:6] for r in rows], np.float64)
    vtype = rows[0][6]
    if vtype not in type_index:
      continue
    info = _TYPE_INFO[vtype]
    steps = a[:, 0].astype(np.int64)
    yaw = np.deg2rad(90.0 - a[:, 4])
    yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
    # FCD positions are the front bumper's: move to the box centre.
    x = a[:, 1] - np.cos(yaw) * info[3] / 2
    y = a[:, 2] - np.sin(yaw) * info[3] / 2
    cut = np.flatnonzero(np.diff(steps) != 1) + 1
    for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(steps)]):
      starts.append(steps[lo])
      ends.append(steps[hi - 1] + 1)
      offsets.append(total)
      types.append(type_index[vtype])
      names.append(name if lo == 0 else f'{name}#{lo}')
      total += hi - lo
      for c, v in zip(cols, (x[lo:hi], y[lo:hi], a[lo:hi, 3], yaw[lo:hi],
                             a[lo:hi, 5])):
        c.append(v)
  cat = lambda c: np.concatenate(c) if c else np.zeros(0)
  tls = {}
  pattern = re.compile(r'<tlsState time="([^"]+)" id="([^"]+)"[^>]*'
                       r'state="([^"]*)"')
  path = workdir / 'tls.xml'
  if path.exists():
    for m in pattern.finditer(path.read_text()):
      step = round(float(m.group(1)) / DT)
      tls.setdefault(m.group(2), {})[step] = m.group(3)
  timelines = {}
  for tid, by_step in tls.items():
    line, last = [], ''
    for step in range(num_steps):
      last = by_step.get(step, last)
      line.append(last)
    timelines[tid] = line
  return Tracks(
      start=np.asarray(starts, np.int64), end=np.asarray(ends, np.int64),
      offset=np.asarray(offsets, np.int64),
      type_id=np.asarray(types, np.int64), name=names,
      x=cat(cols[0]), y=cat(cols[1]), z=cat(cols[2]), yaw=cat(cols[3]),
      speed=cat(cols[4]), tls=timelines, num_steps=num_steps)


# ---------------------------------------------------------------------------
# Scenarios.

_SIGNAL = {'r': _STATE.LANE_STATE_STOP, 'R': _STATE.LANE_STATE_STOP,
           's': _STATE.LANE_STATE_STOP, 'y': _STATE.LANE_STATE_CAUTION,
           'Y': _STATE.LANE_STATE_CAUTION, 'u': _STATE.LANE_STATE_CAUTION,
           'G': _STATE.LANE_STATE_GO, 'g': _STATE.LANE_STATE_GO,
           'o': _STATE.LANE_STATE_FLASHING_CAUTION,
           'O': _STATE.LANE_STATE_UNKNOWN}


def _window(tracks: Tracks, first: int):
  """Tracks overlapping steps [first, first + 91): index (K,), rows (K, 91)."""
  steps = first + np.arange(NUM_STEPS)
  k = np.flatnonzero((tracks.start < first + NUM_STEPS) &
                     (tracks.end > first))
  valid = ((steps[None] >= tracks.start[k, None]) &
           (steps[None] < tracks.end[k, None]))
  rows = tracks.offset[k, None] + steps[None] - tracks.start[k, None]
  return k, np.where(valid, rows, 0), valid


def _choose_egos(tracks, k, rows, valid, rng, count, radius):
  """Up to ``count`` moving cars present over the window, ``radius`` apart."""
  full = valid.all(-1)
  car = _MOTOR[tracks.type_id[k]]
  xy = np.stack([tracks.x[rows], tracks.y[rows]], -1)
  travelled = np.linalg.norm(xy[:, -1] - xy[:, 0], axis=-1)
  cand = np.flatnonzero(full & car & (travelled > 5.0))
  rng.shuffle(cand)
  chosen = []
  for c in cand:
    here = xy[c, CURRENT]
    if all(np.linalg.norm(here - xy[o, CURRENT]) >= radius for o in chosen):
      chosen.append(c)
    if len(chosen) == count:
      break
  return chosen


def _scenario(cfg: SumoConfig, tracks: Tracks, netmap: NetworkMap,
              first: int, k, rows, valid, ego: int, scenario_id: str
              ) -> scenario_pb2.Scenario | None:
  """One Scenario proto around window row ``ego``."""
  x, y = tracks.x[rows], tracks.y[rows]
  # The map covers everything within radius + margin of the ego's path;
  # objects count as seen (valid) only well inside it, as a sensor's range.
  half = cfg.radius + cfg.map_margin
  box = (x[ego].min() - half, x[ego].max() + half, y[ego].min() - half,
         y[ego].max() + half)
  seen = cfg.map_margin / 2
  valid = valid & _in_box(np.stack([x, y], -1), (
      box[0] + seen, box[1] - seen, box[2] + seen, box[3] - seen))
  dist = np.hypot(x - x[ego], y - y[ego])
  near = np.where(valid & valid[ego], dist, np.inf).min(-1)
  keep = np.flatnonzero(near <= cfg.radius)
  keep = keep[np.argsort(near[keep], kind='stable')][:cfg.max_objects]
  keep = np.concatenate([[ego], keep[keep != ego]])
  if len(keep) < 2:
    return None
  # tracks_to_predict: present over the window, moving or near the SDC.
  kv = valid[keep]
  kx, ky = x[keep], y[keep]
  moved = np.hypot(kx[:, -1] - kx[:, 0], ky[:, -1] - ky[:, 0])
  d_now = np.hypot(kx[:, CURRENT] - kx[0, CURRENT],
                   ky[:, CURRENT] - ky[0, CURRENT])
  cand = [j for j in range(1, len(keep)) if kv[j].all() and
          (moved[j] > 2.0 or d_now[j] < 15.0) and d_now[j] < 40.0]
  cand.sort(key=lambda j: (moved[j] <= 2.0, d_now[j]))
  # Mostly vehicles, as in WOMD: at most two pedestrians or cyclists.
  otype = _OBJECT_TYPE[tracks.type_id[k[keep]]]
  vru = [j for j in cand if otype[j] != 1][:2]
  cand = [j for j in cand if j in vru or otype[j] == 1]
  if cfg.max_tracks_to_predict and not cand:
    return None  # WOMD scenarios always have something to predict
  s = scenario_pb2.Scenario(scenario_id=scenario_id,
                            current_time_index=CURRENT)
  s.timestamps_seconds.extend((np.arange(NUM_STEPS) * DT).round(1).tolist())
  for j, row in enumerate(keep):
    _, _, obj_type, length, width, height, _, _ = _VTYPES[
        tracks.type_id[k[row]]]
    r = rows[row]
    ok = valid[row]
    yaw = tracks.yaw[r]
    sp = tracks.speed[r]
    z = tracks.z[r] + height / 2
    track = s.tracks.add(id=j + 1, object_type=obj_type)
    for t in range(NUM_STEPS):
      if ok[t]:
        track.states.add(
            center_x=x[row, t], center_y=y[row, t], center_z=z[t],
            length=length, width=width, height=height, heading=yaw[t],
            velocity_x=sp[t] * np.cos(yaw[t]),
            velocity_y=sp[t] * np.sin(yaw[t]), valid=True)
      else:
        track.states.add(valid=False)
  s.sdc_track_index = 0
  for j in cand[:cfg.max_tracks_to_predict]:
    s.tracks_to_predict.add(track_index=j)
  close = np.where(kv & kv[:1], np.hypot(kx - kx[:1], ky - ky[:1]),
                   np.inf).min(-1)
  for j in np.argsort(close[1:])[:2] + 1:
    if close[j] < 8.0:
      s.objects_of_interest.append(j + 1)
  _add_map(s, netmap, box)
  _add_signals(s, netmap, tracks, first, box)
  return s


def _in_box(xy, box):
  return ((xy[..., 0] >= box[0]) & (xy[..., 0] <= box[1]) &
          (xy[..., 1] >= box[2]) & (xy[..., 1] <= box[3]))


def _add_map(s, netmap: NetworkMap, box):
  p = netmap.points
  inside = _in_box(p, box)
  poly = netmap.polyline
  # Runs of inside points of one polyline become features.
  starts = inside & ~np.concatenate([[False], inside[:-1] &
                                     (poly[1:] == poly[:-1])])
  run = np.cumsum(starts) - 1
  idx = np.flatnonzero(inside)
  if len(idx) == 0:
    return
  pieces = np.split(idx, np.flatnonzero(np.diff(run[idx])) + 1)
  seen = {}
  for piece in pieces:
    i = int(poly[piece[0]])
    kind, sub = netmap.kinds[i]
    if kind == 'crosswalk':
      piece = np.flatnonzero(poly == i)  # whole polygon
      if i in seen:
        continue
    elif len(piece) < 2:
      continue
    rank = seen.get(i, 0)
    seen[i] = rank + 1
    fid = i + 1 + 1_000_000 * rank
    feature = s.map_features.add(id=fid)
    pts = [map_pb2.MapPoint(x=a, y=b, z=c) for a, b, c in p[piece]]
    if kind == 'lane':
      feature.lane.type = sub
      feature.lane.polyline.extend(pts)
    elif kind == 'road_line':
      feature.road_line.type = sub
      feature.road_line.polyline.extend(pts)
    elif kind == 'road_edge':
      feature.road_edge.type = sub
      feature.road_edge.polyline.extend(pts)
    else:
      feature.crosswalk.polygon.extend(pts)


def _add_signals(s, netmap: NetworkMap, tracks: Tracks, first, box):
  links = [link for link in netmap.links
           if _in_box(link[3], box) and link[0] in tracks.tls]
  for t in range(NUM_STEPS):
    dyn = s.dynamic_map_states.add()
    done = set()
    for tls_id, index, lane, stop in links:
      if lane in done:
        continue
      state = tracks.tls[tls_id][first + t]
      if index >= len(state):
        continue
      done.add(lane)
      dyn.lane_states.add(lane=lane, state=_SIGNAL.get(
          state[index], _STATE.LANE_STATE_UNKNOWN), stop_point=map_pb2.MapPoint(
              x=stop[0], y=stop[1], z=stop[2]))


def cut_scenarios(cfg: SumoConfig, tracks: Tracks, netmap: NetworkMap,
                  limit: int) -> Iterator[scenario_pb2.Scenario]:
  """Scenarios from one run, window after window, up to ``limit``."""
  rng = np.random.default_rng(cfg.seed)
  first = int(round(cfg.warmup_s / DT))
  stride = max(int(round(cfg.window_stride_s / DT)), 1)
  made = 0
  while first + NUM_STEPS <= tracks.num_steps and made < limit:
    k, rows, valid = _window(tracks, first)
    if len(k):
      for ego in _choose_egos(tracks, k, rows, valid, rng,
                              cfg.egos_per_window, cfg.radius):
        sid = (f'sumo-{cfg.network}-s{cfg.seed}-t{first}-'
               f'{tracks.name[k[ego]]}')
        scenario = _scenario(cfg, tracks, netmap, first, k, rows, valid, ego,
                             sid)
        if scenario is not None:
          yield scenario
          made += 1
          if made == limit:
            return
    first += stride


def _config_key(cfg: SumoConfig) -> str:
  return hashlib.sha256(json.dumps(dataclasses.asdict(cfg),
                                   sort_keys=True).encode()).hexdigest()[:16]


def generate(cfg: SumoConfig, out_dir: os.PathLike, *,
             progress: Callable[[int, int], None] | None = None,
             keep_workdir: bool = False) -> dict:
  """Writes ``cfg.num_scenarios`` scenarios as sharded TFRecords.

  Resumable: when ``out_dir/manifest.json`` records the same config, nothing
  is redone. Shards are written atomically; the manifest last. A folder
  holding scenarios of other settings is refused (SumoError), and one that
  another process is generating into stops this one (``fileio.LockedError``
  naming it); SUMO's outputs are checked whole before they are read.

  Args:
    cfg: what to generate.
    out_dir: folder of ``<network>.tfrecord-XXXXX-of-YYYYY`` and the manifest.
    progress: called with (scenarios written, wanted).
    keep_workdir: keep SUMO's own files (under out_dir/sumo_run).

  Returns:
    The manifest (also written as ``manifest.json``).
  """
  network = cfg.check()
  if cfg.egos_per_window is None:
    cfg = dataclasses.replace(cfg, egos_per_window=network.egos_per_window)
  out = pathlib.Path(out_dir)
  if out.exists() and not out.is_dir():
    raise SumoError(f'--out {out} is a file, not a folder')
  # One generation per folder at a time: a second stops naming the first.
  with fileio.DirLock(out, what=f'SUMO generation ({network.name})'):
    return _generate_locked(cfg, network, out, progress, keep_workdir)


def _generate_locked(cfg, network, out, progress, keep_workdir) -> dict:
  """``generate`` with ``out``'s lock held."""
  manifest_path = out / 'manifest.json'
  key = _config_key(cfg)
  if manifest_path.exists():
    try:
      old = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
      old = {}
    if old.get('config_key') == key and all(
        (out / f).exists() for f in old.get('files', ())):
      return old
    if old.get('config_key') not in (None, key):
      stored = old.get('config', {})
      now = dataclasses.asdict(cfg)
      diff = ', '.join(f'{k} ({stored.get(k)!r} vs {now[k]!r})'
                       for k in sorted(now) if stored.get(k) != now[k])
      raise SumoError(
          f'{out} holds scenarios generated with other settings (stored vs '
          f'this run: {diff or "an older config format"}); use another '
          'folder, or delete it to regenerate')
  # Leftovers of a killed run of this folder (we hold its lock): partial
  # shards' temporary files go now, shards of an unfinished run once the
  # new ones are written.
  fileio.remove_temporaries(out, f'{network.name}.tfrecord-')
  started = time.perf_counter()
  netmap = network_map(network.name, cfg.point_spacing)
  windows = -(-cfg.num_scenarios // cfg.egos_per_window)
  duration = cfg.warmup_s + (windows * 1.5 + 2) * cfg.window_stride_s + 10
  scenarios: list[bytes] = []
  counts = {'vehicle': 0, 'pedestrian': 0, 'cyclist': 0,
            'tracks_to_predict': 0}
  sim_s = 0.0
  for attempt in range(3):
    with tempfile.TemporaryDirectory(dir=out) as tmp:
      work = out / 'sumo_run' if keep_workdir else pathlib.Path(tmp)
      t0 = time.perf_counter()
      tracks = simulate(network, cfg.seed + 1000 * attempt, duration, work,
                        cfg.lane_change_duration)
      sim_s += time.perf_counter() - t0
    attempt_cfg = dataclasses.replace(cfg, seed=cfg.seed + 1000 * attempt)
    for scenario in cut_scenarios(attempt_cfg, tracks, netmap,
                                  cfg.num_scenarios - len(scenarios)):
      scenarios.append(scenario.SerializeToString())
      for tr in scenario.tracks:
        counts[{1: 'vehicle', 2: 'pedestrian', 3: 'cyclist'}[
            tr.object_type]] += 1
      counts['tracks_to_predict'] += len(scenario.tracks_to_predict)
      if progress:
        progress(len(scenarios), cfg.num_scenarios)
    if len(scenarios) >= cfg.num_scenarios:
      break
    duration *= 2
  if not scenarios:
    raise SumoError(
        f'network {network.name!r} gave no scenario: no car stays in the '
        f'simulation for a whole window with another object within '
        f'radius={cfg.radius} m; raise SumoConfig.radius or num_scenarios')
  num_shards = -(-len(scenarios) // cfg.shard_size)
  files = []
  for i in range(num_shards):
    name = f'{network.name}.tfrecord-{i:05d}-of-{num_shards:05d}'
    tfrecord.write_records(out / name,
                           scenarios[i * cfg.shard_size:(i + 1) *
                                     cfg.shard_size])
    files.append(name)
  for stale in fileio.glob_files(out / f'{network.name}.tfrecord-*'):
    if os.path.basename(stale) not in files:
      os.remove(stale)
  manifest = {
      'network': network.name,
      'network_file': network.path,
      'description': network.description,
      'sumo_version': sumo_version(),
      'seed': cfg.seed,
      'config': dataclasses.asdict(cfg),
      'config_key': key,
      'num_scenarios': len(scenarios),
      'counts': counts,
      'files': files,
      'simulation_seconds': round(sim_s, 2),
      'total_seconds': round(time.perf_counter() - started, 2),
  }
  fileio.atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
  return manifest
