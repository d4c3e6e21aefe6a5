"""The main job's stages: end to end on a tiny config, resumable, checked."""

import json
import pathlib
import re
import shutil

import pytest

from experiments import stages
from experiments.configs import base
from experiments.stages import common
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from tests import tiny_demo as tiny_demo_lib


def test_data_stages_run_and_resume(tmp_path, capsys):
  config = base.get_config('runlocal')
  stages.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert '[data] wrote 4 scenarios of SUMO traffic on cross' in out
  assert (tmp_path / 'inspect' / 'scenario.png').stat().st_size > 10_000
  info = [json.loads(line) for line in
          (tmp_path / 'inspect' / 'info.jsonl').read_text().splitlines()]
  assert len(info) == 4
  summary = json.loads((tmp_path / 'replay' / 'summary.json').read_text())
  assert summary['scenarios'] == 4
  # The expert tracks the log exactly. Open-loop replay of the log's
  # actions drifts: SUMO's heading is the lane's at the front bumper, so on
  # curves the box centre does not move along it (real WOMD: ~0.4 m).
  assert summary['expert']['vehicle']['ade_mean_m'] < 1e-3
  assert 0.0 < summary['replay']['vehicle']['ade_mean_m'] < 3.0
  stages.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert out.count('(skipped)') == 3


def test_several_networks_and_extra_files_are_trained_on(tmp_path, capsys):
  # Scenarios shared out between networks, a folder each; extra WOMD files
  # join the training files; a rerun generates nothing.
  extra = tmp_path / 'extra.tfrecord'
  with tfrecord.TFRecordWriter(extra) as writer:
    writer.write(synthetic.straight_road_scenario(
        'extra-0', seed=0).SerializeToString())
  config = base.get_config('runlocal')
  config.stages = ('data',)
  config.data.sumo_network = 'cross, bremen_motorway'
  config.data.num_scenarios = 3
  config.data.num_heldout_scenarios = 2
  config.data.extra_glob = str(extra)
  work = tmp_path / 'work'
  stages.run(config, str(work))
  out = capsys.readouterr().out
  assert '2 scenarios of SUMO traffic on cross in' in out
  assert '1 scenarios of SUMO traffic on bremen_motorway in' in out
  files = womd.expand_paths(common.data_files(config, work))
  assert files == [str(work / 'data' / 'sumo' / 'cross' /
                       'cross.tfrecord-00000-of-00001'),
                   str(work / 'data' / 'sumo' / 'bremen_motorway' /
                       'bremen_motorway.tfrecord-00000-of-00001'),
                   str(extra)]
  ids = [s.scenario_id for _, _, s in womd.read_scenarios(files)]
  assert len(ids) == 4 and ids[-1] == 'extra-0'
  heldout = womd.expand_paths(common.heldout_files(config, work))
  assert [pathlib.Path(f).parent.name for f in heldout] == [
      'cross', 'bremen_motorway']
  stages.run(config, str(work))
  assert '(skipped)' in capsys.readouterr().out
  config.data.num_heldout_scenarios = 1  # fewer than the networks
  assert [n for n, _, _ in common.sumo_parts(config, work, True)] == [
      'cross']


def test_collection_takes_the_first_scenarios_of_every_source(tmp_path):
  from experiments.stages import collect
  files = []
  for name in ('a', 'b'):
    files.append(str(tmp_path / f'{name}.tfrecord'))
    with tfrecord.TFRecordWriter(files[-1]) as writer:
      for i in range(3):
        writer.write(synthetic.straight_road_scenario(
            f'{name}-{i}', seed=i).SerializeToString())
  reader = womd.ReaderConfig(max_num_objects=8)
  ids = [e.scenario_id for e in collect.examples(files, reader, 2)]
  assert ids == ['a-0', 'a-1', 'b-0', 'b-1']
  ids = [e.scenario_id for e in collect.examples(files, reader, 0)]
  assert ids == ['a-0', 'a-1', 'a-2', 'b-0', 'b-1', 'b-2']
  # The embedded data's sources are its networks and its extra files.
  from experiments.configs import reference
  config = reference.get_config('compare')
  config.data.extra_glob = files[0]
  sources = collect.collect_files(config, tmp_path)
  assert len(sources) == len(reference.NETWORKS) + 1
  assert sources[-1] == files[0]


