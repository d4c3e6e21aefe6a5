"""Builds (once) and runs the official Waymo Open Dataset package in its own venv.

The official package pins numpy 1.23 / TensorFlow 2.13 / jax 0.4.13, so it can
never share an environment with this project. These helpers create a separate
virtual environment under a cache folder and run scripts there, exchanging
JSON. ``protos`` is the lean flavour: the official wheel without dependencies
plus protobuf 3.20, enough to parse Scenario protos with the official
definitions.
"""

import functools
import os
import pathlib
import subprocess
import sys

import pytest

WOD_WHEEL = 'waymo-open-dataset-tf-2-12-0==1.6.7'
CACHE = pathlib.Path(os.environ.get(
    'PREFALIGN_CACHE', pathlib.Path.home() / '.cache' / 'prefalign'))

_FLAVOURS = {
    'protos': [['--no-deps', WOD_WHEEL], ['protobuf==3.20.3', 'numpy<2']],
}


def _run(cmd, timeout):
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                        check=False)


@functools.lru_cache(maxsize=None)
def official_python(flavour: str = 'protos') -> str:
  """Path of the Python interpreter of the official venv; skips if unbuildable."""
  venv = CACHE / f'wod-1.6.7-{flavour}'
  python = venv / 'bin' / 'python'
  stamp = venv / '.complete'
  if stamp.exists():
    return str(python)
  r = _run([sys.executable, '-m', 'venv', '--clear', str(venv)], 300)
  if r.returncode:
    pytest.skip(f'cannot create a venv for the official package: {r.stderr}')
  for args in _FLAVOURS[flavour]:
    r = _run([str(python), '-m', 'pip', 'install', '-q', *args], 900)
    if r.returncode:
      pytest.skip(f'cannot install {" ".join(args)} for the official package '
                  f'(no network?): {r.stderr.strip()[-500:]}')
  stamp.touch()
  return str(python)


def run_official(script: pathlib.Path, *args: str, flavour: str = 'protos',
                 timeout: int = 1800) -> str:
  """Runs ``script`` with the official venv's Python; returns its stdout."""
  r = _run([official_python(flavour), str(script), *args], timeout)
  if r.returncode:
    raise AssertionError(f'{script.name} failed in the official venv:\n'
                         f'{r.stderr[-3000:]}')
  return r.stdout
