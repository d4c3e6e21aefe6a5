"""Builds (once) and runs the official Waymo Open Dataset package in its venv.

The official package pins numpy 1.23 / TensorFlow 2.13 / jax 0.4.13, so it can
never share an environment with this project. These helpers create separate
virtual environments under a cache folder and run scripts there, exchanging
JSON (or files). Flavours:

* ``protos``: the official 1.6.7 wheel without dependencies plus protobuf
  3.20, enough to parse Scenario / sim-agents protos with the official
  definitions.
* ``metrics-1.6.7``: the lean sim-agents-metric install of the current (2025
  challenge) code: the 1.6.7 wheel ``--no-deps`` plus tensorflow-cpu 2.13.1,
  tensorflow-probability 0.21.0 and scikit-learn.
* ``metrics-1.6.4``: the same for the 2024 leaderboard code: the 1.6.4 wheel
  ``--no-deps`` plus tensorflow-cpu 2.12.1, tensorflow-probability 0.19.0 and
  scikit-learn.

Every flavour is verified by importing what it is for; a flavour that cannot
be installed or imported makes the calling test skip, with the reason.
Building is serialised with a file lock, so parallel test workers share one
build.
"""

import contextlib
import dataclasses
import fcntl
import functools
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

WOD_WHEEL = 'waymo-open-dataset-tf-2-12-0==1.6.7'
CACHE = pathlib.Path(os.environ.get(
    'PREFALIGN_CACHE', pathlib.Path.home() / '.cache' / 'prefalign'))

_IMPORT_METRICS = (
    'from waymo_open_dataset.wdl_limited.sim_agents_metrics import metrics, '
    'metric_features; '
    'from waymo_open_dataset.utils.sim_agents import submission_specs; '
    'from waymo_open_dataset.protos import scenario_pb2, '
    'sim_agents_metrics_pb2, sim_agents_submission_pb2')


@dataclasses.dataclass(frozen=True)
class Flavour:
  """How one official venv is built and checked.

  Attributes:
    venv: folder name under ``CACHE``.
    version: version of the official wheel installed in it.
    steps: argument lists for successive ``pip install`` calls.
    check: Python source run in the venv after the install; must exit 0.
  """
  venv: str
  version: str
  steps: tuple[tuple[str, ...], ...]
  check: str


FLAVOURS = {
    'protos': Flavour(
        venv='wod-1.6.7-protos', version='1.6.7',
        steps=(('--no-deps', WOD_WHEEL), ('protobuf==3.20.3', 'numpy<2')),
        check='from waymo_open_dataset.protos import scenario_pb2, '
              'sim_agents_submission_pb2'),
    # wosac.md section 8: the lean install. numpy 1.24.3 is the newest that
    # TF 2.13 accepts; scikit-learn 1.2.2 is the wheel's own pin.
    'metrics-1.6.7': Flavour(
        venv='wod-1.6.7-metrics', version='1.6.7',
        steps=(('--no-deps', 'waymo-open-dataset-tf-2-12-0==1.6.7'),
               ('tensorflow-cpu==2.13.1', 'tensorflow-probability==0.21.0',
                'scikit-learn==1.2.2', 'numpy==1.24.3',
                'protobuf==4.25.9')),
        check=_IMPORT_METRICS),
    # The 2024 leaderboard code (time-to-collision over all object types).
    'metrics-1.6.4': Flavour(
        venv='wod-1.6.4-metrics', version='1.6.4',
        steps=(('--no-deps', 'waymo-open-dataset-tf-2-12-0==1.6.4'),
               ('tensorflow-cpu==2.12.1', 'tensorflow-probability==0.19.0',
                'scikit-learn==1.2.2', 'numpy==1.23.5',
                'protobuf==4.25.9')),
        check=_IMPORT_METRICS),
}


def _run(cmd, timeout, **kwargs):
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                        check=False, **kwargs)


@contextlib.contextmanager
def file_lock(path: pathlib.Path):
  """Holds an exclusive ``flock`` on ``path`` (created if needed)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a+', encoding='utf-8') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def venv_dir(flavour: str) -> pathlib.Path:
  return CACHE / FLAVOURS[flavour].venv


def version(flavour: str) -> str:
  """Version of the official wheel of ``flavour`` (e.g. '1.6.7')."""
  return FLAVOURS[flavour].version


def build(flavour: str) -> tuple[str | None, str]:
  """Builds the venv of ``flavour`` unless already complete.

  Returns:
    ``(python, message)``: the interpreter path, or ``None`` and the reason
    the venv could not be built. A failed build leaves no stamp, so it is
    retried next time.
  """
  spec = FLAVOURS[flavour]
  venv = venv_dir(flavour)
  python = venv / 'bin' / 'python'
  stamp = venv / '.complete'
  with file_lock(CACHE / f'.{spec.venv}.lock'):
    if stamp.exists():
      return str(python), 'cached'
    start = time.monotonic()
    r = _run([sys.executable, '-m', 'venv', '--clear', str(venv)], 300)
    if r.returncode:
      return None, f'cannot create a venv: {r.stderr.strip()[-500:]}'
    for args in spec.steps:
      r = _run([str(python), '-m', 'pip', 'install', '-q',
                '--disable-pip-version-check', *args], 1800)
      if r.returncode:
        return None, (f'cannot install {" ".join(args)} (no network?): '
                      f'{r.stderr.strip()[-500:]}')
    r = _run([str(python), '-c', spec.check], 600, cwd=str(venv))
    if r.returncode:
      return None, (f'the {flavour} venv does not import: '
                    f'{r.stderr.strip()[-800:]}')
    freeze = _run([str(python), '-m', 'pip', 'freeze'], 300).stdout
    (venv / 'pip-freeze.txt').write_text(freeze, encoding='utf-8')
    (venv / 'build-seconds.txt').write_text(
        f'{time.monotonic() - start:.1f}\n', encoding='utf-8')
    stamp.touch()
    return str(python), 'built'


@functools.cache
def official_python(flavour: str = 'protos') -> str:
  """The Python interpreter of the official venv; skips if unbuildable."""
  python, message = build(flavour)
  if python is None:
    pytest.skip(f'official package venv {flavour!r} unavailable: {message}')
  return python


def remove(flavour: str) -> None:
  """Deletes the venv of ``flavour`` (it is rebuilt on next use)."""
  shutil.rmtree(venv_dir(flavour), ignore_errors=True)
  official_python.cache_clear()


def run_official(script: pathlib.Path, *args: str, flavour: str = 'protos',
                 timeout: int = 1800) -> str:
  """Runs ``script`` with the official venv's Python; returns its stdout."""
  r = _run([official_python(flavour), str(script), *args], timeout,
           env=official_environ())
  if r.returncode:
    raise AssertionError(f'{script.name} failed in the official venv:\n'
                         f'{r.stderr[-3000:]}')
  return r.stdout


def official_environ() -> dict[str, str]:
  """Environment for official runs: CPU only, quiet TensorFlow, no leaks."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'XLA_FLAGS', 'VIRTUAL_ENV')}
  env.update(TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='',
             PYTHONHASHSEED='0')
  return env


if __name__ == '__main__':
  # python tests/parity/official_env.py FLAVOUR...: builds the venvs.
  for name in sys.argv[1:] or list(FLAVOURS):
    print(name, *build(name), flush=True)
