"""Launcher: ``python -m experiments.main --config=CONFIG --workdir=DIR``.

Configs are ml_collections files in ``experiments/configs/`` (locked; override
fields with ``--config.x=...``). All the work happens in
``experiments.stages``, which tests and notebooks call directly.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'ml_collections config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where outputs go.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from experiments import stages  # pylint: disable=g-import-not-at-top
  stages.run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
