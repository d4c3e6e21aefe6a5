"""Scenario plots and rollout animations (matplotlib, off-screen).

Two entry points:

* ``plot_scenario(state, ...)`` draws one ``SimulatorState`` at one step: the
  road graph by type, oriented object boxes coloured by type (the SDC and the
  ``tracks_to_predict`` marked), history trails, optional sampled future
  trajectories, traffic-light states and a legend, in a view around the SDC.
* ``animate_rollout(state, trajectories, path=...)`` writes a GIF of boxes
  moving over the road graph (drawn once).

Nothing here touches pyplot or the global backend: figures are plain
``matplotlib.figure.Figure`` objects with an Agg canvas, so the module works
headless, in threads and in notebooks alike, and figures are freed as soon as
they are unreferenced. States may hold numpy or jax arrays; they must be
unbatched (index a batch first, e.g. ``jax.tree.map(lambda x: x[0], state)``).

The road graph is drawn with one ``LineCollection`` per line style and one
``PolyCollection`` per polygon type, cropped to the view first, so maps with
tens of thousands of points (or spanning kilometres) draw in well under a
second. Consecutive points are joined only when they belong to the same map
feature (equal ``ids``); see ``_polyline_segments``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from typing import Any

import jax
from matplotlib import animation
from matplotlib import collections as mcoll
from matplotlib import colors as mcolors
from matplotlib import figure as mfigure
from matplotlib import lines as mlines
from matplotlib import patches as mpatches
from matplotlib.backends import backend_agg
import numpy as np

from prefalign import datatypes
from prefalign import fileio
from prefalign.sim import geometry

__all__ = ['plot_scenario', 'animate_rollout', 'animate_rollouts',
           'plot_ranking', 'box_corners']

_M = datatypes.MapElementIds
_O = datatypes.ObjectTypeIds
_S = datatypes.TrafficLightStates

PathLike = str | os.PathLike
# (xmin, xmax, ymin, ymax) in metres.
Bounds = tuple[float, float, float, float]

# Half-size of the default view around the SDC, as in Waymax's viewer
# (VizConfig front_x = back_x = front_y = back_y = 75 m).
DEFAULT_HALF_EXTENT = 75.0

# ---------------------------------------------------------------------------
# Styles.

_BACKGROUND = 'white'
_LANE = '#c4c8cc'
_WHITE_LINE = '#8d939a'
_YELLOW_LINE = '#e3a21a'
_EDGE = '#2b2f33'

# Road-graph polyline styles: key -> (types, Line collection kwargs, double).
# ``double`` lines are drawn thick and then split by a thin background-coloured
# line on top, which reads as two parallel lines at any zoom.
_LINE_STYLES: dict[str, tuple[tuple[int, ...], dict[str, Any], bool]] = {
    'lane': ((_M.LANE_UNDEFINED, _M.LANE_FREEWAY, _M.LANE_SURFACE_STREET,
              _M.LANE_BIKE_LANE),
             dict(colors=_LANE, linewidths=0.6, linestyles=(0, (4, 3)),
                  zorder=2), False),
    'white_solid': ((_M.ROAD_LINE_UNKNOWN, _M.ROAD_LINE_SOLID_SINGLE_WHITE),
                    dict(colors=_WHITE_LINE, linewidths=0.9, zorder=3),
                    False),
    'white_double': ((_M.ROAD_LINE_SOLID_DOUBLE_WHITE,),
                     dict(colors=_WHITE_LINE, linewidths=2.2, zorder=3),
                     True),
    'white_broken': ((_M.ROAD_LINE_BROKEN_SINGLE_WHITE,),
                     dict(colors=_WHITE_LINE, linewidths=0.9,
                          linestyles=(0, (6, 4)), zorder=3), False),
    'yellow_solid': ((_M.ROAD_LINE_SOLID_SINGLE_YELLOW,),
                     dict(colors=_YELLOW_LINE, linewidths=1.0, zorder=3),
                     False),
    'yellow_double': ((_M.ROAD_LINE_SOLID_DOUBLE_YELLOW,
                       _M.ROAD_LINE_PASSING_DOUBLE_YELLOW),
                      dict(colors=_YELLOW_LINE, linewidths=2.4, zorder=3),
                      True),
    'yellow_broken': ((_M.ROAD_LINE_BROKEN_SINGLE_YELLOW,),
                      dict(colors=_YELLOW_LINE, linewidths=1.0,
                           linestyles=(0, (6, 4)), zorder=3), False),
    'yellow_broken_double': ((_M.ROAD_LINE_BROKEN_DOUBLE_YELLOW,),
                             dict(colors=_YELLOW_LINE, linewidths=2.4,
                                  linestyles=(0, (6, 4)), zorder=3), True),
    'edge': ((_M.ROAD_EDGE_UNKNOWN, _M.ROAD_EDGE_BOUNDARY,
              _M.ROAD_EDGE_MEDIAN),
             dict(colors=_EDGE, linewidths=1.6, capstyle='round',
                  joinstyle='round', zorder=4), False),
}
_POLYLINE_TYPES = np.array(sorted(t for ts, _, _ in _LINE_STYLES.values()
                                  for t in ts), np.int32)

# Polygon types -> (label, face colour, face alpha, edge colour).
_POLYGON_STYLES = {
    int(_M.CROSSWALK): ('Crosswalk', '#8fa3bf', 0.45, '#6d819c'),
    int(_M.SPEED_BUMP): ('Speed bump', '#d9822b', 0.40, '#b5651d'),
    int(_M.DRIVEWAY): ('Driveway', '#b9a88c', 0.30, '#9c8a6c'),
}
_STOP_SIGN = '#c8102e'
_LIGHT_EDGE = '#222222'  # the dark signal housing around the lamp colour

# Object colours by ObjectTypeIds (UNSET drawn as OTHER).
_OBJECT_COLORS = {
    int(_O.VEHICLE): '#3d6fb6',
    int(_O.PEDESTRIAN): '#c2399b',
    int(_O.CYCLIST): '#1b9e77',
    int(_O.OTHER): '#7f7f7f',
}
_OBJECT_LABELS = {int(_O.VEHICLE): 'Vehicle', int(_O.PEDESTRIAN): 'Pedestrian',
                  int(_O.CYCLIST): 'Cyclist', int(_O.OTHER): 'Other'}
_SDC_COLOR = '#e8452c'
_MODELED_EDGE = '#111111'
_COLLISION = '#d7191c'  # outline of a box overlapping another
_TICK = (1.0, 1.0, 1.0, 0.9)  # heading tick, centre -> front edge
# Pedestrians and cyclists are < 2 m long: a dot under the box keeps them
# visible in a 150 m view.
_SMALL_TYPES = (int(_O.PEDESTRIAN), int(_O.CYCLIST))

# Traffic-light state -> colour group.
_LIGHT_GROUPS = {
    'stop': ('Signal: stop', '#d7191c',
             (_S.STOP, _S.ARROW_STOP, _S.FLASHING_STOP)),
    'caution': ('Signal: caution', '#f7c600',
                (_S.CAUTION, _S.ARROW_CAUTION, _S.FLASHING_CAUTION)),
    'go': ('Signal: go', '#1a9641', (_S.GO, _S.ARROW_GO)),
    'unknown': ('Signal: unknown', '#9e9e9e', ()),
}


# ---------------------------------------------------------------------------
# Geometry and road-graph helpers (numpy only).


def box_corners(x: np.ndarray, y: np.ndarray, length: np.ndarray,
                width: np.ndarray, yaw: np.ndarray) -> np.ndarray:
  """Corners of oriented boxes.

  Args:
    x, y: (...) box centres (m).
    length, width: (...) box size along and across the heading (m).
    yaw: (...) heading, counter-clockwise from +x (rad).

  Returns:
    (..., 4, 2) float corners: front-right, front-left, rear-left, rear-right
    (counter-clockwise), as ``Trajectory.bbox_corners``.
  """
  x, y, length, width, yaw = (np.asarray(a, np.float64)
                              for a in (x, y, length, width, yaw))
  # Local offsets, counter-clockwise from front-right:
  # (+l/2, -w/2), (+l/2, +w/2), (-l/2, +w/2), (-l/2, -w/2).
  sx = np.array([0.5, 0.5, -0.5, -0.5])
  sy = np.array([-0.5, 0.5, 0.5, -0.5])
  lx = length[..., None] * sx
  ly = width[..., None] * sy
  c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
  cx = x[..., None] + lx * c - ly * s
  cy = y[..., None] + lx * s + ly * c
  return np.stack([cx, cy], axis=-1)


def _np(tree: Any) -> Any:
  """Converts every array leaf of a pytree to numpy."""
  return jax.tree.map(np.asarray, tree)


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
  point_ok = valid & np.isin(types, _POLYLINE_TYPES)
  keep = point_ok[:-1] & point_ok[1:] & (ids[:-1] == ids[1:])
  if mask is not None:
    mask = np.asarray(mask, bool)
    keep &= mask[:-1] | mask[1:]
  return np.flatnonzero(keep)


def _polyline_segments(roadgraph: datatypes.RoadgraphPoints,
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
  xy = np.stack([np.asarray(roadgraph.x), np.asarray(roadgraph.y)], -1)
  return np.stack([xy[starts], xy[starts + 1]], axis=1).astype(np.float64)


def _polylines(roadgraph: datatypes.RoadgraphPoints,
               mask: np.ndarray | None) -> tuple[list[np.ndarray],
                                                    np.ndarray]:
  """Groups the kept segments into maximal polylines.

  Returns:
    (lines, types): a list of (K_i, 2) vertex arrays, K_i >= 2, whose segments
    are exactly ``_polyline_segments(roadgraph, mask)``, and (L,) their types.
  """
  starts = _segment_starts(roadgraph, mask)
  if starts.size == 0:
    return [], np.zeros(0, np.int32)
  xy = np.stack([np.asarray(roadgraph.x), np.asarray(roadgraph.y)],
                -1).astype(np.float64)
  breaks = np.flatnonzero(np.diff(starts) != 1)
  first = starts[np.r_[0, breaks + 1]]
  last = starts[np.r_[breaks, starts.size - 1]] + 1  # inclusive end point
  lines = [xy[a:b + 1] for a, b in zip(first, last)]
  return lines, np.asarray(roadgraph.types)[first]


def _polygons(roadgraph: datatypes.RoadgraphPoints,
              mask: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
  """(type, (K, 2) vertices) of polygon features with a vertex in ``mask``."""
  valid = np.asarray(roadgraph.valid, bool)
  types = np.asarray(roadgraph.types)
  ids = np.asarray(roadgraph.ids)
  is_poly = valid & np.isin(types, list(_POLYGON_STYLES))
  idx = np.flatnonzero(is_poly)
  if idx.size == 0:
    return []
  # Runs of consecutive polygon points with equal ids.
  new = np.r_[True, (np.diff(idx) != 1) | (ids[idx[1:]] != ids[idx[:-1]])]
  bounds = np.r_[np.flatnonzero(new), idx.size]
  xy = np.stack([np.asarray(roadgraph.x), np.asarray(roadgraph.y)],
                -1).astype(np.float64)
  sel = np.ones_like(valid) if mask is None else np.asarray(mask, bool)
  out = []
  for a, b in zip(bounds[:-1], bounds[1:]):
    run = idx[a:b]
    if run.size >= 3 and sel[run].any():
      out.append((int(types[run[0]]), xy[run]))
  return out


def _crop_mask(roadgraph: datatypes.RoadgraphPoints, view: Bounds,
               margin: float | None = None) -> np.ndarray:
  """(P,) bool: valid points inside ``view`` grown by ``margin`` metres.

  The default margin is 5 % of the larger view side, at least 5 m, so that
  segments crossing the border of the view are still drawn.
  """
  xmin, xmax, ymin, ymax = view
  if margin is None:
    margin = max(5.0, 0.05 * max(xmax - xmin, ymax - ymin))
  x, y = np.asarray(roadgraph.x), np.asarray(roadgraph.y)
  return (np.asarray(roadgraph.valid, bool) & (x >= xmin - margin) &
          (x <= xmax + margin) & (y >= ymin - margin) & (y <= ymax + margin))


# ---------------------------------------------------------------------------
# View.


def _in_view(xy: np.ndarray, view: Bounds, margin: float = 0.0) -> np.ndarray:
  """(...) bool: (..., 2) points inside ``view`` grown by ``margin``."""
  xy = np.asarray(xy)
  return ((xy[..., 0] >= view[0] - margin) & (xy[..., 0] <= view[1] + margin)
          & (xy[..., 1] >= view[2] - margin) & (xy[..., 1] <= view[3] + margin))


def _auto_view(center: np.ndarray, half: float, content: np.ndarray,
               include: np.ndarray | None = None, include_pad: float = 10.0,
               max_aspect: float = 4.0, pad: float = 5.0) -> Bounds:
  """A view of ``half`` metres around ``center``, trimmed to the content.

  Args:
    center: (M, 2) points the view is built around (M >= 1; usually just the
      SDC): their bounding box grown by ``half`` on every side.
    half: metres of context around ``center``.
    content: (K, 2) every drawable point (road graph, objects); the view is
      trimmed to their bounding box plus ``pad`` so a small scene does not
      float in empty space.
    include: optional (J, 2) points (e.g. the tracks to predict) that the view
      is grown to show, with ``include_pad`` metres around them; points
      farther than ``2 * half`` from the centre are ignored.
    include_pad: margin around ``include`` points (m).
    max_aspect: the longer side is at most this many times the shorter one
      (the shorter one is grown about its middle).
    pad: margin around the content (m).

  Returns:
    (xmin, xmax, ymin, ymax).
  """
  center = np.asarray(center, np.float64).reshape(-1, 2)
  flo, fhi = center.min(0), center.max(0)
  lo, hi = flo - half, fhi + half
  if content.size:
    lo = np.maximum(lo, np.minimum(content.min(0), flo) - pad)
    hi = np.minimum(hi, np.maximum(content.max(0), fhi) + pad)
  if include is not None and include.size:
    # Only points within 2 * half of the centre: far-away tracks would
    # otherwise zoom a kilometre-long map out to an unreadable scale.
    near = np.all((include >= flo - 2 * half) & (include <= fhi + 2 * half),
                  axis=-1)
    include = include[near]
  if include is not None and include.size:
    lo = np.minimum(lo, include.min(0) - include_pad)
    hi = np.maximum(hi, include.max(0) + include_pad)
  size = hi - lo
  short = int(np.argmin(size))
  need = size[1 - short] / max_aspect
  if size[short] < need:
    mid = 0.5 * (lo[short] + hi[short])
    lo[short], hi[short] = mid - need / 2, mid + need / 2
  return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _resolve_view(center: Sequence[float] | None, extent: Any,
                  default_center: np.ndarray, focus: np.ndarray,
                  content: np.ndarray) -> Bounds:
  """Turns the ``center`` / ``extent`` arguments into view bounds."""
  if extent is not None and np.size(extent) == 4:
    xmin, xmax, ymin, ymax = (float(v) for v in extent)
    if not (xmax > xmin and ymax > ymin):
      raise ValueError(f'extent (xmin, xmax, ymin, ymax) = {tuple(extent)} '
                       'is empty.')
    return xmin, xmax, ymin, ymax
  c = np.asarray(default_center if center is None else center, np.float64)
  if c.shape != (2,):
    raise ValueError(f'center must be (x, y), got shape {c.shape}.')
  if extent is not None:
    half = float(extent)
    if not half > 0:
      raise ValueError(f'extent must be a positive half-size in metres or '
                       f'(xmin, xmax, ymin, ymax), got {extent!r}.')
    return c[0] - half, c[0] + half, c[1] - half, c[1] + half
  return _auto_view(c, DEFAULT_HALF_EXTENT, content,
                    include=None if center is not None else focus)


# ---------------------------------------------------------------------------
# Drawing pieces.


def _check_unbatched(state: datatypes.SimulatorState, fn: str) -> None:
  shape = tuple(np.shape(state.object_metadata.ids)[:-1])
  if shape:
    raise ValueError(
        f'{fn} draws one scenario, but the state is batched with batch shape '
        f'{shape}; select one first, e.g. '
        'jax.tree.map(lambda x: x[0], state).')


def _object_colors(types: np.ndarray) -> list[str]:
  return [_OBJECT_COLORS.get(int(t), _OBJECT_COLORS[int(_O.OTHER)])
          for t in types]


def _draw_roadgraph(ax, roadgraph: datatypes.RoadgraphPoints,
                    view: Bounds) -> list[Any]:
  """Draws the cropped road graph; returns legend handles for what it drew."""
  mask = _crop_mask(roadgraph, view)
  handles = []
  # Polygons first (below the lines).
  polys = _polygons(roadgraph, mask)
  for ptype, (label, face, alpha, edge) in _POLYGON_STYLES.items():
    verts = [v for t, v in polys if t == ptype]
    if not verts:
      continue
    ax.add_collection(mcoll.PolyCollection(
        verts, facecolors=mcolors.to_rgba(face, alpha),
        edgecolors=mcolors.to_rgba(edge, 0.8), linewidths=0.6, zorder=1,
        gid=f'roadgraph-polygons/{label}'))
    handles.append(mpatches.Patch(facecolor=mcolors.to_rgba(face, alpha),
                                  edgecolor=edge, linewidth=0.6, label=label))
  lines, types = _polylines(roadgraph, mask)
  drawn = set()
  for key, (style_types, kwargs, double) in _LINE_STYLES.items():
    sel = [line for line, t in zip(lines, types) if t in style_types]
    if not sel:
      continue
    drawn.add(key.split('_')[0])
    ax.add_collection(mcoll.LineCollection(sel, gid=f'roadgraph/{key}',
                                           **kwargs))
    if double:
      over = dict(kwargs, colors=_BACKGROUND,
                  linewidths=kwargs['linewidths'] / 3.2,
                  zorder=kwargs['zorder'] + 0.1)
      ax.add_collection(mcoll.LineCollection(
          sel, gid=f'roadgraph-overlay/{key}', **over))
  line_handles = {
      'lane': mlines.Line2D([], [], color=_LANE, lw=0.8, ls=(0, (4, 3)),
                            label='Lane centre'),
      'white': mlines.Line2D([], [], color=_WHITE_LINE, lw=1.0,
                             label='Road line (white)'),
      'yellow': mlines.Line2D([], [], color=_YELLOW_LINE, lw=1.2,
                              label='Road line (yellow)'),
      'edge': mlines.Line2D([], [], color=_EDGE, lw=1.6, label='Road edge'),
  }
  handles = [h for k, h in line_handles.items() if k in drawn] + handles
  # Stop signs.
  valid = np.asarray(roadgraph.valid, bool)
  stop = mask & valid & (np.asarray(roadgraph.types) == _M.STOP_SIGN)
  if stop.any():
    sx, sy = np.asarray(roadgraph.x)[stop], np.asarray(roadgraph.y)[stop]
    # A red octagon with a white inner ring, like the sign itself.
    ax.scatter(sx, sy, marker='8', s=95, facecolors=_STOP_SIGN,
               edgecolors='none', zorder=5, gid='roadgraph/stop_sign')
    ax.scatter(sx, sy, marker='8', s=42, facecolors=_STOP_SIGN,
               edgecolors='white', linewidths=0.9, zorder=5.1)
    handles.append((
        mlines.Line2D([], [], ls='none', marker='8', ms=10, mfc=_STOP_SIGN,
                      mec='none'),
        mlines.Line2D([], [], ls='none', marker='8', ms=6.5, mfc=_STOP_SIGN,
                      mec='white', mew=0.9, label='Stop sign')))
  return handles


def _light_colors(states: np.ndarray) -> tuple[list[str], list[str]]:
  """(colour, group key) per traffic-light state."""
  colors, keys = [], []
  for s in states:
    key = 'unknown'
    for k, (_, _, members) in _LIGHT_GROUPS.items():
      if int(s) in [int(m) for m in members]:
        key = k
        break
    colors.append(_LIGHT_GROUPS[key][1])
    keys.append(key)
  return colors, keys


def _light_handles(keys: Sequence[str]) -> list[Any]:
  return [mlines.Line2D([], [], ls='none', marker='o', ms=6, mfc=color,
                        mec=_LIGHT_EDGE, mew=1.4, label=label)
          for k, (label, color, _) in _LIGHT_GROUPS.items() if k in keys]


def _object_handles(types_drawn: set[int], sdc: bool,
                    modeled: bool) -> list[Any]:
  handles = []
  if sdc:
    handles.append(mpatches.Patch(facecolor=_SDC_COLOR, edgecolor='black',
                                  linewidth=1.2, label='SDC'))
  for t in (_O.VEHICLE, _O.PEDESTRIAN, _O.CYCLIST, _O.OTHER):
    if int(t) in types_drawn:
      handles.append(mpatches.Patch(
          facecolor=_OBJECT_COLORS[int(t)], edgecolor='none',
          label=_OBJECT_LABELS[int(t)]))
  if modeled:
    handles.append(mpatches.Patch(facecolor='none', edgecolor=_MODELED_EDGE,
                                  linewidth=1.6, label='Track to predict'))
  return handles


def _new_figure(view: Bounds, legend: bool,
                figsize: tuple[float, float] | None):
  """A pyplot-free figure with one axes sized to the view's aspect."""
  dx, dy = view[1] - view[0], view[3] - view[2]
  if figsize is None:
    map_w = 7.0
    map_h = float(np.clip(map_w * dy / dx, 2.0, 9.0))
    if dy / dx > 0.55:  # legend to the right
      figsize = (map_w + (2.0 if legend else 0.3), map_h + 0.6)
    else:  # wide view: legend underneath
      figsize = (map_w + 0.4, map_h + (1.3 if legend else 0.6))
  fig = mfigure.Figure(figsize=figsize)
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_axes((0.08, 0.08, 0.84, 0.84))
  return fig, ax


