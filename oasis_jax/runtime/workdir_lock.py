"""One run per workdir: an exclusive lock on `workdir/.lock` while training.

`python -m oasis_jax.main` holds the lock from before it writes anything into
the workdir until it exits; a second run on the same workdir stops with one
line naming the holder (host, pid, start time). The lock is an `fcntl.flock`
on the file, which the kernel (or the NFS server) drops when its process
ends, however it ends: a run killed with `kill -9` leaves the file but not
the lock, and the next run takes the workdir over with a warning naming the
run that is gone. A run that ends normally deletes the file.

Only process 0 of a multi-process run takes it. Readers (generate, evaluate,
export, the demo) take no lock. A workdir that is not a local path (e.g.
`gs://...`) is not locked: object stores have no such lock.
"""

import datetime
import fcntl
import json
import os
import socket
from typing import Optional

from absl import logging
from etils import epath

from oasis_jax.runtime import fatal

LOCK_FILE = '.lock'


class WorkdirInUseError(fatal.Error):
  """Another run holds the workdir."""


def _is_local(workdir: epath.Path) -> bool:
  return '://' not in os.fspath(workdir)


def _describe(holder: dict[str, object]) -> str:
  """'host h, pid 12, started 2026-01-02 03:04:05 UTC' (what is known)."""
  if not holder:
    return 'a run that has not written its name yet'
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
          f"started {holder.get('started', '?')}")


def _read_holder(fd: int) -> Optional[dict[str, object]]:
  """The holder recorded in the open lock file; None when it is empty."""
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode('utf-8', errors='replace').strip()
  if not text:
    return None
  try:
    holder = json.loads(text)
  except ValueError:
    return {'host': '?', 'pid': '?', 'started': f'? ({text[:80]!r})'}
  return holder if isinstance(holder, dict) else {}


class WorkdirLock:
  """Holds `workdir/.lock` as a context manager (see the module docstring).

  Raises (on entering):
    WorkdirInUseError: another live run holds the workdir; the message names
      its host, pid and start time.
  """

  def __init__(self, workdir):
    self.workdir = epath.Path(workdir)
    self.path = self.workdir / LOCK_FILE
    self._fd = None

  def acquire(self) -> None:
    """Takes the lock (creating the workdir); see the class docstring."""
    if not _is_local(self.workdir):
      logging.info('%s is not a local path: it is not locked against a '
                   'second run.', self.workdir)
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    while self._fd is None:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read_holder(fd) or {}
        os.close(fd)
        raise WorkdirInUseError(
            f'the workdir {self.workdir} is in use by another run '
            f'({_describe(holder)}; lock file {self.path}); stop that run '
            'first, or use another --workdir.') from None
      if not self._is_current(fd):  # Released and deleted meanwhile: again.
        os.close(fd)
        continue
      self._fd = fd
    self._record()

  def _is_current(self, fd: int) -> bool:
    """Whether `fd` is still the file at self.path (not one deleted)."""
    try:
      return os.stat(self.path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      return False

  def _record(self) -> None:
    """Warns about a holder that is gone; writes this run into the file."""
    stale = _read_holder(self._fd)
    if stale is not None:
      logging.warning('Taking over %s: the run that held it (%s) is gone.',
                      self.workdir, _describe(stale))
    started = datetime.datetime.now(datetime.timezone.utc)
    holder = {'host': socket.gethostname(), 'pid': os.getpid(),
              'started': started.strftime('%Y-%m-%d %H:%M:%S UTC')}
    os.ftruncate(self._fd, 0)
    os.lseek(self._fd, 0, os.SEEK_SET)
    os.write(self._fd, (json.dumps(holder) + '\n').encode('utf-8'))
    os.fsync(self._fd)

  def release(self) -> None:
    """Deletes the lock file, then drops the lock."""
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    finally:
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
