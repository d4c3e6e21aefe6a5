"""Running SUMO: demand, one headless simulation, and its outputs as tracks.

``simulate`` writes the vehicle types (``sumo_config.VTYPES``), draws trips
with SUMO's ``randomTrips`` for cars and trucks, bicycles and pedestrians
(seeded), runs ``sumo`` at 10 Hz with continuous lane changes, and reads what
it wrote (``read_run``): floating-car data (CSV) as contiguous per-object
``Tracks`` and every signal's state at every step. SUMO's outputs are checked
whole before they are read.
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import numpy as np

from prefalign import datatypes
from prefalign.data.sumo_config import TYPE_INFO
from prefalign.data.sumo_config import VTYPES
from prefalign.data.sumo_config import Network
from prefalign.data.sumo_config import SumoError
from prefalign.data.sumo_config import network_path
from prefalign.data.sumo_config import sumo_home

__all__ = ['Tracks', 'read_run', 'simulate']

DT = datatypes.TIME_INTERVAL


def _vtypes_xml() -> str:
  """The vehicle types as a SUMO additional file: cars, vans and trucks in one
  distribution (``motor``), bicycles and pedestrians on their own."""
  rows = ['<additional>', '  <vTypeDistribution id="motor">']
  for tid, vclass, _, length, width, height, prob, attrs in VTYPES:
    if vclass in ('bicycle', 'pedestrian'):
      continue
    rows.append(f'    <vType id="{tid}" vClass="{vclass}" length="{length}" '
                f'width="{width}" height="{height}" probability="{prob}" '
                f'{attrs}/>')
  rows.append('  </vTypeDistribution>')
  for tid, vclass, _, length, width, height, _, attrs in VTYPES:
    if vclass in ('bicycle', 'pedestrian'):
      rows.append(f'  <vType id="{tid}" vClass="{vclass}" length="{length}" '
                  f'width="{width}" height="{height}" {attrs}/>')
  rows.append('</additional>')
  return '\n'.join(rows) + '\n'


@dataclasses.dataclass
class Tracks:
  """Floating-car data of one run, as contiguous per-object tracks.

  A SUMO object that disappears (teleport) and comes back starts a new
  track. Rows are grouped by track, in step order.

  Attributes:
    start, end: (K,) first step and one past the last step of each track.
    offset: (K,) index of each track's first row.
    type_id: (K,) index into ``VTYPES``.
    name: (K,) SUMO id of each track's object.
    x, y, z, yaw, speed: (R,) rows; x, y the box centre.
    tls: tls id -> (steps,) state strings.
    num_steps: steps simulated.
  """
  start: np.ndarray
  end: np.ndarray
  offset: np.ndarray
  type_id: np.ndarray
  name: list
  x: np.ndarray
  y: np.ndarray
  z: np.ndarray
  yaw: np.ndarray
  speed: np.ndarray
  tls: dict
  num_steps: int


def _run(cmd: Sequence[str], what: str, cwd: pathlib.Path, env: dict):
  """Runs a SUMO tool; SumoError naming ``what`` with its last output lines
  when it fails."""
  proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True,
                        text=True, check=False)
  if proc.returncode != 0:
    tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
    raise SumoError(f'{what} failed (exit {proc.returncode}):\n{tail}')
  return proc


def simulate(network: Network, seed: int, duration_s: float,
             workdir: pathlib.Path, lane_change_duration: float = 3.0
             ) -> Tracks:
  """Demand + one headless SUMO run at 10 Hz; its tracks and signal states."""
  home = sumo_home()
  env = dict(os.environ, SUMO_HOME=str(home))
  net = network_path(network)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'vtypes.add.xml').write_text(_vtypes_xml())
  (workdir / 'tls.add.xml').write_text(
      '<additional>\n  <timedEvent type="SaveTLSStates" dest="tls.xml"/>\n'
      '</additional>\n')
  random_trips = [sys.executable, str(home / 'tools' / 'randomTrips.py'),
                  '-n', str(net), '-b', '0', '-e', f'{duration_s:.1f}',
                  '-a', 'vtypes.add.xml']
  demand = [('motor', 'v', network.vehicle_period, [
      '--edge-permission', 'passenger', '--fringe-factor', '5',
      '--min-distance', str(network.min_trip_m), '--validate',
      '--trip-attributes', 'type="motor" departLane="best" '
      'departSpeed="max"'])]
  if network.bicycle_period:
    demand.append(('bicycle', 'b', network.bicycle_period, [
        '--edge-permission', 'bicycle', '--validate',
        '--min-distance', '50', '--trip-attributes', 'type="bicycle"']))
  if network.pedestrian_period:
    demand.append(('pedestrian', 'p', network.pedestrian_period, [
        '--pedestrians', '--min-distance', '30',
        '--trip-attributes', 'type="pedestrian"']))
  route_files = []
  for k, (kind, prefix, period, extra) in enumerate(demand):
    out = f'{kind}.trips.xml'
    _run(random_trips + ['-o', out, '-p', str(period), '--prefix', prefix,
                         '--seed', str(seed * 7 + k)] + extra,
         f'randomTrips ({kind}) on network {network.name!r}', workdir, env)
    route_files.append(out)
  _run([str(home / 'bin' / 'sumo'), '-n', str(net), '-r',
        ','.join(route_files), '-a', 'vtypes.add.xml,tls.add.xml',
        '--step-length', str(DT), '-b', '0', '-e', f'{duration_s:.1f}',
        '--seed', str(seed), '--fcd-output', 'fcd.csv',
        '--summary-output', 'summary.xml',
        '--lanechange.duration', str(lane_change_duration),
        '--time-to-teleport', '120', '--ignore-route-errors', 'true',
        '--collision.action', 'warn', '--no-step-log', 'true',
        '--no-warnings', 'true', '--xml-validation', 'never'],
       f'sumo on network {network.name!r}', workdir, env)
  return read_run(workdir, int(round(duration_s / DT)) + 1)


_SUMMARY_STEP = re.compile(rb'<step time="([^"]+)"[^>]*? running="(\d+)"')


def _check_complete(workdir: pathlib.Path) -> None:
  """Raises SumoError unless SUMO's outputs are whole.

  SUMO exits 0 even when it failed to write its outputs (a full disk), so a
  cut file would otherwise give silently shorter tracks. fcd.csv must end
  with a whole line, tls.xml (where written) and summary.xml with their
  closing tags; and the last step at which summary.xml counts running
  objects must be in fcd.csv (a cut on a line boundary).
  """
  def fail(name, why):
    raise SumoError(f'SUMO\'s output {workdir / name} is incomplete ({why});'
                    ' is the disk full?')
  fcd = workdir / 'fcd.csv'
  if not fcd.exists() or fcd.stat().st_size == 0:
    fail('fcd.csv', 'missing or empty')
  with open(fcd, 'rb') as f:
    f.seek(max(fcd.stat().st_size - 4096, 0))
    tail = f.read()
  if not tail.endswith(b'\n'):
    fail('fcd.csv', 'it ends mid-line')
  for name, closing in (('tls.xml', b'</tlsStates>'),
                        ('summary.xml', b'</summary>')):
    path = workdir / name
    if path.exists() and not path.read_bytes().rstrip().endswith(closing):
      fail(name, f'no closing {closing.decode()}')
  summary = workdir / 'summary.xml'
  if summary.exists():
    running = [float(t) for t, n in _SUMMARY_STEP.findall(
        summary.read_bytes()) if int(n) > 0]
    lines = tail.rstrip(b'\n').split(b'\n')
    last = lines[-1].split(b';')[0] if len(lines) > 1 else b''
    try:
      last_time = float(last)
    except ValueError:
      last_time = None
    if running and (last_time is None or
                    round(last_time / DT) < round(running[-1] / DT)):
      fail('fcd.csv', f'its last step is {last.decode(errors="replace")!r} '
           f'where summary.xml has objects until {running[-1]:.2f} s')


def _read_fcd(workdir: pathlib.Path) -> dict[str, list]:
  """fcd.csv's rows per SUMO object id: ``(step, x, y, z, angle, speed,
  vehicle type)``, in file order."""
  per_object: dict[str, list] = {}
  with open(workdir / 'fcd.csv', newline='') as f:
    reader = csv.reader(f, delimiter=';')
    header = next(reader, None)
    need = ('timestep_time', 'vehicle_id', 'vehicle_x', 'vehicle_y',
            'vehicle_angle', 'vehicle_type', 'vehicle_speed')
    if header is None or any(n not in header for n in need):
      raise SumoError(f'{workdir / "fcd.csv"}: no header with the columns '
                      f'{", ".join(need)}')
    col = {name: i for i, name in enumerate(header)}
    ct, ci, cx, cy = (col['timestep_time'], col['vehicle_id'],
                      col['vehicle_x'], col['vehicle_y'])
    ca, cty, cs = col['vehicle_angle'], col['vehicle_type'], col[
        'vehicle_speed']
    cz = col.get('vehicle_z')
    for row in reader:
      if len(row) <= ci or not row[ci]:
        continue
      if len(row) < len(header):
        raise SumoError(f'{workdir / "fcd.csv"}, line {reader.line_num}: '
                        f'{len(row)} of {len(header)} columns (a cut '
                        'output; is the disk full?)')
      per_object.setdefault(row[ci], []).append(
          (round(float(row[ct]) / DT), float(row[cx]), float(row[cy]),
           float(row[cz]) if cz is not None and row[cz] else 0.0,
           float(row[ca]), float(row[cs]), row[cty]))
  return per_object


def _tracks(per_object: dict[str, list], tls: dict, num_steps: int
            ) -> Tracks:
  """``Tracks`` of the objects of known vehicle types, split where a
  step is missing (a teleport), positions moved to the box centre."""
  type_index = {t[0]: i for i, t in enumerate(VTYPES)}
  starts, ends, offsets, types, names = [], [], [], [], []
  cols = [[] for _ in range(5)]
  total = 0
  for name in sorted(per_object):
    rows = per_object[name]
    a = np.asarray([r[:6] for r in rows], np.float64)
    vtype = rows[0][6]
    if vtype not in type_index:
      continue
    info = TYPE_INFO[vtype]
    steps = a[:, 0].astype(np.int64)
    yaw = np.deg2rad(90.0 - a[:, 4])
    yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
    # FCD positions are the front bumper's: move to the box centre.
    x = a[:, 1] - np.cos(yaw) * info[3] / 2
    y = a[:, 2] - np.sin(yaw) * info[3] / 2
    cut = np.flatnonzero(np.diff(steps) != 1) + 1
    for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(steps)]):
      starts.append(steps[lo])
      ends.append(steps[hi - 1] + 1)
      offsets.append(total)
      types.append(type_index[vtype])
      names.append(name if lo == 0 else f'{name}#{lo}')
      total += hi - lo
      for c, v in zip(cols, (x[lo:hi], y[lo:hi], a[lo:hi, 3], yaw[lo:hi],
                             a[lo:hi, 5])):
        c.append(v)
  cat = lambda c: np.concatenate(c) if c else np.zeros(0)
  return Tracks(
      start=np.asarray(starts, np.int64), end=np.asarray(ends, np.int64),
      offset=np.asarray(offsets, np.int64),
      type_id=np.asarray(types, np.int64), name=names,
      x=cat(cols[0]), y=cat(cols[1]), z=cat(cols[2]), yaw=cat(cols[3]),
      speed=cat(cols[4]), tls=tls, num_steps=num_steps)


_TLS_STATE = re.compile(r'<tlsState time="([^"]+)" id="([^"]+)"[^>]*'
                        r'state="([^"]*)"')


def _tls_timelines(workdir: pathlib.Path, num_steps: int
                   ) -> dict[str, list[str]]:
  """tls id -> (num_steps,) state strings from tls.xml, each step's the
  last one written at or before it ('' before the first)."""
  tls = {}
  path = workdir / 'tls.xml'
  if path.exists():
    for m in _TLS_STATE.finditer(path.read_text()):
      step = round(float(m.group(1)) / DT)
      tls.setdefault(m.group(2), {})[step] = m.group(3)
  timelines = {}
  for tid, by_step in tls.items():
    line, last = [], ''
    for step in range(num_steps):
      last = by_step.get(step, last)
      line.append(last)
    timelines[tid] = line
  return timelines


def read_run(workdir: pathlib.Path, num_steps: int) -> Tracks:
  """Parses fcd.csv and tls.xml of a run (checked whole first).

  Args:
    workdir: the folder SUMO wrote its outputs into.
    num_steps: steps simulated (the signal timelines' length).

  Raises:
    SumoError: an output is missing, cut or without the needed columns.
  """
  _check_complete(workdir)
  per_object = _read_fcd(workdir)
  return _tracks(per_object, _tls_timelines(workdir, num_steps), num_steps)
