"""The public API: what ``import prefalign`` exposes, and the README's example.

The README section "Using the pieces from your own JAX code" holds one
self-contained Python block (a synthetic scene, a small model, jitted
sampler, WOSAC metric, OT ranking and preference step); it is extracted and
run here exactly as written, so it cannot drift from the code.
"""

import math
import os
import pathlib
import re
import subprocess
import sys
import types

import numpy as np
import pytest

import prefalign

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
SECTION = '## Using the pieces from your own JAX code'

# Names the README and the package docstring promise.
DOCUMENTED = (
    'datatypes.SimulatorState',
    'datatypes.Trajectory',
    'SimulatorState',
    'Trajectory',
    'data.read_examples',
    'data.ReaderConfig',
    'data.state_from_scenario',
    'data.synthetic.straight_road_scenario',
    'read_examples',
    'ReaderConfig',
    'state_from_scenario',
    'sim.step',
    'sim.dynamics',
    'model.ModelConfig',
    'model.init',
    'model.sequence_log_probs',
    'rollout.sample_rollouts',
    'rollout.to_metric_trajectory',
    'rollout.MotionLMActor',
    'rollout.as_tokens',
    'sample_rollouts',
    'to_metric_trajectory',
    'MotionLMActor',
    'metrics.scenario_metrics',
    'metrics.get_config',
    'metrics.features',
    'metrics.CHALLENGE_2025',
    'scenario_metrics',
    'preference.rank_rollouts',
    'preference.RankingConfig',
    'preference.SinkhornConfig',
    'preference.collection.sequence_tokens',
    'rank_rollouts',
    'RankingConfig',
    'SinkhornConfig',
    'train.steps.preference_step',
    'train.steps.PreferenceConfig',
    'train.preference_step',
    'train.PreferenceConfig',
    'train.PreferenceBatch',
    'train.preference_eval_step',
    'train.policy_kl',
    'train.model_inputs',
    'train.TrainState',
    'train.losses.cpl_sums',
    'train.align.align_and_evaluate',
    'preference_step',
    'PreferenceConfig',
    'TrainState',
)


def readme_block() -> str:
  """The first ```python block of the README's API section."""
  text = README.read_text()
  assert text.count('\n' + SECTION + '\n') == 1, (
      f'README.md needs exactly one section {SECTION!r}')
  start = text.find('\n' + SECTION + '\n')
  body = text[start + len(SECTION) + 2:]
  end = re.search(r'^## ', body, re.MULTILINE)
  body = body[:end.start()] if end else body
  match = re.search(r'^```python\n(.*?)^```', body, re.MULTILINE | re.DOTALL)
  assert match, f'no ```python block in the README section {SECTION!r}'
  return match.group(1)


def test_readme_example_runs_and_gives_finite_numbers(capsys):
  namespace = {'__name__': '__readme__'}
  exec(compile(readme_block(), str(README), 'exec'), namespace)
  realism = namespace['realism']
  distances = np.asarray(namespace['distances'])
  loss = namespace['loss']
  assert isinstance(realism, float) and 0.0 <= realism <= 1.0
  assert distances.shape == (namespace['num_rollouts'],)
  assert np.all(np.isfinite(distances)) and np.all(distances >= 0.0)
  assert len(set(distances.tolist())) > 1  # the rollouts differ
  assert isinstance(loss, float) and math.isfinite(loss) and loss > 0.0
  assert int(namespace['train_state'].step) == 1
  printed = capsys.readouterr().out
  assert 'realism' in printed and 'loss' in printed


@pytest.mark.parametrize('name', DOCUMENTED)
def test_documented_names_exist(name):
  obj = prefalign
  for part in name.split('.'):
    assert hasattr(obj, part), f'prefalign.{name}: no {part!r}'
    obj = getattr(obj, part)


def _public_modules():
  """prefalign and every module reachable through its ``__all__``s."""
  seen, todo = {}, [prefalign]
  while todo:
    module = todo.pop()
    if module.__name__ in seen:
      continue
    seen[module.__name__] = module
    for name in getattr(module, '__all__', ()):
      value = getattr(module, name, None)
      if isinstance(value, types.ModuleType) and value.__name__.startswith(
          'prefalign'):
        todo.append(value)
  return seen


def test_every_all_lists_existing_unique_names():
  modules = _public_modules()
  for expected in ('prefalign.data', 'prefalign.datatypes',
                   'prefalign.evaluation', 'prefalign.metrics',
                   'prefalign.model', 'prefalign.preference',
                   'prefalign.rollout', 'prefalign.sim', 'prefalign.train',
                   'prefalign.train.steps', 'prefalign.train.losses',
                   'prefalign.preference.ranking', 'prefalign.data.womd'):
    assert expected in modules, expected
  for module_name, module in modules.items():
    names = module.__all__
    assert len(names) == len(set(names)), f'{module_name}: repeated names'
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f'{module_name}.__all__ names missing: {missing}'


def test_top_level_names_are_the_subpackages_objects():
  assert prefalign.sample_rollouts is prefalign.rollout.sample_rollouts
  assert prefalign.rank_rollouts is prefalign.preference.rank_rollouts
  assert prefalign.scenario_metrics is prefalign.metrics.scenario_metrics
  assert prefalign.preference_step is prefalign.train.steps.preference_step
  steps = prefalign.train.steps
  assert prefalign.train.preference_step is steps.preference_step
  assert prefalign.SimulatorState is prefalign.datatypes.SimulatorState
  assert prefalign.read_examples is prefalign.data.womd.read_examples


def test_import_is_light_and_star_import_works():
  """A fresh interpreter: no plots, SUMO, experiments or TensorFlow."""
  code = (
      'import sys\n'
      'from prefalign import *\n'
      'import prefalign\n'
      'assert set(prefalign.__all__) <= set(globals())\n'
      'heavy = sorted(m for m in sys.modules if m.split(".")[0] in (\n'
      '    "matplotlib", "experiments", "tensorflow", "ott", "sumolib",\n'
      '    "traci", "tensorboardX") or m in ("prefalign.viz",\n'
      '    "prefalign.data.sumo", "prefalign.cli"))\n'
      'print(heavy)\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, env=env, check=False,
                       cwd=README.parent, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == '[]', out.stdout
