"""Safe file output shared by every writer: atomic writes, globs that skip
temporary files, and one lock per output directory.

* ``atomic_open`` / ``atomic_write_text``: a file appears under its final
  name only once it is complete (written to a unique temporary name in the
  same directory, fsynced, then ``os.replace``d); on any error the temporary
  is removed and the final name is untouched. Unique names keep concurrent
  writers of one path from writing into the same temporary file: the last
  ``os.replace`` wins with a complete file.
* ``is_temporary`` / ``glob_files``: temporary names (ours, hidden
  ``.NAME.XXXX.tmp``, and older ``NAME.tmp`` leftovers of a hard kill) are
  never taken for data.
* ``DirLock``: one run per directory. A second run stops with a message that
  names the first run's process; the lock is ``fcntl.flock`` on
  ``DIR/.lock``, so a killed holder releases it with its process.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import errno
import fcntl
import glob as glob_lib
import json
import os
import socket
import sys
import tempfile
import time
from typing import BinaryIO

__all__ = ['TEMP_SUFFIX', 'atomic_open', 'atomic_write_text', 'save_figure',
           'is_temporary', 'glob_files', 'remove_temporaries', 'DirLock',
           'LockedError', 'describe_os_error']

PathLike = str | os.PathLike

TEMP_SUFFIX = '.tmp'


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = 'wb') -> Iterator[BinaryIO]:
  """A new file, renamed to ``path`` when the block ends without error.

  The temporary file is ``.NAME.XXXXXXXX.tmp`` in the same directory (unique
  per call, hidden, so that no data glob matches it); it is fsynced before the
  rename and removed when the block raises.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder,
                             prefix=f'.{os.path.basename(path)}.',
                             suffix=TEMP_SUFFIX)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      # mkstemp makes the file private (0600); give it the mode a plain
      # open() would have (0666 less the umask).
      os.fchmod(f.fileno(), 0o666 & ~_umask())
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write_text(path: PathLike, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically (see ``atomic_open``)."""
  with atomic_open(path, 'wb') as f:
    f.write(text.encode('utf-8'))


def save_figure(fig, path: PathLike, **kwargs) -> None:
  """``fig.savefig`` to ``path`` atomically (the format from its suffix)."""
  fmt = os.path.splitext(os.fspath(path))[1][1:].lower() or None
  with atomic_open(path, 'wb') as f:
    fig.savefig(f, format=fmt, **kwargs)


def is_temporary(path: PathLike) -> bool:
  """Whether ``path`` names a temporary file of a writer (never data)."""
  return os.path.basename(os.fspath(path)).endswith(TEMP_SUFFIX)


def glob_files(pattern: PathLike) -> list[str]:
  """Sorted matches of ``pattern``, temporary files left out."""
  return sorted(p for p in glob_lib.glob(os.fspath(pattern))
                if not is_temporary(p))


def remove_temporaries(folder: PathLike, name_prefix: str = '') -> list[str]:
  """Removes the temporary files a killed writer left in ``folder`` whose
  final name starts with ``name_prefix``; returns their paths."""
  removed = []
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    return removed
  for name in sorted(os.listdir(folder)):
    final = name[1:] if name.startswith('.') else name
    if is_temporary(name) and final.startswith(name_prefix):
      path = os.path.join(folder, name)
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
        removed.append(path)
  return removed


class LockedError(RuntimeError):
  """Another process holds the directory's lock (the message names it)."""


class DirLock:
  """An exclusive lock on a directory for the life of a run.

  ``with DirLock(folder, what='pre-training'):`` creates ``folder`` and holds
  ``folder/.lock`` (``fcntl.flock``, not blocking). The lock file records the
  holder's pid, host and command, so that a second run's ``LockedError``
  names the first. The lock goes with the process (a killed run never leaves
  a stale lock behind); the file itself stays.
  """

  NAME = '.lock'

  def __init__(self, folder: PathLike, what: str = 'run'):
    self.folder = os.fspath(folder)
    self.what = what
    self._fd: int | None = None

  def acquire(self) -> DirLock:
    os.makedirs(self.folder, exist_ok=True)
    path = os.path.join(self.folder, self.NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
        os.close(fd)
        raise
      try:
        holder = json.loads(os.pread(fd, 65536, 0).decode() or '{}')
      except (ValueError, UnicodeDecodeError):
        holder = {}
      os.close(fd)
      who = (f'process {holder.get("pid", "?")} on '
             f'{holder.get("host", "?")} ({holder.get("what", "a run")}, '
             f'started {holder.get("started", "?")}: '
             f'{holder.get("command", "?")})') if holder else 'another process'
      raise LockedError(
          f'{self.folder} is in use by {who}; wait for it to finish, stop '
          'it, or use another directory') from None
    info = {'pid': os.getpid(), 'host': socket.gethostname(),
            'what': self.what, 'started': time.strftime('%Y-%m-%dT%H:%M:%S'),
            'command': ' '.join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      with contextlib.suppress(OSError):
        os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> DirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def describe_os_error(e: OSError) -> str:
  """One line for an ``OSError``: what failed, on which path, and a hint for
  the usual causes (a full or read-only disk, a file where a folder goes)."""
  hints = {errno.ENOSPC: 'the disk is full',
           errno.EDQUOT: 'the disk quota is exceeded',
           errno.EROFS: 'the file system is read-only',
           errno.EACCES: 'permission denied',
           errno.ENOTDIR: 'a path component is a file, not a folder',
           errno.EISDIR: 'it is a folder, not a file'}
  where = ' '.join(repr(os.fspath(p)) for p in (e.filename, e.filename2)
                   if p is not None)
  if e.errno is None or not e.strerror:  # raised with a message of ours
    return str(e)
  reason = e.strerror
  if e.errno in hints:
    reason = f'{hints[e.errno]} ({e.strerror})'
  return f'{where + ": " if where else ""}{reason}'
