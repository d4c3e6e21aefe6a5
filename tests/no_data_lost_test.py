"""No data lost on bad bytes, concurrent runs or full disks (issue 23).

One test (or a few) per case of the issue, each on small synthetic inputs:
skipping drops exactly the bad record; huge length fields are checked
before any allocation; concurrent writers never corrupt a file; temporary
files are never read as data; one run per directory; full or read-only
disks, directories and absurd coordinates end in one clear line; config
errors print one line and exit 2; checkpoints count as complete only when
their save finished, also where orbax writes in place.
"""

import dataclasses
import errno
import json
import os
import signal
import struct
import subprocess
import sys

import numpy as np
import pytest

from prefalign import datatypes
from prefalign import fileio
from prefalign.cli import data as data_cli
from prefalign.data import pipeline
from prefalign.data import submission
from prefalign.data import sumo
from prefalign.data import sumo_traffic
from prefalign.data import synthetic
from prefalign.data import tfrecord
from prefalign.data import womd
from prefalign.train import checkpoint as checkpoint_lib
from prefalign.train import loop
from prefalign.train import steps
from prefalign.train.state import TrainState
from tests.train.conftest import READER
from tests.train.conftest import tiny_config
from tests.train.conftest import write_scenarios

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _good(i: int) -> bytes:
  return synthetic.straight_road_scenario(
      f'good-{i}', seed=i, num_vehicles=2 + i % 3).SerializeToString()


def _frame(data: bytes) -> bytes:
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', tfrecord.masked_crc32c(length)) + data +
          struct.pack('<I', tfrecord.masked_crc32c(data)))


def _header(length: int) -> bytes:
  """A record header claiming ``length`` bytes, with a valid length CRC."""
  raw = struct.pack('<Q', length)
  return raw + struct.pack('<I', tfrecord.masked_crc32c(raw))


def _ids(path, **kw):
  stats = womd.ReadStats()
  got = [s.scenario_id for _, _, s in womd.read_scenarios(
      path, skip_bad_records=True, stats=stats, **kw)]
  return got, stats


# --- 1. skipping drops exactly the bad record -------------------------------


def test_payload_checksum_error_skips_exactly_that_record(tmp_path):
  """One flipped payload byte in record 1 of 20: 19 read, 1 skipped."""
  frames = [bytearray(_frame(_good(i))) for i in range(20)]
  frames[1][12 + 50] ^= 0x04
  path = tmp_path / 'flipped.tfrecord'
  path.write_bytes(b''.join(frames))
  got, stats = _ids(str(path))
  assert got == [f'good-{i}' for i in range(20) if i != 1]
  assert (stats.num_read, stats.num_skipped) == (19, 1)
  assert 'record 1: data checksum mismatch' in stats.errors[0]
  # The pipeline (training and collection) reads the same way.
  pstats = womd.ReadStats()
  ex = list(pipeline.scenarios(str(path), pipeline.PipelineConfig(
      reader=READER, skip_bad_records=True), stats=pstats))
  assert [e.scenario_id for e in ex] == got
  assert [e.record for e in ex] == [i for i in range(20) if i != 1]
  assert pstats.num_skipped == 1
  # Without skipping it still stops at record 1.
  with pytest.raises(tfrecord.RecordError, match='record 1: data checksum'):
    list(womd.read_scenarios(str(path)))


