"""Tests of the motion-token model's required properties."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prefalign import datatypes
from prefalign.data import synthetic
from prefalign.data import womd
from prefalign.model import features
from prefalign.model import motion_lm
from prefalign.model import tokenizer

# One worker runs the module: its tests share the module's scenes and
# model (a fixture built once per worker) and the programs they compile.
pytestmark = pytest.mark.xdist_group('model_motion_lm')

CONFIG = motion_lm.ModelConfig()
# A small model for the property tests (the properties do not depend on size).
SMALL = motion_lm.ModelConfig(width=32, num_heads=2, decoder_layers=2,
                              map_neighbours=8, agent_neighbours=4,
                              scene=features.SceneConfig(num_map_chunks=48))


def _states(num_objects=12, seeds=(0, 1)):
  out = []
  for seed in seeds:
    scenario = synthetic.straight_road_scenario(
        f's{seed}', seed=seed, num_vehicles=6, num_pedestrians=2,
        num_cyclists=1, with_traffic_light=True)
    out.append(womd.state_from_scenario(
        scenario, womd.ReaderConfig(max_num_objects=num_objects,
                                    max_roadgraph_points=1500,
                                    max_traffic_lights=4)).state)
  state = datatypes.stack(out)
  # The procedural road is exactly straight and symmetric: jitter its
  # points by a few centimetres so that no two map chunks are exactly as far
  # from an agent (a tie would be broken differently after a rotation).
  rg = state.roadgraph_points
  jitter = np.random.default_rng(0).normal(0.0, 0.05, (2,) + rg.x.shape)
  return state.replace(roadgraph_points=rg.replace(
      x=np.where(rg.valid, rg.x + jitter[0], rg.x).astype(np.float32),
      y=np.where(rg.valid, rg.y + jitter[1], rg.y).astype(np.float32)))


def _inputs(state, config):
  scene = features.scene_from_state(state, config.scene)
  toks = tokenizer.tokenize(state.log_trajectory,
                            state.object_metadata.object_types,
                            config.tokenizer)
  return scene, toks


def _transform(state, angle, shift):
  """The state under a rigid rotation by ``angle`` and a translation."""
  c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
  rot = lambda x, y: (c * x - s * y, s * x + c * y)

  def move_traj(t):
    x, y = rot(t.x, t.y)
    vx, vy = rot(t.vel_x, t.vel_y)
    moved = t.replace(x=x + np.float32(shift[0]), y=y + np.float32(shift[1]),
                      vel_x=vx, vel_y=vy, yaw=t.yaw + np.float32(angle))
    return moved.fill_invalid()

  rg = state.roadgraph_points
  x, y = rot(rg.x, rg.y)
  dx, dy = rot(rg.dir_x, rg.dir_y)
  rg = rg.replace(x=jnp.where(rg.valid, x + shift[0], -1),
                  y=jnp.where(rg.valid, y + shift[1], -1),
                  dir_x=jnp.where(rg.valid, dx, -1),
                  dir_y=jnp.where(rg.valid, dy, -1))
  tl = state.log_traffic_light
  lx, ly = rot(tl.x, tl.y)
  tl = tl.replace(x=jnp.where(tl.valid, lx + shift[0], -1),
                  y=jnp.where(tl.valid, ly + shift[1], -1))
  return state.replace(log_trajectory=move_traj(state.log_trajectory),
                       sim_trajectory=move_traj(state.sim_trajectory),
                       roadgraph_points=rg, log_traffic_light=tl)


@pytest.fixture(scope='module')
def setup():
  state = _states()
  scene, toks = _inputs(state, SMALL)
  params = motion_lm.init(jax.random.key(0), SMALL, scene, toks)
  return state, scene, toks, params


def _logits(params, scene, toks, config=SMALL):
  return jax.jit(lambda p, s, t: motion_lm.logits(p, s, t, config=config))(
      params, scene, toks)


def test_default_model_has_about_one_million_parameters():
  state = _states(num_objects=8, seeds=(0,))
  scene, toks = _inputs(state, CONFIG)
  shapes = jax.eval_shape(
      lambda: motion_lm.init(jax.random.key(0), CONFIG, scene, toks))
  count = motion_lm.count_params(shapes)
  print(f'default MotionLM parameters: {count:,}')
  assert 0.9e6 <= count <= 1.1e6


def test_wider_config_changes_only_sizes():
  wide = motion_lm.ModelConfig(width=192, num_heads=6, decoder_layers=4)
  state = _states(num_objects=8, seeds=(0,))
  scene, toks = _inputs(state, wide)
  shapes = jax.eval_shape(
      lambda: motion_lm.init(jax.random.key(0), wide, scene, toks))
  assert motion_lm.count_params(shapes) > 2.5e6


def test_bad_config_is_rejected():
  with pytest.raises(ValueError, match='width=30 is not divisible'):
    motion_lm.ModelConfig(width=30, num_heads=4)
  with pytest.raises(ValueError, match='decoder_layers'):
    motion_lm.ModelConfig(decoder_layers=0)


def test_log_probs_shape_mask_and_normalisation(setup):
  _, scene, toks, params = setup
  lp = jax.jit(lambda p, s, t: motion_lm.log_probs(p, s, t, config=SMALL))(
      params, scene, toks)
  mask = motion_lm.token_mask(scene, toks)
  assert lp.shape == toks.tokens.shape == mask.shape
  assert int(mask.sum()) > 0
  assert np.all(np.asarray(lp)[~np.asarray(mask)] == 0)
  assert np.all(np.asarray(lp)[np.asarray(mask)] < 0)
  probs = jax.nn.softmax(_logits(params, scene, toks), -1)
  np.testing.assert_allclose(np.asarray(probs.sum(-1)), 1.0, atol=1e-5)


def test_sequence_log_probs_share_one_encoding(setup):
  """U sequences per scene (encoded once) == each scored on its own."""
  _, scene, toks, params = setup
  rng = np.random.default_rng(0)
  other = toks.replace(tokens=jnp.asarray(
      rng.integers(0, SMALL.vocab_size, toks.tokens.shape), jnp.int32))
  seqs = jax.tree.map(lambda a, b: jnp.stack([a, b, a], 1), toks, other)
  lp = jax.jit(lambda p, s, t: motion_lm.sequence_log_probs(
      p, s, t, config=SMALL))(params, scene, seqs)
  assert lp.shape == (2, 3) + toks.tokens.shape[1:]
  one = jax.jit(lambda p, s, t: motion_lm.log_probs(p, s, t, config=SMALL))
  np.testing.assert_allclose(lp[:, 0], one(params, scene, toks), atol=1e-5)
  np.testing.assert_allclose(lp[:, 1], one(params, scene, other), atol=1e-5)
  np.testing.assert_allclose(lp[:, 2], lp[:, 0], atol=1e-6)


@pytest.mark.parametrize('angle, shift, atol', [
    (2.1, (-35.0, 12.5), 1e-4),
    (-0.7, (8.25, -3.5), 1e-4),
    # Float32 keeps ~1e-4 m at 1e3 m from the origin: the same up to that.
    (1.3, (-350.0, 1234.5), 1e-3),
])
def test_invariant_to_rigid_motion_of_the_scene(setup, angle, shift, atol):
  state, scene, toks, params = setup
  ref = _logits(params, scene, toks)
  mask = np.asarray(motion_lm.token_mask(scene, toks))
  moved = _transform(state, angle=angle, shift=shift)
  scene2, toks2 = _inputs(moved, SMALL)
  np.testing.assert_array_equal(np.asarray(toks2.tokens)[mask],
                                np.asarray(toks.tokens)[mask])
  out = _logits(params, scene2, toks2)
  np.testing.assert_allclose(np.asarray(out)[mask], np.asarray(ref)[mask],
                             atol=atol)


def test_agents_are_permutation_equivariant(setup):
  state, scene, toks, params = setup
  ref = np.asarray(_logits(params, scene, toks))
  perm = np.random.default_rng(0).permutation(state.num_objects)
  permuted = state.replace(
      log_trajectory=jax.tree.map(lambda a: a[:, perm],
                                  state.log_trajectory),
      sim_trajectory=jax.tree.map(lambda a: a[:, perm],
                                  state.sim_trajectory),
      object_metadata=jax.tree.map(lambda a: a[:, perm],
                                   state.object_metadata))
  scene2, toks2 = _inputs(permuted, SMALL)
  out = np.asarray(_logits(params, scene2, toks2))
  # Row i of the permuted scene is row perm[i] of the original.
  mask = np.asarray(motion_lm.token_mask(scene, toks))[:, perm]
  assert mask.any()
  np.testing.assert_allclose(out[mask], ref[:, perm][mask], atol=1e-4)


def test_invalid_agents_never_affect_valid_ones(setup):
  state, scene, toks, params = setup
  ref = np.asarray(_logits(params, scene, toks))
  mask = np.asarray(motion_lm.token_mask(scene, toks))
  invalid = ~np.asarray(scene.agent_valid)
  assert invalid.any()
  rng = np.random.default_rng(1)
  # Garbage in every per-agent field of the invalid agents.
  noisy_scene = scene.replace(
      agent_pose=jnp.where(invalid[..., None],
                           rng.normal(size=scene.agent_pose.shape) * 50,
                           scene.agent_pose),
      agent_history=jnp.where(invalid[..., None, None],
                              rng.normal(size=scene.agent_history.shape),
                              scene.agent_history),
      agent_attr=jnp.where(invalid[..., None],
                           rng.normal(size=scene.agent_attr.shape),
                           scene.agent_attr))
  start = jax.tree.map(
      lambda a: jnp.where(invalid[..., None], rng.normal(size=a.shape) * 30,
                          a), toks.start_pose)
  noisy_toks = toks.replace(
      start_pose=start,
      tokens=jnp.where(invalid[..., None],
                       rng.integers(0, SMALL.vocab_size, toks.tokens.shape),
                       toks.tokens).astype(jnp.int32))
  out = np.asarray(_logits(params, noisy_scene, noisy_toks))
  np.testing.assert_allclose(out[mask], ref[mask], atol=1e-5)


def test_cached_decoding_equals_teacher_forcing(setup):
  _, scene, toks, params = setup
  ref = np.asarray(_logits(params, scene, toks))
  context = jax.jit(lambda p, s: motion_lm.encode(p, s, config=SMALL))(
      params, scene)
  pose = jnp.stack([toks.start_pose.x, toks.start_pose.y,
                    toks.start_pose.yaw, toks.start_pose.vel_x,
                    toks.start_pose.vel_y], -1)
  prev = motion_lm.previous_tokens(toks, SMALL.vocab_size)
  batch, agents, steps = toks.tokens.shape
  cache = motion_lm.init_cache(SMALL, batch, agents)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step_fn(params, context, pose, valid, prev, step, cache):
    return motion_lm.decode_step(params, context, pose, valid, prev, step,
                                 cache, config=SMALL)

  mask = np.asarray(motion_lm.token_mask(scene, toks))
  for k in range(steps):
    valid = toks.start_valid[..., k]
    out, cache = step_fn(params, context,
                         jnp.where(valid[..., None], pose[:, :, k], 0.0),
                         valid, prev[..., k], jnp.int32(k), cache)
    np.testing.assert_allclose(np.asarray(out)[mask[..., k]],
                               ref[..., k, :][mask[..., k]], atol=1e-4)


def test_bfloat16_calls_keep_float32_params_poses_and_logits(setup):
  # Mixed precision is per call: the same float32 parameters, bfloat16
  # layers (the KV cache too), float32 logits close to the float32 pass,
  # and cached decoding still equal to the teacher-forced pass.
  _, scene, toks, params = setup
  bf16 = jnp.bfloat16
  ref = np.asarray(_logits(params, scene, toks))
  tf = jax.jit(lambda p, s, t: motion_lm.logits(p, s, t, config=SMALL,
                                                dtype=bf16))(params, scene,
                                                             toks)
  assert tf.dtype == jnp.float32
  mask = np.asarray(motion_lm.token_mask(scene, toks))
  scale = np.abs(ref[mask]).max()
  np.testing.assert_allclose(np.asarray(tf)[mask], ref[mask],
                             atol=0.05 * scale)
  assert not np.allclose(np.asarray(tf)[mask], ref[mask], atol=1e-5)
  context = jax.jit(lambda p, s: motion_lm.encode(p, s, config=SMALL,
                                                  dtype=bf16))(params, scene)
  assert context.tokens.dtype == bf16 and context.pose.dtype == jnp.float32
  batch, agents, steps = toks.tokens.shape
  cache = motion_lm.init_cache(SMALL, batch, agents, bf16)
  assert cache[0]['key'].dtype == bf16
  step_fn = jax.jit(functools.partial(motion_lm.decode_step, config=SMALL,
                                      dtype=bf16))
  pose = jnp.stack([toks.start_pose.x, toks.start_pose.y,
                    toks.start_pose.yaw, toks.start_pose.vel_x,
                    toks.start_pose.vel_y], -1)
  prev = motion_lm.previous_tokens(toks, SMALL.vocab_size)
  for k in range(steps):
    valid = toks.start_valid[..., k]
    out, cache = step_fn(params, context,
                         jnp.where(valid[..., None], pose[:, :, k], 0.0),
                         valid, prev[..., k], jnp.int32(k), cache)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out)[mask[..., k]],
                               np.asarray(tf)[..., k, :][mask[..., k]],
                               atol=0.02 * scale)
  assert step_fn._cache_size() == 1
  assert jax.tree.leaves(params)[0].dtype == jnp.float32
