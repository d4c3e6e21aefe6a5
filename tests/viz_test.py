"""Scenario plots and rollout GIFs: files, road-graph segments, errors."""

import time

import jax
import jax.numpy as jnp
from matplotlib import collections as mcoll
from matplotlib import colors as mcolors
from matplotlib import figure as mfigure
import numpy as np
from PIL import Image
import pytest

from prefalign import datatypes
from prefalign import viz
from prefalign.data import synthetic
from prefalign.data import womd
from prefalign.viz import roadgraph
from prefalign.viz import rollouts

FULL = womd.ReaderConfig(max_num_objects=None, max_roadgraph_points=None,
                         max_traffic_lights=None)
_M = datatypes.MapElementIds


@pytest.fixture(scope='module')
def state():
  return womd.state_from_scenario(synthetic.straight_road_scenario()).state


def _roadgraph(xy, types, ids, valid=None):
  n = len(ids)
  xy = np.asarray(xy, np.float32)
  zeros = np.zeros(n, np.float32)
  return datatypes.RoadgraphPoints(
      x=xy[:, 0], y=xy[:, 1], z=zeros, dir_x=zeros, dir_y=zeros, dir_z=zeros,
      types=np.asarray(types, np.int32), ids=np.asarray(ids, np.int32),
      valid=np.ones(n, bool) if valid is None else np.asarray(valid, bool))


def _pairs_in_mask(rg, mask):
  """Reference count: consecutive valid same-id polyline points, either end
  selected by ``mask``."""
  polyline_types = {int(t) for t in list(_M)[:17] if t not in (
      _M.STOP_SIGN,)} - {4}
  count = 0
  for i in range(len(rg.ids) - 1):
    if (rg.valid[i] and rg.valid[i + 1] and rg.ids[i] == rg.ids[i + 1] and
        int(rg.types[i]) in polyline_types and (mask[i] or mask[i + 1])):
      count += 1
  return count


def _drawn_roadgraph_edges(ax):
  """Edges in the road-graph LineCollections (double-line overlays excluded)."""
  total = 0
  for c in ax.collections:
    if isinstance(c, mcoll.LineCollection) and (c.get_gid() or '').startswith(
        'roadgraph/'):
      total += sum(len(seg) - 1 for seg in c.get_segments())
  return total


def test_box_corners():
  c = viz.box_corners(1.0, 2.0, 4.0, 2.0, 0.0)
  np.testing.assert_allclose(c, [[3, 1], [3, 3], [-1, 3], [-1, 1]])
  c = viz.box_corners(np.zeros(2), np.zeros(2), np.full(2, 4.0),
                      np.full(2, 2.0), np.array([np.pi / 2, np.pi]))
  assert c.shape == (2, 4, 2)
  # Heading +y: the front-right corner is at (+w/2, +l/2).
  np.testing.assert_allclose(c[0, 0], [1, 2], atol=1e-12)
  np.testing.assert_allclose(c[1, 0], [-2, 1], atol=1e-12)


def test_plot_writes_png(state, tmp_path):
  path = tmp_path / 'scene.png'
  fig = viz.plot_scenario(state, path=path, title='synthetic')
  assert isinstance(fig, mfigure.Figure)
  assert path.stat().st_size > 10_000
  pixels = np.asarray(Image.open(path).convert('RGB'))
  assert 600 <= pixels.shape[1] <= 1600
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
  # Something of each kind was drawn.
  gids = {c.get_gid() for c in fig.axes[0].collections}
  assert {'boxes', 'headings', 'trails', 'traffic_lights',
          'roadgraph/edge', 'roadgraph/lane', 'roadgraph/yellow_double',
          'roadgraph/stop_sign', 'roadgraph-polygons/Crosswalk'} <= gids
  labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  for label in ('SDC', 'Vehicle', 'Pedestrian', 'Cyclist', 'Track to predict',
                'Road edge', 'Lane centre', 'Crosswalk', 'Stop sign',
                'Signal: go'):
    assert label in labels


def test_segments_never_join_features():
  # Two polylines, a polygon, an invalid padding point and a stop sign.
  rg = _roadgraph(
      xy=[[0, 0], [1, 0], [2, 0], [50, 50], [51, 50], [0, 9], [1, 9], [1, 10],
          [-1, -1], [5, 5]],
      types=[_M.LANE_SURFACE_STREET] * 3 + [_M.ROAD_EDGE_BOUNDARY] * 2 +
      [_M.CROSSWALK] * 3 + [-1, _M.STOP_SIGN],
      ids=[1, 1, 1, 2, 2, 3, 3, 3, -1, 4],
      valid=[True] * 8 + [False, True])
  segs = roadgraph.polyline_segments(rg)
  np.testing.assert_allclose(segs, [[[0, 0], [1, 0]], [[1, 0], [2, 0]],
                                    [[50, 50], [51, 50]]])
  # Either end in the mask keeps a segment.
  mask = np.zeros(10, bool)
  mask[2] = True
  np.testing.assert_allclose(roadgraph.polyline_segments(rg, mask),
                             [[[1, 0], [2, 0]]])
  lines, types = roadgraph.polylines(rg, None)
  assert [len(line) for line in lines] == [3, 2]
  assert list(types) == [_M.LANE_SURFACE_STREET, _M.ROAD_EDGE_BOUNDARY]
  polys = roadgraph.polygons(rg, None)
  assert len(polys) == 1 and polys[0][0] == _M.CROSSWALK