@pytest.mark.parametrize('name,arg', [
    ('base', None), ('pretrain', None), ('evaluate', None), ('collect', None),
    ('align', None), ('compare', None), ('demo', 'runlocal'),
    ('reference', None), ('reference', 'gpu'), ('reference', 'compare')])
def test_every_config_passes_the_checks(tmp_path, name, arg):
  import importlib

  import jax
  config = importlib.import_module(f'experiments.configs.{name}').get_config(
      arg)
  if 'align' in config and config.align.batch_size % jax.device_count():
    # Sized for one CPU device; the suite forces 8.
    config.align.batch_size = jax.device_count()
  stages.check(config, str(tmp_path))
  if name == 'reference':
    parts = common.sumo_parts(config, tmp_path)
    assert len(parts) == 6 and len({folder for _, folder, _ in parts}) == 6
    assert sum(c.num_scenarios for _, _, c in parts) == (
        config.data.num_scenarios)


def test_bad_config_values_stop_before_work(tmp_path):
  config = base.get_config()
  with config.unlocked():
    config.stages = ('data', 'train_everything')
  with pytest.raises(ValueError, match='train_everything'):
    stages.run(config, str(tmp_path))
  config = base.get_config()
  config.data.source = 'carla'
  with pytest.raises(ValueError, match='config.data.source'):
    stages.run(config, str(tmp_path))
  assert not (tmp_path / 'data').exists()


@pytest.mark.parametrize('overrides,match', [
    ({'data.womd_heldout_glob': '/nowhere/x'},
     'womd_heldout_glob needs config.data.womd_glob'),
    ({'data.womd_glob': '/nowhere/train-*'}, 'config.data.womd_glob: no file'),
    ({'data.sumo_network': 'cross,atlantis'},
     "config.data.sumo_network=.*'atlantis' unknown"),
    ({'data.sumo_network': 'cross,cross'},
     'config.data.sumo_network=.*distinct'),
    ({'data.extra_glob': '/nowhere/x-*'}, 'config.data.extra_glob: no file'),
    ({'report.num_rollouts': 2}, 'config.report.num_rollouts'),
    ({'compare.main': 'dpo'}, "config.compare.main: 'dpo' is not one of"),
    ({'compare.baselines': ('afd', 'ppo')},
     "config.compare.baselines: 'ppo' is not one of"),
    ({'compare.baselines': ('dpa_omf',)},
     'config.compare.baselines: .* names a method twice'),
    ({'compare.methods.sft_bestoa.objective.loss': 'ppo'},
     'config.compare.methods.sft_bestoa.objective: .*loss'),
    ({'compare.methods.sft_bestoa.pairs_from': 'best'},
     "config.compare.methods.sft_bestoa.pairs_from='best'"),
])
def test_demo_bad_values_stop_before_any_work(tmp_path, overrides, match):
  from experiments.configs import demo
  config = demo.get_config('runlocal')
  for key, value in overrides.items():
    *path, name = key.split('.')
    section = config
    for part in path:
      section = section[part]
    section[name] = value
  with pytest.raises(ValueError, match=match):
    stages.run(config, str(tmp_path))
  assert not (tmp_path / 'data').exists()


def test_report_scenario_out_of_range_is_named(tmp_path):
  from prefalign.data import synthetic
  from prefalign.data import tfrecord
  path = tmp_path / 'two.tfrecord'
  with tfrecord.TFRecordWriter(path) as writer:
    for i in range(2):
      writer.write(synthetic.straight_road_scenario(
          f's{i}', seed=i).SerializeToString())
  reader = womd.ReaderConfig(max_num_objects=8)
  assert common.read_example([str(path)], 1, reader, 'k').scenario_id == 's1'
  with pytest.raises(ValueError, match='config.report.scenario=5: .* only 2'):
    common.read_example([str(path)], 5, reader, 'config.report.scenario')


