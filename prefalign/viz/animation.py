"""Rollout GIFs: boxes moving over the road graph, one panel per rollout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from typing import Any, NamedTuple

from matplotlib import animation
from matplotlib import collections as mcoll
from matplotlib import colors as mcolors
from matplotlib import figure as mfigure
from matplotlib import patches as mpatches
from matplotlib.backends import backend_agg
import numpy as np

from prefalign import datatypes
from prefalign.viz import layout
from prefalign.viz import roadgraph
from prefalign.viz import rollouts
from prefalign.viz import style


class _Look(NamedTuple):
  """How each of the N objects' boxes is drawn."""
  colors: np.ndarray  # (N, 4) RGBA faces
  edges: np.ndarray  # (N, 4) RGBA outlines
  widths: np.ndarray  # (N,) outline widths
  order: np.ndarray  # (N,) drawing order: the SDC and modelled ones last


class _Panel(NamedTuple):
  """One rollout's panel: its boxes and the artists updated every frame."""
  name: str
  arrays: rollouts.RolloutArrays
  hits: np.ndarray  # (N, T) bool boxes outlined as overlapping
  boxes: mcoll.PolyCollection
  ticks: mcoll.LineCollection
  dots: Any  # the traffic lights' PathCollection
  title: Any  # the panel title's Text


def _object_look(meta: datatypes.ObjectMetadata) -> _Look:
  """Face colours, outlines and drawing order of the (N,) objects."""
  is_sdc = np.asarray(meta.is_sdc, bool)
  modeled = np.asarray(meta.is_modeled, bool)
  colors = layout.object_rgba(meta)
  colors[:, 3] = 0.9
  strong = modeled | is_sdc
  return _Look(colors=colors, edges=layout.edge_rgba(strong),
               widths=np.where(strong, 1.4, 0.5),
               order=np.argsort(is_sdc * 2 + modeled, kind='stable'))


def _shared_view(state: datatypes.SimulatorState,
                   arrays: Mapping[str, rollouts.RolloutArrays],
                   center: Sequence[float] | None,
                   extent: Any) -> style.Bounds:
  """The view shared by the panels: by default 40 m around the SDC's paths.

  Args:
    state: the unbatched numpy SimulatorState.
    arrays: each panel's boxes (``rollouts.rollout_arrays``).
    center, extent: as in ``plot_scenario``, centred by default on the mean
      of the SDC's positions (else of every object's, else of the map).

  Returns:
    (xmin, xmax, ymin, ymax).
  """
  is_sdc = np.asarray(state.object_metadata.is_sdc, bool)
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
    return layout.auto_view(sdc_path, 40.0, np.concatenate([rg_xy, all_pos]))
  return layout.resolve_view(center, extent, sdc_path.mean(0),
                             np.zeros((0, 2)), rg_xy)


def _panels_figure(view: style.Bounds, num_panels: int,
                figsize: tuple[float, float] | None) -> mfigure.Figure:
  """A pyplot-free figure for ``num_panels`` maps side by side."""
  if figsize is None:
    dx, dy = view[1] - view[0], view[3] - view[2]
    figsize = (7.5 * num_panels * (0.85 if num_panels > 1 else 1.0),
               float(np.clip(6.6 * dy / dx, 2.0, 8.0)) + 1.1)
  fig = mfigure.Figure(figsize=figsize, layout='constrained')
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _light_keys(lights: datatypes.TrafficLights, steps: range) -> list[str]:
  """The sorted light group keys of the (L, T) lights valid at ``steps``."""
  keys: set[str] = set()
  if np.size(lights.valid):
    for s in steps:
      lv = np.asarray(lights.valid, bool)[:, s]
      keys.update(roadgraph.light_colors(np.asarray(lights.state)[lv, s])[1])
  return sorted(keys)


def _add_panel(fig: mfigure.Figure, index: int, num_panels: int, name: str,
               arrays: rollouts.RolloutArrays,
               state: datatypes.SimulatorState, view: style.Bounds,
               mark_collisions: bool) -> tuple[_Panel, list[Any]]:
  """Adds one panel: the road graph and empty box, tick and light artists.

  Args:
    fig: the figure.
    index: the panel's 0-based position from the left.
    num_panels: the number of panels.
    name: the panel's title.
    arrays: its boxes (``rollouts.rollout_arrays``).
    state: the unbatched numpy SimulatorState (the map).
    view: (xmin, xmax, ymin, ymax).
    mark_collisions: whether overlapping boxes are outlined.

  Returns:
    (the panel, the road graph's legend handles).
  """
  ax = fig.add_subplot(1, num_panels, index + 1)
  layout.style_axes(ax, view)
  handles = roadgraph.draw_roadgraph(ax, state.roadgraph_points, view)
  boxes = mcoll.PolyCollection([], zorder=8)
  ax.add_collection(boxes)
  ticks = mcoll.LineCollection([], colors=style.TICK, linewidths=0.7,
                               zorder=9)
  ax.add_collection(ticks)
  dots = ax.scatter([], [], s=24, edgecolors=style.LIGHT_EDGE,
                    linewidths=1.2, zorder=7)
  hits = (rollouts.overlapping(*arrays) if mark_collisions else
          np.zeros_like(arrays[5]))
  panel = _Panel(name=name, arrays=arrays, hits=hits, boxes=boxes,
                 ticks=ticks, dots=dots, title=ax.set_title('', fontsize=8))
  return panel, handles


