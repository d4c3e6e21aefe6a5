"""Bad input, generated: every kind gets a clear error naming its file and
record, or is skipped and counted when skipping is on, and never reaches a
jitted function as a wrong number.

The kinds: truncated TFRecords, flipped bytes, records that are not
Scenarios, scenarios with 0 or 1 valid objects, more objects than the
maximum, no road graph, NaN or huge coordinates, timestamps out of order,
and preference shards from a different model config.
"""

import dataclasses
import functools
import json
import shutil
import struct

import jax
import numpy as np
import pytest

from prefalign import datatypes
from prefalign import rollout
from prefalign.data import pipeline
from prefalign.data import submission
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.metrics import wosac
from prefalign.model import motion_lm
from prefalign.preference import collection
from prefalign.preference import dataset
from prefalign.preference import ranking
from prefalign.preference import records
from prefalign.train import align
from prefalign.train import loop
from prefalign.train import parallel
from prefalign.train import steps
from tests.train.conftest import READER
from tests.train.conftest import TINY_MODEL
from tests.train.conftest import tiny_config


def _good(i: int) -> bytes:
  rng = np.random.default_rng(i)
  return synthetic.straight_road_scenario(
      f'good-{i}', seed=int(rng.integers(2**31)),
      num_vehicles=int(rng.integers(2, 6)), num_pedestrians=1,
      num_cyclists=int(rng.integers(0, 2)),
      with_traffic_light=bool(i % 2)).SerializeToString()


def _scenario(mutate) -> bytes:
  s = synthetic.straight_road_scenario('bad-one', num_vehicles=4)
  mutate(s)
  return s.SerializeToString()


def _invalidate(s, keep=()):
  for i, track in enumerate(s.tracks):
    if i not in keep:
      for state in track.states:
        state.valid = False


def _rollouts_proto() -> bytes:
  """A ScenarioRollouts record: a rollout file passed as scenarios."""
  scenario = synthetic.straight_road_scenario('r', num_vehicles=2)
  state = womd.state_from_scenario(scenario, READER).state
  traj = jax.tree.map(lambda a: np.repeat(a[None, :, 11:], 2, 0),
                      state.log_trajectory)
  traj = traj.replace(valid=np.ones_like(traj.valid))
  return submission.scenario_rollouts_from_trajectory(
      state, 'r', traj).SerializeToString()


# Each bad record: (its bytes, what the error must say).
RECORDS = {
    'random_bytes': (lambda: b'\x08\x96\x01garbage\xff\xff',
                     'not a WOMD Scenario'),
    'empty_record': (lambda: b'', 'not a WOMD Scenario'),
    'rollouts_not_scenario': (_rollouts_proto, 'not a WOMD Scenario|'
                              'timestamps_seconds|no tracks'),
    'zero_valid_objects': (lambda: _scenario(_invalidate),
                           '0 objects are valid at the current step'),
    'no_road_graph': (lambda: _scenario(lambda s: s.ClearField(
        'map_features')), 'no road graph'),
    'nan_position': (lambda: _scenario(lambda s: s.tracks[2].states[
        50].__setattr__('center_y', float('nan'))),
                     r'track 2 \(id 3\) has a non-finite y at step 50'),
    'inf_heading': (lambda: _scenario(lambda s: s.tracks[1].states[
        3].__setattr__('heading', float('-inf'))),
                    'non-finite yaw at step 3'),
    'huge_position': (lambda: _scenario(lambda s: s.tracks[3].states[
        70].__setattr__('center_x', 3e9)), 'x=3e\\+09 at step 70, beyond'),
    'huge_map_point': (lambda: _scenario(lambda s: s.map_features[
        0].lane.polyline[4].__setattr__('x', 1e12)),
                       'non-finite or huge coordinate'),
    'timestamps_out_of_order': (lambda: _scenario(
        lambda s: s.timestamps_seconds.__setitem__(60, 1.0)),
                                'not strictly increasing'),
    'nan_timestamp': (lambda: _scenario(lambda s: s.timestamps_seconds
                                        .__setitem__(5, float('nan'))),
                      'NaN or infinity'),
}


def _frame(data: bytes) -> bytes:
  """One TFRecord frame (length, its CRC, data, data CRC)."""
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', tfrecord.masked_crc32c(length)) + data +
          struct.pack('<I', tfrecord.masked_crc32c(data)))


def _file(tmp_path, name, frames: list[bytes]) -> str:
  path = tmp_path / name
  path.write_bytes(b''.join(frames))
  return str(path)


def _flipped(data: bytes, at: int) -> bytes:
  """A frame of ``data`` with one bit flipped ``at`` bytes into the data."""
  frame = bytearray(_frame(data))
  frame[12 + at] ^= 0x10
  return bytes(frame)


