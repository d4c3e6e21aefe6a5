"""Writes synthetic WOSAC rollouts for parity runs (runs in an official venv).

Usage::

  python make_rollouts.py --scenarios FILE --kind KIND [--seed S] --out FILE
      [--binproto] [--noise-m 0.3] [--noise-rad 0.05] [--perturb-m 2.0]
      [--n-rollouts 32]

For every Scenario in ``--scenarios`` (a TFRecord) it writes one
``ScenarioRollouts``: 32 ``JointScene``s, each with every sim agent (every
track valid at step 10) for the 80 future steps (x, y, z, heading), so that
``submission_specs.validate_scenario_rollouts`` passes. ``--out`` is a TFRecord
of ``ScenarioRollouts`` records, or with ``--binproto`` one
``SimAgentsChallengeSubmission``.

Kinds:

* ``log``: the logged future, identical in every rollout. Invalid logged
  future steps of *evaluated* agents (SDC + tracks_to_predict) are linearly
  interpolated between the neighbouring valid steps (held after the last one);
  other sim agents are moved 10 km away while their log is invalid, so that
  they cannot create phantom interactions (EXPECTED.md section 3b, D-E).
* ``noisy``: ``log`` plus i.i.d. Gaussian noise per rollout and step
  (``--noise-m`` on x and y, ``--noise-rad`` on the heading).
* ``constant_velocity``: every agent extrapolated from its step-10 state with
  its logged step-10 velocity (x, y); z and heading held. All rollouts equal.
* ``perturbed``: ``log`` with a smooth random offset per rollout and agent,
  longitudinal and lateral in the agent's frame, growing from 0 at step 10 to
  a few metres at 8 s (``--perturb-m`` is the lateral standard deviation at
  8 s; longitudinal is twice that), with the heading turned to follow the
  lateral drift. Collisions and off-road events happen sometimes.

Uses only the official protos, numpy and the standard library (through the
sibling ``tfrecord_io``); deterministic for a seed: each scenario's random
stream is seeded by ``(seed, sha256(scenario_id))``, so it does not depend on
the scenario's position in the file.
"""

import argparse
import hashlib
import sys

import numpy as np
import tfrecord_io
from waymo_open_dataset.protos import scenario_pb2
from waymo_open_dataset.protos import sim_agents_submission_pb2

CURRENT = 10
N_STEPS = 80
N_ROLLOUTS = 32
DT = 0.1
FAR_AWAY_M = 10_000.0
KINDS = ('log', 'noisy', 'constant_velocity', 'perturbed')


def evaluated_track_indices(scenario: scenario_pb2.Scenario) -> set[int]:
  """Track indices of the SDC and tracks_to_predict."""
  return {scenario.sdc_track_index,
          *(r.track_index for r in scenario.tracks_to_predict)}


def sim_agent_indices(scenario: scenario_pb2.Scenario) -> list[int]:
  """Track indices of the sim agents (valid at the current step), in order."""
  return [i for i, t in enumerate(scenario.tracks)
          if t.states[CURRENT].valid]


def track_arrays(track: scenario_pb2.Track) -> tuple[np.ndarray, np.ndarray]:
  """(91, 4) float64 x, y, z, heading and (91,) bool valid of a track."""
  xyzh = np.array([(s.center_x, s.center_y, s.center_z, s.heading)
                   for s in track.states], np.float64)
  valid = np.array([s.valid for s in track.states], bool)
  return xyzh, valid


