"""The accelerator benchmark's FLOP counter, and the script end to end."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import _flops  # noqa: E402


def test_flops_unrolls_loops_and_counts_backward():
  x = jnp.ones((64, 32))
  w = jnp.ones((32, 32))
  one = 2 * 64 * 32 * 32
  step = lambda i, h: jnp.tanh(h @ w)
  assert _flops.count(lambda h: step(0, h), x)['matmul'] == one
  assert _flops.count(lambda h: jax.lax.fori_loop(0, 10, step, h),
                      x)['matmul'] == 10 * one
  scan = lambda h: jax.lax.scan(lambda c, _: (step(0, c), None), h,
                                None, length=7)[0]
  assert _flops.count(jax.jit(scan), x)['matmul'] == 7 * one
  body = lambda c: (step(0, c[0]), c[1] + 1)
  loop = lambda h: jax.lax.while_loop(lambda c: c[1] < 5, body, (h, 0))[0]
  counts = _flops.count(loop, x, while_trips=5)
  assert counts['matmul'] == 5 * one
  assert counts['transcendental'] == 5 * 64 * 32  # tanh
  # A cond counts its cheapest branch (a floor is a lower bound).
  branchy = lambda h: jax.lax.cond(h[0, 0] > 0, lambda h: h @ w,
                                   lambda h: (h @ w) @ w, h)
  assert _flops.count(branchy, x)['matmul'] == one
  # Forward and backward: dL/dw and dL/dx are two more products.
  grad = jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w)))
  assert _flops.count(grad, w)['matmul'] == 2 * one


@pytest.mark.slow
def test_accelerator_script_runs(tmp_path):
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'accelerator.py'), '--quick',
       '--only', 'train,sampler,sampler_bf16,wosac,collect,loop',
       '--collect_scenarios', '1', '--loop_steps', '4',
       '--peak_matmul_tflops', '0.1', '--peak_vector_tflops', '0.1',
       '--json', str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
      env=dict(os.environ, PREFALIGN_SHARED_DATA=str(tmp_path)))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  result = json.loads(out.read_text())
  assert result['source'] == 'synthetic'
  for name in ('train', 'sampler', 'sampler_bf16', 'wosac'):
    e = result['results'][name]
    assert e['seconds'] > 0 and e['floor_seconds'] > 0 and e['gflop'] > 0
    assert e['gap'] == pytest.approx(e['seconds'] / e['floor_seconds'])
  assert 0 < result['results']['train']['mfu'] < 1
  assert result['results']['sampler_bf16']['dtype'] == 'bfloat16'
  collect = result['results']['collect']
  assert collect['scenarios_per_s'] > 0 and collect['scenarios_per_call'] == (
      jax.device_count())
  run = result['results']['loop']
  assert run['steps_per_s'] > 0 and run['source'] == 'synthetic'
  assert 0 < run['of_step_alone'] < 10
  assert '| train | 8 x 16 |' in proc.stdout


def test_the_diagnosis_names_an_unknown_policy_before_any_work():
  import argparse

  import reference_diagnosis
  assert reference_diagnosis._policy_list('model, T=0.7') == ('model',
                                                               'T=0.7')
  with pytest.raises(argparse.ArgumentTypeError, match=r"\['T=0.3'\] not"):
    reference_diagnosis._policy_list('model,T=0.3')
  with pytest.raises(argparse.ArgumentTypeError, match='none not among'):
    reference_diagnosis._policy_list(',')
