"""The main job's stages: end to end on a tiny config, resumable, checked."""

import json

import pytest

from experiments import stages
from experiments.configs import demo


def test_demo_stages_run_and_resume(tmp_path, capsys):
  config = demo.get_config('runlocal')
  stages.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert '[data] wrote 4 scenarios of SUMO traffic on cross' in out
  assert (tmp_path / 'inspect' / 'scenario.png').stat().st_size > 10_000
  info = [json.loads(l) for l in
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


def test_bad_config_values_stop_before_work(tmp_path):
  config = demo.get_config()
  with config.unlocked():
    config.stages = ('data', 'train_everything')
  with pytest.raises(ValueError, match='train_everything'):
    stages.run(config, str(tmp_path))
  config = demo.get_config()
  config.data.source = 'carla'
  with pytest.raises(ValueError, match='config.data.source'):
    stages.run(config, str(tmp_path))
  assert not (tmp_path / 'data').exists()
