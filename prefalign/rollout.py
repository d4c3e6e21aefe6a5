"""The vectorised closed-loop rollout sampler.

``sample_rollouts`` runs entirely inside one ``jax.jit`` (callers jit it, or
use ``sample_rollouts_jit``, the one jitted copy the library's stages share,
so that a process compiles each setting and shape once): the scene is
encoded once per scenario, then a ``lax.scan`` over token steps carries
every rollout's environment state, the previous tokens, the KV cache and
the rng. At every step all agents of all rollouts are decoded jointly in
one call, a token is sampled per agent, and the environment steps its
10 Hz steps holding the token's acceleration (``sim.env.KinematicEnvironment``
by default; any ``sim.env.Environment``, Waymax's included through
``prefalign.integrations.waymax``); the *simulated* states feed the next
step (closed loop). The same function serves 32-rollout WOSAC evaluation
and 64-rollout preference collection::

  sample = jax.jit(functools.partial(rollout.sample_rollouts, config=config,
                                     num_rollouts=32))
  out = sample(params, states, jax.random.key(0))   # states: (B, ...) batch
  out.trajectory.x                                  # (B, 32, A, 80)

Batched over scenarios (the leading axis of ``state``) and rollouts, so it
shards over a ``'data'`` mesh axis like the training step.

WOSAC's rules for objects: every object valid at the current step is
simulated for all 80 steps (even where the log loses it); objects not valid
at the current step are not simulated and are invalid in the output.
"""

from __future__ import annotations

import dataclasses

from flax import struct
import jax
import jax.numpy as jnp

from prefalign import datatypes
from prefalign.model import features
from prefalign.model import motion_lm
from prefalign.model import tokenizer
from prefalign.sim import dynamics as dynamics_lib
from prefalign.sim import env as sim_env

__all__ = ['Rollouts', 'SamplingConfig', 'sample_rollouts',
           'sample_rollouts_jit', 'filter_logits',
           'sample_tokens', 'as_tokens', 'replay_tokens',
           'tile', 'to_metric_trajectory', 'MotionLMActor', 'ActorState',
           'ActorOutput']

_NOW = datatypes.CURRENT_TIME_INDEX


@struct.dataclass
class Rollouts:
  """Sampled joint rollouts.

  With B scenarios, R rollouts, A agents, K token steps and T = K *
  steps_per_token simulated steps (80):

  Attributes:
    tokens: int32 (B, R, A, K) sampled tokens.
    log_probs: float32 (B, R, A, K) log p(token) under the model itself
      (temperature 1, no filtering), 0 for agents not simulated; equal to
      ``motion_lm.log_probs`` of a teacher-forced pass on ``as_tokens``.
    trajectory: Trajectory (B, R, A, T) at steps 11..90: x, y, yaw, vel_x,
      vel_y simulated; z, length, width, height held from the current step;
      valid = simulated.
    start_pose: Pose (B, R, A, K) the state each token started from.
    valid: bool (B, R, A) simulated agents (valid at the current step).
  """
  tokens: jax.Array
  log_probs: jax.Array
  trajectory: datatypes.Trajectory
  start_pose: tokenizer.Pose
  valid: jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How a token is drawn from the model's logits (evaluation, collection,
  the Waymax actor: every sampler takes one), and the precision of the model
  calls that give them.

  Attributes:
    temperature: > 0 divides the logits; 0 puts all mass on the argmax.
    top_k: keep the k most likely tokens (0: all).
    top_p: keep the smallest set of most likely tokens whose mass reaches
      top_p (1: all).
    dtype: the model's compute dtype while sampling, ``'float32'`` or
      ``'bfloat16'`` (mixed precision: float32 parameters, poses, simulator
      state, attention softmax and logits; bfloat16 matrix products, KV
      cache and residual stream). BENCHMARKS.md "The bfloat16 sampler"
      measures its realism difference.
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  dtype: str = 'float32'

  def __post_init__(self):
    if not self.temperature >= 0:
      raise ValueError(f'temperature must be >= 0, got {self.temperature}')
    if self.top_k < 0:
      raise ValueError(f'top_k must be >= 0 (0: all), got {self.top_k}')
    if not 0 < self.top_p <= 1:
      raise ValueError(f'top_p must be in (0, 1], got {self.top_p}')
    if self.dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got "
                       f'{self.dtype!r}')


