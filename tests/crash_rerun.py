"""A test whose pytest-xdist worker dies runs once more on a fresh worker.

A native crash (SIGSEGV / SIGABRT inside the XLA CPU runtime, seen once in a
full CI run on a loaded 2-core machine and not reproduced in isolation) takes
the whole worker down. pytest-xdist then fails the test it was running; with
these hooks (the pattern pytest-xdist documents for ``pytest_handlecrashitem``)
that test is put back in the queue once instead. It is reported as ``RERUN``
and named in a summary section, with the crash dump left above it in the
log. A second crash fails it, and ordinary failures are never rerun.
"""

import pytest

CRASH_RERUNS = 1
_crashed: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
  if _crashed.get(crashitem, 0) >= CRASH_RERUNS:
    return
  try:
    sched.mark_test_pending(crashitem)
  except NotImplementedError:  # a scheduler that cannot take it back
    return
  _crashed[crashitem] = _crashed.get(crashitem, 0) + 1
  report.outcome = 'rerun'


def pytest_report_teststatus(report):
  if report.outcome == 'rerun':
    return 'rerun', 'R', ('RERUN', {'yellow': True})
  return None


def pytest_terminal_summary(terminalreporter):
  if not _crashed:
    return
  terminalreporter.write_sep(
      '=', 'tests whose worker crashed, rerun on a fresh worker', yellow=True)
  for nodeid, count in _crashed.items():
    terminalreporter.write_line(
        f'{nodeid}: worker crashed {count}x (its dump is above); the result '
        'above is the rerun\'s')
