"""What the bfloat16 sampler costs in realism (``SamplingConfig.dtype``).

One checkpoint, the same real WOMD scenarios and the same sampler keys,
sampled once with float32 layers and once with bfloat16 layers:

1. **Per step**: on the log's own tokens (teacher forced), the KL divergence
   KL(p_float32 || p_bfloat16) of the next-token distributions, and how
   often their most likely tokens agree.
2. **Closed loop**: WOSAC 2025 realism, collision and off-road rates of
   ``--rollouts`` rollouts per scenario in each precision, and the paired
   per-scenario difference (bfloat16 - float32) with a 95 % bootstrap
   interval over scenarios. The two samplers share their keys, so where the
   distributions agree the rollouts do too; they part at the first token on
   which rounding flips the draw, and compound from there. For scale, the
   same float32 sampler with other keys (``seed 1``) gives the difference
   that any change of the random draws makes.
3. Seconds per scenario of each (sampling and scoring), after compilation,
   on this device.

Writes ``--json`` and prints a table. Run::

  python benchmarks/bf16_sampler.py \\
      --checkpoint runs/demo/pretrain/checkpoints [--json out.json] \\
      [--files real.tfrecord-00001-of-00002] [--scenarios 20] [--rollouts 32]
"""

import json
import pathlib
import platform
import time

import _shared  # this folder
import jax
import jax.numpy as jnp
import numpy as np

from prefalign import evaluation
from prefalign import rollout
from prefalign.model import motion_lm
from prefalign.train import steps

DTYPES = ('float32', 'bfloat16')
# (name, compute dtype, sampler seed): the float32 run with other keys is
# the yardstick for the bfloat16 difference.
RUNS = (('float32', 'float32', 0), ('bfloat16', 'bfloat16', 0),
        ('float32 seed 1', 'float32', 1))
FIELDS = ('metametric', 'simulated_collision_rate', 'simulated_offroad_rate')


def _teacher_forced(params, mc, examples) -> dict:
  """Per-step KL and argmax agreement of the two precisions on log tokens."""

  @jax.jit
  def compare(params, batch):
    scene, toks = steps.model_inputs(batch, mc)
    mask = motion_lm.token_mask(scene, toks)
    lp = {d: jax.nn.log_softmax(motion_lm.logits(
        params, scene, toks, config=mc, dtype=d)) for d in DTYPES}
    kl = jnp.sum(jnp.exp(lp['float32']) * (lp['float32'] - lp['bfloat16']),
                 -1)
    same = (jnp.argmax(lp['float32'], -1) == jnp.argmax(lp['bfloat16'], -1))
    return kl, same, mask

  kls, agree = [], []
  for ex in examples:
    kl, same, mask = jax.device_get(
        compare(params, jax.tree.map(lambda a: np.asarray(a)[None],
                                     ex.state)))
    kls.append(kl[mask])
    agree.append(same[mask])
  kl, agree = np.concatenate(kls), np.concatenate(agree)
  return {'steps': int(kl.size), 'kl_mean': float(kl.mean()),
          'kl_p99': float(np.quantile(kl, 0.99)),
          'argmax_agreement': float(agree.mean())}


def main():
  args, files, reader, examples, _, mc, params = (
      _shared.checkpoint_on_real_scenarios(__doc__.split('\n')[0]))
  result = {'date': time.strftime('%Y-%m-%d'),
            'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
            'machine': platform.machine(), 'files': args.files,
            'scenarios': len(examples), 'rollouts': args.rollouts,
            'teacher_forced': _teacher_forced(params, mc, examples)}
  per = {}
  for name, dtype, seed in RUNS:
    stamps = [time.perf_counter()]  # and one as each scenario is scored
    res = evaluation.evaluate_files(
        params, mc, files, reader=reader, num_rollouts=args.rollouts,
        sampling=rollout.SamplingConfig(dtype=dtype), challenges=('2025',),
        max_scenarios=len(examples), baselines=False, seed=seed,
        on_scenario=lambda _, stamps=stamps: stamps.append(
            time.perf_counter()), progress=True)
    per[name] = [r['2025']['model'] for r in res['per_scenario']]
    agg = res['aggregate']['2025']['model']
    result[name] = {f: float(agg[f]) for f in FIELDS}
    # The first scenario pays compilation.
    result[name]['seconds_per_scenario'] = float(
        np.median(np.diff(stamps)[1:]))
  diff = lambda other: {
      f: evaluation.bootstrap([b[f] - a[f] for a, b in
                               zip(per['float32'], per[other])])
      for f in FIELDS}
  result['difference'] = diff('bfloat16')
  result['seed_difference'] = diff('float32 seed 1')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
  tf = result['teacher_forced']
  print(f"teacher forced, {tf['steps']} token steps: KL mean "
        f"{tf['kl_mean']:.2e} (p99 {tf['kl_p99']:.2e}), argmax agreement "
        f"{100 * tf['argmax_agreement']:.2f} %")
  ci = lambda d: f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
  print('| field | float32 | bfloat16 | difference [95 % CI] | float32, '
        'other keys: difference |')
  print('|---|---|---|---|---|')
  for f in FIELDS:
    print(f"| {f} | {result['float32'][f]:.4f} | {result['bfloat16'][f]:.4f}"
          f" | {ci(result['difference'][f])} | "
          f"{ci(result['seed_difference'][f])} |")
  print(f"| s / scenario | {result['float32']['seconds_per_scenario']:.2f} | "
        f"{result['bfloat16']['seconds_per_scenario']:.2f} | | |")


if __name__ == '__main__':
  main()
