"""Scene encoder: map chunks, traffic lights and agents' history.

Query-centric (SMART / QCNet style): every token carries features in its own
frame, and attention between tokens adds an embedding of their relative
pose, so the encoding is invariant to a rigid motion of the scene.

1. Map chunks (their points in the chunk frame, flattened, plus the element
   type) and traffic lights (their state) are embedded, then refined by
   ``num_layers`` rounds of attention to their nearest scene tokens.
2. Agents (11-step history in the agent's current frame, type and size) are
   embedded, then ``num_layers`` rounds of attention to the nearest scene
   tokens and to the nearest agents.
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from prefalign import datatypes
from prefalign.model import features
from prefalign.model import layers

__all__ = ['SceneContext', 'SceneEncoder']


@struct.dataclass
class SceneContext:
  """What the decoder reads from the encoder.

  Attributes:
    agents: (B, A, D) agent embeddings, in the encoder's compute dtype.
    agent_pose: float32 (B, A, 3) agents' poses at the current step.
    agent_valid: bool (B, A).
    tokens: (B, M + L, D) map-chunk and traffic-light embeddings
      (layer-normalised), in the encoder's compute dtype.
    pose: float32 (B, M + L, 3) their poses.
    heading: bool (B, M + L) whether a token has a heading.
    valid: bool (B, M + L).
  """
  agents: jax.Array
  agent_pose: jax.Array
  agent_valid: jax.Array
  tokens: jax.Array
  pose: jax.Array
  heading: jax.Array
  valid: jax.Array


def _mlp(width: int, x: jax.Array, name: str, dtype) -> jax.Array:
  h = nn.gelu(nn.Dense(width, dtype=dtype, name=f'{name}_in')(x))
  return nn.Dense(width, dtype=dtype, name=f'{name}_out')(h)


class SceneEncoder(nn.Module):
  """Encodes a ``features.Scene`` into a ``SceneContext``.

  Attributes:
    width: token width D.
    num_heads: attention heads.
    num_layers: rounds of map and agent attention.
    mlp_ratio: hidden width of feed-forward blocks / D.
    map_neighbours: scene tokens each map token and agent attends to.
    agent_neighbours: agents each agent attends to.
    dtype: the layers' compute dtype (``layers``); poses stay float32.
  """
  width: int
  num_heads: int
  num_layers: int
  mlp_ratio: int
  map_neighbours: int
  agent_neighbours: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, scene: features.Scene) -> SceneContext:
    d, dt = self.width, self.dtype
    b, m, s, _ = scene.map_points.shape
    # --- scene tokens ------------------------------------------------------
    map_x = _mlp(d, scene.map_points.reshape(b, m, s * 3), 'map_points', dt)
    map_x = map_x + nn.Embed(len(datatypes.MapElementIds) + 1, d, dtype=dt,
                             name='map_type')(scene.map_type)
    light_x = nn.Embed(len(datatypes.TrafficLightStates), d, dtype=dt,
                       name='light_state')(scene.light_state)
    tokens = jnp.concatenate([map_x, light_x], axis=1)
    pose = jnp.concatenate([scene.map_pose, scene.light_pose], axis=1)
    heading = jnp.concatenate([scene.map_heading, scene.light_heading],
                              axis=1)
    valid = jnp.concatenate([scene.map_valid, scene.light_valid], axis=1)
    tokens = jnp.where(valid[..., None], tokens, 0.0)

    def pairs(q_pose, index, embed, q_heading=None):
      k_pose = layers.gather(pose, index)
      k_head = layers.gather(heading, index)
      rel = features.relative_features(
          q_pose[:, :, None], k_pose, k_head,
          None if q_heading is None else q_heading[:, :, None])
      return embed(rel)

    idx, ok = layers.nearest(pose[..., :2], pose[..., :2], valid,
                             self.map_neighbours)
    map_pair = pairs(pose, idx,
                     layers.PairEmbedding(d, dtype=dt, name='map_pair'),
                     heading)
    hidden = self.mlp_ratio * d
    for i in range(self.num_layers):
      keys = nn.LayerNorm(dtype=dt, name=f'map_keys_{i}')(tokens)
      tokens = layers.NeighbourAttention(
          self.num_heads, dtype=dt, name=f'map_attn_{i}')(
              tokens, keys, idx, map_pair, ok)
      tokens = layers.FeedForward(hidden, dtype=dt,
                                  name=f'map_ff_{i}')(tokens)
    tokens = nn.LayerNorm(dtype=dt, name='scene_norm')(tokens)
    tokens = jnp.where(valid[..., None], tokens, 0.0)

    # --- agents -------------------------------------------------------------
    a = scene.agent_valid.shape[1]
    hist = scene.agent_history.reshape(b, a, -1)
    agents = _mlp(d, jnp.concatenate([hist, scene.agent_attr], -1), 'agent',
                  dt)
    agents = jnp.where(scene.agent_valid[..., None], agents, 0.0)
    apose = scene.agent_pose
    s_idx, s_ok = layers.nearest(apose[..., :2], pose[..., :2], valid,
                                 self.map_neighbours)
    s_pair = pairs(apose, s_idx,
                   layers.PairEmbedding(d, dtype=dt, name='agent_map_pair'))
    a_idx, a_ok = layers.nearest(apose[..., :2], apose[..., :2],
                                 scene.agent_valid, self.agent_neighbours)
    a_rel = features.relative_features(apose[:, :, None],
                                       layers.gather(apose, a_idx))
    a_pair = layers.PairEmbedding(d, dtype=dt,
                                  name='agent_agent_pair')(a_rel)
    for i in range(self.num_layers):
      agents = layers.NeighbourAttention(
          self.num_heads, dtype=dt, name=f'agent_map_attn_{i}')(
              agents, tokens, s_idx, s_pair, s_ok)
      keys = nn.LayerNorm(dtype=dt, name=f'agent_keys_{i}')(agents)
      agents = layers.NeighbourAttention(
          self.num_heads, dtype=dt, name=f'agent_agent_attn_{i}')(
              agents, keys, a_idx, a_pair, a_ok)
      agents = layers.FeedForward(hidden, dtype=dt,
                                  name=f'agent_ff_{i}')(agents)
    agents = jnp.where(scene.agent_valid[..., None], agents, 0.0)
    return SceneContext(agents=agents, agent_pose=apose,
                        agent_valid=scene.agent_valid,
                        tokens=tokens, pose=pose, heading=heading,
                        valid=valid)
