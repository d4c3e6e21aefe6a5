"""colab/prefalign_demo.ipynb: committed clean, and runs headless end to end.

The notebook runs in its own kernel process (the interpreter running the
tests, through a kernelspec written into the test's temporary folder), with
the tiny config, its workdir in pytest's ``tmp_path`` and the same forced 8
host CPU devices as ``conftest.py`` gives the test process.
"""

import json
import os
import pathlib
import shutil
import sys
import time

import pytest

nbformat = pytest.importorskip('nbformat', reason='pip install -e .[dev]')

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'colab' / 'prefalign_demo.ipynb'
CELL_TIMEOUT_S = 900


def _read():
  return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_committed_without_outputs_and_runs_in_a_plain_kernel():
  nb = _read()
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code
  for cell in code:
    assert not cell.outputs, f'cell {cell.get("id")} has outputs'
    assert cell.execution_count is None, cell.get('id')
    # Plain Python only: no shell or line magics, so any kernel runs it.
    for line in cell.source.splitlines():
      assert not line.lstrip().startswith(('!', '%')), line
  source = '\n'.join(c.source for c in code)
  assert "get_config('runlocal' if TINY else None)" in source
  assert 'PREFALIGN_WORKDIR' in source and 'PREFALIGN_REPO_URL' in source


def _kernel_manager(tmp_path: pathlib.Path):
  """A kernel manager that starts this interpreter's ipykernel."""
  kernelspec = pytest.importorskip('jupyter_client.kernelspec')
  manager = pytest.importorskip('jupyter_client.manager')
  pytest.importorskip('ipykernel', reason='pip install -e .[dev]')
  spec_dir = tmp_path / 'kernels' / 'prefalign-test'
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f',
               '{connection_file}'],
      'display_name': 'prefalign (test)', 'language': 'python'}))
  specs = kernelspec.KernelSpecManager(
      kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
  return manager.KernelManager(kernel_name='prefalign-test',
                               kernel_spec_manager=specs)


def _kernel_env(workdir: pathlib.Path) -> dict[str, str]:
  env = dict(os.environ)
  flags = env.get('XLA_FLAGS', '')
  if '--xla_force_host_platform_device_count' not in flags:
    flags = f'{flags} --xla_force_host_platform_device_count=8'.strip()
  env['XLA_FLAGS'] = flags
  env.setdefault('JAX_PLATFORMS', 'cpu')
  env['PREFALIGN_WORKDIR'] = str(workdir)
  env['MPLBACKEND'] = 'Agg'
  return env


def _outputs(nb, output_type=None):
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if output_type is None or out.output_type == output_type:
        yield cell, out


@pytest.mark.slow
@pytest.mark.xdist_group('tiny_demo')  # with the main job's test
def test_notebook_runs_the_tiny_demo_and_shows_the_report(tmp_path, tiny_demo):
  # The notebook runs over a copy of the session's tiny demo run (its stages
  # read their outputs back; tests/experiments_test.py checks the run
  # itself): this test is of the notebook's cells, in a plain kernel.
  nbclient = pytest.importorskip('nbclient', reason='pip install -e .[dev]')
  km = _kernel_manager(tmp_path)
  workdir = tmp_path / 'run'
  shutil.copytree(tiny_demo / 'run', workdir)
  nb = _read()
  client = nbclient.NotebookClient(
      nb, km=km, timeout=CELL_TIMEOUT_S,
      resources={'metadata': {'path': str(NOTEBOOK.parent)}})
  start = time.perf_counter()
  try:
    client.execute(env=_kernel_env(workdir))
  finally:
    if km.has_kernel:
      km.shutdown_kernel(now=True)
  print(f'notebook ran in {time.perf_counter() - start:.0f} s')

  errors = [(c.get('id'), o.get('ename'), o.get('evalue'))
            for c, o in _outputs(nb, 'error')]
  assert not errors, errors
  for path in ('inspect/scenario.png', 'report/index.html',
               'report/ranking.png', 'report/before_after.gif',
               'report/curves.png', 'compare/results.json'):
    assert (workdir / path).stat().st_size > 0, path

  streams = ''.join(o.get('text', '') for _, o in _outputs(nb, 'stream'))
  assert 'prefalign is importable: nothing to install' in streams
  assert f'workdir: {workdir}' in streams
  for stage in ('data', 'pretrain', 'collect', 'compare', 'report'):
    assert f'[{stage}] ' in streams, stage

  shown = [o.data for _, o in _outputs(nb, 'display_data')]
  pngs = [d for d in shown if 'image/png' in d]
  assert len(pngs) >= 3  # scenario, ranking, curves
  assert any('data:image/gif;base64,' in d.get('text/html', '')
             for d in shown)
  markdown = '\n'.join(d.get('text/markdown', '') for d in shown)
  assert 'was not made by this run' not in markdown
  assert '| reference |' in markdown
  assert '| dpa_omf |' in markdown
  assert 'realism minus reference (paired)' in markdown
