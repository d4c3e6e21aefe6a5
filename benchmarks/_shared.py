"""Where the benchmarks find the shared real WOMD files.

``$PREFALIGN_SHARED_DATA/womd`` when set (as for the tests), else
``../shared/data/womd`` beside the checkout.
"""

import os
import pathlib

WOMD = pathlib.Path(os.environ.get(
    'PREFALIGN_SHARED_DATA',
    pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data')) / 'womd'
