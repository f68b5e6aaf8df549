"""One writer per workdir: a lock taken before a run writes anything there.

Two runs writing one workdir (a requeued cluster job that overlaps the old one, a second
terminal) delete each other's checkpoints and mix their configs, results and TensorBoard
events. A training run therefore holds WORKDIR/run.lock from before its config check until
it exits; a second run on the same workdir stops with one paragraph naming the holder.

The lock is an exclusive `flock` on the file, which the kernel releases when the holder
exits in any way (kill -9 included), so a crashed run never blocks its rerun on the same
machine. The file also records the holder (host, pid, start, command) and a heartbeat the
holder rewrites every `HEARTBEAT_SECONDS`: on a shared file system where `flock` does not
reach across machines, a run on another host is refused while that heartbeat is fresh, and
taken over once it is older than `STALE_SECONDS` (the other machine died or lost the disk).
The file stays in place after a run (removing a locked file would let two runs lock two
different files); it then records that it was released. Only a workdir that this lock
created and in which nothing else was written (the run failed at once) is removed again.
"""

import fcntl
import json
import os
import socket
import sys
import threading
import time

from alexnet_jax.runtime import errors

FILE = 'run.lock'
HEARTBEAT_SECONDS = 30.0
# A holder on another host whose heartbeat is this old is taken to be gone: several missed
# heartbeats, so that a slow shared file system does not make a live run look dead.
STALE_SECONDS = 10 * HEARTBEAT_SECONDS


class WorkdirLockedError(errors.UserError, RuntimeError):
  """Another run holds the workdir."""


def _describe(holder: dict, now: float) -> str:
  age = now - holder.get('heartbeat', now)
  return (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} (started "
          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', now)))}"
          f", last heartbeat {age:.0f} s ago: {holder.get('command', '?')})")


class WorkdirLock:
  """The lock on one workdir; a context manager (`with WorkdirLock(workdir):`)."""

  def __init__(self, workdir: str, heartbeat_seconds: float = HEARTBEAT_SECONDS,
               stale_seconds: float = STALE_SECONDS):
    self.path = os.path.join(workdir, FILE)
    self._heartbeat_seconds = heartbeat_seconds
    self._stale_seconds = stale_seconds
    self._file = None
    self._created = False
    self._record = {}
    self._stop = threading.Event()
    self._thread = None

  def _read(self) -> dict:
    self._file.seek(0)
    try:
      return json.loads(self._file.read() or '{}')
    except ValueError:
      return {}  # Cut short by a crash mid-write: no live holder wrote it last.

  def _write(self, **fields) -> None:
    self._record.update(fields)
    self._file.seek(0)
    self._file.truncate()
    self._file.write(json.dumps(self._record))
    self._file.flush()
    os.fsync(self._file.fileno())

  def _refuse(self, holder: dict) -> None:
    self._file.close()
    self._file = None
    raise WorkdirLockedError(
        f'{os.path.dirname(self.path)} is in use by another run: {_describe(holder, time.time())}. '
        'Two runs in one workdir would overwrite each other\'s checkpoints and results. Wait '
        'for it to end, stop it, or give this run another --workdir. If that run is gone for '
        f'certain (its machine was lost), delete {self.path} and rerun.')

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock, or raises WorkdirLockedError naming the holder."""
    workdir = os.path.dirname(self.path)
    self._created = not os.path.isdir(workdir)
    try:
      os.makedirs(workdir, exist_ok=True)
      self._file = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), 'r+')
    except OSError as e:
      raise errors.NotWritableError(f'Cannot write to --workdir={workdir}: {e}. Choose a '
                                    'directory this user can create and write.') from e
    try:
      fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._refuse(self._read())
    holder = self._read()
    now = time.time()
    if (holder and not holder.get('released') and holder.get('host') != socket.gethostname()
        and now - holder.get('heartbeat', 0) < self._stale_seconds):
      self._refuse(holder)  # A live run elsewhere, whose flock does not reach this host.
    self._record = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': now,
                    'command': ' '.join(sys.argv)}
    self._write(heartbeat=now, released=False)
    self._thread = threading.Thread(target=self._beat, name='workdir-lock-heartbeat',
                                    daemon=True)
    self._thread.start()
    return self

  def _beat(self) -> None:
    while not self._stop.wait(self._heartbeat_seconds):
      try:
        self._write(heartbeat=time.time())
      except (OSError, ValueError):
        return  # The disk went away; the flock still holds on this host.

  def release(self) -> None:
    """Marks the lock released and lets go of it (any exit releases the flock anyway)."""
    if self._file is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    workdir = os.path.dirname(self.path)
    untouched = self._created and os.listdir(workdir) == [FILE]
    try:
      if untouched:
        os.unlink(self.path)  # Still locked: no other run can have opened it meanwhile.
      else:
        self._write(released=True, heartbeat=time.time())
    except OSError:
      pass  # A full disk must not hide the error that is ending the run.
    self._file.close()  # Closing the descriptor releases the flock.
    self._file = None
    if untouched:
      try:
        os.rmdir(workdir)
      except OSError:
        pass  # Something arrived meanwhile: keep it.

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