# Each broken file: (frames, the record the error names, its reason, the
# good scenarios left when skipping).
FILES = {
    'truncated_data': (lambda: [_frame(_good(0)), _frame(_good(1))[:-40]],
                       1, 'truncated record', ['good-0']),
    'truncated_header': (lambda: [_frame(_good(0)), _frame(_good(1))[:7]],
                         1, 'truncated record', ['good-0']),
    'flipped_data_byte': (lambda: [_frame(_good(0)),
                                   _flipped(_good(1), 100),
                                   _frame(_good(2))],
                          1, 'data checksum mismatch', ['good-0', 'good-2']),
    'flipped_length_byte': (lambda: [_frame(_good(0)), _frame(_good(2)),
                                     bytes([0x55]) + _frame(_good(1))[1:],
                                     _frame(_good(3))],
                            2, 'length checksum mismatch',
                            ['good-0', 'good-2', 'good-3']),
}


@pytest.mark.parametrize('kind', sorted(RECORDS))
def test_bad_record_is_named_or_skipped_and_counted(tmp_path, kind):
  make, reason = RECORDS[kind]
  path = _file(tmp_path, f'{kind}.tfrecord',
               [_frame(_good(0)), _frame(make()), _frame(_good(2))])
  config = pipeline.PipelineConfig(reader=READER)
  with pytest.raises(womd.DataError, match=reason) as info:
    list(pipeline.scenarios(path, config))
  assert f'file {path}, record 1' in str(info.value)
  assert info.value.path == path and info.value.record == 1

  stats = womd.ReadStats()
  got = list(pipeline.scenarios(
      path, dataclasses.replace(config, skip_bad_records=True), stats=stats))
  assert [ex.scenario_id for ex in got] == ['good-0', 'good-2']
  assert [ex.record for ex in got] == [0, 2]
  assert (stats.num_read, stats.num_skipped) == (2, 1)
  assert f'file {path}, record 1' in stats.errors[0]
  for ex in got:  # what is kept is finite and as if read alone
    for leaf in jax.tree.leaves(ex.state):
      if np.issubdtype(leaf.dtype, np.floating):
        assert np.isfinite(leaf).all()


@pytest.mark.parametrize('kind', sorted(FILES))
def test_broken_file_is_named_or_skipped_and_counted(tmp_path, kind):
  make, record, reason, kept = FILES[kind]
  path = _file(tmp_path, f'{kind}.tfrecord', make())
  config = pipeline.PipelineConfig(reader=READER)
  with pytest.raises(tfrecord.RecordError, match=reason) as info:
    list(pipeline.scenarios(path, config))
  assert f'file {path}, record {record}' in str(info.value)
  stats = womd.ReadStats()
  got = list(pipeline.scenarios(
      path, dataclasses.replace(config, skip_bad_records=True), stats=stats))
  # Exactly the broken record is lost: reading goes on after a bad payload,
  # and from the next valid frame after broken framing.
  assert [ex.scenario_id for ex in got] == kept
  assert stats.num_skipped == 1 and f'record {record}' in stats.errors[0]


def test_every_kind_in_one_file_and_in_every_reader(tmp_path):
  frames = [_frame(_good(0))]
  for i, (make, _) in enumerate(RECORDS.values()):
    frames += [_frame(make()), _frame(_good(2 * i + 2))]
  path = _file(tmp_path, 'mixed.tfrecord', frames)
  good = [f'good-{i}' for i in range(0, len(frames), 2)]
  for read in (lambda **kw: womd.read_examples(path, READER, **kw),
               lambda **kw: pipeline.scenarios(path, pipeline.PipelineConfig(
                   reader=READER, skip_bad_records=kw['skip_bad_records']),
                                               stats=kw['stats'])):
    with pytest.raises(womd.DataError, match='record 1'):
      list(read(skip_bad_records=False, stats=None))
    stats = womd.ReadStats()
    got = [ex.scenario_id for ex in read(skip_bad_records=True, stats=stats)]
    assert got == good
    assert stats.num_skipped == len(RECORDS) and stats.num_read == len(good)
    assert [e.split(':')[0].split(', ')[1] for e in stats.errors] == [
        f'record {i}' for i in range(1, len(frames), 2)]


def test_every_record_bad_stops_an_endless_stream(tmp_path):
  path = _file(tmp_path, 'bad.tfrecord',
               [_frame(m()) for m, _ in list(RECORDS.values())[:3]])
  config = pipeline.PipelineConfig(reader=READER, skip_bad_records=True,
                                   num_epochs=None)
  with pytest.raises(ValueError, match=r'no usable scenario .*\(3 bad records'
                     r' skipped; first: file .*bad.tfrecord, record 0'):
    next(pipeline.scenarios(path, config))


# --- more objects than the maximum ------------------------------------------


