"""``align_and_evaluate``: preference alignment of a pre-trained model.

One function runs an alignment job from a frozen ``AlignConfig``::

  align_and_evaluate(AlignConfig(preference_dirs=('runs/x/preferences',),
                                 init_from='runs/x/pretrain/checkpoints'),
                     workdir)

The preference records (``preference.dataset``) are split by scenario into
training and held-out parts (a hash of the scenario id, so the split does not
depend on the order or number of records). Training records are optionally
re-paired with another ranking strategy (``pairs_from``: the baselines on the
same rollouts, ``dataset.relabel``) and cut to a data budget
(``max_scenarios``); held-out records are paired by ``eval_pairs_from`` (the
OT ranking by default) for every method alike.

The policy starts from ``init_from`` (the reference model, kept frozen for
DPO and for the KL estimate) and takes ``steps.preference_step`` on batches
of scenarios, data-parallel over all devices. Every ``eval_every`` steps it
logs, on the held-out pairs, the pair classification accuracy and the
likelihoods of preferred and unpreferred rollouts, and a Monte-Carlo
estimate of KL(policy || reference) on the policy's own rollouts; every
``realism_every`` steps (and at the end) the WOSAC realism of a validation
set. Metrics go to ``metrics.jsonl`` and TensorBoard in the workdir;
checkpoints to ``workdir/checkpoints``. Restarting the same job resumes from
its last checkpoint with the same data order (a function of seed and step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import functools
import itertools
import pathlib
from typing import Any
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from prefalign.data import pipeline
from prefalign.data import womd
from prefalign.model import motion_lm
from prefalign.preference import dataset
from prefalign.preference import ranking
from prefalign.preference import records as records_lib
from prefalign.train import checkpoint as checkpoint_lib
from prefalign.train import parallel
from prefalign.train import runner
from prefalign.train import runtime
from prefalign.train import steps
from prefalign.train.state import TrainState

__all__ = ['AlignConfig', 'align_and_evaluate', 'split_records',
           'is_heldout']


@dataclasses.dataclass(frozen=True)
class AlignConfig:
  """An alignment job.

  Attributes:
    preference_dirs: directories of collected preference records.
    init_from: checkpoint directory of the pre-trained (reference) model.
    model: its config.
    objective: the preference loss (cpl: DPA-OMF; sft: SFT-bestOA; dpo).
    optimizer: AdamW and its schedule (``total_steps`` = ``num_steps``).
    reader: sizes of re-read scenarios (as at collection).
    pairs_from: '' (the records' own pairs) or a ranking strategy to re-pair
      the training records with ('ot', 'ade', 'random', 'adversarial';
      records collected with ``keep_all_rollouts``).
    num_pairs: pairs per scenario when re-pairing (0: as collected).
    pairing: 'rank', 'random' or 'all' when re-pairing.
    eval_pairs_from: strategy of the held-out pairs ('' or as pairs_from;
      applied when the records hold every rollout).
    heldout_fraction: share of scenarios held out (by scenario-id hash).
    max_scenarios: training scenarios used (0: all): the data budget.
    batch_size: scenarios per step, a multiple of the device count.
    num_steps: alignment steps.
    seed: data order and sampling.
    shuffle_buffer: scenarios held for shuffling.
    log_every, eval_every, checkpoint_every, keep_checkpoints: as
      pre-training.
    kl_scenarios: held-out scenarios of the KL estimate (0: none).
    kl_rollouts: policy rollouts per scenario of the KL estimate.
    realism_files: WOMD patterns scored for realism (empty: none).
    realism_scenarios: scenarios of them scored (0: all).
    realism_rollouts: rollouts per scenario (WOSAC: 32).
    realism_every: steps between realism scores (0: only at the end).
    num_devices: devices of the data mesh (None: all).
    progress: progress bars.
  """
  preference_dirs: tuple[str, ...]
  init_from: str
  model: motion_lm.ModelConfig = motion_lm.ModelConfig()
  objective: steps.PreferenceConfig = steps.PreferenceConfig()
  optimizer: steps.OptimizerConfig = steps.OptimizerConfig(
      learning_rate=1e-4, warmup_steps=10, total_steps=200)
  reader: womd.ReaderConfig = womd.ReaderConfig()
  pairs_from: str = ''
  num_pairs: int = 0
  pairing: str = 'rank'
  eval_pairs_from: str = 'ot'
  heldout_fraction: float = 0.1
  max_scenarios: int = 0
  batch_size: int = 8
  num_steps: int = 200
  seed: int = 0
  shuffle_buffer: int = 64
  log_every: int = 10
  eval_every: int = 50
  checkpoint_every: int = 50
  keep_checkpoints: int = 2
  kl_scenarios: int = 4
  kl_rollouts: int = 8
  realism_files: tuple[str, ...] = ()
  realism_scenarios: int = 8
  realism_rollouts: int = 16
  realism_every: int = 0
  num_devices: int | None = None
  progress: bool = True


def check_config(config: AlignConfig, mesh) -> None:
  """Stops with a message naming the config key, before any compilation."""
  parallel.check_batch_size(config.batch_size, mesh, 'batch_size')
  for name in ('num_steps', 'log_every', 'eval_every', 'checkpoint_every',
               'keep_checkpoints', 'shuffle_buffer', 'kl_rollouts',
               'realism_rollouts'):
    if getattr(config, name) < 1:
      raise ValueError(f'{name} must be >= 1, got {getattr(config, name)}')
  for name in ('pairs_from', 'eval_pairs_from'):
    if getattr(config, name) not in ('',) + ranking.STRATEGIES:
      raise ValueError(f'{name}={getattr(config, name)!r} is not one of '
                       f"{('',) + ranking.STRATEGIES}")
  if config.pairing not in ranking.PAIRINGS:
    raise ValueError(f'pairing={config.pairing!r} is not one of '
                     f'{ranking.PAIRINGS}')
  if not 0 < config.heldout_fraction < 1:
    raise ValueError('heldout_fraction must be in (0, 1), got '
                     f'{config.heldout_fraction}')
  if config.optimizer.total_steps != config.num_steps:
    raise ValueError(
        f'optimizer.total_steps={config.optimizer.total_steps} differs from '
        f'num_steps={config.num_steps}')
  if not config.preference_dirs:
    raise ValueError('preference_dirs is empty: run the collect stage')
  for d in config.preference_dirs:
    if not list(pathlib.Path(d).glob('preferences-*.tfrecord')):
      raise ValueError(f'preference_dirs: {d} holds no preference shards '
                       '(preferences-*.tfrecord); run the collect stage')
    try:
      records_lib.check_model(d, config.model)
    except ValueError as e:
      raise ValueError(f'preference_dirs: {e}') from None
  if not config.init_from:
    raise ValueError('init_from is empty: alignment starts from the '
                     'pre-trained checkpoint')
  if not any(p.name.isdigit() for p in pathlib.Path(config.init_from).glob(
      '*')):
    raise ValueError(f'init_from: no checkpoint in {config.init_from}')
  if config.realism_files:
    try:
      womd.expand_paths(list(config.realism_files))
    except FileNotFoundError as e:
      raise ValueError(f'realism_files: {e}') from None


def is_heldout(scenario_id: str, fraction: float) -> bool:
  """Whether a scenario is held out (a hash of its id; stable everywhere)."""
  return zlib.crc32(scenario_id.encode()) % 10_000 < fraction * 10_000


def _pairs(rec, strategy: str, config: AlignConfig, heldout: bool):
  if not strategy:
    return records_lib.compact(rec)
  num = config.num_pairs or int(
      rec.pairs.shape[0] if config.pairing != 'all' else
      round(rec.pairs.shape[0]**0.5))
  if heldout:
    holds_all = set(rec.sequence_rollout.tolist()) >= set(
        range(records_lib.LOG, rec.ot_distances.shape[0]))
    if not holds_all:  # the collection's own pairs
      return records_lib.compact(rec)
    return dataset.relabel(rec, strategy, num_pairs=num, pairing='rank',
                           seed=config.seed)
  return dataset.relabel(rec, strategy, num_pairs=num,
                         pairing=config.pairing, seed=config.seed)


def split_records(config: AlignConfig
                  ) -> tuple[list[records_lib.PreferenceRecord],
                             list[records_lib.PreferenceRecord]]:
  """(training, held-out) records, paired as configured.

  Training records keep the collection order, cut to ``max_scenarios``;
  records whose ranking counted no agent were never written.
  """
  train, heldout = [], []
  for d in config.preference_dirs:
    records_lib.check_model(d, config.model)
    for rec in records_lib.read_records(d):
      if is_heldout(rec.scenario_id, config.heldout_fraction):
        heldout.append(_pairs(rec, config.eval_pairs_from, config, True))
      else:
        train.append(_pairs(rec, config.pairs_from, config, False))
  if config.max_scenarios:
    if len(train) < config.max_scenarios:
      raise ValueError(
          f'max_scenarios={config.max_scenarios}: only {len(train)} training '
          f'scenarios in {list(config.preference_dirs)}')
    train = train[:config.max_scenarios]
  if not train:
    raise ValueError(f'no training scenarios in {list(config.preference_dirs)}'
                     f' (heldout_fraction={config.heldout_fraction})')
  return train, heldout


def _examples(records, config: AlignConfig, sizes: tuple[int, int], *,
              train: bool, skip: int = 0) -> Iterator[dict[str, Any]]:
  """Padded training examples; endless shuffled epochs when ``train``."""

  def stream():
    for epoch in itertools.count() if train else (0,):
      order = records
      if train:
        rng = np.random.default_rng([config.seed, epoch])
        order = [records[i] for i in rng.permutation(len(records))]
        # Records of one source file come back in file order; a buffer
        # shuffles them again.
        yield from pipeline.shuffle(
            dataset.record_states(order, config.reader),
            config.shuffle_buffer,
            np.random.default_rng([config.seed, epoch, 1]))
      else:
        yield from dataset.record_states(order, config.reader)

  for rec, state in itertools.islice(stream(), skip, None):
    yield dataset.training_example(rec, state, config.model,
                                   num_sequences=sizes[0],
                                   num_pairs=sizes[1])


def _stack(rows: list[dict[str, Any]], size: int) -> steps.PreferenceBatch:
  """A PreferenceBatch of ``size`` rows (short: padded, no valid pair)."""
  rows = rows + [dict(rows[0], pair_valid=np.zeros_like(rows[0]['pair_valid']))
                 ] * (size - len(rows))
  stacked = jax.tree.map(lambda *a: np.stack(a), *rows)
  return steps.PreferenceBatch(**stacked)


def _batches(examples, size: int) -> Iterator[steps.PreferenceBatch]:
  while True:
    rows = list(itertools.islice(examples, size))
    if not rows:
      return
    yield _stack(rows, size)


@functools.lru_cache(maxsize=4)
def _step_fn(model, optimizer, objective, mesh):
  """The jitted preference step of one setting, built once per process
  (several alignment runs compile it once). An ``lru_cache`` rather than a
  module-level jit: its shardings depend on the mesh."""
  return parallel.jit_step(
      functools.partial(steps.preference_step, model_config=model,
                        optimizer_config=optimizer,
                        preference_config=objective), mesh, num_extra=1)


@functools.lru_cache(maxsize=4)
def _eval_fn(model, objective, mesh):
  """The jitted held-out evaluation of one model and objective (whatever
  the optimizer: the baselines and the scaling runs share it)."""
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(functools.partial(
      steps.preference_eval_step, model_config=model,
      preference_config=objective),
                 in_shardings=(repl, data), out_shardings=repl)


# The KL estimate runs on one device: one program per model and rollout
# count, whatever the objective or optimizer of the run.
_policy_kl = jax.jit(steps.policy_kl,
                     static_argnames=('model_config', 'num_rollouts'))


def _host_copy(tree):
  return jax.tree.map(lambda a: np.array(jax.device_get(a)), tree)


def align_and_evaluate(config: AlignConfig, workdir: str | pathlib.Path, *,
                       callback: Callable[[int, dict], None] | None = None
                       ) -> dict[str, Any]:
  """Runs (or resumes) alignment; returns the final evaluation.

  Args:
    config: the job.
    workdir: checkpoints, ``metrics.jsonl``, TensorBoard events.
    callback: ``callback(step, metrics)`` after every step (tests).

  Returns:
    {'step', 'train' (last logged training metrics), 'heldout' (pair
    metrics), 'kl', 'realism' ({'2025' aggregate of the model}), 'data'
    (scenario and pair counts)} — also the last rows of metrics.jsonl.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with runtime.workdir_lock(workdir, 'alignment'):
    return _align_and_evaluate(config, workdir, callback)


def _data_info(train_recs, heldout_recs) -> dict[str, int]:
  """Scenario and pair counts, and the padded sizes of one example."""
  both = train_recs + heldout_recs
  return {'train_scenarios': len(train_recs),
          'train_pairs': int(sum(r.pairs.shape[0] for r in train_recs)),
          'heldout_scenarios': len(heldout_recs),
          'heldout_pairs': int(sum(r.pairs.shape[0] for r in heldout_recs)),
          'sequences_per_scenario': max(r.sequences.shape[0] for r in both),
          'pairs_per_scenario': max(r.pairs.shape[0] for r in both)}


def _start_params(config: AlignConfig, train_recs, sizes):
  """The reference's parameters (``config.init_from``), on the host."""
  first = next(_examples(train_recs[:1], config, sizes, train=False))
  like = jax.eval_shape(
      lambda b: motion_lm.init(jax.random.key(0), config.model,
                               *steps.model_inputs(b, config.model)),
      jax.tree.map(lambda a: a[None], first['state']))
  return _host_copy(checkpoint_lib.load_params(config.init_from, like))


def _evaluator(config: AlignConfig, mesh, eval_fn, kl_fn, reference,
               heldout: list[dict[str, Any]], writer: runtime.MetricsWriter):
  """(state, step) -> {'heldout': pair metrics, 'kl': KL to the
  reference}, each when there is something to measure it on.

  ``reference``: the reference's parameters on the host (the KL estimate
  runs on one device).
  """
  kl_states = [h['state'] for h in heldout[:config.kl_scenarios]]
  kl_batch = (jax.tree.map(lambda *a: np.stack(a), *kl_states)
              if kl_states else None)
  root = jax.random.key(config.seed)

  def evaluate(state, step: int) -> dict[str, dict[str, float]]:
    out = {}
    if heldout:
      total = None
      for i in range(0, len(heldout), config.batch_size):
        batch = _stack(heldout[i:i + config.batch_size], config.batch_size)
        sums = eval_fn(state.params, parallel.shard_batch(batch, mesh))
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
      t = {k: float(v) for k, v in jax.device_get(total).items()}
      n = max(t['pairs'], 1.0)
      out['heldout'] = {'pairs': t['pairs'], 'accuracy': t['correct'] / n,
                        'margin': t['margin'] / n,
                        'logp_preferred': t['logp_preferred'] / n,
                        'logp_unpreferred': t['logp_unpreferred'] / n}
    if kl_batch is not None:
      # One device, not the mesh: on replicated parameters the call would
      # run once per device.
      k = {key: float(v) for key, v in jax.device_get(kl_fn(
          _host_copy(state.params), reference, kl_batch,
          jax.random.fold_in(root, 1_000_000 + step))).items()}
      out['kl'] = {'kl_per_scenario': k['kl'] / k['rollouts'],
                   'kl_per_token': k['kl'] / max(k['tokens'], 1.0)}
    for split, values in out.items():
      writer.write(step, f'eval/{split}', values)
    return out
  return evaluate


def _realism(config: AlignConfig, writer: runtime.MetricsWriter):
  """(state, step) -> the model's WOSAC 2025 aggregate on
  ``config.realism_files`` ({} without them)."""
  def realism(state, step: int) -> dict[str, float]:
    if not config.realism_files:
      return {}
    from prefalign import evaluation
    res = evaluation.evaluate_files(
        _host_copy(state.params), config.model, list(config.realism_files),
        reader=config.reader, num_rollouts=config.realism_rollouts,
        challenges=('2025',), max_scenarios=config.realism_scenarios,
        baselines=False, seed=config.seed, progress=False)
    values = dict(res['aggregate']['2025']['model'])
    writer.write(step, 'eval/realism', values)
    return values
  return realism


def _train_log(host: dict[str, float], n: int,
               elapsed: float) -> dict[str, float]:
  """The training log of a window: loss, pair accuracy, log-probs."""
  pairs = max(host['pairs'], 1.0)
  last = {'loss': host['loss'] / max(host['count'], 1.0),
          'accuracy': host['correct'] / pairs,
          'logp_preferred': host['logp_preferred'] / pairs,
          'logp_unpreferred': host['logp_unpreferred'] / pairs,
          'grad_norm': host['grad_norm'] / n,
          'learning_rate': host['learning_rate'] / n,
          'steps_per_second': n / elapsed}
  if 'bc_count' in host:
    last['bc_loss'] = host['bc_loss'] / max(host['bc_count'], 1.0)
  return last


def _postfix(last: dict[str, float]) -> dict[str, str]:
  return {'loss': f'{last["loss"]:.3f}', 'acc': f'{last["accuracy"]:.2f}'}


def _align_and_evaluate(config, workdir, callback):
  """``align_and_evaluate`` with the workdir's lock held."""
  mesh = parallel.make_mesh(config.num_devices)
  check_config(config, mesh)
  train_recs, heldout_recs = split_records(config)
  data_info = _data_info(train_recs, heldout_recs)
  sizes = (data_info['sequences_per_scenario'],
           data_info['pairs_per_scenario'])
  local_recs = train_recs[jax.process_index()::jax.process_count()]
  local = config.batch_size // jax.process_count()
  # The reference (frozen) and the policy's start: one host copy, two
  # device copies (the step donates the policy's buffers).
  params0 = _start_params(config, train_recs, sizes)
  reference = parallel.replicate(params0, mesh)
  tx = steps.make_optimizer(config.optimizer)
  # Placed like the step's outputs, so the first step compiles the only
  # executable.
  state = parallel.replicate(TrainState.create(_host_copy(params0), tx), mesh)
  ckpt = checkpoint_lib.Checkpointer(workdir / 'checkpoints',
                                     max_to_keep=config.keep_checkpoints)
  restored = ckpt.restore(state)
  origin = f'from {config.init_from}'
  if restored is not None:
    state = restored
    origin = f'resumed from step {int(state.step)}'
  start = int(jax.device_get(state.step))
  writer = runtime.MetricsWriter(workdir)
  if jax.process_index() == 0:
    print(f'aligning ({config.objective.loss}, pairs '
          f'{config.pairs_from or "as collected"}) on {len(train_recs)} '
          f'scenarios / {data_info["train_pairs"]} pairs, {len(heldout_recs)}'
          f' held out, {mesh.devices.size} device(s), {origin}', flush=True)
  step_fn = _step_fn(config.model, config.optimizer, config.objective, mesh)
  eval_fn = _eval_fn(config.model, config.objective, mesh)
  kl_fn = functools.partial(_policy_kl, model_config=config.model,
                            num_rollouts=config.kl_rollouts)
  heldout = list(_examples(heldout_recs, config, sizes, train=False))
  # The KL estimate gets the host copy: with the mesh-replicated reference
  # it would compile for, and run on, every device of the mesh.
  evaluate = _evaluator(config, mesh, eval_fn, kl_fn, params0, heldout,
                        writer)
  realism = _realism(config, writer)
  root = jax.random.key(config.seed)
  batches = pipeline.prefetch(_batches(
      _examples(local_recs, config, sizes, train=True, skip=start * local),
      local), size=2)

  def one_step(state, step: int):
    batch = parallel.shard_batch(next(batches), mesh)
    state, metrics = step_fn(state, batch, jax.random.fold_in(root, step),
                             reference)
    return state, metrics, (
        f'the preference records of step {step + 1} (records '
        f'{step * local}..{(step + 1) * local - 1} of this process\'s '
        'shuffled stream)')

  def periodic_realism(state, done: int) -> None:
    if config.realism_every and done % config.realism_every == 0 and (
        done != config.num_steps):
      realism(state, done)

  try:
    state, last, results = runner.run(
        state, start, runner.Schedule(
            num_steps=config.num_steps, log_every=config.log_every,
            eval_every=config.eval_every,
            checkpoint_every=config.checkpoint_every),
        runner.Hooks(step=one_step, log=_train_log, evaluate=evaluate,
                     after_evaluation=periodic_realism, postfix=_postfix),
        checkpointer=ckpt, writer=writer, name='align',
        progress=config.progress, callback=callback,
        results=evaluate(state, start) if start == 0 else None)
    real = realism(state, int(jax.device_get(state.step)))
  finally:
    batches.close()  # ends the reading thread
    ckpt.close()
    writer.close()
  return {'step': int(jax.device_get(state.step)), 'train': last,
          'heldout': results.get('heldout', {}), 'kl': results.get('kl', {}),
          'realism': real, 'data': data_info, 'params': state.params}
