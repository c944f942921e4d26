"""A model folder's files, and loading one: `names`, `info`, `load`.

A folder holds ``config.json``, ``weights.msgpack`` and ``info.json``
(`hyperrecon_jax.pretrained`); every load checks the three digests and the
shape of every stored variable against the model the config builds.
"""

import hashlib
import json
import os

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import checksums
from hyperrecon_jax import errors

FOLDER = os.path.dirname(os.path.abspath(__file__))
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.msgpack"
INFO_FILE = "info.json"
FORMAT = "hyperrecon_jax.pretrained/1"
# The digest of info.json's own content: the scores that `check_scores`
# compares and the weights' and config's SHA-256 travel in it, so an edit would
# silently change what the model claims or what vouches for it.
INFO_DIGEST = "info_sha256"


def names(folder: str = FOLDER) -> list[str]:
  """The shipped models, sorted."""
  return sorted(n for n in os.listdir(folder)
                if os.path.isfile(os.path.join(folder, n, INFO_FILE)))


def info(name: str, folder: str = FOLDER) -> dict:
  """A model's ``info.json``: how it was trained and what it scores (``name`` as in `load`)."""
  path = os.path.join(_path(name, folder), INFO_FILE)
  try:
    with open(path) as f:
      out = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.InputError(f"{path}: not a readable model description ({e})") from None
  if not isinstance(out, dict) or out.get("format") != FORMAT:
    found = out.get("format") if isinstance(out, dict) else type(out).__name__
    raise errors.InputError(f"{path}: format {found!r}, expected {FORMAT!r}")
  stored = out.pop(INFO_DIGEST, None)
  # Without it, deleting the key would switch the check off.
  if stored is None:
    raise errors.InputError(f"{path}: it holds no digest of its content ({INFO_DIGEST}): it "
                            "was edited, or exported before models recorded one; "
                            f"{_remedy(os.path.dirname(path), folder)}")
  if stored != checksums.json_digest(out):
    raise errors.InputError(f"{path}: its content differs from the digest it was written with "
                            f"({INFO_DIGEST}): it was edited or damaged; "
                            f"{_remedy(os.path.dirname(path), folder)}")
  return out


def _remedy(path: str, folder: str) -> str:
  """What restores a damaged model: the package's own, or an export of one's own."""
  if os.path.dirname(os.path.abspath(path)) == os.path.abspath(FOLDER) == os.path.abspath(folder):
    return "reinstall the package"
  return ("export the model again (experiments/export_pretrained.py, or "
          "hyperrecon_jax.pretrained.export)")


def _path(name: str, folder: str) -> str:
  """The folder of model ``name`` of ``folder``, or ``name`` itself when it is a model's folder.

  A model exported elsewhere (`export`'s ``folder``) is given by its folder,
  e.g. ``--pretrained=exports/my_model``; a shipped name is looked up first.
  """
  if isinstance(name, str) and name in names(folder):
    return os.path.join(folder, name)
  if isinstance(name, str) and os.path.isfile(os.path.join(name, INFO_FILE)):
    return os.path.abspath(name)
  if isinstance(name, str) and os.path.isdir(name):
    # A folder of another kind is named for what it holds, as
    # `train.load_trained` names an exported model given as a workdir.
    if os.path.isfile(os.path.join(name, "segmenter.json")):
      raise errors.InputError(
          f"{name!r} holds a segmenter (experiments/segmenter.py), not an exported model: "
          "evaluate.py takes it as --config.evals.lambda_set.segmenter, explore.py as "
          "--segmenter")
    if os.path.isdir(os.path.join(name, "checkpoints")):
      raise errors.InputError(f"{name!r} holds a training run, not an exported model: give "
                              f"it as --workdir={name}")
    if os.path.isfile(os.path.join(name, WEIGHTS_FILE)):
      raise errors.InputError(f"{os.path.join(name, INFO_FILE)} is missing: the folder holds "
                              f"a model's {WEIGHTS_FILE} without its description; "
                              f"{_remedy(name, folder)}")
  raise errors.InputError(
      f"no pretrained model {name!r}: the package ships {names(folder)}, and {name!r} is "
      f"no folder of an exported model (one holding {INFO_FILE}, written by "
      "experiments/export_pretrained.py or hyperrecon_jax.pretrained.export)")


