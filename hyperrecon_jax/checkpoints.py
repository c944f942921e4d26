"""Checkpoints of a training run (orbax): train state, data position, config.

Each checkpoint is a step folder ``<workdir>/checkpoints/<step>`` holding the
train state, the input iterator's state (JSON) and the config the state was
trained with (JSON): the config travels with the weights, and everything that
reads a model takes its config from there.

Who may write: only the trainer, which holds the workdir's lock
(`hyperrecon_jax.workdir`), opens a writing `manager`. Evaluation and every
other reader use `reader`, which is read-only: it creates nothing and never
cleans up, so it cannot delete the temporary folder of a save in progress.

Damage. Orbax writes a step into a temporary folder and renames it when
complete, so an interrupted save never looks finished. After the rename the
trainer records the size and SHA-256 of every file of the step in
``<step>/checksums.json``: a truncated file, a lost file or a flipped bit is
then found before orbax reads the step (orbax and tensorstore keep no
checksums of their own, and a flipped bit in a weight would otherwise load as a
silently different model). Hashing costs about 0.6 s per GiB (Python's
SHA-256 on this project's 2-core machine), once per save and once per
restore. `restore` skips a damaged step with a warning that names
it and the file, and falls back to the newest intact one; the trainer moves
skipped steps to ``<workdir>/checkpoints.damaged/`` (nothing is deleted) so it
can save those step numbers again.
"""

from collections.abc import Callable
import contextlib
import hashlib
import json
import os
import shutil
from typing import Any
from typing import NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from hyperrecon_jax import errors

CHECKSUMS = "checksums.json"
ITEMS = ("state", "data", "config")
DAMAGED_DIR = "checkpoints.damaged"


class CheckpointError(errors.Error, RuntimeError):
  """A checkpoint cannot be written or read; the message names the file."""


class Restored(NamedTuple):
  """A restored checkpoint: its step, train state, data position and config."""
  step: int
  state: Any
  data_state: dict
  config: dict


def checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, "checkpoints"))


def manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """The trainer's (writing) checkpoint manager for ``<workdir>/checkpoints``.

  Only the owner of the workdir's lock may open it: it creates the folder and
  removes the temporary folders of interrupted saves.

  Args:
    workdir: the run's folder.
    max_to_keep: number of most recent checkpoints kept; 0 keeps all.

  Returns:
    An ``orbax.checkpoint.CheckpointManager`` that saves synchronously.
  """
  if max_to_keep < 0:
    raise errors.InputError(f"max_to_keep must be ≥ 0 (0 keeps all), got {max_to_keep}")
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep or None, create=True,
      enable_async_checkpointing=False, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=ITEMS)


def reader(workdir: str) -> ocp.CheckpointManager | None:
  """A read-only manager of a workdir's checkpoints, or None without any.

  It creates nothing, deletes nothing and leaves temporary folders alone, so
  it can read a run while its trainer is saving.
  """
  path = checkpoint_dir(workdir)
  if not os.path.isdir(path):
    return None
  options = ocp.CheckpointManagerOptions(
      read_only=True, create=False, cleanup_tmp_directories=False,
      save_interval_steps=0)
  with _quiet_read_only_notice():
    return ocp.CheckpointManager(path, options=options, item_names=ITEMS)


@contextlib.contextmanager
def _quiet_read_only_notice():
  """Hides orbax's warning that a read-only manager is read-only."""
  notice = lambda record: "is read only" not in record.getMessage()
  logger = logging.get_absl_logger()
  logger.addFilter(notice)
  try:
    yield
  finally:
    logger.removeFilter(notice)


@jax.jit
def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _step_files(step_dir: str):
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel != CHECKSUMS:
        yield rel, path


def write_checksums(step_dir: str) -> None:
  """Records size and SHA-256 of every file of a finished step folder."""
  table = {rel: [os.path.getsize(path), _file_digest(path)]
           for rel, path in sorted(_step_files(step_dir))}
  tmp = os.path.join(step_dir, CHECKSUMS + ".tmp")
  with open(tmp, "w") as f:
    json.dump(table, f, indent=0)
  os.replace(tmp, os.path.join(step_dir, CHECKSUMS))


def verify(step_dir: str) -> None:
  """Checks a step folder against its ``checksums.json``.

  A step without the file (written by an older version, or a trainer killed
  between orbax's rename and the checksums) is accepted unverified.

  Raises:
    CheckpointError: naming the first missing, truncated or changed file.
  """
  path = os.path.join(step_dir, CHECKSUMS)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      table = json.load(f)
    entries = {rel: (int(size), str(digest)) for rel, (size, digest) in table.items()}
  except (OSError, ValueError, TypeError) as e:
    raise CheckpointError(f"{path} is damaged ({e})") from None
  for rel, (size, digest) in sorted(entries.items()):
    file = os.path.join(step_dir, rel)
    if not os.path.exists(file):
      raise CheckpointError(f"{file} is missing")
    if os.path.getsize(file) != size:
      raise CheckpointError(f"{file} has {os.path.getsize(file)} bytes, "
                            f"{size} were written (truncated or overwritten)")
    if _file_digest(file) != digest:
      raise CheckpointError(f"{file} does not match its SHA-256 checksum "
                            "(changed on disk)")


