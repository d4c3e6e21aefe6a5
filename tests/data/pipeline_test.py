"""Streaming, sharding, shuffling and batching of scenarios."""

import threading

import numpy as np
import pytest

from prefalign.data import pipeline
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd

SMALL = womd.ReaderConfig(max_num_objects=8, max_roadgraph_points=600,
                          max_traffic_lights=2)


@pytest.fixture
def shards(tmp_path):
  """3 shards of 4 scenarios each, ids s0..s11."""
  for k in range(3):
    tfrecord.write_records(
        tmp_path / f'd.tfrecord-{k:05d}-of-00003',
        [synthetic.straight_road_scenario(f's{4 * k + i}',
                                          seed=4 * k + i).SerializeToString()
         for i in range(4)])
  return str(tmp_path / 'd.tfrecord@3')


def _ids(examples):
  return [e.scenario_id for e in examples]


def test_reads_everything_in_order(shards):
  got = _ids(pipeline.scenarios(shards, pipeline.PipelineConfig(reader=SMALL)))
  assert got == [f's{i}' for i in range(12)]


def test_hosts_partition_the_data(shards):
  seen = []
  for p in range(2):
    cfg = pipeline.PipelineConfig(reader=SMALL, process_index=p,
                                  process_count=2)
    seen.append(_ids(pipeline.scenarios(shards, cfg)))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(f's{i}' for i in range(12))
  # More processes than files: records are split instead.
  seen = []
  for p in range(4):
    cfg = pipeline.PipelineConfig(reader=SMALL, process_index=p,
                                  process_count=4)
    seen.append(_ids(pipeline.scenarios(shards, cfg)))
  assert all(len(s) == 3 for s in seen)
  assert sorted(sum(seen, [])) == sorted(f's{i}' for i in range(12))


def test_shuffle_is_deterministic_and_complete(shards):
  cfg = pipeline.PipelineConfig(reader=SMALL, shuffle=True, shuffle_buffer=5,
                                seed=3, num_epochs=2)
  a = _ids(pipeline.scenarios(shards, cfg))
  b = _ids(pipeline.scenarios(shards, cfg))
  assert a == b and len(a) == 24
  assert sorted(a[:12]) == sorted(f's{i}' for i in range(12))
  assert a[:12] != [f's{i}' for i in range(12)]
  assert a[:12] != a[12:]  # each epoch reshuffles


def test_filter_and_batches(shards):
  cfg = pipeline.PipelineConfig(reader=SMALL)
  examples = pipeline.scenarios(
      shards, cfg, filter_fn=lambda e: int(e.scenario_id[1:]) % 2 == 0)
  got = list(pipeline.batches(examples, 4, drop_remainder=False))
  assert [b.batch_size for b in got] == [4, 2]
  assert got[0].scenario_ids == ['s0', 's2', 's4', 's6']
  state = got[0].state
  state.validate()
  assert state.shape == (4,)
  assert state.log_trajectory.shape == (4, 8, 91)
  assert state.roadgraph_points.shape == (4, 600)
  np.testing.assert_array_equal(state.timestep, [10] * 4)


def test_mismatched_shapes_are_named(shards):
  a = next(pipeline.scenarios(shards, pipeline.PipelineConfig(reader=SMALL)))
  b = womd.state_from_scenario(synthetic.straight_road_scenario('other'))
  with pytest.raises(ValueError, match='other'):
    list(pipeline.batches([a, b], 2))


def test_prefetch_passes_items_and_errors():
  assert list(pipeline.prefetch(iter(range(10)), 3)) == list(range(10))

  def broken():
    yield 1
    raise womd.DataError('boom', path='f', record=2)

  it = pipeline.prefetch(broken())
  assert next(it) == 1
  with pytest.raises(womd.DataError, match='file f, record 2: boom'):
    next(it)


def test_skip_bad_records_in_pipeline(tmp_path):
  path = tmp_path / 'x.tfrecord'
  tfrecord.write_records(path, [
      synthetic.straight_road_scenario('ok').SerializeToString(), b'\xff\xff'])
  stats = womd.ReadStats()
  cfg = pipeline.PipelineConfig(reader=SMALL, skip_bad_records=True)
  assert _ids(pipeline.scenarios(str(path), cfg, stats=stats)) == ['ok']
  assert stats.num_skipped == 1


def test_prefetch_thread_ends_when_the_consumer_stops():
  """A consumer that stops early must not leave the producer blocked on a
  full queue, holding the iterator (and its files) for the process's life."""
  produced = []

  def endless():
    i = 0
    while True:
      produced.append(i)
      yield i
      i += 1

  def producers():
    return sum(t.name == 'prefalign-prefetch' and t.is_alive()
               for t in threading.enumerate())

  before = producers()
  it = pipeline.prefetch(endless(), 2)
  assert [next(it) for _ in range(3)] == [0, 1, 2]
  assert producers() == before + 1
  it.close()
  assert producers() == before
  assert len(produced) <= 3 + 2 + 1  # consumed + queue + one in hand
