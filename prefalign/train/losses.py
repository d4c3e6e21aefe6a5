"""Losses on teacher-forced token log-likelihoods.

Losses return *sums* and a count, so that data-parallel steps and
multi-batch evaluations average correctly; a mean over nothing is 0, never
NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ['next_token_sums', 'safe_mean', 'unigram_log_probs']


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
