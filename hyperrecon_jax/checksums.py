"""What vouches for a checkpoint step: its files' checksums and its values' digests.

Checksums. After orbax has renamed a finished step folder into place, the
trainer records the size and SHA-256 of every file of the step in
``<step>/checksums.json`` (`write`). A truncated file, a lost file or a
flipped bit is then found (`verify`) before orbax reads the step: orbax and
tensorstore keep no checksums of their own, and a flipped bit in a weight would
otherwise load as a silently different model. Hashing costs one more read of
every file, once per save and once per restore.

Digests. A trainer killed between orbax's rename and the checksums leaves a
step without ``checksums.json``. So before each save the trainer records the
SHA-256 of the values it is about to save (state, data position, config) in
``<workdir>/checkpoints.pending.json`` (`record_pending`) and removes that
record once the step's checksums are written (`clear_pending`): a step without
checksums can then be checked value by value against it (`pending`,
`state_digest`, `json_digest`).

How `hyperrecon_jax.checkpoints` uses both, and what it does with a step that
fails them, is described there.
"""

import contextlib
import hashlib
import json
import os

import jax
import numpy as np

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import errors

CHECKSUMS = "checksums.json"
PENDING = "checkpoints.pending.json"


class RecordError(errors.Error, RuntimeError):
  """A step's file differs from its record, or a record cannot be read.

  The message names the file.
  """


# --- checksums of a step's files --------------------------------------------------------


def file_digest(path: str) -> str:
  """SHA-256 (hex) of a file's bytes, read in blocks of 1 MiB."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def array_digest(array) -> str:
  """SHA-256 (hex) of an array's dtype, shape and values (C order)."""
  array = np.ascontiguousarray(array)
  h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
  h.update(memoryview(array).cast("B"))
  return h.hexdigest()


def _step_files(step_dir: str):
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel != CHECKSUMS:
        yield rel, path


def write(step_dir: str) -> None:
  """Records size and SHA-256 of every file of a finished step folder.

  The table is written atomically and synced (`atomic_writes.write_text`): a
  reader never sees half of it, and a power cut after the save cannot leave
  an empty table that would make an intact step look damaged.
  """
  table = {rel: [os.path.getsize(path), file_digest(path)]
           for rel, path in sorted(_step_files(step_dir))}
  atomic_writes.write_text(os.path.join(step_dir, CHECKSUMS), json.dumps(table, indent=0))


def verify(step_dir: str) -> bool:
  """Checks a step folder against its ``checksums.json``.

  Returns:
    True if every file matches; False if the step has no ``checksums.json``
    (then it must be verified another way: `pending`).

  Raises:
    RecordError: naming the first missing, truncated, changed or unlisted
      file, or a ``checksums.json`` that cannot be read.
  """
  path = os.path.join(step_dir, CHECKSUMS)
  if not os.path.exists(path):
    return False
  try:
    with open(path) as f:
      table = json.load(f)
    entries = {rel: (int(size), str(digest)) for rel, (size, digest) in table.items()}
  except (OSError, ValueError, TypeError, AttributeError) as e:
    raise RecordError(f"{path} is damaged ({e})") from None
  # The table lists every file `write` found: one it lacks (an emptied
  # table, a file added since) would otherwise be vouched for unread.
  unlisted = sorted(rel for rel, _ in _step_files(step_dir) if rel not in entries)
  if unlisted:
    more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
    raise RecordError(f"{os.path.join(step_dir, unlisted[0])}{more} not in {path} (added "
                      "since the save, or the table is damaged)")
  for rel, (size, digest) in sorted(entries.items()):
    file = os.path.join(step_dir, rel)
    if not os.path.exists(file):
      raise RecordError(f"{file} is missing")
    if os.path.getsize(file) != size:
      raise RecordError(f"{file} has {os.path.getsize(file)} bytes, "
                        f"{size} were written (truncated or overwritten)")
    if file_digest(file) != digest:
      raise RecordError(f"{file} does not match its SHA-256 checksum "
                        "(changed on disk)")
  return True


# --- digests of the saved values ------------------------------------------------------------


def _host_array(x) -> np.ndarray:
  # The trainer's state is replicated: on a multi-host run each process holds
  # all of it, as its first addressable shard.
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.ascontiguousarray(np.asarray(x))


def state_digest(state) -> str:
  """SHA-256 of a pytree's leaves: each one's dtype, shape and bytes, in order.

  A scalar leaf counts as shape (1,) (``np.ascontiguousarray``): the digests
  that workdirs already hold were recorded that way.
  """
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(state):
    a = _host_array(leaf)
    h.update(f"{a.dtype.str}{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def json_digest(value) -> str:
  """SHA-256 of a JSON value in canonical form (sorted keys, no spaces).

  Tuples are saved as JSON lists: both have the same digest.
  """
  text = json.dumps(value, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()


def pending_path(workdir: str) -> str:
  return os.path.join(workdir, PENDING)


def record_pending(workdir: str, step: int, digests: dict[str, str]) -> None:
  """Records the digests of the values about to be saved as ``step``."""
  atomic_writes.write_text(pending_path(workdir), json.dumps({"step": step, **digests}))


def pending(workdir: str, step: int, items) -> dict[str, str] | None:
  """The digests recorded before saving ``step``, one per item; None without any.

  Raises:
    RecordError: the record cannot be read (the step cannot be verified by it).
  """
  path = pending_path(workdir)
  try:
    with open(path) as f:
      record = json.load(f)
    if int(record["step"]) != step:
      return None
    return {item: str(record[item]) for item in items}
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise RecordError(f"{path} is damaged ({e}): checkpoint {step} has no "
                      f"{CHECKSUMS} and cannot be verified") from None


def clear_pending(workdir: str, step: int | None = None) -> None:
  """Removes the recorded digests: those of ``step``, or whatever they name.

  Digests that cannot be read are kept when a step is given: they may belong
  to another step.
  """
  path = pending_path(workdir)
  with contextlib.suppress(FileNotFoundError):
    if step is not None:
      try:
        with open(path) as f:
          if int(json.load(f)["step"]) != step:
            return
      except (ValueError, KeyError, TypeError):
        return
    os.remove(path)


def drop_stale_pending(workdir: str, saved_steps) -> None:
  """Removes the digests of a save that never reached orbax's rename.

  Args:
    workdir: the run's folder.
    saved_steps: the steps that exist as finished step folders.
  """
  path = pending_path(workdir)
  try:
    with open(path) as f:
      step = int(json.load(f)["step"])
  except (OSError, ValueError, KeyError, TypeError):
    return  # none, or unreadable: kept for the step they may belong to
  if step not in saved_steps:
    clear_pending(workdir, step)
