"""Preference losses: scores, CPL, DPO (toy policies, exact values)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prefalign.train import losses


def test_rollout_scores_discount_mask_and_agent_reduction():
  lp = -jnp.ones((2, 3, 4))  # (R, A, K)
  mask = np.ones((2, 3, 4), bool)
  mask[1, 2] = False  # rollout 1: agent 2 has no token
  mask[1, 0, 3] = False
  s = losses.rollout_scores(lp, mask, alpha=0.5, gamma=0.9)
  disc = 1 + 0.9 + 0.81 + 0.729
  np.testing.assert_allclose(s, [-0.5 * 3 * disc,
                                 -0.5 * (2 * disc - 0.729)], rtol=1e-6)
  mean = losses.rollout_scores(lp, mask, gamma=0.9, agents='mean')
  np.testing.assert_allclose(mean, [-disc, -(2 * disc - 0.729) / 2],
                             rtol=1e-6)
  # Garbage behind the mask never leaks in.
  noisy = jnp.where(mask, lp, jnp.nan)
  np.testing.assert_allclose(losses.rollout_scores(noisy, mask, alpha=0.5,
                                                   gamma=0.9), s)


def test_nothing_valid_gives_zero_not_nan():
  lp = jnp.full((2, 3, 4), jnp.nan)
  mask = np.zeros((2, 3, 4), bool)
  for agents in losses.AGENT_REDUCTIONS:
    s = losses.rollout_scores(lp, mask, agents=agents)
    np.testing.assert_array_equal(s, [0.0, 0.0])
  valid = np.zeros(2, bool)
  for sums in (losses.cpl_sums(s, s, valid),
               losses.dpo_sums(s, s, s, s, valid)):
    assert float(sums['count']) == 0
    assert float(losses.safe_mean(sums['loss'], sums['count'])) == 0.0


def test_cpl_values_conservative_bias_and_accuracy():
  pos = jnp.array([2.0, -1.0, 0.0])
  neg = jnp.array([1.0, 1.0, 0.0])
  valid = jnp.array([True, True, False])
  sums = losses.cpl_sums(pos, neg, valid)
  expect = np.log1p(np.exp(-1.0)) + np.log1p(np.exp(2.0))
  np.testing.assert_allclose(sums['loss'], expect, rtol=1e-6)
  assert float(sums['correct']) == 1 and float(sums['count']) == 2
  half = losses.cpl_sums(pos, neg, valid, conservative=0.5)
  np.testing.assert_allclose(
      half['loss'], np.log1p(np.exp(-1.5)) + np.log1p(np.exp(1.5)),
      rtol=1e-6)
  # Large margins stay finite (softplus, not log(sigmoid)).
  big = losses.cpl_sums(jnp.array([-1e4]), jnp.array([1e4]),
                        jnp.array([True]))
  np.testing.assert_allclose(big['loss'], 2e4, rtol=1e-6)


def test_dpo_at_the_reference_is_log_two_and_depends_on_ratios_only():
  pol = jnp.array([-3.0, -5.0])
  valid = jnp.ones(2, bool)
  at_ref = losses.dpo_sums(pol[:1], pol[1:], pol[:1], pol[1:], valid[:1])
  np.testing.assert_allclose(at_ref['loss'], np.log(2.0), rtol=1e-6)
  a = losses.dpo_sums(jnp.array([-2.0]), jnp.array([-6.0]),
                      jnp.array([-3.0]), jnp.array([-5.0]), valid[:1],
                      beta=0.5)
  shifted = losses.dpo_sums(jnp.array([8.0]), jnp.array([4.0]),
                            jnp.array([7.0]), jnp.array([5.0]), valid[:1],
                            beta=0.5)
  np.testing.assert_allclose(a['loss'], shifted['loss'], rtol=1e-6)
  np.testing.assert_allclose(a['loss'], np.log1p(np.exp(-0.5 * 2.0)),
                             rtol=1e-6)


@pytest.mark.parametrize('kind', ['cpl', 'dpo'])
def test_gradient_raises_preferred_and_lowers_unpreferred(kind):
  """A toy policy: one categorical over 8 tokens per (agent, step) slot."""
  rng = np.random.default_rng(0)
  a, k, v = 3, 4, 8
  params = jnp.asarray(rng.normal(size=(a, k, v)), jnp.float32)
  ref = params
  pos_tok = jnp.asarray(rng.integers(0, v, (a, k)))
  neg_tok = jnp.asarray(rng.integers(0, v, (a, k)))
  mask = jnp.ones((a, k), bool)

  def score(p, toks):
    lp = jnp.take_along_axis(jax.nn.log_softmax(p), toks[..., None],
                             -1)[..., 0]
    return losses.rollout_scores(lp, mask, gamma=0.95)

  def loss(p):
    pos, neg = score(p, pos_tok)[None], score(p, neg_tok)[None]
    if kind == 'cpl':
      s = losses.cpl_sums(pos, neg, jnp.ones(1, bool))
    else:
      s = losses.dpo_sums(pos, neg, score(ref, pos_tok)[None],
                          score(ref, neg_tok)[None], jnp.ones(1, bool))
    return s['loss']

  opt = optax.sgd(0.1)
  state = opt.init(params)
  before = (float(score(params, pos_tok)), float(score(params, neg_tok)))
  for _ in range(5):
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state)
    params = optax.apply_updates(params, updates)
  after = (float(score(params, pos_tok)), float(score(params, neg_tok)))
  assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_bad_agent_reduction_is_named():
  with pytest.raises(ValueError, match='agents'):
    losses.rollout_scores(jnp.zeros((1, 1)), jnp.ones((1, 1), bool),
                          agents='max')
