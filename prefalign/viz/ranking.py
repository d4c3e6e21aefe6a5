"""``plot_ranking``: one scenario's rollouts ranked by distance to the log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib import cm as mcm
from matplotlib import collections as mcoll
from matplotlib import colors as mcolors
from matplotlib import figure as mfigure
from matplotlib import patches as mpatches
from matplotlib.backends import backend_agg
import numpy as np

from prefalign import datatypes
from prefalign import fileio
from prefalign.viz import layout
from prefalign.viz import roadgraph
from prefalign.viz import style

_PREFERRED = '#1a9641'
_UNPREFERRED = '#d7191c'
_NOT_PAIRED = '#9e9e9e'


def _log_paths(state: datatypes.SimulatorState,
               sim: np.ndarray) -> list[np.ndarray]:
  """The logged future of each simulated object valid at the current step.

  Args:
    state: the unbatched numpy SimulatorState.
    sim: (N,) bool objects some rollout moved.

  Returns:
    A list of (T_i, 2) valid logged positions from ``state.timestep`` on.
  """
  log = state.log_trajectory
  t0 = int(state.timestep)
  lx, ly = np.asarray(log.x), np.asarray(log.y)
  lv = np.asarray(log.valid, bool)
  return [np.stack([lx[i, t0:][lv[i, t0:]], ly[i, t0:][lv[i, t0:]]], -1)
          for i in range(sim.shape[0]) if sim[i] and lv[i, t0]]


def _rollout_paths(pos: np.ndarray, sim: np.ndarray) -> list[np.ndarray]:
  """Finite paths of one rollout's simulated objects.

  Args:
    pos: (N, T, 2) one rollout's positions (non-finite: not simulated).
    sim: (N,) bool objects some rollout moved.

  Returns:
    A list of (T_i, 2) paths with at least two points.
  """
  out = []
  for i in np.flatnonzero(sim):
    p = pos[i]
    p = p[np.isfinite(p).all(-1)]
    if len(p) > 1:
      out.append(p)
  return out


def _draw_map(ax, rg: datatypes.RoadgraphPoints, view: style.Bounds) -> None:
  """Styles a map panel and draws the (P,) road graph cropped to ``view``."""
  layout.style_axes(ax, view)
  roadgraph.draw_roadgraph(ax, rg, view)


def _draw_log(ax, log_paths: list[np.ndarray]) -> None:
  """Draws the log's future paths, black dashed, above the rollouts."""
  ax.add_collection(mcoll.LineCollection(
      log_paths, colors='black', linewidths=1.3, linestyles=(0, (3, 2)),
      zorder=6, label='log (demonstration)'))


def _draw_by_rank(fig: mfigure.Figure, ax, pos: np.ndarray, sim: np.ndarray,
                  rank: np.ndarray, log_paths: list[np.ndarray]) -> None:
  """The first panel: every rollout coloured by its distance rank.

  Args:
    fig: the figure (for the colour bar).
    ax: the panel, with the map drawn.
    pos: (K, N, T, 2) the rollouts' positions.
    sim: (N,) bool objects some rollout moved.
    rank: (K,) int each rollout's rank by distance (0: closest).
    log_paths: the log's paths (``_log_paths``).
  """
  k_count = pos.shape[0]
  cmap = matplotlib.colormaps['coolwarm']
  # Coloured by rank: a few far outliers would otherwise paint the rest one
  # colour.
  norm = mcolors.Normalize(0, max(k_count - 1, 1))
  for k in np.argsort(rank)[::-1]:  # the closest drawn last, on top
    ax.add_collection(mcoll.LineCollection(
        _rollout_paths(pos[k], sim), colors=[cmap(norm(rank[k]))],
        linewidths=0.7, alpha=0.55, zorder=5))
  _draw_log(ax, log_paths)
  fig.colorbar(mcm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
               shrink=0.8, label='rank by distance to the log (0: closest)')
  ax.set_title(f'{k_count} rollouts coloured by their distance rank',
               fontsize=9)


