"""The road graph: polylines, polygons and stop signs cropped to a view.

The road graph is drawn with one ``LineCollection`` per line style and one
``PolyCollection`` per polygon type, cropped to the view first. Consecutive
points are joined only when they belong to the same map feature (equal
``ids``); see ``polyline_segments``. Traffic-light colours and their legend
entries live here too, as the lights are drawn at their stop points on the
map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib import collections as mcoll
from matplotlib import colors as mcolors
from matplotlib import lines as mlines
from matplotlib import patches as mpatches
import numpy as np

from prefalign import datatypes
from prefalign.viz import style

_M = datatypes.MapElementIds


def _segment_starts(roadgraph: datatypes.RoadgraphPoints,
                    mask: np.ndarray | None = None) -> np.ndarray:
  """Indices i of the drawable polyline segments (point i -> point i + 1).

  A segment is kept when both points are valid, carry the same ``ids`` (so it
  never joins two map features), are of a polyline type (lane centre, road
  line or road edge; polygons and stop signs are drawn separately) and at
  least one of the two points is selected by ``mask``.

  Args:
    roadgraph: unbatched RoadgraphPoints (P,).
    mask: optional (P,) bool point selection (e.g. points inside the view).

  Returns:
    (S,) int64 increasing start indices.
  """
  valid = np.asarray(roadgraph.valid, bool)
  ids = np.asarray(roadgraph.ids)
  types = np.asarray(roadgraph.types)
  if valid.shape[0] < 2:
    return np.zeros(0, np.int64)
  point_ok = valid & np.isin(types, style.POLYLINE_TYPES)
  keep = point_ok[:-1] & point_ok[1:] & (ids[:-1] == ids[1:])
  if mask is not None:
    mask = np.asarray(mask, bool)
    keep &= mask[:-1] | mask[1:]
  return np.flatnonzero(keep)


def _points(roadgraph: datatypes.RoadgraphPoints) -> np.ndarray:
  """(P, 2) float64 x, y of every point."""
  return np.stack([np.asarray(roadgraph.x), np.asarray(roadgraph.y)],
                  -1).astype(np.float64)


def polyline_segments(roadgraph: datatypes.RoadgraphPoints,
                      mask: np.ndarray | None = None) -> np.ndarray:
  """Line segments of the road graph's polyline features.

  Args:
    roadgraph: unbatched RoadgraphPoints (P,).
    mask: optional (P,) bool; a segment is kept when either end is selected.

  Returns:
    (S, 2, 2) float segments ``[[x0, y0], [x1, y1]]``, one per consecutive
    pair of valid points of the same feature (see ``_segment_starts``). These
    are exactly the segments ``plot_scenario`` draws for the same mask.
  """
  starts = _segment_starts(roadgraph, mask)
  xy = _points(roadgraph)
  return np.stack([xy[starts], xy[starts + 1]], axis=1)


def polylines(roadgraph: datatypes.RoadgraphPoints,
              mask: np.ndarray | None) -> tuple[list[np.ndarray], np.ndarray]:
  """Groups the kept segments into maximal polylines.

  Args:
    roadgraph: unbatched RoadgraphPoints (P,).
    mask: optional (P,) bool; a segment is kept when either end is selected.

  Returns:
    (lines, types): a list of L (K_i, 2) float64 vertex arrays, K_i >= 2,
    whose segments are exactly ``polyline_segments(roadgraph, mask)``, and
    (L,) their map element types.
  """
  starts = _segment_starts(roadgraph, mask)
  if starts.size == 0:
    return [], np.zeros(0, np.int32)
  xy = _points(roadgraph)
  breaks = np.flatnonzero(np.diff(starts) != 1)
  first = starts[np.r_[0, breaks + 1]]
  last = starts[np.r_[breaks, starts.size - 1]] + 1  # inclusive end point
  lines = [xy[a:b + 1] for a, b in zip(first, last)]
  return lines, np.asarray(roadgraph.types)[first]


def polygons(roadgraph: datatypes.RoadgraphPoints,
             mask: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
  """Polygon features (crosswalks, speed bumps, driveways) to draw.

  Args:
    roadgraph: unbatched RoadgraphPoints (P,).
    mask: optional (P,) bool; a polygon is kept when a vertex is selected.

  Returns:
    A list of (type, (K, 2) float64 vertices), K >= 3, one per run of
    consecutive valid polygon points with equal ``ids``.
  """
  valid = np.asarray(roadgraph.valid, bool)
  types = np.asarray(roadgraph.types)
  ids = np.asarray(roadgraph.ids)
  is_poly = valid & np.isin(types, list(style.POLYGON_STYLES))
  idx = np.flatnonzero(is_poly)
  if idx.size == 0:
    return []
  # Runs of consecutive polygon points with equal ids.
  new = np.r_[True, (np.diff(idx) != 1) | (ids[idx[1:]] != ids[idx[:-1]])]
  bounds = np.r_[np.flatnonzero(new), idx.size]
  xy = _points(roadgraph)
  sel = np.ones_like(valid) if mask is None else np.asarray(mask, bool)
  out = []
  for a, b in zip(bounds[:-1], bounds[1:]):
    run = idx[a:b]
    if run.size >= 3 and sel[run].any():
      out.append((int(types[run[0]]), xy[run]))
  return out


def crop_mask(roadgraph: datatypes.RoadgraphPoints, view: style.Bounds,
              margin: float | None = None) -> np.ndarray:
  """Selects the valid points inside ``view`` grown by ``margin`` metres.

  Args:
    roadgraph: unbatched RoadgraphPoints (P,).
    view: (xmin, xmax, ymin, ymax).
    margin: metres added on every side; the default is 5 % of the larger view
      side, at least 5 m, so that segments crossing the border of the view
      are still drawn.

  Returns:
    (P,) bool.
  """
  xmin, xmax, ymin, ymax = view
  if margin is None:
    margin = max(5.0, 0.05 * max(xmax - xmin, ymax - ymin))
  x, y = np.asarray(roadgraph.x), np.asarray(roadgraph.y)
  return (np.asarray(roadgraph.valid, bool) & (x >= xmin - margin) &
          (x <= xmax + margin) & (y >= ymin - margin) & (y <= ymax + margin))


def _draw_polygons(ax, roadgraph: datatypes.RoadgraphPoints,
                   mask: np.ndarray) -> list[Any]:
  """Draws the polygon features, one collection per type; returns handles."""
  handles = []
  polys = polygons(roadgraph, mask)
  for ptype, (label, face, alpha, edge) in style.POLYGON_STYLES.items():
    verts = [v for t, v in polys if t == ptype]
    if not verts:
      continue
    ax.add_collection(mcoll.PolyCollection(
        verts, facecolors=mcolors.to_rgba(face, alpha),
        edgecolors=mcolors.to_rgba(edge, 0.8), linewidths=0.6, zorder=1,
        gid=f'roadgraph-polygons/{label}'))
    handles.append(mpatches.Patch(facecolor=mcolors.to_rgba(face, alpha),
                                  edgecolor=edge, linewidth=0.6, label=label))
  return handles


def _draw_polylines(ax, roadgraph: datatypes.RoadgraphPoints,
                    mask: np.ndarray) -> list[Any]:
  """Draws the polylines, one collection per line style; returns handles."""
  lines, types = polylines(roadgraph, mask)
  drawn = set()
  for key, (style_types, kwargs, double) in style.LINE_STYLES.items():
    sel = [line for line, t in zip(lines, types) if t in style_types]
    if not sel:
      continue
    drawn.add(key.split('_')[0])
    ax.add_collection(mcoll.LineCollection(sel, gid=f'roadgraph/{key}',
                                           **kwargs))
    if double:
      over = dict(kwargs, colors=style.BACKGROUND,
                  linewidths=kwargs['linewidths'] / 3.2,
                  zorder=kwargs['zorder'] + 0.1)
      ax.add_collection(mcoll.LineCollection(
          sel, gid=f'roadgraph-overlay/{key}', **over))
  line_handles = {
      'lane': mlines.Line2D([], [], color=style.LANE, lw=0.8,
                            ls=(0, (4, 3)), label='Lane centre'),
      'white': mlines.Line2D([], [], color=style.WHITE_LINE, lw=1.0,
                             label='Road line (white)'),
      'yellow': mlines.Line2D([], [], color=style.YELLOW_LINE, lw=1.2,
                              label='Road line (yellow)'),
      'edge': mlines.Line2D([], [], color=style.EDGE, lw=1.6,
                            label='Road edge'),
  }
  return [h for k, h in line_handles.items() if k in drawn]


def _draw_stop_signs(ax, roadgraph: datatypes.RoadgraphPoints,
                     mask: np.ndarray) -> list[Any]:
  """Draws the stop signs in ``mask``; returns their handle (if any)."""
  valid = np.asarray(roadgraph.valid, bool)
  stop = mask & valid & (np.asarray(roadgraph.types) == _M.STOP_SIGN)
  if not stop.any():
    return []
  sx, sy = np.asarray(roadgraph.x)[stop], np.asarray(roadgraph.y)[stop]
  # A red octagon with a white inner ring, like the sign itself.
  ax.scatter(sx, sy, marker='8', s=95, facecolors=style.STOP_SIGN,
             edgecolors='none', zorder=5, gid='roadgraph/stop_sign')
  ax.scatter(sx, sy, marker='8', s=42, facecolors=style.STOP_SIGN,
             edgecolors='white', linewidths=0.9, zorder=5.1)
  return [(
      mlines.Line2D([], [], ls='none', marker='8', ms=10, mfc=style.STOP_SIGN,
                    mec='none'),
      mlines.Line2D([], [], ls='none', marker='8', ms=6.5,
                    mfc=style.STOP_SIGN, mec='white', mew=0.9,
                    label='Stop sign'))]


def draw_roadgraph(ax, roadgraph: datatypes.RoadgraphPoints,
                   view: style.Bounds) -> list[Any]:
  """Draws the road graph cropped to ``view``.

  Args:
    ax: the matplotlib Axes drawn into.
    roadgraph: unbatched RoadgraphPoints (P,).
    view: (xmin, xmax, ymin, ymax).

  Returns:
    Legend handles for what was drawn: line types, then polygon types, then
    the stop sign.
  """
  mask = crop_mask(roadgraph, view)
  # Polygons first (below the lines).
  polygon_handles = _draw_polygons(ax, roadgraph, mask)
  line_handles = _draw_polylines(ax, roadgraph, mask)
  return (line_handles + polygon_handles +
          _draw_stop_signs(ax, roadgraph, mask))


def light_colors(states: np.ndarray) -> tuple[list[str], list[str]]:
  """Colours of traffic-light states.

  Args:
    states: (L,) TrafficLightStates.

  Returns:
    (colours, keys): L colours and L group keys of ``style.LIGHT_GROUPS``.
  """
  colors, keys = [], []
  for s in states:
    key = 'unknown'
    for k, (_, _, members) in style.LIGHT_GROUPS.items():
      if int(s) in [int(m) for m in members]:
        key = k
        break
    colors.append(style.LIGHT_GROUPS[key][1])
    keys.append(key)
  return colors, keys


def light_handles(keys: Sequence[str]) -> list[Any]:
  """Legend handles of the light groups in ``keys``, in the groups' order."""
  return [mlines.Line2D([], [], ls='none', marker='o', ms=6, mfc=color,
                        mec=style.LIGHT_EDGE, mew=1.4, label=label)
          for k, (label, color, _) in style.LIGHT_GROUPS.items() if k in keys]
