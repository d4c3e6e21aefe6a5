"""Scenario proto <-> SimulatorState: conversion, selection, round trip,
errors."""

import glob
import json

import numpy as np
import pytest

from prefalign import datatypes
from prefalign.cli import data as data_cli
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.data import womd_export
from prefalign.data.protos import scenario_pb2

FULL = womd.ReaderConfig(max_num_objects=None, max_roadgraph_points=None,
                         max_traffic_lights=None)
# float32 keeps ~0.5 mm at the 8 km coordinates of real WOMD scenes.
POS_TOL = 2e-3


def _features(s):
  out = {}
  for f in s.map_features:
    kind = f.WhichOneof('feature_data')
    data = getattr(f, kind)
    if kind in ('lane', 'road_line', 'road_edge'):
      pts, sub = data.polyline, data.type
    elif kind == 'stop_sign':
      if not data.HasField('position'):
        continue
      pts, sub = [data.position], None
    else:
      pts, sub = data.polygon, None
    if len(pts):
      out[f.id] = (kind, sub, np.array([(p.x, p.y, p.z) for p in pts]))
  return out


def _lights(s):
  return [{ls.lane: (ls.state, ls.stop_point.x, ls.stop_point.y,
                     ls.stop_point.z) for ls in d.lane_states}
          for d in s.dynamic_map_states]


def assert_round_trip(orig: scenario_pb2.Scenario,
                      back: scenario_pb2.Scenario) -> None:
  """Every field a SimulatorState carries survives the round trip."""
  assert back.scenario_id == orig.scenario_id
  np.testing.assert_allclose(back.timestamps_seconds, orig.timestamps_seconds,
                             atol=1e-6)
  assert back.current_time_index == orig.current_time_index
  assert back.sdc_track_index == orig.sdc_track_index
  assert ([r.track_index for r in back.tracks_to_predict] ==
          sorted(r.track_index for r in orig.tracks_to_predict))
  assert sorted(back.objects_of_interest) == sorted(orig.objects_of_interest)
  assert len(back.tracks) == len(orig.tracks)
  for a, b in zip(orig.tracks, back.tracks):
    assert (a.id, a.object_type) == (b.id, b.object_type)
    va = np.array([s.valid for s in a.states])
    np.testing.assert_array_equal(va, [s.valid for s in b.states])
    sa = [s for s in a.states if s.valid]
    sb = [s for s in b.states if s.valid]
    for name in ('center_x', 'center_y', 'center_z'):
      np.testing.assert_allclose([getattr(s, name) for s in sb],
                                 [getattr(s, name) for s in sa], atol=POS_TOL,
                                 err_msg=f'track {a.id} {name}')
    for name in ('length', 'width', 'height', 'velocity_x', 'velocity_y'):
      np.testing.assert_array_equal([getattr(s, name) for s in sb],
                                    [getattr(s, name) for s in sa],
                                    err_msg=f'track {a.id} {name}')
    np.testing.assert_array_equal([s.heading for s in sb],
                                  [s.heading for s in sa])
  fa, fb = _features(orig), _features(back)
  assert fa.keys() == fb.keys()
  for fid, (kind, sub, pts) in fa.items():
    kind_b, sub_b, pts_b = fb[fid]
    assert (kind_b, sub_b) == (kind, sub), fid
    np.testing.assert_allclose(pts_b, pts, atol=POS_TOL)
  la_steps, lb_steps = _lights(orig), _lights(back)
  if any(la_steps):
    assert len(lb_steps) == len(la_steps)
  for la, lb in zip(la_steps, lb_steps):
    assert la.keys() == lb.keys()
    for lane, (state, *stop) in la.items():
      assert lb[lane][0] == state
      np.testing.assert_allclose(lb[lane][1:], stop, atol=POS_TOL)


def test_synthetic_conversion_shapes_and_fields():
  s = synthetic.straight_road_scenario(num_vehicles=3)
  ex = womd.state_from_scenario(s)
  state = ex.state
  state.validate()
  assert state.log_trajectory.shape == (128, 91)
  assert state.roadgraph_points.shape == (30_000,)
  assert state.log_traffic_light.shape == (32, 91)
  assert int(state.timestep) == 10
  meta = state.object_metadata
  assert meta.is_valid.sum() == 5 and meta.is_sdc.sum() == 1
  assert list(np.flatnonzero(meta.is_modeled)) == [1, 2]
  assert list(np.flatnonzero(meta.objects_of_interest)) == [1]
  assert list(meta.object_types[:5]) == [1, 1, 1, 2, 3]
  log = state.log_trajectory
  # Padding rows are invalid with -1 fills.
  assert not log.valid[5:].any() and (log.x[5:] == -1).all()
  # Headings are kept as logged (westbound: pi).
  assert np.isclose(log.yaw[1, 0], np.pi)
  # The simulation starts as the log up to the current step.
  sim = state.sim_trajectory
  assert sim.valid[:5, :11].all() and not sim.valid[:, 11:].any()
  np.testing.assert_array_equal(sim.x[:5, :11], log.x[:5, :11])
  # Road graph: unit directions within a polyline, zero at its end.
  rg = state.roadgraph_points
  n = int(rg.valid.sum())
  norms = np.hypot(rg.dir_x[:n], rg.dir_y[:n])
  last = np.r_[rg.ids[1:n] != rg.ids[:n - 1], True]
  assert np.allclose(norms[~last], 1.0) and np.allclose(norms[last], 0.0)
  edges = rg.types[:n] == datatypes.MapElementIds.ROAD_EDGE_BOUNDARY
  assert edges.sum() > 0
  tl = state.log_traffic_light
  assert tl.valid[0].all() and not tl.valid[1:].any()
  assert tl.state[0, 0] == datatypes.TrafficLightStates.GO
  assert tl.state[0, 90] == datatypes.TrafficLightStates.STOP