def test_report_without_a_comparison_names_the_missing_stage(tmp_path):
  from experiments.configs import demo
  config = demo.get_config('runlocal')
  config.stages = ('report',)
  with pytest.raises(ValueError, match="needs .*compare/results.json"):
    stages.run(config, str(tmp_path))


def test_pretrain_runlocal_trains_evaluates_and_resumes(tmp_path, capsys):
  from experiments.configs import pretrain
  config = pretrain.get_config('runlocal')
  config.data.num_scenarios = 16
  config.data.num_heldout_scenarios = 8
  # The tiny demo's budget: the same compiled steps as the session's shared
  # run (the persistent compilation cache serves them to either).
  config.pretrain = tiny_demo_lib.config().pretrain
  config.pretrain.log_every = 1
  stages.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'sumo_heldout: loss' in out
  summary = json.loads((tmp_path / 'pretrain' / 'summary.json').read_text())
  assert summary['step'] == 2
  assert summary['eval']['sumo_heldout']['tokens'] > 0
  # The same command again: data and the finished training skipped.
  stages.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert '[pretrain]' in out and out.count('(skipped)') == 2
  # More steps asked for: training resumes from the last checkpoint.
  config.pretrain.num_steps = 4
  config.pretrain.eval_every = 4
  config.pretrain.checkpoint_every = 4
  stages.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'resumed from step 2' in out and 'step 4;' in out


def test_pretrain_bad_values_stop_before_any_work(tmp_path):
  from experiments.configs import pretrain
  config = pretrain.get_config('runlocal')
  config.pretrain.batch_size = 12
  with pytest.raises(ValueError, match='config.pretrain.batch_size=12'):
    stages.run(config, str(tmp_path))
  config = pretrain.get_config('runlocal')
  config.model.width = 31
  with pytest.raises(ValueError, match='config.model: .*width=31'):
    stages.run(config, str(tmp_path))
  config = pretrain.get_config('runlocal')
  config.model.tokenizer.num_lon_bins = 12
  with pytest.raises(ValueError,
                     match='config.model.tokenizer: .*num_lon_bins must'):
    stages.run(config, str(tmp_path))
  config = pretrain.get_config('runlocal')
  with config.unlocked():
    config.pretrain.optimizer.learning_rat = 0.1
  with pytest.raises(ValueError, match=r"config.pretrain.optimizer: unknown "
                     r"key\(s\) \['learning_rat'\]"):
    stages.run(config, str(tmp_path))
  config = pretrain.get_config('runlocal')
  config.pretrain.eval_glob = str(tmp_path / 'missing-*.tfrecord')
  with pytest.raises(ValueError, match='config.pretrain.eval_glob: no file'):
    stages.run(config, str(tmp_path))
  assert not (tmp_path / 'data').exists()


def test_unknown_config_key_is_refused_by_the_launcher(tmp_path):
  import subprocess
  import sys
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main',
       '--config=experiments/configs/pretrain.py:runlocal',
       f'--workdir={tmp_path}', '--config.pretrain.learning_rat=0.1'],
      capture_output=True, text=True, timeout=120, check=False,
      cwd=pathlib.Path(__file__).resolve().parents[1])
  assert proc.returncode != 0
  assert 'learning_rat' in proc.stderr
  assert not (tmp_path / 'data').exists()


def test_explicit_coordinator_needs_the_process_count_and_id(tmp_path):
  import subprocess
  import sys
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main',
       '--config=experiments/configs/pretrain.py:runlocal',
       f'--workdir={tmp_path}', '--config.distributed=True',
       '--config.coordinator_address=localhost:1', '--config.num_processes=2'],
      capture_output=True, text=True, timeout=120, check=False,
      cwd=pathlib.Path(__file__).resolve().parents[1])
  assert proc.returncode != 0
  assert 'config.process_id=-1 must name this process' in proc.stderr
  assert not (tmp_path / 'data').exists()


