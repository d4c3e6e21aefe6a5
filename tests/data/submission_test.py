"""WOSAC rollouts: Trajectory <-> ScenarioRollouts, validation, files."""

import math
import os
import tarfile

import numpy as np
import pytest

from prefalign import datatypes
from prefalign.data import submission
from prefalign.data import submission_files
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.data.protos import scenario_pb2
from prefalign.data.protos import sim_agents_submission_pb2 as submission_pb2

SID = 'synth-sub'
FULL = womd.ReaderConfig(max_num_objects=None, max_roadgraph_points=None,
                         max_traffic_lights=None)
# Track 5 (id 6) is invalid at the current step: in the state, not a sim agent.
NOT_SIM_AGENT_ID = 6
META = dict(
    account_name='someone@example.com', unique_method_name='prefalign-test',
    authors=['A. Author', 'B. Author'], affiliation='Nowhere',
    description='unit test', method_link='https://example.com',
    num_model_parameters='7M',
    acknowledge_complies_with_closed_loop_requirement=True)
STEPS = datatypes.NUM_SIM_STEPS
NOW = datatypes.CURRENT_TIME_INDEX


@pytest.fixture(scope='module')
def example():
  scenario = synthetic.straight_road_scenario(SID, invalid_gap=(5, 8, 12))
  return womd.state_from_scenario(scenario)  # padded to 128 rows


def _rollouts(state, num_rollouts, seed=0):
  """Constant-velocity futures plus noise, in the canonical form.

  Sim-agent rows are valid everywhere with sizes from the log at step 10;
  every other row is invalid and -1.
  """
  rng = np.random.default_rng(seed)
  mask = submission.sim_agent_mask(state)
  shape = (num_rollouts, state.num_objects, STEPS)
  valid = np.broadcast_to(mask[None, :, None], shape)
  log = state.log_trajectory
  k = np.arange(1, STEPS + 1) * datatypes.TIME_INTERVAL
  f = {}
  for name, vel in (('x', 'vel_x'), ('y', 'vel_y')):
    now = np.asarray(getattr(log, name))[:, NOW]
    v = np.asarray(getattr(log, vel))[:, NOW]
    f[name] = now[None, :, None] + v[None, :, None] * k + rng.normal(
        0, 0.3, shape)
  f['z'] = rng.normal(0, 0.1, shape)
  f['yaw'] = rng.uniform(-np.pi, np.pi, shape)
  for name in ('length', 'width', 'height'):
    f[name] = np.broadcast_to(
        np.asarray(getattr(log, name))[None, :, NOW, None], shape)
  f = {n: np.where(valid, v, -1).astype(np.float32) for n, v in f.items()}
  return datatypes.Trajectory(
      valid=valid.copy(), vel_x=np.zeros(shape, np.float32),
      vel_y=np.zeros(shape, np.float32),
      timestamp_micros=np.zeros(shape, np.int32), **f)


@pytest.fixture
def proto(example):
  return submission.scenario_rollouts_from_trajectory(
      example.state, SID, _rollouts(example.state, 32))


def _sim_ids(state):
  return np.asarray(state.object_metadata.ids)[
      submission.sim_agent_mask(state)].tolist()


# ---------------------------------------------------------------------------
# Conversion.


def test_sim_agents(example):
  mask = submission.sim_agent_mask(example)
  assert mask.shape == (128,)
  assert _sim_ids(example.state) == [1, 2, 3, 4, 5]  # not id 6, no padding


