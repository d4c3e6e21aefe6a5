"""The preference step: sharded == single device, compiles once, learns."""

import functools

import chex
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


@pytest.mark.parametrize('loss', ['cpl', 'dpo'])
def test_sharded_preference_step_matches_single_device(batch, loss):
  assert jax.device_count() == 8
  tx = steps.make_optimizer(OPT)
  params = _params(batch)
  ref = jax.tree.map(lambda a: a + 0.01, params)  # a reference != policy
  step = functools.partial(
      steps.preference_step, model_config=TINY_MODEL, optimizer_config=OPT,
      preference_config=steps.PreferenceConfig(loss=loss))
  out = {}
  for name, mesh in (('single', parallel.make_mesh(1)),
                     ('multi', parallel.make_mesh(8))):
    fn = parallel.jit_step(step, mesh, num_extra=1)
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


@pytest.mark.parametrize('loss', ['cpl', 'sft'])
def test_preference_step_compiles_once_and_separates_the_pairs(batch, loss):
  tx = steps.make_optimizer(OPT)
  mesh = parallel.make_mesh()
  config = steps.PreferenceConfig(loss=loss, alpha=1.0)
  chex.clear_trace_counter()  # one count per parameter

  @chex.assert_max_traces(n=1)
  def step(state, b, rng):
    return steps.preference_step(state, b, rng, model_config=TINY_MODEL,
                                 optimizer_config=OPT,
                                 preference_config=config)

  fn = parallel.jit_step(step, mesh)
  state = jax.device_put(TrainState.create(_params(batch), tx),
                         parallel.replicated(mesh))
  sharded = parallel.shard_batch(batch, mesh)
  history = []
  for i in range(6):
    state, m = fn(state, sharded, jax.random.key(i))
    history.append({k: float(v) for k, v in m.items()})
  first, last = history[0], history[-1]
  assert np.isfinite(last['mean_loss'])
  # The log (preferred in both pairs) becomes more likely.
  assert last['logp_preferred'] > first['logp_preferred']
  if loss == 'cpl':
    assert last['mean_loss'] < first['mean_loss']
    # Contrastive: the unpreferred sequences become less likely.
    assert last['logp_unpreferred'] < first['logp_unpreferred']
    assert last['correct'] == last['pairs']


def test_no_valid_pair_gives_zero_loss_not_nan(batch):
  empty = batch.replace(pair_valid=np.zeros_like(batch.pair_valid))
  tx = steps.make_optimizer(OPT)
  state = TrainState.create(_params(batch), tx)
  for loss in ('cpl', 'sft'):
    _, m = jax.jit(functools.partial(
        steps.preference_step, model_config=TINY_MODEL, optimizer_config=OPT,
        preference_config=steps.PreferenceConfig(loss=loss)))(
            state, empty, jax.random.key(0))
    assert float(m['mean_loss']) == 0.0 and float(m['grad_norm']) == 0.0


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
