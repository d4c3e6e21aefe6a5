"""SUMO scenarios: generated from a tiny network in seconds, read as WOMD."""

import json
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.cli import data as data_cli
from prefalign.data import sumo
from prefalign.data import womd
from prefalign.metrics import features
from prefalign.metrics import wosac

pytest.importorskip('sumolib')

TINY = sumo.SumoConfig(network='cross', num_scenarios=4, seed=3,
                       warmup_s=20.0, egos_per_window=2)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  out = tmp_path_factory.mktemp('sumo') / 'cross'
  manifest = sumo.generate(TINY, out)
  return out, manifest


# One shape for every scenario of the tiny network: one compilation.
_SHAPES = womd.ReaderConfig(max_num_objects=64, max_roadgraph_points=16384,
                            max_traffic_lights=16)


def _examples(out):
  for path, index, scenario in womd.read_scenarios(
      str(out / 'cross.tfrecord-*')):
    yield scenario, womd.state_from_scenario(scenario, _SHAPES, path=path,
                                             record=index)


def test_scenarios_are_womd(tiny):
  out, manifest = tiny
  assert manifest['num_scenarios'] == 4
  assert manifest['network'] == 'cross' and manifest['seed'] == 3
  assert json.loads((out / 'manifest.json').read_text()) == manifest
  ids = set()
  for scenario, example in _examples(out):
    state = example.state
    state.validate()
    ids.add(scenario.scenario_id)
    assert len(scenario.timestamps_seconds) == 91
    assert scenario.current_time_index == 10
    log = jax.tree.map(np.asarray, state.log_trajectory)
    meta = jax.tree.map(np.asarray, state.object_metadata)
    sdc = int(np.argmax(meta.is_sdc))
    assert log.valid[sdc].all()  # the SDC is present over the window
    assert 1 <= meta.is_modeled.sum() <= 8
    assert log.valid[meta.is_modeled][:, 10].all()
    # Boxes of the type's size; headings follow the motion.
    assert np.allclose(log.length[sdc], log.length[sdc, 0])
    step = np.hypot(np.diff(log.x[sdc]), np.diff(log.y[sdc]))
    moving = step > 0.3
    heading = np.arctan2(np.diff(log.y[sdc]), np.diff(log.x[sdc]))
    err = datatypes.wrap_yaw(heading - log.yaw[sdc, :-1])[moving]
    # SUMO's heading is the lane's at the front bumper: on a curve the
    # centre's path departs from it by up to length / 2 x curvature.
    assert np.median(np.abs(err)) < 0.01 and np.abs(err).max() < 0.5
    types = np.asarray(state.roadgraph_points.types)
    assert (types == datatypes.MapElementIds.LANE_SURFACE_STREET).any()
    assert (types == datatypes.MapElementIds.ROAD_EDGE_BOUNDARY).any()
    assert np.asarray(state.log_traffic_light.valid).any()  # the signal
  assert len(ids) == 4


def test_log_replay_is_on_road_and_realistic(tiny):
  out, _ = tiny
  config = wosac.get_config('2025')
  metric = jax.jit(lambda st, r: wosac.scenario_metrics(
      st, r, config, max_evaluated=9))
  edge = jax.jit(lambda log, rg: features.distance_to_road_edge(
      jax.tree.map(lambda a: a[None], log), jnp.arange(64), rg)[0])
  for _, example in _examples(out):
    state = example.state
    m = metric(state, wosac.log_rollouts(state))
    assert 0.6 < float(m['metametric']) < 1.0
    assert float(m['simulated_collision_rate']) == 0.0
    assert float(m['simulated_offroad_rate']) == 0.0
    # Every vehicle, evaluated or not, drives inside the road edges.
    log = state.log_trajectory
    d = edge(log, state.roadgraph_points)
    valid = np.asarray(log.valid & state.object_metadata.is_valid[:, None])
    assert (np.asarray(d)[valid] <= 0.0).mean() > 0.99


def test_deterministic_and_resumable(tiny, tmp_path):
  out, manifest = tiny
  again = sumo.generate(TINY, tmp_path / 'again')
  for name in manifest['files']:
    assert (out / name).read_bytes() == (tmp_path / 'again' / name
                                         ).read_bytes()
  assert again['counts'] == manifest['counts']
  # Same config again: nothing is redone.
  stamp = (out / manifest['files'][0]).stat().st_mtime_ns
  assert sumo.generate(TINY, out) == manifest
  assert (out / manifest['files'][0]).stat().st_mtime_ns == stamp


def test_cli(tmp_path, capsys):
  assert data_cli.main(['sumo', '--list']) == 0
  assert 'research_intersection' in capsys.readouterr().out
  assert data_cli.main(['sumo', '--network', 'cross', '--num-scenarios',
                        '2', '--out', str(tmp_path), '--seed', '1']) == 0
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed['num_scenarios'] == 2
  assert data_cli.main(['info', str(tmp_path / 'cross.tfrecord-*')]) == 0


def test_unknown_network_is_named(tmp_path, capsys):
  assert data_cli.main(['sumo', '--network', 'atlantis', '--out',
                        str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "'atlantis'" in err and 'research_intersection' in err
  assert not list(tmp_path.iterdir())


def test_radius_without_agents_is_an_error(tmp_path):
  cfg = sumo.SumoConfig(network='cross', num_scenarios=2, radius=0.5,
                        warmup_s=20.0)
  with pytest.raises(sumo.SumoError, match='radius=0.5'):
    sumo.generate(cfg, tmp_path)
  assert not (tmp_path / 'manifest.json').exists()


def test_network_without_drivable_lanes(tmp_path, monkeypatch):
  (tmp_path / 'n.nod.xml').write_text(
      '<nodes><node id="a" x="0" y="0"/><node id="b" x="100" y="0"/>'
      '</nodes>')
  (tmp_path / 'e.edg.xml').write_text(
      '<edges><edge id="ab" from="a" to="b" numLanes="1" '
      'allow="pedestrian"/></edges>')
  subprocess.run([str(sumo.sumo_home() / 'bin' / 'netconvert'),
                  '--node-files', 'n.nod.xml', '--edge-files', 'e.edg.xml',
                  '-o', 'walk.net.xml'], cwd=tmp_path, check=True,
                 capture_output=True)
  monkeypatch.setitem(sumo.NETWORKS, 'footpath', sumo.Network(
      'footpath', str(tmp_path / 'walk.net.xml'), 'a footpath',
      vehicle_period=1.0))
  with pytest.raises(sumo.SumoError, match="'footpath' has no drivable"):
    sumo.network_map('footpath')


def test_bad_config_values_are_named():
  with pytest.raises(sumo.SumoError, match='num_scenarios'):
    sumo.SumoConfig(network='cross', num_scenarios=0).check()
  with pytest.raises(sumo.SumoError, match='radius'):
    sumo.SumoConfig(network='cross', radius=-1.0).check()
