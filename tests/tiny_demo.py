"""The suite's one end-to-end run of the main job, shared by its tests.

The tiny demo (``experiments/configs/demo.py:runlocal``) with every kind of
comparison switched on is run once per session, under a lock in the xdist
workers' common temporary folder: the main job's test checks its outputs,
the notebook's test runs the notebook over a copy of it (every stage then
reads its output back).
"""

import contextlib
import fcntl
import io
import pathlib

from experiments import stages
from experiments.configs import demo


def config():
  """The tiny demo with a baseline, the data-scaling sweep and the ablation."""
  c = demo.get_config('runlocal')
  c.pretrain.num_steps = 2
  c.pretrain.eval_every = 2
  c.pretrain.checkpoint_every = 2
  c.collect.ranking.num_pairs = 1
  c.align.num_steps = 2
  c.compare.baselines = ('afd',)
  c.compare.scaling = (0.5,)
  c.compare.ablation = ('collision',)
  c.report.animation_steps = 5
  return c


def shared_run(root: pathlib.Path) -> pathlib.Path:
  """Runs ``config()`` into ``root/run`` unless a finished run is there.

  Returns ``root``, holding ``run/`` (the workdir; read it, or copy it before
  writing) and ``stdout.txt`` (what the run printed). A process waits for
  another one's run in progress.
  """
  root.mkdir(parents=True, exist_ok=True)
  with open(root / 'lock', 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    done = root / 'done'
    if not done.exists():
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        stages.run(config(), str(root / 'run'))
      (root / 'stdout.txt').write_text(out.getvalue(), encoding='utf-8')
      done.touch()
  return root
