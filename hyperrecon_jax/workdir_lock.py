"""A workdir has one owner: the trainer's lock and its primary process.

The trainer holds ``<workdir>/train.lock`` for the whole run: an advisory
``flock`` on that file, which the kernel releases when the process ends in any
way (exit, exception, ``kill -9``), so a lock left by a killed run is never
stale: the next trainer simply takes it. The file's text (pid, host, start
time) only serves the message a second trainer prints. Readers (evaluation,
the explorer, reconstruct) take no lock and write nothing into the run.

``flock`` is local to one machine (and unreliable on some network file
systems); a multi-host run takes the lock on process 0 only (`run_lock`). Every process
writes its own checkpoint shards, but the run's own files (its config, metrics,
results) are written by the primary process alone (`is_primary`).
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket

import jax
import numpy as np

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import errors

LOCK_FILE = "train.lock"


class WorkdirBusyError(errors.Error, RuntimeError):
  """Another trainer owns the workdir; the message names it."""


def is_primary() -> bool:
  """Whether this process writes the run's own files: process 0 of a multi-host run.

  A single-process run is always primary.
  """
  return jax.process_index() == 0


def _describe(path: str) -> str:
  try:
    with open(path) as f:
      owner = json.load(f)
    return (f"process {owner['pid']} on {owner['host']} (started "
            f"{owner['started']})")
  except (OSError, ValueError, KeyError, TypeError):
    return "another process"


def live_owner(workdir: str) -> str | None:
  """Who trains ``workdir`` now, read from its lock file, or None.

  Only an owner on this machine whose process is alive counts: the file of
  a process killed outright stays until the next trainer takes the lock,
  and one of another host cannot be checked from here. The lock itself is
  not touched (a reader taking it, even briefly, would refuse a trainer).
  """
  try:
    with open(os.path.join(workdir, LOCK_FILE)) as f:
      owner = json.load(f)
    pid, host = int(owner["pid"]), owner["host"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  if host != socket.gethostname() or pid == os.getpid():
    return None
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return None
  except PermissionError:  # alive, another user's
    pass
  return _describe(os.path.join(workdir, LOCK_FILE))


def _first_missing(path: str) -> str | None:
  """The outermost folder of ``path`` that does not exist yet, or None."""
  path, missing = os.path.abspath(path), None
  while not os.path.exists(path):
    missing, parent = path, os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def _remove_if_empty(path: str, up_to: str) -> None:
  """Removes ``path`` and its parents up to ``up_to`` while they are empty."""
  path = os.path.abspath(path)
  while True:
    try:
      os.rmdir(path)
    except OSError:
      return  # not empty (the run wrote something), or gone
    if path == up_to or os.path.dirname(path) == path:
      return
    path = os.path.dirname(path)


@contextlib.contextmanager
def made_folder(folder: str):
  """Creates ``folder`` (and its missing parents) for the block.

  When the block (or the creation) raises, the folders this call created are
  removed again if they are still empty; a folder that existed before is
  never removed.
  """
  created = _first_missing(folder)
  try:
    os.makedirs(folder, exist_ok=True)
    yield
  except BaseException:
    if created is not None:
      _remove_if_empty(folder, created)
    raise


@contextlib.contextmanager
def lock(workdir: str):
  """Holds the workdir's trainer lock for the block; creates the workdir.

  When the block (or the locking) raises, the folders this call created are
  removed again if they are still empty, so a run refused after start-up
  leaves nothing behind; a folder that existed before is never removed.

  Args:
    workdir: the run's folder.

  Raises:
    WorkdirBusyError: at once, if another live process holds the lock.
  """
  created = _first_missing(workdir)
  with made_folder(workdir), _locked(workdir):

    def undo():
      with contextlib.suppress(OSError):
        os.remove(os.path.join(workdir, LOCK_FILE))
      if created is not None:
        _remove_if_empty(workdir, created)

    # Only while the lock is this process's: the file of a lock refused as
    # busy is another process's.
    _HELD.append(undo)
    try:
      yield
    finally:
      _HELD.remove(undo)


# What the live `lock` blocks would undo if they raised, for `abandon`.
_HELD = []


def abandon() -> None:
  """Undoes what the live `lock` blocks would undo on an error, for an exit that skips them.

  A process of a multi-process run that ends because another one did
  (`cli.exit_now`, without unwinding its stack) would leave the lock file in
  a workdir it made, for a run that never started. Each held lock's file is
  removed, and the folders its `lock` made are removed while still empty.
  """
  for undo in reversed(_HELD):
    undo()


@contextlib.contextmanager
def run_lock(workdir: str):
  """`lock` for a training run of one or several processes: process 0 holds it.

  Process 0 takes the lock and tells the other processes of a multi-process
  run whether it could, so a run refused on process 0 is refused on every
  process at once instead of leaving the others waiting in their first
  collective.

  Args:
    workdir: the run's folder (reachable from every process).

  Raises:
    WorkdirBusyError: another trainer owns the workdir (on every process).
  """
  if jax.process_count() == 1:
    with lock(workdir):
      yield
    return
  from jax.experimental import multihost_utils
  with contextlib.ExitStack() as stack:
    error = None
    if is_primary():
      try:
        stack.enter_context(lock(workdir))
      except Exception as e:  # told to the others first, then raised
        error = e
    held = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
      raise error
    if not held:
      raise WorkdirBusyError(
          f"process 0 of this run could not take the lock of {workdir}; its message says why")
    yield


@contextlib.contextmanager
def _locked(workdir: str):
  path = os.path.join(workdir, LOCK_FILE)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirBusyError(
          f"{workdir} is being trained by {_describe(path)}; wait for it to "
          f"finish or stop it, or use another --workdir") from None
    # The previous owner may have removed the file between our open and our
    # lock: then we hold a lock on a file nobody else can see. Try again.
    try:
      same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  owner = {"pid": os.getpid(), "host": socket.gethostname(),
           "started": datetime.datetime.now().isoformat(timespec="seconds")}
  try:
    with atomic_writes.naming_file(path):  # a full disk fails here first, naming no file
      os.ftruncate(fd, 0)
      os.write(fd, json.dumps(owner).encode())
      os.fsync(fd)
    yield
  finally:
    # Removed while still locked, so no newcomer can lock the old file. A
    # folder made read-only keeps it; the error that ended the run is the
    # one to tell, and the lock is released when the file closes.
    with contextlib.suppress(OSError):
      os.remove(path)
    os.close(fd)
