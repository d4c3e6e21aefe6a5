"""Offline preference collection: records, shards, resume, replay."""

import functools

import jax
import numpy as np
import pytest

from prefalign import rollout
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.preference import collection
from prefalign.preference import dataset
from prefalign.preference import ranking
from prefalign.preference import records
from prefalign.train import steps
from tests.train.conftest import READER
from tests.train.conftest import TINY_MODEL
from tests.train.conftest import write_scenarios

CONFIG = ranking.RankingConfig(num_pairs=2)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('prefs')
  path = write_scenarios(root / 'scenarios.tfrecord', 3, seed=5)
  examples = list(womd.read_examples([path], READER))
  batch = jax.tree.map(lambda a: np.asarray(a)[None], examples[0].state)
  params = motion_lm.init(jax.random.key(0), TINY_MODEL,
                          *steps.model_inputs(batch, TINY_MODEL))
  return root, path, examples, params


def _collect(setup, out, **kw):
  root, path, _, params = setup
  args = dict(ranking_config=CONFIG, num_rollouts=4, scenarios_per_shard=2,
              seed=3, progress=False)
  args.update(kw)
  return collection.collect(params, TINY_MODEL,
                            womd.read_examples([path], READER), root / out,
                            **args)


def _bytes(directory):
  return {p.name: p.read_bytes()
          for p in sorted(directory.glob('preferences-*.tfrecord'))}


def test_collect_writes_shards_and_summary(setup):
  summary = _collect(setup, 'a')
  root, _, examples, _ = setup
  assert sorted(_bytes(root / 'a')) == ['preferences-00000.tfrecord',
                                        'preferences-00001.tfrecord']
  recs = list(records.read_records(root / 'a'))
  assert [r.scenario_id for r in recs] == [e.scenario_id for e in examples]
  assert summary['num_scenarios'] == 3 and summary['num_pairs'] == 6
  assert (root / 'a' / 'summary.json').exists()
  assert (root / 'a' / 'distances.png').exists()
  for r in recs:
    assert r.record in (0, 1, 2) and r.source.endswith('scenarios.tfrecord')
    d = r.distances
    # Every preferred rollout is at least as close as every unpreferred one.
    assert d[r.preferred_rollouts].max() <= d[r.unpreferred_rollouts].min()
    assert r.sequences.shape == (4, 8, TINY_MODEL.num_steps)
  assert summary['gap']['p5'] >= 0


