"""Checkpoints of a training run (orbax): train state, data position, config.

Each checkpoint is a step folder ``<workdir>/checkpoints/<step>`` holding the
train state, the input iterator's state (JSON) and the config the state was
trained with (JSON): the config travels with the weights, and everything that
reads a model takes its config from there.

Who may write: only the trainer, which holds the workdir's lock
(`hyperrecon_jax.workdir_lock`), opens a writing `manager` and calls `restore` with
``trainer=True``. Evaluation and every other reader use `reader`, which is
read-only: it creates nothing and never cleans up, so it cannot delete the
temporary folder of a save in progress.

Damage. Orbax writes a step into a temporary folder and renames it when
complete, so an interrupted save never looks finished. After the rename the
trainer records the checksums of the step's files, and before the save the
digests of its values (`hyperrecon_jax.checksums`), so that damage is found
before orbax reads a step. `restore` skips a damaged step with a warning that
names it and the file, and falls back to the newest intact one; the trainer
moves skipped steps to ``<workdir>/checkpoints.damaged/`` (nothing is deleted)
so it can save those step numbers again.

A step without ``checksums.json`` (a trainer killed between orbax's rename and
the checksums leaves one) is checked value by value against the digests
recorded before its save, by readers too (without writing). A step with
neither (an older version wrote it) is never used by readers, who fall back to
the newest verified step with a warning; the trainer accepts it if it restores
with finite values, and then records its checksums.
"""

from collections.abc import Callable
import contextlib
import json
import os
import re
import shutil
import sys
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from hyperrecon_jax import checksums
from hyperrecon_jax import errors
from hyperrecon_jax import orbax_noise
from hyperrecon_jax import workdir_lock

ITEMS = ("state", "data", "config")
DAMAGED_DIR = "checkpoints.damaged"


class CheckpointError(errors.Error, RuntimeError):
  """A checkpoint cannot be written or read; the message names the file."""


class UnverifiedCheckpointError(CheckpointError):
  """A step has no checksums and nothing else to verify it by; it is not used."""


class Restored(NamedTuple):
  """A restored checkpoint: its step, train state, data position and config."""
  step: int
  state: Any
  data_state: dict
  config: dict


def _warn(text: str) -> None:
  """A ``warning:`` line on stderr, as the commands print every warning of a run."""
  print(f"warning: {text}", file=sys.stderr)


def checkpoint_dir(workdir: str) -> str:
  """The absolute path of a run's ``checkpoints`` folder."""
  return os.path.abspath(os.path.join(workdir, "checkpoints"))


class _WritingManager(ocp.CheckpointManager):
  """Orbax's manager whose ``close`` also waits for its removal of temporary folders.

  Orbax removes the temporary folders of interrupted saves in a thread that
  only a save waits for. A process that saves nothing and ends right after
  ``close`` (the command line ends with ``os._exit``) would leave a folder
  half removed, and a second manager of the same folder opened in the same
  process would remove the same files at the same time, failing its first
  save with a FileNotFoundError.
  """

  def close(self):
    # Private in orbax (as of 0.12.8): looked up, so that an orbax without it
    # still closes; test_checkpoints fails there.
    wait = getattr(self, "_maybe_await_cleanup_tmp_directory", None)
    if wait is not None:
      wait()
    super().close()


def manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """The trainer's (writing) checkpoint manager for ``<workdir>/checkpoints``.

  Only the owner of the workdir's lock may open it: it creates the folder and
  removes the temporary folders of interrupted saves, in a thread of orbax's
  that the first save and ``close`` wait for (to list steps, use `reader`).

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
  return _WritingManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


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
  with orbax_noise.read_only_notice_hidden():
    return ocp.CheckpointManager(path, options=options, item_names=ITEMS)


@jax.jit
def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _workdir(mngr) -> str:
  return os.path.dirname(str(mngr.directory))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state,
         config) -> None:
  """Saves the state, the data position and the config at ``step``.

  The data position is a JSON object; the training loop stores the examples of
  the training stream its run has read (``{"examples": N}``).

  Process 0 first records the digests of the values in
  ``<workdir>/checkpoints.pending.json`` and, after orbax has finished the
  step, its checksums; then it removes the digests.

  Raises:
    CheckpointError: the state holds NaN or ±Inf (nothing is written: a
      checkpoint is always a state that training can go on from).
    OSError: a file of the step could not be written (a full disk, a quota):
      the step stays an unfinished temporary folder, which readers ignore and
      the next trainer removes; the earlier steps are intact.
  """
  if not bool(jax.device_get(_all_finite(state))):
    raise CheckpointError(f"refusing to write checkpoint {step} to "
                          f"{mngr.directory}: the state holds NaN or ±Inf")
  data_state = data_state if data_state is not None else {}
  config_dict = json.loads(config.to_json())
  primary = workdir_lock.is_primary()
  if primary:
    checksums.record_pending(_workdir(mngr), step, {
        "state": checksums.state_digest(state),
        "data": checksums.json_digest(data_state),
        "config": checksums.json_digest(config_dict)})
  orbax_noise.hide_failed_writes()
  try:
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config_dict)), force=True)
    mngr.wait_until_finished()
  except Exception as e:
    failure = _write_failure(e, step, mngr)
    if failure is None:
      raise
    raise failure from e
  if primary:
    checksums.write(os.path.join(str(mngr.directory), str(step)))
    checksums.clear_pending(_workdir(mngr))


def _write_failure(error: BaseException, step: int, mngr) -> OSError | None:
  """The OSError a failed save stands for, naming the step; None for a failure of another kind.

  tensorstore reports a failed write (ENOSPC, EFBIG, EDQUOT, ...) as a
  ValueError whose text carries the system's error code, and orbax's own
  writes raise the OSError itself; the command line reports an OSError as the
  environment's problem in one line, where a ValueError was a traceback of
  hundreds of lines.
  """
  number = next((e.errno for e in (error, error.__cause__, error.__context__)
                 if isinstance(e, OSError) and e.errno), None)
  if number is None:
    code = re.search(r"os_error_code='?(\d+)", str(error))
    if code is None:
      return None
    number = int(code.group(1))
  return OSError(number, f"checkpoint {step} could not be written to {mngr.directory}: "
                 f"{os.strerror(number)} ({_one_line(error)}); the checkpoints before it are "
                 "intact, and the same command resumes from the newest once the cause is "
                 "fixed")


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return text[:300] + ("…" if len(text) > 300 else "")


# What orbax and tensorstore raise for missing, truncated or unparsable files
# (JSON, msgpack, OCDBT manifests, compressed array chunks).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError)


def _read(step_dir: str, read: Callable[[], Any]):
  # Before the read: with older orbax the remains of a failed read are logged
  # while the restore still runs.
  orbax_noise.hide_abandoned_reads()
  try:
    return read()
  except Exception as e:
    # orbax re-raises tensorstore's error for an array it cannot decode (e.g.
    # a damaged zstd frame) as a bare Exception caused by it.
    if not isinstance(e, _READ_ERRORS) and not isinstance(e.__cause__, _READ_ERRORS):
      raise
    raise CheckpointError(f"{step_dir} cannot be read ({_one_line(e)})") from e


@contextlib.contextmanager
def _records_as_damage():
  """A step's record that cannot be read, or a file that differs from it, as damage."""
  try:
    yield
  except checksums.RecordError as e:
    raise CheckpointError(str(e)) from None


def _unverified(step_dir: str) -> UnverifiedCheckpointError:
  return UnverifiedCheckpointError(
      f"{step_dir} has no {checksums.CHECKSUMS} (its save was cut short, or an "
      "older version wrote it) and nothing else to verify it by; running the training command "
      "again on this workdir verifies it")


def _changed(step_dir: str, item: str, mngr) -> CheckpointError:
  return CheckpointError(
      f"{os.path.join(step_dir, item)} differs from what was saved (its SHA-256 "
      f"recorded in {checksums.pending_path(_workdir(mngr))}): changed on disk before "
      "its checksums were written")


def _placed(abstract_state):
  """``ShapeDtypeStruct``s of the state, each with the sharding to restore it to.

  A leaf without a sharding (e.g. from ``jax.eval_shape``) is restored
  replicated on every device (``jax.devices()``). Otherwise orbax takes the sharding
  stored in the checkpoint, and a checkpoint written by a run of several
  processes would not load on one (a topology mismatch).
  """
  replicated = None

  def place(leaf):
    nonlocal replicated
    struct = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(struct, "sharding", None) is not None:
      return struct
    if replicated is None:
      mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("replica",))
      replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=replicated)
  return jax.tree_util.tree_map(place, abstract_state)


def _restore_step(mngr, step: int, abstract_state, trainer: bool):
  step_dir = os.path.join(str(mngr.directory), str(step))
  with _records_as_damage():
    checked = checksums.verify(step_dir)
    digests = None if checked else checksums.pending(_workdir(mngr), step, ITEMS)
    if not checked and digests is None:
      # The trainer writes the checksums before it removes the digests: a save
      # may have finished between the two looks.
      checked = checksums.verify(step_dir)
  if not checked and digests is None and not trainer:
    raise _unverified(step_dir)
  config = _read(step_dir, lambda: mngr.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore()))["config"])
  if not isinstance(config, dict):
    raise CheckpointError(f"{step_dir}: the stored config is not a JSON object")
  if digests is not None and checksums.json_digest(config) != digests["config"]:
    raise _changed(step_dir, "config", mngr)
  # Outside `_read`: an error of the caller's (e.g. an incompatible config)
  # is not damage.
  if callable(abstract_state):
    abstract_state = abstract_state(config)
  if abstract_state is None:
    if not checked and digests is None:
      raise _unverified(step_dir)  # its state, unread, cannot vouch for it
    return Restored(step, None, {}, config)
  abstract = _placed(abstract_state)
  out = _read(step_dir, lambda: mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      data=ocp.args.JsonRestore())))
  if not isinstance(out["data"], dict):
    raise CheckpointError(f"{step_dir}: the data position is not a JSON object")
  if digests is not None:
    if checksums.state_digest(out["state"]) != digests["state"]:
      raise _changed(step_dir, "state", mngr)
    if checksums.json_digest(out["data"]) != digests["data"]:
      raise _changed(step_dir, "data", mngr)
  elif not checked and not bool(jax.device_get(_all_finite(out["state"]))):
    raise CheckpointError(f"{step_dir} has no {checksums.CHECKSUMS} and its state holds "
                          "NaN or ±Inf")
  if not checked and trainer and workdir_lock.is_primary():
    checksums.write(step_dir)
    checksums.clear_pending(_workdir(mngr), step)
    how = ("its values match the digests recorded before its save" if digests is not None
           else "it restores with finite values")
    _warn(f"checkpoint {step} had no {checksums.CHECKSUMS}; {how}, and its checksums are "
          "now recorded")
  return Restored(step, out["state"], out["data"], config)


