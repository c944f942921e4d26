"""A workdir has one owner: the trainer's lock, its primary process, and atomic writes.

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
import fnmatch
import json
import os
import re
import shutil
import socket
import tempfile

import jax
import numpy as np

from hyperrecon_jax import errors

LOCK_FILE = "train.lock"

# What each kind of folder holds (docs/workdirs.md), as `fnmatch` patterns.
# Hidden entries (a report's temporary folder), the temporary files of
# `write_bytes` and a user's logs of the run (``train.py … > DIR/train.log``,
# names no trainer writes) belong to any kind.
RUN_ENTRIES = (
    "config.json", "checkpoints", "checkpoints.pending.json", "checkpoints.damaged",
    LOCK_FILE, "metrics.jsonl", "metrics.jsonl.tmp", "metrics.jsonl.*.old",
    "events.out.tfevents.*", "events.*.old", "eval", "eval.*.old", "baselines.json",
    "gradient_scales.json", "data_splits.json")
SEGMENTER_ENTRIES = ("segmenter.msgpack", "segmenter.json", LOCK_FILE)
GRADIENT_SCALES_ENTRIES = ("gradient_scales.json",)
_ANY_KIND = (".*", "*.tmp[0-9]*", "*.log", "nohup.out")


class WorkdirBusyError(errors.Error, RuntimeError):
  """Another trainer owns the workdir; the message names it."""


def check_folder(workdir: str, kind: str, entries, *, write_probe: bool = True,
                 subfolders: tuple[str, ...] = ()) -> None:
  """Refuses a folder that is a file or holds what no ``kind`` writes.

  A trainer replaces its own files in its folder (``config.json``,
  ``metrics.jsonl``, …), so a folder holding anything else (a user's files,
  another kind of run) is refused before anything is written, rather than
  having its files of the same names replaced.

  Args:
    workdir: the folder; new, empty, or one that ``kind`` wrote.
    kind: what the folder is for, in words (``"training run"``).
    entries: `fnmatch` patterns of what ``kind`` writes at its top level.
    write_probe: also create and remove a file there (or in the nearest
      existing parent) to find a folder that cannot be written before any
      work; False on the processes of a multi-process run that write no
      run files (`is_primary`).
    subfolders: folders under ``workdir`` that ``kind`` writes in
      (``checkpoints``); with ``write_probe``, each one that exists is
      checked too, since a resumed run writes there first after its work.
      They are asked (``os.access``, which a read-only mount answers for
      root too) rather than written in: a finished run's rerun changes
      nothing there, not even the folder's time.

  Raises:
    InputError: ``workdir`` is a file, lies under a file, or holds other entries.
  """
  if os.path.islink(workdir) and not os.path.exists(workdir):
    raise errors.InputError(f"--workdir {workdir} is a symbolic link to "
                            f"{os.readlink(workdir)}, which does not exist")
  if os.path.lexists(workdir) and not os.path.isdir(workdir):
    raise errors.InputError(f"--workdir {workdir} is a file; give the folder of a {kind} "
                            "(new, empty, or one it wrote)")
  if not os.path.isdir(workdir):
    parent = os.path.dirname(os.path.abspath(workdir))
    while not os.path.lexists(parent):
      parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
      raise errors.InputError(f"cannot create --workdir {workdir}: {parent} is a file")
    if write_probe:
      _check_writable(workdir, parent)
    return
  try:
    names = sorted(os.listdir(workdir))
  except OSError as e:
    raise errors.InputError(f"--workdir {workdir} cannot be read ({e.strerror or e})") from None
  others = [n for n in names
            if not any(fnmatch.fnmatchcase(n, p) for p in (*entries, *_ANY_KIND))]
  if others:
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    raise errors.InputError(
        f"--workdir {workdir} holds {shown}, which is not a {kind}'s; give a new or empty "
        f"folder, or an earlier {kind}'s")
  if write_probe:
    _check_writable(workdir, workdir)
    for name in subfolders:
      folder = os.path.join(workdir, name)
      if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
        reason = ("Read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY
                  else "Permission denied")
        raise errors.InputError(f"--workdir {workdir}: cannot write in the folder {folder} "
                                f"({reason})")


def _check_writable(workdir: str, folder: str) -> None:
  """Refuses a ``folder`` in which no file can be created (before any work)."""
  from hyperrecon_jax import outputs  # imports the scan readers: only when probing
  outputs.check_writable(f"--workdir {workdir}", folder)


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
    with naming_file(path):  # a full disk fails here first, naming no file
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


def write_text(path: str, text: str) -> None:
  """Writes a file atomically: readers see the old or the new text, never half."""
  write_bytes(path, text.encode())


def write_bytes(path: str, data: bytes) -> None:
  """`write_text` for bytes.

  Raises:
    OSError: naming ``path`` (a full disk's error from ``write`` names no file).
  """
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with naming_file(path), open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    # A write stopped half way (a full disk, Ctrl-C) leaves no stray file.
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


@contextlib.contextmanager
def naming_file(path: str):
  """Raises an OSError of the block that names no file as one naming ``path``.

  A full disk's error from ``write`` or ``flush`` names no file, and alone
  on the command line it does not say which write failed.
  """
  try:
    yield
  except OSError as e:
    if e.filename is not None:
      raise
    raise OSError(e.errno, e.strerror or str(e), path) from e


def staging_folder(parent: str, prefix: str) -> str:
  """A new private folder in ``parent`` to build files in before they are renamed into place.

  Its name ends in this host and process (``{prefix}{host}-{pid}-XXXXXXXX``),
  so that a later `sweep_staging` can tell a folder a killed process left
  behind (``kill -9`` runs no ``finally``) from one still in use.
  """
  return tempfile.mkdtemp(prefix=f"{prefix}{_host()}-{os.getpid()}-", dir=parent)


def _host() -> str:
  """This host's name as it may stand in a file name."""
  return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def sweep_staging(parent: str, prefix: str, *, dry_run: bool = False) -> list[str]:
  """Removes the `staging_folder`s of ``prefix`` whose process on this host has ended.

  Folders of other hosts (a shared file system) are left alone: their
  processes cannot be asked.

  Args:
    parent: the folder that holds them.
    prefix: `staging_folder`'s prefix.
    dry_run: only list them.

  Returns:
    The paths of the folders removed (or, with ``dry_run``, to remove).
  """
  pattern = re.compile(rf"{re.escape(prefix)}{re.escape(_host())}-(\d+)-[^/]+")
  return _sweep(parent, pattern, dry_run)


def partial_file(path: str, suffix: str) -> str:
  """A hidden file beside ``path`` to write it in before it is renamed into place.

  Its name ends in this host and process, so that `sweep_partial_files` can
  tell one a killed process left behind (``kill -9``) from one being written.
  """
  folder, name = os.path.split(os.path.abspath(path))
  return os.path.join(folder, f".{name}.partial-{_host()}-{os.getpid()}-{suffix}")


def sweep_partial_files(parent: str) -> list[str]:
  """Removes the `partial_file`s in ``parent`` whose process on this host has ended."""
  return _sweep(parent, re.compile(rf"\..+\.partial-{re.escape(_host())}-(\d+)-[^/]*"), False)


def _sweep(parent: str, pattern, dry_run: bool) -> list[str]:
  """Removes the entries of ``parent`` matching ``pattern`` (group 1: a pid) of ended processes."""
  try:
    entries = os.listdir(parent)
  except OSError:
    return []
  removed = []
  for entry in sorted(entries):
    match = pattern.fullmatch(entry)
    if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
      path = os.path.join(parent, entry)
      if dry_run:
        removed.append(path)
        continue
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        with contextlib.suppress(OSError):
          os.remove(path)
      if not os.path.lexists(path):
        removed.append(path)
  return removed
