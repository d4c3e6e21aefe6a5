"""``plot_scenario``: one scenario at one step, with its legend."""

from __future__ import annotations

from collections.abc import Sequence
import os
from typing import Any, NamedTuple

from matplotlib import collections as mcoll
from matplotlib import figure as mfigure
from matplotlib import lines as mlines
import numpy as np

from prefalign import datatypes
from prefalign import fileio
from prefalign.viz import layout
from prefalign.viz import roadgraph
from prefalign.viz import style


class _Objects(NamedTuple):
  """The N objects of the drawn trajectory, at the step drawn."""
  xy: np.ndarray  # (N, T, 2) float64 positions
  valid: np.ndarray  # (N, T) bool, and the object valid in the metadata
  now: np.ndarray  # (N,) bool valid at the step
  is_sdc: np.ndarray  # (N,) bool the SDC, when valid at the step
  modeled: np.ndarray  # (N,) bool the tracks to predict valid at the step


def _objects_at(traj: datatypes.Trajectory, meta: datatypes.ObjectMetadata,
                t: int) -> _Objects:
  """The objects of the (N, T) ``traj`` at step ``t``.

  Raises:
    ValueError: when ``t`` is outside [0, T).
  """
  num_steps = np.shape(traj.x)[1]
  if not 0 <= t < num_steps:
    raise ValueError(f'timestep {t} is outside [0, {num_steps}).')
  valid = np.asarray(traj.valid, bool) & np.asarray(meta.is_valid,
                                                    bool)[:, None]
  now = valid[:, t]
  return _Objects(
      xy=np.stack([traj.x, traj.y], -1).astype(np.float64), valid=valid,
      now=now, is_sdc=np.asarray(meta.is_sdc, bool) & now,
      modeled=np.asarray(meta.is_modeled, bool) & now)


def _as_k_n_t_2(trajectories: Any, num_objects: int) -> np.ndarray:
  """(K, N, T', 2) float64 future positions from (K, N, T', >=2) or (N, ...).

  Raises:
    ValueError: for any other shape, or N other than ``num_objects``.
  """
  fut = np.asarray(trajectories, np.float64)
  if fut.ndim == 3:
    fut = fut[None]
  if fut.ndim != 4 or fut.shape[-1] < 2 or fut.shape[1] != num_objects:
    raise ValueError(
        f'trajectories must have shape (K, N, T, 2) (or (N, T, 2)) with '
        f'N = {num_objects} objects, got {np.shape(trajectories)}.')
  return fut[..., :2]


def _view(state: datatypes.SimulatorState, xy_t: np.ndarray, now: np.ndarray,
          is_sdc: np.ndarray, modeled: np.ndarray,
          center: Sequence[float] | None, extent: Any) -> style.Bounds:
  """The view of ``plot_scenario``.

  Args:
    state: the unbatched numpy SimulatorState.
    xy_t: (N, 2) object positions at the step drawn.
    now, is_sdc, modeled: (N,) bool objects valid at the step, the SDC and the
      tracks to predict among them.
    center, extent: as in ``plot_scenario``.

  Returns:
    (xmin, xmax, ymin, ymax), centred by default on the SDC (else on the
    objects valid at the step, else on the map).
  """
  rg = state.roadgraph_points
  rg_valid = np.asarray(rg.valid, bool)
  rg_xy = np.stack([rg.x, rg.y], -1)[rg_valid].astype(np.float64)
  if is_sdc.any():
    default_center = xy_t[np.argmax(is_sdc)]
  elif now.any():
    default_center = xy_t[now].mean(0)
  elif rg_xy.size:
    default_center = 0.5 * (rg_xy.min(0) + rg_xy.max(0))
  else:
    default_center = np.zeros(2)
  content = np.concatenate([rg_xy, xy_t[now]])
  return layout.resolve_view(center, extent, default_center, xy_t[modeled],
                             content)


