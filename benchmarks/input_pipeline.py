"""Does the pre-training loop wait on its data? Step alone against the loop.

A model small enough that the input pipeline is exposed (``--width``; the
default 32-wide, one-layer model steps in tens of milliseconds on a CPU),
on SUMO scenarios read with ``--rows`` object rows, batch ``--batch``:

* **step alone**: the jitted data-parallel ``train_step`` on one batch
  already on the device, back to back: the rate the loop could reach;
* **loop, streaming**: ``train.train_and_evaluate`` as the stages run it,
  every batch parsed and converted from the TFRecords by the prefetch
  thread;
* **loop, cached**: the same with ``data_cache`` (the files converted
  once beforehand; the build time is reported on its own);

loop rates are the logged steps/s of the windows after the first (which
holds the compilation). Host-side throughput: scenarios/s converted by one
core (parse + convert), and read back from the cache.

Run from the repository root::

  python benchmarks/input_pipeline.py [--steps 60] [--batch 8] [--rows 32]
      [--width 32] [--json out.json]
"""

import argparse
import dataclasses
import json
import pathlib
import platform
import tempfile
import time

import jax
import numpy as np

from prefalign.data import cache as scenario_cache
from prefalign.data import pipeline
from prefalign.data import sumo
from prefalign.data import womd
from prefalign.model import features
from prefalign.model import motion_lm
from prefalign.train import loop
from prefalign.train import parallel
from prefalign.train import steps
from prefalign.train.state import TrainState


def _loop_rate(config, workdir) -> float:
  loop.train_and_evaluate(config, workdir)
  rates = [json.loads(line)['steps_per_second'] for line in
           (workdir / 'metrics.jsonl').read_text().splitlines()
           if '"split": "train"' in line]
  return float(np.median(rates[1:]))


def _step_rate(config, batch, steps_n) -> float:
  mesh = parallel.make_mesh()
  tx = steps.make_optimizer(config.optimizer)
  scene, toks = steps.model_inputs(jax.tree.map(lambda a: a[:1], batch),
                                   config.model)
  params = motion_lm.init(jax.random.key(0), config.model, scene, toks)
  state = parallel.replicate(TrainState.create(params, tx), mesh)
  fn = parallel.jit_step(lambda s, b, r: steps.train_step(
      s, b, r, model_config=config.model,
      optimizer_config=config.optimizer), mesh)
  sharded = parallel.shard_batch(batch, mesh)
  state, m = fn(state, sharded, jax.random.key(0))
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for i in range(steps_n):
    state, m = fn(state, sharded, jax.random.key(i))
  jax.block_until_ready(m)
  return steps_n / (time.perf_counter() - t0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=60)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--rows', type=int, default=32)
  parser.add_argument('--width', type=int, default=32)
  parser.add_argument('--scenarios', type=int, default=64)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  root = pathlib.Path(tempfile.mkdtemp(prefix='input_pipeline_'))
  sumo.generate(sumo.SumoConfig(network='research_intersection',
                                num_scenarios=args.scenarios, seed=0),
                root / 'data')
  files = tuple(sorted(str(p) for p in (root / 'data').glob('*.tfrecord-*')))
  reader = womd.ReaderConfig(max_num_objects=args.rows)
  model = motion_lm.ModelConfig(
      width=args.width, num_heads=2, decoder_layers=1,
      scene=features.SceneConfig(num_map_chunks=64))
  log_every = max(args.steps // 6, 1)
  config = loop.TrainConfig(
      train_files=files, model=model, reader=reader, batch_size=args.batch,
      num_steps=args.steps, log_every=log_every, eval_every=args.steps,
      checkpoint_every=args.steps, unigram_batches=1, progress=False,
      optimizer=steps.OptimizerConfig(warmup_steps=1,
                                      total_steps=args.steps))

  t0 = time.perf_counter()
  examples = list(pipeline.scenarios(files, pipeline.PipelineConfig(
      reader=reader)))
  convert_rate = len(examples) / (time.perf_counter() - t0)
  t0 = time.perf_counter()
  cache = scenario_cache.build(files, reader, root / 'cache')
  build_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  rng = np.random.default_rng(0)
  reads = 0
  while time.perf_counter() - t0 < 2.0:
    cache.states(rng.choice(len(cache), args.batch, replace=False))
    reads += args.batch
  cache_rate = reads / (time.perf_counter() - t0)

  batch = jax.tree.map(lambda *a: np.stack(a),
                       *[ex.state for ex in examples[:args.batch]])
  result = {
      'date': time.strftime('%Y-%m-%d'),
      'machine': f'{jax.devices()[0].device_kind} ({jax.default_backend()}),'
                 f' {jax.device_count()} device(s), jax {jax.__version__}, '
                 f'{platform.machine()}',
      'args': vars(args),
      'convert_scenarios_per_s': convert_rate,
      'cache_build_s': build_s,
      'cache_read_scenarios_per_s': cache_rate,
      'step_alone_steps_per_s': _step_rate(config, batch, args.steps),
      'loop_streaming_steps_per_s': _loop_rate(config, root / 'streaming'),
      'loop_cached_steps_per_s': _loop_rate(
          dataclasses.replace(config, data_cache=str(root / 'cache')),
          root / 'cached'),
  }
  alone = result['step_alone_steps_per_s']
  print(json.dumps(result, indent=1))
  print('| path | steps/s | of the step alone |')
  print('|---|---|---|')
  for name in ('step_alone', 'loop_streaming', 'loop_cached'):
    rate = result[f'{name}_steps_per_s']
    print(f'| {name} | {rate:.2f} | {100 * rate / alone:.0f} % |')
  print(f'host: {convert_rate:.1f} scenarios/s converted (one thread), '
        f'{cache_rate:.0f} scenarios/s read from the cache; cache built '
        f'in {build_s:.1f} s')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
