"""Shared pytest set-up.

8 host CPU devices are forced *before* jax is imported anywhere, so the
sharded (data-parallel) code paths run in every test session.
"""
import os

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') +
    ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent compilation cache for the session's xdist workers, the
# processes the tests start (the settings travel as environment variables)
# and later sessions: most of the suite's time is XLA compiling the same
# small programs (the tiny models' steps, the metric on the same scene
# sizes), in several tests and in every run. It lives beside the official
# package's venvs in ~/.cache/prefalign (PREFALIGN_CACHE moves that),
# shared by every clone; PREFALIGN_TEST_JAX_CACHE moves it, '' turns it
# off. Entries are keyed by the program, the jax/jaxlib version and the XLA
# flags, so a changed program compiles again and a stale one is never used;
# the oldest are deleted beyond _CACHE_MAX_BYTES.
from tests.parity import official_env  # noqa: E402 (no jax import)

_CACHE = os.environ.get('PREFALIGN_TEST_JAX_CACHE',
                        str(official_env.CACHE / 'jax-tests'))
_CACHE_MAX_BYTES = 2 << 30
if _CACHE:
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')


def _prune(folder: str, max_bytes: int) -> None:
  """Deletes the oldest files of ``folder`` until it holds 3/4 of
  ``max_bytes``, when it holds more than ``max_bytes``."""
  try:
    files = [(e.stat().st_mtime, e.stat().st_size, e.path)
             for e in os.scandir(folder) if e.is_file()]
  except OSError:
    return
  total = sum(size for _, size, _ in files)
  if total <= max_bytes:
    return
  for _, size, path in sorted(files):
    if total <= max_bytes * 3 // 4:
      break
    try:
      os.remove(path)
      total -= size
    except OSError:
      pass


if _CACHE and not os.environ.get('PYTEST_XDIST_WORKER'):
  _prune(_CACHE, _CACHE_MAX_BYTES)

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

if os.environ.get('PREFALIGN_TEST_COMPILE_LOG'):  # tests/compile_log.py
  from tests import compile_log  # noqa: E402
  compile_log.install(os.environ['PREFALIGN_TEST_COMPILE_LOG'])

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
from tests.crash_rerun import pytest_handlecrashitem  # noqa: E402,F401
from tests.crash_rerun import pytest_report_teststatus  # noqa: E402,F401
from tests.crash_rerun import pytest_terminal_summary  # noqa: E402,F401


@pytest.fixture(scope='session')
def tiny_demo(tmp_path_factory) -> pathlib.Path:
  """The session's one end-to-end run of the main job (tests/tiny_demo.py)."""
  from tests import tiny_demo as tiny_demo_lib
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent  # the workers' common folder, this session's only
  return tiny_demo_lib.shared_run(base / 'tiny_demo')