def _draw_trails(ax, xy: np.ndarray, valid: np.ndarray, t: int,
                 colors: np.ndarray) -> bool:
  """Draws the history (steps 0..t) of the objects valid at ``t``.

  Args:
    ax: the map axes.
    xy: (N, T, 2) positions.
    valid: (N, T) bool.
    t: the step drawn.
    colors: (N, 4) RGBA object colours; the alpha fades with age.

  Returns:
    Whether any trail was drawn.
  """
  if t == 0:
    return False
  seg_ok = valid[:, :t] & valid[:, 1:t + 1] & valid[:, t, None]  # (N, t)
  n_idx, s_idx = np.nonzero(seg_ok)
  if not n_idx.size:
    return False
  segs = np.stack([xy[n_idx, s_idx], xy[n_idx, s_idx + 1]], 1)
  age = (t - 1 - s_idx) / max(t - 1, 1)  # 0 newest .. 1 oldest
  rgba = colors[n_idx].copy()
  rgba[:, 3] = 0.75 - 0.65 * age
  ax.add_collection(mcoll.LineCollection(
      segs, colors=rgba, linewidths=1.4, capstyle='butt', zorder=6,
      gid='trails'))
  return True


def _draw_futures(ax, xy_t: np.ndarray, fut: np.ndarray | None,
                  now: np.ndarray, colors: np.ndarray) -> list[Any]:
  """Draws sampled futures from each valid object's current position.

  Args:
    ax: the map axes.
    xy_t: (N, 2) positions at the step drawn.
    fut: (K, N, T', 2) future positions (non-finite: gaps), or None.
    now: (N,) bool objects valid at the step; only theirs are drawn.
    colors: (N, 4) RGBA object colours.

  Returns:
    The legend handle of the futures, if any were drawn.
  """
  if fut is None or not now.any():
    return []
  k = fut.shape[0]
  alpha = float(np.clip(2.0 / np.sqrt(k), 0.12, 0.6))
  lines, line_colors = [], []
  for n in np.flatnonzero(now):
    for j in range(k):
      pts = np.concatenate([xy_t[n][None], fut[j, n]])
      pts[~np.isfinite(pts).all(-1)] = np.nan
      lines.append(pts)
      line_colors.append(colors[n, :3].tolist() + [alpha])
  ax.add_collection(mcoll.LineCollection(
      lines, colors=line_colors, linewidths=0.7, zorder=6.5, gid='futures'))
  return [mlines.Line2D([], [], color='#555555', lw=0.8,
                        alpha=max(alpha, 0.5),
                        label='Sampled futures' if k > 1 else
                        'Future trajectory')]


def _draw_lights(ax, lights: datatypes.TrafficLights, t: int,
                 view: style.Bounds) -> list[str]:
  """Draws the (L, T) traffic lights valid at ``t`` inside the view.

  Returns:
    The light group key of each light drawn.
  """
  if not np.size(lights.valid):
    return []
  lv = np.asarray(lights.valid, bool)[:, t] & layout.in_view(
      np.stack([lights.x[:, t], lights.y[:, t]], -1), view)
  if not lv.any():
    return []
  lc, keys = roadgraph.light_colors(np.asarray(lights.state)[lv, t])
  ax.scatter(np.asarray(lights.x)[lv, t], np.asarray(lights.y)[lv, t],
             s=28, c=lc, edgecolors=style.LIGHT_EDGE, linewidths=1.4,
             zorder=7, gid='traffic_lights')
  return keys


def _draw_boxes(ax, traj: datatypes.Trajectory,
                meta: datatypes.ObjectMetadata, t: int, now: np.ndarray,
                rank: np.ndarray, colors: np.ndarray,
                show_ids: bool) -> None:
  """Draws the boxes valid at ``t``, their heading ticks and optional ids.

  Args:
    ax: the map axes.
    traj: the (N, T) Trajectory drawn.
    meta: the (N,) ObjectMetadata.
    t: the step drawn.
    now: (N,) bool objects valid at ``t``.
    rank: (N,) int ``2 * is_sdc + is_modeled``: higher ranks are drawn on
      top, and ranks above 0 outlined dark.
    colors: (N, 4) RGBA object colours.
    show_ids: write each object's track id next to its box.
  """
  order = np.flatnonzero(now)
  order = order[np.argsort(rank[order], kind='stable')]
  if not order.size:
    return
  corners = layout.box_corners(traj.x[order, t], traj.y[order, t],
                               traj.length[order, t], traj.width[order, t],
                               traj.yaw[order, t])
  face = colors[order].copy()
  face[:, 3] = 0.9
  strong = rank[order] > 0
  edge = layout.edge_rgba(strong)
  lw = np.where(strong, 1.5, 0.5)
  small = np.isin(np.asarray(meta.object_types)[order], style.SMALL_TYPES)
  if small.any():
    ax.scatter(traj.x[order, t][small], traj.y[order, t][small], s=22,
               c=face[small], edgecolors=edge[small], linewidths=lw[small],
               zorder=7.9, gid='small_objects')
  ax.add_collection(mcoll.PolyCollection(
      corners, facecolors=face, edgecolors=edge, linewidths=lw, zorder=8,
      gid='boxes'))
  # Heading ticks: from the centre to the middle of the front edge.
  pos = np.stack([traj.x[order, t], traj.y[order, t]], -1).astype(np.float64)
  front = 0.5 * (corners[:, 0] + corners[:, 1])
  ax.add_collection(mcoll.LineCollection(
      np.stack([pos, front], 1), colors=style.TICK, linewidths=0.8,
      capstyle='round', zorder=9, gid='headings'))
  if show_ids:
    ids = np.asarray(meta.ids)
    for n, c in zip(order, corners):
      ax.annotate(str(int(ids[n])), c[1], xytext=(1, 1),
                  textcoords='offset points', fontsize=5.5, color='#222222',
                  zorder=10, clip_on=True)


