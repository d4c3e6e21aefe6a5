"""Scenario plots and rollout animations (matplotlib, off-screen).

Two entry points:

* ``plot_scenario(state, ...)`` draws one ``SimulatorState`` at one step: the
  road graph by type, oriented object boxes coloured by type (the SDC and the
  ``tracks_to_predict`` marked), history trails, optional sampled future
  trajectories, traffic-light states and a legend, in a view around the SDC.
* ``animate_rollout(state, trajectories, path=...)`` writes a GIF of boxes
  moving over the road graph (drawn once); ``animate_rollouts`` puts several
  rollouts of one scenario side by side, and ``plot_ranking`` draws one
  scenario's rollouts ranked by their distance to the log.

Nothing here touches pyplot or the global backend: figures are plain
``matplotlib.figure.Figure`` objects with an Agg canvas, so the package works
headless, in threads and in notebooks alike, and figures are freed as soon as
they are unreferenced. States may hold numpy or jax arrays; they must be
unbatched (index a batch first, e.g. ``jax.tree.map(lambda x: x[0], state)``).

The road graph is drawn with one ``LineCollection`` per line style and one
``PolyCollection`` per polygon type, cropped to the view first, so maps with
tens of thousands of points (or spanning kilometres) draw in well under a
second. Consecutive points are joined only when they belong to the same map
feature (equal ``ids``); see ``roadgraph.polyline_segments``.

Modules:

* ``style``: colours, line and polygon styles, light groups, object labels.
* ``roadgraph``: polyline segments, polylines, polygons, the crop to a view,
  drawing the road graph; traffic-light colours and legend entries.
* ``layout``: views, figures, axes, legends, object colours and legend
  entries, ``box_corners``.
* ``scenario``: ``plot_scenario``.
* ``rollouts``: the boxes of a rollout and which of them overlap.
* ``animation``: ``animate_rollout``, ``animate_rollouts``.
* ``ranking``: ``plot_ranking``.
"""

from __future__ import annotations

from prefalign.viz.animation import animate_rollout
from prefalign.viz.animation import animate_rollouts
from prefalign.viz.layout import DEFAULT_HALF_EXTENT
from prefalign.viz.layout import box_corners
from prefalign.viz.ranking import plot_ranking
from prefalign.viz.scenario import plot_scenario

__all__ = [
    'plot_scenario',
    'animate_rollout',
    'animate_rollouts',
    'plot_ranking',
    'box_corners',
    'DEFAULT_HALF_EXTENT',
]
