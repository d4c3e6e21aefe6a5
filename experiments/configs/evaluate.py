"""WOSAC evaluation of a pre-trained checkpoint.

Samples ``num_rollouts`` closed-loop rollouts per scenario, scores them with
the JAX WOSAC metric (2024 and 2025 configs) next to log replay and a
constant-velocity baseline on the same scenarios, and writes
``WORKDIR/evaluate/report.json``, ``report.md`` and rollout GIFs. Run in the
pre-training workdir (its held-out SUMO set and checkpoint are the
defaults)::

  python -m experiments.main --config=experiments/configs/evaluate.py \
      --workdir=runs/pretrain \
      --config.evaluate.eval_glob='../shared/data/womd/real/real.tfrecord-*'

``--config.evaluate.checkpoint=DIR`` scores another run's checkpoints;
``--config.evaluate.simulator=waymax`` runs the rollouts inside Waymax.
"""

import ml_collections

from experiments import sections
from experiments.configs import pretrain
from prefalign import rollout


def get_config(arg=None):
  """The evaluation config (``arg='runlocal'``: the runlocal pre-training)."""
  config = pretrain.get_config(arg)
  config.stages = ('data', 'evaluate')
  config.evaluate = ml_collections.ConfigDict()
  # Checkpoint directory; empty: WORKDIR/pretrain/checkpoints.
  config.evaluate.checkpoint = ''
  # More WOMD files to score (patterns, comma-separated), reported as 'womd'.
  config.evaluate.eval_glob = ''
  config.evaluate.num_rollouts = 32  # WOSAC: 32 rollouts per scenario
  # Token sampling (prefalign.rollout.SamplingConfig: temperature, 0 is
  # argmax; top_k, 0 keeps all; top_p, 1 keeps all).
  config.evaluate.sampling = sections.section(rollout.SamplingConfig())
  config.evaluate.challenges = ('2024', '2025')  # WOSAC metric configs
  config.evaluate.max_scenarios = 0  # per set (0: all)
  config.evaluate.max_num_objects = 128  # WOSAC simulates up to 128
  # Where the rollouts run: prefalign's simulator, or Waymax's environment
  # (needs Waymax installed: README, "Running inside Waymax").
  config.evaluate.simulator = 'prefalign'
  config.evaluate.num_animations = 2  # rollout GIFs per set
  # Also write the model's rollouts of each set as an official
  # SimAgentsChallengeSubmission (WORKDIR/evaluate/<set>_submission.binproto)
  # with this metadata (the account is the e-mail registered with Waymo).
  config.evaluate.submission = False
  config.evaluate.submission_account = 'you@example.com'
  config.evaluate.submission_method = 'prefalign-motionlm'
  config.evaluate.submission_authors = 'prefalign authors'  # comma-separated
  config.evaluate.submission_affiliation = ''
  config.evaluate.submission_description = (
      'MotionLM-style ~1M-parameter joint motion-token model (prefalign).')
  config.evaluate.submission_link = ''
  config.evaluate.submission_num_parameters = '1M'
  if arg == 'runlocal':
    config.evaluate.num_rollouts = 4
    config.evaluate.max_scenarios = 2
    config.evaluate.num_animations = 1
  return config
