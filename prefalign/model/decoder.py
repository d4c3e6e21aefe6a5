"""Joint motion-token decoder with a KV cache.

Every (agent, token step) is one query. Its input is the agent's scene
embedding, the embedding of its previous token, its state at the start of
the step (pose and velocity in the agent's frame at the current time, so
invariant to a rigid motion of the scene) and a step embedding. Each block
then applies, MotionLM / SMART style:

1. temporal causal self-attention over the agent's own steps (cached when
   decoding one step at a time);
2. social attention to the nearest agents *at the same step* (their states
   at that step are already known: they come from earlier tokens), with
   relative-pose embeddings;
3. cross-attention to the nearest map chunks and traffic lights from the
   agent's pose at that step, with relative-pose embeddings;
4. a feed-forward block.

All agents of a scene are decoded jointly and in parallel within a step
(method.md §2.3: parallel-within-step), conditioned on everyone's earlier
tokens. The same code runs teacher-forced over K steps or one step with a
cache, which is what makes cached decoding exactly equal to the full pass.
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

from prefalign.model import encoder as encoder_lib
from prefalign.model import features
from prefalign.model import layers

__all__ = ['TokenDecoder', 'init_cache', 'step_features', 'NUM_STEP_FEATURES']

NUM_STEP_FEATURES = 6


def step_features(agent_pose: jax.Array, pose: jax.Array) -> jax.Array:
  """An agent's state at a token step, in its frame at the current time.

  Args:
    agent_pose: float32 (B, A, 3) x, y, yaw at the current step.
    pose: float32 (B, A, K, 5) x, y, yaw, vel_x, vel_y at the token steps.

  Returns:
    float32 (B, A, K, 6): x, y (scaled), cos and sin of the heading change,
    and the velocity in the step's own frame (longitudinal, lateral; scaled).
  """
  ref = agent_pose[:, :, None]
  dx, dy = features.to_frame(pose[..., 0] - ref[..., 0],
                             pose[..., 1] - ref[..., 1], ref[..., 2])
  dyaw = pose[..., 2] - ref[..., 2]
  vlon, vlat = features.to_frame(pose[..., 3], pose[..., 4], pose[..., 2])
  pos, vel = features.POS_SCALE, features.VEL_SCALE
  return jnp.stack([dx * pos, dy * pos, jnp.cos(dyaw), jnp.sin(dyaw),
                    vlon * vel, vlat * vel], axis=-1)


class TokenDecoder(nn.Module):
  """Decoder over token steps.

  Attributes:
    width: D.
    num_heads: attention heads.
    num_layers: decoder blocks.
    mlp_ratio: feed-forward hidden width / D.
    vocab_size: V (the previous-token embedding has one more entry, the
      start / no-token id V).
    max_steps: K, the most token steps (cache length, step embeddings).
    map_neighbours: scene tokens per query.
    agent_neighbours: agents per query (including itself).
    dtype: the layers' compute dtype (``layers``); poses stay float32.
  """
  width: int
  num_heads: int
  num_layers: int
  mlp_ratio: int
  vocab_size: int
  max_steps: int
  map_neighbours: int
  agent_neighbours: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, context: encoder_lib.SceneContext, pose: jax.Array,
               valid: jax.Array, prev_tokens: jax.Array,
               first_step: jax.Array | int = 0,
               cache: list | None = None):
    """Logits of the next token at every given step.

    Args:
      context: the encoded scene (B, ...).
      pose: float32 (B, A, K, 5) state at the start of each step (x, y, yaw,
        vel_x, vel_y).
      valid: bool (B, A, K) the agent is simulated at that step.
      prev_tokens: int32 (B, A, K) the previous token (V for none).
      first_step: index of the first given step (decoding: the step).
      cache: None (teacher forcing, K steps from ``first_step``) or the list
        from ``init_cache`` (decoding: K must be 1).

    Returns:
      ``(logits, cache)``: (B, A, K, V) in the compute dtype and the updated
      cache (None in teacher-forced mode).
    """
    d, dt = self.width, self.dtype
    b, a, k = valid.shape
    valid = valid & context.agent_valid[..., None]
    steps = first_step + jnp.arange(k)
    x = (context.agents[:, :, None] +
         nn.Embed(self.vocab_size + 1, d, dtype=dt,
                  name='prev_token')(prev_tokens) +
         nn.Dense(d, dtype=dt, name='state')(
             step_features(context.agent_pose, pose)) +
         nn.Embed(self.max_steps, d, dtype=dt, name='step')(steps)[None, None])
    x = jnp.where(valid[..., None], x, 0.0)

    # Neighbours, fixed for all blocks. Social: per step, among agents.
    by_step = lambda t: jnp.swapaxes(t, 1, 2).reshape(b * k, a, *t.shape[3:])
    step_pose = by_step(pose[..., :3])  # (B*K, A, 3)
    step_valid = by_step(valid)
    s_idx, s_ok = layers.nearest(step_pose[..., :2], step_pose[..., :2],
                                 step_valid, self.agent_neighbours)
    s_ok = s_ok & step_valid[..., None]
    s_rel = features.relative_features(step_pose[:, :, None],
                                       layers.gather(step_pose, s_idx))
    s_pair = layers.PairEmbedding(d, dtype=dt, name='social_pair')(s_rel)
    # Map: every (agent, step) query, flattened.
    q_pose = pose[..., :3].reshape(b, a * k, 3)
    m_idx, m_ok = layers.nearest(q_pose[..., :2], context.pose[..., :2],
                                 context.valid, self.map_neighbours)
    m_ok = m_ok & valid.reshape(b, a * k)[..., None]
    m_rel = features.relative_features(
        q_pose[:, :, None], layers.gather(context.pose, m_idx),
        layers.gather(context.heading, m_idx))
    m_pair = layers.PairEmbedding(d, dtype=dt, name='map_pair')(m_rel)

    new_cache = [] if cache is not None else None
    for i in range(self.num_layers):
      x, c = layers.CausalSelfAttention(self.num_heads, dtype=dt,
                                        name=f'time_{i}')(
          x, valid, None if cache is None else cache[i],
          None if cache is None else first_step)
      if cache is not None:
        new_cache.append(c)
      xs = by_step(x)
      keys = nn.LayerNorm(dtype=dt, name=f'social_keys_{i}')(xs)
      xs = layers.NeighbourAttention(self.num_heads, dtype=dt,
                                     name=f'social_{i}')(
          xs, keys, s_idx, s_pair, s_ok)
      x = jnp.swapaxes(xs.reshape(b, k, a, d), 1, 2)
      xm = layers.NeighbourAttention(self.num_heads, dtype=dt,
                                     name=f'map_{i}')(
          x.reshape(b, a * k, d), context.tokens, m_idx, m_pair, m_ok)
      x = layers.FeedForward(self.mlp_ratio * d, dtype=dt, name=f'ff_{i}')(
          xm.reshape(b, a, k, d))
    x = nn.LayerNorm(dtype=dt, name='out_norm')(x)
    logits = nn.Dense(self.vocab_size, dtype=dt, name='logits')(x)
    return logits, new_cache


def init_cache(batch: int, num_agents: int, *, num_layers: int,
               max_steps: int, width: int, num_heads: int,
               dtype=jnp.float32) -> list:
  """An empty KV cache: one dict per block of (B, A, K, H, D / H) arrays of
  ``dtype`` (the decoder's compute dtype)."""
  shape = (batch, num_agents, max_steps, num_heads, width // num_heads)
  return [{'key': jnp.zeros(shape, dtype),
           'value': jnp.zeros(shape, dtype),
           'valid': jnp.zeros(shape[:3], bool)} for _ in range(num_layers)]
