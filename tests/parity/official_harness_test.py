"""The official-metric harness reproduces the shared EXPECTED.md numbers.

Runs the official WOSAC metric (pip 1.6.7 and 1.6.4, each in its own cached
venv) through ``official_metrics.py`` / ``official_cache.py`` on the official
test pair and on ``make_rollouts.py`` log replay, and checks every number of
``official/EXPECTED.md`` sections 3a and 3b (D, E) to 1e-5. The expected
values are read from EXPECTED.md at test time (they are derived from WOMD
data, so they are not copied into the repository).

Cold cost: building the two metric venvs (~3 min with a warm pip cache) plus
three official runs on the 50-agent test scenario (~5 min on 2 cores); then
seconds, from the cache. The stdlib-only pieces are tested without any venv.
"""

import io
import os

import numpy as np
import pytest

from . import expected_md
from . import official_cache
from . import official_env
from . import tfrecord_io

TOL = 1e-5

parse_tables = expected_md.parse_tables
expected_column = expected_md.expected_column


def assert_matches(record: dict, expected: dict, what: str) -> None:
  """Every expected number equals the official record's to ``TOL``."""
  problems = []
  for (part, field), want in expected.items():
    got = record[part].get(field)
    if want is None:
      if got is not None:
        problems.append(f'{field}: expected absent, got {got}')
    elif got is None or abs(got - want) > TOL:
      problems.append(f'{field}: expected {want}, got {got}')
  assert not problems, f'{what}:\n' + '\n'.join(problems)


@pytest.fixture(scope='module')
def official(shared_womd):
  folder = shared_womd / 'official'
  tables = parse_tables((folder / 'EXPECTED.md').read_text(encoding='utf-8'))
  return {
      'scenarios': folder / 'motion_data_one_scenario.tfrecord',
      'submission': folder / 'test_submission.binproto',
      '3a': next(v for k, v in tables.items() if k.startswith('3a.')),
      '3b': next(v for k, v in tables.items() if k.startswith('3b.')),
  }


def _only(records: list[dict], config: str) -> dict:
  (record,) = [r for r in records if r['config'] == config]
  return record


@pytest.mark.data
@pytest.mark.slow
def test_official_submission_1_6_7(official):
  records = official_cache.official_results(
      official['scenarios'], official['submission'], ('2024', '2025', 'test'),
      flavour='metrics-1.6.7')
  for config, column in (('2024', '1.6.7, 2024 config'),
                         ('2025', '1.6.7, 2025 config'),
                         ('test', '1.6.7, test_config')):
    record = _only(records, config)
    assert record['package_version'] == '1.6.7'
    assert (record['n_rollouts'], record['n_sim_agents'],
            record['n_evaluated']) == (32, 50, 4)
    assert_matches(record, expected_column(official['3a'], column),
                   f'1.6.7 {config}')


@pytest.mark.data
@pytest.mark.slow
def test_official_submission_1_6_4(official):
  (record,) = official_cache.official_results(
      official['scenarios'], official['submission'], ('2024',),
      flavour='metrics-1.6.4')
  assert record['package_version'] == '1.6.4'
  assert_matches(record, expected_column(official['3a'], '1.6.4, 2024 config'),
                 '1.6.4 2024')


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize('column,flavour,config', [
    ('D:', 'metrics-1.6.7', '2024'),
    ('E:', 'metrics-1.6.7', '2025'),
])
def test_log_replay(official, column, flavour, config):
  submission = official_cache.rollouts(official['scenarios'], 'log')
  records = official_cache.official_results(
      official['scenarios'], submission, ('2024', '2025'), flavour=flavour)
  assert_matches(_only(records, config),
                 expected_column(official['3b'], column),
                 f'log replay {column} {flavour} {config}')


@pytest.mark.data
@pytest.mark.slow
def test_log_replay_1_6_4_differs_only_in_ttc(official):
  """1.6.4 scores TTC for every type: on log replay only TTC differs."""
  submission = official_cache.rollouts(official['scenarios'], 'log')
  (old,) = official_cache.official_results(
      official['scenarios'], submission, ('2024',), flavour='metrics-1.6.4')
  new = _only(official_cache.official_results(
      official['scenarios'], submission, ('2024', '2025'),
      flavour='metrics-1.6.7'), '2024')
  for field, value in old['metrics'].items():
    if field in ('time_to_collision_likelihood', 'metametric', 'scenario_id'):
      continue
    assert value == pytest.approx(new['metrics'][field], abs=TOL), field
  assert 'traffic_light_violation_likelihood' not in old['metrics']


def _make(scenarios, out, kind, seed):
  official_env.run_official(
      official_cache.MAKE_ROLLOUTS, '--scenarios', str(scenarios), '--kind',
      kind, '--seed', str(seed), '--out', str(out), timeout=600)
  return out