def test_more_objects_than_the_maximum_are_dropped_and_counted(tmp_path):
  s = synthetic.straight_road_scenario('crowded', num_vehicles=8,
                                       num_pedestrians=2, num_cyclists=2)
  num_valid = sum(t.states[10].valid for t in s.tracks)
  assert len(s.tracks) == 12 and num_valid == 12
  path = _file(tmp_path, 'crowded.tfrecord', [_frame(s.SerializeToString())])
  reader = dataclasses.replace(READER, max_num_objects=5)
  stats = womd.ReadStats()
  (ex,) = womd.read_examples(path, reader, stats=stats)
  meta = ex.state.object_metadata
  assert meta.is_valid.sum() == 5
  assert meta.is_sdc.sum() == 1 and meta.is_modeled.sum() == 2
  assert (ex.num_dropped_objects, ex.num_dropped_sim_agents) == (7, 7)
  assert (stats.num_truncated, stats.num_dropped_objects,
          stats.num_dropped_sim_agents) == (1, 7, 7)
  assert stats.summary()['dropped_sim_agents'] == 7

  # Where every sim agent must be scored (a submission), it is an error.
  strict = dataclasses.replace(reader, drop_sim_agents=False)
  with pytest.raises(womd.DataError, match=(
      r"record 0, scenario 'crowded': 12 objects are valid"
      r' at the current step 10, more than '
      r'max_num_objects=5: 7 sim agents would be left out')):
    list(womd.read_examples(path, strict))
  stats = womd.ReadStats()
  assert list(womd.read_examples(path, strict, skip_bad_records=True,
                                 stats=stats)) == []
  assert stats.num_skipped == 1
  # Tracks that are not sim agents may go without complaint.
  _invalidate(s, keep=range(5))
  path = _file(tmp_path, 'few.tfrecord', [_frame(s.SerializeToString())])
  (ex,) = womd.read_examples(path, strict)
  assert (ex.num_dropped_objects, ex.num_dropped_sim_agents) == (7, 0)


# --- exactly one valid object -------------------------------------------------


@functools.cache
def _sampler():
  return jax.jit(functools.partial(rollout.sample_rollouts, config=TINY_MODEL,
                                   num_rollouts=32))


def test_one_valid_object_gives_finite_correct_numbers():
  s = synthetic.straight_road_scenario('alone', num_vehicles=4)
  _invalidate(s, keep=(0,))
  state = womd.state_from_scenario(s, READER).state
  assert state.log_trajectory.valid[:, 10].sum() == 1
  batch = datatypes.stack([state, state])
  scene, toks = steps.model_inputs(batch, TINY_MODEL)
  params = motion_lm.init(jax.random.key(0), TINY_MODEL, scene, toks)
  # Pre-training loss: one object's 16 tokens per scenario.
  loss, sums = jax.jit(functools.partial(steps._loss,
                                         model_config=TINY_MODEL))(
                                             params, scene, toks)
  assert np.isfinite(loss) and float(sums['count']) == 32

  out = _sampler()(params, batch, jax.random.key(1))
  traj = jax.tree.map(lambda a: a[0], rollout.to_metric_trajectory(out))
  assert np.isfinite(np.asarray(traj.x)[:, 0]).all()
  metric = jax.jit(wosac.scenario_metrics)
  model = jax.device_get(metric(state, traj))
  logged = jax.device_get(metric(state, wosac.log_rollouts(state, 32)))
  assert all(np.isfinite(v) for v in model.values())
  assert model['num_evaluated'] == 1 and model['simulated_collision_rate'] == 0
  # Alone, every rollout's interaction features take their "no other object"
  # value, as the log's do: the interactive likelihoods are those of a
  # perfect match, whatever the rollouts.
  for k in ('distance_to_nearest_object_likelihood',
            'time_to_collision_likelihood', 'collision_indication_likelihood'):
    np.testing.assert_allclose(model[k], logged[k], rtol=1e-6)

  r = jax.device_get(jax.jit(ranking.rank_rollouts)(
      state, traj, jax.random.key(2)))
  assert r.agent_counted.sum() == 1
  assert np.isfinite(r.distances).all() and (r.distances > 0).all()
  assert len(set(r.preferred) & set(r.unpreferred)) == 0


# --- pre-training with skipping on --------------------------------------------


