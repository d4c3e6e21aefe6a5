"""End-to-end pre-training: smoke run, resume, config checks."""

import json

import jax
import numpy as np
import pytest

from prefalign.train import loop
from prefalign.train import steps

from tests.train.conftest import tiny_config  # noqa: E402  pylint: disable=g-bad-import-order


def test_train_and_evaluate_two_steps(scenario_files, tmp_path):
  out = loop.train_and_evaluate(tiny_config(scenario_files), tmp_path)
  assert out['step'] == 2
  ev = out['eval']['eval']
  assert ev['tokens'] > 0 and np.isfinite(ev['loss'])
  assert 0.0 <= ev['accuracy'] <= 1.0 and np.isfinite(ev['unigram_loss'])
  lines = [json.loads(l) for l in
           (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [l['step'] for l in lines if l['split'] == 'train'] == [1, 2]
  assert any(l['split'] == 'eval/eval' for l in lines)
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  assert (tmp_path / 'checkpoints' / '2').is_dir()


class _Stop(Exception):
  pass


def test_resume_ends_with_the_same_parameters(scenario_files, tmp_path):
  config = tiny_config(scenario_files, num_steps=4, checkpoint_every=2,
                       eval_every=4)
  straight = loop.train_and_evaluate(config, tmp_path / 'straight')

  def stop_at_3(step, metrics):
    del metrics
    if step == 3:  # after the step-2 checkpoint, before the step-4 one
      raise _Stop()

  with pytest.raises(_Stop):
    loop.train_and_evaluate(config, tmp_path / 'resumed', callback=stop_at_3)
  resumed = loop.train_and_evaluate(config, tmp_path / 'resumed')
  assert resumed['step'] == 4
  log = (tmp_path / 'resumed' / 'metrics.jsonl').read_text()
  assert log.count('"split": "train"') == 3 + 2  # steps 1-3, then 3-4 again
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed['params'])),
                  jax.tree.leaves(jax.device_get(straight['params']))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('change, message', [
    (dict(batch_size=12), 'batch_size=12 is not a positive multiple'),
    (dict(train_files=('/nonexistent/*.tfrecord',)),
     'train_files: no file matches'),
    (dict(eval_sets=(('heldout', ('/nope/x-*',)),)),
     "eval_sets\\['heldout'\\]: no file matches"),
    (dict(num_steps=5), 'optimizer.total_steps=2 differs from num_steps=5'),
])
def test_bad_config_stops_before_compiling(scenario_files, tmp_path, change,
                                           message):
  config = tiny_config(scenario_files)
  fields = dict(change)
  config = loop.TrainConfig(**{**config.__dict__, **fields})
  with pytest.raises(ValueError, match=message):
    loop.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / 'checkpoints').exists()


def test_optimizer_schedule_warms_up_and_decays():
  sched = steps.learning_rate_schedule(steps.OptimizerConfig(
      learning_rate=1.0, warmup_steps=10, total_steps=100,
      final_fraction=0.1))
  assert float(sched(0)) == 0.0
  assert float(sched(10)) == pytest.approx(1.0)
  assert float(sched(100)) == pytest.approx(0.1)
