"""A SUMO road network (``.net.xml``) as WOMD-typed map polylines.

``network_map`` reads a ``NETWORKS`` entry with ``sumolib`` and returns its
map (``NetworkMap``): lane centre lines, junction (internal) lanes included,
as freeway / surface-street / bike lanes; broken white lines between
neighbouring lanes of a road; road edges as the boundary of the union of every
drivable lane and junction, oriented as in WOMD (drivable area on the left,
so the WOSAC road-edge distance is negative on the road); crosswalks; and the
signal links that tie each traffic-light index to the junction lane it
controls. Polylines are resampled every ``point_spacing`` m.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from prefalign.data.protos import map_pb2
from prefalign.data.sumo_config import DRIVABLE
from prefalign.data.sumo_config import NETWORKS
from prefalign.data.sumo_config import SumoError
from prefalign.data.sumo_config import network_path

__all__ = ['NetworkMap', 'network_map']


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
  """(K, 3) float64 points of a sumolib shape (z = 0 for 2-D shapes)."""
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


@dataclasses.dataclass
class _Features:
  """The map's polylines as they are gathered, in feature order.

  Attributes:
    polylines: per feature, (K, 3) points before resampling.
    kinds: per feature, as ``NetworkMap.kinds``.
    lane_ids: SUMO lane id -> feature id (polyline index + 1).
    drivable: shapely polygons of the roadway (lanes, bike lanes included,
      and junctions), whose union the road edges bound.
  """
  polylines: list = dataclasses.field(default_factory=list)
  kinds: list = dataclasses.field(default_factory=list)
  lane_ids: dict = dataclasses.field(default_factory=dict)
  drivable: list = dataclasses.field(default_factory=list)

  def add(self, polyline: np.ndarray, kind: tuple) -> None:
    self.polylines.append(polyline)
    self.kinds.append(kind)


def _is_drivable(lane) -> bool:
  return any(lane.allows(c) for c in DRIVABLE)


def _add_crossing(features: _Features, lane, shape: np.ndarray) -> None:
  """A pedestrian crossing lane as a crosswalk polygon (if it has area)."""
  from shapely import geometry as sg
  poly = sg.LineString(shape[:, :2]).buffer(lane.getWidth() / 2,
                                            cap_style='flat')
  if poly.area > 0:
    ring = np.asarray(poly.exterior.coords)[:-1]
    z = np.full((len(ring), 1), shape[:, 2].mean())
    features.add(np.concatenate([ring, z], -1), ('crosswalk', 0))


def _lane_type(edge, lane, function: str) -> int | None:
  """The WOMD LaneType of a roadway lane; None for sidewalks and the like."""
  if _is_drivable(lane):
    motorway = 'motorway' in (edge.getType() or '') or (
        edge.getSpeed() >= 25.0 and function == 'normal')
    return (map_pb2.LaneCenter.TYPE_FREEWAY if motorway else
            map_pb2.LaneCenter.TYPE_SURFACE_STREET)
  if lane.allows('bicycle') and not lane.allows('pedestrian'):
    return map_pb2.LaneCenter.TYPE_BIKE_LANE
  return None


def _add_lane_markings(features: _Features, edge) -> None:
  """Broken white lines between neighbouring drivable lanes of a road."""
  lanes = [lane for lane in edge.getLanes() if _is_drivable(lane)]
  for right, left in zip(lanes[:-1], lanes[1:]):
    a, b = _xyz(right.getShape()), _xyz(left.getShape())
    if len(a) == len(b) and len(a) >= 2 and right.getIndex() + 1 == (
        left.getIndex()):
      features.add((a + b) / 2, ('road_line',
                                 map_pb2.RoadLine.TYPE_BROKEN_SINGLE_WHITE))


def _add_edge(features: _Features, edge) -> None:
  """An edge's lanes (or crosswalks) and, on roads, their lane markings."""
  from shapely import geometry as sg
  function = edge.getFunction() or 'normal'
  if function == 'walkingarea':
    return
  for lane in edge.getLanes():
    shape = _xyz(lane.getShape3D() if hasattr(lane, 'getShape3D') else
                lane.getShape())
    if len(shape) < 2:
      continue
    if function == 'crossing':
      _add_crossing(features, lane, shape)
      continue
    lane_type = _lane_type(edge, lane, function)
    if lane_type is None:
      continue  # sidewalks: outside the road edges, as in WOMD
    # Roadway (bike lanes included): inside the road edges.
    features.drivable.append(sg.LineString(shape[:, :2]).buffer(
        lane.getWidth() / 2, cap_style='flat'))
    features.lane_ids[lane.getID()] = len(features.polylines) + 1
    features.add(shape, ('lane', lane_type))
  if function == 'normal':
    _add_lane_markings(features, edge)


