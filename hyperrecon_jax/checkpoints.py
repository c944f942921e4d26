"""Checkpoints of a training run (orbax): train state, data position, config.

Each checkpoint is a step folder under ``<workdir>/checkpoints`` holding the
train state, the input iterator's state (JSON) and the config (JSON). Orbax
writes to a temporary folder and renames it when complete, so an interrupted
save never leaves a checkpoint that a later run would load.
"""

import json
import os

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  """A checkpoint manager for ``<workdir>/checkpoints`` (saves synchronously).

  Args:
    workdir: the run's folder.
    max_to_keep: number of most recent checkpoints kept.

  Returns:
    An ``orbax.checkpoint.CheckpointManager``.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")), options=options,
      item_names=("state", "data", "config"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state,
         config) -> None:
  """Saves the state, the data iterator state and the config at ``step``."""
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state if data_state is not None else {}),
      config=ocp.args.JsonSave(json.loads(config.to_json()))), force=True)
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, abstract_state, step=None):
  """Restores ``(step, state, data_state, config_dict)`` or ``None``.

  Args:
    mngr: the manager.
    abstract_state: a state pytree (or ``jax.ShapeDtypeStruct`` tree) with the
      expected structure, shapes and shardings.
    step: which step; the latest when ``None``.

  Returns:
    A tuple, or ``None`` when the workdir has no checkpoint.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                    abstract_state)
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      data=ocp.args.JsonRestore(),
      config=ocp.args.JsonRestore()))
  return step, out["state"], out["data"], out["config"]


def load_config(workdir: str, step=None):
  """The config dict stored with a workdir's (latest) checkpoint, or None.

  Reads only: a workdir without checkpoints is left as it is.
  """
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  mngr = manager(workdir)
  try:
    step = mngr.latest_step() if step is None else step
    if step is None:
      return None
    return mngr.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]
  finally:
    mngr.close()