def test_evaluate_runlocal_scores_a_checkpoint(tmp_path, capsys):
  from experiments.configs import evaluate
  config = evaluate.get_config('runlocal')
  config.stages = ('data', 'pretrain', 'evaluate')
  config.data.num_scenarios = 8
  config.data.num_heldout_scenarios = 2
  config.pretrain = tiny_demo_lib.config().pretrain  # its compiled steps
  config.evaluate.num_rollouts = 2
  config.evaluate.max_scenarios = 1
  # A submission holds every sim agent (19 in this scenario): 16 rows are
  # refused (tests/bad_input_test.py), 32 hold them all.
  config.evaluate.max_num_objects = 32
  config.evaluate.submission = True
  stages.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'sumo_heldout: realism model' in out
  from prefalign.data import submission_files
  exported = list(submission_files.read_rollouts(
      str(tmp_path / 'evaluate' / 'sumo_heldout_submission.binproto')))
  assert len(exported) == 1
  report = json.loads((tmp_path / 'evaluate' / 'report.json').read_text())
  assert report['sets']['sumo_heldout']['data']['dropped_sim_agents'] == 0
  agg = report['sets']['sumo_heldout']['aggregate']
  assert set(agg) == {'2024', '2025'}
  for challenge in agg.values():
    assert set(challenge) == {'model', 'constant_velocity', 'log_replay'}
    for metrics in challenge.values():
      assert 0.0 <= metrics['metametric'] <= 1.0
    # The log scores itself best.
    assert (challenge['log_replay']['metametric'] >=
            challenge['model']['metametric'])
  md = (tmp_path / 'evaluate' / 'report.md').read_text()
  assert '| constant_velocity |' in md
  assert list((tmp_path / 'evaluate').glob('sumo_heldout_*_rollout0.gif'))


def test_evaluate_simulator_is_checked_before_any_work(tmp_path):
  from experiments.configs import evaluate
  config = evaluate.get_config('runlocal')
  config.evaluate.simulator = 'carla'
  with pytest.raises(ValueError,
                     match="config.evaluate.simulator='carla': expected"):
    stages.run(config, str(tmp_path))
  try:
    import waymax.env  # noqa: F401
  except ImportError:
    config.evaluate.simulator = 'waymax'
    with pytest.raises(
        ValueError, match='config.evaluate.simulator=waymax: .*waymo-waymax'):
      stages.run(config, str(tmp_path))
  assert not (tmp_path / 'data').exists()


def test_evaluate_sampling_is_checked_before_any_work(tmp_path):
  from experiments.configs import evaluate
  config = evaluate.get_config('runlocal')
  config.evaluate.sampling.top_p = 0.0
  with pytest.raises(ValueError,
                     match='config.evaluate.sampling: top_p must be'):
    stages.run(config, str(tmp_path))
  config = evaluate.get_config('runlocal')
  config.evaluate.challenges = ('2025', '2023')
  with pytest.raises(ValueError, match="config.evaluate.challenges: .*'2023'"):
    stages.run(config, str(tmp_path))
  assert not (tmp_path / 'data').exists()


@pytest.mark.parametrize('key,value,match', [
    ('ranking.strategy', 'l2', 'config.collect.ranking: .*strategy'),
    ('ranking.weights', (10.0, 5.0),
     'config.collect.ranking: weights: expected 5'),
    ('ranking.num_pairs', 9,
     'config.collect.num_rollouts: 16 rollouts cannot give 9'),
    ('ranking.sinkhorn.backend', 'pot',
     'config.collect.ranking.sinkhorn: .*backend'),
    ('sampling.temperature', -1.0, 'config.collect.sampling: temperature'),
    ('glob', '/nowhere/x-*.tfrecord', 'config.collect.glob: no file'),
    ('per_source', -1, 'config.collect.per_source=-1: expected a count'),
])
def test_collect_bad_values_stop_before_any_work(tmp_path, key, value, match):
  from experiments.configs import collect
  config = collect.get_config('runlocal')
  *path, name = key.split('.')
  section = config.collect
  for part in path:
    section = section[part]
  section[name] = value
  with pytest.raises(ValueError, match=match):
    stages.run(config, str(tmp_path))
  assert not (tmp_path / 'data').exists()