@pytest.mark.parametrize('damage', ['length_byte', 'garbage', 'cut_frame'])
def test_framing_error_resynchronises_on_the_next_valid_record(tmp_path,
                                                                damage):
  frames = [_frame(_good(i)) for i in range(6)]
  bad = bytearray(frames[2])
  if damage == 'length_byte':
    bad[0] ^= 0x55  # the length fails its checksum
  elif damage == 'garbage':
    bad = bytearray(b'\x00\x17garbage' * 31) + bad  # bytes before a frame
  else:
    bad = bad[:len(bad) // 2]  # a frame cut in the middle
  frames[2] = bytes(bad)
  path = tmp_path / f'{damage}.tfrecord'
  path.write_bytes(b''.join(frames))
  got, stats = _ids(str(path))
  kept = {'length_byte': [0, 1, 3, 4, 5], 'garbage': [0, 1, 2, 3, 4, 5],
          'cut_frame': [0, 1, 3, 4, 5]}[damage]
  assert got == [f'good-{i}' for i in kept]
  assert stats.num_skipped == 1, stats.errors
  assert 'record 2: ' in stats.errors[0]
  skipped = {'length_byte': len(frames[2]), 'garbage': 9 * 31,
             'cut_frame': len(frames[2])}[damage]
  assert (f'skipped {skipped} bytes to the next valid record'
          in stats.errors[0])


# --- 2. huge length fields --------------------------------------------------


class _ReadSpy:
  """A file whose reads larger than the file itself are an error (what
  would have been allocated)."""

  def __init__(self, f, size):
    self._f, self._size = f, size

  def read(self, n=-1):
    if n is not None and n > self._size:
      raise AssertionError(f'read({n}) of a {self._size}-byte file')
    return self._f.read(n)

  def __getattr__(self, name):
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()


@pytest.mark.parametrize('length', [2**62, 2**33])
def test_huge_length_is_compared_with_the_file_before_reading(
    tmp_path, monkeypatch, length):
  path = tmp_path / 'huge.tfrecord'
  path.write_bytes(_frame(_good(0)) + _header(length) + b'x' * 64 +
                   _frame(_good(1)))
  size = path.stat().st_size
  monkeypatch.setattr(tfrecord, 'open', lambda p, mode: _ReadSpy(
      open(p, mode), size), raising=False)
  with pytest.raises(tfrecord.RecordError, match=(
      f'record 1: truncated record: expected {length} bytes, only')):
    list(tfrecord.read_records(path))
  got, stats = _ids(str(path))
  assert got == ['good-0', 'good-1'] and stats.num_skipped == 1


# --- 3. concurrent writers --------------------------------------------------


def test_concurrent_writers_of_one_path_leave_a_whole_file(tmp_path):
  path = tmp_path / 'out.tfrecord'
  a, b = tfrecord.TFRecordWriter(path), tfrecord.TFRecordWriter(path)
  for i in range(5):
    a.write(_good(i))
    b.write(_good(10 + i))
  a.write(_good(5))
  a.close()
  b.close()  # the last writer wins, with a complete file
  got = [d for _, d in tfrecord.read_records(path)]
  assert got == [_good(10 + i) for i in range(5)]
  assert sorted(os.listdir(tmp_path)) == ['out.tfrecord']  # no temporaries


def test_concurrent_writer_processes(tmp_path):
  """Two processes write one path many times over: every result is whole."""
  path = tmp_path / 'shared.tfrecord'
  code = ('import sys; from prefalign.data import tfrecord\n'
          'for k in range(40):\n'
          '  tfrecord.write_records(sys.argv[1], [sys.argv[2].encode() * '
          '5000] * 20)\n')
  env = dict(os.environ, PYTHONPATH=_ROOT, JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen([sys.executable, '-c', code, str(path), tag],
                            env=env, cwd=_ROOT) for tag in 'ab']
  for p in procs:
    assert p.wait(timeout=120) == 0
  records = [d for _, d in tfrecord.read_records(path)]
  assert len(records) == 20 and len(set(records)) == 1
  assert sorted(os.listdir(tmp_path)) == ['shared.tfrecord']


# --- 4. leftover temporary shards -------------------------------------------


def test_leftover_temporary_shards_are_never_read(tmp_path):
  shard = tmp_path / 'net.tfrecord-00000-of-00001'
  tfrecord.write_records(shard, [_good(i) for i in range(16)])
  partial = b''.join(_frame(_good(100 + i)) for i in range(10))
  # A hard kill's leftovers: the old name and the unique one.
  (tmp_path / 'net.tfrecord-00000-of-00001.tmp').write_bytes(
      partial + _frame(_good(110))[:30])
  (tmp_path / '.net.tfrecord-00000-of-00001.k2j3h4.tmp').write_bytes(partial)
  pattern = str(tmp_path / 'net.tfrecord-*')
  assert womd.expand_paths(pattern) == [str(shard)]
  got, stats = _ids(pattern)
  assert len(got) == 16 and stats.num_skipped == 0
  removed = fileio.remove_temporaries(tmp_path, 'net.tfrecord-')
  assert len(removed) == 2
  assert sorted(os.listdir(tmp_path)) == [shard.name]


# --- 5. two runs in one directory -------------------------------------------


def test_second_pretraining_run_in_a_workdir_stops_naming_the_first(
    tmp_path):
  scenario_files = {'train': write_scenarios(tmp_path / 'train.tfrecord', 8,
                                             0)}
  scenario_files['eval'] = scenario_files['train']
  workdir = tmp_path / 'run'
  config = tiny_config(scenario_files, num_steps=1, eval_batches=0)
  with fileio.DirLock(workdir, what='pre-training'):
    with pytest.raises(fileio.LockedError, match=(
        rf'{workdir} is in use by process {os.getpid()} on .*pre-training')):
      loop.train_and_evaluate(config, workdir)
  assert not (workdir / 'metrics.jsonl').exists()
  fileio.DirLock(workdir).acquire().release()  # released with its holder


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  code = ('import sys, time; from prefalign import fileio\n'
          'fileio.DirLock(sys.argv[1], "holder").acquire()\n'
          'print("locked", flush=True); time.sleep(600)\n')
  proc = subprocess.Popen([sys.executable, '-c', code, str(tmp_path)],
                          stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONPATH=_ROOT), cwd=_ROOT)
  try:
    assert proc.stdout.readline().strip() == 'locked'
    with pytest.raises(fileio.LockedError,
                       match=rf'process {proc.pid} on .*holder'):
      fileio.DirLock(tmp_path).acquire()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  fileio.DirLock(tmp_path).acquire().release()


