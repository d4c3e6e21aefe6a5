"""Data-parallel train step: sharded == single device, compiles once,
learns; a non-finite step is never applied."""

import functools

import jax
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.train import losses
from prefalign.train import parallel
from prefalign.train import steps
from prefalign.train.state import TrainState
from tests.train.conftest import READER  # noqa: E402
from tests.train.conftest import TINY_MODEL  # noqa: E402


@pytest.fixture(scope='module')
def batch(scenario_files):
  examples = list(womd.read_examples([scenario_files['train']], READER))[:8]
  return datatypes.stack([e.state for e in examples])


def _state(batch, tx):
  scene, toks = steps.model_inputs(jax.tree.map(np.asarray, batch),
                                   TINY_MODEL)
  params = motion_lm.init(jax.random.key(0), TINY_MODEL, scene, toks)
  return TrainState.create(params, tx)


def test_sharded_step_matches_single_device_compiles_once_and_learns(batch):
  assert jax.device_count() == 8
  # tiny_config's 2-step optimizer: the 8-device step is then the loop
  # tests' program (the persistent compilation cache serves it).
  opt = steps.OptimizerConfig(learning_rate=3e-3, warmup_steps=1,
                              total_steps=2)
  tx = steps.make_optimizer(opt)
  rng = jax.random.key(1)
  single = parallel.make_mesh(1)
  multi = parallel.make_mesh(8)
  out = {}
  step = functools.partial(steps.train_step, model_config=TINY_MODEL,
                           optimizer_config=opt)
  for name, mesh in (('single', single), ('multi', multi)):
    fn = parallel.jit_step(step, mesh)
    state = jax.device_put(_state(batch, tx), parallel.replicated(mesh))
    sharded = parallel.shard_batch(batch, mesh)
    new, metrics = fn(state, sharded, rng)
    out[name] = jax.device_get((new.params, metrics))
  (p1, m1), (p8, m8) = out['single'], out['multi']
  assert m1['count'] > 0
  np.testing.assert_allclose(m8['mean_loss'], m1['mean_loss'], rtol=1e-5)
  np.testing.assert_allclose(m8['grad_norm'], m1['grad_norm'], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

  # The sharded step, five more times on the same batch: no recompilation,
  # and the loss goes down.
  for i in range(5):
    new, metrics = fn(new, sharded, jax.random.key(i))
  assert int(new.step) == 6 and fn._cache_size() == 1
  assert float(metrics['mean_loss']) < float(m8['mean_loss'])


def test_bad_batch_size_is_rejected():
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match='batch_size=12 is not a positive '
                     'multiple of the 8 device'):
    parallel.check_batch_size(12, mesh, 'batch_size')


def test_losses_are_nan_free_when_nothing_is_valid():
  logits = np.zeros((2, 3, 5), np.float32)
  tokens = np.zeros((2, 3), np.int32)
  sums = losses.next_token_sums(logits, tokens, np.zeros((2, 3), bool))
  assert float(sums['count']) == 0
  assert float(losses.safe_mean(sums['loss'], sums['count'])) == 0.0
  sums = losses.next_token_sums(logits, tokens, np.ones((2, 3), bool))
  np.testing.assert_allclose(float(sums['loss']) / 6, np.log(5), rtol=1e-6)


def test_unigram_baseline_matches_frequencies():
  counts = np.array([[3.0, 1.0, 0.0]])
  lp = np.asarray(losses.unigram_log_probs(counts, smoothing=0.0))
  np.testing.assert_allclose(np.exp(lp), [[0.75, 0.25, 0.0]], atol=1e-7)


def test_a_nonfinite_step_keeps_the_last_good_state(batch):
  """NaN in the loss (or, through it, the gradients) is reported and never
  applied: parameters, optimizer state and step stay as they were."""
  opt = steps.OptimizerConfig(learning_rate=1e-3, warmup_steps=1,
                              total_steps=10)
  tx = steps.make_optimizer(opt)
  state = _state(batch, tx)
  scene, toks = steps.model_inputs(batch, TINY_MODEL)

  def scaled_loss(params, scale, *args):
    loss, sums = steps._loss(params, *args)
    return loss * scale, sums

  # One program: a scale of NaN poisons the loss and, through it, the
  # gradients.
  apply = jax.jit(lambda state, scale: steps._apply(
      state, loss_fn=scaled_loss, args=(scale, scene, toks, TINY_MODEL),
      optimizer_config=opt))
  good, good_metrics = apply(state, np.float32(1.0))
  assert float(good_metrics['nonfinite']) == 0.0 and int(good.step) == 1
  new, metrics = apply(good, np.float32(np.nan))
  assert float(metrics['nonfinite']) == 1.0
  assert int(new.step) == 1
  for a, b in zip(jax.tree.leaves(jax.device_get((new.params, new.opt_state))),
                  jax.tree.leaves(jax.device_get((good.params,
                                                  good.opt_state)))):
    np.testing.assert_array_equal(a, b)