def filter_logits(logits: jax.Array,
                  config: SamplingConfig = SamplingConfig()) -> jax.Array:
  """Logits of the sampling distribution.

  Args:
    logits: float32 (..., V).
    config: temperature, top-k and top-p.

  Returns:
    float32 (..., V), -inf outside the kept set.
  """
  temperature, top_k, top_p = config.temperature, config.top_k, config.top_p
  neg = jnp.finfo(logits.dtype).min
  if temperature == 0:
    best = jnp.argmax(logits, axis=-1)
    return jnp.where(jax.nn.one_hot(best, logits.shape[-1], dtype=bool), 0.0,
                     neg)
  logits = logits / temperature
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits >= kth, logits, neg)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the mass before it is below top_p (so the first is
    # always kept).
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = before < top_p
    inverse = jnp.argsort(order, axis=-1)
    keep = jnp.take_along_axis(keep_sorted, inverse, axis=-1)
    logits = jnp.where(keep, logits, neg)
  return logits


def sample_tokens(logits: jax.Array, keys: jax.Array, k: jax.Array,
                  valid: jax.Array,
                  config: SamplingConfig = SamplingConfig()) -> jax.Array:
  """One token per agent: the sampler's and the actor's draw.

  Args:
    logits: float32 (B, A, V) of token step ``k``.
    keys: (B,) one key per row (a rollout's stream).
    k: int token step; row b draws with ``fold_in(keys[b], k)``.
    valid: bool (B, A) agents that get a token.
    config: the sampling distribution (``filter_logits``).

  Returns:
    int32 (B, A) tokens; 0 where not valid.
  """
  step_keys = jax.vmap(lambda key: jax.random.fold_in(key, k))(keys)
  token = jax.vmap(jax.random.categorical)(step_keys,
                                           filter_logits(logits, config))
  return jnp.where(valid, token, 0).astype(jnp.int32)


def tile(tree, num: int):
  """Repeats every leaf ``num`` times along axis 0: (B, ...) -> (B*num, ...).

  Rows ``b*num .. b*num + num - 1`` are copies of row b.
  """
  return jax.tree.map(lambda a: jnp.repeat(a, num, axis=0), tree)


def _split(tree, batch: int, num: int):
  """(B*R, ...) -> (B, R, ...)."""
  return jax.tree.map(lambda a: a.reshape(batch, num, *a.shape[1:]), tree)


def _start_pose(state: datatypes.SimulatorState
                ) -> tuple[tokenizer.Pose, jax.Array]:
  """(Pose (..., N) at the current step, zero where not simulated; (..., N)
  simulated rows)."""
  now = jax.tree.map(lambda a: a[..., _NOW], state.log_trajectory)
  sim = state.object_metadata.is_valid & now.valid
  pose = tokenizer.Pose(x=now.x, y=now.y, yaw=now.yaw, vel_x=now.vel_x,
                        vel_y=now.vel_y)
  return jax.tree.map(lambda a: jnp.where(sim, a, 0.0), pose), sim


def _check_env(env: sim_env.Environment | None,
               tok: tokenizer.TokenizerConfig) -> sim_env.Environment:
  """The sampler's environment: the default, or ``env`` checked."""
  if env is None:
    return sim_env.KinematicEnvironment(
        sim_env.EnvConfig(dynamics=tok.dynamics))
  missing = [m for m in ('reset', 'step', 'current', 'dynamics')
             if not hasattr(env, m)]
  if missing:
    raise TypeError(f'env={env!r} is not a sim.env.Environment: it lacks '
                    f'{", ".join(missing)}.')
  if env.dynamics != tok.dynamics:
    raise ValueError(
        f'env integrates actions with {env.dynamics}, but the model\'s tokens '
        f'are accelerations of {tok.dynamics} (config.tokenizer.dynamics); '
        'build the environment with the model\'s dynamics.')
  return env


@jax.named_scope('rollout.sample_rollouts')
def sample_rollouts(params, state: datatypes.SimulatorState, rng: jax.Array,
                    *, config: motion_lm.ModelConfig, num_rollouts: int = 32,
                    sampling: SamplingConfig = SamplingConfig(),
                    env: sim_env.Environment | None = None) -> Rollouts:
  """Samples closed-loop joint rollouts of every scenario of a batch.

  Args:
    params: model parameters.
    state: SimulatorState (B, ...) at its current step (index 10; the log's
      history up to it is what the model sees).
    rng: a key; rollouts of one call use independent streams of it.
    config: the model's config (static).
    num_rollouts: R, rollouts per scenario (static).
    sampling: how tokens are drawn (static); see ``filter_logits``.
    env: the simulator the rollouts run in (static), a
      ``sim.env.Environment``: by default ``sim.env.KinematicEnvironment``
      with the model's dynamics; ``sim.env.StepEnvironment`` carries the
      whole simulator state, and
      ``prefalign.integrations.waymax.WaymaxEnvironment`` runs this same
      function inside Waymax. Its ``dynamics`` must be the model's.

  Returns:
    ``Rollouts`` with shapes (B, R, ...).
  """
  tok = config.tokenizer
  env = _check_env(env, tok)
  batch = state.shape[0] if state.shape else 1
  scene = features.scene_from_state(state, config.scene)
  dtype = sampling.dtype
  context = motion_lm.encode(params, scene, config=config, dtype=dtype)
  context = tile(context, num_rollouts)
  types = tile(scene.agent_type, num_rollouts)
  valid = tile(scene.agent_valid, num_rollouts)  # (BR, A)
  now = jax.tree.map(lambda a: a[..., _NOW], state.log_trajectory)
  env_state = tile(env.reset(state), num_rollouts)
  num_rows = batch * num_rollouts
  num_agents = valid.shape[-1]
  cache = motion_lm.init_cache(config, num_rows, num_agents, dtype)
  # One independent stream per (scenario, rollout).
  keys = jax.random.split(rng, num_rows)

  def pose_of(env_state) -> tokenizer.Pose:
    # Rows not simulated read as zeros, whatever the environment keeps.
    pose = tokenizer.Pose.from_trajectory(env.current(env_state))
    return jax.tree.map(lambda a: jnp.where(valid, a, 0.0), pose)

  def body(carry, k):
    env_state, prev, cache = carry
    pose = pose_of(env_state)
    pose_arr = jnp.stack([pose.x, pose.y, pose.yaw, pose.vel_x, pose.vel_y],
                         -1)
    logits, cache = motion_lm.decode_step(params, context, pose_arr, valid,
                                          prev, k, cache, config=config,
                                          dtype=dtype)
    token = sample_tokens(logits, keys, k, valid, sampling)
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1),
                             token[..., None], -1)[..., 0]
    lp = jnp.where(valid, lp, 0.0)
    action = dynamics_lib.Action(
        data=tokenizer.token_actions(token, types, tok),
        valid=valid[..., None])
    path = []
    for _ in range(tok.steps_per_token):  # the token is held
      env_state = env.step(env_state, action)
      path.append(pose_of(env_state))
    path = jax.tree.map(lambda *a: jnp.stack(a, -1), *path)
    prev = jnp.where(valid, token, config.vocab_size)
    return (env_state, prev, cache), (token, lp, path, pose)

  prev0 = jnp.full(valid.shape, config.vocab_size, jnp.int32)
  _, (tokens, lps, paths, starts) = jax.lax.scan(
      body, (env_state, prev0, cache), jnp.arange(config.num_steps))
  # (K, BR, A, ...) -> (BR, A, K, ...).
  tokens = jnp.moveaxis(tokens, 0, -1)
  lps = jnp.moveaxis(lps, 0, -1)
  starts = jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), starts)
  paths = jax.tree.map(
      lambda a: jnp.moveaxis(a, 0, -2).reshape(*a.shape[1:-1], -1), paths)

  num_t = config.num_steps * tok.steps_per_token
  held = lambda a: jnp.broadcast_to(tile(a, num_rollouts)[..., None],
                                    (num_rows, num_agents, num_t))
  sim_valid = jnp.broadcast_to(valid[..., None], held(now.x).shape)
  stamps = state.log_trajectory.timestamp_micros[..., _NOW + 1:_NOW + 1 +
                                                 num_t]
  traj = datatypes.Trajectory(
      x=paths.x, y=paths.y, z=held(now.z), vel_x=paths.vel_x,
      vel_y=paths.vel_y, yaw=paths.yaw, valid=sim_valid,
      timestamp_micros=tile(stamps, num_rollouts),
      length=held(now.length), width=held(now.width),
      height=held(now.height)).fill_invalid()
  return Rollouts(tokens=_split(tokens, batch, num_rollouts),
                  log_probs=_split(lps, batch, num_rollouts),
                  trajectory=_split(traj, batch, num_rollouts),
                  start_pose=_split(starts, batch, num_rollouts),
                  valid=_split(valid, batch, num_rollouts))