def _style_axes(ax, view: Bounds) -> None:
  ax.set_facecolor(_BACKGROUND)
  ax.set_xlim(view[0], view[1])
  ax.set_ylim(view[2], view[3])
  ax.set_aspect('equal', adjustable='box')
  ax.set_xlabel('x (m)', fontsize=8)
  ax.set_ylabel('y (m)', fontsize=8)
  ax.tick_params(labelsize=7, length=2.5, color='#888888')
  ax.ticklabel_format(useOffset=False, style='plain')
  for spine in ax.spines.values():
    spine.set_color('#888888')
    spine.set_linewidth(0.6)


def _labels(handles: list[Any]) -> list[str]:
  return [(h[-1] if isinstance(h, tuple) else h).get_label() for h in handles]


def _add_legend(ax, handles: list[Any], view: Bounds) -> None:
  if not handles:
    return
  dx, dy = view[1] - view[0], view[3] - view[2]
  kw = dict(fontsize=7.5, frameon=False, handlelength=2.2, borderaxespad=0.0)
  if dy / dx > 0.55:
    ax.legend(handles, _labels(handles), loc='upper left',
              bbox_to_anchor=(1.03, 1.0), **kw)
  else:
    # Below the tick labels and the x label (borderaxespad is in font sizes).
    kw['borderaxespad'] = 3.6
    ax.legend(handles, _labels(handles), loc='upper center',
              bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(handles)), **kw)


