"""What SUMO generation can simulate, and where SUMO is installed.

The road networks shipped inside the ``eclipse-sumo`` package (``NETWORKS``),
the vehicle types simulated on them (``VTYPES``: SUMO's car-following and
lane-change parameters and the 3-D boxes written to the scenarios), the
settings of one generation (``SumoConfig``), the problem every step raises
(``SumoError``) and the installation lookups (``sumo_home``,
``network_path``, ``sumo_version``). ``sumo_network``, ``sumo_traffic`` and
``sumo_scenarios`` build on this; ``sumo`` runs them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess

import numpy as np

__all__ = [
    'DRIVABLE',
    'MOTOR',
    'NETWORKS',
    'Network',
    'OBJECT_TYPE',
    'SumoConfig',
    'SumoError',
    'TYPE_INFO',
    'VTYPES',
    'network_path',
    'sumo_home',
    'sumo_version',
]


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
VTYPES = (
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
TYPE_INFO = {t[0]: t for t in VTYPES}
DRIVABLE = ('passenger', 'truck', 'bus', 'delivery', 'motorcycle')
OBJECT_TYPE = np.array([t[2] for t in VTYPES])  # WOMD type per vType
MOTOR = np.array([t[1] in DRIVABLE for t in VTYPES])


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
  """The network's ``.net.xml[.gz]`` file in the installed package."""
  path = sumo_home() / 'tools' / 'game' / network.path
  if not path.exists():
    raise SumoError(f'network {network.name!r}: {path} is missing from the '
                    'installed eclipse-sumo package')
  return path


def sumo_version() -> str:
  """The installed SUMO's version line (``'unknown'`` if it prints none)."""
  out = subprocess.run([str(sumo_home() / 'bin' / 'sumo'), '--version'],
                       capture_output=True, text=True, check=False).stdout
  return out.splitlines()[0].strip() if out else 'unknown'
