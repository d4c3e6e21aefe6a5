"""Training: state, losses, data-parallel steps, checkpoints, the loop."""

from prefalign.train import checkpoint
from prefalign.train import losses
from prefalign.train import loop
from prefalign.train import parallel
from prefalign.train import steps
from prefalign.train.checkpoint import Checkpointer
from prefalign.train.loop import TrainConfig
from prefalign.train.loop import train_and_evaluate
from prefalign.train.state import TrainState
from prefalign.train.steps import OptimizerConfig
from prefalign.train.steps import eval_step
from prefalign.train.steps import make_optimizer
from prefalign.train.steps import train_step

__all__ = [
    'checkpoint',
    'losses',
    'loop',
    'parallel',
    'steps',
    'Checkpointer',
    'TrainConfig',
    'train_and_evaluate',
    'TrainState',
    'OptimizerConfig',
    'eval_step',
    'make_optimizer',
    'train_step',
]
