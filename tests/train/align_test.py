"""Alignment: re-paired baselines, the alignment loop, resume, KL, checks."""

import dataclasses
import functools
import json

import jax
import numpy as np
import pytest

from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.preference import collection
from prefalign.preference import dataset
from prefalign.preference import ranking
from prefalign.preference import records
from prefalign.train import align
from prefalign.train import checkpoint
from prefalign.train import state as state_lib
from prefalign.train import steps
from tests.train.conftest import READER
from tests.train.conftest import TINY_MODEL
from tests.train.conftest import write_scenarios

R = 4  # rollouts per scenario

# One worker runs the module: its tests share the module's collection (a
# fixture built once per worker) and the steps it compiles.
pytestmark = pytest.mark.xdist_group('train_align')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """12 synthetic scenarios, a tiny 'pre-trained' checkpoint, and their
  preference data collected with every rollout kept (and without)."""
  root = tmp_path_factory.mktemp('align')
  path = write_scenarios(root / 'scenarios.tfrecord', 12, seed=11)
  examples = list(womd.read_examples([path], READER))
  batch = jax.tree.map(lambda a: np.asarray(a)[None], examples[0].state)
  params = motion_lm.init(jax.random.key(1), TINY_MODEL,
                          *steps.model_inputs(batch, TINY_MODEL))
  ckpt = checkpoint.Checkpointer(root / 'pretrain')
  ckpt.save(state_lib.TrainState.create(
      params, steps.make_optimizer(steps.OptimizerConfig())))
  ckpt.close()
  kw = dict(ranking_config=ranking.RankingConfig(num_pairs=1), num_rollouts=R,
            scenarios_per_shard=6, seed=2, progress=False)
  for name, keep in (('all', True), ('paired', False)):
    collection.collect(params, TINY_MODEL,
                       womd.read_examples([path], READER), root / name,
                       keep_all_rollouts=keep, **kw)
  return root, params


def _config(root, **kw):
  num_steps = kw.pop('num_steps', 4)
  base = dict(
      preference_dirs=(str(root / 'all'),), init_from=str(root / 'pretrain'),
      model=TINY_MODEL, reader=READER, batch_size=8, num_steps=num_steps,
      optimizer=steps.OptimizerConfig(learning_rate=3e-3, warmup_steps=1,
                                      total_steps=num_steps),
      heldout_fraction=0.25, shuffle_buffer=4, log_every=1, eval_every=2,
      checkpoint_every=2, kl_scenarios=2, kl_rollouts=2, progress=False)
  base.update(kw)
  return align.AlignConfig(**base)


def test_kept_rollouts_hold_the_same_pairs(setup):
  root, _ = setup
  full = list(records.read_records(root / 'all'))
  paired = list(records.read_records(root / 'paired'))
  assert len(full) == len(paired) == 12
  for f, p in zip(full, paired):
    np.testing.assert_array_equal(f.sequence_rollout, np.arange(-1, R))
    np.testing.assert_array_equal(f.preferred_rollouts, p.preferred_rollouts)
    np.testing.assert_array_equal(f.unpreferred_rollouts,
                                  p.unpreferred_rollouts)
    np.testing.assert_array_equal(f.ot_distances, p.ot_distances)
    # The same tokens for the same rollouts.
    for i, r in enumerate(p.sequence_rollout):
      np.testing.assert_array_equal(
          p.sequences[i], f.sequences[list(f.sequence_rollout).index(r)])


def test_relabel_pairs_by_each_strategy(setup):
  root, _ = setup
  rec = next(records.read_records(root / 'all'))
  ot = dataset.relabel(rec, 'ot', num_pairs=2)
  order = np.argsort(rec.ot_distances, kind='stable')
  np.testing.assert_array_equal(ot.preferred_rollouts, order[:2])
  np.testing.assert_array_equal(ot.unpreferred_rollouts, order[2:])
  assert ot.sequences.shape[0] == 4  # compacted: the log is not used
  for i, r in enumerate(ot.sequence_rollout):
    np.testing.assert_array_equal(
        ot.sequences[i], rec.sequences[list(rec.sequence_rollout).index(r)])
  ade = dataset.relabel(rec, 'ade', num_pairs=1)
  assert ade.preferred_rollouts[0] == np.argmin(rec.ade)
  assert ade.unpreferred_rollouts[0] == np.argmax(rec.ade)
  np.testing.assert_array_equal(ade.distances, rec.ade)
  adv = dataset.relabel(rec, 'adversarial', num_pairs=3, seed=4)
  assert np.all(adv.preferred_rollouts == records.LOG)
  assert len(set(adv.unpreferred_rollouts.tolist())) == 3
  a = dataset.relabel(rec, 'random', num_pairs=2, seed=4)
  b = dataset.relabel(rec, 'random', num_pairs=2, seed=4)
  np.testing.assert_array_equal(a.pairs, b.pairs)
  np.testing.assert_array_equal(a.sequence_rollout, b.sequence_rollout)
  every = dataset.relabel(rec, 'ot', num_pairs=2, pairing='all')
  assert every.pairs.shape == (4, 2)
  with pytest.raises(ValueError, match='cannot give 3 preferred'):
    dataset.relabel(rec, 'ot', num_pairs=3)
  paired = next(records.read_records(root / 'paired'))
  with pytest.raises(ValueError, match='keep_all_rollouts'):
    dataset.relabel(paired, 'ade', num_pairs=1)


