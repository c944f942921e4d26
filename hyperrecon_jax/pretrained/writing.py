"""Writing a model folder from a training workdir: `export`, and what it records.

`export` stages the folder beside its destination and moves it into place
whole; ``info.json`` gets the test metrics (`summary`) and the first test
slices' scores (`check_scores`) that any machine can reproduce.
"""

from collections.abc import Callable
import contextlib
import hashlib
import json
import os
import re
import shutil

import flax.serialization
import flax.traverse_util
import jax
import numpy as np

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import checksums
from hyperrecon_jax import errors
from hyperrecon_jax import workdir_lock
from hyperrecon_jax.pretrained.loading import CONFIG_FILE
from hyperrecon_jax.pretrained.loading import FOLDER
from hyperrecon_jax.pretrained.loading import FORMAT
from hyperrecon_jax.pretrained.loading import INFO_DIGEST
from hyperrecon_jax.pretrained.loading import INFO_FILE
from hyperrecon_jax.pretrained.loading import WEIGHTS_FILE
from hyperrecon_jax.pretrained.loading import load
from hyperrecon_jax.pretrained.loading import names

CHECK_SLICES = 2  # test slices whose scores info.json records for `check_scores`
CHECK_METRICS = ("psnr", "ssim", "hfen")
MAX_NAME = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_new_name(name: str, folder: str = FOLDER) -> None:
  """Raises ``InputError`` unless ``name`` is a model's name free in ``folder``.

  A name is what a user types as ``--pretrained=NAME``: letters, digits,
  ``.``, ``_`` and ``-``, starting with a letter or digit, at most
  `MAX_NAME` characters (a staging folder's name adds about 25 to it).
  """
  if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
    raise errors.InputError(
        f"a model's name is up to {MAX_NAME} letters, digits, '.', '_' and '-', starting "
        f"with a letter or digit; got {name!r}")
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise errors.InputError(f"{folder} is a file: export into a folder (new or existing)")
  path = os.path.join(folder, name)
  if os.path.lexists(path):
    shipped = os.path.abspath(folder) == FOLDER
    what = (("is already shipped" if shipped else "is a model already")
            if name in names(folder) else "exists and is no model")
    raise errors.InputError(f"{path} {what}: delete it or choose another name")


def export(workdir: str, name: str, *, description: str, folder: str = FOLDER,
           step: int | None = None, extra: dict | None = None, unfinished: bool = False,
           score: Callable[[str], dict] | None = None) -> dict:
  """Writes a workdir's model into ``folder/name`` for shipping, all or nothing.

  The model is written into a temporary folder beside ``folder/name``, read
  back and checked there (`check_scores`, then ``score``), and renamed into
  place only when complete: an export that fails or is interrupted leaves no
  model folder behind.

  Args:
    workdir: a finished training run.
    name: the model's name (a folder name); ``folder/name`` must not exist.
    description: one paragraph: data, task, loss, training.
    folder: where to write (the package's own by default).
    step: which checkpoint (default: the newest intact one).
    extra: more fields for ``info.json``.
    unfinished: allow a run whose checkpoint is short of
      ``config.train.num_steps``.
    score: called with the temporary folder that holds the model (as
      ``load``'s ``folder``) before it is published; returns more fields for
      ``info.json`` (e.g. the test metrics of a report).

  Returns:
    The ``info.json`` written, with ``check`` (`check_scores` of the exported
    model).

  Raises:
    InputError: a bad name, an existing ``folder/name``, or an unfinished run.
  """
  from hyperrecon_jax import train
  check_new_name(name, folder)
  path = os.path.join(folder, name)
  config, model, variables, step = train.load_trained(workdir, step)
  if train.stack_lambdas(model):
    raise errors.InputError(f"{workdir} is {train.describe_model(config)}: a shipped model "
                            "is a HyperRecon model or a plain Unet")
  total = int(config.train.num_steps)
  if step < total and not unfinished:
    raise errors.InputError(
        f"{workdir} is at step {step} of config.train.num_steps={total}: finish its "
        "training (rerun its train.py command) or ship it unfinished on purpose "
        "(export_pretrained.py --unfinished)")
  # Its test slices are scored below (`check_scores`).
  train.check_data_folder(config, f"the run in {workdir}")
  # The trainer's dataset cache means nothing elsewhere: '' is the default.
  config.data.data_dir = ""
  half = jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(variables))
  # Parameters in float16 (half the bytes); BatchNorm statistics stay float32.
  _check_half_range(half["params"], workdir, step)
  half["params"] = jax.tree_util.tree_map(lambda x: x.astype(np.float16), half["params"])
  blob = flax.serialization.msgpack_serialize(half)
  config_bytes = (config.to_json(indent=2) + "\n").encode()
  with contextlib.ExitStack() as stack:
    try:
      # Removed again, when still empty, if the export fails.
      stack.enter_context(workdir_lock.made_folder(folder))
    except OSError as err:
      raise errors.InputError(f"{path}: cannot create the folder {folder} "
                              f"({err.strerror or err})") from None
    from hyperrecon_jax import outputs
    outputs.check_writable(path, folder)
    # What an export of this name killed by kill -9 left behind.
    atomic_writes.sweep_staging(folder, f".{name}.export-")
    staging = atomic_writes.staging_folder(folder, f".{name}.export-")
    try:
      staged = os.path.join(staging, name)
      os.mkdir(staged)
      atomic_writes.write_bytes(os.path.join(staged, CONFIG_FILE), config_bytes)
      atomic_writes.write_bytes(os.path.join(staged, WEIGHTS_FILE), blob)
      out = {"format": FORMAT, "name": name, "description": description,
             # Beside the step: a model exported --unfinished says so itself.
             "step": int(step), "num_steps": total, "sha256": hashlib.sha256(blob).hexdigest(),
             "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
             "bytes": len(blob), **(extra or {})}
      write_info(staged, out)  # `load` verifies the files against these digests
      # The scores of the model as shipped (float16 parameters), read back as a user loads it.
      out["check"] = check_scores(*load(name, folder=staging)[:3])
      check_finite_reconstructions(out["check"]["psnr"], out["check"]["lambdas"],
                                   f"{workdir} at step {step}", "its first test slices")
      if score is not None:
        out.update(score(staging))
      write_info(staged, out)
      if os.path.lexists(path):  # made meanwhile: never replaced
        raise errors.InputError(f"{path} appeared during the export: delete it or choose "
                                "another name")
      os.rename(staged, path)
    except OSError as err:  # a full disk, a folder made read-only meanwhile
      raise errors.InputError(f"{path}: the export failed and wrote nothing "
                              f"({err.strerror or err})") from None
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return out