# With the notebook's test on one worker (make test: --dist loadgroup), so
# that neither waits idle for the other's shared run.
@pytest.mark.xdist_group('tiny_demo')
def test_demo_runlocal_end_to_end_with_baselines_and_report(
    tiny_demo, tmp_path_factory, capsys):
  """The main job's stages on a tiny budget: every method, the scaling
  sweep and the ablation from one collection, then the report (the run is
  the session's shared ``tiny_demo``)."""
  config = tiny_demo_lib.config()
  tmp_path = tiny_demo / 'run'
  out = (tiny_demo / 'stdout.txt').read_text()
  assert 'realism on sumo_heldout: reference:' in out
  assert 'done in' in out
  out = tmp_path / 'compare'
  results = json.loads((out / 'results.json').read_text())
  table = results['sumo_heldout']
  assert set(table) == {'reference', 'dpa_omf', 'afd', 'dpa_omf_x0.5',
                        'dpa_omf_collision'}
  for method, row in table.items():
    m = row['metrics']['metametric']
    assert m['n'] == 1 and m['ci'][0] <= m['mean'] <= m['ci'][1], method
  assert table['reference']['heldout_accuracy'] is not None
  runs = results['runs']
  assert runs['afd']['config']['pairs_from'] == 'adversarial'
  assert (runs['dpa_omf_x0.5']['data']['train_scenarios'] <
          runs['dpa_omf']['data']['train_scenarios'])
  assert (out / 'scaling.png').exists()
  # The ablation collected the same rollouts again, ranked by collisions.
  meta = json.loads((tmp_path / 'preferences_collision' / 'meta.json'
                     ).read_text())
  assert meta['ranking']['feature_set'] == 'collision'
  assert runs['dpa_omf_collision']['data']['train_scenarios'] == (
      runs['dpa_omf']['data']['train_scenarios'])
  assert '| dpa_omf |' in (out / 'results.md').read_text()

  # The report: every image it names is in its folder, none is missing.
  report = tmp_path / 'report'
  page = (report / 'index.html').read_text()
  images = re.findall(r'<img src="([^"]+)"', page)
  assert {'before_after.gif', 'ranking.png', 'curves.png', 'scaling.png',
          'distances.png'} <= set(images)
  for image in images:
    assert (report / image).stat().st_size > 1000, image
  md = (report / 'report.md').read_text()
  assert set(re.findall(r'!\[[^]]*\]\(([^)]+)\)', md)) == set(images)
  assert '<td>dpa_omf</td>' in page and '| afd |' in md
  from PIL import Image
  with Image.open(report / 'before_after.gif') as gif:
    assert gif.n_frames == 3  # 5 steps, every 2nd
  stage_log = [json.loads(line) for line in
               (tmp_path / 'stages.jsonl').read_text().splitlines()]
  assert [r['stage'] for r in stage_log] == list(config.stages)

  copy = tmp_path_factory.mktemp('demo') / 'run'
  shutil.copytree(tmp_path, copy)
  stages.run(config, str(copy))  # everything is read back
  assert capsys.readouterr().out.count('(skipped)') == len(
      config.stages)


@pytest.mark.parametrize('key,value,match', [
    ('align.objective.loss', 'ppo', 'config.align.objective: .*loss'),
    ('align.pairs_from', 'best', 'config.align.pairs_from'),
    ('align.batch_size', 3, 'config.align.batch_size'),
    ('compare.main', 'x', "config.compare.main: 'x'"),
])
def test_align_bad_values_stop_before_any_work(tmp_path, key, value, match):
  from experiments.configs import compare
  config = compare.get_config('runlocal')
  *path, name = key.split('.')
  section = config
  for part in path:
    section = section[part]
  section[name] = value
  with pytest.raises(ValueError, match=match):
    stages.run(config, str(tmp_path))
  assert not (tmp_path / 'data').exists()


def test_an_unknown_reference_config_argument_is_named():
  from experiments.configs import reference
  with pytest.raises(ValueError, match="reference.py:cpu: expected no arg"):
    reference.get_config('cpu')
