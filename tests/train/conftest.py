"""Small scenario files and a tiny model for the training tests."""

import numpy as np
import pytest

from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.model import features
from prefalign.model import motion_lm
from prefalign.train import loop
from prefalign.train import steps

TINY_MODEL = motion_lm.ModelConfig(
    width=32, num_heads=2, decoder_layers=1, map_neighbours=8,
    agent_neighbours=4, scene=features.SceneConfig(num_map_chunks=32))
READER = womd.ReaderConfig(max_num_objects=8, max_roadgraph_points=1200,
                           max_traffic_lights=2)


def write_scenarios(path, num, seed):
  rng = np.random.default_rng(seed)
  with tfrecord.TFRecordWriter(path) as writer:
    for i in range(num):
      scenario = synthetic.straight_road_scenario(
          f'syn-{seed}-{i}', seed=int(rng.integers(2**31)),
          num_vehicles=int(rng.integers(2, 6)), num_pedestrians=1,
          num_cyclists=int(rng.integers(0, 2)),
          with_traffic_light=bool(i % 2))
      writer.write(scenario.SerializeToString())
  return str(path)


@pytest.fixture(scope='session')
def scenario_files(tmp_path_factory):
  root = tmp_path_factory.mktemp('scenarios')
  return {'train': write_scenarios(root / 'train.tfrecord', 24, 0),
          'eval': write_scenarios(root / 'eval.tfrecord', 8, 1)}


def tiny_config(files, **kw) -> loop.TrainConfig:
  num_steps = kw.pop('num_steps', 2)
  base = dict(
      train_files=(files['train'],), eval_sets=(('eval', (files['eval'],)),),
      model=TINY_MODEL, reader=READER, batch_size=8, num_steps=num_steps,
      optimizer=steps.OptimizerConfig(learning_rate=3e-3, warmup_steps=1,
                                      total_steps=num_steps),
      shuffle_buffer=8, log_every=1, eval_every=num_steps, eval_batches=1,
      checkpoint_every=num_steps, unigram_batches=1, progress=False)
  base.update(kw)
  return loop.TrainConfig(**base)
