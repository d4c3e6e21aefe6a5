"""Throughput of the data-parallel pre-training step.

Times ``train_step`` (forward, backward, AdamW update; tokenization and scene
features included, as in training) on batches of SUMO scenarios, for the
default ~1M-parameter model, after compilation: steps/s, examples/s
(scenarios/s) and tokens/s (labelled expert tokens per second). Run on
whatever backend jax finds (CPU here; a GPU when one is present)::

  python benchmarks/train_throughput.py [--batch_sizes 8,16] [--agents 64]
      [--steps 5] [--sumo_dir DIR] [--json out.json]
"""

import argparse
import functools
import json
import pathlib
import platform
import tempfile
import time

import jax

from prefalign import datatypes
from prefalign.data import sumo
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.train import parallel
from prefalign.train import steps
from prefalign.train.state import TrainState


def _scenarios(sumo_dir: str, num: int, agents: int):
  out = pathlib.Path(sumo_dir)
  sumo.generate(sumo.SumoConfig(network='research_intersection',
                                num_scenarios=num, seed=0), out)
  reader = womd.ReaderConfig(max_num_objects=agents)
  return [e.state for e in womd.read_examples(
      sorted(str(p) for p in out.glob('*.tfrecord-*')), reader)]


def measure(states, batch_size: int, num_steps: int,
            model: motion_lm.ModelConfig) -> dict:
  mesh = parallel.make_mesh()
  batch = datatypes.stack([states[i % len(states)]
                           for i in range(batch_size)])
  opt = steps.OptimizerConfig(total_steps=1000)
  tx = steps.make_optimizer(opt)
  scene, toks = steps.model_inputs(batch, model)
  params = motion_lm.init(jax.random.key(0), model, scene, toks)
  state = jax.device_put(TrainState.create(params, tx),
                         parallel.replicated(mesh))
  fn = parallel.jit_step(functools.partial(
      steps.train_step, model_config=model, optimizer_config=opt), mesh)
  sharded = parallel.shard_batch(batch, mesh)
  t0 = time.perf_counter()
  state, metrics = fn(state, sharded, jax.random.key(0))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(num_steps):
    state, metrics = fn(state, sharded, jax.random.key(i))
  jax.block_until_ready(metrics)
  dt = (time.perf_counter() - t0) / num_steps
  tokens = float(metrics['count'])
  return {'batch_size': batch_size, 'first_step_s': compile_s,
          'step_s': dt, 'steps_per_s': 1 / dt,
          'examples_per_s': batch_size / dt, 'tokens_per_s': tokens / dt,
          'tokens_per_batch': tokens,
          'num_params': motion_lm.count_params(params)}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--batch_sizes', default='8,16')
  parser.add_argument('--agents', type=int, default=64)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--sumo_dir', default=None)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    states = _scenarios(args.sumo_dir or tmp, 32, args.agents)
  model = motion_lm.ModelConfig()
  device = jax.devices()[0]
  print(f'{device.device_kind} x{jax.device_count()} ({jax.default_backend()}'
        f'), jax {jax.__version__}, {platform.processor() or "cpu"}')
  rows = []
  for bs in (int(b) for b in args.batch_sizes.split(',')):
    r = measure(states, bs, args.steps, model)
    r['agents'] = args.agents
    rows.append(r)
    print(f'batch {bs:4d} x {args.agents} agents: {r["step_s"]:.3f} s/step, '
          f'{r["examples_per_s"]:.1f} examples/s, '
          f'{r["tokens_per_s"]:.0f} tokens/s (first step '
          f'{r["first_step_s"]:.1f} s)', flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        {'device': device.device_kind, 'backend': jax.default_backend(),
         'jax': jax.__version__, 'rows': rows}, indent=1))


if __name__ == '__main__':
  main()