def test_pretraining_skips_bad_records_as_if_they_were_absent(tmp_path):
  goods = [_good(i) for i in range(16)]
  clean = _file(tmp_path, 'clean.tfrecord', [_frame(g) for g in goods])
  frames = []
  bad = list(RECORDS.values())
  for i, g in enumerate(goods):
    frames.append(_frame(g))
    if i < len(bad):
      frames.append(_frame(bad[i][0]()))
  dirty = _file(tmp_path, 'dirty.tfrecord', frames)
  kw = dict(num_steps=2, shuffle_buffer=1, log_every=1, eval_batches=0)
  files = {'train': clean, 'eval': clean}

  with pytest.raises(womd.DataError, match=r'dirty.tfrecord, record 1: '):
    loop.train_and_evaluate(
        tiny_config(files, train_files=(dirty,), **kw), tmp_path / 'stop')
  assert not (tmp_path / 'stop' / 'checkpoints').exists() or not any(
      (tmp_path / 'stop' / 'checkpoints').iterdir())

  ref = loop.train_and_evaluate(tiny_config(files, **kw), tmp_path / 'ref')
  got = loop.train_and_evaluate(
      tiny_config(files, train_files=(dirty,),
                  eval_sets=(('eval', (dirty,)),), skip_bad_records=True,
                  **kw), tmp_path / 'skip')
  assert got['step'] == ref['step'] == 2
  for a, b in zip(jax.tree.leaves(got['params']),
                  jax.tree.leaves(ref['params'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert got['train']['loss'] == ref['train']['loss']
  assert got['eval']['eval']['loss'] == ref['eval']['eval']['loss']
  assert got['eval']['eval']['skipped_records'] == len(bad)
  assert got['data']['skipped'] >= len(bad) and ref['data']['skipped'] == 0
  assert 'dirty.tfrecord, record 1:' in got['data']['errors'][0]
  logged = [json.loads(line) for line in
            (tmp_path / 'skip' / 'metrics.jsonl').read_text().splitlines()]
  assert any(line['split'] == 'data' and line['skipped_records'] >= len(bad)
             for line in logged)


# --- preference shards --------------------------------------------------------


@pytest.fixture(scope='module')
def collected(tmp_path_factory):
  root = tmp_path_factory.mktemp('bad_prefs')
  path = _file(root, 'scenarios.tfrecord', [_frame(_good(0))])
  examples = list(womd.read_examples([path], READER))
  batch = jax.tree.map(lambda a: np.asarray(a)[None], examples[0].state)
  params = motion_lm.init(jax.random.key(0), TINY_MODEL,
                          *steps.model_inputs(batch, TINY_MODEL))
  # The collection of tests/train/align_test.py (4 rollouts, one pair):
  # the persistent compilation cache serves its sampler and ranking.
  collection.collect(params, TINY_MODEL, examples, root / 'prefs',
                     ranking_config=ranking.RankingConfig(num_pairs=1),
                     num_rollouts=4, progress=False)
  return root, examples[0]


def _align_check(directory, model):
  config = align.AlignConfig(preference_dirs=(str(directory),),
                             init_from='/nonexistent', model=model,
                             reader=READER)
  align.check_config(config, parallel.make_mesh())


def test_preference_shards_of_another_model_config_are_refused(collected):
  root, _ = collected
  other = dataclasses.replace(TINY_MODEL, width=64)
  with pytest.raises(ValueError, match=(
      r'preference_dirs: .*prefs: preference shards collected with a '
      r'different model config \(stored vs this run\): width \(32 vs 64\)')):
    _align_check(root / 'prefs', other)
  tok = dataclasses.replace(TINY_MODEL, tokenizer=dataclasses.replace(
      TINY_MODEL.tokenizer, num_lon_bins=TINY_MODEL.tokenizer.num_lon_bins + 2))
  with pytest.raises(ValueError, match=r'tokenizer\.num_lon_bins'):
    _align_check(root / 'prefs', tok)
  with pytest.raises(ValueError, match='different model config'):
    align.split_records(align.AlignConfig(
        preference_dirs=(str(root / 'prefs'),), init_from='', model=other))
  # The collecting model passes this check (and stops at the next key).
  with pytest.raises(ValueError, match='^init_from: no checkpoint'):
    _align_check(root / 'prefs', TINY_MODEL)
  # Shards without their meta.json cannot be matched to a model.
  bare = root / 'bare'
  bare.mkdir()
  for shard in (root / 'prefs').glob('preferences-*.tfrecord'):
    shutil.copy(shard, bare / shard.name)
  with pytest.raises(ValueError, match='meta.json is missing'):
    _align_check(bare, TINY_MODEL)


def test_token_ids_outside_the_vocabulary_are_named(collected):
  root, example = collected
  (rec,) = records.read_records(root / 'prefs')
  rec.sequences = rec.sequences.copy()
  rec.sequences[0, 0, 3] = TINY_MODEL.tokenizer.vocab_size
  with pytest.raises(tfrecord.DataError, match=(
      r"scenarios.tfrecord, record 0, scenario 'good-0': token ids 0\.\.\d+ "
      r'outside '
      r'the vocabulary')):
    dataset.training_example(rec, example.state, TINY_MODEL,
                             num_sequences=8, num_pairs=4)
