"""Does pre-training learn, and how far does SUMO transfer to real driving?

1. Pre-trains the default ~1M-parameter model on SUMO scenarios
   (research_intersection) and evaluates, every ``--eval_every`` steps,
   next-token loss and accuracy on held-out SUMO scenarios (another seed) and
   on the shared real WOMD scenarios, next to a per-type unigram baseline
   (token frequencies of the SUMO training data).
2. Splits the real scenarios (first ``--real_train`` for training, the rest
   held out) and reports held-out real loss of (a) the SUMO model as is,
   (b) the SUMO model fine-tuned on the real training part, (c) the same
   model trained on the real training part from scratch.

Writes ``OUT/learning.json`` and ``OUT/learning.png`` (the curves). Run::

  python benchmarks/pretrain_learning.py --out runs/learning \
      [--steps 400] [--finetune_steps 150] [--batch_size 8]
"""

import argparse
import json
import pathlib
import platform
import time

import _shared  # this folder
import jax

from prefalign.data import sumo
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.train import loop
from prefalign.train import steps


def _split_real(out: pathlib.Path, num_train: int):
  files = sorted(str(p) for p in (_shared.WOMD / 'real').glob(
      'real.tfrecord-*'))
  records = [r for f in files for _, r in tfrecord.read_records(f)]
  paths = {}
  for name, part in (('train', records[:num_train]),
                     ('heldout', records[num_train:])):
    path = out / f'real_{name}.tfrecord'
    with tfrecord.TFRecordWriter(path) as w:
      for r in part:
        w.write(r)
    paths[name] = str(path)
  return files, paths


def _curve(workdir: pathlib.Path):
  rows = [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()]
  return rows


def _config(args, train, evals, steps_, lr, init_from=''):
  return loop.TrainConfig(
      train_files=tuple(train), eval_sets=tuple(evals),
      model=motion_lm.ModelConfig(),
      optimizer=steps.OptimizerConfig(
          learning_rate=lr, warmup_steps=min(50, steps_ // 5),
          total_steps=steps_),
      reader=womd.ReaderConfig(max_num_objects=args.agents),
      batch_size=args.batch_size, num_steps=steps_, seed=0,
      shuffle_buffer=64, log_every=10, eval_every=args.eval_every,
      eval_batches=0, checkpoint_every=args.eval_every,
      unigram_batches=16, init_from=init_from)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--out', default='runs/learning')
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--finetune_steps', type=int, default=150)
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--agents', type=int, default=32)
  parser.add_argument('--eval_every', type=int, default=100)
  parser.add_argument('--sumo_train', type=int, default=400)
  parser.add_argument('--sumo_heldout', type=int, default=64)
  parser.add_argument('--real_train', type=int, default=30)
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  for name, num, seed in (('sumo_train', args.sumo_train, 0),
                          ('sumo_heldout', args.sumo_heldout, 1_000_003)):
    sumo.generate(sumo.SumoConfig(network='research_intersection',
                                  num_scenarios=num, seed=seed), out / name)
  gen_s = time.perf_counter() - t0
  real_all, real = _split_real(out, args.real_train)
  sumo_train = [str(out / 'sumo_train' / 'research_intersection.tfrecord-*')]
  sumo_heldout = [str(out / 'sumo_heldout' /
                      'research_intersection.tfrecord-*')]

  results = {'machine': f'{jax.devices()[0].device_kind} '
                        f'({jax.default_backend()}), jax {jax.__version__}, '
                        f'{platform.machine()}',
             'args': vars(args), 'sumo_generation_s': gen_s}
  t0 = time.perf_counter()
  pre = loop.train_and_evaluate(
      _config(args, sumo_train,
              [('sumo_heldout', sumo_heldout), ('womd_real_all', real_all),
               ('womd_real_heldout', [real['heldout']])],
              args.steps, 1e-3), out / 'pretrain_sumo')
  results['pretrain'] = {'eval': pre['eval'], 'train': pre['train'],
                         'num_params': pre['num_params'],
                         'wall_s': time.perf_counter() - t0,
                         'curve': _curve(out / 'pretrain_sumo')}
  for name, init in (('finetune_real', str(out / 'pretrain_sumo' /
                                            'checkpoints')),
                     ('scratch_real', '')):
    t0 = time.perf_counter()
    res = loop.train_and_evaluate(
        _config(args, [real['train']],
                [('womd_real_heldout', [real['heldout']])],
                args.finetune_steps, 3e-4 if init else 1e-3, init),
        out / name)
    results[name] = {'eval': res['eval'], 'train': res['train'],
                     'wall_s': time.perf_counter() - t0,
                     'curve': _curve(out / name)}
  (out / 'learning.json').write_text(json.dumps(results, indent=1))
  _plot(results, out / 'learning.png')
  print(json.dumps({k: v.get('eval') if isinstance(v, dict) else v
                    for k, v in results.items()}, indent=1))


def _plot(results, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  curve = results['pretrain']['curve']
  train = [r for r in curve if r['split'] == 'train' and 'loss' in r]
  axes[0].plot([r['step'] for r in train], [r['loss'] for r in train],
               label='SUMO train', color='0.6')
  for split, color in (('eval/sumo_heldout', 'C0'),
                       ('eval/womd_real_all', 'C1')):
    rows = [r for r in curve if r['split'] == split and 'loss' in r]
    if rows:
      axes[0].plot([r['step'] for r in rows], [r['loss'] for r in rows],
                   'o-', color=color, label=f'{split[5:]} (model)')
      axes[0].axhline(rows[-1]['unigram_loss'], color=color, ls='--',
                      label=f'{split[5:]} (unigram)')
      axes[1].plot([r['step'] for r in rows], [r['accuracy'] for r in rows],
                   'o-', color=color, label=f'{split[5:]} (model)')
      axes[1].axhline(rows[-1]['unigram_accuracy'], color=color, ls='--',
                      label=f'{split[5:]} (unigram)')
  axes[0].set(xlabel='step', ylabel='next-token loss (nats)',
              title='pre-training on SUMO')
  axes[1].set(xlabel='step', ylabel='next-token accuracy')
  for ax in axes:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


if __name__ == '__main__':
  main()
