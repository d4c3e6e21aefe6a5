"""The four hot paths on one accelerator, each against its compute floor.

On whatever device jax finds (a GPU when present), after compilation:

* **train**: the data-parallel pre-training step (``steps.train_step``:
  tokenization, scene features, forward, backward, AdamW) of the default
  ~1M-parameter model on ``--train_batch`` scenarios x 64 agent rows:
  examples/s, tokens/s and model FLOP utilisation (matrix-product FLOPs of
  forward and backward per second over the device's matrix peak);
* **sampler**: ``rollout.sample_rollouts``, 32 rollouts x 128 agent rows x
  80 steps of one scenario: seconds per scenario; **sampler_bf16**
  (``--only ...,sampler_bf16``) the same with ``SamplingConfig(dtype=
  'bfloat16')`` (its floor still at the FP32-input peak);
* **ranking**: ``ranking.rank_rollouts`` of 64 rollouts x 128 agents x 80
  steps (occupancy features, 8,192 entropic OT problems of 80 x 80, pairs)
  on constant-velocity rollouts with a random-walk drift: ms per scenario;
* **wosac**: ``wosac.scenario_metrics`` (2025 config) of 32 rollouts x 128
  rows: ms per scenario;
* **collect** (``--only ...,collect``): ``collection.collect`` at 64
  rollouts x 128 rows, one scenario per local device per call (sample,
  rank, write records): scenarios/s;
* **loop** (``--only train,...,loop``): the whole pre-training loop
  (``train_and_evaluate`` with ``data_cache``) at the train row's size:
  steps/s and their share of the step alone.

Floors: FLOPs counted on the jaxpr with every loop unrolled
(``benchmarks/_flops.py``; XLA's own cost analysis counts a loop body once)
over the device's peaks: matrix products at the matrix (tensor-core) peak,
element-wise work at the vector peak. A floor ignores memory traffic and
launch latency, so it is a lower bound; the gap says how far from compute
bound each path runs. Peaks are dense FP32-input figures from the vendor
(a TF32 tensor-core peak for matrix products on NVIDIA GPUs, which XLA uses
for float32 products at default precision), or ``--peak_*`` for other
devices (for a CPU: cores x FLOP per cycle x clock).

Scenarios: the shared real WOMD ones when present, read with 128 (64) rows,
else synthetic ones padded to the same sizes (the work does not depend on
how many rows hold agents).

Run from the repository root::

  python benchmarks/accelerator.py [--json out.json] [--quick]
      [--peak_matmul_tflops X --peak_vector_tflops Y]
"""

import argparse
import functools
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _flops
import _shared

from prefalign import datatypes
from prefalign import rollout
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.metrics import wosac
from prefalign.model import motion_lm
from prefalign.preference import collection
from prefalign.preference import occupancy
from prefalign.preference import ranking
from prefalign.train import loop
from prefalign.train import parallel
from prefalign.train import steps
from prefalign.train.state import TrainState

# Dense peaks in TFLOP/s: (matrix products with FP32 inputs, i.e. TF32 tensor
# cores; FP32 vector), by device-kind substring, most specific first.
PEAKS = (
    ('H100 PCIe', 378.0, 51.2),
    ('H100', 494.7, 66.9),  # SXM
    ('H200', 494.7, 66.9),
    ('A100', 156.0, 19.5),
    ('L4', 60.0, 30.3),
)


def peaks(args) -> tuple[float, float, str]:
  """(matrix, vector) peak FLOP/s of device 0 and where they came from."""
  if args.peak_matmul_tflops and args.peak_vector_tflops:
    return (args.peak_matmul_tflops * 1e12, args.peak_vector_tflops * 1e12,
            'given')
  kind = jax.devices()[0].device_kind
  for name, matmul, vector in PEAKS:
    if name in kind:
      return matmul * 1e12, vector * 1e12, f'table ({name})'
  raise SystemExit(f'no peak known for {kind!r}: pass --peak_matmul_tflops '
                   'and --peak_vector_tflops (for a CPU: cores x FLOP per '
                   'cycle x GHz / 1000, e.g. 0.16 for 2 AVX2 cores)')


def states(num: int, rows: int) -> tuple[list, str]:
  """``num`` unbatched states of ``rows`` object rows, and their source."""
  reader = womd.ReaderConfig(max_num_objects=rows)
  files = sorted(str(p) for p in (_shared.WOMD / 'real').glob(
      'real.tfrecord-*'))
  out = []
  if files:
    for ex in womd.read_examples(files, reader):
      out.append(ex.state)
      if len(out) == num:
        return out, 'shared real WOMD'
  for i in range(num - len(out)):
    s = synthetic.straight_road_scenario(f'bench-{i}', seed=i,
                                         num_vehicles=min(rows, 40),
                                         road_length=400.0)
    out.append(womd.state_from_scenario(s, reader).state)
  return out, 'synthetic' if not files else 'shared real WOMD + synthetic'


