"""Cached rollouts and official WOSAC metric results (runs in OUR venv).

The official metric costs 50-150 s and 2-14 GB per real scenario on 2 cores, so
everything the official package computes is cached under
``$PREFALIGN_CACHE/parity/`` (never in the repository: the inputs are WOMD
data under the Waymo licence and so is everything derived from them):

* ``rollouts/{key}.{tfrecord|binproto}``: synthetic rollouts written by
  ``make_rollouts.py`` in the ``protos`` venv, keyed by the sha256 of the
  scenario file, the kind, seed and parameters, and the script.
* ``results/{key}.json``: the JSON lines of ``official_metrics.py`` for one
  config, keyed by the sha256 of the scenario file + the rollout file + the
  config (its name for a shipped config, its text for a path) + the official
  package version (+ the script, so a fix re-runs it).
* ``features/{key}.npz``: the per-feature arrays (``--dump-features``).
* ``real/{key}.tfrecord``: the small real-scenario subset of
  ``REAL_PARITY_SCENARIOS``, copied record by record from the shared shards.

Only ONE official metric computation runs at a time on the machine: every run
takes a file lock, so parallel test workers queue instead of exhausting
memory. Typical use::

  from tests.parity import official_cache
  sub = official_cache.rollouts(scenarios, 'noisy', seed=1)
  lines = official_cache.official_results(scenarios, sub, ('2025',))
"""

from collections.abc import Iterable, Sequence
import functools
import hashlib
import json
import os
import pathlib
import subprocess
import tempfile
import time

from . import official_env
from . import tfrecord_io

HERE = pathlib.Path(__file__).resolve().parent
PARITY_CACHE = official_env.CACHE / 'parity'
MAKE_ROLLOUTS = HERE / 'make_rollouts.py'
OFFICIAL_METRICS = HERE / 'official_metrics.py'
_RUN_LOCK = PARITY_CACHE / '.official-run.lock'

# Real shared scenarios (real/ in the shared WOMD folder) small enough for
# parity runs with the official package on a 2-core / 24 GB machine. The
# official feature code's cost grows with the evaluated agents x road-edge
# points (the road-edge distance dominates), its memory with that and the sim
# agents, so these have few tracks and few map features. Measured with 1.6.7,
# the 2025 config and 32 `perturbed` rollouts (seed 0), one scenario per
# official process, machine otherwise idle: wall time of the process (of which
# features), peak RSS.
REAL_PARITY_SCENARIOS = {
    # 9 vehicles, 6 sim agents, 2 evaluated (SDC + 1 derived), 143 map
    # features (29 road edges, 3.8k points). Nocturne-style (flat z). One
    # evaluated vehicle has invalid logged steps (log replay interpolates).
    # 30 s (23 s), 1.2 GB.
    'tfrecord-00072-of-01000_261':
        'smallest scene in real/; evaluated agent with log gaps',
    # 12 vehicles + 3 pedestrians, 11 sim agents, 4 evaluated (WOMD's own
    # tracks_to_predict, one a pedestrian), 213 map features (38 road edges,
    # 4.0k points), real z, traffic-signal states at all 91 steps: the
    # smallest of the 4 scenes with signals. 68 s (61 s), 2.0 GB.
    '2a173b334be3d32c':
        'smallest scene with traffic signals (traffic-light feature); real '
        'metadata, evaluated pedestrian',
    # 22 vehicles + 5 pedestrians, 23 sim agents, 3 evaluated (one a
    # pedestrian), 69 map features (19 road edges, 2.5k points): the fewest
    # map features, the most interaction per second. Nearly static in the log.
    # 26 s (19 s), 1.1 GB.
    'tfrecord-00083-of-01000_451':
        'fewest map features; many sim agents around an evaluated pedestrian',
}
# Rejected after measuring: tfrecord-00105-of-01000_241 (13 sim agents, 8
# evaluated: 110 s, 3.4 GB) and tfrecord-00082-of-01000_465 (6 sim agents,
# 4 evaluated, 53 road edges: 82 s, 2.5 GB).
REAL_SHARDS = ('real.tfrecord-00000-of-00002', 'real.tfrecord-00001-of-00002')


def _mkdir(path: pathlib.Path) -> pathlib.Path:
  path.mkdir(parents=True, exist_ok=True)
  return path