def test_heldout_split_is_by_scenario_and_stable(setup):
  root, _ = setup
  config = _config(root)
  train, heldout = align.split_records(config)
  ids = [r.scenario_id for r in records.read_records(root / 'all')]
  assert sorted(r.scenario_id for r in train + heldout) == sorted(ids)
  assert heldout and not {r.scenario_id for r in train} & {
      r.scenario_id for r in heldout}
  assert all(align.is_heldout(r.scenario_id, 0.25) for r in heldout)
  # Held-out pairs are OT pairs whatever the training pairs are.
  adv_train, adv_heldout = align.split_records(
      dataclasses.replace(config, pairs_from='adversarial'))
  for a, b in zip(heldout, adv_heldout):
    np.testing.assert_array_equal(a.pairs, b.pairs)
  assert all(np.all(r.preferred_rollouts == records.LOG) for r in adv_train)
  few, _ = align.split_records(dataclasses.replace(config, max_scenarios=3))
  assert [r.scenario_id for r in few] == [r.scenario_id for r in train[:3]]
  with pytest.raises(ValueError, match='max_scenarios=99'):
    align.split_records(dataclasses.replace(config, max_scenarios=99))


def test_policy_kl_is_zero_against_itself(setup):
  root, params = setup
  recs = list(records.read_records(root / 'all'))[:2]
  states = [s for _, s in dataset.record_states(recs, READER)]
  batch = jax.tree.map(lambda *a: np.stack(a), *states)
  # The alignment loop's jitted estimate at _config's sizes (2 scenarios, 2
  # rollouts each): its compiled program serves the loop tests too.
  kl = functools.partial(align._policy_kl, model_config=TINY_MODEL,
                         num_rollouts=2)
  same = jax.device_get(kl(params, params, batch, jax.random.key(0)))
  assert same['rollouts'] == 4 and same['tokens'] > 0
  assert abs(same['kl']) / same['tokens'] < 1e-4
  other = jax.tree.map(lambda a: a * 1.5, params)
  diff = jax.device_get(kl(other, params, batch, jax.random.key(0)))
  assert np.isfinite(diff['kl']) and abs(diff['kl']) / diff['tokens'] > 1e-3


def _rows(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_alignment_logs_learns_and_resumes(setup, tmp_path):
  root, _ = setup
  config = _config(root, num_steps=4)
  mesh = align.parallel.make_mesh(None)
  compiled = (align._step_fn(config.model, config.optimizer, config.objective,
                             mesh),
              align._eval_fn(config.model, config.objective, mesh),
              align._policy_kl)
  before = [fn._cache_size() for fn in compiled]
  full = align.align_and_evaluate(config, tmp_path / 'full')
  assert full['step'] == 4
  assert full['data']['heldout_scenarios'] >= 1
  # At most one compilation of the step, the held-out evaluation and the
  # KL estimate for the whole run (batches keep one shape; another test in
  # this process may have compiled them already).
  for fn, n in zip(compiled, before):
    assert 1 <= fn._cache_size() <= n + 1
  rows = _rows(tmp_path / 'full' / 'metrics.jsonl')
  held = [r for r in rows if r['split'] == 'eval/heldout']
  assert [r['step'] for r in held] == [0, 2, 4]
  assert all(0 <= r['accuracy'] <= 1 and r['pairs'] > 0 for r in held)
  kls = [r for r in rows if r['split'] == 'eval/kl']
  assert abs(kls[0]['kl_per_token']) < 1e-4  # the reference itself
  assert kls[-1]['kl_per_token'] > kls[0]['kl_per_token']
  train = [r for r in rows if r['split'] == 'train']
  assert len(train) == 4 and all(np.isfinite(r['loss']) for r in train)
  # CPL pushes preferred up relative to unpreferred on the training pairs.
  assert (train[-1]['logp_preferred'] - train[-1]['logp_unpreferred'] >
          train[0]['logp_preferred'] - train[0]['logp_unpreferred'])

  class Stop(Exception):
    pass

  def interrupt(step, _):
    if step == 2:
      raise Stop

  with pytest.raises(Stop):
    align.align_and_evaluate(config, tmp_path / 'resumed', callback=interrupt)
  resumed = align.align_and_evaluate(config, tmp_path / 'resumed')
  assert resumed['step'] == 4
  for a, b in zip(jax.tree.leaves(full['params']),
                  jax.tree.leaves(resumed['params'])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-6)


def test_baselines_run_through_the_same_loop(setup, tmp_path):
  root, _ = setup
  # (DPO's step is tested in preference_step_test.)
  for name, kw in (('sft', dict(objective=steps.PreferenceConfig(
      loss='sft'))), ('afd', dict(pairs_from='adversarial', num_pairs=2)),
                   ('dpo', dict(objective=steps.PreferenceConfig(
                       loss='dpo')))):
    out = align.align_and_evaluate(_config(root, num_steps=2, **kw),
                                   tmp_path / name)
    assert out['step'] == 2 and 0 <= out['heldout']['accuracy'] <= 1, name


@pytest.mark.parametrize('kw, match', [
    (dict(pairs_from='best'), 'pairs_from'),
    (dict(heldout_fraction=0.0), 'heldout_fraction'),
    (dict(batch_size=6), 'batch_size'),
    (dict(init_from='/nonexistent/ckpt'), 'init_from'),
    (dict(preference_dirs=('/nonexistent/prefs',)), 'no preference shards'),
    (dict(realism_files=('/nonexistent/*.tfrecord',)), 'realism_files'),
])
def test_bad_config_is_named_before_work(setup, tmp_path, kw, match):
  root, _ = setup
  with pytest.raises(ValueError, match=match):
    align.align_and_evaluate(_config(root, **kw), tmp_path / 'bad')
  assert not (tmp_path / 'bad' / 'checkpoints').exists()
