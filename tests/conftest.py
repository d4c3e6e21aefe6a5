"""Shared pytest set-up.

8 host CPU devices are forced *before* jax is imported anywhere, so the
sharded (data-parallel) code paths run in every test session.
"""
import os

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') +
    ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

SHARED_WOMD = pathlib.Path(
    os.environ.get(
        'PREFALIGN_SHARED_DATA',
        pathlib.Path(__file__).resolve().parents[1].parent / 'shared' /
        'data')) / 'womd'


@pytest.fixture
def rng():
  return jax.random.key(0)


@pytest.fixture(scope='session')
def shared_womd() -> pathlib.Path:
  """The shared real-WOMD folder; skips the test when it is absent."""
  if not (SHARED_WOMD / 'official').is_dir():
    pytest.skip(f'real WOMD data not found at {SHARED_WOMD} (it lives in '
                '../shared beside the checkout; set PREFALIGN_SHARED_DATA)')
  return SHARED_WOMD


# A test that takes its xdist worker down (a native crash) runs once more.
from tests.crash_rerun import pytest_handlecrashitem  # noqa: E402,F401  pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
from tests.crash_rerun import pytest_report_teststatus  # noqa: E402,F401  pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
from tests.crash_rerun import pytest_terminal_summary  # noqa: E402,F401  pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
