"""Data parallelism: a ``'data'`` mesh, batch sharding, one jit per step.

Steps are pure functions of the *global* batch; they are made data-parallel
once, here, by ``jax.jit`` with the batch sharded along ``'data'`` and the
state replicated. XLA inserts the gradient all-reduce itself (this is what
``jax.pmap`` now compiles to as well). Multi-host: each process passes its
own rows and ``jax.make_array_from_process_local_data`` assembles the global
batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

__all__ = ['make_mesh', 'data_sharding', 'replicated', 'shard_batch',
           'replicate', 'check_batch_size', 'jit_step']


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first ``num_devices`` devices (all by default)."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f'num_devices={num_devices}, but {len(devices)} '
                       'device(s) are available')
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), ('data',))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over ``'data'``."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, name: str) -> None:
  """Raises a ValueError naming the config key when the batch cannot be
  split evenly over the devices and processes."""
  n = mesh.devices.size
  if batch_size < 1 or batch_size % n:
    raise ValueError(f'{name}={batch_size} is not a positive multiple of the '
                     f'{n} device(s) of the data mesh')
  if batch_size % jax.process_count():
    raise ValueError(f'{name}={batch_size} is not divisible by the '
                     f'{jax.process_count()} processes')


def shard_batch(local: Any, mesh: Mesh) -> Any:
  """This process's rows of a batch -> global arrays split over ``'data'``.

  Args:
    local: pytree of numpy arrays with a leading axis of global_batch /
      process_count rows.
    mesh: the data mesh.
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding,
                                                       np.asarray(x)), local)


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))


def jit_step(step: Callable, mesh: Mesh, *, donate: bool = True,
             num_extra: int = 0) -> Callable:
  """``step(state, batch, rng, *extra) -> (state, metrics)``, jitted.

  Data-parallel: the state, rng and ``num_extra`` further arguments (e.g.
  frozen reference parameters) are replicated, the batch split along
  ``'data'``, the outputs replicated; the input state's buffers are donated.
  """
  repl, data = replicated(mesh), data_sharding(mesh)
  return jax.jit(step, in_shardings=(repl, data, repl) + (repl,) * num_extra,
                 out_shardings=(repl, repl),
                 donate_argnums=(0,) if donate else ())
