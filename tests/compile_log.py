"""Where the suite's time goes: XLA compilations per test (opt-in).

With ``PREFALIGN_TEST_COMPILE_LOG=<folder>`` every pytest process (each
xdist worker) appends one JSON line per jit compilation to
``<folder>/<worker>.jsonl``: the test running (``PYTEST_CURRENT_TEST``), the
function's name, the phase (``trace``, ``lower``, ``compile``; ``compile``
includes a persistent-cache hit, which takes milliseconds) and its seconds.
``python -m tests.compile_log <folder>`` sums them per test and per
function: most of the suite's time is compiling, and a program compiled by
several tests in slightly different shapes or configurations shows up as
one name with many ``compile`` rows.
"""

import collections
import json
import os
import pathlib
import sys

_EVENTS = {
    '/jax/core/compile/jaxpr_trace_duration': 'trace',
    '/jax/core/compile/jaxpr_to_mlir_module_duration': 'lower',
    '/jax/core/compile/backend_compile_duration': 'compile',
}


def install(folder: str) -> None:
  """Registers the listener (call once per process, before compiling)."""
  import jax
  path = pathlib.Path(folder)
  path.mkdir(parents=True, exist_ok=True)
  out = path / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl"

  def listener(event, duration, **kwargs):
    phase = _EVENTS.get(event)
    if phase is None:
      return
    test = os.environ.get('PYTEST_CURRENT_TEST', '').rsplit(' ', 1)[0]
    with open(out, 'a', encoding='utf-8') as f:
      f.write(json.dumps({'test': test, 'fun': kwargs.get('fun_name', '?'),
                          'phase': phase, 'secs': round(duration, 3)}) + '\n')

  jax.monitoring.register_event_duration_secs_listener(listener)


def summary(folder: str, top: int = 25) -> str:
  rows = [json.loads(line) for f in sorted(pathlib.Path(folder).glob('*.jsonl'))
          for line in f.read_text(encoding='utf-8').splitlines()]
  per_test = collections.Counter()
  per_fun = collections.defaultdict(lambda: [0, 0.0])
  for r in rows:
    per_test[r['test']] += r['secs']
    if r['phase'] == 'compile' and r['secs'] >= 0.5:
      per_fun[r['fun']][0] += 1
      per_fun[r['fun']][1] += r['secs']
  lines = [f"{sum(per_test.values()):.0f} s tracing, lowering and compiling "
           f'in {len(per_test)} tests', '', 'per test:']
  lines += [f'{s:8.1f} s  {t}' for t, s in per_test.most_common(top)]
  lines += ['', 'per function (compilations of 0.5 s or more):']
  lines += [f'{v[1]:8.1f} s  {v[0]:3d}x  {k}' for k, v in
            sorted(per_fun.items(), key=lambda kv: -kv[1][1])[:top]]
  return '\n'.join(lines)


if __name__ == '__main__':
  print(summary(sys.argv[1]))