def _timed(fn, args_list, repeats: int) -> tuple[float, float, list]:
  """(first call s, median s of the next calls, outputs)."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args_list[0]))
  first = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args_list[(i + 1) % len(args_list)]))
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times), out


def _floor(counts, peak_matmul, peak_vector) -> float:
  return (counts['matmul'] / peak_matmul +
          (counts['elementwise'] + counts['transcendental']) / peak_vector)


def _entry(seconds, first, counts, peak_matmul, peak_vector, **extra):
  floor = _floor(counts, peak_matmul, peak_vector)
  return {'seconds': seconds, 'first_call_s': first,
          'gflop': counts['total'] / 1e9,
          'matmul_gflop': counts['matmul'] / 1e9,
          'floor_seconds': floor, 'gap': seconds / floor, **extra}


def bench_train(model, batch_size, sts, repeats, peak_matmul, peak_vector):
  mesh = parallel.make_mesh()
  batch = datatypes.stack([sts[i % len(sts)] for i in range(batch_size)])
  opt = steps.OptimizerConfig(total_steps=1000)
  tx = steps.make_optimizer(opt)
  scene, toks = steps.model_inputs(batch, model)
  params = motion_lm.init(jax.random.key(0), model, scene, toks)
  state = jax.device_put(TrainState.create(params, tx),
                         parallel.replicated(mesh))
  step = functools.partial(steps.train_step, model_config=model,
                           optimizer_config=opt)
  fn = parallel.jit_step(step, mesh)
  sharded = parallel.shard_batch(batch, mesh)
  counts = _flops.count(step, state, batch, jax.random.key(0))
  holder = {'state': state}

  def run(rng):
    holder['state'], metrics = fn(holder['state'], sharded, rng)
    return metrics

  first, per, metrics = _timed(
      run, [(jax.random.key(i),) for i in range(repeats + 1)], repeats)
  tokens = float(metrics['count'])
  return _entry(per, first, counts, peak_matmul, peak_vector,
                batch_size=batch_size, agents=batch.log_trajectory.shape[-2],
                examples_per_s=batch_size / per, tokens_per_s=tokens / per,
                mfu=counts['matmul'] / per / peak_matmul,
                num_params=motion_lm.count_params(params))


def bench_sampler(model, sts, num_rollouts, repeats, peak_matmul,
                  peak_vector, dtype='float32'):
  one = jax.tree.map(lambda a: a[None], sts[0])
  scene, toks = steps.model_inputs(one, model)
  params = motion_lm.init(jax.random.key(0), model, scene, toks)
  sample = functools.partial(rollout.sample_rollouts, config=model,
                             num_rollouts=num_rollouts,
                             sampling=rollout.SamplingConfig(dtype=dtype))
  fn = jax.jit(sample)
  batches = [(params, jax.tree.map(lambda a: a[None], s), jax.random.key(i))
             for i, s in enumerate(sts)]
  first, per, _ = _timed(lambda *a: fn(*a).trajectory.x, batches, repeats)
  counts = _flops.count(sample, *batches[0])
  return _entry(per, first, counts, peak_matmul, peak_vector,
                rollouts=num_rollouts, agents=one.log_trajectory.shape[-2],
                dtype=dtype)


def _perturbed(state, num_rollouts, seed):
  """Log rollouts with smooth noise: distinct, plausible occupancies."""
  log = wosac.log_rollouts(state, num_rollouts)
  rng = np.random.default_rng(seed)
  drift = np.cumsum(rng.normal(0, 0.05, log.x.shape + (2,)), axis=-2)
  return log.replace(x=log.x + drift[..., 0].astype(np.float32),
                     y=log.y + drift[..., 1].astype(np.float32))


def _spreading(state, num_rollouts, seed):
  """Rollouts shaped like a sampler's: every simulated agent moves at every
  step (constant velocity with a random-walk drift, so rollouts spread
  apart and leave the road); the log's parked placeholders would send the
  simulated agents' corners ~100 km away, which no sampler does."""
  cv = wosac.constant_velocity_rollouts(state, num_rollouts)
  rng = np.random.default_rng(seed)
  drift = np.cumsum(rng.normal(0, 0.1, cv.x.shape + (2,)), axis=-2)
  return cv.replace(x=cv.x + drift[..., 0].astype(np.float32),
                    y=cv.y + drift[..., 1].astype(np.float32))


