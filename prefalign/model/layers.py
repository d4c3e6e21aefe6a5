"""Attention blocks of the motion-token model (Flax linen).

Three kinds of attention, all pre-norm residual blocks:

* ``NeighbourAttention``: every query attends to its ``k`` nearest keys,
  given by an index array, with a learned embedding of the key's pose in the
  query's frame added to keys and values (relative-pose attention, as in
  QCNet / SMART). Used for map, traffic-light and agent-agent (social)
  interactions. Gathering k neighbours keeps the cost linear in the number of
  tokens instead of quadratic.
* ``CausalSelfAttention``: per-agent attention over its own token steps, with
  an optional KV cache for one-step decoding.
* ``FeedForward``: the MLP of a transformer block.

Masked keys get a large negative logit; a query with no valid key attends to
nothing and gets zero (no NaN), so padded agents never affect valid ones.

Every module takes ``dtype``, the dtype its layers compute in (flax's
meaning: parameters stay float32 and are cast). With ``jnp.bfloat16`` the
matrix products and the residual stream are bfloat16, while attention
logits and softmax, and layer-norm statistics, stay float32.
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    'FeedForward',
    'NeighbourAttention',
    'CausalSelfAttention',
    'PairEmbedding',
    'gather',
    'nearest',
]

_NEG = -1e9


def gather(values: jax.Array, index: jax.Array) -> jax.Array:
  """Per-batch gather: values (B, N, ...) at index (B, ...) -> (B, ..., ...)."""
  return jax.vmap(lambda v, i: v[i])(values, index)


def nearest(query_xy: jax.Array, key_xy: jax.Array, key_valid: jax.Array,
            k: int, *, exclude_self: bool = False
            ) -> tuple[jax.Array, jax.Array]:
  """Indices of the ``k`` nearest valid keys of every query.

  Args:
    query_xy: float32 (B, Q, 2).
    key_xy: float32 (B, N, 2).
    key_valid: bool (B, N).
    k: neighbours (clipped to N).
    exclude_self: queries and keys are the same set; skip the diagonal.

  Returns:
    ``(index, valid)``: int32 (B, Q, k') and bool (B, Q, k') with
    k' = min(k, N) (or N - 1 with ``exclude_self``).
  """
  d2 = jnp.sum((query_xy[:, :, None] - key_xy[:, None]) ** 2, axis=-1)
  ok = jnp.broadcast_to(key_valid[:, None, :], d2.shape)
  n = key_xy.shape[1]
  if exclude_self:
    ok = ok & ~jnp.eye(d2.shape[1], n, dtype=bool)[None]
    n -= 1
  k = max(1, min(k, n))
  # Distances of ties are broken by index, so the choice is deterministic
  # and follows a permutation of the agents.
  score = jnp.where(ok, -d2, -jnp.inf)
  vals, idx = jax.lax.top_k(score, k)
  return idx.astype(jnp.int32), jnp.isfinite(vals)


class FeedForward(nn.Module):
  """Pre-norm MLP block: x + W2 gelu(W1 LN(x))."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.LayerNorm(dtype=self.dtype)(x)
    h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype)(h))
    return x + nn.Dense(x.shape[-1], dtype=self.dtype)(h)


class PairEmbedding(nn.Module):
  """Embeds relative-pose features (..., F) into (..., width)."""
  width: int
  hidden: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, rel: jax.Array) -> jax.Array:
    h = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype)(rel))
    return nn.Dense(self.width, dtype=self.dtype)(h)