_sample_rollouts = jax.jit(
    sample_rollouts,
    static_argnames=('config', 'num_rollouts', 'sampling', 'env'))


def sample_rollouts_jit(params, state: datatypes.SimulatorState,
                        rng: jax.Array, *, config: motion_lm.ModelConfig,
                        num_rollouts: int = 32,
                        sampling: SamplingConfig = SamplingConfig(),
                        env: sim_env.Environment | None = None) -> Rollouts:
  """``sample_rollouts`` compiled: the one jitted copy the stages share.

  Every static argument is passed on explicitly (jit keys its cache on the
  keywords given, not on their values after defaults), so evaluation,
  collection and the report compile one program per (config, num_rollouts,
  sampling, env) and input shape in a process, whichever asks first.
  Arguments and shapes as ``sample_rollouts``.
  """
  return _sample_rollouts(params, state, rng, config=config,
                          num_rollouts=num_rollouts, sampling=sampling,
                          env=env)


def as_tokens(rollouts: Rollouts) -> tokenizer.Tokens:
  """Teacher-forcing inputs of the rollouts, flattened to (B*R, A, K).

  ``motion_lm.log_probs(params, tile(scene, R), as_tokens(r))`` scores the
  sampled tokens (equal to ``r.log_probs`` reshaped).
  """
  flat = lambda a: a.reshape(-1, *a.shape[2:])
  tokens = flat(rollouts.tokens)
  start = jax.tree.map(flat, rollouts.start_pose)
  valid = jnp.broadcast_to(flat(rollouts.valid)[..., None], tokens.shape)
  recon = jax.tree.map(flat, tokenizer.Pose(
      x=rollouts.trajectory.x, y=rollouts.trajectory.y,
      yaw=rollouts.trajectory.yaw, vel_x=rollouts.trajectory.vel_x,
      vel_y=rollouts.trajectory.vel_y))
  return tokenizer.Tokens(tokens=tokens, valid=valid, reconstruction=recon,
                          recon_valid=flat(rollouts.trajectory.valid),
                          start_pose=start, start_valid=valid)


