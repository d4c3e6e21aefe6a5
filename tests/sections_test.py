"""The config boundary: sections mirror prefalign's frozen dataclasses."""

import pathlib
import subprocess
import sys

import ml_collections
import pytest

from experiments import sections
from prefalign import model
from prefalign import preference
from prefalign import rollout
from prefalign.data import womd
from prefalign.train import align
from prefalign.train import loop
from prefalign.train import steps


@pytest.mark.parametrize('default', [
    model.ModelConfig(), preference.RankingConfig(),
    preference.SinkhornConfig(), rollout.SamplingConfig(),
    steps.PreferenceConfig(), steps.OptimizerConfig(), womd.ReaderConfig(),
    womd.ReaderConfig(max_num_objects=None, max_traffic_lights=None),
], ids=lambda d: type(d).__name__)
def test_a_section_builds_back_its_dataclass(default):
  section = sections.section(default)
  assert sections.build(type(default), section, 'config.x') == default
  # Every field is a key, nested dataclasses as sections.
  for name, value in vars(default).items():
    assert name in section
    if hasattr(value, '__dataclass_fields__'):
      assert isinstance(section[name], ml_collections.ConfigDict)


def test_excluded_fields_come_from_the_caller():
  default = loop.TrainConfig(train_files=())
  section = sections.section(default, exclude=(
      'train_files', 'eval_sets', 'optimizer.total_steps'))
  assert 'train_files' not in section
  assert 'total_steps' not in section.optimizer
  assert 'learning_rate' in section.optimizer
  section.num_steps = 7
  section.optimizer.learning_rate = 0.5
  built = sections.build(
      loop.TrainConfig, section, 'config.pretrain', train_files=('a',),
      optimizer=sections.build(steps.OptimizerConfig, section.optimizer,
                               'config.pretrain.optimizer', total_steps=7))
  assert built.train_files == ('a',)
  assert built.num_steps == 7
  assert built.optimizer.total_steps == 7
  assert built.optimizer.learning_rate == 0.5


def test_a_none_default_is_a_typed_placeholder():
  section = sections.section(womd.ReaderConfig(max_num_objects=None))
  assert section.max_num_objects is None
  section.max_num_objects = 64
  assert sections.build(womd.ReaderConfig, section,
                        'r').max_num_objects == 64
  with pytest.raises(TypeError):
    section.max_num_objects = 'many'


def test_errors_name_the_key():
  section = sections.section(preference.RankingConfig())
  section.sinkhorn.epsilon = 0.0
  with pytest.raises(ValueError,
                     match=r'^config.collect.ranking.sinkhorn: .*epsilon'):
    sections.build(preference.RankingConfig, section,
                   'config.collect.ranking')
  section = sections.section(preference.RankingConfig())
  section.weights = (1.0, 2.0)
  with pytest.raises(ValueError, match=r'^config.c: .*weights'):
    sections.build(preference.RankingConfig, section, 'config.c')
  with pytest.raises(ValueError, match=r"^config.c: unknown key\(s\) "
                     r"\['stratgy'\]; RankingConfig has"):
    sections.build(preference.RankingConfig, {'stratgy': 'ot'}, 'config.c')
  with pytest.raises(ValueError,
                     match=r"^config.c.weights='10,5': expected a tuple"):
    sections.build(preference.RankingConfig, {'weights': '10,5'}, 'config.c')
  # The stage's own keys are passed over, not refused.
  assert sections.build(steps.OptimizerConfig, {'learning_rate': 0.1,
                                                'output': 'x'},
                        'config.o', ignore=('output',)).learning_rate == 0.1


def test_merged_applies_nested_overrides_and_names_unknown_keys():
  base = sections.section(align.AlignConfig(preference_dirs=(), init_from=''))
  out = sections.merged(base, {'pairs_from': 'ade',
                               'objective': {'loss': 'dpo', 'beta': 0.2}},
                        'config.compare.methods.m')
  assert (out.pairs_from, out.objective.loss, out.objective.beta) == (
      'ade', 'dpo', 0.2)
  assert base.pairs_from == '' and base.objective.loss == 'cpl'  # a copy
  assert out.objective.alpha == base.objective.alpha
  with pytest.raises(ValueError,
                     match=r'^config.compare.methods.m.objective.los: no '):
    sections.merged(base, {'objective': {'los': 'dpo'}},
                    'config.compare.methods.m')
  with pytest.raises(ValueError,
                     match=r'^config.compare.methods.m.objective=.*section'):
    sections.merged(base, {'objective': 'dpo'}, 'config.compare.methods.m')


def test_a_compare_method_overrides_any_align_key(tmp_path):
  from experiments.configs import compare
  from experiments.stages import align as align_stage
  from experiments.stages import compare as compare_stage
  config = compare.get_config('runlocal')
  config.compare.methods.dpo = {'pairs_from': 'ade',
                                'objective': {'loss': 'dpo', 'beta': 0.3},
                                'num_steps': 3}
  config.compare.baselines = ('dpo', 'afd')
  assert compare_stage.method_names(config) == ['dpa_omf', 'dpo', 'afd']
  ac = align_stage.align_config(
      config, tmp_path, compare_stage.method_section(config, 'dpo'),
      'config.compare.methods.dpo')
  assert (ac.pairs_from, ac.objective.loss, ac.objective.beta,
          ac.num_steps, ac.optimizer.total_steps) == ('ade', 'dpo', 0.3, 3, 3)
  assert ac.objective.conservative == config.align.objective.conservative


def test_nested_keys_and_tuples_from_the_command_line(tmp_path):
  """absl's --config.a.b=... reaches nested sections and tuples (the stages
  then stop on the bad value, naming it, before any work)."""
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main',
       '--config=experiments/configs/collect.py:runlocal',
       f'--workdir={tmp_path}',
       '--config.collect.ranking.weights=(1.0, 2.0)',
       '--config.collect.ranking.sinkhorn.epsilon=0.05'],
      capture_output=True, text=True, timeout=120, check=False,
      cwd=pathlib.Path(__file__).resolve().parents[1])
  assert proc.returncode != 0
  assert 'error: config.collect.ranking: weights: expected 5 values' in (
      proc.stderr), proc.stderr
  assert not (tmp_path / 'data').exists()