def _as_k_n_t_2(trajectories: Any, num_objects: int) -> np.ndarray:
  fut = np.asarray(trajectories, np.float64)
  if fut.ndim == 3:
    fut = fut[None]
  if fut.ndim != 4 or fut.shape[-1] < 2 or fut.shape[1] != num_objects:
    raise ValueError(
        f'trajectories must have shape (K, N, T, 2) (or (N, T, 2)) with '
        f'N = {num_objects} objects, got {np.shape(trajectories)}.')
  return fut[..., :2]


# ---------------------------------------------------------------------------
# Public API.


def plot_scenario(
    state: datatypes.SimulatorState,
    *,
    path: PathLike | None = None,
    ax: Any = None,
    title: str | None = None,
    timestep: int | None = None,
    use_log: bool = True,
    trajectories: Any = None,
    center: Sequence[float] | None = None,
    extent: Any = None,
    show_ids: bool = False,
    dpi: int = 150,
    legend: bool = True,
    figsize: tuple[float, float] | None = None,
) -> mfigure.Figure:
  """Draws one scenario at one step.

  Draws the road graph by type (lane centres thin grey dashed, white road
  lines grey, yellow road lines amber, broken lines dashed, double lines
  doubled, road edges thick dark, crosswalks / speed bumps / driveways as
  translucent polygons, stop signs as red octagons), the boxes of the objects
  valid at ``timestep`` coloured by type with a heading tick (the SDC in
  red-orange, ``tracks_to_predict`` outlined in black), their history trails
  (fading with age), optional future trajectories, the traffic-light states at
  ``timestep`` as dots at the stop points, and a legend of what was drawn.

  Args:
    state: an unbatched SimulatorState (Trajectory (N, T), RoadgraphPoints
      (P,), TrafficLights (L, T)); numpy or jax arrays.
    path: if set, the figure is saved there (the format follows the suffix,
      e.g. ``.png``), cropped to its content.
    ax: draw into this axes instead of a new figure.
    title: axes title; the step number is appended.
    timestep: the step drawn, in [0, T); default ``state.timestep``.
    use_log: boxes and trails from ``log_trajectory`` (True) or
      ``sim_trajectory`` (False).
    trajectories: optional (K, N, T', 2) float array (or (N, T', 2)) of
      sampled future positions, e.g. K rollouts of T' steps after
      ``timestep``; drawn thin and translucent in each object's colour for the
      objects valid at ``timestep``. Non-finite values are gaps.
    center: (x, y) centre of the view; default the SDC at ``timestep``.
    extent: None for an automatic view (75 m around ``center`` or the SDC,
      grown to include the ``tracks_to_predict`` within 150 m of it, trimmed
      to where the scene has content); a number for a square of that
      half-size (m) around the centre; or (xmin, xmax, ymin, ymax).
    show_ids: write each drawn object's track id next to its box.
    dpi: resolution of the saved image.
    legend: draw the legend (beside the map, or under a wide map).
    figsize: figure size in inches for a new figure; default from the view's
      aspect (about 1300 px wide at dpi 150).

  Returns:
    The matplotlib Figure (``ax.figure`` when ``ax`` is given).

  Raises:
    ValueError: for a batched state (naming its batch shape), a timestep out
      of range, or badly shaped ``trajectories`` / ``center`` / ``extent``.
  """
  _check_unbatched(state, 'plot_scenario')
  state = _np(state)
  traj = state.log_trajectory if use_log else state.sim_trajectory
  meta = state.object_metadata
  num_objects, num_steps = np.shape(traj.x)
  t = int(state.timestep) if timestep is None else int(timestep)
  if not 0 <= t < num_steps:
    raise ValueError(f'timestep {t} is outside [0, {num_steps}).')

  xy = np.stack([traj.x, traj.y], -1).astype(np.float64)  # (N, T, 2)
  valid = np.asarray(traj.valid, bool) & np.asarray(meta.is_valid,
                                                    bool)[:, None]
  now = valid[:, t]
  is_sdc = np.asarray(meta.is_sdc, bool) & now
  modeled = np.asarray(meta.is_modeled, bool) & now
  fut = None
  if trajectories is not None:
    fut = _as_k_n_t_2(trajectories, num_objects)

  # --- view -----------------------------------------------------------------
  rg = state.roadgraph_points
  rg_valid = np.asarray(rg.valid, bool)
  rg_xy = np.stack([rg.x, rg.y], -1)[rg_valid].astype(np.float64)
  if is_sdc.any():
    default_center = xy[np.argmax(is_sdc), t]
  elif now.any():
    default_center = xy[now, t].mean(0)
  elif rg_xy.size:
    default_center = 0.5 * (rg_xy.min(0) + rg_xy.max(0))
  else:
    default_center = np.zeros(2)
  focus = xy[modeled, t]
  content = np.concatenate([rg_xy, xy[now, t]])
  view = _resolve_view(center, extent, default_center, focus, content)

  if ax is None:
    fig, ax = _new_figure(view, legend, figsize)
  else:
    fig = ax.figure
  _style_axes(ax, view)
  handles = _draw_roadgraph(ax, rg, view)

  # --- history trails ---------------------------------------------------------
  trails_drawn = False
  colors = np.array([mcolors.to_rgba(c) for c in
                     _object_colors(meta.object_types)]).reshape(-1, 4)
  colors[np.asarray(meta.is_sdc, bool)] = mcolors.to_rgba(_SDC_COLOR)
  if t > 0:
    seg_ok = valid[:, :t] & valid[:, 1:t + 1] & now[:, None]  # (N, t)
    n_idx, s_idx = np.nonzero(seg_ok)
    if n_idx.size:
      segs = np.stack([xy[n_idx, s_idx], xy[n_idx, s_idx + 1]], 1)
      age = (t - 1 - s_idx) / max(t - 1, 1)  # 0 newest .. 1 oldest
      rgba = colors[n_idx].copy()
      rgba[:, 3] = 0.75 - 0.65 * age
      ax.add_collection(mcoll.LineCollection(
          segs, colors=rgba, linewidths=1.4, capstyle='butt', zorder=6,
          gid='trails'))
      trails_drawn = True

  # --- future trajectories ----------------------------------------------------
  if fut is not None and now.any():
    k, _, _, _ = fut.shape
    alpha = float(np.clip(2.0 / np.sqrt(k), 0.12, 0.6))
    lines, line_colors = [], []
    for n in np.flatnonzero(now):
      for j in range(k):
        pts = np.concatenate([xy[n, t][None], fut[j, n]])
        pts[~np.isfinite(pts).all(-1)] = np.nan
        lines.append(pts)
        line_colors.append(colors[n, :3].tolist() + [alpha])
    ax.add_collection(mcoll.LineCollection(
        lines, colors=line_colors, linewidths=0.7, zorder=6.5,
        gid='futures'))
    handles_fut = [mlines.Line2D([], [], color='#555555', lw=0.8,
                                alpha=max(alpha, 0.5),
                                label='Sampled futures' if k > 1 else
                                'Future trajectory')]
  else:
    handles_fut = []

  # --- traffic lights ---------------------------------------------------------
  lights = state.log_traffic_light
  light_keys: list[str] = []
  if np.size(lights.valid):
    lv = np.asarray(lights.valid, bool)[:, t] & _in_view(
        np.stack([lights.x[:, t], lights.y[:, t]], -1), view)
    if lv.any():
      lc, light_keys = _light_colors(np.asarray(lights.state)[lv, t])
      ax.scatter(np.asarray(lights.x)[lv, t], np.asarray(lights.y)[lv, t],
                 s=28, c=lc, edgecolors=_LIGHT_EDGE, linewidths=1.4, zorder=7,
                 gid='traffic_lights')

  # --- boxes ------------------------------------------------------------------
  order = np.flatnonzero(now)
  order = order[np.argsort(is_sdc[order] * 2 + modeled[order], kind='stable')]
  if order.size:
    corners = box_corners(traj.x[order, t], traj.y[order, t],
                          traj.length[order, t], traj.width[order, t],
                          traj.yaw[order, t])
    face = colors[order].copy()
    face[:, 3] = 0.9
    edge = np.array([mcolors.to_rgba(_MODELED_EDGE) if modeled[n] or is_sdc[n]
                     else (0.15, 0.15, 0.15, 0.7) for n in order])
    lw = np.where(modeled[order] | is_sdc[order], 1.5, 0.5)
    small = np.isin(np.asarray(meta.object_types)[order], _SMALL_TYPES)
    if small.any():
      ax.scatter(traj.x[order, t][small], traj.y[order, t][small], s=22,
                 c=face[small], edgecolors=edge[small], linewidths=lw[small],
                 zorder=7.9, gid='small_objects')
    ax.add_collection(mcoll.PolyCollection(
        corners, facecolors=face, edgecolors=edge, linewidths=lw, zorder=8,
        gid='boxes'))
    # Heading ticks: from the centre to the middle of the front edge.
    front = 0.5 * (corners[:, 0] + corners[:, 1])
    ticks = np.stack([xy[order, t], front], 1)
    ax.add_collection(mcoll.LineCollection(
        ticks, colors=_TICK, linewidths=0.8, capstyle='round', zorder=9,
        gid='headings'))
    if show_ids:
      ids = np.asarray(meta.ids)
      for n, c in zip(order, corners):
        ax.annotate(str(int(ids[n])), c[1], xytext=(1, 1),
                    textcoords='offset points', fontsize=5.5, color='#222222',
                    zorder=10, clip_on=True)

  shown = now & _in_view(xy[:, t], view)  # for the legend
  types_drawn = {int(v) if int(v) in _OBJECT_COLORS else int(_O.OTHER)
                 for v in np.asarray(meta.object_types)[shown & ~is_sdc]}
  handles_obj = _object_handles(types_drawn, bool((is_sdc & shown).any()),
                                bool((modeled & shown).any()))
  if trails_drawn:
    handles_obj.append(mlines.Line2D([], [], color='#555555', lw=1.4,
                                     alpha=0.6, label='History'))
  handles = handles_obj + handles_fut + _light_handles(light_keys) + handles
  step = f'step {t} ({t * datatypes.TIME_INTERVAL:.1f} s)'
  ax.set_title(f'{title}  ·  {step}' if title else step, fontsize=9)
  if legend:
    _add_legend(ax, handles, view)
  if path is not None:
    extra = {}
    if os.fspath(path).lower().endswith('.png'):
      extra['pil_kwargs'] = {'optimize': True}
    fileio.save_figure(fig, path, dpi=dpi, bbox_inches='tight',
                       pad_inches=0.08, facecolor='white', **extra)
  return fig


