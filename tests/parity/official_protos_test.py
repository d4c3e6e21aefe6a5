"""`prefalign-data info` agrees with a parse by the official WOMD protos.

Builds the official package's protos in their own venv (cached) and compares
every count on every shared real scenario. Skips when ../shared is absent or
the venv cannot be built (no network).
"""

import glob
import json
import pathlib

import pytest

from prefalign.data import womd

from . import official_env

HERE = pathlib.Path(__file__).resolve().parent


@pytest.mark.data
def test_info_matches_official_protos(shared_womd):
  files = sorted(glob.glob(str(shared_womd / 'official' / '*.tfrecord')) +
                 glob.glob(str(shared_womd / 'real' / 'real.tfrecord-*')))
  out = official_env.run_official(HERE / 'official_info.py', *files)
  official = [json.loads(line) for line in out.splitlines() if line.strip()]
  ours = [womd.scenario_info(s) for _, _, s in womd.read_scenarios(files)]
  assert len(official) == len(ours) == 42
  for theirs, mine in zip(official, ours):
    assert mine == theirs, mine['scenario_id']
