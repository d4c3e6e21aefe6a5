"""End-to-end pre-training: smoke run, resume, config checks."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign.data import cache as scenario_cache
from prefalign.train import checkpoint as checkpoint_lib
from prefalign.train import loop
from prefalign.train import steps
from tests.train.conftest import tiny_config  # noqa: E402

# One worker runs the module: its runs share two step counts (2 and 8), so
# each compiled step is built once and the rest, the killed children
# included, load it.
pytestmark = pytest.mark.xdist_group('train_loop')


def test_train_and_evaluate_two_steps(scenario_files, tmp_path):
  out = loop.train_and_evaluate(tiny_config(scenario_files), tmp_path)
  assert out['step'] == 2
  ev = out['eval']['eval']
  assert ev['tokens'] > 0 and np.isfinite(ev['loss'])
  assert 0.0 <= ev['accuracy'] <= 1.0 and np.isfinite(ev['unigram_loss'])
  lines = [json.loads(line) for line in
           (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [line['step'] for line in lines if line['split'] == 'train'] == [1, 2]
  assert any(line['split'] == 'eval/eval' for line in lines)
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  assert (tmp_path / 'checkpoints' / '2').is_dir()


class _Stop(Exception):
  pass


# The resume tests share the kill tests' 8-step setting: the same compiled
# steps, which the persistent compilation cache serves to whichever is
# second.
EIGHT_STEPS = dict(num_steps=8, checkpoint_every=2, eval_every=8)


def test_resume_ends_with_the_same_parameters(scenario_files, tmp_path):
  config = tiny_config(scenario_files, **EIGHT_STEPS)
  straight = loop.train_and_evaluate(config, tmp_path / 'straight')

  def stop_at_3(step, metrics):
    del metrics
    if step == 3:  # after the step-2 checkpoint, before the step-4 one
      raise _Stop()

  with pytest.raises(_Stop):
    loop.train_and_evaluate(config, tmp_path / 'resumed', callback=stop_at_3)
  resumed = loop.train_and_evaluate(config, tmp_path / 'resumed')
  assert resumed['step'] == 8
  log = (tmp_path / 'resumed' / 'metrics.jsonl').read_text()
  assert log.count('"split": "train"') == 3 + 6  # steps 1-3, then 3-8 again
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed['params'])),
                  jax.tree.leaves(jax.device_get(straight['params']))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_cached_data_trains_and_resumes_to_the_same_parameters(
    scenario_files, tmp_path):
  """With ``data_cache`` the files are converted once (the second run and
  the resumed one read the cache), and a run stopped at step 3 resumes to
  the parameters of one that was not: batches are a function of (seed,
  step)."""
  config = tiny_config(scenario_files, data_cache=str(tmp_path / 'cache'),
                       **EIGHT_STEPS)
  straight = loop.train_and_evaluate(config, tmp_path / 'straight')
  [folder] = (tmp_path / 'cache').iterdir()
  built = sorted(p.stat().st_mtime_ns for p in folder.rglob('*.npy'))

  def stop_at_3(step, metrics):
    del metrics
    if step == 3:
      raise _Stop()

  with pytest.raises(_Stop):
    loop.train_and_evaluate(config, tmp_path / 'resumed', callback=stop_at_3)
  resumed = loop.train_and_evaluate(config, tmp_path / 'resumed')
  assert resumed['step'] == 8
  assert sorted(p.stat().st_mtime_ns for p in folder.rglob('*.npy')) == built
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed['params'])),
                  jax.tree.leaves(jax.device_get(straight['params']))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_cached_batches_follow_a_permutation_per_epoch(scenario_files,
                                                      tmp_path):
  """Global batch k of epoch e is slice k of the permutation drawn from
  (seed, e) over the cache's scenarios; a resumed stream starts there."""
  config = tiny_config(scenario_files, data_cache=str(tmp_path / 'cache'))
  stream = loop._local_batches(config.train_files, config, train=True,
                               with_ids=True)
  ids = [next(stream)[1] for _ in range(6)]  # 24 scenarios: 3 per epoch
  cache = scenario_cache.build(config.train_files, config.reader,
                               config.data_cache)
  for epoch in (0, 1):
    order = np.random.default_rng([config.seed, epoch]).permutation(24)
    want = [cache.scenario_ids[i] for i in order]
    assert sum(ids[3 * epoch:3 * epoch + 3], []) == want
  resumed = loop._local_batches(config.train_files, config, train=True,
                                skip_batches=4, with_ids=True)
  assert next(resumed)[1] == ids[4]


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


