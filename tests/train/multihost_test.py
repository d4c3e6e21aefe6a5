"""Pre-training as two JAX processes on this machine (CPU collectives).

Each process sees 4 CPU devices, reads its own share of the records and
feeds its rows of every global batch; together they must train in lockstep
and end where one process with the same 8 devices and global batch ends.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from prefalign.train import loop
from tests.train.conftest import tiny_config  # noqa: E402
from tests.train.conftest import write_scenarios  # noqa: E402

_CHILD = '''
import json, os, sys
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address='localhost:{port}',
                           num_processes=2, process_id={pid})
import numpy as np
from prefalign.train import loop
from prefalign.train import runtime
from tests.train.conftest import tiny_config
files = {{'train': {train!r}, 'eval': {eval!r}}}
config = tiny_config(files, **{kwargs!r})
losses = []
try:
  out = loop.train_and_evaluate(
      config, {workdir!r},
      callback=lambda step, m: losses.append(float(m['mean_loss'])))
except runtime.Preempted as e:
  print('PREEMPTED', e.step, flush=True)
  sys.exit(143)
leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(out['params']))]
np.savez({params!r}, *leaves)
print('RESULT', json.dumps({{'process': jax.process_index(),
                             'count': jax.process_count(),
                             'devices': jax.device_count(),
                             'losses': losses, 'eval': out['eval']}}),
      flush=True)
'''

# tiny_config's own 2-step budget: the one-process run below compiles the
# same steps as the loop tests' (served by the persistent cache).
KWARGS = dict(num_steps=2, checkpoint_every=2, eval_every=2, batch_size=8,
              shuffle_buffer=1)


def _start(scenario_files, tmp_path, kwargs):
  port = _free_port()
  root = pathlib.Path(__file__).resolve().parents[2]
  env = dict(os.environ, PYTHONPATH=str(root))
  env.pop('XLA_FLAGS', None)
  procs = []
  for pid in range(2):
    code = _CHILD.format(port=port, pid=pid, train=scenario_files['train'],
                         eval=scenario_files['eval'], kwargs=kwargs,
                         workdir=str(tmp_path / 'multi'),
                         params=str(tmp_path / f'params{pid}.npz'))
    procs.append(subprocess.Popen(
        [sys.executable, '-c', code], cwd=root, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  return procs


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one(scenario_files, tmp_path):
  # Two held-out files of 8 and 3 scenarios: each process reads one, so
  # their shares differ (2 local batches and 1); evaluation must still end
  # in step and count every token once.
  short = write_scenarios(tmp_path / 'eval3.tfrecord', 3, 2)
  kwargs = dict(KWARGS, eval_batches=0,
                eval_sets=(('eval', (scenario_files['eval'], short)),))
  procs = _start(scenario_files, tmp_path, kwargs)
  results = []
  for p in procs:
    out = p.communicate(timeout=900)[0]
    assert p.returncode == 0, out
    line = [row for row in out.splitlines() if row.startswith('RESULT ')][-1]
    results.append(json.loads(line[len('RESULT '):]))
  assert sorted(r['process'] for r in results) == [0, 1]
  assert all(r['count'] == 2 and r['devices'] == 8 for r in results)
  # Lockstep: the same global loss at every step in both processes.
  assert len(results[0]['losses']) == KWARGS['num_steps']
  np.testing.assert_array_equal(results[0]['losses'], results[1]['losses'])

  single_losses = []
  single = loop.train_and_evaluate(
      tiny_config(scenario_files, **kwargs), tmp_path / 'single',
      callback=lambda step, m: single_losses.append(float(m['mean_loss'])))
  assert jax.device_count() == 8
  # The same global batches: the same losses, up to summation order.
  np.testing.assert_allclose(results[0]['losses'], single_losses, rtol=1e-5)
  for r in results:  # every held-out token counted once, in both runs
    assert r['eval']['eval']['tokens'] == single['eval']['eval']['tokens'] > 0
    np.testing.assert_allclose(r['eval']['eval']['loss'],
                               single['eval']['eval']['loss'], rtol=1e-5)
  mine = [np.asarray(x)
          for x in jax.tree.leaves(jax.device_get(single['params']))]
  for pid in range(2):
    theirs = np.load(tmp_path / f'params{pid}.npz')
    theirs = [theirs[f'arr_{i}'] for i in range(len(theirs.files))]
    assert len(theirs) == len(mine)
    # The rows of a global batch come in another order (each process's
    # share, then the next), so gradients differ in the last bits; Adam
    # normalises the near-zero ones, which can move such a parameter by a
    # small fraction of the learning rate (3e-3) either way.
    for a, b in zip(theirs, mine):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5)
  assert (tmp_path / 'multi' / 'checkpoints' / '2').is_dir()


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(scenario_files,
                                                            tmp_path):
  kwargs = dict(KWARGS, num_steps=40, checkpoint_every=40, eval_every=40)
  procs = _start(scenario_files, tmp_path, kwargs)
  log = tmp_path / 'multi' / 'metrics.jsonl'  # process 0 writes it
  deadline = time.time() + 600
  while not (log.exists() and '"train"' in log.read_text()):
    assert all(p.poll() is None for p in procs)
    assert time.time() < deadline
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [143, 143], outs
  stopped = [int(o.split('PREEMPTED ')[1].split()[0]) for o in outs]
  assert stopped[0] == stopped[1] < kwargs['num_steps'], stopped
  assert (tmp_path / 'multi' / 'checkpoints' / str(stopped[0])).is_dir()
