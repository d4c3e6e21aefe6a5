"""The preference step: sharded == single device, compiles once, learns,
and a batch without a valid pair gives zero loss, not NaN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.train import parallel
from prefalign.train import steps
from prefalign.train.state import TrainState
from tests.train.conftest import READER  # noqa: E402
from tests.train.conftest import TINY_MODEL  # noqa: E402

OPT = steps.OptimizerConfig(learning_rate=3e-3, warmup_steps=1,
                            total_steps=10)


@pytest.fixture(scope='module')
def batch(scenario_files):
  """8 scenarios x 3 sequences (the log, two with random token ids); pairs
  (0, 1), (0, 2) and one padding pair."""
  examples = list(womd.read_examples([scenario_files['train']], READER))[:8]
  state = datatypes.stack([e.state for e in examples])
  _, log = steps.model_inputs(jax.tree.map(np.asarray, state), TINY_MODEL)
  rng = np.random.default_rng(0)
  seqs = [log] + [log.replace(tokens=jnp.asarray(rng.integers(
      0, TINY_MODEL.vocab_size, log.tokens.shape), jnp.int32))
                  for _ in range(2)]
  tokens = jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a], 1),
                        *seqs)
  pairs = np.broadcast_to(np.array([[0, 1], [0, 2], [1, 2]], np.int32),
                          (8, 3, 2)).copy()
  valid = np.broadcast_to(np.array([True, True, False]), (8, 3)).copy()
  return steps.PreferenceBatch(state=jax.tree.map(np.asarray, state),
                               tokens=tokens, pairs=pairs, pair_valid=valid)


def _params(batch):
  """Host copies: every TrainState gets its own buffers (steps donate)."""
  scene, toks = steps.model_inputs(batch.state, TINY_MODEL)
  return jax.device_get(motion_lm.init(jax.random.key(0), TINY_MODEL, scene,
                                       toks))


def _step(loss):
  """The preference step of ``loss`` (alpha 1: the pairs separate in a few
  steps)."""
  return functools.partial(
      steps.preference_step, model_config=TINY_MODEL, optimizer_config=OPT,
      preference_config=steps.PreferenceConfig(loss=loss, alpha=1.0))


def _train(fn, mesh, state, batch, *reference, num_steps=6):
  """Steps ``fn`` on ``batch`` (host arrays, sharded over ``mesh``); the
  metrics of every step, then of a step on the same batch with no valid
  pair (same shapes: no recompilation)."""
  history = []
  sharded = parallel.shard_batch(batch, mesh)
  for i in range(num_steps):
    state, m = fn(state, sharded, jax.random.key(i), *reference)
    history.append({k: float(v) for k, v in m.items()})
  empty = batch.replace(pair_valid=np.zeros_like(batch.pair_valid))
  _, m = fn(state, parallel.shard_batch(empty, mesh),
            jax.random.key(num_steps), *reference)
  return history, {k: float(v) for k, v in m.items()}


# Each test compiles its steps once and checks everything they can show:
# sharded == single device on the first step, then (sharded) learning, the
# compile-once contract and a batch without a valid pair (zero loss and
# gradient, not NaN).
@pytest.mark.parametrize('loss', ['cpl', 'dpo'])
def test_sharded_preference_step_matches_single_device_and_learns(batch,
                                                                   loss):
  assert jax.device_count() == 8
  tx = steps.make_optimizer(OPT)
  params = _params(batch)
  ref = jax.tree.map(lambda a: a + 0.01, params)  # a reference != policy
  out = {}
  for name, mesh in (('single', parallel.make_mesh(1)),
                     ('multi', parallel.make_mesh(8))):
    fn = parallel.jit_step(_step(loss), mesh, num_extra=1)
    state = jax.device_put(TrainState.create(params, tx),
                           parallel.replicated(mesh))
    new, metrics = fn(state, parallel.shard_batch(batch, mesh),
                      jax.random.key(1), parallel.replicate(ref, mesh))
    out[name] = jax.device_get((new.params, metrics))
  (p1, m1), (p8, m8) = out['single'], out['multi']
  assert m1['count'] == 16 and m1['pairs'] == 16
  for key in ('mean_loss', 'grad_norm', 'correct', 'logp_preferred'):
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

  # The sharded step goes on learning (state, batch and reference on mesh).
  history, empty = _train(fn, mesh, new, batch,
                          parallel.replicate(ref, mesh))
  first, last = history[0], history[-1]
  assert np.isfinite(last['mean_loss'])
  assert last['mean_loss'] < first['mean_loss']
  # The log (preferred in both pairs) becomes more likely than the others.
  assert (last['logp_preferred'] - last['logp_unpreferred'] >
          first['logp_preferred'] - first['logp_unpreferred'])
  if loss == 'cpl':
    assert last['logp_preferred'] > first['logp_preferred']
    # Contrastive: the unpreferred sequences become less likely.
    assert last['logp_unpreferred'] < first['logp_unpreferred']
    assert last['correct'] == last['pairs']
  assert empty['mean_loss'] == 0.0 and empty['grad_norm'] == 0.0
  assert fn._cache_size() == 1  # 8 steps of the sharded step, one compile


def test_sft_step_compiles_once_and_learns_the_preferred(batch):
  mesh = parallel.make_mesh()
  fn = parallel.jit_step(_step('sft'), mesh)
  state = jax.device_put(
      TrainState.create(_params(batch), steps.make_optimizer(OPT)),
      parallel.replicated(mesh))
  history, empty = _train(fn, mesh, state, batch)
  assert np.isfinite(history[-1]['mean_loss'])
  assert history[-1]['logp_preferred'] > history[0]['logp_preferred']
  assert empty['mean_loss'] == 0.0 and empty['grad_norm'] == 0.0
  assert fn._cache_size() == 1


def test_dpo_without_reference_and_bad_config_are_named(batch):
  state = TrainState.create(_params(batch), steps.make_optimizer(OPT))
  with pytest.raises(ValueError, match='reference'):
    steps.preference_step(state, batch, jax.random.key(0),
                          model_config=TINY_MODEL, optimizer_config=OPT,
                          preference_config=steps.PreferenceConfig(
                              loss='dpo'))
  for kw, name in ((dict(loss='ipo'), 'loss'), (dict(alpha=0.0), 'alpha'),
                   (dict(gamma=1.5), 'gamma'), (dict(agents='max'), 'agents'),
                   (dict(conservative=2.0), 'conservative')):
    with pytest.raises(ValueError, match=f'PreferenceConfig.{name}'):
      steps.PreferenceConfig(**kw)
