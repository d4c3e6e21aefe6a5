"""The ``data`` stage: the embedded default scenarios (SUMO traffic on a real
road network, or synthetic), or a check that the WOMD files exist."""

from __future__ import annotations

import pathlib

import numpy as np
import tqdm

from experiments.stages import common
from prefalign import fileio
from prefalign.data import sumo
from prefalign.data import synthetic
from prefalign.data import tfrecord


def run(config, workdir: pathlib.Path) -> str:
  """Writes the embedded default scenarios (or checks the WOMD files)."""
  files = common.data_files(config, workdir)
  if config.data.womd_glob:
    return f'{len(files)} WOMD file(s) matched {config.data.womd_glob!r}'
  if config.data.source == 'sumo':
    messages, skipped = [], True
    parts = common.sumo_parts(config, workdir) + (
        common.sumo_parts(config, workdir, heldout=True)
        if common.num_heldout(config) else [])
    for _, out, sumo_config in parts:
      before = (out / 'manifest.json').read_text() if (
          out / 'manifest.json').exists() else None
      bar = tqdm.tqdm(total=sumo_config.num_scenarios,
                      desc=f'data ({out.relative_to(workdir / "data")})')
      try:
        manifest = sumo.generate(
            sumo_config, out,
            progress=lambda done, _, bar=bar: bar.update(done - bar.n))
      finally:
        bar.close()
      c = manifest['counts']
      messages.append(
          f'{manifest["num_scenarios"]} scenarios of SUMO traffic on '
          f'{manifest["network"]} in {out} ({c["vehicle"]} vehicles, '
          f'{c["pedestrian"]} pedestrians, {c["cyclist"]} cyclists)')
      skipped &= (before is not None and
                  before == (out / 'manifest.json').read_text())
    done = '; '.join(messages)
    return f'{done} exist (skipped)' if skipped else f'wrote {done}'
  path = pathlib.Path(files[0])
  if path.exists():
    return f'{path} exists (skipped)'
  path.parent.mkdir(parents=True, exist_ok=True)
  fileio.remove_temporaries(path.parent, path.name)  # a killed run's
  rng = np.random.default_rng(config.seed)
  with tfrecord.TFRecordWriter(path) as writer:
    for i in tqdm.trange(config.data.num_scenarios, desc='data'):
      scenario = synthetic.straight_road_scenario(
          f'synthetic-{config.seed}-{i:04d}', seed=int(rng.integers(2**31)),
          num_vehicles=int(rng.integers(2, 9)),
          num_pedestrians=int(rng.integers(0, 3)),
          num_cyclists=int(rng.integers(0, 2)),
          with_traffic_light=bool(i % 2 == 0))
      writer.write(scenario.SerializeToString())
  return f'wrote {config.data.num_scenarios} scenarios to {path}'