@functools.cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
  del size, mtime_ns  # Part of the memo key only.
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def sha256_file(path) -> str:
  """sha256 of a file's bytes (memoised on path, size and mtime)."""
  st = os.stat(path)
  return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def _key(*parts) -> str:
  return hashlib.sha256(
      json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
  _mkdir(path.parent)
  with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:
    f.write(data)
  os.replace(f.name, path)


def _run(args: Sequence[str], flavour: str, timeout: int
         ) -> subprocess.CompletedProcess:
  r = subprocess.run([official_env.official_python(flavour), *map(str, args)],
                     capture_output=True, text=True, timeout=timeout,
                     check=False, env=official_env.official_environ(),
                     cwd=str(HERE))
  if r.returncode:
    raise AssertionError(f'{pathlib.Path(args[0]).name} failed in the '
                         f'official {flavour} venv:\n{r.stderr[-3000:]}')
  return r


def rollouts(scenarios, kind: str, seed: int = 0, *, binproto: bool = False,
             noise_m: float = 0.3, noise_rad: float = 0.05,
             perturb_m: float = 2.0, flavour: str = 'protos',
             timeout: int = 900) -> pathlib.Path:
  """Path of cached ``make_rollouts.py`` output for ``scenarios``.

  Args:
    scenarios: TFRecord of Scenario protos.
    kind: 'log', 'noisy', 'constant_velocity' or 'perturbed'.
    seed: random seed (ignored by 'log' and 'constant_velocity' output).
    binproto: write a SimAgentsChallengeSubmission instead of a TFRecord.
    noise_m: position noise (m) of 'noisy'.
    noise_rad: heading noise (rad) of 'noisy'.
    perturb_m: lateral offset scale (m at 8 s) of 'perturbed'.
    flavour: official venv that runs the script.
    timeout: seconds.

  Returns:
    The rollout file (read-only use; shared between tests).
  """
  params = {'kind': kind, 'seed': seed, 'noise_m': noise_m,
            'noise_rad': noise_rad, 'perturb_m': perturb_m}
  key = _key('rollouts', sha256_file(scenarios), params, binproto,
             sha256_file(MAKE_ROLLOUTS), sha256_file(HERE / 'tfrecord_io.py'))
  out = PARITY_CACHE / 'rollouts' / (
      f'{key}.{"binproto" if binproto else "tfrecord"}')
  if out.exists():
    return out
  with official_env.file_lock(PARITY_CACHE / 'rollouts' / f'.{key}.lock'):
    if out.exists():
      return out
    tmp = out.with_name(out.name + '.tmp')
    args = [MAKE_ROLLOUTS, '--scenarios', scenarios, '--kind', kind,
            '--seed', seed, '--out', tmp, '--noise-m', noise_m,
            '--noise-rad', noise_rad, '--perturb-m', perturb_m]
    _run(args + (['--binproto'] if binproto else []), flavour, timeout)
    os.replace(tmp, out)
  return out


def config_id(config: str, flavour: str) -> str:
  """What identifies a config: a shipped name + version, or the text's sha."""
  if config in ('2024', '2025', 'test'):
    return f'{config}@{official_env.version(flavour)}'
  return 'sha256:' + sha256_file(config)


def _result_path(scenarios, submission, config: str, flavour: str,
                 scenario_ids: Sequence[str]) -> pathlib.Path:
  key = _key('results', sha256_file(scenarios), sha256_file(submission),
             config_id(config, flavour), official_env.version(flavour),
             sorted(scenario_ids), sha256_file(OFFICIAL_METRICS),
             sha256_file(HERE / 'tfrecord_io.py'))
  return PARITY_CACHE / 'results' / f'{key}.json'


def _features_path(scenarios, submission, flavour: str,
                   scenario_ids: Sequence[str]) -> pathlib.Path:
  key = _key('features', sha256_file(scenarios), sha256_file(submission),
             official_env.version(flavour), sorted(scenario_ids),
             sha256_file(OFFICIAL_METRICS))
  return PARITY_CACHE / 'features' / f'{key}.npz'


def _compute(scenarios, submission, configs: Sequence[str], flavour: str,
             scenario_ids: Sequence[str], features: pathlib.Path | None,
             timeout: int) -> None:
  """One official run; stores per-config results (and features)."""
  with tempfile.TemporaryDirectory(dir=_mkdir(PARITY_CACHE)) as tmp:
    out = pathlib.Path(tmp) / 'out.jsonl'
    args = [OFFICIAL_METRICS, '--scenarios', scenarios, '--submission',
            submission, '--out', out]
    for config in configs:
      args += ['--config', config]
    if scenario_ids:
      args += ['--scenario-ids', ','.join(scenario_ids)]
    if features is not None:
      args += ['--dump-features', pathlib.Path(tmp) / 'features.npz']
    start = time.monotonic()
    _run(args, flavour, timeout)
    wall = time.monotonic() - start
    lines = [json.loads(s) for s in out.read_text().splitlines() if s]
    for config in configs:
      mine = [dict(line, run_wall_seconds=round(wall, 1)) for line in lines
              if line['config'] == config]
      _atomic_write(_result_path(scenarios, submission, config, flavour,
                                 scenario_ids),
                    json.dumps(mine, indent=1).encode())
    if features is not None:
      _mkdir(features.parent)
      os.replace(pathlib.Path(tmp) / 'features.npz', features)


def official_results(scenarios, submission, configs: Iterable[str] = ('2025',),
                     flavour: str = 'metrics-1.6.7',
                     scenario_ids: Sequence[str] = (),
                     timeout: int = 3600) -> list[dict]:
  """Official per-(scenario, config) result records, computed once.

  Args:
    scenarios: TFRecord of Scenario protos.
    submission: rollouts (TFRecord of ScenarioRollouts or binproto).
    configs: '2024', '2025' (1.6.5+ only), 'test' (the official unit-test
      config, every weight 1) or textproto paths.
    flavour: 'metrics-1.6.7' or 'metrics-1.6.4'.
    scenario_ids: restrict to these scenarios (default: all with rollouts).
    timeout: seconds for one official run.

  Returns:
    The JSON records of ``official_metrics.py`` (``metrics``, ``buckets``,
    ``package_version``, timings...), config by config in the order given,
    scenarios in file order; each has ``config`` set to the name given.
  """
  configs = list(configs)
  paths = {c: _result_path(scenarios, submission, c, flavour, scenario_ids)
           for c in configs}
  if any(not p.exists() for p in paths.values()):
    with official_env.file_lock(_RUN_LOCK):
      missing = [c for c in configs if not paths[c].exists()]
      if missing:
        _compute(scenarios, submission, missing, flavour, scenario_ids, None,
                 timeout)
  return [line for c in configs
          for line in json.loads(paths[c].read_text())]


def official_features(scenarios, submission, flavour: str = 'metrics-1.6.7',
                      scenario_ids: Sequence[str] = (),
                      timeout: int = 3600) -> pathlib.Path:
  """Cached ``.npz`` of the official log and sim ``MetricFeatures`` arrays.

  Keys are ``{scenario_id}/{log|sim}/{field}``. The run also caches the
  results for the 2024 config as a by-product.
  """
  path = _features_path(scenarios, submission, flavour, scenario_ids)
  if path.exists():
    return path
  with official_env.file_lock(_RUN_LOCK):
    if not path.exists():
      _compute(scenarios, submission, ['2024'], flavour, scenario_ids, path,
               timeout)
  return path


def real_subset(shared_womd: pathlib.Path,
                scenario_ids: Iterable[str] = tuple(REAL_PARITY_SCENARIOS)
                ) -> pathlib.Path:
  """A TFRecord of the given real scenarios, copied from the shared shards.

  Records are copied byte for byte (framing and CRCs included), in the order
  of ``scenario_ids``, into the cache folder.
  """
  # Imported here: the rest of this module runs without prefalign's protos.
  from prefalign.data.protos import scenario_pb2

  scenario_ids = list(scenario_ids)
  shards = [shared_womd / 'real' / name for name in REAL_SHARDS]
  key = _key('real', [sha256_file(s) for s in shards], scenario_ids)
  out = PARITY_CACHE / 'real' / f'{key}.tfrecord'
  if out.exists():
    return out
  found = {}
  for shard in shards:
    for raw in tfrecord_io.raw_records(shard):
      scenario_id = scenario_pb2.Scenario.FromString(raw[12:-4]).scenario_id
      if scenario_id in scenario_ids:
        found[scenario_id] = raw
  missing = [i for i in scenario_ids if i not in found]
  if missing:
    raise KeyError(f'scenarios not in {shared_womd / "real"}: {missing}')
  _atomic_write(out, b''.join(found[i] for i in scenario_ids))
  return out


def measure_real(shared_womd: pathlib.Path, kind: str = 'perturbed',
                 config: str = '2025', flavour: str = 'metrics-1.6.7',
                 seed: int = 0) -> list[dict]:
  """Official wall time and peak memory per real parity scenario.

  Each scenario runs in its own official process (one at a time), so the
  ``max_rss_kb`` of its record is that scenario's peak resident memory.
  """
  subset = real_subset(shared_womd)
  submission = rollouts(subset, kind, seed)
  rows = []
  for scenario_id in REAL_PARITY_SCENARIOS:
    (record,) = official_results(subset, submission, (config,), flavour,
                                 scenario_ids=(scenario_id,))
    rows.append({k: record[k] for k in (
        'scenario_id', 'n_sim_agents', 'n_evaluated', 'feature_seconds',
        'run_wall_seconds', 'max_rss_kb')} | {
            'metametric': record['metrics']['metametric']})
  return rows


if __name__ == '__main__':
  # python -m tests.parity.official_cache [SHARED_WOMD]: measures the real
  # parity scenarios (cached after the first run).
  import sys
  _shared = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                         HERE.parents[2] / 'shared' / 'data' / 'womd')
  for _row in measure_real(_shared):
    print(json.dumps(_row))