def test_synthetic_round_trip():
  s = synthetic.straight_road_scenario(invalid_gap=(2, 30, 40),
                                       origin=(-7800.0, 6500.0))
  ex = womd.state_from_scenario(s, FULL)
  assert_round_trip(s, womd_export.scenario_from_state(ex.state,
                                                       ex.scenario_id))


def test_object_selection_keeps_priority_objects():
  s = synthetic.straight_road_scenario(num_vehicles=10, num_pedestrians=2)
  cfg = womd.ReaderConfig(max_num_objects=5)
  ex = womd.state_from_scenario(s, cfg)
  meta = ex.state.object_metadata
  assert meta.is_valid.all() and meta.shape == (5,)
  # SDC (track 0), tracks_to_predict (1, 2) are kept, in original order.
  kept = list(ex.track_index)
  assert kept[:3] == [0, 1, 2] and kept == sorted(kept)
  assert meta.is_sdc[0] and list(np.flatnonzero(meta.is_modeled)) == [1, 2]


def test_roadgraph_selection_keeps_whole_nearest_features():
  s = synthetic.straight_road_scenario()
  full = womd.state_from_scenario(s, FULL).state.roadgraph_points
  ex = womd.state_from_scenario(s, womd.ReaderConfig(max_roadgraph_points=250))
  rg = ex.state.roadgraph_points
  assert rg.shape == (250,)
  kept_ids = set(rg.ids[rg.valid].tolist())
  for fid in kept_ids:  # every kept feature is complete
    assert (rg.ids[rg.valid] == fid).sum() == (full.ids == fid).sum()
  assert rg.valid.sum() <= 250


def test_short_scenario_is_padded_to_91_steps():
  s = synthetic.straight_road_scenario(num_steps=11)
  state = womd.state_from_scenario(s).state
  assert state.log_trajectory.shape[-1] == 91
  assert not state.log_trajectory.valid[:, 11:].any()
  micros = state.sim_trajectory.timestamp_micros[0, :11]
  assert list(np.diff(micros)) == [100_000] * 10


def _write(tmp_path, scenarios, name='s.tfrecord'):
  path = tmp_path / name
  tfrecord.write_records(
      path, [s if isinstance(s, bytes) else s.SerializeToString()
             for s in scenarios])
  return path


def test_read_examples_and_skip_bad_records(tmp_path):
  good = synthetic.straight_road_scenario('good')
  no_objects = synthetic.straight_road_scenario('empty')
  for t in no_objects.tracks:
    t.states[10].valid = False
  path = _write(tmp_path, [good, b'\x08\x96\x01garbage\xff\xff', no_objects,
                           good])
  with pytest.raises(womd.DataError, match=r's\.tfrecord, record 1'):
    list(womd.read_examples(path))
  stats = womd.ReadStats()
  got = list(womd.read_examples(path, skip_bad_records=True, stats=stats))
  assert [e.scenario_id for e in got] == ['good', 'good']
  assert [e.record for e in got] == [0, 3]
  assert stats.num_read == 2 and stats.num_skipped == 2
  assert 'record 2' in stats.errors[1] and "'empty'" in stats.errors[1]


def _broken(mutate):
  s = synthetic.straight_road_scenario('bad-one')
  mutate(s)
  return s


@pytest.mark.parametrize('mutate,message', [
    (lambda s: [t.states[10].__setattr__('valid', False) for t in s.tracks],
     r"scenario 'bad-one': 0 objects are valid at the current step"),
    (lambda s: s.ClearField('map_features'), 'no road graph'),
    (lambda s: s.tracks[3].states[40].__setattr__('center_x', float('nan')),
     r'track 3 \(id 4\) has a non-finite x at step 40'),
    (lambda s: s.tracks[1].states[5].__setattr__('center_y', 5e7),
     r'track 1 \(id 2\) has y=5e\+07 at step 5'),
    (lambda s: s.timestamps_seconds.__setitem__(30, 0.0),
     'not strictly increasing'),
    (lambda s: s.tracks[2].states.pop(), r'track 2 \(id 3\) has 90 states'),
    (lambda s: s.__setattr__('sdc_track_index', 99), 'sdc_track_index 99'),
    (lambda s: s.tracks_to_predict.add(track_index=42),
     'tracks_to_predict names track index 42'),
    (lambda s: s.tracks[0].states[10].__setattr__('valid', False),
     'the SDC .* is not valid'),
])
def test_bad_scenarios_get_clear_errors(tmp_path, mutate, message):
  path = _write(tmp_path, [_broken(mutate)], 'bad.tfrecord')
  with pytest.raises(womd.DataError, match=message) as info:
    list(womd.read_examples(path))
  assert 'bad.tfrecord' in str(info.value) and 'record 0' in str(info.value)