def test_experiments_run_holds_the_workdir(tmp_path, monkeypatch):
  import ml_collections

  from experiments import stages
  monkeypatch.setattr(stages, 'check', lambda config, workdir: None)
  config = ml_collections.ConfigDict({'stages': []})
  with fileio.DirLock(tmp_path, what='experiments.main'):
    with pytest.raises(fileio.LockedError, match=str(os.getpid())):
      stages.run(config, str(tmp_path))
  stages.run(config, str(tmp_path))


_SUMO = sumo.SumoConfig(network='cross', num_scenarios=4, seed=3,
                        warmup_s=20.0, egos_per_window=2)


def test_sumo_out_with_other_settings_is_refused(tmp_path, capsys):
  other = dataclasses.replace(_SUMO, seed=4)
  manifest = {'config_key': sumo._config_key(other),
              'config': dataclasses.asdict(other), 'files': []}
  (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
  with pytest.raises(sumo.SumoError, match=(
      r'holds scenarios generated with other settings .*seed \(4 vs 3\)')):
    sumo.generate(_SUMO, tmp_path)
  assert json.loads((tmp_path / 'manifest.json').read_text()) == manifest
  # And a second generation into a folder in use stops naming the first.
  with fileio.DirLock(tmp_path / 'busy', what='SUMO generation'):
    assert data_cli.main(['sumo', '--network', 'cross', '--out',
                          str(tmp_path / 'busy')]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f'process {os.getpid()}' in err[0]


# --- 6. full and read-only disks --------------------------------------------


@pytest.fixture
def scenario_file(tmp_path):
  path = tmp_path / 'one.tfrecord'
  tfrecord.write_records(path, [_good(0)])
  return str(path)


def test_plot_on_a_full_disk_leaves_no_truncated_png(tmp_path, monkeypatch,
                                                     capsys, scenario_file):
  from matplotlib.backends import backend_agg

  def full_disk(self, target, *args, **kwargs):
    del self, args, kwargs
    if isinstance(target, (str, os.PathLike)):
      with open(target, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n partial')
    else:
      target.write(b'\x89PNG\r\n\x1a\n partial')
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(backend_agg.FigureCanvasAgg, 'print_png', full_disk)
  out = tmp_path / 'plots' / 'scenario.png'
  out.parent.mkdir()
  assert data_cli.main(['plot', scenario_file, '--out', str(out)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'the disk is full' in err[0], err
  assert not os.listdir(out.parent)  # neither the PNG nor a temporary


def test_read_only_or_file_valued_out_is_one_line(tmp_path, monkeypatch,
                                                  capsys, scenario_file):
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  for argv in (['plot', scenario_file, '--out', str(a_file / 'x.png')],
               ['sumo', '--network', 'cross', '--out', str(a_file)],
               ['sumo', '--network', 'cross', '--out', str(a_file / 'sub')]):
    assert data_cli.main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'a_file' in err[0], (argv, err)
  assert a_file.read_text() == 'x'

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get('dir'))

  monkeypatch.setattr(fileio.tempfile, 'mkstemp', read_only)
  assert data_cli.main(['plot', scenario_file, '--out',
                        str(tmp_path / 'ro.png')]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'read-only' in err[0], err
  assert not (tmp_path / 'ro.png').exists()


_FCD_HEADER = ('timestep_time;vehicle_id;vehicle_x;vehicle_y;vehicle_angle;'
               'vehicle_type;vehicle_speed;vehicle_pos;vehicle_lane;'
               'vehicle_edge;vehicle_slope\n')


def _sumo_run(folder, fcd_steps, summary_steps, cut=None):
  folder.mkdir()
  rows = ''.join(f'{t / 10:.2f};v0;{t:.2f};5.00;90.00;car_calm;10.00;1.0;'
                 'e_0;e;0.00\n' for t in range(fcd_steps))
  text = _FCD_HEADER + rows
  (folder / 'fcd.csv').write_text(text if cut is None else text[:cut])
  (folder / 'summary.xml').write_text(
      '<summary>\n' + ''.join(f'    <step time="{t / 10:.2f}" loaded="1" '
                              'inserted="1" running="1" waiting="0"/>\n'
                              for t in range(summary_steps)) + '</summary>\n')
  return folder


def test_cut_simulator_output_is_an_error_not_shorter_tracks(tmp_path):
  whole = sumo_traffic.read_run(_sumo_run(tmp_path / 'whole', 30, 30), 31)
  assert whole.end.tolist() == [30]
  cases = {'mid_line': (30, 30, -7, 'ends mid-line'),
           'line_boundary': (20, 30, None, "last step is '1.90'"),
           'empty': (0, 30, 0, 'missing or empty')}
  for name, (fcd, summary, cut, reason) in cases.items():
    folder = _sumo_run(tmp_path / name, fcd, summary, cut)
    with pytest.raises(sumo.SumoError, match=reason):
      sumo_traffic.read_run(folder, 31)


# --- 7. directories and non-finite or absurd coordinates --------------------


def test_a_directory_as_input_is_one_line(tmp_path, capsys):
  assert data_cli.main(['info', str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'is a directory' in err[0]
  with pytest.raises(womd.DataError, match='is a directory'):
    list(pipeline.scenarios(str(tmp_path), pipeline.PipelineConfig()))


@pytest.fixture(scope='module')
def submitted():
  scenario = synthetic.straight_road_scenario('sub', num_vehicles=3)
  example = womd.state_from_scenario(scenario, READER)
  state = example.state
  log = state.log_trajectory
  now = datatypes.CURRENT_TIME_INDEX
  traj = datatypes.Trajectory(**{
      f.name: np.repeat(np.asarray(getattr(log, f.name))[None, :, now + 1:],
                        2, 0) for f in dataclasses.fields(log)})
  mask = submission.sim_agent_mask(state)
  traj = traj.replace(valid=np.broadcast_to(mask[None, :, None],
                                            traj.valid.shape).copy())
  proto = submission.scenario_rollouts_from_trajectory(state, 'sub', traj)
  submission.trajectory_from_scenario_rollouts(proto, example)  # accepted
  return proto, example


@pytest.mark.parametrize('how', ['3e38', 'moved_1e7'])
def test_absurd_submitted_coordinates_are_refused(submitted, how):
  proto, example = submitted
  bad = type(proto)()
  bad.CopyFrom(proto)
  if how == '3e38':
    bad.joint_scenes[1].simulated_trajectories[2].center_y[40] = 3e38
    where = r'rollout 1: object id \d+ has center_y=3e\+38 at simulated step 40'
  else:
    for scene in bad.joint_scenes:
      for traj in scene.simulated_trajectories:
        traj.center_x[:] = [x + 1e7 for x in traj.center_x]
    where = r'rollout 0: object id \d+ has center_x=1e\+07 at simulated step 0'
  with pytest.raises(womd.DataError, match=where + r'.*beyond the 100000 m'):
    submission.trajectory_from_scenario_rollouts(bad, example)


# --- 8. config errors -------------------------------------------------------


@pytest.mark.parametrize('override,message', [
    ('--config.nonexistent=1', 'error: --config.nonexistent: no such key'),
    ('--config.pretrain.batch_size=0',
     'error: config.pretrain.batch_size=0 is not a positive multiple'),
    ('--config.data.womd_glob=/nonexistent/*.tfrecord',
     "error: config.data.womd_glob: no file matches '/nonexistent"),
])
def test_config_errors_are_one_line_and_status_2(tmp_path, override,
                                                 message):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main',
       '--config=experiments/configs/demo.py', f'--workdir={tmp_path}',
       override], cwd=_ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=_ROOT, JAX_PLATFORMS='cpu'),
      check=False)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message), proc.stderr


# --- orbax: completeness where steps are written in place -------------------


def _state(value: float) -> TrainState:
  import jax.numpy as jnp
  return TrainState.create({'w': jnp.full((3,), value)},
                           steps.make_optimizer(steps.OptimizerConfig()))


def test_a_step_written_in_place_and_cut_off_is_not_resumed(tmp_path):
  """An object store writes the step folder in place: orbax's
  _CHECKPOINT_METADATA appears at the start of the save. A save killed
  after that is not a checkpoint."""
  ckdir = tmp_path / 'checkpoints'
  ckpt = checkpoint_lib.Checkpointer(ckdir)
  ckpt.save(_state(1.0))
  ckpt.close()
  assert (ckdir / '0' / 'prefalign_complete.json').exists()
  # A cut-off in-place save of step 4: metadata first, arrays missing.
  (ckdir / '4' / 'default').mkdir(parents=True)
  (ckdir / '4' / '_CHECKPOINT_METADATA').write_text('{}')
  with pytest.warns(UserWarning, match='4 is incomplete'):
    ckpt = checkpoint_lib.Checkpointer(ckdir)
  assert ckpt.latest_step() == 0
  assert float(ckpt.restore(_state(0.0)).params['w'][0]) == 1.0
  ckpt.close()
  assert (ckdir / '4.incomplete' / '_CHECKPOINT_METADATA').exists()
  # Orbax's own commit file (written last in place) counts as complete.
  assert checkpoint_lib._is_complete(
      _commit(ckdir / '6'), marked=True)


def _commit(folder):
  folder.mkdir()
  (folder / 'commit_success.txt').write_text('ok')
  return folder


def test_checkpoints_from_before_the_markers_still_resume(tmp_path):
  ckdir = tmp_path / 'checkpoints'
  ckpt = checkpoint_lib.Checkpointer(ckdir)
  ckpt.save(_state(2.0))
  ckpt.close()
  # As the old code left it: no markers at all.
  (ckdir / 'COMPLETION_MARKERS').unlink()
  (ckdir / '0' / 'prefalign_complete.json').unlink()
  ckpt = checkpoint_lib.Checkpointer(ckdir)
  assert ckpt.latest_step() == 0 and not ckpt.set_aside
  ckpt.close()
  assert (ckdir / '0' / 'prefalign_complete.json').exists()
  assert (ckdir / 'COMPLETION_MARKERS').exists()


def test_writes_are_atomic_everywhere():
  """No writer left with a fixed temporary name (``path + '.tmp'``)."""
  offenders = []
  for folder in ('prefalign', 'experiments'):
    for root, _, names in os.walk(os.path.join(_ROOT, folder)):
      for name in names:
        if name.endswith('.py') and name != 'fileio.py':
          text = open(os.path.join(root, name)).read()
          if "'.tmp'" in text or "'.json.tmp'" in text or 'json.tmp' in text:
            offenders.append(name)
  assert not offenders


def test_atomic_files_get_the_mode_of_a_plain_open(tmp_path):
  old = os.umask(0o022)
  try:
    fileio.atomic_write_text(tmp_path / 'a.txt', 'x')
  finally:
    os.umask(old)
  assert (tmp_path / 'a.txt').stat().st_mode & 0o777 == 0o644
