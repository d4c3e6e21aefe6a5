"""Pure training and evaluation steps of next-token pre-training.

``train_step(state, batch, rng, *, model_config) -> (state, metrics)`` sees
the global batch and contains no device logic; ``parallel.jit_step`` makes it
data-parallel once at the call site. The batch is a ``SimulatorState`` with
a leading batch axis: tokenization and scene features are computed inside
the step (they are cheap next to the model, and so the data pipeline stays
one format end to end).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from prefalign import datatypes
from prefalign.model import features
from prefalign.model import motion_lm
from prefalign.model import tokenizer
from prefalign.train import losses
from prefalign.train.state import TrainState

__all__ = ['OptimizerConfig', 'make_optimizer', 'model_inputs',
           'train_step', 'eval_step', 'token_counts']


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warm-up and cosine decay.

  Attributes:
    learning_rate: peak learning rate.
    warmup_steps: linear warm-up from 0.
    total_steps: steps of the schedule (cosine decay to ``final_fraction``
      of the peak at the end).
    final_fraction: learning rate at the end / peak.
    weight_decay: AdamW decoupled weight decay.
    grad_clip: global-norm clip (0: none).
    b1, b2: Adam moments.
  """
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  total_steps: int = 10_000
  final_fraction: float = 0.05
  weight_decay: float = 0.01
  grad_clip: float = 1.0
  b1: float = 0.9
  b2: float = 0.98


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate,
      warmup_steps=max(config.warmup_steps, 1),
      decay_steps=max(config.total_steps, config.warmup_steps + 1),
      end_value=config.learning_rate * config.final_fraction)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  parts = []
  if config.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip))
  parts.append(optax.adamw(learning_rate_schedule(config), b1=config.b1,
                           b2=config.b2, weight_decay=config.weight_decay))
  return optax.chain(*parts)


def model_inputs(batch: datatypes.SimulatorState,
                 model_config: motion_lm.ModelConfig):
  """(Scene, Tokens) of a batch of logged scenarios (no gradient)."""
  scene = features.scene_from_state(batch, model_config.scene)
  toks = tokenizer.tokenize(batch.log_trajectory,
                            batch.object_metadata.object_types,
                            model_config.tokenizer)
  return jax.lax.stop_gradient((scene, toks))


def _loss(params, scene, toks, model_config):
  out = motion_lm.logits(params, scene, toks, config=model_config)
  mask = motion_lm.token_mask(scene, toks)
  sums = losses.next_token_sums(out, toks.tokens, mask)
  return losses.safe_mean(sums['loss'], sums['count']), sums


def _norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def train_step(state: TrainState, batch: datatypes.SimulatorState,
               rng: jax.Array, *, model_config: motion_lm.ModelConfig,
               optimizer_config: OptimizerConfig):
  """One AdamW step on the mean next-token cross-entropy of the batch.

  Args:
    state: TrainState.
    batch: SimulatorState (B, ...), logged scenarios.
    rng: unused (the model has no dropout); kept so that every step has the
      same signature (the preference step shares it).
    model_config: the model.
    optimizer_config: for the logged learning rate.

  Returns:
    ``(state, metrics)``; metrics are scalar sums plus ``count`` (tokens),
    and the gradient / parameter norms and learning rate.
  """
  del rng
  scene, toks = model_inputs(batch, model_config)
  grad_fn = jax.value_and_grad(_loss, has_aux=True)
  (loss, sums), grads = grad_fn(state.params, scene, toks, model_config)
  new_state = state.apply_gradients(grads)
  metrics = dict(sums)
  metrics.update(
      mean_loss=loss, grad_norm=_norm(grads),
      param_norm=_norm(new_state.params),
      learning_rate=learning_rate_schedule(optimizer_config)(state.step))
  return new_state, metrics


def eval_step(params, batch: datatypes.SimulatorState,
              unigram: jax.Array, *,
              model_config: motion_lm.ModelConfig) -> dict[str, jax.Array]:
  """Held-out sums: model loss / accuracy and the unigram baseline's.

  Args:
    params: model parameters.
    batch: SimulatorState (B, ...).
    unigram: float32 (num_types, V) baseline log-probabilities.
    model_config: the model.

  Returns:
    Scalar sums: loss, correct, count, unigram_loss, unigram_correct.
  """
  scene, toks = model_inputs(batch, model_config)
  out = motion_lm.logits(params, scene, toks, config=model_config)
  mask = motion_lm.token_mask(scene, toks)
  sums = losses.next_token_sums(out, toks.tokens, mask)
  base = unigram[scene.agent_type][:, :, None, :]  # (B, A, 1, V)
  base = jnp.broadcast_to(base, out.shape)
  base_sums = losses.next_token_sums(base, toks.tokens, mask)
  sums['unigram_loss'] = base_sums['loss']
  sums['unigram_correct'] = base_sums['correct']
  return sums


def token_counts(batch: datatypes.SimulatorState,
                 model_config: motion_lm.ModelConfig) -> jax.Array:
  """float32 (num_types, V) counts of labelled expert tokens per type."""
  scene, toks = model_inputs(batch, model_config)
  mask = motion_lm.token_mask(scene, toks)
  types = jnp.broadcast_to(scene.agent_type[..., None], toks.tokens.shape)
  flat = types * model_config.vocab_size + toks.tokens
  num = len(datatypes.ObjectTypeIds) * model_config.vocab_size
  counts = jnp.zeros(num).at[flat.reshape(-1)].add(
      mask.reshape(-1).astype(jnp.float32))
  return counts.reshape(len(datatypes.ObjectTypeIds), -1)
