"""Tests of the closed-loop rollout sampler."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign import rollout
from prefalign.data import synthetic
from prefalign.data import womd
from prefalign.model import features
from prefalign.model import motion_lm
from prefalign.model import tokenizer

# One worker runs the module: its tests share the module's scenes and
# model (a fixture built once per worker) and the samplers it compiles
# (cached below).
pytestmark = pytest.mark.xdist_group('rollout')

CONFIG = motion_lm.ModelConfig(width=32, num_heads=2, decoder_layers=2,
                               map_neighbours=8, agent_neighbours=4,
                               scene=features.SceneConfig(num_map_chunks=48))
R = 4


def scenes_and_model():
  """(state (2, 10, ...), scene, params): two synthetic scenes with
  N = 10 object rows and a small random model."""
  states = []
  for seed in (3, 4):
    scenario = synthetic.straight_road_scenario(
        f'r{seed}', seed=seed, num_vehicles=5, num_pedestrians=1,
        num_cyclists=1, with_traffic_light=True)
    states.append(womd.state_from_scenario(scenario, womd.ReaderConfig(
        max_num_objects=10, max_roadgraph_points=1500,
        max_traffic_lights=4)).state)
  state = datatypes.stack(states)
  scene = features.scene_from_state(state, CONFIG.scene)
  toks = tokenizer.tokenize(state.log_trajectory,
                            state.object_metadata.object_types,
                            CONFIG.tokenizer)
  params = motion_lm.init(jax.random.key(0), CONFIG, scene, toks)
  return state, scene, params


@pytest.fixture(scope='module')
def setup():
  return scenes_and_model()


@functools.cache
def _sampler(**sampling):
  return jax.jit(functools.partial(
      rollout.sample_rollouts, config=CONFIG, num_rollouts=R,
      sampling=rollout.SamplingConfig(**sampling)))


def test_shapes_validity_and_reproducibility(setup):
  state, scene, params = setup
  out = _sampler()(params, state, jax.random.key(1))
  b, a = scene.agent_valid.shape
  k = CONFIG.num_steps
  assert out.tokens.shape == (b, R, a, k)
  assert out.trajectory.x.shape == (b, R, a, 80)
  out.trajectory.validate()
  valid = np.asarray(scene.agent_valid)
  np.testing.assert_array_equal(np.asarray(out.valid),
                                np.broadcast_to(valid[:, None], (b, R, a)))
  assert np.all(np.asarray(out.trajectory.valid)[..., 0] ==
                np.asarray(out.valid))
  again = _sampler()(params, state, jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(again.tokens),
                                np.asarray(out.tokens))
  np.testing.assert_array_equal(np.asarray(again.trajectory.x),
                                np.asarray(out.trajectory.x))
  # Rollouts of one scenario differ from each other, and other keys differ.
  toks = np.asarray(out.tokens)
  assert not np.array_equal(toks[:, 0], toks[:, 1])
  other = _sampler()(params, state, jax.random.key(2))
  assert not np.array_equal(np.asarray(other.tokens), toks)
  # The first simulated state continues the logged current state.
  now = datatypes.CURRENT_TIME_INDEX
  log_x = np.asarray(state.log_trajectory.x)[..., now]
  step = np.asarray(out.trajectory.x)[..., 0] - log_x[:, None]
  assert np.all(np.abs(step[np.asarray(out.valid)]) < 3.0)


def test_log_probs_equal_teacher_forced_pass(setup):
  state, scene, params = setup
  out = _sampler()(params, state, jax.random.key(5))
  tf = jax.jit(functools.partial(motion_lm.log_probs, config=CONFIG))(
      params, rollout.tile(scene, R), rollout.as_tokens(out))
  sampled = np.asarray(out.log_probs).reshape(tf.shape)
  np.testing.assert_allclose(np.asarray(tf), sampled, atol=1e-4)
  assert np.all(sampled[np.asarray(rollout.as_tokens(out).valid)] < 0)


def test_zero_temperature_is_the_argmax_rollout(setup):
  state, _, params = setup
  greedy = _sampler(temperature=0.0)(params, state, jax.random.key(0))
  cold = _sampler(temperature=1e-6)(params, state, jax.random.key(9))
  np.testing.assert_array_equal(np.asarray(cold.tokens),
                                np.asarray(greedy.tokens))
  toks = np.asarray(greedy.tokens)
  np.testing.assert_array_equal(toks[:, 0], toks[:, 1])  # deterministic


def test_closed_loop_reads_simulated_states_not_the_log(setup):
  state, scene, params = setup
  sample = _sampler()
  base = sample(params, state, jax.random.key(0))
  # The log's future is never read: scrambling it changes nothing.
  now = datatypes.CURRENT_TIME_INDEX
  log = jax.tree.map(jnp.asarray, state.log_trajectory)
  scrambled = log.replace(
      x=log.x.at[..., now + 1:].add(37.0), y=log.y.at[..., now + 1:].add(-5.0))
  same = sample(params, state.replace(log_trajectory=scrambled),
                jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(same.tokens),
                                np.asarray(base.tokens))
  # The simulated state is read: with the same random stream, a different
  # current velocity of one agent changes that agent's later token
  # distributions and hence some of its later tokens.
  agent = int(np.argmax(np.asarray(scene.agent_valid)[0]))
  faster = log.replace(vel_x=log.vel_x.at[0, agent, now].add(6.0))
  moved = sample(params, state.replace(log_trajectory=faster),
                 jax.random.key(0))
  later = (0, slice(None), agent, slice(1, None))
  assert not np.allclose(np.asarray(moved.log_probs)[later],
                         np.asarray(base.log_probs)[later], atol=1e-3)
  assert not np.array_equal(np.asarray(moved.tokens)[later],
                            np.asarray(base.tokens)[later])


def test_sampler_compiles_once_per_shape(setup):
  state, _, params = setup

  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample(params, state, rng):
    return rollout.sample_rollouts(params, state, rng, config=CONFIG,
                                   num_rollouts=2)

  for seed in range(3):
    jax.block_until_ready(sample(params, state, jax.random.key(seed)).tokens)


def test_shared_jitted_sampler_compiles_once_however_it_is_called(setup):
  # Evaluation passes env, the collection sampling, the report neither:
  # all are one program (the stages share it instead of each compiling).
  state, _, params = setup
  before = rollout._sample_rollouts._cache_size()
  calls = (dict(), dict(sampling=rollout.SamplingConfig()), dict(env=None),
           dict(sampling=rollout.SamplingConfig(), env=None))
  outs = [rollout.sample_rollouts_jit(params, state, jax.random.key(0),
                                      config=CONFIG, num_rollouts=2, **kw)
          for kw in calls]
  assert rollout._sample_rollouts._cache_size() == before + 1
  for out in outs[1:]:
    np.testing.assert_array_equal(out.tokens, outs[0].tokens)
  direct = jax.jit(functools.partial(rollout.sample_rollouts, config=CONFIG,
                                     num_rollouts=2))(params, state,
                                                      jax.random.key(0))
  np.testing.assert_array_equal(direct.tokens, outs[0].tokens)


def test_bfloat16_sampler(setup):
  # The mixed-precision sampler: one program, float32 trajectories and log
  # probabilities, which are those of the bfloat16 teacher-forced pass of
  # its own tokens and close to the float32 pass.
  state, scene, params = setup
  sample = _sampler(dtype='bfloat16')
  out = sample(params, state, jax.random.key(5))
  sample(params, state, jax.random.key(6))
  assert sample._cache_size() == 1
  assert out.trajectory.x.dtype == jnp.float32
  assert out.log_probs.dtype == jnp.float32
  out.trajectory.validate()
  toks = rollout.as_tokens(out)
  lp = lambda dtype: np.asarray(jax.jit(functools.partial(
      motion_lm.log_probs, config=CONFIG, dtype=dtype))(
          params, rollout.tile(scene, R), toks))
  sampled = np.asarray(out.log_probs).reshape(lp(jnp.float32).shape)
  np.testing.assert_allclose(sampled, lp(jnp.bfloat16), atol=0.05)
  np.testing.assert_allclose(sampled, lp(jnp.float32), atol=0.2)
  valid = np.asarray(toks.valid)
  assert np.all(np.isfinite(sampled)) and np.all(sampled[valid] < 0)


def test_filter_logits():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  def keep(**kw):
    out = np.asarray(
        rollout.filter_logits(logits, rollout.SamplingConfig(**kw)))
    return np.isfinite(out) & (out > -1e30)

  np.testing.assert_array_equal(keep(top_k=2), [[True, True, False, False]])
  np.testing.assert_array_equal(keep(top_p=0.7), [[True, True, False, False]])
  np.testing.assert_array_equal(keep(top_p=0.5), [[True, False, False, False]])
  np.testing.assert_array_equal(keep(temperature=0.0),
                                [[True, False, False, False]])
  hot = jax.nn.softmax(rollout.filter_logits(
      logits, rollout.SamplingConfig(temperature=2.0)))
  assert float(hot[0, 0]) < 0.5


@pytest.mark.parametrize('field, value', [
    ('temperature', -1.0), ('top_k', -2), ('top_p', 0.0), ('top_p', 1.5),
    ('dtype', 'float16')])
def test_bad_sampling_values_are_named(field, value):
  with pytest.raises(ValueError, match=field):
    rollout.SamplingConfig(**{field: value})


def test_actor_in_the_simulator_reproduces_the_sampler(setup):
  from prefalign.sim import env
  state, _, params = setup
  one = jax.tree.map(lambda a: jnp.asarray(a)[:1], state)
  # The sampler splits rng into B * R streams, the actor into B: with one
  # scenario and one rollout they are the same stream.
  rng = jax.random.key(11)
  sampled = jax.jit(functools.partial(
      rollout.sample_rollouts, config=CONFIG, num_rollouts=1))(
          params, one, rng)
  actor = rollout.MotionLMActor(CONFIG)
  sim_state = jax.tree.map(lambda a: a[0], one)  # unbatched, as in Waymax

  @jax.jit
  def run(params, sim_state, key):
    actor_state = actor.init(key, sim_state)

    def body(carry, step_key):
      s, a = carry
      # A loop's per-step keys (Waymax splits one per step) do not matter.
      out = actor.select_action(params, s, a, step_key)
      s = env.step(s, out.action, is_controlled=out.is_controlled)
      return (s, out.actor_state), None

    (final, _), _ = jax.lax.scan(body, (sim_state, actor_state),
                                 jax.random.split(jax.random.key(99), 80))
    return final

  final = run(params, sim_state, rng)
  now = datatypes.CURRENT_TIME_INDEX
  valid = np.asarray(sampled.valid)[0, 0]
  np.testing.assert_allclose(
      np.asarray(final.sim_trajectory.x)[valid, now + 1:],
      np.asarray(sampled.trajectory.x)[0, 0][valid], atol=1e-4)
  np.testing.assert_allclose(
      np.asarray(final.sim_trajectory.y)[valid, now + 1:],
      np.asarray(sampled.trajectory.y)[0, 0][valid], atol=1e-4)


def test_the_sampler_runs_in_any_environment(setup):
  """The default (current step only) and the whole-state environment give
  the same rollouts; a wrong environment is refused up front."""
  from prefalign.sim import dynamics
  from prefalign.sim import env
  state, _, params = setup
  rng = jax.random.key(5)
  default = _sampler()(params, state, rng)
  whole = jax.jit(functools.partial(
      rollout.sample_rollouts, config=CONFIG, num_rollouts=R,
      env=env.StepEnvironment()))
  out = whole(params, state, rng)
  np.testing.assert_array_equal(np.asarray(out.tokens),
                                np.asarray(default.tokens))
  np.testing.assert_array_equal(np.asarray(out.trajectory.valid),
                                np.asarray(default.trajectory.valid))
  # Separately compiled programs may round the last float32 bit apart.
  for name in ('x', 'y', 'yaw', 'vel_x', 'vel_y'):
    np.testing.assert_allclose(
        np.asarray(getattr(out.trajectory, name)),
        np.asarray(getattr(default.trajectory, name)), atol=1e-4,
        err_msg=name)
  whole(params, state, jax.random.key(6))
  assert whole._cache_size() == 1
  assert isinstance(env.StepEnvironment(), env.Environment)
  assert isinstance(env.KinematicEnvironment(), env.Environment)

  other = env.StepEnvironment(env.EnvConfig(
      dynamics=dynamics.DynamicsConfig(min_heading_speed=2.0)))
  with pytest.raises(ValueError, match='tokenizer.dynamics'):
    rollout.sample_rollouts(params, state, rng, config=CONFIG, env=other)
  with pytest.raises(TypeError, match='lacks current'):
    rollout.sample_rollouts(params, state, rng, config=CONFIG,
                            env=object.__new__(type('E', (), {
                                'reset': None, 'step': None,
                                'dynamics': None})))
