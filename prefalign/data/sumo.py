"""SUMO traffic on real road networks, written as WOMD ``Scenario`` protos.

The embedded default data: nothing downstream knows it from WOMD. One call of
:func:`generate` does, for a network shipped inside the ``eclipse-sumo``
package (``NETWORKS``):

1. **Demand.** ``randomTrips`` (SUMO's own tool) draws trips for cars and
   trucks, bicycles where the network lets them ride, and pedestrians where
   it has sidewalks, from vehicle-type distributions that vary speed factor,
   acceleration, deceleration, headway, gap, impatience and driver
   imperfection (``_VTYPES``), all seeded.
2. **Simulation.** ``sumo`` runs headless at 10 Hz (``--step-length 0.1``)
   with continuous lane changes (``--lanechange.duration``) and writes
   floating-car data (CSV) and every signal's state at every step.
3. **Map.** From the network (``sumolib``): lane centre lines, junction
   (internal) lanes included, as freeway / surface-street / bike lanes;
   broken white lines between neighbouring lanes of a road; road edges as
   the boundary of the union of every drivable lane and junction, oriented
   as in WOMD (drivable area on the left, so the WOSAC road-edge distance is
   negative on the road); crosswalks. Resampled every ``point_spacing`` m.
4. **Scenarios.** 9.1 s windows (91 steps at 10 Hz, current index 10) after
   a warm-up, each around an ego car (the SDC) that is present over the
   whole window; objects that come within ``radius`` of the ego; up to 8
   ``tracks_to_predict`` chosen as WOSAC's are (present over the window,
   moving or near the ego); 3-D boxes from the vehicle types; the map cropped
   to a square around the ego; signal states per controlled junction lane
   and step, with the stop point at the junction entry.

Deterministic for a seed (SUMO and randomTrips are seeded; the choices here
use ``numpy.random.default_rng(seed)``). Output: sharded TFRecords of
``Scenario`` protos and ``manifest.json`` (network, seed, SUMO version,
counts), written atomically.

Where each step lives: ``sumo_config`` (``NETWORKS``, the vehicle types,
``SumoConfig``, ``SumoError``, the installation), ``sumo_traffic`` (demand,
simulation and its outputs as ``Tracks``), ``sumo_network`` (the map) and
``sumo_scenarios`` (cutting the windows); this module runs them
(``generate``) and re-exports what callers use.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
import time

from prefalign import fileio
from prefalign.data import tfrecord
from prefalign.data.sumo_config import NETWORKS
from prefalign.data.sumo_config import Network
from prefalign.data.sumo_config import SumoConfig
from prefalign.data.sumo_config import SumoError
from prefalign.data.sumo_config import sumo_home
from prefalign.data.sumo_config import sumo_version
from prefalign.data.sumo_network import network_map
from prefalign.data.sumo_scenarios import cut_scenarios
from prefalign.data.sumo_traffic import simulate

__all__ = [
    'NETWORKS', 'Network', 'SumoConfig', 'SumoError', 'generate',
    'network_map', 'simulate', 'sumo_home', 'sumo_version', 'cut_scenarios',
]


def _config_key(cfg: SumoConfig) -> str:
  """16 hex digits of the config's hash: what the manifest is matched by."""
  return hashlib.sha256(json.dumps(dataclasses.asdict(cfg),
                                   sort_keys=True).encode()).hexdigest()[:16]


def generate(cfg: SumoConfig, out_dir: os.PathLike, *,
             progress: Callable[[int, int], None] | None = None,
             keep_workdir: bool = False) -> dict:
  """Writes ``cfg.num_scenarios`` scenarios as sharded TFRecords.

  Resumable: when ``out_dir/manifest.json`` records the same config, nothing
  is redone. Shards are written atomically; the manifest last. A folder
  holding scenarios of other settings is refused (SumoError), and one that
  another process is generating into stops this one (``fileio.LockedError``
  naming it); SUMO's outputs are checked whole before they are read.

  Args:
    cfg: what to generate.
    out_dir: folder of ``<network>.tfrecord-XXXXX-of-YYYYY`` and the manifest.
    progress: called with (scenarios written, wanted).
    keep_workdir: keep SUMO's own files (under out_dir/sumo_run).

  Returns:
    The manifest (also written as ``manifest.json``).
  """
  network = cfg.check()
  if cfg.egos_per_window is None:
    cfg = dataclasses.replace(cfg, egos_per_window=network.egos_per_window)
  out = pathlib.Path(out_dir)
  if out.exists() and not out.is_dir():
    raise SumoError(f'--out {out} is a file, not a folder')
  # One generation per folder at a time: a second stops naming the first.
  with fileio.DirLock(out, what=f'SUMO generation ({network.name})'):
    return _generate_locked(cfg, network, out, progress, keep_workdir)


