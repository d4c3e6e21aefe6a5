"""Views, figures, axes, legends and the object marks shared by the plots.

The view is the (xmin, xmax, ymin, ymax) window drawn, in metres; by default
it is built around the SDC and trimmed to where the scene has content.
Figures are plain ``matplotlib.figure.Figure`` objects with an Agg canvas
(no pyplot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from matplotlib import colors as mcolors
from matplotlib import figure as mfigure
from matplotlib import patches as mpatches
from matplotlib.backends import backend_agg
import numpy as np

from prefalign import datatypes
from prefalign.sim import geometry
from prefalign.viz import style

_O = datatypes.ObjectTypeIds

# Half-size of the default view around the SDC, as in Waymax's viewer
# (VizConfig front_x = back_x = front_y = back_y = 75 m).
DEFAULT_HALF_EXTENT = 75.0


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
  args = [np.asarray(a, np.float64) for a in (x, y, length, width, yaw)]
  # ``geometry.box_corners`` in float64 on the host: in jax's default float32
  # the corners at map coordinates (kilometres from the origin) would move by
  # up to ~7e-4 m at 8 km, and the pictures with them.
  with jax.enable_x64(True), jax.default_device(jax.devices('cpu')[0]):
    return np.asarray(geometry.box_corners(*args))


def to_numpy(tree: Any) -> Any:
  """Converts every array leaf of a pytree to numpy."""
  return jax.tree.map(np.asarray, tree)


def check_unbatched(state: datatypes.SimulatorState, fn: str) -> None:
  """Raises a ValueError naming ``fn`` and the batch shape of a batched state.

  Args:
    state: a SimulatorState; unbatched when its object metadata is (N,).
    fn: the name of the drawing function, for the message.
  """
  shape = tuple(np.shape(state.object_metadata.ids)[:-1])
  if shape:
    raise ValueError(
        f'{fn} draws one scenario, but the state is batched with batch shape '
        f'{shape}; select one first, e.g. '
        'jax.tree.map(lambda x: x[0], state).')


# ---------------------------------------------------------------------------
# View.


def in_view(xy: np.ndarray, view: style.Bounds,
            margin: float = 0.0) -> np.ndarray:
  """(...) bool: (..., 2) points inside ``view`` grown by ``margin``."""
  xy = np.asarray(xy)
  return ((xy[..., 0] >= view[0] - margin) & (xy[..., 0] <= view[1] + margin)
          & (xy[..., 1] >= view[2] - margin) & (xy[..., 1] <= view[3] + margin))


def auto_view(center: np.ndarray, half: float, content: np.ndarray,
              include: np.ndarray | None = None, include_pad: float = 10.0,
              max_aspect: float = 4.0, pad: float = 5.0) -> style.Bounds:
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


def resolve_view(center: Sequence[float] | None, extent: Any,
                 default_center: np.ndarray, focus: np.ndarray,
                 content: np.ndarray) -> style.Bounds:
  """Turns the ``center`` / ``extent`` arguments into view bounds.

  Args:
    center: (x, y) given by the caller, or None for ``default_center``.
    extent: None (automatic), a half-size in metres, or (xmin, xmax, ymin,
      ymax).
    default_center: (2,) the centre when ``center`` is None.
    focus: (J, 2) points an automatic view around ``default_center`` is grown
      to show (see ``auto_view``'s ``include``).
    content: (K, 2) every drawable point, for trimming an automatic view.

  Returns:
    (xmin, xmax, ymin, ymax).

  Raises:
    ValueError: for an empty ``extent`` box, a non-positive half-size or a
      ``center`` that is not (x, y).
  """
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
  return auto_view(c, DEFAULT_HALF_EXTENT, content,
                   include=None if center is not None else focus)


# ---------------------------------------------------------------------------
# Figure, axes and legend.


def new_figure(view: style.Bounds, legend: bool,
               figsize: tuple[float, float] | None):
  """A pyplot-free figure with one axes sized to the view's aspect.

  Args:
    view: (xmin, xmax, ymin, ymax).
    legend: leave room for a legend (right of a tall view, under a wide one).
    figsize: (width, height) in inches; default from the view's aspect.

  Returns:
    (figure, axes).
  """
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


def style_axes(ax, view: style.Bounds) -> None:
  """Sets the map axes' limits to ``view``, equal aspect, labels and ticks."""
  ax.set_facecolor(style.BACKGROUND)
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


def labels(handles: list[Any]) -> list[str]:
  """The label of each legend handle (a tuple's last artist carries it)."""
  return [(h[-1] if isinstance(h, tuple) else h).get_label() for h in handles]


def add_legend(ax, handles: list[Any], view: style.Bounds) -> None:
  """Adds the legend right of a tall view or under a wide one."""
  if not handles:
    return
  dx, dy = view[1] - view[0], view[3] - view[2]
  kw = dict(fontsize=7.5, frameon=False, handlelength=2.2, borderaxespad=0.0)
  if dy / dx > 0.55:
    ax.legend(handles, labels(handles), loc='upper left',
              bbox_to_anchor=(1.03, 1.0), **kw)
  else:
    # Below the tick labels and the x label (borderaxespad is in font sizes).
    kw['borderaxespad'] = 3.6
    ax.legend(handles, labels(handles), loc='upper center',
              bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(handles)), **kw)


# ---------------------------------------------------------------------------
# Objects.


def object_rgba(meta: datatypes.ObjectMetadata) -> np.ndarray:
  """(N, 4) float RGBA of each object: by type, the SDC in its own colour."""
  colors = np.array([
      mcolors.to_rgba(style.OBJECT_COLORS.get(
          int(t), style.OBJECT_COLORS[int(_O.OTHER)]))
      for t in meta.object_types]).reshape(-1, 4)
  colors[np.asarray(meta.is_sdc, bool)] = mcolors.to_rgba(style.SDC_COLOR)
  return colors


def edge_rgba(strong: np.ndarray) -> np.ndarray:
  """(N, 4) box outline colours: dark where (N,) ``strong``, else grey."""
  return np.where(np.asarray(strong, bool)[:, None],
                  mcolors.to_rgba(style.MODELED_EDGE), style.OTHER_EDGE)


def legend_types(types: np.ndarray) -> set[int]:
  """The object types of (K,) ``types`` as legend keys (unknown -> OTHER)."""
  return {int(v) if int(v) in style.OBJECT_COLORS else int(_O.OTHER)
          for v in np.asarray(types)}


def object_handles(types_drawn: set[int], sdc: bool,
                   modeled: bool) -> list[Any]:
  """Legend handles: the SDC, the object types drawn, the tracks to predict.

  Args:
    types_drawn: object types drawn (as ``legend_types`` returns).
    sdc: whether the SDC was drawn.
    modeled: whether a track to predict was drawn.

  Returns:
    The handles, in that order.
  """
  handles = []
  if sdc:
    handles.append(mpatches.Patch(facecolor=style.SDC_COLOR,
                                  edgecolor='black', linewidth=1.2,
                                  label='SDC'))
  for t in (_O.VEHICLE, _O.PEDESTRIAN, _O.CYCLIST, _O.OTHER):
    if int(t) in types_drawn:
      handles.append(mpatches.Patch(
          facecolor=style.OBJECT_COLORS[int(t)], edgecolor='none',
          label=style.OBJECT_LABELS[int(t)]))
  if modeled:
    handles.append(mpatches.Patch(facecolor='none',
                                  edgecolor=style.MODELED_EDGE,
                                  linewidth=1.6, label='Track to predict'))
  return handles