def check_finite_reconstructions(psnr, lambdas, model: str, slices: str) -> None:
  """Refuses a model whose reconstructions are not finite, read from their PSNR.

  (`results.reconstructions_not_finite`.) Such a model passes the float16
  range check (its parameters are finite) when it overflows only on some
  inputs.

  Args:
    psnr: [S][G] per-slice PSNR, None or NaN where not finite (`results.floats`).
    lambdas: the G λ (lists of K − 1 values).
    model: what to call the model (the workdir and step).
    slices: what the S slices are.

  Raises:
    InputError: naming how many slices and the first λ.
  """
  from hyperrecon_jax import results
  bad = results.reconstructions_not_finite(psnr)
  if bad.any():
    lam = lambdas[int(np.flatnonzero(bad.any(axis=0))[0])]
    raise errors.InputError(
        f"{model}: the model's reconstructions are not finite (NaN, ±inf, or too large "
        f"for float32) on {int(bad.any(axis=1).sum())} of {len(bad)} of {slices}, first "
        f"at λ = {':'.join(f'{v:g}' for v in np.atleast_1d(lam))}: it diverged or "
        "overflows on these inputs; nothing was exported")


def _check_half_range(params, workdir: str, step: int) -> None:
  """Refuses parameters that float16 holds as ±inf (beyond 65504).

  Such a model would load and reconstruct NaN, with no word of why.
  """
  big = [(key, float(np.max(np.abs(value))))
         for key, value in flax.traverse_util.flatten_dict(params, sep="/").items()
         if np.size(value) and not np.all(np.abs(value) <= np.finfo(np.float16).max)]
  if big:
    key, value = big[0]
    more = f" (and {len(big) - 1} more)" if len(big) > 1 else ""
    what = f"reaches {value:.6g}" if np.isfinite(value) else "is not finite"
    raise errors.InputError(
        f"{workdir} at step {step}: parameter {key} {what}{more}; a shipped model stores its "
        f"parameters in float16 (at most {float(np.finfo(np.float16).max):g}), so it would "
        "load as inf or NaN and reconstruct NaN")


