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
import functools
from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import optax

from prefalign import datatypes
from prefalign import rollout
from prefalign.model import features
from prefalign.model import motion_lm
from prefalign.model import tokenizer
from prefalign.train import losses
from prefalign.train.state import TrainState

__all__ = ['OptimizerConfig', 'make_optimizer', 'model_inputs',
           'train_step', 'eval_step', 'token_counts', 'PreferenceConfig',
           'PreferenceBatch', 'PREFERENCE_LOSSES', 'preference_step',
           'preference_eval_step', 'policy_kl']

PREFERENCE_LOSSES = ('cpl', 'dpo', 'sft')


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


@functools.lru_cache(maxsize=32)
def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  """AdamW of ``config`` (global-norm clipping first when ``grad_clip``).

  Cached: equal configs give the same (stateless) transformation object. A
  TrainState holds it as pytree metadata, which jit's cache key compares, so
  a second run with the same config in one process (the comparison's
  methods, a resumed run in a notebook) reuses the compiled steps instead of
  compiling them again (10 s a run on 2 CPU cores for the tiny model).
  """
  parts = []
  if config.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip))
  parts.append(optax.adamw(learning_rate_schedule(config), b1=config.b1,
                           b2=config.b2, weight_decay=config.weight_decay))
  return optax.chain(*parts)


@functools.partial(jax.jit, static_argnames=('model_config',))
def model_inputs(batch: datatypes.SimulatorState,
                 model_config: motion_lm.ModelConfig):
  """(Scene, Tokens) of a batch of logged scenarios (no gradient).

  Jitted (``model_config`` static), so an eager call compiles once rather
  than dispatching its ~2,000 operations one by one.
  """
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
  return _apply(state, _loss, (scene, toks, model_config), optimizer_config)