def save(mngr: ocp.CheckpointManager, step: int, state, data_state,
         config) -> None:
  """Saves the state, the data iterator state and the config at ``step``.

  Raises:
    CheckpointError: the state holds NaN or ±Inf (nothing is written: a
      checkpoint is always a state that training can go on from).
  """
  if not bool(jax.device_get(_all_finite(state))):
    raise CheckpointError(f"refusing to write checkpoint {step} to "
                          f"{mngr.directory}: the state holds NaN or ±Inf")
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state if data_state is not None else {}),
      config=ocp.args.JsonSave(json.loads(config.to_json()))), force=True)
  mngr.wait_until_finished()
  if jax.process_index() == 0:
    write_checksums(os.path.join(str(mngr.directory), str(step)))


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return text[:300] + ("…" if len(text) > 300 else "")


def _read(step_dir: str, read: Callable[[], Any]):
  try:
    return read()
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    # What orbax and tensorstore raise for missing, truncated or unparsable
    # files (JSON, msgpack, OCDBT manifests).
    raise CheckpointError(f"{step_dir} cannot be read ({_one_line(e)})") from e


def _restore_step(mngr, step: int, abstract_state):
  step_dir = os.path.join(str(mngr.directory), str(step))
  verify(step_dir)
  config = _read(step_dir, lambda: mngr.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore()))["config"])
  if not isinstance(config, dict):
    raise CheckpointError(f"{step_dir}: the stored config is not a JSON object")
  # Outside `_read`: an error of the caller's (e.g. an incompatible config)
  # is not damage.
  if callable(abstract_state):
    abstract_state = abstract_state(config)
  if abstract_state is None:
    return Restored(step, None, {}, config)
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                    abstract_state)
  out = _read(step_dir, lambda: mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      data=ocp.args.JsonRestore())))
  if not isinstance(out["data"], dict):
    raise CheckpointError(f"{step_dir}: the data position is not a JSON object")
  return Restored(step, out["state"], out["data"], config)


def _quarantine(mngr, step: int) -> str:
  src = os.path.join(str(mngr.directory), str(step))
  root = os.path.join(os.path.dirname(str(mngr.directory)), DAMAGED_DIR)
  os.makedirs(root, exist_ok=True)
  dst, n = os.path.join(root, str(step)), 1
  while os.path.exists(dst):
    dst, n = os.path.join(root, f"{step}.{n}"), n + 1
  shutil.move(src, dst)
  mngr.reload()
  return dst


def restore(mngr: ocp.CheckpointManager | None,
            abstract_state: Any | Callable[[dict], Any] = None, step=None, *,
            quarantine: bool = False) -> Restored | None:
  """Restores the newest intact checkpoint (or a given step).

  Args:
    mngr: a `manager` or `reader` (None: no checkpoints, returns None).
    abstract_state: a state pytree (or ``jax.ShapeDtypeStruct`` tree) with the
      expected structure, shapes and shardings; or a function of the step's
      config dict that returns one; or None to read only the config.
    step: a specific step, or None for the newest one that is intact.
    quarantine: move damaged steps to ``<workdir>/checkpoints.damaged`` (the
      trainer only: readers never change a workdir).

  Returns:
    A `Restored`, or None when there is no checkpoint.

  Raises:
    CheckpointError: the given ``step`` does not exist or is damaged, or every
      checkpoint is damaged. The message names the file.
  """
  if mngr is None:
    if step is not None:
      raise CheckpointError(f"there is no checkpoint of step {step}")
    return None
  mngr.reload()
  if step is not None:
    if step not in mngr.all_steps():
      raise CheckpointError(
          f"{mngr.directory} has no checkpoint of step {step} (it has "
          f"{sorted(mngr.all_steps()) or 'none'})")
    return _restore_step(mngr, step, abstract_state)
  tried, damaged = set(), []
  while True:
    candidates = sorted(set(mngr.all_steps()) - tried, reverse=True)
    if not candidates:
      break
    s = candidates[0]
    tried.add(s)
    try:
      restored = _restore_step(mngr, s, abstract_state)
    except CheckpointError as e:
      if not os.path.isdir(os.path.join(str(mngr.directory), str(s))):
        mngr.reload()  # removed by the trainer's max_to_keep while we read
        continue
      where = f"; moved to {_quarantine(mngr, s)}" if quarantine else ""
      logging.warning("checkpoint %d is damaged and was skipped: %s%s", s, e,
                      where)
      damaged.append(str(e))
      continue
    if damaged:
      logging.warning("using checkpoint %d, the newest intact one", s)
    return restored
  if damaged:
    raise CheckpointError("every checkpoint is damaged: " + "; ".join(damaged))
  return None


def saved_config(workdir: str, step=None) -> dict | None:
  """The config dict stored with a workdir's newest intact checkpoint, or None.

  Reads only: a workdir without checkpoints is left as it is.
  """
  mngr = reader(workdir)
  if mngr is None:
    return None
  try:
    restored = restore(mngr, None, step)
  finally:
    mngr.close()
  return None if restored is None else restored.config
