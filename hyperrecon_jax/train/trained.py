"""Loading a trained run back from its workdir."""

import json
import os

import jax
import ml_collections

from hyperrecon_jax import checkpoints
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import state as state_lib


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (``config.json``).

  Raises:
    FileNotFoundError: the workdir has no ``config.json``.
    ConfigError: the file is not a valid config.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir!r} the "
                            "--workdir of a training run?")
  try:
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (json.JSONDecodeError, TypeError) as e:
    raise configuration.ConfigError(f"{path} is not a valid config ({e})")
  return config


def load_trained(workdir: str, step: int | None = None, *,
                 strategy: str | None = None):
  """Restores a workdir's model for inference.

  Args:
    workdir: the training run's folder.
    step: which checkpoint; the latest when None.
    strategy: per-sample strategy of the returned model (default: the
      config's).

  Returns:
    ``(config, model, variables, step)``; ``model.apply(variables, zf,
    coeffs, train=False)`` reconstructs.

  Raises:
    FileNotFoundError: no config or no checkpoint in the workdir.
  """
  config = load_config(workdir)
  model = state_lib.build_model(config, strategy=strategy)
  abstract = jax.eval_shape(
      lambda: state_lib.create_state(config, model, jax.random.key(0)))
  mngr = checkpoints.manager(workdir)
  try:
    restored = checkpoints.restore(mngr, abstract, step)
  finally:
    mngr.close()
  if restored is None:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint: train "
                            "first (experiments/train.py)")
  step, state, _, _ = restored
  return config, model, state.variables(), step
