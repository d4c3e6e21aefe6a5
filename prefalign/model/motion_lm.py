"""MotionLM-style joint motion-token model: config, module, public functions.

``MotionLM`` = ``SceneEncoder`` + ``TokenDecoder``. The model is pure
functional: parameters are a pytree and every entry point takes them
explicitly::

  config = motion_lm.ModelConfig()
  scene = features.scene_from_state(state, config.scene)      # (B, ...)
  toks = tokenizer.tokenize(state.log_trajectory,
                            state.object_metadata.object_types,
                            config.tokenizer)
  params = motion_lm.init(rng, config, scene, toks)
  lp = motion_lm.log_probs(params, scene, toks, config=config)  # (B, A, K)

``log_probs`` (teacher-forced log-likelihood of given tokens) is what every
loss is built on: next-token cross-entropy for pre-training and the
contrastive preference loss for alignment. ``encode`` + ``decode_step``
decode one token step at a time with a KV cache, for the sampler.

The default config has about one million parameters (``count_params``), as
the DPA-OMF reference model; larger models change only widths and depths.

Precision is a property of a call, not of the parameters: every entry point
but ``init`` takes ``dtype``, the dtype the layers compute in (float32 by
default; ``jnp.bfloat16`` for mixed precision, e.g. the sampler's
``SamplingConfig.dtype``). Parameters stay float32, poses and the
neighbour searches stay float32, and logits are returned as float32.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

from prefalign.model import decoder as decoder_lib
from prefalign.model import encoder as encoder_lib
from prefalign.model import features
from prefalign.model import tokenizer as tokenizer_lib

__all__ = [
    'ModelConfig',
    'MotionLM',
    'init',
    'logits',
    'log_probs',
    'sequence_log_probs',
    'sequence_token_mask',
    'encode',
    'decode_step',
    'init_cache',
    'count_params',
    'previous_tokens',
    'token_mask',
]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes of the model; frozen and hashable (a static jit argument).

  Attributes:
    width: token width D.
    num_heads: attention heads.
    encoder_layers: rounds of map and agent attention in the encoder.
    decoder_layers: decoder blocks.
    mlp_ratio: feed-forward hidden width / D.
    map_neighbours: map chunks and lights each query attends to.
    agent_neighbours: agents each query attends to (including itself in the
      decoder).
    scene: what of the scenario the model sees.
    tokenizer: the action vocabulary and the token rate.
  """
  width: int = 128
  num_heads: int = 4
  encoder_layers: int = 1
  decoder_layers: int = 2
  mlp_ratio: int = 2
  map_neighbours: int = 32
  agent_neighbours: int = 16
  scene: features.SceneConfig = features.SceneConfig()
  tokenizer: tokenizer_lib.TokenizerConfig = tokenizer_lib.TokenizerConfig()

  def __post_init__(self):
    if self.width % self.num_heads:
      raise ValueError(f'ModelConfig.width={self.width} is not divisible by '
                       f'num_heads={self.num_heads}')
    for name in ('width', 'num_heads', 'decoder_layers', 'mlp_ratio',
                 'map_neighbours', 'agent_neighbours'):
      if getattr(self, name) < 1:
        raise ValueError(f'ModelConfig.{name} must be >= 1, got '
                         f'{getattr(self, name)}')

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  @property
  def num_steps(self) -> int:
    return self.tokenizer.num_tokens