def bench_ranking(sts, num_rollouts, repeats, peak_matmul, peak_vector):
  config = ranking.RankingConfig()
  fn = jax.jit(functools.partial(ranking.rank_rollouts, config=config))
  calls = [(s, _spreading(s, num_rollouts, i), jax.random.key(i))
           for i, s in enumerate(sts)]
  first, per, _ = _timed(lambda *a: fn(*a).distances, calls, repeats)
  # The Sinkhorn loop's trips: chunks of iterations run by the slowest
  # problem of the batch (all run until every one converges).
  phi = jax.jit(occupancy.occupancy_features)(calls[0][0], calls[0][1])
  weights = jnp.asarray(occupancy.feature_weights(config.feature_set,
                                                  config.weights))
  res = jax.jit(functools.partial(ranking.agent_distances,
                                  sinkhorn=config.sinkhorn))(phi, weights)
  iterations = int(np.max(res.iterations))
  chunks = -(-iterations // 50)
  counts = _flops.count(functools.partial(ranking.rank_rollouts,
                                          config=config), *calls[0],
                        while_trips=chunks)
  return _entry(per, first, counts, peak_matmul, peak_vector,
                rollouts=num_rollouts,
                agents=calls[0][0].log_trajectory.shape[-2],
                ot_problems=num_rollouts * calls[0][0].log_trajectory.shape[-2],
                sinkhorn_iterations_max=iterations)


def bench_wosac(sts, num_rollouts, repeats, peak_matmul, peak_vector):
  fn = jax.jit(wosac.scenario_metrics)
  calls = [(s, _perturbed(s, num_rollouts, i)) for i, s in enumerate(sts)]
  first, per, _ = _timed(lambda *a: fn(*a)['metametric'], calls, repeats)
  counts = _flops.count(wosac.scenario_metrics, *calls[0])
  return _entry(per, first, counts, peak_matmul, peak_vector,
                rollouts=num_rollouts,
                agents=calls[0][0].log_trajectory.shape[-2])


def bench_collect(model, sts, num_rollouts, num_scenarios):
  """``collection.collect`` (sample, rank, write records), one scenario per
  local device per call: scenarios/s after the first call (compilation)."""
  one = jax.tree.map(lambda a: a[None], sts[0])
  params = motion_lm.init(jax.random.key(0), model,
                          *steps.model_inputs(one, model))
  per_call = jax.local_device_count()
  examples = [womd.ScenarioExample(state=sts[i % len(sts)],
                                   scenario_id=f'bench-{i}')
              for i in range(per_call * (num_scenarios + 1))]
  with tempfile.TemporaryDirectory() as out:
    kw = dict(num_rollouts=num_rollouts, progress=False,
              scenarios_per_shard=per_call)
    t0 = time.perf_counter()
    collection.collect(params, model, examples[:per_call],
                       pathlib.Path(out) / 'first', **kw)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    collection.collect(params, model, examples[per_call:],
                       pathlib.Path(out) / 'rest', **kw)
    seconds = (time.perf_counter() - t0) / (len(examples) - per_call)
  return {'seconds': seconds, 'first_call_s': first,
          'scenarios_per_s': 1 / seconds, 'rollouts': num_rollouts,
          'agents': sts[0].log_trajectory.shape[-2],
          'scenarios_per_call': per_call}


def bench_loop(model, batch_size, rows, num_steps, step_seconds):
  """``train_and_evaluate`` with ``data_cache`` on the shared real WOMD
  files (synthetic ones without them): steps/s of the logged windows after
  the first, against the step alone (``step_seconds``, the train row)."""
  files = sorted(str(p) for p in (_shared.WOMD / 'real').glob(
      'real.tfrecord-*'))
  with tempfile.TemporaryDirectory() as root:
    root = pathlib.Path(root)
    if not files:
      files = [str(root / 'synthetic.tfrecord')]
      tfrecord.write_records(files[0], [
          synthetic.straight_road_scenario(f'loop-{i}', seed=i,
                                           num_vehicles=min(rows, 40),
                                           road_length=400.0
                                           ).SerializeToString()
          for i in range(2 * batch_size)])
    log_every = max(num_steps // 4, 1)
    config = loop.TrainConfig(
        train_files=tuple(files), model=model, batch_size=batch_size,
        reader=womd.ReaderConfig(max_num_objects=rows), num_steps=num_steps,
        log_every=log_every, eval_every=num_steps,
        checkpoint_every=num_steps, unigram_batches=1, progress=False,
        data_cache=str(root / 'cache'),
        optimizer=steps.OptimizerConfig(total_steps=num_steps))
    loop.train_and_evaluate(config, root / 'run')
    rates = [json.loads(line)['steps_per_second'] for line in
             (root / 'run' / 'metrics.jsonl').read_text().splitlines()
             if '"split": "train"' in line]
  rate = statistics.median(rates[1:])
  return {'seconds': 1 / rate, 'steps_per_s': rate,
          'of_step_alone': step_seconds * rate,
          'batch_size': batch_size, 'agents': rows,
          'source': 'synthetic' if 'synthetic' in files[0] else 'shared real'}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--train_batch', type=int, default=32)
  parser.add_argument('--scenarios', type=int, default=3)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--only', default='train,sampler,ranking,wosac')
  parser.add_argument('--collect_scenarios', type=int, default=8,
                      help='calls timed by the collect row')
  parser.add_argument('--loop_steps', type=int, default=40)
  parser.add_argument('--quick', action='store_true',
                      help='tiny sizes and model: checks the script runs')
  parser.add_argument('--peak_matmul_tflops', type=float, default=None)
  parser.add_argument('--peak_vector_tflops', type=float, default=None)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  model = motion_lm.ModelConfig()
  rows, train_rows, sample_r, rank_r, metric_r = 128, 64, 32, 64, 32
  if args.quick:
    model = motion_lm.ModelConfig(width=32, num_heads=2, decoder_layers=1)
    rows, train_rows, sample_r, rank_r, metric_r = 16, 16, 4, 32, 4
    args.train_batch, args.scenarios, args.repeats = 8, 2, 1
  peak_matmul, peak_vector, peak_source = peaks(args)
  device = jax.devices()[0]
  sts, source = states(args.scenarios, rows)
  train_sts, _ = states(args.scenarios, train_rows)
  result = {
      'date': time.strftime('%Y-%m-%d'), 'device': device.device_kind,
      'num_devices': jax.device_count(), 'backend': jax.default_backend(),
      'jax': jax.__version__, 'cpus': os.cpu_count(),
      'machine': platform.machine(), 'source': source,
      'peak_matmul_tflops': peak_matmul / 1e12,
      'peak_vector_tflops': peak_vector / 1e12, 'peaks_from': peak_source,
      'results': {}}
  print(f'{device.device_kind} x{jax.device_count()} '
        f'({jax.default_backend()}), jax {jax.__version__}; {source} '
        f'scenarios; peaks {peak_matmul / 1e12:g} / {peak_vector / 1e12:g} '
        f'TFLOP/s ({peak_source})', flush=True)
  benches = {
      'train': lambda: bench_train(model, args.train_batch, train_sts,
                                   args.repeats, peak_matmul, peak_vector),
      'sampler': lambda: bench_sampler(model, sts, sample_r, args.repeats,
                                       peak_matmul, peak_vector),
      'sampler_bf16': lambda: bench_sampler(
          model, sts, sample_r, args.repeats, peak_matmul, peak_vector,
          dtype='bfloat16'),
      'ranking': lambda: bench_ranking(sts, rank_r, args.repeats,
                                       peak_matmul, peak_vector),
      'wosac': lambda: bench_wosac(sts, metric_r, args.repeats, peak_matmul,
                                   peak_vector),
      'collect': lambda: bench_collect(model, sts, rank_r,
                                       args.collect_scenarios),
      'loop': lambda: bench_loop(
          model, args.train_batch, train_rows, args.loop_steps,
          result['results'].get('train', {}).get('seconds', float('nan'))),
  }
  for name in args.only.split(','):
    if name not in benches:
      raise SystemExit(f'--only: unknown benchmark {name!r} '
                       f'({", ".join(benches)})')
    entry = benches[name]()
    result['results'][name] = entry
    print(name, json.dumps(entry), flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  print('| path | size | time | floor | gap | notes |')
  print('|---|---|---|---|---|---|')
  for name, e in result['results'].items():
    size = f'{e.get("batch_size", e.get("rollouts"))} x {e["agents"]}'
    if name == 'collect':
      print(f'| collect | {size} | {1e3 * e["seconds"]:.2f} ms | - | - | '
            f'{e["scenarios_per_s"]:.2f} scenarios/s |')
      continue
    if name == 'loop':
      print(f'| loop | {size} | {1e3 * e["seconds"]:.2f} ms | - | - | '
            f'{e["steps_per_s"]:.2f} steps/s, '
            f'{100 * e["of_step_alone"]:.0f} % of the step alone |')
      continue
    note = (f'{e["examples_per_s"]:.1f} examples/s, '
            f'{e["tokens_per_s"]:,.0f} tokens/s, MFU {100 * e["mfu"]:.2f}%'
            if name == 'train' else f'{e["gflop"]:.1f} GFLOP')
    print(f'| {name} | {size} | {1e3 * e["seconds"]:.2f} ms | '
          f'{1e3 * e["floor_seconds"]:.3f} ms | {e["gap"]:.0f}x | {note} |')


if __name__ == '__main__':
  main()