@pytest.mark.data
def test_make_rollouts(official, tmp_path):
  """Rollout kinds: shapes, log replay exactness, determinism, growth."""
  from prefalign.data import submission_files
  from prefalign.data import womd

  ((_, _, scenario),) = list(womd.read_scenarios([official['scenarios']]))
  evaluated = {scenario.tracks[i].id for i in
               [scenario.sdc_track_index] +
               [r.track_index for r in scenario.tracks_to_predict]}
  tracks = {t.id: t for t in scenario.tracks}

  def arrays(path):
    (rollouts,) = list(submission_files.read_rollouts(path))
    assert rollouts.scenario_id == scenario.scenario_id
    assert len(rollouts.joint_scenes) == 32
    ids = [t.object_id for t in rollouts.joint_scenes[0].simulated_trajectories]
    xyzh = np.array([[[t.center_x, t.center_y, t.center_z, t.heading]
                      for t in js.simulated_trajectories]
                     for js in rollouts.joint_scenes], np.float32)
    return ids, np.moveaxis(xyzh, -2, -1)  # (32, n, 80, 4)

  ids, log = arrays(official_cache.rollouts(official['scenarios'], 'log'))
  assert ids == [t.id for t in scenario.tracks if t.states[10].valid]
  assert log.shape == (32, 50, 80, 4)
  assert (log == log[:1]).all()
  for n, object_id in enumerate(ids):
    states = tracks[object_id].states[11:]
    valid = np.array([s.valid for s in states])
    want = np.array([(s.center_x, s.center_y, s.center_z, s.heading)
                     for s in states], np.float32)
    np.testing.assert_array_equal(log[0, n][valid], want[valid])
    # Distance of each invalid step's point to the nearest logged point.
    gap = np.hypot(*np.moveaxis(
        log[0, n, ~valid, None, :2] - want[None, valid, :2], -1, 0)).min(-1)
    if object_id in evaluated:
      assert (gap < 10).all()  # Interpolated or held, on the track.
    else:
      assert (gap > 9000).all()  # Moved away while invalid.

  a = _make(official['scenarios'], tmp_path / 'a', 'noisy', 1)
  b = _make(official['scenarios'], tmp_path / 'b', 'noisy', 1)
  c = _make(official['scenarios'], tmp_path / 'c', 'noisy', 2)
  assert a.read_bytes() == b.read_bytes() != c.read_bytes()
  noise = arrays(a)[1] - log
  assert abs(noise[..., :2].std() - 0.3) < 0.01
  assert abs(noise[..., 3].std() - 0.05) < 0.002

  _, cv = arrays(_make(official['scenarios'], tmp_path / 'cv',
                       'constant_velocity', 0))
  step = np.diff(cv[0, ..., :2], axis=1)
  np.testing.assert_allclose(step, step[:, :1].repeat(79, axis=1), atol=1e-2)

  _, pert = arrays(_make(official['scenarios'], tmp_path / 'p', 'perturbed',
                         0))
  offset = np.hypot(*np.moveaxis(pert[..., :2] - log[..., :2], -1, 0))
  assert offset[..., 0].mean() < 0.2 < 2.0 < offset[..., -1].mean()
  assert (np.diff(offset.mean(axis=(0, 1))) > -0.05).all()  # Grows smoothly.


@pytest.mark.data
@pytest.mark.slow
def test_real_parity_scenarios(shared_womd):
  """The official 1.6.7 metric runs on the real parity subset (opt-in)."""
  if not os.environ.get('PREFALIGN_PARITY_REAL'):
    pytest.skip('set PREFALIGN_PARITY_REAL=1 to run the official metric on '
                'the 3 real parity scenarios (about 2.5 min cold)')
  rows = official_cache.measure_real(shared_womd)
  assert [r['scenario_id'] for r in rows] == list(
      official_cache.REAL_PARITY_SCENARIOS)
  assert [(r['n_sim_agents'], r['n_evaluated']) for r in rows] == [
      (6, 2), (11, 4), (23, 3)]
  for row in rows:
    assert 0.3 < row['metametric'] < 1.0
    assert row['max_rss_kb'] < 6e6  # Well inside a 24 GB machine.


# ---- Cheap checks: no official venv, no data. -------------------------------


def test_tfrecord_framing_round_trip(tmp_path):
  assert tfrecord_io.crc32c(b'123456789') == 0xE3069283
  payloads = [b'', b'a', bytes(range(256)) * 40]
  path = tmp_path / 'x.tfrecord'
  with open(path, 'wb') as f:
    assert tfrecord_io.write_records(f, payloads) == 3
  assert list(tfrecord_io.records(path)) == payloads
  assert tfrecord_io.is_tfrecord(path)
  (tmp_path / 'y.bin').write_bytes(b'\n\x05hello' * 10)
  assert not tfrecord_io.is_tfrecord(tmp_path / 'y.bin')
  framed = b''.join(tfrecord_io.raw_records(path))
  assert framed == path.read_bytes()


def test_expected_table_parser():
  markdown = io.StringIO()
  markdown.write('### 3b. x\n\n| field | A: one | B: two |\n|---|---|---|\n'
                 '| linear_speed_likelihood | 0.5 | **0.25** |\n'
                 '| ADE / minADE | 0 / 0 | 1 / 2 |\n'
                 '| traffic_light_violation_likelihood | — (no) | 1.0 |\n'
                 '| bucket: kinematic / interactive / map-based | 1 / 2 / 3 |'
                 ' 4 / 5 / 6 |\n\ntext\n')
  tables = parse_tables(markdown.getvalue())
  got = expected_column(tables['3b. x'], 'B:')
  assert got == {
      ('metrics', 'linear_speed_likelihood'): 0.25,
      ('metrics', 'average_displacement_error'): 1.0,
      ('metrics', 'min_average_displacement_error'): 2.0,
      ('metrics', 'traffic_light_violation_likelihood'): 1.0,
      ('buckets', 'kinematic_metrics'): 4.0,
      ('buckets', 'interactive_metrics'): 5.0,
      ('buckets', 'map_based_metrics'): 6.0,
  }
  assert expected_column(tables['3b. x'], 'A:')[
      ('metrics', 'traffic_light_violation_likelihood')] is None


def test_real_parity_selection_is_documented():
  assert len(official_cache.REAL_PARITY_SCENARIOS) == 3
  assert all(official_cache.REAL_PARITY_SCENARIOS.values())
  assert set(official_env.FLAVOURS) >= {'protos', 'metrics-1.6.7',
                                        'metrics-1.6.4'}
  assert np.unique(list(official_cache.REAL_PARITY_SCENARIOS)).size == 3