class MotionLM(nn.Module):
  """The joint motion-token model; ``dtype``: the layers' compute dtype."""
  config: ModelConfig
  dtype: Any = jnp.float32

  def setup(self):
    c = self.config
    self.encoder = encoder_lib.SceneEncoder(
        width=c.width, num_heads=c.num_heads, num_layers=c.encoder_layers,
        mlp_ratio=c.mlp_ratio, map_neighbours=c.map_neighbours,
        agent_neighbours=c.agent_neighbours, dtype=self.dtype)
    self.decoder = decoder_lib.TokenDecoder(
        width=c.width, num_heads=c.num_heads, num_layers=c.decoder_layers,
        mlp_ratio=c.mlp_ratio, vocab_size=c.vocab_size,
        max_steps=c.num_steps, map_neighbours=c.map_neighbours,
        agent_neighbours=c.agent_neighbours, dtype=self.dtype)

  def __call__(self, scene: features.Scene,
               tokens: tokenizer_lib.Tokens) -> jax.Array:
    """Teacher-forced logits (B, A, K, V) of every token step (float32)."""
    return self.teacher_forced(self.encoder(scene), tokens)

  def teacher_forced(self, context: encoder_lib.SceneContext,
                     tokens: tokenizer_lib.Tokens) -> jax.Array:
    pose, valid = _decoder_inputs(tokens)
    out, _ = self.decoder(context, pose, valid,
                          previous_tokens(tokens, self.config.vocab_size))
    return out.astype(jnp.float32)

  def encode(self, scene: features.Scene) -> encoder_lib.SceneContext:
    return self.encoder(scene)

  def decode(self, context, pose, valid, prev_tokens, step, cache):
    out, cache = self.decoder(context, pose, valid, prev_tokens, step, cache)
    return out.astype(jnp.float32), cache


def _pose_array(pose: tokenizer_lib.Pose) -> jax.Array:
  return jnp.stack([pose.x, pose.y, pose.yaw, pose.vel_x, pose.vel_y], -1)


def _decoder_inputs(tokens: tokenizer_lib.Tokens):
  pose = _pose_array(tokens.start_pose)
  valid = tokens.start_valid
  return jnp.where(valid[..., None], pose, 0.0), valid


def previous_tokens(tokens: tokenizer_lib.Tokens,
                    vocab_size: int) -> jax.Array:
  """The token before each step.

  Args:
    tokens: Tokens (B, A, K).
    vocab_size: V; the start / no-token id.

  Returns:
    int32 (B, A, K): V at step 0 and after a step without a valid token.
  """
  prev = jnp.where(tokens.valid, tokens.tokens, vocab_size)
  start = jnp.full_like(prev[..., :1], vocab_size)
  return jnp.concatenate([start, prev[..., :-1]], axis=-1).astype(jnp.int32)


def _model(config: ModelConfig, dtype=jnp.float32) -> MotionLM:
  return MotionLM(config, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=('config',))
def init(rng: jax.Array, config: ModelConfig, scene: features.Scene,
         tokens: tokenizer_lib.Tokens):
  """Initial parameters (a pytree) for inputs shaped like ``scene``.

  Jitted (``config`` static): called eagerly, it is one compilation instead
  of thousands of op-by-op dispatches (30 s -> 6 s for a tiny model on 2
  CPU cores, ``model_inputs`` included).
  """
  return _model(config).init(rng, scene, tokens)['params']


def logits(params, scene: features.Scene, tokens: tokenizer_lib.Tokens, *,
           config: ModelConfig, dtype=jnp.float32) -> jax.Array:
  """Teacher-forced next-token logits.

  Args:
    params: model parameters.
    scene: Scene (B, ...).
    tokens: Tokens (B, A, K); step k is predicted from the states at the
      start of steps <= k and the tokens of steps < k.
    config: the model's config.
    dtype: the layers' compute dtype.

  Returns:
    float32 (B, A, K, V).
  """
  return _model(config, dtype).apply({'params': params}, scene, tokens)


def token_mask(scene: features.Scene,
               tokens: tokenizer_lib.Tokens) -> jax.Array:
  """bool (B, A, K): steps with a label, of agents valid at the current step
  (the agents a rollout simulates)."""
  return tokens.valid & tokens.start_valid & scene.agent_valid[..., None]


def log_probs(params, scene: features.Scene, tokens: tokenizer_lib.Tokens, *,
              config: ModelConfig, dtype=jnp.float32) -> jax.Array:
  """Teacher-forced log-likelihood of every token.

  Args:
    params: model parameters.
    scene: Scene (B, ...).
    tokens: Tokens (B, A, K).
    config: the model's config.
    dtype: the layers' compute dtype.

  Returns:
    float32 (B, A, K): log p(token_k | scene, tokens_<k); 0 where
    ``token_mask`` is False, so sums over agents and steps are the joint
    log-likelihood of the labelled tokens.
  """
  out = logits(params, scene, tokens, config=config, dtype=dtype)
  lp = jax.nn.log_softmax(out, axis=-1)
  lp = jnp.take_along_axis(lp, tokens.tokens[..., None], axis=-1)[..., 0]
  return jnp.where(token_mask(scene, tokens), lp, 0.0)


