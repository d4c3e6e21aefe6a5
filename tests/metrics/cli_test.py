"""prefalign-wosac end to end on synthetic scenarios; its bad-input errors."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from prefalign.cli import wosac as wosac_cli
from prefalign.data import submission
from prefalign.data import submission_files
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd

# One worker runs the module: its tests score the same scene shapes, so the
# metric compiles once.
pytestmark = pytest.mark.xdist_group('metrics_cli')


def _write(tmp_path, noise=0.3, scenario_ids=('cli-a', 'cli-b'),
           rollout_ids=None, mutate=None):
  scenarios = [synthetic.straight_road_scenario(sid, seed=i,
                                                with_traffic_light=i == 0)
               for i, sid in enumerate(scenario_ids)]
  spath = tmp_path / 'scenarios.tfrecord'
  tfrecord.write_records(spath, [s.SerializeToString() for s in scenarios])
  protos = []
  rng = np.random.default_rng(0)
  for s, rid in zip(scenarios, rollout_ids or scenario_ids):
    state = womd.state_from_scenario(s).state
    log = jax.tree.map(np.asarray, state.log_trajectory)
    fut = jax.tree.map(lambda a: np.broadcast_to(
        a[:, 11:], (32,) + a[:, 11:].shape).copy(), log)
    fut = fut.replace(x=(fut.x + noise * rng.normal(size=fut.x.shape)
                         ).astype(np.float32),
                      valid=np.ones_like(fut.valid))
    proto = submission.scenario_rollouts_from_trajectory(state, rid, fut)
    if mutate:
      mutate(proto)
    protos.append(proto)
  rpath = tmp_path / 'rollouts.tfrecord'
  submission_files.write_rollouts(rpath, protos)
  return str(spath), str(rpath)


def test_json_output_per_scenario_and_aggregate(tmp_path, capsys):
  spath, rpath = _write(tmp_path)
  assert wosac_cli.main(['--scenarios', spath, '--rollouts', rpath,
                         '--json']) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [line.get('scenario_id') for line in lines[:2]] == ['cli-a', 'cli-b']
  agg = lines[2]['aggregate']
  assert agg['num_scenarios'] == 2
  np.testing.assert_allclose(
      agg['metametric'], np.mean([line['metametric'] for line in lines[:2]]),
      rtol=1e-6)
  for key in ('kinematic', 'interactive', 'map_based',
              'min_average_displacement_error',
              'distance_to_road_edge_likelihood'):
    assert 0 <= agg[key] < 10, key


def test_table_output(tmp_path, capsys):
  spath, rpath = _write(tmp_path, scenario_ids=('cli-a',))
  # The default challenge, named: the JSON test's compiled metric serves.
  assert wosac_cli.main(['--scenarios', spath, '--rollouts', rpath,
                         '--challenge', '2025']) == 0
  out = capsys.readouterr().out
  assert 'cli-a' in out and 'aggregate (1 scenarios)' in out


@pytest.mark.parametrize('kwargs,message', [
    (dict(rollout_ids=('cli-a', 'nowhere')),
     r"match no scenario .*'nowhere'"),
    (dict(mutate=lambda p: p.joint_scenes[3].simulated_trajectories[0]
          .center_x.__setitem__(5, float('nan'))),
     r"scenario 'cli-a'.*object id 1 .*non-finite"),
    (dict(mutate=lambda p: p.joint_scenes[0].simulated_trajectories[1]
          .center_y.pop()),
     r"scenario 'cli-a'.*object id 2.*center_y"),
    (dict(mutate=lambda p: p.joint_scenes.pop()),
     r"scenario 'cli-a'.*31"),
    (dict(mutate=lambda p: [js.simulated_trajectories.pop()
                            for js in p.joint_scenes]),
     r"scenario 'cli-a'.*missing"),
])
def test_bad_rollouts_are_named(tmp_path, capsys, kwargs, message):
  spath, rpath = _write(tmp_path, **kwargs)
  assert wosac_cli.main(['--scenarios', spath, '--rollouts', rpath]) == 2
  err = capsys.readouterr().err
  assert re.search(message, err, re.S), err


def test_size_classes_hold_every_scenario():
  assert wosac_cli.size_class(5, 100, 0) == wosac_cli.SIZE_CLASSES[0]
  assert wosac_cli.size_class(128, 32_768, 32) == wosac_cli.SIZE_CLASSES[0]
  # One count over the first class is enough to take the next.
  assert wosac_cli.size_class(129, 100, 0) == wosac_cli.SIZE_CLASSES[1]
  assert wosac_cli.size_class(5, 100, 33) == wosac_cli.SIZE_CLASSES[1]
  # Beyond the last class: doubled until it holds the scenario.
  last = wosac_cli.SIZE_CLASSES[-1]
  assert wosac_cli.size_class(last[0] + 1, 0, 0) == tuple(2 * s for s in last)
  assert wosac_cli.size_class(0, 4 * last[1] + 1, 0) == tuple(
      8 * s for s in last)
  assert wosac_cli.evaluated_slots(1) == wosac_cli.evaluated_slots(9) == 9
  assert wosac_cli.evaluated_slots(10) == 17


@pytest.mark.data
def test_the_shared_real_scenarios_compile_at_most_three_shapes(shared_womd):
  """Every (reader sizes, evaluated slots) pair is one compilation of the
  metric: the 40 shared real scenarios need at most 3 (issue: size
  buckets), and each keeps all its objects, map points and lanes."""
  shapes = set()
  paths = sorted(str(p) for p in (shared_womd / 'real').glob('real.*'))
  count = 0
  for _, _, scenario in womd.read_scenarios(paths):
    reader = wosac_cli.reader_config_for(scenario)
    info = womd.scenario_info(scenario)
    assert info['num_tracks'] <= reader.max_num_objects
    assert info['num_roadgraph_points'] <= reader.max_roadgraph_points
    shapes.add((reader, wosac_cli.evaluated_slots(
        wosac_cli.num_evaluated(scenario))))
    count += 1
  assert count == 40
  assert len(shapes) <= 3, shapes


def test_compilation_cache_flag(tmp_path, capsys):
  """A folder that cannot be made is named (before any work); one that can
  receives the compiled programs of a fresh process."""
  blocker = tmp_path / 'file'
  blocker.write_text('')
  spath, rpath = _write(tmp_path, scenario_ids=('cli-a',))
  assert wosac_cli.main(['--scenarios', spath, '--rollouts', rpath,
                         '--compilation-cache', str(blocker / 'c')]) == 2
  assert f'compilation cache {blocker / "c"}' in capsys.readouterr().err
  folder = tmp_path / 'jax'
  code = ('import jax, jax.numpy as jnp\n'
          'from prefalign import compilation_cache\n'
          f'compilation_cache.enable({str(folder)!r}, 0.0)\n'
          'f = jax.jit(lambda x: jnp.sin(x) @ x)\n'
          'f(jnp.ones((8, 8))).block_until_ready()\n')
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('JAX_COMPILATION_CACHE')}
  subprocess.run([sys.executable, '-c', code], check=True, env=env,
                 timeout=300)
  assert any(folder.iterdir())
