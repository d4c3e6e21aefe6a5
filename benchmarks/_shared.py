"""Where the benchmarks find the shared real WOMD files.

``$PREFALIGN_SHARED_DATA/womd`` when set (as for the tests), else
``../shared/data/womd`` beside the checkout.
"""

import os
import pathlib

WOMD = pathlib.Path(os.environ.get(
    'PREFALIGN_SHARED_DATA',
    pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data')) / 'womd'


def checkpoint_on_real_scenarios(description: str, arguments=None):
  """The arguments of a benchmark that scores a checkpoint on real scenarios
  (``--checkpoint``, ``--files``, ``--scenarios``, ``--rollouts``,
  ``--objects``, ``--json``, and those ``arguments(parser)`` adds), the
  scenarios and the parameters.

  Returns:
    ``(args, files, reader, examples, stats, model_config, params)``: the
    default ``ModelConfig``'s parameters from the newest checkpoint in
    ``--checkpoint``; ``examples`` the first ``--scenarios`` of ``--files``
    (a file name in the shared ``real`` folder).
  """
  import argparse

  import jax
  import numpy as np

  from prefalign.data import womd
  from prefalign.model import motion_lm
  from prefalign.train import checkpoint
  from prefalign.train import steps

  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--checkpoint', required=True)
  parser.add_argument('--files', default='real.tfrecord-00001-of-00002')
  parser.add_argument('--scenarios', type=int, default=20)
  parser.add_argument('--rollouts', type=int, default=32)
  parser.add_argument('--objects', type=int, default=128)
  parser.add_argument('--json', default=None)
  if arguments is not None:
    arguments(parser)
  args = parser.parse_args()
  files = [str(WOMD / 'real' / args.files)]
  reader = womd.ReaderConfig(max_num_objects=args.objects)
  stats = womd.ReadStats()
  examples = list(womd.read_examples(files, reader,
                                     stats=stats))[:args.scenarios]
  if not examples:
    raise SystemExit(f'no scenarios in {files}')
  mc = motion_lm.ModelConfig()
  batch = jax.tree.map(lambda a: np.asarray(a)[None], examples[0].state)
  like = jax.eval_shape(lambda b: motion_lm.init(
      jax.random.key(0), mc, *steps.model_inputs(b, mc)), batch)
  params = checkpoint.load_params(args.checkpoint, like)
  return args, files, reader, examples, stats, mc, params