def sequence_log_probs(params, scene: features.Scene,
                       tokens: tokenizer_lib.Tokens, *,
                       config: ModelConfig, dtype=jnp.float32) -> jax.Array:
  """Teacher-forced log-likelihoods of several token sequences per scene.

  The scene is encoded once and its context shared by the U sequences (the
  rollouts of a preference record), instead of once per sequence.

  Args:
    params: model parameters.
    scene: Scene (B, ...).
    tokens: Tokens (B, U, A, K).
    config: the model's config.
    dtype: the layers' compute dtype.

  Returns:
    float32 (B, U, A, K), as ``log_probs`` per sequence (0 where
    ``token_mask`` is False).
  """
  b, u = tokens.tokens.shape[:2]
  model = _model(config, dtype)
  context = model.apply({'params': params}, scene, method=MotionLM.encode)
  context = jax.tree.map(lambda a: jnp.repeat(a, u, axis=0), context)
  flat = jax.tree.map(lambda a: a.reshape((b * u,) + a.shape[2:]), tokens)
  out = model.apply({'params': params}, context, flat,
                    method=MotionLM.teacher_forced)
  lp = jax.nn.log_softmax(out, axis=-1)
  lp = jnp.take_along_axis(lp, flat.tokens[..., None], axis=-1)[..., 0]
  lp = lp.reshape((b, u) + lp.shape[1:])
  return jnp.where(sequence_token_mask(scene, tokens), lp, 0.0)


def sequence_token_mask(scene: features.Scene,
                        tokens: tokenizer_lib.Tokens) -> jax.Array:
  """bool (B, U, A, K): ``token_mask`` of U sequences per scene."""
  return token_mask(jax.tree.map(lambda a: a[:, None], scene), tokens)


def encode(params, scene: features.Scene, *, config: ModelConfig,
           dtype=jnp.float32) -> encoder_lib.SceneContext:
  """Encodes the scene once, for ``decode_step`` (of the same ``dtype``)."""
  return _model(config, dtype).apply({'params': params}, scene,
                                     method=MotionLM.encode)


def init_cache(config: ModelConfig, batch: int, num_agents: int,
               dtype=jnp.float32) -> list:
  """An empty KV cache for ``decode_step`` (of the same ``dtype``)."""
  return decoder_lib.init_cache(
      batch, num_agents, num_layers=config.decoder_layers,
      max_steps=config.num_steps, width=config.width,
      num_heads=config.num_heads, dtype=jnp.dtype(dtype))


def decode_step(params, context: encoder_lib.SceneContext, pose: jax.Array,
                valid: jax.Array, prev_token: jax.Array, step: jax.Array,
                cache: list, *, config: ModelConfig, dtype=jnp.float32):
  """Logits of one token step for all agents at once, with a KV cache.

  Args:
    params: model parameters.
    context: from ``encode``.
    pose: float32 (B, A, 5) x, y, yaw, vel_x, vel_y at the start of the step.
    valid: bool (B, A) agents simulated at this step.
    prev_token: int32 (B, A) the previous token (V at step 0).
    step: int32 scalar, the token step.
    cache: from ``init_cache`` or the previous call.
    config: the model's config.
    dtype: the layers' compute dtype (as ``encode`` and ``init_cache``).

  Returns:
    ``(logits, cache)``: float32 (B, A, V) and the updated cache.
  """
  out, cache = _model(config, dtype).apply(
      {'params': params}, context, pose[:, :, None], valid[:, :, None],
      prev_token[:, :, None], step, cache, method=MotionLM.decode)
  return out[:, :, 0], cache


def count_params(params) -> int:
  """Number of scalar parameters."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
