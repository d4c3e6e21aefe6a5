"""The converted-scenario cache gives back exactly what conversion gives."""

import json

import jax
import numpy as np
import pytest

from prefalign.data import cache as scenario_cache
from prefalign.data import pipeline
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from tests.data.pipeline_test import SMALL


@pytest.fixture
def files(tmp_path):
  """2 files of 5 scenarios each, ids s0..s9."""
  for k in range(2):
    tfrecord.write_records(
        tmp_path / f'd.tfrecord-{k:05d}-of-00002',
        [synthetic.straight_road_scenario(f's{5 * k + i}', seed=5 * k + i,
                                          num_vehicles=2 + i % 3
                                          ).SerializeToString()
         for i in range(5)])
  return str(tmp_path / 'd.tfrecord@2')


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_cache_equals_conversion_and_is_reused(files, tmp_path):
  examples = list(pipeline.scenarios(files, pipeline.PipelineConfig(
      reader=SMALL)))
  cache = scenario_cache.build(files, SMALL, tmp_path / 'cache',
                               shard_size=4)
  assert len(cache) == 10 and cache.scenario_ids == [
      ex.scenario_id for ex in examples]
  assert cache.sources == [(ex.path, ex.record) for ex in examples]
  order = [7, 0, 9, 4]
  _assert_same(cache.states(order),
               pipeline.batches([examples[i] for i in order], 4).__next__()
               .state)
  shards = sorted(cache.folder.glob('shard-*'))
  assert len(shards) == 3  # 4 + 4 + 2
  # A second build opens the same files without writing anything.
  stamp = [p.stat().st_mtime_ns for p in shards]
  again = scenario_cache.build(files, SMALL, tmp_path / 'cache',
                               shard_size=4)
  assert again.folder == cache.folder
  assert [p.stat().st_mtime_ns for p in shards] == stamp
  # Another reader config is another cache.
  other = womd.ReaderConfig(max_num_objects=4, max_roadgraph_points=600,
                            max_traffic_lights=2)
  assert scenario_cache.cache_key(files, other) != cache.folder.name
  with pytest.raises(IndexError, match='out of range'):
    cache.states([10])


def test_interrupted_build_resumes_without_converting_again(files, tmp_path,
                                                            monkeypatch):
  root = tmp_path / 'cache'
  calls = []
  real = womd.convert_counted

  def counted(scenario, *args, **kwargs):
    calls.append(scenario.scenario_id)
    if len(calls) == 7:  # dies while filling the second shard
      raise KeyboardInterrupt
    return real(scenario, *args, **kwargs)

  monkeypatch.setattr(womd, 'convert_counted', counted)
  with pytest.raises(KeyboardInterrupt):
    scenario_cache.build(files, SMALL, root, shard_size=4)
  folder = root / scenario_cache.cache_key(files, SMALL)
  assert not (folder / scenario_cache.MANIFEST).exists()
  assert [p.name for p in folder.iterdir()] == ['shard-00000']
  calls.clear()
  monkeypatch.setattr(womd, 'convert_counted', real)
  monkeypatch.setattr(womd, 'convert_counted',
                      lambda s, *a, **k: calls.append(s.scenario_id) or
                      real(s, *a, **k))
  cache = scenario_cache.build(files, SMALL, root, shard_size=4)
  assert calls == [f's{i}' for i in range(4, 10)]  # the first 4 kept
  fresh = scenario_cache.build(files, SMALL, tmp_path / 'fresh',
                               shard_size=4)
  assert cache.scenario_ids == fresh.scenario_ids
  _assert_same(cache.states(range(10)), fresh.states(range(10)))


def test_a_damaged_cache_names_its_file(files, tmp_path):
  cache = scenario_cache.build(files, SMALL, tmp_path / 'cache',
                               shard_size=4)
  manifest = cache.folder / scenario_cache.MANIFEST
  saved = manifest.read_text()
  manifest.write_text('{"shards": ')
  with pytest.raises(ValueError, match='manifest.json: not a scenario cache'):
    scenario_cache.open_cache(cache.folder, SMALL)
  manifest.write_text(saved)
  (cache.folder / 'shard-00001' / 'leaf-000.npy').write_bytes(b'junk')
  with pytest.raises(ValueError, match='shard-00001: unreadable'):
    scenario_cache.open_cache(cache.folder, SMALL)
  data = json.loads(saved)
  data['reader'] = 'other'
  manifest.write_text(json.dumps(data))
  with pytest.raises(ValueError, match='another state layout or reader'):
    scenario_cache.open_cache(cache.folder, SMALL)