def _draw_pairs(ax, pos: np.ndarray, sim: np.ndarray,
                preferred: Sequence[int], unpreferred: Sequence[int],
                log_paths: list[np.ndarray]) -> None:
  """The second panel: the preferred rollouts against the unpreferred ones.

  Args:
    ax: the panel, with the map drawn.
    pos: (K, N, T, 2) the rollouts' positions.
    sim: (N,) bool objects some rollout moved.
    preferred, unpreferred: rollout indices of the pairs' two sides.
    log_paths: the log's paths (``_log_paths``).
  """
  for ks, color, label in ((unpreferred, _UNPREFERRED, 'unpreferred'),
                           (preferred, _PREFERRED, 'preferred')):
    for j, k in enumerate(ks):
      ax.add_collection(mcoll.LineCollection(
          _rollout_paths(pos[int(k)], sim), colors=color, linewidths=0.9,
          alpha=0.7, zorder=5,
          label=f'{label} ({len(ks)})' if j == 0 else None))
  _draw_log(ax, log_paths)
  ax.legend(loc='upper right', fontsize=7)
  ax.set_title('preferred (closest) vs unpreferred (farthest)', fontsize=9)


def _draw_distances(ax, d: np.ndarray, rank: np.ndarray,
                    preferred: Sequence[int],
                    unpreferred: Sequence[int]) -> None:
  """The third panel: (K,) distances ``d`` as bars sorted by (K,) ``rank``."""
  colors = np.full(d.shape[0], _NOT_PAIRED, object)
  colors[np.asarray(unpreferred, int)] = _UNPREFERRED
  colors[np.asarray(preferred, int)] = _PREFERRED
  ax.bar(rank, d, color=list(colors), width=0.85)
  ax.set(xlabel='rollout, sorted by distance', ylabel='OT distance to the log',
         title='ranking')
  ax.title.set_fontsize(9)
  ax.grid(alpha=0.3, axis='y')
  ax.legend(handles=[mpatches.Patch(color=_PREFERRED, label='preferred'),
                     mpatches.Patch(color=_UNPREFERRED, label='unpreferred'),
                     mpatches.Patch(color=_NOT_PAIRED, label='not paired')],
            fontsize=7, loc='upper left')


def plot_ranking(
    state: datatypes.SimulatorState,
    positions: Any,
    distances: Any,
    *,
    preferred: Sequence[int],
    unpreferred: Sequence[int],
    path: style.PathLike | None = None,
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
  layout.check_unbatched(state, 'plot_ranking')
  state = layout.to_numpy(state)
  pos = np.asarray(positions, np.float64)
  d = np.asarray(distances, np.float64)
  if pos.ndim != 4 or pos.shape[-1] != 2 or pos.shape[0] != d.shape[0]:
    raise ValueError(f'positions must be (K, N, T, 2) with K = len(distances)'
                     f' = {d.shape[0]}, got {pos.shape}.')
  sim = np.isfinite(pos).all(-1).any((0, 2))  # objects some rollout moved
  log_paths = _log_paths(state, sim)
  rg = state.roadgraph_points
  rg_xy = np.stack([rg.x, rg.y], -1)[np.asarray(rg.valid, bool)]
  finite = pos[np.isfinite(pos).all(-1)]
  content = np.concatenate([finite.reshape(-1, 2)] +
                           [p for p in log_paths if p.size])
  view = layout.auto_view(content if content.size else rg_xy[:1], 30.0,
                          np.concatenate([rg_xy, content]))
  fig = mfigure.Figure(figsize=(16.5, 5.6), layout='constrained')
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[1.0, 1.0, 0.8]))
  rank = np.empty(d.shape[0], int)
  rank[np.argsort(d, kind='stable')] = np.arange(d.shape[0])
  _draw_map(axes[0], rg, view)
  _draw_by_rank(fig, axes[0], pos, sim, rank, log_paths)
  _draw_map(axes[1], rg, view)
  _draw_pairs(axes[1], pos, sim, preferred, unpreferred, log_paths)
  _draw_distances(axes[2], d, rank, preferred, unpreferred)
  if title:
    fig.suptitle(title, fontsize=10)
  if path is not None:
    fileio.save_figure(fig, path, dpi=dpi)
  return fig