def replay_tokens(state: datatypes.SimulatorState, token_ids: jax.Array,
                  config: motion_lm.ModelConfig) -> tokenizer.Tokens:
  """Teacher-forcing inputs of sampled token ids, rebuilt from the log.

  The sampler's rollouts are determined by the scenario's current state and
  their token ids, so stored ids (preference data) replay to what
  ``as_tokens`` gives for the same rollouts.

  Args:
    state: SimulatorState (..., N, 91) the rollouts started from.
    token_ids: int (..., R, N, K) token ids; rows not simulated are ignored.
    config: the model's config.

  Returns:
    Tokens (..., R, N, K), valid for the simulated rows at every step.
  """
  tok = config.tokenizer
  pose0, sim = _start_pose(state)  # (..., N)
  reps = token_ids.shape[-3]
  pose0 = jax.tree.map(
      lambda a: jnp.broadcast_to(a[..., None, :], a.shape[:-1] + (reps,) +
                                 a.shape[-1:]), pose0)
  types = jnp.broadcast_to(state.object_metadata.object_types[..., None, :],
                           pose0.x.shape)
  ids = token_ids.astype(jnp.int32)
  recon = tokenizer.detokenize(pose0, ids, types, tok)
  steps = tok.steps_per_token
  valid = jnp.broadcast_to(sim[..., None, :, None], ids.shape)
  # Rows not simulated start every token at zeros, as the sampler reads them.
  start = jax.tree.map(
      lambda p0, r: jnp.where(valid, jnp.concatenate(
          [p0[..., None], r[..., steps - 1:-1:steps]], axis=-1), 0.0),
      pose0, recon)
  return tokenizer.Tokens(
      tokens=jnp.where(valid, ids, 0), valid=valid, reconstruction=recon,
      recon_valid=jnp.broadcast_to(sim[..., None, :, None], recon.x.shape),
      start_pose=start, start_valid=valid)


def to_metric_trajectory(rollouts: Rollouts) -> datatypes.Trajectory:
  """Rollouts as the WOSAC metric takes them: (B, R, A, 80), every row valid.

  Objects that are not simulated are parked far apart
  (``datatypes.park_invalid``) where they touch nothing, as
  ``metrics.wosac.log_rollouts`` does.
  """
  t = datatypes.park_invalid(rollouts.trajectory)
  return t.replace(valid=jnp.ones_like(t.valid))


# ---------------------------------------------------------------------------
# Waymax's actor interface.