def test_round_trip_exact(example):
  state = example.state
  traj = _rollouts(state, 4)
  proto = submission.scenario_rollouts_from_trajectory(state, SID, traj)
  assert proto.scenario_id == SID
  assert len(proto.joint_scenes) == 4
  for scene in proto.joint_scenes:
    assert [t.object_id for t in scene.simulated_trajectories] == (
        _sim_ids(state))
    for t in scene.simulated_trajectories:
      assert len(t.center_x) == len(t.heading) == STEPS
      assert not t.valid and not t.length and not t.HasField('object_type')

  back = submission.trajectory_from_scenario_rollouts(proto, example)
  back.validate()
  assert back.shape == (4, 128, STEPS)
  for name in ('x', 'y', 'z', 'yaw', 'valid', 'length', 'width', 'height'):
    np.testing.assert_array_equal(getattr(back, name), getattr(traj, name),
                                  err_msg=name)
    assert getattr(back, name).dtype == getattr(traj, name).dtype

  # Derived fields: the clock continues the log's; velocities are backward
  # differences starting from the logged position at step 10.
  mask = submission.sim_agent_mask(state)
  t10 = np.asarray(state.log_trajectory.timestamp_micros)[:, NOW]
  np.testing.assert_array_equal(
      back.timestamp_micros[:, mask],
      np.broadcast_to(t10[mask, None] + 100_000 * np.arange(1, STEPS + 1),
                      (4, mask.sum(), STEPS)))
  assert (back.timestamp_micros[:, ~mask] == -1).all()
  x10 = np.asarray(state.log_trajectory.x)[:, NOW]
  np.testing.assert_allclose(back.vel_x[:, mask, 0],
                             (traj.x[:, mask, 0] - x10[mask]) / 0.1,
                             rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(back.vel_y[:, mask, 1:],
                             np.diff(traj.y[:, mask], axis=-1) / 0.1,
                             rtol=1e-4, atol=1e-3)
  assert (back.vel_x[:, ~mask] == -1).all()

  # And back again: the same bytes.
  again = submission.scenario_rollouts_from_trajectory(state, SID, back)
  assert again.SerializeToString() == proto.SerializeToString()


def test_order_within_joint_scene_does_not_matter(example, proto):
  shuffled = submission.ScenarioRollouts()
  shuffled.CopyFrom(proto)
  for scene in shuffled.joint_scenes:
    trajs = list(scene.simulated_trajectories)[::-1]
    del scene.simulated_trajectories[:]
    scene.simulated_trajectories.extend(trajs)
  a = submission.trajectory_from_scenario_rollouts(proto, example)
  b = submission.trajectory_from_scenario_rollouts(shuffled, example)
  for name in ('x', 'y', 'z', 'yaw', 'valid'):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_full_config_state_and_jax_arrays(example):
  import jax
  full = womd.state_from_scenario(
      synthetic.straight_road_scenario(SID, invalid_gap=(5, 8, 12)), FULL)
  assert full.state.num_objects == 6
  traj = _rollouts(full.state, 2)
  proto = submission.scenario_rollouts_from_trajectory(
      jax.tree.map(jax.numpy.asarray, full.state), SID,
      jax.tree.map(jax.numpy.asarray, traj))
  back = submission.trajectory_from_scenario_rollouts(proto, full)
  np.testing.assert_array_equal(back.x, traj.x)


def test_from_trajectory_ignores_other_rows_and_checks(example):
  state = example.state
  traj = _rollouts(state, 2)
  # Anything in rows that are not sim agents is ignored.
  x = traj.x.copy()
  x[:, 5] = np.nan  # id 6, invalid at step 10
  x[:, 100] = np.inf  # padding
  proto = submission.scenario_rollouts_from_trajectory(
      state, SID, traj.replace(x=x))
  assert len(proto.joint_scenes[0].simulated_trajectories) == 5

  bad = traj.x.copy()
  bad[1, 2, 7] = np.nan  # row 2 is id 3
  with pytest.raises(ValueError, match=r"scenario 'synth-sub'.*rollout 1: "
                     r'sim agent object id 3 .*non-finite x.*simulated step '
                     r'7 \(scenario step 18\)'):
    submission.scenario_rollouts_from_trajectory(state, SID,
                                                 traj.replace(x=bad))
  huge = traj.yaw.astype(np.float64)
  huge[0, 0, 0] = 1e300  # overflows float32
  with pytest.raises(ValueError, match='object id 1 .*non-finite yaw'):
    submission.scenario_rollouts_from_trajectory(state, SID,
                                                 traj.replace(yaw=huge))

  short = jax_free_slice(traj, STEPS - 1)
  with pytest.raises(submission.DataError,
                     match=r"scenario 'synth-sub'.*shape \(2, 128, 79\).*80"):
    submission.scenario_rollouts_from_trajectory(state, SID, short)
  with pytest.raises(ValueError, match=r'shape \(128, 80\)'):
    submission.scenario_rollouts_from_trajectory(
        state, SID, jax_index(traj, 0))

  invalid = traj.valid.copy()
  invalid[0, 3, 40] = False
  with pytest.raises(ValueError, match='object id 4 .*invalid at simulated '
                     'step 40.*allow_invalid'):
    submission.scenario_rollouts_from_trajectory(
        state, SID, traj.replace(valid=invalid))
  proto = submission.scenario_rollouts_from_trajectory(
      state, SID, traj.replace(valid=invalid), allow_invalid=True)
  assert len(proto.joint_scenes) == 2

  with pytest.raises(ValueError, match='scenario_id'):
    submission.scenario_rollouts_from_trajectory(state, None, traj)
  with pytest.raises(ValueError, match="'other' differs"):
    submission.scenario_rollouts_from_trajectory(example, 'other', traj)
  # A ScenarioExample carries its id.
  assert submission.scenario_rollouts_from_trajectory(
      example, None, traj).scenario_id == SID


def jax_free_slice(traj, steps):
  return datatypes.Trajectory(**{
      n: np.asarray(getattr(traj, n))[..., :steps]
      for n in traj.__dataclass_fields__})


def jax_index(traj, i):
  return datatypes.Trajectory(**{
      n: np.asarray(getattr(traj, n))[i] for n in traj.__dataclass_fields__})


# ---------------------------------------------------------------------------
# Validation.


def test_valid_proto_passes(example, proto):
  submission.validate_scenario_rollouts(proto, example)
  submission.validate_scenario_rollouts(proto, example.state,
                                        scenario_id=SID)
  submission.validate_scenario_rollouts(proto, example.state)
  assert submission.trajectory_from_scenario_rollouts(
      proto, example).shape == (32, 128, STEPS)


def _traj(p, scene=0, index=0):
  return p.joint_scenes[scene].simulated_trajectories[index]


def _drop_step(p):
  del _traj(p, 3, 1).center_y[-1]


def _long_heading(p):
  _traj(p, 5, 4).heading.append(0.0)


def _bad_valid_count(p):
  _traj(p, 2, 0).valid.extend([True] * 3)


def _missing(p):
  del p.joint_scenes[7].simulated_trajectories[2]


def _missing_two(p):
  del p.joint_scenes[7].simulated_trajectories[1:3]


def _extra_not_valid_now(p):
  t = p.joint_scenes[4].simulated_trajectories.add()
  t.CopyFrom(_traj(p, 4, 0))
  t.object_id = NOT_SIM_AGENT_ID


def _extra_unknown(p):
  t = p.joint_scenes[4].simulated_trajectories.add()
  t.CopyFrom(_traj(p, 4, 0))
  t.object_id = 999


def _duplicate(p):
  t = p.joint_scenes[9].simulated_trajectories.add()
  t.CopyFrom(_traj(p, 9, 3))


def _nan(p):
  _traj(p, 11, 2).center_x[5] = math.nan


def _inf(p):
  _traj(p, 0, 4).heading[79] = -math.inf


def _no_object_id(p):
  _traj(p, 1, 1).ClearField('object_id')


def _wrong_type(p):
  _traj(p, 1, 0).object_type = scenario_pb2.Track.TYPE_PEDESTRIAN


BAD = [
    (_drop_step, r'rollout 3: object id 2: center_y has 79 values, expected '
     r'80'),
    (_long_heading, 'rollout 5: object id 5: heading has 81 values'),
    (_bad_valid_count, 'rollout 2: object id 1: valid has 3 values'),
    (_missing, r'rollout 7: 1 of 5 sim agents are missing .*object ids \[3\]'),
    (_missing_two, r'rollout 7: 2 of 5 .*object ids \[2, 3\]'),
    (_extra_not_valid_now, 'rollout 4: object id 6 is not a sim agent: it is '
     'not valid at the current step 10'),
    (_extra_unknown, 'rollout 4: object id 999 is not an object of the '
     'scenario'),
    (_duplicate, 'rollout 9: object id 4 appears twice'),
    (_nan, r'rollout 11: object id 3 has non-finite center_x=nan at '
     r'simulated step 5 \(scenario step 16\)'),
    (_inf, 'rollout 0: object id 5 has non-finite heading=-inf at simulated '
     'step 79'),
    (_no_object_id, 'rollout 1: simulated trajectory 1 has no object_id'),
    (_wrong_type, 'rollout 1: object id 1: object_type 2 differs from the '
     'logged type 1'),
]


@pytest.mark.parametrize('mutate,message', BAD,
                         ids=[m.__name__.strip('_') for m, _ in BAD])
def test_bad_rollouts_are_named(example, proto, mutate, message):
  mutate(proto)
  for call in (
      lambda: submission.validate_scenario_rollouts(proto, example),
      lambda: submission.trajectory_from_scenario_rollouts(proto, example)):
    with pytest.raises(submission.DataError, match=message) as info:
      call()
    assert isinstance(info.value, ValueError)
    assert f"scenario '{SID}'" in str(info.value)
    assert info.value.scenario_id == SID


def test_rollout_count(example, proto):
  del proto.joint_scenes[-1]
  with pytest.raises(submission.DataError,
                     match=r"scenario 'synth-sub': 31 joint scenes "
                     r'\(rollouts\), expected exactly 32'):
    submission.validate_scenario_rollouts(proto, example)
  # Conversion takes whatever count the proto has; validation is separate.
  assert submission.trajectory_from_scenario_rollouts(
      proto, example).shape == (31, 128, STEPS)
  submission.validate_scenario_rollouts(proto, example, num_rollouts=31)


def test_scenario_id_checks(example, proto):
  proto.scenario_id = 'someone-else'
  for call in (
      lambda: submission.validate_scenario_rollouts(proto, example),
      lambda: submission.trajectory_from_scenario_rollouts(proto, example),
      lambda: submission.trajectory_from_scenario_rollouts(
          proto, example.state, scenario_id=SID)):
    with pytest.raises(submission.DataError,
                       match="'someone-else', but the state is scenario "
                       "'synth-sub'"):
      call()
  # Without an expected id, conversion trusts the proto.
  submission.trajectory_from_scenario_rollouts(proto, example.state)
  proto.ClearField('scenario_id')
  with pytest.raises(submission.DataError, match='has no scenario_id'):
    submission.validate_scenario_rollouts(proto, example.state)


def test_batched_state_is_refused(example, proto):
  batched = datatypes.stack([example.state, example.state])
  with pytest.raises(ValueError, match='unbatched'):
    submission.trajectory_from_scenario_rollouts(proto, batched)


# ---------------------------------------------------------------------------
# Files.


def _many(example, n):
  return [submission.scenario_rollouts_from_trajectory(
      example.state, f'{SID}-{i}', _rollouts(example.state, 2, seed=i))
          for i in range(n)]


def _listing(folder):
  return sorted(os.listdir(folder))


def test_rollouts_file_round_trip(example, tmp_path):
  rollouts = _many(example, 3)
  path = tmp_path / 'rollouts.tfrecord'
  assert submission_files.write_rollouts(path, rollouts) == 3
  assert _listing(tmp_path) == ['rollouts.tfrecord']
  back = list(submission_files.read_rollouts(path))
  assert back == rollouts
  # It is a plain TFRecord of ScenarioRollouts.
  assert len(list(tfrecord.read_records(path))) == 3


def test_submission_file_round_trip(example, tmp_path):
  rollouts = _many(example, 3)
  path = tmp_path / 'submission.binproto'
  assert submission_files.write_submission(path, iter(rollouts), **META) == 3
  assert _listing(tmp_path) == ['submission.binproto']
  assert list(submission_files.read_rollouts(str(path))) == rollouts

  msg = submission_pb2.SimAgentsChallengeSubmission()
  msg.ParseFromString(path.read_bytes())
  # Streaming the entries writes the same message as building it whole.
  whole = submission_pb2.SimAgentsChallengeSubmission()
  whole.CopyFrom(msg)
  assert whole.SerializeToString() == msg.SerializeToString()
  assert msg.submission_type == msg.SIM_AGENTS_SUBMISSION == 1
  assert msg.account_name == 'someone@example.com'
  assert msg.unique_method_name == 'prefalign-test'
  assert list(msg.authors) == ['A. Author', 'B. Author']
  assert (msg.affiliation, msg.description, msg.method_link) == (
      'Nowhere', 'unit test', 'https://example.com')
  assert msg.num_model_parameters == '7M'
  assert msg.acknowledge_complies_with_closed_loop_requirement
  assert msg.HasField('uses_lidar_data') and not msg.uses_lidar_data
  assert msg.HasField('uses_camera_data') and not msg.uses_camera_data
  assert msg.HasField('uses_public_model_pretraining')
  assert [r.scenario_id for r in msg.scenario_rollouts] == [
      f'{SID}-{i}' for i in range(3)]


def test_both_formats_in_one_read(example, tmp_path):
  rollouts = _many(example, 4)
  submission_files.write_submission(tmp_path / 'a.binproto', rollouts[:2],
                                    **META)
  submission_files.write_rollouts(tmp_path / 'b.tfrecord', rollouts[2:])
  (tmp_path / 'c.tfrecord').write_bytes(b'')  # empty: no rollouts
  got = list(submission_files.read_rollouts(
      [tmp_path / 'a.binproto', tmp_path / 'b.tfrecord',
       tmp_path / 'c.tfrecord']))
  assert got == rollouts
  assert list(submission_files.read_rollouts(str(tmp_path / '*'))) == rollouts


def test_shards_and_archive(example, tmp_path):
  rollouts = _many(example, 5)
  out = tmp_path / 'sub'
  archive = tmp_path / 'submission.tar.gz'
  paths = submission_files.write_submission_shards(out, rollouts, 3,
                                                   archive=archive, **META)
  names = ['submission.binproto-00000-of-00003',
           'submission.binproto-00001-of-00003',
           'submission.binproto-00002-of-00003']
  assert [os.path.basename(p) for p in paths] == names
  assert _listing(out) == names
  assert _listing(tmp_path) == ['sub', 'submission.tar.gz']
  got = list(submission_files.read_rollouts(
      str(out / 'submission.binproto@3')))
  assert sorted(got, key=lambda r: r.scenario_id) == rollouts
  # Round robin: shard 0 holds scenarios 0 and 3.
  assert [r.scenario_id for r in submission_files.read_rollouts(
      paths[0])] == [f'{SID}-0', f'{SID}-3']
  for p in paths:
    msg = submission_pb2.SimAgentsChallengeSubmission()
    msg.ParseFromString(open(p, 'rb').read())
    assert msg.submission_type == 1 and msg.unique_method_name
  with tarfile.open(archive, 'r:gz') as tar:
    assert sorted(tar.getnames()) == names
    for name in names:
      assert tar.extractfile(name).read() == (out / name).read_bytes()

  # More shards than scenarios: the spare shards carry only the metadata.
  paths = submission_files.write_submission_shards(tmp_path / 'few',
                                                   rollouts[:1], 2, **META)
  assert list(submission_files.read_rollouts(paths[1])) == []
  assert [r.scenario_id for r in submission_files.read_rollouts(paths)] == [
      f'{SID}-0']


def test_junk_file_is_named(tmp_path):
  junk = tmp_path / 'junk.bin'
  junk.write_bytes(b'this is not a rollouts file at all\n' * 20)
  with pytest.raises(submission.DataError,
                     match=r'file .*junk\.bin: not a rollouts file'):
    list(submission_files.read_rollouts(junk))
  noise = tmp_path / 'noise.bin'
  noise.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(submission.DataError, match='noise.bin'):
    list(submission_files.read_rollouts(noise))
  # A TFRecord of something else (WOMD Scenarios) is refused per record.
  scenarios = tmp_path / 'scenarios.tfrecord'
  tfrecord.write_records(scenarios, [
      synthetic.straight_road_scenario('x').SerializeToString()])
  with pytest.raises(submission.DataError,
                     match=r'scenarios\.tfrecord, record 0: record is not a '
                     'ScenarioRollouts'):
    list(submission_files.read_rollouts(scenarios))
  with pytest.raises(FileNotFoundError):
    list(submission_files.read_rollouts(tmp_path / 'absent.binproto'))


def _failing(rollouts, after):
  for i, r in enumerate(rollouts):
    if i == after:
      raise RuntimeError('simulation crashed')
    yield r


def test_atomic_writes(example, tmp_path):
  rollouts = _many(example, 3)
  path = tmp_path / 'submission.binproto'
  with pytest.raises(RuntimeError, match='crashed'):
    submission_files.write_submission(path, _failing(rollouts, 2), **META)
  assert _listing(tmp_path) == []

  # A failed rewrite leaves the previous file untouched.
  submission_files.write_submission(path, rollouts[:1], **META)
  before = path.read_bytes()
  with pytest.raises(RuntimeError):
    submission_files.write_submission(path, _failing(rollouts, 1), **META)
  assert path.read_bytes() == before
  assert _listing(tmp_path) == ['submission.binproto']

  # Bad input is refused before anything is renamed into place.
  dup = [rollouts[0], rollouts[0]]
  with pytest.raises(submission.DataError, match='appears twice'):
    submission_files.write_submission(tmp_path / 'dup.binproto', dup, **META)
  with pytest.raises(TypeError, match='ScenarioRollouts'):
    submission_files.write_submission(tmp_path / 'bad.binproto', [b'bytes'],
                                      **META)
  with pytest.raises(ValueError, match='num_model_parameters'):
    submission_files.write_submission(
        tmp_path / 'meta.binproto', rollouts,
        **{**META, 'num_model_parameters': 'lots'})
  assert _listing(tmp_path) == ['submission.binproto']

  with pytest.raises(RuntimeError):
    submission_files.write_rollouts(tmp_path / 'r.tfrecord',
                                    _failing(rollouts, 2))
  assert _listing(tmp_path) == ['submission.binproto']

  with pytest.raises(RuntimeError):
    submission_files.write_submission_shards(
        tmp_path / 'shards', _failing(rollouts, 2), 2,
        archive=tmp_path / 'a.tar.gz', **META)
  assert _listing(tmp_path / 'shards') == []
  assert _listing(tmp_path) == ['shards', 'submission.binproto']


# ---------------------------------------------------------------------------
# The official test submission (needs ../shared).

OFFICIAL_ID = '637f20cafde22ff8'


@pytest.mark.data
def test_official_test_submission(shared_womd):
  official = shared_womd / 'official'
  rollouts = list(submission_files.read_rollouts(
      official / 'test_submission.binproto'))
  assert len(rollouts) == 1
  proto = rollouts[0]
  # Our protos are field-compatible: the file re-serialises byte for byte.
  data = (official / 'test_submission.binproto').read_bytes()
  msg = submission_pb2.SimAgentsChallengeSubmission()
  msg.ParseFromString(data)
  assert msg.SerializeToString() == data
  assert msg.submission_type == msg.SIM_AGENTS_SUBMISSION
  assert proto.scenario_id == OFFICIAL_ID
  assert len(proto.joint_scenes) == 32
  for scene in proto.joint_scenes:
    assert len(scene.simulated_trajectories) == 50
    for t in scene.simulated_trajectories:
      for field in ('center_x', 'center_y', 'center_z', 'heading'):
        assert len(getattr(t, field)) == STEPS

  (_, _, scenario), = womd.read_scenarios(
      official / 'motion_data_one_scenario.tfrecord')
  for config, num_rows in ((FULL, 83), (womd.ReaderConfig(), 128)):
    example = womd.state_from_scenario(scenario, config)
    assert example.scenario_id == OFFICIAL_ID
    state = example.state
    assert state.num_objects == num_rows
    submission.validate_scenario_rollouts(proto, example)
    traj = submission.trajectory_from_scenario_rollouts(proto, example)
    traj.validate()
    assert traj.shape == (32, num_rows, STEPS)
    mask = submission.sim_agent_mask(state)
    assert mask.sum() == 50
    assert traj.valid[:, mask].all() and not traj.valid[:, ~mask].any()
    assert (traj.x[:, ~mask] == -1).all()
    assert np.isfinite(traj.x).all()
    ids = np.asarray(state.object_metadata.ids)
    # Box sizes from the log at step 10.
    np.testing.assert_array_equal(
        traj.length[:, mask],
        np.broadcast_to(np.asarray(state.log_trajectory.length)[mask, NOW,
                                                                None],
                        (32, 50, STEPS)))

    # Writing it back reproduces every coordinate, per object id.
    again = submission.scenario_rollouts_from_trajectory(example, None, traj)
    submission.validate_scenario_rollouts(again, example)
    for scene_a, scene_b in zip(proto.joint_scenes, again.joint_scenes):
      a = {t.object_id: t for t in scene_a.simulated_trajectories}
      b = {t.object_id: t for t in scene_b.simulated_trajectories}
      assert sorted(a) == sorted(b) == sorted(ids[mask].tolist())
      for oid, ta in a.items():
        for field in ('center_x', 'center_y', 'center_z', 'heading'):
          np.testing.assert_array_equal(
              np.asarray(getattr(b[oid], field), np.float32),
              np.asarray(getattr(ta, field), np.float32),
              err_msg=f'object {oid} {field}')
    # The rows follow the state, so ids appear in row order.
    assert [t.object_id for t in again.joint_scenes[0].simulated_trajectories
            ] == ids[mask].tolist()