def test_nonfinite_step_stops_with_ids_and_keeps_the_last_good_state(
    scenario_files, tmp_path, monkeypatch):
  """A NaN loss at step 3 stops the run naming the step and the batch's
  scenarios, with the state of step 2 checkpointed."""
  real_loss = steps._loss

  def poisoned_step(state, batch, rng, *, model_config, optimizer_config):
    del rng
    scene, toks = steps.model_inputs(batch, model_config)

    def loss_fn(params, *args):
      loss, sums = real_loss(params, *args)
      return jnp.where(state.step >= 2, jnp.nan, loss), sums

    return steps._apply(state, loss_fn, (scene, toks, model_config),
                        optimizer_config)

  monkeypatch.setattr(steps, 'train_step', poisoned_step)
  config = tiny_config(scenario_files, num_steps=4, checkpoint_every=4,
                       eval_every=4)
  with pytest.raises(FloatingPointError,
                     match=r"at step 3 .*\['syn-0-.*step 2\) is checkpointed"):
    loop.train_and_evaluate(config, tmp_path)
  ckpt = checkpoint_lib.Checkpointer(tmp_path / 'checkpoints')
  assert ckpt.latest_step() == 2
  ckpt.close()


_CHILD = '''
import sys
from prefalign.train import loop
from prefalign.train import runtime
from tests.train.conftest import tiny_config
files = {{'train': {train!r}, 'eval': {eval!r}}}
config = tiny_config(files, num_steps={steps}, checkpoint_every=2,
                     eval_every={steps})
try:
  loop.train_and_evaluate(config, {workdir!r})
except runtime.Preempted as e:
  print(e, flush=True)
  sys.exit(143)
'''


def _train_steps_logged(workdir: pathlib.Path) -> int:
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return 0
  steps_ = [json.loads(line)['step'] for line in path.read_text().splitlines()
            if '"train"' in line]
  return max(steps_, default=0)


def _start_child(scenario_files, workdir, num_steps):
  code = _CHILD.format(train=scenario_files['train'],
                       eval=scenario_files['eval'], steps=num_steps,
                       workdir=str(workdir))
  root = pathlib.Path(__file__).resolve().parents[2]
  env = dict(os.environ, PYTHONPATH=str(root))
  return subprocess.Popen([sys.executable, '-c', code], cwd=root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _wait_for_step(proc, workdir, step, timeout=600):
  deadline = time.time() + timeout
  while _train_steps_logged(workdir) < step:
    assert proc.poll() is None, proc.communicate()[0]
    assert time.time() < deadline, 'the child did not reach the step'
    time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize('how', ['SIGTERM', 'SIGKILL'])
def test_killed_training_resumes_to_the_same_parameters(scenario_files,
                                                        tmp_path, how):
  """SIGTERM: a checkpoint at the current step and exit status 143;
  SIGKILL at an arbitrary moment: the last complete checkpoint. Either way
  the same command finishes with an uninterrupted run's parameters."""
  num_steps = EIGHT_STEPS['num_steps']
  config = tiny_config(scenario_files, **EIGHT_STEPS)
  straight = loop.train_and_evaluate(config, tmp_path / 'straight')
  workdir = tmp_path / how
  proc = _start_child(scenario_files, workdir, num_steps)
  # Saves are asynchronous: kill once the step-2 checkpoint is complete, at
  # whatever the child is doing then.
  deadline = time.time() + 600
  while not (workdir / 'checkpoints' / '2' /
                   'prefalign_complete.json').exists():
    assert proc.poll() is None, proc.communicate()[0]
    assert time.time() < deadline, 'no step-2 checkpoint'
    time.sleep(0.05)
  _wait_for_step(proc, workdir, 3)
  proc.send_signal(getattr(signal, how))
  out = proc.communicate(timeout=600)[0]
  ckpt = checkpoint_lib.Checkpointer(workdir / 'checkpoints')
  saved = ckpt.latest_step()
  ckpt.close()
  if how == 'SIGTERM':
    assert proc.returncode == 143, out
    assert f'stopped after step {saved}' in out
    assert saved >= 3  # the step it was on, not the last periodic save
  else:
    assert proc.returncode == -signal.SIGKILL
    assert saved is not None and saved >= 2
  resumed = loop.train_and_evaluate(config, workdir)
  assert resumed['step'] == num_steps
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed['params'])),
                  jax.tree.leaves(jax.device_get(straight['params']))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_checkpoint_cut_off_while_writing_is_not_resumed(scenario_files,
                                                           tmp_path):
  """Half-written checkpoints (orbax's temporary folder, or a step folder
  that never got its contents) are never taken for complete ones, and are
  set aside rather than deleted."""
  config = tiny_config(scenario_files, num_steps=2, checkpoint_every=2)
  loop.train_and_evaluate(config, tmp_path)
  ckdir = tmp_path / 'checkpoints'
  (ckdir / '4.orbax-checkpoint-tmp-1234567').mkdir()
  (ckdir / '6').mkdir()
  (ckdir / '6' / 'partial').write_bytes(b'x')
  with pytest.warns(UserWarning, match='6 is incomplete'):
    ckpt = checkpoint_lib.Checkpointer(ckdir)
  assert ckpt.latest_step() == 2
  ckpt.close()
  assert (ckdir / '6.incomplete' / 'partial').read_bytes() == b'x'
  # Training more resumes from step 2 and saves over the cut-off step.
  more = tiny_config(scenario_files, **EIGHT_STEPS)
  assert loop.train_and_evaluate(more, tmp_path)['step'] == 8
  assert (ckdir / '6' / '_CHECKPOINT_METADATA').exists()
