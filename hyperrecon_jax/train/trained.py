"""Loading a trained run back from its workdir (read-only)."""

import json
import os

import jax
import ml_collections

from hyperrecon_jax import checkpoints
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import locations
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import state as state_lib


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir's model was trained with.

  That is the config stored with its newest intact checkpoint; a workdir
  without checkpoints (a run that has not saved yet) falls back to its
  ``config.json``. Fields added since an older version wrote it get their
  compatible values (`configuration.from_stored`).

  Raises:
    FileNotFoundError: the workdir has neither.
    ConfigError: ``config.json`` is not a valid config.
  """
  stored = checkpoints.saved_config(workdir)
  if stored is not None:
    return configuration.from_stored(stored)
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir!r} the "
                            "--workdir of a training run?")
  try:
    with open(path) as f:
      return configuration.from_stored(json.load(f))
  except (json.JSONDecodeError, TypeError) as e:
    raise configuration.ConfigError(f"{path} is not a valid config ({e})") from None


def not_a_folder(workdir: str) -> str | None:
  """Why ``workdir`` cannot be a training run's folder (a file, or nothing), or None."""
  if os.path.isdir(workdir):
    return None
  if os.path.exists(workdir):
    return f"{workdir!r} is a file: give the --workdir of a training run (its folder)"
  return f"{workdir!r} does not exist: give the --workdir of a training run"


def check_data_folder(config: ml_collections.ConfigDict, where: str) -> None:
  """Refuses, for a reader of a trained model, a data folder that is gone.

  A model of a folder dataset (``nifti``, ``fastmri_knee``) learned from the
  volumes of ``config.data.manual_dir``; its splits are scored and shown from
  that folder. A folder moved or deleted since is told as such, with how to
  go on, rather than with the dataset's instructions for a first download.
  A new training run's missing folder keeps those (`hyperrecon_jax.data`).

  Args:
    config: the model's config (`load_trained`, `hyperrecon_jax.pretrained.load`).
    where: the model, in words (``"the run in /path"``).

  Raises:
    DataError: ``config.data.manual_dir`` is set but is no folder.
  """
  from hyperrecon_jax.data import split_record
  folder = locations.absolute_folder(config.data.get("manual_dir", ""))
  if config.data.name not in split_record.BY_VOLUME or not folder or os.path.isdir(folder):
    return
  if os.path.islink(folder):
    what = f"is a symbolic link to {os.readlink(folder)}, which is no folder"
  elif os.path.lexists(folder):
    what = "is no folder"
  else:
    what = "no longer exists"
  raise data_errors.DataError(
      f"{where} learned from the {config.data.name} folder {folder}, which {what}: put "
      f"the folder back there, or link it there (ln -s NEW_PLACE {folder}), to score or "
      "show the model's splits")


def load_trained(workdir: str, step: int | None = None, *,
                 strategy: str | None = None):
  """Restores a workdir's model for inference, with the config it was trained with.

  Reads only (a run that is still training can be loaded): the newest intact
  checkpoint, or ``step``; its model is built from the config stored with it,
  whatever ``config.json`` says now.

  Args:
    workdir: the training run's folder.
    step: which checkpoint; the newest intact one when None.
    strategy: per-sample strategy of the returned model (default: the
      config's).

  Returns:
    ``(config, model, variables, step)``; ``model.apply(variables, zf,
    coeffs)`` reconstructs (`state.build_model` says how models are called).
    With ``$HYPERRECON_DATA_DIR`` set, ``config.data.data_dir`` is it (a
    machine's setting), else the one the run was trained with.

  Raises:
    FileNotFoundError: the workdir holds no checkpoint.
    CheckpointError: the checkpoint (or every one) is damaged.
  """
  built = {}

  def abstract(stored):
    config = configuration.from_stored(stored)
    model = state_lib.build_model(config, strategy=strategy)
    built.update(config=config, model=model)
    return jax.eval_shape(
        lambda: state_lib.create_state(config, model, jax.random.key(0)))

  mngr = checkpoints.reader(workdir)
  try:
    restored = checkpoints.restore(mngr, abstract, step)
  finally:
    if mngr is not None:
      mngr.close()
  if restored is None:
    where = os.path.join(workdir, "checkpoints")
    if os.path.isfile(os.path.join(workdir, "segmenter.json")):
      raise FileNotFoundError(
          f"{workdir!r} holds a segmenter (experiments/segmenter.py), not a training run: "
          "evaluate.py takes it as --config.evals.lambda_set.segmenter, explore.py as "
          "--segmenter")
    from hyperrecon_jax import pretrained
    if os.path.isfile(os.path.join(workdir, pretrained.INFO_FILE)) and os.path.isfile(
        os.path.join(workdir, pretrained.WEIGHTS_FILE)):
      raise FileNotFoundError(
          f"{workdir!r} holds an exported model (export_pretrained.py), not a training run: "
          f"give it as --pretrained={workdir}")
    from hyperrecon_jax import workdir_lock
    owner = workdir_lock.live_owner(workdir) if os.path.isdir(workdir) else None
    if owner is not None:
      raise FileNotFoundError(f"{where} holds no checkpoint yet: {workdir} is being trained "
                              f"by {owner}; wait for its first checkpoint")
    from hyperrecon_jax import run_paths
    run = run_paths.run_holding(workdir) if os.path.isdir(workdir) else None
    if run is not None:
      # Its eval/, checkpoints/ or a step's folder, given for the run.
      step_folder = os.path.relpath(os.path.realpath(workdir), run).split(os.sep)
      at = (f" (its checkpoint {step_folder[1]} is --step={step_folder[1]} of evaluate.py, "
            "reconstruct.py and explore.py)" if len(step_folder) == 2 and step_folder[0]
            == "checkpoints" and step_folder[1].isdigit() else "")
      raise FileNotFoundError(
          f"{workdir} is a folder inside the training run {run}, not a run: give "
          f"--workdir={run}{at}")
    raise FileNotFoundError(
        f"{where} holds no checkpoint: train first (experiments/train.py, or "
        "hyperrecon_jax.train.train_and_evaluate)"
        if os.path.isdir(workdir) else not_a_folder(workdir))
  config = built["config"]
  if os.environ.get(locations.DATA_DIR_ENV):
    # Where this machine keeps built datasets, not where the training machine
    # did: a workdir moved elsewhere (or read-only there) builds here.
    config.data.data_dir = locations.default_data_dir()
  return config, built["model"], restored.state.variables(), restored.step
