"""Files written all or nothing: readers see the old file or the new one, never half.

A file is written beside its place and renamed over it (`write_text`,
`write_bytes`); a larger result is built in a staging folder or a partial
file named after its host and process, then renamed into place, and what a
killed process left behind is swept by a later one (`sweep_staging`,
`sweep_partial_files`). A write's error names its file (`naming_file`).
"""

import contextlib
import os
import re
import shutil
import socket
import tempfile


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