def _junction_areas(net) -> list:
  """Shapely polygons of the junctions that drivable lanes enter."""
  from shapely import geometry as sg
  areas = []
  for node in net.getNodes():
    shape = node.getShape()
    if len(shape) >= 3 and any(_is_drivable(lane) for e in node.getIncoming()
                               for lane in e.getLanes()):
      poly = sg.Polygon(np.asarray(shape)[:, :2])
      if poly.is_valid and poly.area > 0:
        areas.append(poly)
  return areas


def _drivable_area(drivable: list):
  """The union of the roadway polygons, its seams and slivers closed."""
  import shapely
  # Lanes of one road touch exactly; a closing by 0.5 m merges float seams
  # and the narrow gaps SUMO leaves between opposite carriageways (painted
  # medians), which would otherwise become slivers whose sharp tips give the
  # road-edge sign trouble. Tiny leftover holes are dropped.
  area = shapely.union_all(drivable).buffer(0.5, join_style='mitre').buffer(
      -0.5, join_style='mitre')
  return shapely.make_valid(area)


def _add_road_edges(features: _Features, area) -> None:
  """The boundary of ``area`` as road edges, drivable side on the left.

  Each polygon's exterior (counter-clockwise) is a boundary edge, its holes
  (clockwise) of more than 2 m2 median edges.
  """
  from shapely import geometry as sg
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
      features.add(np.concatenate([xy, np.zeros((len(xy), 1))], -1),
                   ('road_edge', map_pb2.RoadEdge.TYPE_ROAD_EDGE_BOUNDARY
                    if k == 0 else map_pb2.RoadEdge.TYPE_ROAD_EDGE_MEDIAN))


def _resampled(features: _Features, point_spacing: float
               ) -> tuple[np.ndarray, np.ndarray]:
  """(P, 3) points of every feature and (P,) their feature index.

  Crosswalk polygons are kept as they are; polylines are resampled.
  """
  pts, which = [], []
  for i, (shape, kind) in enumerate(zip(features.polylines, features.kinds)):
    p = shape if kind[0] == 'crosswalk' else _resample(shape, point_spacing)
    pts.append(p)
    which.append(np.full(len(p), i))
  return np.concatenate(pts), np.concatenate(which)


def _signal_links(net, lane_ids: dict) -> list:
  """Per signal link ``(tls id, index, controlled lane's feature id, stop
  point (3,))``: the junction lane the link drives onto (its outgoing lane
  when it has none in the map), stopping at the end of the incoming lane."""
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
  return links


@functools.lru_cache(maxsize=8)
def network_map(name: str, point_spacing: float = 0.5) -> NetworkMap:
  """The map of a ``NETWORKS`` entry (cached per process).

  Args:
    name: a key of ``NETWORKS``.
    point_spacing: resampling step of the polylines (m).

  Raises:
    SumoError: the network has no drivable lane.
  """
  import sumolib

  network = NETWORKS[name]
  net = sumolib.net.readNet(str(network_path(network)), withInternal=True,
                            withPedestrianConnections=True)
  features = _Features()
  for edge in sorted(net.getEdges(withInternal=True), key=lambda e: e.getID()):
    _add_edge(features, edge)
  features.drivable.extend(_junction_areas(net))
  if not features.drivable:
    raise SumoError(f'network {name!r} has no drivable lanes')
  area = _drivable_area(features.drivable)
  _add_road_edges(features, area)
  points, polyline = _resampled(features, point_spacing)
  return NetworkMap(
      points=points, polyline=polyline, kinds=features.kinds,
      lane_ids=features.lane_ids,
      links=_signal_links(net, features.lane_ids),
      drivable_area_m2=float(area.area))
