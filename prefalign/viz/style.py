"""Colours and line styles of the plots, and the types the modules share.

Everything here is a constant: the road-graph line and polygon styles by map
element type, the object colours and labels by object type, the
traffic-light colour groups, and the marks (SDC, tracks to predict, heading
ticks, overlapping boxes) drawn on top.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from prefalign import datatypes

_M = datatypes.MapElementIds
_O = datatypes.ObjectTypeIds
_S = datatypes.TrafficLightStates

PathLike = str | os.PathLike
# (xmin, xmax, ymin, ymax) in metres.
Bounds = tuple[float, float, float, float]

BACKGROUND = 'white'
LANE = '#c4c8cc'
WHITE_LINE = '#8d939a'
YELLOW_LINE = '#e3a21a'
EDGE = '#2b2f33'

# Road-graph polyline styles: key -> (types, Line collection kwargs, double).
# ``double`` lines are drawn thick and then split by a thin background-coloured
# line on top, which reads as two parallel lines at any zoom.
LINE_STYLES: dict[str, tuple[tuple[int, ...], dict[str, Any], bool]] = {
    'lane': ((_M.LANE_UNDEFINED, _M.LANE_FREEWAY, _M.LANE_SURFACE_STREET,
              _M.LANE_BIKE_LANE),
             dict(colors=LANE, linewidths=0.6, linestyles=(0, (4, 3)),
                  zorder=2), False),
    'white_solid': ((_M.ROAD_LINE_UNKNOWN, _M.ROAD_LINE_SOLID_SINGLE_WHITE),
                    dict(colors=WHITE_LINE, linewidths=0.9, zorder=3),
                    False),
    'white_double': ((_M.ROAD_LINE_SOLID_DOUBLE_WHITE,),
                     dict(colors=WHITE_LINE, linewidths=2.2, zorder=3),
                     True),
    'white_broken': ((_M.ROAD_LINE_BROKEN_SINGLE_WHITE,),
                     dict(colors=WHITE_LINE, linewidths=0.9,
                          linestyles=(0, (6, 4)), zorder=3), False),
    'yellow_solid': ((_M.ROAD_LINE_SOLID_SINGLE_YELLOW,),
                     dict(colors=YELLOW_LINE, linewidths=1.0, zorder=3),
                     False),
    'yellow_double': ((_M.ROAD_LINE_SOLID_DOUBLE_YELLOW,
                       _M.ROAD_LINE_PASSING_DOUBLE_YELLOW),
                      dict(colors=YELLOW_LINE, linewidths=2.4, zorder=3),
                      True),
    'yellow_broken': ((_M.ROAD_LINE_BROKEN_SINGLE_YELLOW,),
                      dict(colors=YELLOW_LINE, linewidths=1.0,
                           linestyles=(0, (6, 4)), zorder=3), False),
    'yellow_broken_double': ((_M.ROAD_LINE_BROKEN_DOUBLE_YELLOW,),
                             dict(colors=YELLOW_LINE, linewidths=2.4,
                                  linestyles=(0, (6, 4)), zorder=3), True),
    'edge': ((_M.ROAD_EDGE_UNKNOWN, _M.ROAD_EDGE_BOUNDARY,
              _M.ROAD_EDGE_MEDIAN),
             dict(colors=EDGE, linewidths=1.6, capstyle='round',
                  joinstyle='round', zorder=4), False),
}
# (Y,) int32 sorted map element types drawn as polylines.
POLYLINE_TYPES = np.array(sorted(t for ts, _, _ in LINE_STYLES.values()
                                 for t in ts), np.int32)

# Polygon types -> (label, face colour, face alpha, edge colour).
POLYGON_STYLES = {
    int(_M.CROSSWALK): ('Crosswalk', '#8fa3bf', 0.45, '#6d819c'),
    int(_M.SPEED_BUMP): ('Speed bump', '#d9822b', 0.40, '#b5651d'),
    int(_M.DRIVEWAY): ('Driveway', '#b9a88c', 0.30, '#9c8a6c'),
}
STOP_SIGN = '#c8102e'
LIGHT_EDGE = '#222222'  # the dark signal housing around the lamp colour

# Object colours by ObjectTypeIds (UNSET drawn as OTHER).
OBJECT_COLORS = {
    int(_O.VEHICLE): '#3d6fb6',
    int(_O.PEDESTRIAN): '#c2399b',
    int(_O.CYCLIST): '#1b9e77',
    int(_O.OTHER): '#7f7f7f',
}
OBJECT_LABELS = {int(_O.VEHICLE): 'Vehicle', int(_O.PEDESTRIAN): 'Pedestrian',
                 int(_O.CYCLIST): 'Cyclist', int(_O.OTHER): 'Other'}
SDC_COLOR = '#e8452c'
MODELED_EDGE = '#111111'
OTHER_EDGE = (0.15, 0.15, 0.15, 0.7)  # outline of the objects not modelled
COLLISION = '#d7191c'  # outline of a box overlapping another
TICK = (1.0, 1.0, 1.0, 0.9)  # heading tick, centre -> front edge
# Pedestrians and cyclists are < 2 m long: a dot under the box keeps them
# visible in a 150 m view.
SMALL_TYPES = (int(_O.PEDESTRIAN), int(_O.CYCLIST))

# Traffic-light state -> colour group.
LIGHT_GROUPS = {
    'stop': ('Signal: stop', '#d7191c',
             (_S.STOP, _S.ARROW_STOP, _S.FLASHING_STOP)),
    'caution': ('Signal: caution', '#f7c600',
                (_S.CAUTION, _S.ARROW_CAUTION, _S.FLASHING_CAUTION)),
    'go': ('Signal: go', '#1a9641', (_S.GO, _S.ARROW_GO)),
    'unknown': ('Signal: unknown', '#9e9e9e', ()),
}