def _quarantine(mngr, step: int) -> str:
  src = os.path.join(str(mngr.directory), str(step))
  root = os.path.join(_workdir(mngr), DAMAGED_DIR)
  os.makedirs(root, exist_ok=True)
  dst, n = os.path.join(root, str(step)), 1
  while os.path.exists(dst):
    dst, n = os.path.join(root, f"{step}.{n}"), n + 1
  shutil.move(src, dst)
  checksums.clear_pending(_workdir(mngr), step)
  mngr.reload()
  return dst


def quarantined(workdir: str) -> list[str]:
  """The step folders the trainer moved to ``<workdir>/checkpoints.damaged``."""
  root = os.path.join(workdir, DAMAGED_DIR)
  if not os.path.isdir(root):
    return []
  key = lambda name: tuple(int(p) if p.isdigit() else 0 for p in name.split("."))
  return sorted(os.listdir(root), key=key)


def restore(mngr: ocp.CheckpointManager | None,
            abstract_state: Any | Callable[[dict], Any] = None, step=None, *,
            trainer: bool = False) -> Restored | None:
  """Restores the newest intact checkpoint (or a given step).

  Args:
    mngr: a `manager` or `reader` (None: no checkpoints, returns None).
    abstract_state: a state pytree (or ``jax.ShapeDtypeStruct`` tree) with the
      expected structure, shapes and shardings; or a function of the step's
      config dict that returns one; or None to read only the config.
    step: a specific step, or None for the newest one that is intact.
    trainer: the caller is the workdir's trainer (on every process of a
      multi-host run). It accepts a step that has neither checksums nor
      recorded digests if its state restores with finite values, and on
      process 0 it records the checksums of each step it verified that way or
      by its digests, and moves damaged steps to ``<workdir>/checkpoints.damaged``.
      Readers never change a workdir.

  Returns:
    A `Restored`, or None when there is no checkpoint.

  Raises:
    CheckpointError: the given ``step`` does not exist, is damaged or cannot
      be verified, or no checkpoint can be used. The message names the file.
  """
  if mngr is None:
    if step is not None:
      raise CheckpointError(f"there is no checkpoint of step {step}")
    return None
  mngr.reload()
  primary = trainer and workdir_lock.is_primary()
  if step is not None:
    if step not in mngr.all_steps():
      raise CheckpointError(
          f"{mngr.directory} has no checkpoint of step {step} (it has "
          f"{sorted(mngr.all_steps()) or 'none'})")
    return _restore_step(mngr, step, abstract_state, trainer)
  if primary:
    checksums.drop_stale_pending(_workdir(mngr), mngr.all_steps())
  tried, damaged, unverified = set(), [], []
  while True:
    candidates = sorted(set(mngr.all_steps()) - tried, reverse=True)
    if not candidates:
      break
    s = candidates[0]
    tried.add(s)
    try:
      restored = _restore_step(mngr, s, abstract_state, trainer)
    except UnverifiedCheckpointError as e:
      _warn(f"checkpoint {s} was skipped: {e}")
      unverified.append(str(e))
      continue
    except CheckpointError as e:
      if not os.path.isdir(os.path.join(str(mngr.directory), str(s))):
        mngr.reload()  # removed by the trainer's max_to_keep while we read
        continue
      where = f"; moved to {_quarantine(mngr, s)}" if primary else ""
      _warn(f"checkpoint {s} is damaged and was skipped: {e}{where}")
      damaged.append(str(e))
      continue
    if damaged or unverified:
      _warn(f"using checkpoint {s}, the newest intact one")
    return restored
  if unverified:
    raise CheckpointError("every checkpoint is damaged or unverified: "
                          + "; ".join(damaged + unverified))
  if damaged:
    moved = (f" and was moved to {os.path.join(_workdir(mngr), DAMAGED_DIR)} (running the "
             "command again starts training again from step 0)" if primary else "")
    raise CheckpointError(f"every checkpoint is damaged{moved}: " + "; ".join(damaged))
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
