"""A persistent compilation cache: compiled programs kept across runs.

Compiling the metric, the sampler or a training step costs seconds to tens
of seconds on a CPU; a cache folder lets the next process (a rerun, another
shard of an evaluation, a resumed job) load the program instead. JAX keys
each entry on the program, the jax/jaxlib versions and the compiler flags,
so a stale entry is never used::

  from prefalign import compilation_cache
  compilation_cache.enable('~/.cache/prefalign/jax')

``prefalign-wosac --compilation-cache DIR`` and the main job's
``config.compilation_cache`` call it.
"""

from __future__ import annotations

import os

import jax

__all__ = ['enable']


def enable(folder: str | os.PathLike, min_compile_seconds: float = 0.5
           ) -> str:
  """Persists compiled programs that took ``min_compile_seconds`` or more
  in ``folder`` (created; ``~`` expanded). Returns the folder's path.

  Call it before the first compilation of the programs to cache.

  Raises:
    ValueError: naming ``folder`` if it cannot be created.
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ValueError(f'compilation cache {path}: cannot create it '
                     f'({e.strerror})') from None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    float(min_compile_seconds))
  return path
