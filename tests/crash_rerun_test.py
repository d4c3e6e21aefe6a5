"""tests/crash_rerun.py: a crashed worker's test reruns once; failures don't."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

CONFTEST = """
from tests.crash_rerun import pytest_handlecrashitem
from tests.crash_rerun import pytest_report_teststatus
from tests.crash_rerun import pytest_terminal_summary
"""

TESTS = """
import os
import pathlib


def test_crashes_once():
  marker = pathlib.Path(os.environ['CRASH_MARKER'])
  if not marker.exists():
    marker.write_text('crashed')
    os.abort()


def test_always_crashes():
  os.abort()


def test_fails():
  assert 1 == 2
"""


def test_a_crashed_worker_reruns_its_test_once(tmp_path):
  pytest.importorskip('xdist')
  project = tmp_path / 'project'
  project.mkdir()
  (project / 'conftest.py').write_text(CONFTEST)
  (project / 'crashy_test.py').write_text(TESTS)
  env = dict(os.environ, PYTHONPATH=str(ROOT),
             CRASH_MARKER=str(tmp_path / 'marker'))
  proc = subprocess.run(
      [sys.executable, '-m', 'pytest', '-n', '2', '-p', 'no:cacheprovider',
       '-p', 'no:faulthandler', '-q', 'crashy_test.py'],
      cwd=project, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  out = proc.stdout
  assert proc.returncode == 1, out + proc.stderr
  assert '2 failed, 1 passed, 2 rerun' in out, out
  assert 'FAILED crashy_test.py::test_always_crashes' in out
  assert 'FAILED crashy_test.py::test_fails' in out
  assert 'crashy_test.py::test_crashes_once: worker crashed 1x' in out
  assert 'crashy_test.py::test_always_crashes: worker crashed 1x' in out
  assert 'test_fails: worker crashed' not in out