def fill_invalid(xyzh: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Linear interpolation over invalid steps; held before/after the ends."""
  steps = np.arange(len(valid))
  known = steps[valid]
  out = xyzh.copy()
  heading = np.unwrap(xyzh[valid, 3])
  for k in range(3):
    out[:, k] = np.interp(steps, known, xyzh[valid, k])
  out[:, 3] = np.interp(steps, known, heading)
  out[valid, 3] = xyzh[valid, 3]  # Keep logged values bit-exact.
  return out


def log_future(scenario: scenario_pb2.Scenario) -> np.ndarray:
  """(n_agents, 80, 4) log-replay future of every sim agent (kind ``log``)."""
  evaluated = evaluated_track_indices(scenario)
  futures = []
  for i in sim_agent_indices(scenario):
    xyzh, valid = track_arrays(scenario.tracks[i])
    if i in evaluated:
      xyzh = fill_invalid(xyzh, valid)
    else:
      xyzh = xyzh.copy()
      xyzh[~valid, 0] = xyzh[CURRENT, 0] + FAR_AWAY_M
      xyzh[~valid, 1] = xyzh[CURRENT, 1] + FAR_AWAY_M
      xyzh[~valid, 2] = xyzh[CURRENT, 2]
      xyzh[~valid, 3] = xyzh[CURRENT, 3]
    futures.append(xyzh[CURRENT + 1:CURRENT + 1 + N_STEPS])
  return np.stack(futures)


def constant_velocity_future(scenario: scenario_pb2.Scenario) -> np.ndarray:
  """(n_agents, 80, 4): step-10 position + t * step-10 velocity."""
  t = DT * np.arange(1, N_STEPS + 1)
  futures = []
  for i in sim_agent_indices(scenario):
    s = scenario.tracks[i].states[CURRENT]
    futures.append(np.stack([
        s.center_x + t * s.velocity_x, s.center_y + t * s.velocity_y,
        np.full_like(t, s.center_z), np.full_like(t, s.heading)], -1))
  return np.stack(futures)


def perturb(future: np.ndarray, rng: np.random.Generator,
            lateral_m: float) -> np.ndarray:
  """Adds a smooth, growing longitudinal / lateral offset to ``future``."""
  n_agents = future.shape[0]
  u = np.arange(1, N_STEPS + 1) / N_STEPS  # (0, 1]
  # Offset profile: a random mix of u^2 and a slow half-sine (smooth, 0 at
  # the start, growing with time), scaled per agent.
  mix = rng.uniform(0.0, 1.0, (n_agents, 1))
  phase = rng.uniform(0.5, 1.5, (n_agents, 1))
  profile_lat = mix * u**2 + (1 - mix) * np.sin(0.5 * np.pi * u * phase)**2
  profile_lon = u**1.5
  lat = rng.normal(0.0, lateral_m, (n_agents, 1)) * profile_lat
  lon = rng.normal(0.0, 2.0 * lateral_m, (n_agents, 1)) * profile_lon
  heading = future[..., 3]
  c, s = np.cos(heading), np.sin(heading)
  out = future.copy()
  out[..., 0] += lon * c - lat * s
  out[..., 1] += lon * s + lat * c
  # Turn the heading towards the lateral drift, by its angle over the
  # distance travelled in one step (at least 1 m, to stay bounded).
  step = np.linalg.norm(
      np.diff(future[..., :2], axis=1, prepend=future[:, :1, :2]), axis=-1)
  dlat = np.diff(lat, axis=1, prepend=0.0)
  out[..., 3] += np.arctan2(dlat, np.maximum(step, 1.0))
  return out


def scenario_rng(seed: int, scenario_id: str) -> np.random.Generator:
  digest = hashlib.sha256(scenario_id.encode()).digest()
  return np.random.default_rng([seed, int.from_bytes(digest[:8], 'little')])


def rollouts_array(scenario: scenario_pb2.Scenario, kind: str, seed: int,
                   noise_m: float, noise_rad: float, perturb_m: float,
                   n_rollouts: int = N_ROLLOUTS) -> np.ndarray:
  """(n_rollouts, n_agents, 80, 4) float32 x, y, z, heading."""
  rng = scenario_rng(seed, scenario.scenario_id)
  if kind == 'constant_velocity':
    base = constant_velocity_future(scenario)
  else:
    base = log_future(scenario)
  out = np.repeat(base[np.newaxis], n_rollouts, axis=0)
  if kind == 'noisy':
    shape = out.shape[:-1]
    out[..., 0] += rng.normal(0.0, noise_m, shape)
    out[..., 1] += rng.normal(0.0, noise_m, shape)
    out[..., 3] += rng.normal(0.0, noise_rad, shape)
  elif kind == 'perturbed':
    for r in range(n_rollouts):
      out[r] = perturb(base, rng, perturb_m)
  elif kind not in ('log', 'constant_velocity'):
    raise ValueError(f'unknown kind {kind!r}')
  return out.astype(np.float32)


def scenario_rollouts(scenario: scenario_pb2.Scenario, array: np.ndarray
                      ) -> sim_agents_submission_pb2.ScenarioRollouts:
  """Packs ``rollouts_array`` output into a ``ScenarioRollouts`` proto."""
  ids = [scenario.tracks[i].id for i in sim_agent_indices(scenario)]
  joint_scenes = []
  for rollout in array:
    trajectories = []
    for object_id, xyzh in zip(ids, rollout):
      trajectories.append(sim_agents_submission_pb2.SimulatedTrajectory(
          center_x=xyzh[:, 0].tolist(), center_y=xyzh[:, 1].tolist(),
          center_z=xyzh[:, 2].tolist(), heading=xyzh[:, 3].tolist(),
          object_id=object_id))
    joint_scenes.append(sim_agents_submission_pb2.JointScene(
        simulated_trajectories=trajectories))
  return sim_agents_submission_pb2.ScenarioRollouts(
      scenario_id=scenario.scenario_id, joint_scenes=joint_scenes)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--scenarios', required=True,
                      help='TFRecord of Scenario protos')
  parser.add_argument('--kind', required=True, choices=KINDS)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', required=True)
  parser.add_argument('--binproto', action='store_true',
                      help='write one SimAgentsChallengeSubmission instead of '
                      'a TFRecord of ScenarioRollouts')
  parser.add_argument('--noise-m', type=float, default=0.3)
  parser.add_argument('--noise-rad', type=float, default=0.05)
  parser.add_argument('--perturb-m', type=float, default=2.0)
  parser.add_argument('--n-rollouts', type=int, default=N_ROLLOUTS,
                      help='rollouts per scenario (the challenge needs 32)')
  parser.add_argument('--scenario-ids', default='',
                      help='comma-separated ids to keep (default: all)')
  args = parser.parse_args(argv)
  keep = set(filter(None, args.scenario_ids.split(',')))

  all_rollouts = []
  for payload in tfrecord_io.records(args.scenarios):
    scenario = scenario_pb2.Scenario.FromString(payload)
    if keep and scenario.scenario_id not in keep:
      continue
    array = rollouts_array(scenario, args.kind, args.seed, args.noise_m,
                           args.noise_rad, args.perturb_m, args.n_rollouts)
    all_rollouts.append(scenario_rollouts(scenario, array))
  if not all_rollouts:
    print('no scenario selected', file=sys.stderr)
    return 1
  with open(args.out, 'wb') as f:
    if args.binproto:
      challenge = sim_agents_submission_pb2.SimAgentsChallengeSubmission
      submission = challenge(
          scenario_rollouts=all_rollouts,
          submission_type=challenge.SIM_AGENTS_SUBMISSION,
          account_name='prefalign-parity',
          unique_method_name=f'{args.kind}-seed{args.seed}')
      f.write(submission.SerializeToString())
    else:
      tfrecord_io.write_records(
          f, (r.SerializeToString() for r in all_rollouts))
  print(f'{len(all_rollouts)} scenario(s) -> {args.out}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