def _rollout_arrays(state: datatypes.SimulatorState, trajectories: Any):
  """(x, y, yaw, length, width, valid), each (N, T), from either input."""
  meta_valid = np.asarray(state.object_metadata.is_valid, bool)
  num_objects = meta_valid.shape[0]
  log = state.log_trajectory
  t0 = int(state.timestep)
  if isinstance(trajectories, datatypes.Trajectory):
    tr = _np(trajectories)
    if np.ndim(tr.x) != 2 or np.shape(tr.x)[0] != num_objects:
      raise ValueError(f'trajectories must be an unbatched Trajectory (N, T) '
                       f'with N = {num_objects}, got {np.shape(tr.x)}.')
    valid = np.asarray(tr.valid, bool) & meta_valid[:, None]
    return (tr.x, tr.y, tr.yaw, tr.length, tr.width, valid)
  arr = np.asarray(trajectories, np.float64)
  if arr.ndim != 3 or arr.shape[0] != num_objects or arr.shape[-1] < 2:
    raise ValueError(f'trajectories must be (N, T, 2) positions or (N, T, 3) '
                     f'with yaw, N = {num_objects}, got {arr.shape}.')
  x, y = arr[..., 0], arr[..., 1]
  valid = np.isfinite(x) & np.isfinite(y) & meta_valid[:, None]
  # Box size and a fallback heading from the log at the state's step (or the
  # object's first valid logged step).
  lv = np.asarray(log.valid, bool)
  pick = np.where(lv[:, t0], t0, np.argmax(lv, axis=1))
  rows = np.arange(num_objects)
  length = np.asarray(log.length)[rows, pick]
  width = np.asarray(log.width)[rows, pick]
  yaw0 = np.asarray(log.yaw)[rows, pick]
  num_steps = arr.shape[1]
  if arr.shape[-1] >= 3:
    yaw = arr[..., 2]
  else:  # direction of motion, held while (nearly) stationary
    yaw = np.empty_like(x)
    prev = np.stack([np.asarray(log.x)[rows, pick],
                     np.asarray(log.y)[rows, pick]], -1)
    heading = yaw0.astype(np.float64)
    for k in range(num_steps):
      cur = np.stack([x[:, k], y[:, k]], -1)
      d = cur - prev
      moving = valid[:, k] & (np.hypot(d[:, 0], d[:, 1]) > 0.05)
      heading = np.where(moving, np.arctan2(d[:, 1], d[:, 0]), heading)
      yaw[:, k] = heading
      prev = np.where(valid[:, k, None], cur, prev)
  bc = lambda a: np.broadcast_to(a[:, None], (num_objects, num_steps))
  return x, y, yaw, bc(length), bc(width), valid