def test_collection_over_devices_equals_one_scenario_at_a_time(setup):
  """The records of the 8-device collection (one call samples and ranks
  every scenario of a shard, one per device) are those of sampling and
  ranking each scenario on its own with the library's jitted functions:
  the same rollouts, pairs and token sequences, and distances equal to the
  rounding of float32 Sinkhorn iterations compiled in other programs."""
  assert jax.device_count() == 8  # tests/conftest.py
  _collect(setup, 'a')
  root, _, examples, params = setup
  single = collection.collect(
      params, TINY_MODEL, examples, root / 'a1', ranking_config=CONFIG,
      num_rollouts=4, scenarios_per_shard=2, seed=3, progress=False,
      mesh=jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',)))
  assert single['num_scenarios'] == 3
  for i, (ex, rec, one) in enumerate(zip(
      examples, records.read_records(root / 'a'),
      records.read_records(root / 'a1'))):
    for field in ('scenario_id', 'record', 'sequences', 'sequence_rollout',
                  'pairs', 'agent_counted'):
      np.testing.assert_array_equal(getattr(rec, field), getattr(one, field))
    for field in ('distances', 'ot_distances', 'ade', 'agent_distances'):
      np.testing.assert_allclose(getattr(rec, field), getattr(one, field),
                                 rtol=1e-4, atol=1e-5)
    key = jax.random.fold_in(jax.random.key(3), i)
    out = rollout.sample_rollouts_jit(
        params, jax.tree.map(lambda a: np.asarray(a)[None], ex.state),
        jax.random.fold_in(key, 0), config=TINY_MODEL, num_rollouts=4)
    traj = jax.tree.map(lambda a: a[0], rollout.to_metric_trajectory(out))
    r = jax.device_get(ranking.rank_rollouts_jit(
        ex.state, traj, jax.random.fold_in(key, 1), config=CONFIG))
    np.testing.assert_allclose(rec.distances, r.distances, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(rec.preferred_rollouts, r.preferred)
    np.testing.assert_array_equal(rec.unpreferred_rollouts, r.unpreferred)
    tokens = np.asarray(out.tokens[0])
    for seq, u in zip(rec.sequences, rec.sequence_rollout):
      np.testing.assert_array_equal(seq, tokens[u])


def test_hosts_write_alternate_shards_of_one_collection(setup, monkeypatch):
  """Two processes (simulated one after the other) each write the shards
  they own, k mod 2; together they are the one-process collection."""
  _collect(setup, 'a')
  root = setup[0]
  waits = []
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(collection, '_wait_for_every_process',
                      lambda: waits.append(1))
  for process, owned in ((1, ['preferences-00001.tfrecord']),
                         (0, ['preferences-00000.tfrecord',
                              'preferences-00001.tfrecord'])):
    monkeypatch.setattr(jax, 'process_index', lambda p=process: p)
    _collect(setup, 'hosts')
    assert sorted(_bytes(root / 'hosts')) == owned
  assert len(waits) == 2
  assert _bytes(root / 'hosts') == _bytes(root / 'a')
  assert (root / 'hosts' / 'summary.json').read_text() == (
      root / 'a' / 'summary.json').read_text()


def test_resume_rewrites_only_missing_shards(setup):
  _collect(setup, 'b')
  root = setup[0]
  before = _bytes(root / 'b')
  (root / 'b' / 'preferences-00001.tfrecord').unlink()
  (root / 'b' / 'summary.json').unlink()
  _collect(setup, 'b')
  assert _bytes(root / 'b') == before


def test_other_setup_in_same_directory_is_refused(setup):
  _collect(setup, 'c')
  with pytest.raises(ValueError, match='different setup.*num_rollouts'):
    _collect(setup, 'c', num_rollouts=5)


def test_corrupt_shard_names_file_and_record(setup):
  _collect(setup, 'd')
  root = setup[0]
  path = root / 'd' / 'preferences-00000.tfrecord'
  data = bytearray(path.read_bytes())
  data[-10] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(tfrecord.DataError, match='preferences-00000'):
    list(records.read_records(root / 'd'))
  with pytest.raises(FileNotFoundError, match='no preference shards'):
    list(records.read_records(root / 'nothing'))


def test_record_roundtrip_and_bad_pairs():
  rec = records.PreferenceRecord(
      scenario_id='s', source='f', record=2,
      sequences=np.zeros((2, 3, 4), np.int16),
      sequence_rollout=np.array([-1, 5], np.int32),
      pairs=np.array([[0, 1]], np.int32), distances=np.ones(6, np.float32),
      ot_distances=np.ones(6, np.float32), ade=np.ones(6, np.float32),
      agent_distances=np.ones((6, 3), np.float32),
      agent_counted=np.ones(3, bool))
  back = records.decode_record(records.encode_record(rec))
  assert back.scenario_id == 's' and back.record == 2
  np.testing.assert_array_equal(back.preferred_rollouts, [-1])
  rec.pairs = np.array([[0, 2]], np.int32)
  with pytest.raises(tfrecord.DataError, match='pairs index'):
    records.decode_record(records.encode_record(rec), 'here')
  with pytest.raises(tfrecord.DataError, match='here: not a preference'):
    records.decode_record(b'garbage', 'here')


def test_replayed_tokens_score_like_the_sampler(setup):
  _, _, examples, params = setup
  state = examples[1].state
  batch = jax.tree.map(lambda a: np.asarray(a)[None], state)
  out = jax.jit(functools.partial(rollout.sample_rollouts, config=TINY_MODEL,
                                  num_rollouts=3))(params, batch,
                                                   jax.random.key(4))
  direct = rollout.as_tokens(out)
  replay = rollout.replay_tokens(state, out.tokens[0], TINY_MODEL)
  for a, b in zip(jax.tree.leaves(direct.start_pose),
                  jax.tree.leaves(replay.start_pose)):
    np.testing.assert_allclose(a, b, atol=1e-3)
  scene = steps.model_inputs(batch, TINY_MODEL)[0]
  lp = motion_lm.log_probs(params, rollout.tile(scene, 3), replay,
                           config=TINY_MODEL)
  np.testing.assert_allclose(lp, out.log_probs[0], atol=1e-4)
  # The log as a sequence: its closed-loop tokenization.
  toks = collection.sequence_tokens(state, out.tokens[0, :2],
                                    np.array([-1, 1]), TINY_MODEL)
  log = steps.model_inputs(batch, TINY_MODEL)[1]
  np.testing.assert_array_equal(toks.tokens[0], log.tokens[0])
  np.testing.assert_array_equal(toks.tokens[1],
                                np.where(replay.valid[1], out.tokens[0, 1], 0))


def test_training_examples_feed_the_preference_step(setup):
  import dataclasses

  from prefalign import datatypes
  from prefalign.train import state as state_lib
  _collect(setup, 'train')
  root, _, examples, params = setup
  recs = list(records.read_records(root / 'train'))
  pairs = list(dataset.record_states(recs, READER))
  assert [r.scenario_id for r, _ in pairs] == [e.scenario_id
                                               for e in examples]
  rows = [dataset.training_example(r, s, TINY_MODEL, num_sequences=6,
                                   num_pairs=3) for r, s in pairs]
  rec, row = recs[0], rows[0]
  u = rec.sequences.shape[0]
  assert row['tokens'].tokens.shape == (6, 8, TINY_MODEL.num_steps)
  np.testing.assert_array_equal(row['tokens'].tokens[:u], rec.sequences)
  np.testing.assert_array_equal(row['pair_valid'], [True, True, False])
  stack = lambda *a: np.stack(a)
  batch = steps.PreferenceBatch(
      state=datatypes.stack([r['state'] for r in rows]),
      tokens=jax.tree.map(stack, *[r['tokens'] for r in rows]),
      pairs=np.stack([r['pairs'] for r in rows]),
      pair_valid=np.stack([r['pair_valid'] for r in rows]))
  opt = steps.OptimizerConfig(warmup_steps=1, total_steps=2)
  train_state = state_lib.TrainState.create(jax.device_get(params),
                                            steps.make_optimizer(opt))
  _, metrics = jax.jit(functools.partial(
      steps.preference_step, model_config=TINY_MODEL,
      optimizer_config=opt))(train_state, batch, jax.random.key(0))
  assert float(metrics['pairs']) == 6 and np.isfinite(metrics['mean_loss'])
  with pytest.raises(ValueError, match='do not fit'):
    dataset.training_example(rec, pairs[0][1], TINY_MODEL, num_sequences=2,
                             num_pairs=3)
  # The scenario file changed or went away since collection: named.
  moved = dataclasses.replace(rec, scenario_id='other-id')
  with pytest.raises(tfrecord.DataError, match="record 0.*'other-id'"):
    list(dataset.record_states([moved], READER))
  gone = dataclasses.replace(rec, source=str(root / 'nope.tfrecord'))
  with pytest.raises(FileNotFoundError, match='nope.tfrecord'):
    list(dataset.record_states([gone], READER))
  late = dataclasses.replace(rec, record=99)
  with pytest.raises(tfrecord.DataError, match='no record 99'):
    list(dataset.record_states([late], READER))


def test_training_example_compiles_once_per_config(setup):
  import dataclasses
  _collect(setup, 'train')  # resumed when the test above ran
  root = setup[0]
  pairs = list(dataset.record_states(records.read_records(root / 'train'),
                                     READER))
  jitted = dataset._sequence_tokens_jit
  jitted.clear_cache()
  for r, s in pairs:
    dataset.training_example(r, s, TINY_MODEL, num_sequences=6, num_pairs=3)
  # An equal config (another object) hits the same compilation.
  rec, state = pairs[0]
  dataset.training_example(rec, state, dataclasses.replace(TINY_MODEL),
                           num_sequences=6, num_pairs=3)
  assert len(pairs) == 3 and jitted._cache_size() == 1