def test_not_a_scenario(tmp_path):
  path = _write(tmp_path, [b'\x12\x05hello'], 'x.tfrecord')
  with pytest.raises(womd.DataError, match='not a WOMD Scenario'):
    list(womd.read_scenarios(path))


def test_roadgraph_can_be_optional():
  s = synthetic.straight_road_scenario()
  s.ClearField('map_features')
  cfg = womd.ReaderConfig(require_roadgraph=False)
  state = womd.state_from_scenario(s, cfg).state
  assert not state.roadgraph_points.valid.any()


def test_expand_paths(tmp_path):
  for i in range(3):
    _write(tmp_path, [synthetic.straight_road_scenario(f's{i}')],
           f'd.tfrecord-{i:05d}-of-00003')
  got = womd.expand_paths(str(tmp_path / 'd.tfrecord@3'))
  assert len(got) == 3 and got == sorted(got)
  assert womd.expand_paths(str(tmp_path / 'd.tfrecord-*')) == got
  with pytest.raises(FileNotFoundError, match='no file matches'):
    womd.expand_paths(str(tmp_path / 'nothing-*'))
  with pytest.raises(FileNotFoundError, match='missing'):
    womd.expand_paths(str(tmp_path / 'd.tfrecord@4'))


def test_cli_info(tmp_path, capsys):
  path = _write(tmp_path, [synthetic.straight_road_scenario('cli-0')])
  assert data_cli.main(['info', str(path)]) == 0
  info = json.loads(capsys.readouterr().out.strip())
  assert info['scenario_id'] == 'cli-0'
  assert info['num_tracks'] == 6
  assert info['tracks_per_type'] == {'cyclist': 1, 'pedestrian': 1,
                                     'vehicle': 4}
  assert info['tracks_to_predict'] == [1, 2]
  assert info['num_map_features'] == {'crosswalk': 1, 'lane': 2,
                                      'road_edge': 2, 'road_line': 1,
                                      'stop_sign': 1}
  assert info['num_traffic_light_steps'] == 91
  path.write_bytes(path.read_bytes()[:-3])
  assert data_cli.main(['info', str(path)]) == 2
  assert 'record 0' in capsys.readouterr().err


# --------------------------------------------------------------------------
# Real WOMD scenarios from ../shared (skipped when absent).


def _shared_files(root):
  return sorted(glob.glob(str(root / 'official' / '*.tfrecord')) +
                glob.glob(str(root / 'real' / 'real.tfrecord-*')))


@pytest.mark.data
def test_shared_scenarios_round_trip(shared_womd):
  files = _shared_files(shared_womd)
  count = 0
  for path, index, scenario in womd.read_scenarios(files):
    ex = womd.state_from_scenario(scenario, FULL, path=path, record=index)
    ex.state.validate()
    assert_round_trip(scenario,
                      womd_export.scenario_from_state(ex.state, ex.scenario_id))
    count += 1
  assert count == 42


@pytest.mark.data
def test_shared_scenarios_default_config(shared_womd):
  manifest = {}
  with open(shared_womd / 'real' / 'MANIFEST.jsonl') as f:
    for line in f:
      row = json.loads(line)
      manifest[row['scenario_id']] = row['counts']
  examples = list(womd.read_examples(_shared_files(shared_womd)))
  assert len(examples) == 42
  for ex in examples:
    s = ex.state
    s.validate()
    assert s.log_trajectory.shape == (128, 91)
    # Objects valid at the current step (WOSAC's sim agents) are kept first;
    # one converted scene has 141 of them, beyond WOMD's own limit of 128.
    if ex.scenario_id in manifest:
      assert (s.log_trajectory.valid[:, 10].sum() ==
              min(128, manifest[ex.scenario_id]['valid_at_current']))
    assert s.object_metadata.is_sdc.sum() == 1
  info = womd.scenario_info(next(iter(womd.read_scenarios(
      shared_womd / 'official' / 'motion_data_one_scenario.tfrecord')))[2])
  assert info['num_tracks'] == 83 and info['num_valid_at_current'] == 50
  assert info['tracks_per_type'] == {'cyclist': 3, 'pedestrian': 10,
                                     'vehicle': 70}
  assert info['sdc_track_index'] == 82
  assert info['tracks_to_predict'] == [72, 43, 42]
  assert info['num_map_features'] == {'crosswalk': 4, 'lane': 199,
                                      'road_edge': 28, 'road_line': 59,
                                      'speed_bump': 3, 'stop_sign': 8}
  assert info['num_traffic_light_steps'] == 91