@jax.jit
def _box_overlaps(boxes: jax.Array) -> jax.Array:
  """(T, N, N) bool overlaps of (T, N, 5) boxes (compiled once per shape)."""
  return geometry.has_overlap(boxes[:, :, None, :], boxes[:, None, :, :])


def _overlapping(x, y, yaw, length, width, valid) -> np.ndarray:
  """(N, T) bool: the object's box overlaps another valid box at that step."""
  boxes = np.stack([x, y, length, width, yaw], -1).transpose(1, 0, 2)
  ov = np.array(_box_overlaps(boxes.astype(np.float32)))
  v = valid.T
  ov &= v[:, :, None] & v[:, None, :]
  ov &= ~np.eye(x.shape[0], dtype=bool)[None]
  return ov.any(-1).T


def animate_rollout(
    state: datatypes.SimulatorState,
    trajectories: Any,
    *,
    path: PathLike,
    fps: int = 10,
    title: str | None = None,
    first_step: int | None = None,
    center: Sequence[float] | None = None,
    extent: Any = None,
    dpi: int = 80,
    figsize: tuple[float, float] | None = None,
    mark_collisions: bool = False,
) -> str:
  """Writes a GIF of object boxes moving over the (static) road graph.

  The road graph is drawn once; each frame moves the boxes (coloured by type,
  the SDC highlighted, ``tracks_to_predict`` outlined), their heading ticks and
  the traffic-light dots (when the frame's step is in the log).

  Args:
    state: the unbatched SimulatorState the rollout belongs to (map, object
      metadata, box sizes, traffic lights).
    trajectories: a Trajectory (N, T) (e.g. ``state.log_trajectory`` to replay
      the log, or a simulated one), or a float array (N, T, 2) of positions or
      (N, T, 3) of positions and yaw; non-finite positions are invalid. Array
      boxes take their size from the log at ``state.timestep`` and, without a
      yaw, head along their motion.
    path: where the GIF is written.
    fps: frames per second.
    title: prefix of the per-frame title (the step number follows).
    first_step: the scenario step of frame 0, for the titles and the traffic
      lights; default 0 when the trajectory spans all of the state's steps,
      else ``state.timestep + 1`` (a rollout of the future).
    center, extent: as in ``plot_scenario``; by default the view covers the
      SDC's whole path with 40 m around it, trimmed to the scene.
    dpi, figsize: frame resolution and size (default about 600 px wide).
    mark_collisions: outline in red the boxes that overlap another box.

  Returns:
    ``path`` as a string. The GIF has one frame per step T.
  """
  return animate_rollouts(
      state, {title or '': trajectories}, path=path, fps=fps,
      first_step=first_step, center=center, extent=extent, dpi=dpi,
      figsize=figsize, mark_collisions=mark_collisions)