def _generate_locked(cfg, network, out, progress, keep_workdir) -> dict:
  """``generate`` with ``out``'s lock held."""
  manifest_path = out / 'manifest.json'
  key = _config_key(cfg)
  if manifest_path.exists():
    try:
      old = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
      old = {}
    if old.get('config_key') == key and all(
        (out / f).exists() for f in old.get('files', ())):
      return old
    if old.get('config_key') not in (None, key):
      stored = old.get('config', {})
      now = dataclasses.asdict(cfg)
      diff = ', '.join(f'{k} ({stored.get(k)!r} vs {now[k]!r})'
                       for k in sorted(now) if stored.get(k) != now[k])
      raise SumoError(
          f'{out} holds scenarios generated with other settings (stored vs '
          f'this run: {diff or "an older config format"}); use another '
          'folder, or delete it to regenerate')
  # Leftovers of a killed run of this folder (we hold its lock): partial
  # shards' temporary files go now, shards of an unfinished run once the
  # new ones are written.
  fileio.remove_temporaries(out, f'{network.name}.tfrecord-')
  started = time.perf_counter()
  netmap = network_map(network.name, cfg.point_spacing)
  windows = -(-cfg.num_scenarios // cfg.egos_per_window)
  duration = cfg.warmup_s + (windows * 1.5 + 2) * cfg.window_stride_s + 10
  scenarios: list[bytes] = []
  counts = {'vehicle': 0, 'pedestrian': 0, 'cyclist': 0,
            'tracks_to_predict': 0}
  sim_s = 0.0
  for attempt in range(3):
    with tempfile.TemporaryDirectory(dir=out) as tmp:
      work = out / 'sumo_run' if keep_workdir else pathlib.Path(tmp)
      t0 = time.perf_counter()
      tracks = simulate(network, cfg.seed + 1000 * attempt, duration, work,
                        cfg.lane_change_duration)
      sim_s += time.perf_counter() - t0
    attempt_cfg = dataclasses.replace(cfg, seed=cfg.seed + 1000 * attempt)
    for scenario in cut_scenarios(attempt_cfg, tracks, netmap,
                                  cfg.num_scenarios - len(scenarios)):
      scenarios.append(scenario.SerializeToString())
      for tr in scenario.tracks:
        counts[{1: 'vehicle', 2: 'pedestrian', 3: 'cyclist'}[
            tr.object_type]] += 1
      counts['tracks_to_predict'] += len(scenario.tracks_to_predict)
      if progress:
        progress(len(scenarios), cfg.num_scenarios)
    if len(scenarios) >= cfg.num_scenarios:
      break
    duration *= 2
  if not scenarios:
    raise SumoError(
        f'network {network.name!r} gave no scenario: no car stays in the '
        f'simulation for a whole window with another object within '
        f'radius={cfg.radius} m; raise SumoConfig.radius or num_scenarios')
  num_shards = -(-len(scenarios) // cfg.shard_size)
  files = []
  for i in range(num_shards):
    name = f'{network.name}.tfrecord-{i:05d}-of-{num_shards:05d}'
    tfrecord.write_records(out / name,
                           scenarios[i * cfg.shard_size:(i + 1) *
                                     cfg.shard_size])
    files.append(name)
  for stale in fileio.glob_files(out / f'{network.name}.tfrecord-*'):
    if os.path.basename(stale) not in files:
      os.remove(stale)
  manifest = {
      'network': network.name,
      'network_file': network.path,
      'description': network.description,
      'sumo_version': sumo_version(),
      'seed': cfg.seed,
      'config': dataclasses.asdict(cfg),
      'config_key': key,
      'num_scenarios': len(scenarios),
      'counts': counts,
      'files': files,
      'simulation_seconds': round(sim_s, 2),
      'total_seconds': round(time.perf_counter() - started, 2),
  }
  fileio.atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
  return manifest
