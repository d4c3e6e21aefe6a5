"""Speed of the closed-loop rollout sampler.

Samples 32 rollouts x 128 agent rows x 80 steps (16 tokens) per scenario
with the default ~1M-parameter model, one scenario per jitted call, and
reports after compilation (compile time separately): seconds per scenario
and agent-steps per second (32 x 128 x 80 per scenario). The weights do not
change the work, so fresh ones are used unless ``--checkpoint`` is given.
The FLOP floor is the sampler's floating-point operations, counted on its
jaxpr with the token loop unrolled (``_flops.py``; XLA's cost analysis
counts a loop body once), divided by the device's peak (``--peak_gflops``;
for this CPU the AVX2 FMA peak of its cores). Scenarios: the shared real
WOMD ones when present (128 rows each), else SUMO.

``--envs`` times the same sampler stepping other environments on the same
scenarios in the same process (compare them as ratios): ``kinematic`` (the
default, current step only), ``step`` (the whole ``SimulatorState`` through
``sim.env.step``) and ``waymax`` (Waymax's ``MultiAgentEnvironment`` through
``prefalign.integrations.waymax``; needs Waymax installed).

Run from the repository root::

  python benchmarks/rollout_speed.py [--scenarios 3] [--rollouts 32]
      [--peak_gflops 160] [--envs kinematic,step,waymax] [--json out.json]
"""

import argparse
import functools
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

import _flops  # this folder
import _shared  # this folder
import jax

from prefalign import datatypes
from prefalign import rollout
from prefalign.data import sumo
from prefalign.data import womd
from prefalign.model import features
from prefalign.model import motion_lm
from prefalign.model import tokenizer
from prefalign.sim import env as sim_env


def _states(num: int):
  reader = womd.ReaderConfig(max_num_objects=128)
  files = sorted(str(p) for p in (_shared.WOMD / 'real').glob(
      'real.tfrecord-*'))
  if files:
    source = 'shared real WOMD'
  else:
    tmp = tempfile.mkdtemp()
    sumo.generate(sumo.SumoConfig(network='research_intersection',
                                  num_scenarios=num, seed=0, radius=120.0),
                  tmp)
    files = sorted(str(p) for p in pathlib.Path(tmp).glob('*.tfrecord-*'))
    source = 'SUMO research_intersection'
  examples = []
  for ex in womd.read_examples(files, reader):
    examples.append(ex)
    if len(examples) == num:
      break
  return [jax.tree.map(lambda a: a[None], e.state) for e in examples], source


def _environment(name: str, rows: int):
  """The sampler's environment called ``name`` (None: the default)."""
  if name == 'kinematic':
    return None
  if name == 'step':
    return sim_env.StepEnvironment()
  if name == 'waymax':
    from prefalign.integrations import waymax as wx
    return wx.WaymaxEnvironment(wx.make_environment(rows))
  raise SystemExit(f'--envs: unknown environment {name!r} '
                   '(kinematic, step, waymax)')


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--scenarios', type=int, default=3)
  parser.add_argument('--rollouts', type=int, default=32)
  parser.add_argument('--peak_gflops', type=float, default=None,
                      help='device peak (GFLOP/s) for the floor')
  parser.add_argument('--envs', default='kinematic',
                      help='comma-separated: kinematic, step, waymax')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  config = motion_lm.ModelConfig()
  states, source = _states(args.scenarios)
  one = states[0]
  scene = features.scene_from_state(one, config.scene)
  toks = tokenizer.tokenize(one.log_trajectory,
                            one.object_metadata.object_types,
                            config.tokenizer)
  params = motion_lm.init(jax.random.key(0), config, scene, toks)
  rows = one.log_trajectory.x.shape[-2]
  agent_steps = args.rollouts * rows * datatypes.NUM_SIM_STEPS
  device = jax.devices()[0]
  result = {
      'device': device.device_kind, 'backend': jax.default_backend(),
      'jax': jax.__version__, 'cpus': os.cpu_count(),
      'machine': platform.machine(), 'source': source,
      'rollouts': args.rollouts, 'agent_rows': rows,
      'steps': datatypes.NUM_SIM_STEPS, 'environments': {},
  }
  for name in args.envs.split(','):
    fn = functools.partial(
        rollout.sample_rollouts, config=config, num_rollouts=args.rollouts,
        env=_environment(name, rows))
    sample = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = sample.lower(params, one, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    # Counted on the jaxpr, token loop unrolled (XLA's cost analysis counts
    # the scan body once).
    flops = _flops.count(fn, params, one, jax.random.key(0))['total']
    times = []
    for i, state in enumerate([one] + states):
      t0 = time.perf_counter()
      out = compiled(params, state, jax.random.key(i))
      jax.block_until_ready(out.trajectory.x)
      if i:  # the first call warms caches
        times.append(time.perf_counter() - t0)
    per = statistics.median(times)
    entry = {
        'compile_s': compile_s, 'seconds_per_scenario': per,
        'all_seconds': times, 'agent_steps_per_second': agent_steps / per,
        'flops_per_scenario': flops,
    }
    if args.peak_gflops:
      floor = flops / (args.peak_gflops * 1e9)
      entry.update(peak_gflops=args.peak_gflops, floor_seconds=floor,
                   gap=per / floor)
    result['environments'][name] = entry
    print(name, json.dumps(entry), flush=True)
  first = result['environments'][args.envs.split(',')[0]]
  result.update(first)  # the first environment's numbers at the top level
  for entry in result['environments'].values():
    entry['ratio_to_first'] = (entry['seconds_per_scenario'] /
                               first['seconds_per_scenario'])
  print(json.dumps(result, indent=1))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