def animate_rollouts(
    state: datatypes.SimulatorState,
    panels: Mapping[str, Any],
    *,
    path: PathLike,
    fps: int = 10,
    first_step: int | None = None,
    center: Sequence[float] | None = None,
    extent: Any = None,
    dpi: int = 80,
    figsize: tuple[float, float] | None = None,
    mark_collisions: bool = True,
    stride: int = 1,
) -> str:
  """Writes one GIF of several rollouts of the same scenario side by side.

  Each panel is titled by its key and animates its trajectories as
  ``animate_rollout`` does, over one shared view (e.g. the reference model's
  rollout next to the aligned model's, sampled with the same seed, and the
  log). Boxes that overlap another box at a frame are outlined in red when
  ``mark_collisions``.

  Args:
    state: the unbatched SimulatorState the rollouts belong to.
    panels: title -> trajectories (a Trajectory (N, T) or an array (N, T, 2)
      or (N, T, 3), as in ``animate_rollout``); every panel has the same T.
    path, fps, first_step, center, extent, dpi: as in ``animate_rollout``.
    figsize: default about 600 px wide per panel.
    mark_collisions: outline overlapping boxes in red.
    stride: draw every ``stride``-th step (frames = ceil(T / stride); pass
      ``fps=10 // stride`` for real time).

  Returns:
    ``path`` as a string.
  """
  _check_unbatched(state, 'animate_rollouts')
  if not panels:
    raise ValueError('animate_rollouts needs at least one panel.')
  if stride < 1:
    raise ValueError(f'stride must be >= 1, got {stride}.')
  state = _np(state)
  arrays = {name: _rollout_arrays(state, t) for name, t in panels.items()}
  frames = {a[0].shape[1] for a in arrays.values()}
  if len(frames) != 1:
    raise ValueError(f'panels have different numbers of steps: '
                     f'{ {k: a[0].shape[1] for k, a in arrays.items()} }')
  num_frames = frames.pop()
  if num_frames < 1:
    raise ValueError('trajectories has no steps to animate.')
  meta = state.object_metadata
  num_log_steps = np.shape(state.log_trajectory.x)[1]
  if first_step is None:
    first_step = 0 if num_frames == num_log_steps else int(state.timestep) + 1

  is_sdc = np.asarray(meta.is_sdc, bool)
  modeled = np.asarray(meta.is_modeled, bool)
  rg = state.roadgraph_points
  rg_valid = np.asarray(rg.valid, bool)
  rg_xy = np.stack([rg.x, rg.y], -1)[rg_valid].astype(np.float64)
  all_pos = np.concatenate(
      [np.stack([a[0], a[1]], -1)[a[5]] for a in arrays.values()])
  sdc_path = np.concatenate(
      [np.stack([a[0], a[1]], -1)[is_sdc][a[5][is_sdc]]
       for a in arrays.values()]) if is_sdc.any() else np.zeros((0, 2))
  if not sdc_path.size:
    sdc_path = all_pos if all_pos.size else (
        rg_xy.mean(0, keepdims=True) if rg_xy.size else np.zeros((1, 2)))
  if center is None and extent is None:
    view = _auto_view(sdc_path, 40.0, np.concatenate([rg_xy, all_pos]))
  else:
    view = _resolve_view(center, extent, sdc_path.mean(0), np.zeros((0, 2)),
                         rg_xy)

  num_panels = len(arrays)
  if figsize is None:
    dx, dy = view[1] - view[0], view[3] - view[2]
    figsize = (7.5 * num_panels * (0.85 if num_panels > 1 else 1.0),
               float(np.clip(6.6 * dy / dx, 2.0, 8.0)) + 1.1)
  fig = mfigure.Figure(figsize=figsize, layout='constrained')
  backend_agg.FigureCanvasAgg(fig)

  colors = np.array([mcolors.to_rgba(c) for c in
                     _object_colors(meta.object_types)]).reshape(-1, 4)
  colors[is_sdc] = mcolors.to_rgba(_SDC_COLOR)
  colors[:, 3] = 0.9
  strong = modeled | is_sdc
  edge_all = np.where(strong[:, None], mcolors.to_rgba(_MODELED_EDGE),
                      (0.15, 0.15, 0.15, 0.7))
  lw_all = np.where(strong, 1.4, 0.5)
  order = np.argsort(is_sdc * 2 + modeled, kind='stable')
  lights = state.log_traffic_light
  light_keys: set[str] = set()
  if np.size(lights.valid):
    for s in range(first_step, min(first_step + num_frames, num_log_steps)):
      lv = np.asarray(lights.valid, bool)[:, s]
      light_keys.update(_light_colors(np.asarray(lights.state)[lv, s])[1])

  drawn = []  # per panel: (arrays, boxes, ticks, light dots, title, hits)
  types_drawn: set[int] = set()
  handles: list[Any] = []
  for i, (name, arr) in enumerate(arrays.items()):
    x, y, yaw, length, width, valid = arr
    ax = fig.add_subplot(1, num_panels, i + 1)
    _style_axes(ax, view)
    handles = _draw_roadgraph(ax, rg, view)
    boxes = mcoll.PolyCollection([], zorder=8)
    ax.add_collection(boxes)
    ticks = mcoll.LineCollection([], colors=_TICK, linewidths=0.7, zorder=9)
    ax.add_collection(ticks)
    dots = ax.scatter([], [], s=24, edgecolors=_LIGHT_EDGE, linewidths=1.2,
                      zorder=7)
    hits = (_overlapping(*arr) if mark_collisions else
            np.zeros_like(valid))
    types_drawn |= {
        int(v) if int(v) in _OBJECT_COLORS else int(_O.OTHER)
        for v in np.asarray(meta.object_types)[valid.any(1) & ~is_sdc]}
    drawn.append((arr, boxes, ticks, dots, ax.set_title('', fontsize=8),
                  name, hits))
  handles = (_object_handles(types_drawn, bool(is_sdc.any()),
                             bool(modeled.any())) +
             _light_handles(sorted(light_keys)) + handles)
  if mark_collisions:
    handles.append(mpatches.Patch(facecolor='none', edgecolor=_COLLISION,
                                  linewidth=1.6, label='Overlapping box'))
  fig.legend(handles, _labels(handles), loc='outside lower center',
             ncol=5 + 2 * (num_panels - 1), fontsize=6.5, frameon=False)

  writer = animation.PillowWriter(fps=fps)
  with writer.saving(fig, os.fspath(path), dpi):
    for k in range(0, num_frames, stride):
      step = first_step + k
      label = f'step {step} ({step * datatypes.TIME_INTERVAL:.1f} s)'
      for (x, y, yaw, length, width, valid), boxes, ticks, dots, title_text, \
          name, hits in drawn:
        sel = order[valid[order, k]]
        corners = box_corners(x[sel, k], y[sel, k], length[sel, k],
                              width[sel, k], yaw[sel, k])
        boxes.set_verts(corners)
        boxes.set_facecolors(colors[sel])
        hit = hits[sel, k]
        boxes.set_edgecolors(np.where(hit[:, None],
                                      mcolors.to_rgba(_COLLISION),
                                      edge_all[sel]))
        boxes.set_linewidths(np.where(hit, 1.8, lw_all[sel]))
        pos = np.stack([x[sel, k], y[sel, k]], -1)
        front = 0.5 * (corners[:, 0] + corners[:, 1])
        ticks.set_segments(np.stack([pos, front], 1))
        if np.size(lights.valid) and 0 <= step < num_log_steps:
          lv = np.asarray(lights.valid, bool)[:, step]
          dots.set_offsets(np.stack([np.asarray(lights.x)[lv, step],
                                     np.asarray(lights.y)[lv, step]], -1))
          dots.set_facecolors(
              _light_colors(np.asarray(lights.state)[lv, step])[0])
        else:
          dots.set_offsets(np.zeros((0, 2)))
        title_text.set_text(f'{name}  ·  {label}' if name else label)
      writer.grab_frame(facecolor='white')
  return os.fspath(path)