def _apply(state: TrainState, loss_fn, args, optimizer_config):
  """One update on ``loss_fn(params, *args) -> (loss, sums)``: the new
  state and the metrics every step logs."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, sums), grads = grad_fn(state.params, *args)
  grad_norm = optax.tree.norm(grads)
  # A non-finite loss or gradient leaves the state as it was (the last good
  # one) and is reported as ``nonfinite`` = 1, for the loop to stop on.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.apply_gradients(grads)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                           updated, state)
  metrics = dict(sums)
  metrics.update(
      mean_loss=loss, grad_norm=grad_norm,
      param_norm=optax.tree.norm(new_state.params),
      learning_rate=learning_rate_schedule(optimizer_config)(state.step),
      nonfinite=1.0 - finite.astype(jnp.float32))
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


# ---------------------------------------------------------------------------
# Preference alignment.


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
  """The alignment objective (hashable: pass it static).

  Attributes:
    loss: 'cpl' (multi-agent Contrastive Preference Learning, DPA-OMF),
      'dpo' (against the frozen reference parameters) or 'sft' (maximum
      likelihood of the preferred rollouts only: the SFT-bestOA baseline).
    alpha: CPL's temperature on the rollout score.
    gamma: discount per token of the rollout score.
    agents: 'sum' or 'mean' over a rollout's valid agents.
    conservative: CPL's lambda on the unpreferred score (1: plain CPL).
    beta: DPO's KL strength.
    bc_weight: weight of the next-token loss on the logged demonstration
      (0: none).
  """
  loss: str = 'cpl'
  alpha: float = 0.1
  gamma: float = 1.0
  agents: str = 'mean'
  conservative: float = 1.0
  beta: float = 0.1
  bc_weight: float = 0.0

  def __post_init__(self):
    if self.loss not in PREFERENCE_LOSSES:
      raise ValueError(f'PreferenceConfig.loss={self.loss!r} is not one of '
                       f'{PREFERENCE_LOSSES}')
    if self.agents not in losses.AGENT_REDUCTIONS:
      raise ValueError(f'PreferenceConfig.agents={self.agents!r} is not one '
                       f'of {losses.AGENT_REDUCTIONS}')
    for name in ('alpha', 'beta'):
      if not getattr(self, name) > 0:
        raise ValueError(f'PreferenceConfig.{name} must be > 0, got '
                         f'{getattr(self, name)}')
    if not 0 < self.gamma <= 1:
      raise ValueError(f'PreferenceConfig.gamma must be in (0, 1], got '
                       f'{self.gamma}')
    if not 0 <= self.conservative <= 1:
      raise ValueError('PreferenceConfig.conservative must be in [0, 1], '
                       f'got {self.conservative}')
    if self.bc_weight < 0:
      raise ValueError(f'PreferenceConfig.bc_weight must be >= 0, got '
                       f'{self.bc_weight}')


@struct.dataclass
class PreferenceBatch:
  """Preference pairs of B scenarios, padded to U sequences and P pairs.

  Attributes:
    state: SimulatorState (B, ...), the logged scenarios.
    tokens: Tokens (B, U, A, K), the teacher-forcing inputs of each
      scenario's stored sequences (``preference.collection.sequence_tokens``).
    pairs: int32 (B, P, 2) (preferred, unpreferred) indices into U.
    pair_valid: bool (B, P) which pairs count (padding: False).
  """
  state: datatypes.SimulatorState
  tokens: tokenizer.Tokens
  pairs: jax.Array
  pair_valid: jax.Array


def _pick(x: jax.Array, index: jax.Array) -> jax.Array:
  """x (B, U, ...) rows at index (B, P) -> (B, P, ...)."""
  return jax.vmap(lambda a, i: a[i])(x, index)


def _preference_loss(params, reference, scene, batch: PreferenceBatch,
                     model_config, config: PreferenceConfig):
  toks = batch.tokens
  lp = motion_lm.sequence_log_probs(params, scene, toks, config=model_config)
  mask = motion_lm.sequence_token_mask(scene, toks)
  pos_i, neg_i = batch.pairs[..., 0], batch.pairs[..., 1]
  valid = batch.pair_valid
  # Per-token mean log-likelihood of each sequence (a logged diagnostic).
  tok_lp = losses.safe_mean(jnp.sum(lp, (-2, -1)), jnp.sum(mask, (-2, -1)))
  pos_mask = _pick(mask, pos_i) & valid[..., None, None]
  if config.loss == 'sft':
    count = jnp.sum(pos_mask)
    sums = {'loss': -jnp.sum(jnp.where(pos_mask, _pick(lp, pos_i), 0.0)),
            'count': count.astype(jnp.float32)}
    policy = losses.rollout_scores(lp, mask, gamma=config.gamma,
                                   agents=config.agents)
    sums['correct'] = jnp.sum((_pick(policy, pos_i) > _pick(policy, neg_i))
                              * valid)
    # 'count' is tokens here; pairs are counted apart for the accuracy.
  else:
    alpha = config.alpha if config.loss == 'cpl' else 1.0
    score = losses.rollout_scores(lp, mask, alpha=alpha, gamma=config.gamma,
                                  agents=config.agents)
    if config.loss == 'cpl':
      sums = losses.cpl_sums(_pick(score, pos_i), _pick(score, neg_i), valid,
                             conservative=config.conservative)
    else:
      ref_lp = jax.lax.stop_gradient(motion_lm.sequence_log_probs(
          reference, scene, toks, config=model_config))
      ref = losses.rollout_scores(ref_lp, mask, gamma=config.gamma,
                                  agents=config.agents)
      sums = losses.dpo_sums(_pick(score, pos_i), _pick(score, neg_i),
                             _pick(ref, pos_i), _pick(ref, neg_i), valid,
                             beta=config.beta)
  sums['pairs'] = jnp.sum(valid).astype(jnp.float32)
  sums['logp_preferred'] = jnp.sum(_pick(tok_lp, pos_i) * valid)
  sums['logp_unpreferred'] = jnp.sum(_pick(tok_lp, neg_i) * valid)
  loss = losses.safe_mean(sums['loss'], sums['count'])
  if config.bc_weight > 0:
    _, log_toks = model_inputs(batch.state, model_config)
    bc = losses.next_token_sums(
        motion_lm.logits(params, scene, log_toks, config=model_config),
        log_toks.tokens, motion_lm.token_mask(scene, log_toks))
    sums['bc_loss'] = bc['loss']
    sums['bc_count'] = bc['count']
    loss = loss + config.bc_weight * losses.safe_mean(bc['loss'],
                                                      bc['count'])
  return loss, sums


def preference_step(state: TrainState, batch: PreferenceBatch,
                    rng: jax.Array, reference: Any | None = None, *,
                    model_config: motion_lm.ModelConfig,
                    optimizer_config: OptimizerConfig,
                    preference_config: PreferenceConfig = PreferenceConfig()):
  """One AdamW step on the preference loss of a batch of pairs.

  The same state, optimiser, data-parallel wrapping (``parallel.jit_step``
  with ``reference`` as a replicated extra argument) and metrics contract as
  ``train_step``.

  Args:
    state: TrainState (the policy; alignment starts from the pre-trained
      parameters).
    batch: PreferenceBatch (B, ...).
    rng: unused (no dropout); kept for the common signature.
    reference: the frozen reference parameters ('dpo' only).
    model_config, optimizer_config: as ``train_step``.
    preference_config: the objective (static).

  Returns:
    ``(state, metrics)``: scalar sums ('loss', 'count' — pairs, or tokens
    for 'sft' —, 'correct' — pairs whose preferred rollout the policy scores
    higher —, 'pairs', 'logp_preferred' / 'logp_unpreferred' — sums over
    pairs of the per-token mean log-likelihood) plus 'mean_loss', the
    gradient / parameter norms and the learning rate.
  """
  del rng
  config = preference_config
  if config.loss == 'dpo' and reference is None:
    raise ValueError("PreferenceConfig.loss='dpo' needs the reference "
                     'parameters (the reference argument)')
  scene = jax.lax.stop_gradient(
      features.scene_from_state(batch.state, model_config.scene))
  return _apply(state, _preference_loss,
                (reference, scene, batch, model_config, config),
                optimizer_config)


def preference_eval_step(params, batch: PreferenceBatch, *,
                         model_config: motion_lm.ModelConfig,
                         preference_config: PreferenceConfig = (
                             PreferenceConfig())) -> dict[str, jax.Array]:
  """How the policy ranks held-out pairs (no gradient; any loss).

  Returns:
    scalar sums over valid pairs: 'pairs'; 'correct' (the policy's rollout
    score, ``losses.rollout_scores`` with the config's gamma and agent
    reduction, is higher for the preferred side: the pair classification
    accuracy's numerator, the same for every loss); 'margin' (score
    difference, alpha 1); 'logp_preferred' / 'logp_unpreferred' (per-token
    mean log-likelihoods).
  """
  config = preference_config
  scene = features.scene_from_state(batch.state, model_config.scene)
  lp = motion_lm.sequence_log_probs(params, scene, batch.tokens,
                                    config=model_config)
  mask = motion_lm.sequence_token_mask(scene, batch.tokens)
  score = losses.rollout_scores(lp, mask, gamma=config.gamma,
                                agents=config.agents)
  tok_lp = losses.safe_mean(jnp.sum(lp, (-2, -1)), jnp.sum(mask, (-2, -1)))
  pos_i, neg_i = batch.pairs[..., 0], batch.pairs[..., 1]
  valid = batch.pair_valid.astype(jnp.float32)
  margin = _pick(score, pos_i) - _pick(score, neg_i)
  return {'pairs': jnp.sum(valid), 'correct': jnp.sum((margin > 0) * valid),
          'margin': jnp.sum(margin * valid),
          'logp_preferred': jnp.sum(_pick(tok_lp, pos_i) * valid),
          'logp_unpreferred': jnp.sum(_pick(tok_lp, neg_i) * valid)}


def policy_kl(params, reference, state: datatypes.SimulatorState,
              rng: jax.Array, *, model_config: motion_lm.ModelConfig,
              num_rollouts: int = 8) -> dict[str, jax.Array]:
  """Monte-Carlo KL(policy || reference) on the policy's own rollouts.

  Samples ``num_rollouts`` joint rollouts of each scenario with the policy
  (temperature 1, unfiltered) and sums log pi(a) - log pi_ref(a) over their
  tokens: an unbiased estimate of the KL between the two joint rollout
  distributions, given the logged history.

  Args:
    params: the policy's parameters.
    reference: the reference model's parameters.
    state: SimulatorState (B, ...).
    rng: a key.
    model_config: the model's config (static).
    num_rollouts: R (static).

  Returns:
    scalar sums: 'kl' (over every rollout and token), 'rollouts' (B * R),
    'tokens' (tokens counted); 'kl' / 'rollouts' estimates the joint KL per
    scenario, 'kl' / 'tokens' the KL per agent token.
  """
  out = rollout.sample_rollouts(params, state, rng, config=model_config,
                                num_rollouts=num_rollouts)
  scene = features.scene_from_state(state, model_config.scene)
  b = out.tokens.shape[0]
  toks = jax.tree.map(lambda a: a.reshape((b, num_rollouts) + a.shape[1:]),
                      rollout.as_tokens(out))
  ref_lp = motion_lm.sequence_log_probs(reference, scene, toks,
                                        config=model_config)
  mask = motion_lm.sequence_token_mask(scene, toks)
  diff = jnp.where(mask, out.log_probs - ref_lp, 0.0)
  return {'kl': jnp.sum(diff),
          'rollouts': jnp.asarray(b * num_rollouts, jnp.float32),
          'tokens': jnp.sum(mask).astype(jnp.float32)}