def load(name: str, *, folder: str = FOLDER, strategy: str | None = None):
  """Loads a shipped or exported model, as `train.load_trained` loads a workdir's.

  Args:
    name: one of `names(folder)`, or the folder of a model exported elsewhere.
    folder: where the models are (the package's own by default).
    strategy: per-sample strategy of the returned model (default: the
      config's).

  Returns:
    ``(config, model, variables, step)``, the parameters cast to float32.

  Raises:
    ValueError: an unknown name; a damaged file (the SHA-256 of the weights or
      of the config differs from the one in ``info.json``, or ``info.json``
      records none for the config); weights whose variables do not fit the
      model of the config.
  """
  from hyperrecon_jax import train
  path = _path(name, folder)
  description = info(name, folder)
  weights = os.path.join(path, WEIGHTS_FILE)
  config_path = os.path.join(path, CONFIG_FILE)
  try:
    with open(weights, "rb") as f:
      blob = f.read()
    with open(config_path, "rb") as f:
      config_bytes = f.read()
  except OSError as e:
    raise errors.InputError(f"{path}: not a readable model ({e})") from None
  info_path = os.path.join(path, INFO_FILE)
  for file, data, key in ((weights, blob, "sha256"), (config_path, config_bytes, "config_sha256")):
    if key not in description:
      raise errors.InputError(f"{info_path} records no SHA-256 of {os.path.basename(file)} "
                              f"(no {key!r}), so {file} cannot be verified; export the "
                              "model again")
    if hashlib.sha256(data).hexdigest() != description[key]:
      raise errors.InputError(f"{file} is damaged: its SHA-256 differs from the one in "
                              f"{INFO_FILE}; {_remedy(path, folder)}")
  try:
    config = train.from_stored(json.loads(config_bytes))
  except train.ConfigError as e:  # its extensions: the file itself is sound (its digest held)
    raise train.ConfigError(f"{config_path}: {e}") from None
  except ValueError as e:
    raise errors.InputError(f"{config_path}: not a readable model config ({e})") from None
  model = train.build_model(config, strategy=strategy)
  template = jax.eval_shape(
      lambda: train.create_state(config, model, jax.random.key(0)).variables())
  try:
    stored = flax.serialization.msgpack_restore(blob)
  except ValueError as e:
    raise errors.InputError(f"{weights}: not readable weights ({e})") from None
  _check_shapes(weights, config_path, flax.serialization.to_state_dict(template), stored)
  variables = flax.serialization.from_state_dict(template, stored)
  variables = jax.tree_util.tree_map(
      lambda t, v: jnp.asarray(np.asarray(v), t.dtype), template, variables)
  step = description.get("step")
  if isinstance(step, bool) or not isinstance(step, int) or step < 0:
    # Its digest holds (the check above), so written so by hand, digest and all.
    raise errors.InputError(f"{info_path}: 'step' must be the checkpoint's step, a whole "
                            f"number ≥ 0, got {step!r}; export the model again")
  return config, model, variables, step


def _check_shapes(weights: str, config_path: str, template: dict, stored) -> None:
  """Raises ``InputError`` naming the first variable that does not fit the model."""
  if not isinstance(stored, dict):
    raise errors.InputError(f"{weights}: not a dict of variables")
  want = flax.traverse_util.flatten_dict(template, sep="/")
  got = flax.traverse_util.flatten_dict(stored, sep="/")
  problems = [f"{key} is missing" for key in sorted(want.keys() - got.keys())]
  problems += [f"{key} has shape {tuple(np.shape(got[key]))}, the model needs "
               f"{tuple(want[key].shape)}" for key in sorted(want.keys() & got.keys())
               if tuple(np.shape(got[key])) != tuple(want[key].shape)]
  problems += [f"{key} is not a variable of the model"
               for key in sorted(got.keys() - want.keys())]
  if problems:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise errors.InputError(f"{weights} does not fit the model of {config_path}: "
                            f"{problems[0]}{more}")