def _softmax(logits: jax.Array, mask: jax.Array, dtype) -> jax.Array:
  """Masked softmax over the last axis, in float32, cast to ``dtype``."""
  logits = jnp.where(mask, logits.astype(jnp.float32), _NEG)
  weights = jax.nn.softmax(logits, axis=-1)
  return jnp.where(mask, weights, 0.0).astype(dtype)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array,
            mask: jax.Array) -> jax.Array:
  """q (..., H, D), k/v (..., n, H, D), mask (..., n) -> (..., H, D)."""
  logits = jnp.einsum('...hd,...nhd->...hn', q, k,
                      preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(q.shape[-1])
  weights = _softmax(logits, mask[..., None, :], v.dtype)
  return jnp.einsum('...hn,...nhd->...hd', weights, v)


class NeighbourAttention(nn.Module):
  """Pre-norm attention of queries to gathered neighbours.

  Attributes:
    num_heads: attention heads (the width must be divisible by it).
  """
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, keys: jax.Array, index: jax.Array,
               pair: jax.Array, mask: jax.Array) -> jax.Array:
    """Attends.

    Args:
      x: float32 (B, Q, D) queries (residual stream).
      keys: float32 (B, N, D) key tokens (already normalised by the caller
        if they are a residual stream).
      index: int32 (B, Q, n) neighbours of every query in ``keys``.
      pair: float32 (B, Q, n, D) embedded relative poses.
      mask: bool (B, Q, n) valid neighbours.

    Returns:
      (B, Q, D) = x + attention output.
    """
    d = x.shape[-1]
    h, hd = self.num_heads, d // self.num_heads
    dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)
    q = dense('query')(nn.LayerNorm(dtype=self.dtype, name='norm')(x))
    k = dense('key')(keys)
    v = dense('value')(keys)
    k = gather(k, index) + pair
    v = gather(v, index) + pair
    split = lambda a: a.reshape(*a.shape[:-1], h, hd)
    out = _attend(split(q), split(k), split(v), mask)
    return x + dense('out')(out.reshape(*out.shape[:-2], d))


class CausalSelfAttention(nn.Module):
  """Per-agent causal attention over token steps, with a KV cache.

  The time axis is the second-to-last of the input (..., K, D). In
  teacher-forced mode step t attends to steps <= t. In decoding mode the
  input has a single step, written into ``cache`` at ``step``, and attends
  to cached steps <= step.

  Attributes:
    num_heads: attention heads.
  """
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, valid: jax.Array,
               cache: dict | None = None, step: jax.Array | None = None):
    """Attends.

    Args:
      x: float32 (..., K, D), or (..., 1, D) when decoding.
      valid: bool (..., K) (or (..., 1)): which steps may be attended to.
      cache: decoding only: {'key', 'value': (..., K_max, H, Dh), 'valid':
        (..., K_max)}.
      step: decoding only: int32 scalar, the step of ``x``.

    Returns:
      ``(x + output, cache)`` (cache is None in teacher-forced mode).
    """
    d = x.shape[-1]
    h, hd = self.num_heads, d // self.num_heads
    dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)
    y = nn.LayerNorm(dtype=self.dtype, name='norm')(x)
    split = lambda a: a.reshape(*a.shape[:-1], h, hd)
    q = split(dense('query')(y))
    k = split(dense('key')(y))
    v = split(dense('value')(y))
    if cache is None:
      num = x.shape[-2]
      keys, values, new_cache = k, v, None
      causal = jnp.tril(jnp.ones((num, num), bool))
      mask = causal & valid[..., None, :]  # (..., K_q, K_k)
    else:
      write = lambda buf, new, axis: jax.lax.dynamic_update_slice_in_dim(
          buf, new.astype(buf.dtype), step, axis=axis)
      new_cache = {'key': write(cache['key'], k, -3),
                   'value': write(cache['value'], v, -3),
                   'valid': write(cache['valid'], valid, -1)}
      keys, values = new_cache['key'], new_cache['value']
      num = new_cache['valid'].shape[-1]
      mask = ((jnp.arange(num) <= step) & new_cache['valid'])[..., None, :]
    # (..., Kq, H, D) against (..., Kk, H, D); mask (..., Kq, Kk).
    logits = jnp.einsum('...qhd,...khd->...hqk', q, keys,
                        preferred_element_type=jnp.float32) / jnp.sqrt(hd)
    w = _softmax(logits, mask[..., None, :, :], values.dtype)
    out = jnp.einsum('...hqk,...khd->...qhd', w, values)
    out = out.reshape(*out.shape[:-2], d)
    return x + dense('out')(out), new_cache