def plot_ranking(
    state: datatypes.SimulatorState,
    positions: Any,
    distances: Any,
    *,
    preferred: Sequence[int],
    unpreferred: Sequence[int],
    path: PathLike | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> mfigure.Figure:
  """Draws one scenario's rollouts ranked by their distance to the log.

  Three panels: every rollout's paths coloured by its distance rank (blue
  close, red far) with the log's paths in black; the preferred rollouts (green)
  against the unpreferred ones (red); the distances sorted, the preferred
  and unpreferred marked.

  Args:
    state: the unbatched SimulatorState (map, the log).
    positions: (K, N, T, 2) future positions of K rollouts (non-finite where
      an object is not simulated or not valid).
    distances: (K,) each rollout's distance to the log (e.g.
      ``Ranking.distances``).
    preferred, unpreferred: rollout indices of the pairs' two sides.
    path: if set, the figure is saved there.
    title: the figure's title.
    dpi: resolution of the saved image.

  Returns:
    The matplotlib Figure.
  """
  _check_unbatched(state, 'plot_ranking')
  state = _np(state)
  pos = np.asarray(positions, np.float64)
  d = np.asarray(distances, np.float64)
  if pos.ndim != 4 or pos.shape[-1] != 2 or pos.shape[0] != d.shape[0]:
    raise ValueError(f'positions must be (K, N, T, 2) with K = len(distances)'
                     f' = {d.shape[0]}, got {pos.shape}.')
  k_count, num_objects = pos.shape[:2]
  log = state.log_trajectory
  t0 = int(state.timestep)
  sim = np.isfinite(pos).all(-1).any((0, 2))  # objects some rollout moved
  lx, ly = np.asarray(log.x), np.asarray(log.y)
  lv = np.asarray(log.valid, bool)
  log_paths = [np.stack([lx[i, t0:][lv[i, t0:]], ly[i, t0:][lv[i, t0:]]], -1)
               for i in range(num_objects) if sim[i] and lv[i, t0]]
  rg = state.roadgraph_points
  rg_xy = np.stack([rg.x, rg.y], -1)[np.asarray(rg.valid, bool)]
  finite = pos[np.isfinite(pos).all(-1)]
  content = np.concatenate([finite.reshape(-1, 2)] +
                           [p for p in log_paths if p.size])
  view = _auto_view(content if content.size else rg_xy[:1], 30.0,
                    np.concatenate([rg_xy, content]))
  fig = mfigure.Figure(figsize=(16.5, 5.6), layout='constrained')
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[1.0, 1.0, 0.8]))
  import matplotlib
  cmap = matplotlib.colormaps['coolwarm']
  order = np.argsort(d, kind='stable')
  rank = np.empty(k_count, int)
  rank[order] = np.arange(k_count)
  # Coloured by rank: a few far outliers would otherwise paint the rest one
  # colour.
  norm = mcolors.Normalize(0, max(k_count - 1, 1))

  def paths(k):
    out = []
    for i in np.flatnonzero(sim):
      p = pos[k, i]
      p = p[np.isfinite(p).all(-1)]
      if len(p) > 1:
        out.append(p)
    return out

  def draw_log(ax):
    ax.add_collection(mcoll.LineCollection(
        log_paths, colors='black', linewidths=1.3, linestyles=(0, (3, 2)),
        zorder=6, label='log (demonstration)'))

  ax = axes[0]
  _style_axes(ax, view)
  _draw_roadgraph(ax, rg, view)
  for k in order[::-1]:  # the closest drawn last, on top
    ax.add_collection(mcoll.LineCollection(
        paths(k), colors=[cmap(norm(rank[k]))], linewidths=0.7, alpha=0.55,
        zorder=5))
  draw_log(ax)
  fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
               shrink=0.8, label='rank by distance to the log (0: closest)')
  ax.set_title(f'{k_count} rollouts coloured by their distance rank',
               fontsize=9)

  ax = axes[1]
  _style_axes(ax, view)
  _draw_roadgraph(ax, rg, view)
  for ks, color, label in ((unpreferred, '#d7191c', 'unpreferred'),
                           (preferred, '#1a9641', 'preferred')):
    for j, k in enumerate(ks):
      ax.add_collection(mcoll.LineCollection(
          paths(int(k)), colors=color, linewidths=0.9, alpha=0.7, zorder=5,
          label=f'{label} ({len(ks)})' if j == 0 else None))
  draw_log(ax)
  ax.legend(loc='upper right', fontsize=7)
  ax.set_title('preferred (closest) vs unpreferred (farthest)', fontsize=9)

  ax = axes[2]
  colors = np.full(k_count, '#9e9e9e', object)
  colors[np.asarray(unpreferred, int)] = '#d7191c'
  colors[np.asarray(preferred, int)] = '#1a9641'
  ax.bar(rank, d, color=list(colors), width=0.85)
  ax.set(xlabel='rollout, sorted by distance', ylabel='OT distance to the log',
         title='ranking')
  ax.title.set_fontsize(9)
  ax.grid(alpha=0.3, axis='y')
  ax.legend(handles=[mpatches.Patch(color='#1a9641', label='preferred'),
                     mpatches.Patch(color='#d7191c', label='unpreferred'),
                     mpatches.Patch(color='#9e9e9e', label='not paired')],
            fontsize=7, loc='upper left')
  if title:
    fig.suptitle(title, fontsize=10)
  if path is not None:
    fileio.save_figure(fig, path, dpi=dpi)
  return fig
