"""What each kind of folder holds, and the check of a folder before a run writes in it.

A trainer replaces its own files in its folder, so a folder holding anything
else (a user's files, another kind of run) is refused before anything is
written (`check_folder`, docs/workdirs.md). Who owns a workdir while it is
trained is `hyperrecon_jax.workdir_lock`; how its files are written,
`hyperrecon_jax.atomic_writes`.
"""

import fnmatch
import os

from hyperrecon_jax import errors
from hyperrecon_jax import workdir_lock

# What each kind of folder holds (docs/workdirs.md), as `fnmatch` patterns.
# Hidden entries (a report's temporary folder), the temporary files of
# `atomic_writes.write_bytes` and a user's logs of the run (``train.py … > DIR/train.log``,
# names no trainer writes) belong to any kind.
RUN_ENTRIES = (
    "config.json", "checkpoints", "checkpoints.pending.json", "checkpoints.damaged",
    workdir_lock.LOCK_FILE, "metrics.jsonl", "metrics.jsonl.tmp", "metrics.jsonl.*.old",
    "events.out.tfevents.*", "events.*.old", "eval", "eval.*.old", "baselines.json",
    "gradient_scales.json", "data_splits.json")
SEGMENTER_ENTRIES = ("segmenter.msgpack", "segmenter.json", workdir_lock.LOCK_FILE)
GRADIENT_SCALES_ENTRIES = ("gradient_scales.json",)
_ANY_KIND = (".*", "*.tmp[0-9]*", "*.log", "nohup.out")


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
      run files (`workdir_lock.is_primary`).
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
