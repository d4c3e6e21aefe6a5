"""Losses on teacher-forced token log-likelihoods.

Losses return *sums* and a count, so that data-parallel steps and
multi-batch evaluations average correctly; a mean over nothing is 0, never
NaN.

Pre-training: ``next_token_sums``. Preference alignment (method.md section
5): a joint rollout's score is ``rollout_scores`` (alpha x discounted sum
over tokens of the agents' log-likelihoods), and a pair's loss is
multi-agent Contrastive Preference Learning (``cpl_sums``, with CPL's
conservative bias lambda) or DPO against a frozen reference (``dpo_sums``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ['next_token_sums', 'safe_mean', 'unigram_log_probs',
           'rollout_scores', 'cpl_sums', 'dpo_sums', 'AGENT_REDUCTIONS']

AGENT_REDUCTIONS = ('sum', 'mean')


def next_token_sums(logits: jax.Array, tokens: jax.Array,
                    mask: jax.Array) -> dict[str, jax.Array]:
  """Cross-entropy and accuracy sums of next-token prediction.

  Args:
    logits: float32 (..., V).
    tokens: int32 (...) expert tokens.
    mask: bool (...) which tokens count.

  Returns:
    {'loss': sum of -log p(token), 'correct': number of argmax hits,
    'count': number of counted tokens} (float32 scalars).
  """
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(lp, tokens[..., None], axis=-1)[..., 0]
  hit = jnp.argmax(logits, axis=-1) == tokens
  m = mask.astype(jnp.float32)
  return {'loss': jnp.sum(nll * m), 'correct': jnp.sum(hit * m),
          'count': jnp.sum(m)}


def safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
  """total / count, and 0 when count is 0."""
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def unigram_log_probs(counts: jax.Array, smoothing: float = 1.0) -> jax.Array:
  """Log-probabilities of a per-type unigram model from token counts.

  Args:
    counts: float (num_types, V) token counts per object type.
    smoothing: add-k smoothing.

  Returns:
    float32 (num_types, V) log p(token | type).
  """
  c = counts.astype(jnp.float32) + smoothing
  return jnp.log(c / c.sum(-1, keepdims=True))


def rollout_scores(log_probs: jax.Array, mask: jax.Array, *,
                   alpha: float = 1.0, gamma: float = 1.0,
                   agents: str = 'sum') -> jax.Array:
  """CPL score of joint rollouts: alpha * sum_k gamma^k * agents' log pi.

  S(xi) = alpha * sum_k gamma^k * R_i[log pi(a^i_k | c, a_<k)], where R is
  the sum over the valid agents (``agents='sum'``, the joint likelihood) or
  their mean (``'mean'``: scenes with many agents do not dominate).

  Args:
    log_probs: float (..., A, K) token log-likelihoods (e.g.
      ``motion_lm.log_probs``).
    mask: bool (..., A, K) which tokens count.
    alpha: CPL's temperature.
    gamma: discount per token (1: none).
    agents: one of ``AGENT_REDUCTIONS``.

  Returns:
    float32 (...,) scores; 0 where nothing is valid.
  """
  if agents not in AGENT_REDUCTIONS:
    raise ValueError(f'agents={agents!r} is not one of {AGENT_REDUCTIONS}')
  m = mask.astype(jnp.float32)
  k = jnp.arange(log_probs.shape[-1], dtype=jnp.float32)
  per_agent = jnp.sum(jnp.where(mask, log_probs, 0.0) * gamma ** k, -1)
  total = jnp.sum(per_agent, -1)
  if agents == 'mean':
    total = safe_mean(total, jnp.sum(jnp.any(m > 0, -1), -1))
  return alpha * total.astype(jnp.float32)


def _pair_sums(margin: jax.Array, correct: jax.Array,
               valid: jax.Array) -> dict[str, jax.Array]:
  m = valid.astype(jnp.float32)
  return {'loss': jnp.sum(jax.nn.softplus(-margin) * m),
          'correct': jnp.sum(correct * m), 'count': jnp.sum(m)}


def cpl_sums(preferred: jax.Array, unpreferred: jax.Array,
             valid: jax.Array, *, conservative: float = 1.0
             ) -> dict[str, jax.Array]:
  """Contrastive Preference Learning over pairs of rollout scores.

  loss = -log sigmoid(S(xi+) - lambda * S(xi-)) per pair (CPL's
  conservative bias: lambda < 1 pushes the unpreferred score down less).

  Args:
    preferred, unpreferred: float (...,) ``rollout_scores`` of each pair.
    valid: bool (...,) which pairs count.
    conservative: lambda.

  Returns:
    {'loss': sum over valid pairs, 'correct': pairs whose preferred score is
    the higher (the pair classification accuracy's numerator), 'count'}.
  """
  return _pair_sums(preferred - conservative * unpreferred,
                    preferred > unpreferred, valid)


def dpo_sums(preferred: jax.Array, unpreferred: jax.Array,
             ref_preferred: jax.Array, ref_unpreferred: jax.Array,
             valid: jax.Array, *, beta: float = 0.1) -> dict[str, jax.Array]:
  """DPO over pairs: -log sigmoid(beta * (log-ratio+ - log-ratio-)).

  Args:
    preferred, unpreferred: float (...,) the policy's scores
      (``rollout_scores`` with alpha 1).
    ref_preferred, ref_unpreferred: the frozen reference's.
    valid: bool (...,) which pairs count.
    beta: the KL strength.

  Returns:
    As ``cpl_sums``; 'correct' counts pairs whose implicit reward margin is
    positive.
  """
  margin = beta * ((preferred - ref_preferred) -
                   (unpreferred - ref_unpreferred))
  return _pair_sums(margin, margin > 0, valid)