@pytest.mark.parametrize('extent', [None, 30.0])
def test_drawn_segments_are_same_id_pairs_in_view(state, extent):
  fig = viz.plot_scenario(state, extent=extent)
  ax = fig.axes[0]
  view = ax.get_xlim() + ax.get_ylim()
  rg = state.roadgraph_points
  mask = roadgraph.crop_mask(rg, view)
  expected = _pairs_in_mask(rg, mask)
  assert expected > 0
  assert len(roadgraph.polyline_segments(rg, mask)) == expected
  assert _drawn_roadgraph_edges(ax) == expected
  if extent is not None:  # the crop dropped part of the 200 m road
    assert expected < _pairs_in_mask(rg, np.ones(len(rg.ids), bool))
  # No segment joins two features: all are one 2 m step of a polyline.
  segs = roadgraph.polyline_segments(rg, mask)
  lengths = np.linalg.norm(np.diff(segs, axis=1), axis=-1)
  np.testing.assert_allclose(lengths, 2.0, atol=1e-3)


def test_large_roadgraph_is_cropped_and_fast():
  # 5 polylines x 6001 points = 30k points spanning 6 km.
  scenario = synthetic.straight_road_scenario(road_length=6000.0,
                                              point_spacing=1.0)
  st = womd.state_from_scenario(scenario, FULL).state
  assert st.roadgraph_points.num_points > 30_000
  start = time.perf_counter()
  fig = viz.plot_scenario(st)
  fig.canvas.draw()
  assert time.perf_counter() - start < 10.0
  ax = fig.axes[0]
  assert ax.get_xlim()[1] - ax.get_xlim()[0] <= 2 * viz.DEFAULT_HALF_EXTENT
  assert 0 < _drawn_roadgraph_edges(ax) < 2_000


def test_jax_arrays_and_options(state, tmp_path):
  jstate = jax.tree.map(jnp.asarray, state)
  n = state.num_objects
  rng = np.random.default_rng(0)
  fut = (np.stack([state.log_trajectory.x, state.log_trajectory.y],
                  -1)[None, :, 11:31] + rng.normal(size=(3, n, 20, 2)))
  fut[0, 0, 5] = np.nan  # a gap
  fig = viz.plot_scenario(jstate, trajectories=jnp.asarray(fut), timestep=30,
                          use_log=False, show_ids=True,
                          center=(50.0, 0.0), extent=40.0,
                          path=tmp_path / 'options.png')
  ax = fig.axes[0]
  assert ax.get_xlim() == (10.0, 90.0)
  # use_log=False at step 30: the reset sim trajectory is only valid to 10.
  assert 'boxes' not in {c.get_gid() for c in ax.collections}
  fig = viz.plot_scenario(jstate, trajectories=fut, show_ids=True)
  ax = fig.axes[0]
  futures = [c for c in ax.collections if c.get_gid() == 'futures']
  num_now = int(np.sum(np.asarray(state.log_trajectory.valid)[:, 10]))
  assert len(futures) == 1 and len(futures[0].get_segments()) == 3 * num_now
  assert len(ax.texts) == num_now
  # An external axes is drawn into and its figure returned.
  fig2 = mfigure.Figure()
  ax2 = fig2.add_subplot()
  assert viz.plot_scenario(state, ax=ax2, legend=False) is fig2
  assert ax2.get_legend() is None


def test_errors(state):
  batched = datatypes.stack([state, state])
  with pytest.raises(ValueError, match=r'batch shape \(2,\)'):
    viz.plot_scenario(batched)
  with pytest.raises(ValueError, match=r'batch shape \(2,\)'):
    viz.animate_rollout(batched, batched.log_trajectory, path='unused.gif')
  with pytest.raises(ValueError, match='timestep 91'):
    viz.plot_scenario(state, timestep=91)
  with pytest.raises(ValueError, match='trajectories'):
    viz.plot_scenario(state, trajectories=np.zeros((2, 3, 5, 2)))
  with pytest.raises(ValueError, match='extent'):
    viz.plot_scenario(state, extent=(10, 0, 0, 10))