def _add_legend(fig: mfigure.Figure, panels: Sequence[_Panel],
                meta: datatypes.ObjectMetadata, light_keys: Sequence[str],
                map_handles: list[Any], mark_collisions: bool) -> None:
  """Adds the figure's legend under the panels."""
  is_sdc = np.asarray(meta.is_sdc, bool)
  types_drawn: set[int] = set()
  for panel in panels:
    types_drawn |= layout.legend_types(np.asarray(meta.object_types)[
        panel.arrays[5].any(1) & ~is_sdc])
  handles = (layout.object_handles(types_drawn, bool(is_sdc.any()),
                                   bool(np.asarray(meta.is_modeled,
                                                   bool).any())) +
             roadgraph.light_handles(light_keys) + map_handles)
  if mark_collisions:
    handles.append(mpatches.Patch(facecolor='none',
                                  edgecolor=style.COLLISION, linewidth=1.6,
                                  label='Overlapping box'))
  fig.legend(handles, layout.labels(handles), loc='outside lower center',
             ncol=5 + 2 * (len(panels) - 1), fontsize=6.5, frameon=False)


def _draw_frame(panel: _Panel, k: int, look: _Look,
                lights: datatypes.TrafficLights, step: int,
                num_log_steps: int, label: str) -> None:
  """Moves one panel's boxes, ticks and lights to frame ``k``.

  Args:
    panel: the panel.
    k: the frame's index in the panel's (N, T) arrays.
    look: the objects' colours, outlines and drawing order.
    lights: the (L, T) logged traffic lights.
    step: the frame's scenario step; lights are shown when it is in
      [0, num_log_steps).
    num_log_steps: the number of logged steps T.
    label: the frame's title after the panel's name.
  """
  x, y, yaw, length, width, valid = panel.arrays
  sel = look.order[valid[look.order, k]]
  corners = layout.box_corners(x[sel, k], y[sel, k], length[sel, k],
                               width[sel, k], yaw[sel, k])
  panel.boxes.set_verts(corners)
  panel.boxes.set_facecolors(look.colors[sel])
  hit = panel.hits[sel, k]
  panel.boxes.set_edgecolors(np.where(hit[:, None],
                                      mcolors.to_rgba(style.COLLISION),
                                      look.edges[sel]))
  panel.boxes.set_linewidths(np.where(hit, 1.8, look.widths[sel]))
  pos = np.stack([x[sel, k], y[sel, k]], -1)
  front = 0.5 * (corners[:, 0] + corners[:, 1])
  panel.ticks.set_segments(np.stack([pos, front], 1))
  if np.size(lights.valid) and 0 <= step < num_log_steps:
    lv = np.asarray(lights.valid, bool)[:, step]
    panel.dots.set_offsets(np.stack([np.asarray(lights.x)[lv, step],
                                     np.asarray(lights.y)[lv, step]], -1))
    panel.dots.set_facecolors(
        roadgraph.light_colors(np.asarray(lights.state)[lv, step])[0])
  else:
    panel.dots.set_offsets(np.zeros((0, 2)))
  panel.title.set_text(f'{panel.name}  ·  {label}' if panel.name else label)


def animate_rollout(
    state: datatypes.SimulatorState,
    trajectories: Any,
    *,
    path: style.PathLike,
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
    path: style.PathLike,
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
  layout.check_unbatched(state, 'animate_rollouts')
  if not panels:
    raise ValueError('animate_rollouts needs at least one panel.')
  if stride < 1:
    raise ValueError(f'stride must be >= 1, got {stride}.')
  state = layout.to_numpy(state)
  arrays = {name: rollouts.rollout_arrays(state, t)
            for name, t in panels.items()}
  frames = {a[0].shape[1] for a in arrays.values()}
  if len(frames) != 1:
    raise ValueError(f'panels have different numbers of steps: '
                     f'{ {k: a[0].shape[1] for k, a in arrays.items()} }')
  num_frames = frames.pop()
  if num_frames < 1:
    raise ValueError('trajectories has no steps to animate.')
  num_log_steps = np.shape(state.log_trajectory.x)[1]
  if first_step is None:
    first_step = 0 if num_frames == num_log_steps else int(state.timestep) + 1
  view = _shared_view(state, arrays, center, extent)
  fig = _panels_figure(view, len(arrays), figsize)
  lights = state.log_traffic_light
  drawn = []
  for i, (name, arr) in enumerate(arrays.items()):
    # Every panel shows the same map: the last one's handles are kept.
    panel, map_handles = _add_panel(fig, i, len(arrays), name, arr, state,
                                    view, mark_collisions)
    drawn.append(panel)
  light_keys = _light_keys(lights, range(
      first_step, min(first_step + num_frames, num_log_steps)))
  _add_legend(fig, drawn, state.object_metadata, light_keys, map_handles,
              mark_collisions)
  look = _object_look(state.object_metadata)
  writer = animation.PillowWriter(fps=fps)
  with writer.saving(fig, os.fspath(path), dpi):
    for k in range(0, num_frames, stride):
      step = first_step + k
      label = f'step {step} ({step * datatypes.TIME_INTERVAL:.1f} s)'
      for panel in drawn:
        _draw_frame(panel, k, look, lights, step, num_log_steps, label)
      writer.grab_frame(facecolor='white')
  return os.fspath(path)
