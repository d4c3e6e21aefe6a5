"""The training state: step, parameters, optimiser state."""

from __future__ import annotations

from typing import Any

from flax import struct
import jax
import optax

__all__ = ['TrainState']


class TrainState(struct.PyTreeNode):
  """What a training step updates.

  Attributes:
    step: int32 scalar, updates applied so far.
    params: model parameters.
    opt_state: optimiser state.
    tx: the optimiser (static, not saved).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation) -> TrainState:
    import jax.numpy as jnp
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=tx.init(params), tx=tx)

  def apply_gradients(self, grads) -> TrainState:
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1,
                        params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)

  def saveable(self) -> dict:
    """The pytree a checkpoint holds."""
    return {'step': self.step, 'params': self.params,
            'opt_state': self.opt_state}

  def from_saved(self, saved: dict) -> TrainState:
    return self.replace(step=saved['step'], params=saved['params'],
                        opt_state=saved['opt_state'])