def test_gif_has_one_frame_per_step(state, tmp_path):
  log = jax.tree.map(lambda x: x[:, :12], state.log_trajectory)
  path = tmp_path / 'log.gif'
  assert viz.animate_rollout(state, log, path=path, fps=5, dpi=40) == str(path)
  with Image.open(path) as im:
    assert im.n_frames == 12
  # Positions only (N, T, 2), a future rollout after the current step.
  xy = np.stack([state.log_trajectory.x, state.log_trajectory.y],
                -1)[:, 11:19].astype(np.float64)
  xy[~np.asarray(state.log_trajectory.valid)[:, 11:19]] = np.nan
  path = tmp_path / 'rollout.gif'
  viz.animate_rollout(state, xy, path=path, dpi=40, title='rollout')
  with Image.open(path) as im:
    assert im.n_frames == 8


def test_side_by_side_gif_outlines_overlapping_boxes(state, tmp_path):
  log = jax.tree.map(lambda x: np.asarray(x)[:, 11:17], state.log_trajectory)
  # A copy of the log with object 1 moved onto object 0: their boxes overlap.
  valid = np.asarray(log.valid)
  both = np.flatnonzero(valid.all(1))[:2]
  crash = log.replace(x=np.array(log.x), y=np.array(log.y))
  crash.x[both[1]] = log.x[both[0]]
  crash.y[both[1]] = log.y[both[0]]
  hits = rollouts.overlapping(*rollouts.rollout_arrays(state, crash))
  assert hits[both].all() and not np.delete(hits, both, 0).any()
  assert not rollouts.overlapping(*rollouts.rollout_arrays(state, log)).any()
  path = tmp_path / 'pair.gif'
  viz.animate_rollouts(state, {'log': log, 'crash': crash}, path=path,
                       dpi=40)
  with Image.open(path) as im:
    assert im.n_frames == 6
    width = im.size[0]
  viz.animate_rollouts(state, {'log': log}, path=path, dpi=40, stride=4)
  with Image.open(path) as im:
    assert im.n_frames == 2  # steps 0 and 4
  viz.animate_rollout(state, log, path=tmp_path / 'one.gif', dpi=40)
  with Image.open(tmp_path / 'one.gif') as im:
    assert width > 1.5 * im.size[0]  # two panels
  short = jax.tree.map(lambda x: x[:, :3], log)
  with pytest.raises(ValueError, match='different numbers of steps'):
    viz.animate_rollouts(state, {'a': log, 'b': short}, path=path)
  with pytest.raises(ValueError, match='at least one panel'):
    viz.animate_rollouts(state, {}, path=path)


def test_ranking_figure_marks_pairs(state, tmp_path):
  log = state.log_trajectory
  xy = np.stack([log.x, log.y], -1)[:, 11:].astype(np.float64)
  xy[~np.asarray(log.valid)[:, 11:]] = np.nan
  rng = np.random.default_rng(0)
  positions = xy[None] + rng.normal(0, 1, (8, 1, 1, 1)) * np.arange(8)[
      :, None, None, None]
  distances = np.arange(8, dtype=np.float32)
  path = tmp_path / 'ranking.png'
  fig = viz.plot_ranking(state, positions, distances, preferred=[0, 1],
                         unpreferred=[6, 7], path=path, title='t')
  assert path.stat().st_size > 20_000
  bars = [ax for ax in fig.axes if ax.get_title() == 'ranking'][0].patches
  colors = [mcolors.to_hex(b.get_facecolor()) for b in bars]
  assert colors[:2] == ['#1a9641'] * 2 and colors[-2:] == ['#d7191c'] * 2
  assert set(colors[2:6]) == {'#9e9e9e'}
  with pytest.raises(ValueError, match='K = len'):
    viz.plot_ranking(state, positions[:3], distances, preferred=[0],
                     unpreferred=[1])


@pytest.mark.data
def test_plot_real_scenario(shared_womd, tmp_path):
  path = shared_womd / 'official' / 'motion_data_one_scenario.tfrecord'
  example = next(womd.read_examples(path, FULL))
  out = tmp_path / f'{example.scenario_id}.png'
  fig = viz.plot_scenario(example.state, path=out, title=example.scenario_id)
  assert out.stat().st_size > 50_000
  ax = fig.axes[0]
  rg = example.state.roadgraph_points
  mask = roadgraph.crop_mask(rg, ax.get_xlim() + ax.get_ylim())
  # The default view is 150 m around the SDC, so part of the map is cropped.
  assert 0 < _drawn_roadgraph_edges(ax) == len(
      roadgraph.polyline_segments(rg, mask)) < len(
          roadgraph.polyline_segments(rg))
  num_now = int(np.sum(example.state.log_trajectory.valid[:, 10]))
  boxes = [c for c in ax.collections if c.get_gid() == 'boxes'][0]
  assert len(boxes.get_paths()) == num_now