def scores_line(test: dict, input_name: str) -> str:
  """One line of an exported model's test scores, for the export to print.

  Args:
    test: ``info.json``'s ``test`` (`summary`), which holds every mean.
    input_name: what the model's input is called (`physics.input_name`).

  Returns:
    The split, its slices, the range of mean PSNR over λ (one value at one
    λ), the λ of the best, and the input's PSNR.
  """
  psnr = np.array([np.nan if v is None else v for v in test["mean"]["psnr"]], np.float64)
  best = int(np.nanargmax(psnr)) if np.isfinite(psnr).any() else None
  lam = test["lambdas"][best] if best is not None else None
  where = ("" if lam is None else
           f", best at λ = {':'.join(f'{v:.4g}' for v in np.atleast_1d(lam))}")
  number = lambda v: "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"
  lo, hi = (np.nanmin(psnr), np.nanmax(psnr)) if best is not None else (None, None)
  span = number(hi) if len(psnr) == 1 else f"{number(lo)}–{number(hi)}"
  return (f"{test['split']} split, {test['num_slices']} slices at {len(psnr)} λ: mean PSNR "
          f"{span} dB{where}; {input_name} "
          f"{number(test['zero_filled']['psnr'])} dB (every mean in info.json's test)")


def write_info(path: str, description: dict) -> None:
  """Writes a model folder's ``info.json`` (atomically), with the digest of its content."""
  content = {k: v for k, v in description.items() if k != INFO_DIGEST}
  atomic_writes.write_text(
      os.path.join(path, INFO_FILE),
      json.dumps({**content, INFO_DIGEST: checksums.json_digest(content)}, indent=1,
                 sort_keys=True) + "\n")


def summary(result: dict) -> dict:
  """The test metrics of a `report.run` result, for ``info.json``.

  Returns:
    ``{'split', 'num_slices', 'lambdas', 'mean': {psnr, ssim, hfen},
    'zero_filled': {...}, 'baselines': {'lambdas', 'mean', 'std'},
    'warnings': [...]}`` (baselines and warnings only when the result has
    them: e.g. per-λ Unets short of their training).
  """
  keep = ("psnr", "ssim", "hfen")
  out = {"split": result["split"], "num_slices": result["num_slices"],
         "lambdas": result["lambdas"],
         "mean": {m: result["mean"][m] for m in keep},
         "zero_filled": {m: result["zero_filled"]["mean"][m] for m in keep}}
  if "baselines" in result:
    out["baselines"] = {"lambdas": result["baselines"]["lambdas"],
                        **{stat: {m: result["baselines"][stat][m] for m in keep}
                           for stat in ("mean", "std")}}
  if result.get("warnings"):
    out["warnings"] = list(result["warnings"])
  return out


def check_lambdas(config) -> np.ndarray:
  """The λ `check_scores` uses: each loss term alone and all of them equally weighted.

  Returns:
    (K + 1, K − 1) λ: the K vertices of the coefficient simplex and its
    centroid (λ = 0, 1 and 0.5 for two terms); a plain Unet's own λ.
  """
  from hyperrecon_jax import hparams
  from hyperrecon_jax import train
  if not config.model.hyper_dim:
    return np.asarray([config.hparams.fixed], np.float32)
  k = train.num_coeffs(config)
  corners = np.vstack([np.eye(k), np.full((1, k), 1.0 / k)]).astype(np.float32)
  return np.asarray(hparams.lambdas_from_coefficients(corners), np.float32)


def check_scores(config, model, variables, *, num_slices: int = CHECK_SLICES) -> dict:
  """Per-slice test scores of a model on the first test slices, in full float32.

  Each slice gets the measurement noise the report gives it (`evaluate_grid`
  keys the noise by volume and slice). Matrix products and convolutions run
  at float32 precision also on GPUs (whose default for float32 is TF32), so
  that two machines differ by float32 roundoff alone.

  Args:
    config: the model's config (``config.data`` names the dataset).
    model: the model `load` returns.
    variables: its variables.
    num_slices: how many test slices, from the first.

  Returns:
    ``{'split': 'test', 'volume': [S], 'slice': [S], 'lambdas': [G][K − 1],
    'psnr': [S][G], 'ssim': [S][G], 'hfen': [S][G]}``, λ from `check_lambdas`.
  """
  from hyperrecon_jax import data
  from hyperrecon_jax import evaluate
  from hyperrecon_jax import physics
  from hyperrecon_jax import streams
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  batch = next(iter(data.batches(config.data, "test", batch_size=num_slices, training=False,
                                 num_threads=0)))
  lam = check_lambdas(config)
  with jax.default_matmul_precision("float32"):
    result = evaluate.evaluate_grid(model, variables, operator, [batch], lam,
                                    key=streams.key(config, "evaluation"))
  return {"split": "test", "volume": result["slices"]["volume"],
          "slice": result["slices"]["slice"], "lambdas": lam.tolist(),
          **{m: result["per_slice"][m] for m in CHECK_METRICS}}
