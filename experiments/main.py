"""Launcher: ``python -m experiments.main --config=CONFIG --workdir=DIR``.

Configs are ml_collections files in ``experiments/configs/`` (locked; override
fields with ``--config.x=...``). All the work happens in
``experiments.stages``, which tests and notebooks call directly.
"""

import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'ml_collections config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where outputs go.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    # Orbax logs every checkpoint step at INFO; keep the console to our
    # progress bars and stage lines unless asked (--verbosity=0).
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if config.compilation_cache:
    from prefalign import compilation_cache
    compilation_cache.enable(config.compilation_cache)
  if config.distributed:
    import jax
    # Multi-host: coordinator address, process count and id come from the
    # cluster environment (SLURM, Open MPI, TPU pods) unless given.
    explicit = {}
    if config.coordinator_address:
      explicit = dict(coordinator_address=config.coordinator_address,
                      num_processes=config.num_processes,
                      process_id=config.process_id)
      if config.num_processes < 1 or not (
          0 <= config.process_id < config.num_processes):
        raise app.UsageError(
            f'config.coordinator_address is set: config.num_processes='
            f'{config.num_processes} and config.process_id='
            f'{config.process_id} must name this process among them.')
    jax.distributed.initialize(**explicit)
  from experiments import stages
  from prefalign import fileio
  from prefalign.train import runtime
  try:
    stages.run(config, _WORKDIR.value)
  except runtime.Preempted as e:
    # A scheduler's SIGTERM (or Ctrl-C): the checkpoint is written; exit
    # with the signal's conventional status and no traceback.
    print(f'\n{e}', file=sys.stderr, flush=True)
    sys.exit(128 + int(getattr(signal, e.signal_name)))
  except (ValueError, fileio.LockedError, OSError) as e:
    # Bad config values, data files or disks (the messages name the key,
    # file or directory): one line and status 2. --verbosity shows the
    # traceback.
    if flags.FLAGS['verbosity'].present:
      raise
    message = (fileio.describe_os_error(e) if isinstance(e, OSError) else
               str(e))
    print(f'error: {message}', file=sys.stderr, flush=True)
    sys.exit(2)


def _parse_flags(argv):
  """absl's flag parsing, with a bad ``--config.KEY=...`` (an unknown key, a
  value of the wrong type) or config file as one line and status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}\nPass --helpfull to see the flags.', file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    reason = e
    while isinstance(reason, (AttributeError, KeyError)) and reason.args:
      reason = reason.args[0]  # ml_collections wraps a KeyError's message
    key = str(reason).split('\n')[0].strip('"\'')
    name = next((a.split('=', 1)[0] for a in argv[1:]
                 if a.startswith('--config.') and
                 key in a.split('=', 1)[0][len('--config.'):].split('.')),
                None)
    if name is not None and isinstance(e, (AttributeError, KeyError)):
      hint = ' '.join(str(reason).split('\n')[1:]).strip()
      print(f'error: {name}: no such key in the config'
            + (f' ({hint})' if hint else ''), file=sys.stderr)
    else:
      print(f'error: {name or "--config"}: {reason}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
