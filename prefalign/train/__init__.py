"""Training: state, losses, data-parallel steps, checkpoints, the loops.

Pre-training (``train_step``, ``eval_step``) and preference alignment
(``preference_step``, ``preference_eval_step``, ``policy_kl``) are pure
functions of a ``TrainState`` and a batch; the caller jits them (or makes
them data-parallel with ``parallel.jit_step``). ``train_and_evaluate`` and
``align.align_and_evaluate`` are the jobs built on them, both run by the
one loop of ``runner`` with the run-time pieces of ``runtime`` (metrics
writer, preemption, the non-finite stop, the workdir lock).
"""

from prefalign.train import align
from prefalign.train import checkpoint
from prefalign.train import loop
from prefalign.train import losses
from prefalign.train import parallel
from prefalign.train import runner
from prefalign.train import runtime
from prefalign.train import steps
from prefalign.train.align import AlignConfig
from prefalign.train.align import align_and_evaluate
from prefalign.train.checkpoint import Checkpointer
from prefalign.train.loop import TrainConfig
from prefalign.train.loop import train_and_evaluate
from prefalign.train.state import TrainState
from prefalign.train.steps import PREFERENCE_LOSSES
from prefalign.train.steps import OptimizerConfig
from prefalign.train.steps import PreferenceBatch
from prefalign.train.steps import PreferenceConfig
from prefalign.train.steps import eval_step
from prefalign.train.steps import make_optimizer
from prefalign.train.steps import model_inputs
from prefalign.train.steps import policy_kl
from prefalign.train.steps import preference_eval_step
from prefalign.train.steps import preference_step
from prefalign.train.steps import token_counts
from prefalign.train.steps import train_step

__all__ = [
    'align',
    'checkpoint',
    'losses',
    'loop',
    'parallel',
    'runner',
    'runtime',
    'steps',
    'AlignConfig',
    'align_and_evaluate',
    'Checkpointer',
    'TrainConfig',
    'train_and_evaluate',
    'TrainState',
    'OptimizerConfig',
    'PREFERENCE_LOSSES',
    'PreferenceBatch',
    'PreferenceConfig',
    'eval_step',
    'make_optimizer',
    'model_inputs',
    'policy_kl',
    'preference_eval_step',
    'preference_step',
    'token_counts',
    'train_step',
]