@struct.dataclass
class ActorState:
  """What the actor carries between simulator steps (batch prefix (B,)).

  Attributes:
    cache: the decoder's KV cache.
    token: int32 (B, A) the token being held.
    prev: int32 (B, A) the token before it (V at the start).
    valid: bool (B, A) the agents it drives (valid at the current step).
    key: the key ``init`` was given; tokens are drawn from it.
  """
  cache: list
  token: jax.Array
  prev: jax.Array
  valid: jax.Array
  key: jax.Array


@struct.dataclass
class ActorOutput:
  """Waymax's ``WaymaxActorOutput``: the new actor state, the action and
  the objects it controls (bool (..., num_objects))."""
  actor_state: ActorState
  action: dynamics_lib.Action
  is_controlled: jax.Array


class MotionLMActor:
  """The model as a Waymax-style actor: ``init`` and ``select_action``.

  Every ``steps_per_token`` simulator steps (from the current step, 10) it
  decodes one token per agent from the *simulated* state, then holds that
  token's acceleration; between tokens it only looks the action up. It
  drives the agents valid at the current step (WOSAC's sim agents).

  Tokens are drawn from the key given to ``init`` (folded with the token
  index, as ``sample_rollouts`` folds its per-rollout key), not from the
  per-step keys a rollout loop hands ``select_action``: so a rollout of
  ``sim.env.step(state, out.action, is_controlled=out.is_controlled)``, or
  of Waymax's ``env.rollout`` through ``prefalign.integrations.waymax``,
  reproduces ``sample_rollouts(..., num_rollouts=1)`` with that key step
  for step. Works on unbatched or (B,)-batched states.

  Args:
    config: the model's config.
    sampling: how tokens are drawn (see ``filter_logits``).
  """

  def __init__(self, config: motion_lm.ModelConfig, *,
               sampling: SamplingConfig = SamplingConfig()):
    self.config = config
    self.sampling = sampling

  @staticmethod
  def _batched(state):
    return jax.tree.map(lambda a: a[None], state) if not state.shape else state

  def init(self, rng: jax.Array, state: datatypes.SimulatorState
           ) -> ActorState:
    batched = self._batched(state)
    valid = batched.log_trajectory.valid[..., _NOW]
    b, a = valid.shape
    return ActorState(
        cache=motion_lm.init_cache(self.config, b, a, self.sampling.dtype),
        token=jnp.zeros((b, a), jnp.int32),
        prev=jnp.full((b, a), self.config.vocab_size, jnp.int32),
        valid=valid, key=rng)

  def select_action(self, params, state: datatypes.SimulatorState,
                    actor_state: ActorState, rng: jax.Array) -> ActorOutput:
    """The action at ``state.timestep``.

    ``rng`` is not used: tokens come from ``actor_state.key`` (see the class
    docstring), so that the rollout does not depend on how a loop splits its
    keys.
    """
    del rng
    config = self.config
    tok = config.tokenizer
    unbatched = not state.shape
    batched = self._batched(state)
    t = jnp.reshape(batched.timestep, (-1,))[0] - _NOW
    k = t // tok.steps_per_token
    cur = jax.tree.map(lambda a: a[..., 0], batched.current_sim_trajectory)
    valid = actor_state.valid

    def decode(s: ActorState) -> ActorState:
      scene = features.scene_from_state(batched, config.scene)
      dtype = self.sampling.dtype
      context = motion_lm.encode(params, scene, config=config, dtype=dtype)
      pose = jnp.stack([cur.x, cur.y, cur.yaw, cur.vel_x, cur.vel_y], -1)
      pose = jnp.where(valid[..., None], pose, 0.0)
      prev = jnp.where((k > 0) & valid, s.token, config.vocab_size)
      logits, cache = motion_lm.decode_step(params, context, pose, valid,
                                            prev, k, s.cache, config=config,
                                            dtype=dtype)
      keys = jax.random.split(s.key, valid.shape[0])
      token = sample_tokens(logits, keys, k, valid, self.sampling)
      return s.replace(cache=cache, token=token, prev=prev)

    boundary = (t % tok.steps_per_token == 0) & (t >= 0)
    new = jax.lax.cond(boundary, decode, lambda s: s, actor_state)
    types = batched.object_metadata.object_types
    action = tokenizer.token_actions(new.token, types, tok)
    out_action = dynamics_lib.Action(data=action, valid=valid[..., None])
    controlled = valid
    if unbatched:
      out_action = jax.tree.map(lambda a: a[0], out_action)
      controlled = controlled[0]
    return ActorOutput(actor_state=new, action=out_action,
                       is_controlled=controlled)