def _object_legend(meta: datatypes.ObjectMetadata, shown: np.ndarray,
                   is_sdc: np.ndarray, modeled: np.ndarray,
                   trails: bool) -> list[Any]:
  """Legend handles of the objects drawn inside the view and their trails.

  Args:
    meta: the (N,) ObjectMetadata.
    shown: (N,) bool objects drawn inside the view.
    is_sdc, modeled: (N,) bool the SDC and the tracks to predict.
    trails: whether history trails were drawn.

  Returns:
    The handles.
  """
  types_drawn = layout.legend_types(
      np.asarray(meta.object_types)[shown & ~is_sdc])
  handles = layout.object_handles(types_drawn, bool((is_sdc & shown).any()),
                                  bool((modeled & shown).any()))
  if trails:
    handles.append(mlines.Line2D([], [], color='#555555', lw=1.4,
                                 alpha=0.6, label='History'))
  return handles


def _save(fig: mfigure.Figure, path: style.PathLike, dpi: int) -> None:
  """Saves ``fig`` cropped to its content (an optimised PNG for ``.png``)."""
  extra = {}
  if os.fspath(path).lower().endswith('.png'):
    extra['pil_kwargs'] = {'optimize': True}
  fileio.save_figure(fig, path, dpi=dpi, bbox_inches='tight',
                     pad_inches=0.08, facecolor='white', **extra)


def plot_scenario(
    state: datatypes.SimulatorState,
    *,
    path: style.PathLike | None = None,
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
  layout.check_unbatched(state, 'plot_scenario')
  state = layout.to_numpy(state)
  traj = state.log_trajectory if use_log else state.sim_trajectory
  meta = state.object_metadata
  t = int(state.timestep) if timestep is None else int(timestep)
  xy, valid, now, is_sdc, modeled = _objects_at(traj, meta, t)
  fut = (None if trajectories is None else
         _as_k_n_t_2(trajectories, xy.shape[0]))
  view = _view(state, xy[:, t], now, is_sdc, modeled, center, extent)
  if ax is None:
    fig, ax = layout.new_figure(view, legend, figsize)
  else:
    fig = ax.figure
  layout.style_axes(ax, view)
  map_handles = roadgraph.draw_roadgraph(ax, state.roadgraph_points, view)
  colors = layout.object_rgba(meta)
  trails = _draw_trails(ax, xy, valid, t, colors)
  future_handles = _draw_futures(ax, xy[:, t], fut, now, colors)
  light_keys = _draw_lights(ax, state.log_traffic_light, t, view)
  _draw_boxes(ax, traj, meta, t, now, is_sdc * 2 + modeled, colors, show_ids)
  shown = now & layout.in_view(xy[:, t], view)
  handles = (_object_legend(meta, shown, is_sdc, modeled, trails) +
             future_handles + roadgraph.light_handles(light_keys) +
             map_handles)
  step = f'step {t} ({t * datatypes.TIME_INTERVAL:.1f} s)'
  ax.set_title(f'{title}  ·  {step}' if title else step, fontsize=9)
  if legend:
    layout.add_legend(ax, handles, view)
  if path is not None:
    _save(fig, path, dpi)
  return fig
