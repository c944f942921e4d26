"""Writing reconstructions: NIfTI or fastMRI ``.h5`` files and a JSON sidecar.

`write` takes a `hyperrecon_jax.reconstruct.volume` result and writes, for a
NIfTI input, a NIfTI volume with the input's affine and header (3-D for one
λ, 4-D with λ last for several), or, for a fastMRI ``.h5`` input, an ``.h5``
file with the ``reconstruction_hyperrecon`` dataset; beside it a JSON sidecar
(`sidecar_path`) with the input, the model, the λ values and the seed, and,
when the zero-filled input is saved, that too (`input_path`, or the
``zero_filled`` dataset of the ``.h5`` file). `output_paths` lists every file
a write creates and `check_outputs` refuses existing ones unless overwriting
is asked for, and folders that cannot be written in, so a caller can check
before any work. Each file is written beside its destination and renamed into
place (atomically), so an interrupted write leaves no half-written output.
The values are written in the result's ``dtype`` (float32 unless asked
otherwise; integer NIfTI types are scaled to the output's range by the
header's slope and intercept).

`hyperrecon_jax.reconstruct` re-exports the public functions here.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.data import common

if TYPE_CHECKING:  # for annotations only: reconstruct imports this module
  from hyperrecon_jax.reconstruct import Scan

NIFTI_SUFFIXES = (".nii.gz", ".nii")
H5_SUFFIXES = (".h5",)
H5_DATASET = "reconstruction_hyperrecon"
H5_INPUT_DATASET = "zero_filled"


def input_path(output: str) -> str:
  """Where ``--save_input`` writes the zero-filled input of a NIfTI output."""
  for suffix in NIFTI_SUFFIXES:
    if output.endswith(suffix):
      return output[:-len(suffix)] + "_zero_filled" + suffix
  raise errors.InputError(f"{output}: a NIfTI output must end in .nii or .nii.gz")


def sidecar_path(output: str) -> str:
  """The JSON sidecar beside an output: its name without the suffix, + .json."""
  for suffix in NIFTI_SUFFIXES + H5_SUFFIXES:
    if output.endswith(suffix):
      return output[:-len(suffix)] + ".json"
  raise errors.InputError(f"{output}: the output must end in .nii, .nii.gz or .h5")


def output_paths(scan_kind: str, output: str, save_input: bool) -> list[str]:
  """Every file `write` creates for this output (checked before any work)."""
  if scan_kind == "nifti" and not output.endswith(NIFTI_SUFFIXES):
    raise errors.InputError(
        f"--output={output}: a NIfTI input gives a NIfTI output (.nii or .nii.gz)")
  if scan_kind == "h5" and not output.endswith(H5_SUFFIXES):
    raise errors.InputError(f"--output={output}: a fastMRI input gives an .h5 output")
  paths = [output, sidecar_path(output)]
  if save_input and scan_kind == "nifti":
    paths.append(input_path(output))
  return paths


def check_outputs(paths: Sequence[str], overwrite: bool) -> None:
  """Refuses outputs that exist (unless ``overwrite``) or whose folder is missing or read-only."""
  probed = set()
  for p in paths:
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
      raise errors.InputError(f"{p}: the folder {folder} does not exist")
    if os.path.exists(p) and not overwrite:
      raise errors.InputError(f"{p} exists; give --overwrite to replace it")
    if folder not in probed:
      _check_writable(p, folder)
      probed.add(folder)


def _check_writable(path: str, folder: str) -> None:
  """Refuses a folder in which a file cannot be created.

  A file is created and removed: the permission bits alone do not tell (a
  read-only mount, an ACL, or root, whom they do not bind).
  """
  try:
    fd, probe = tempfile.mkstemp(prefix=".hyperrecon-", suffix=".probe", dir=folder)
  except OSError as err:
    raise errors.InputError(f"{path}: cannot write in the folder {folder} "
                            f"({err.strerror or err})") from None
  os.close(fd)
  os.remove(probe)


def write(result: dict, output: str, *, model: str = "", overwrite: bool = False) -> list[str]:
  """Writes a `reconstruct.volume` result: the output, its sidecar, the input if saved.

  NIfTI: a 3-D volume for one λ, 4-D (λ last) for several, with the input's
  affine and header, the λ values in the header's description as far as its
  80 characters allow. ``.h5``: ``reconstruction_hyperrecon``
  (S, H, W) for one λ, (L, S, H, W) for several, and ``zero_filled`` if
  saved; the λ values in its attributes. Each file is written beside its
  destination and renamed into place, so an interrupted write leaves no
  half-written output. Values are of ``result['dtype']`` (default float32).

  Returns:
    The paths written.
  """
  scan = result["scan"]
  save_input = result["zero_filled"] is not None
  paths = output_paths(scan.kind, output, save_input)
  check_outputs(paths, overwrite)
  lam_text = ",".join(":".join(f"{v:g}" for v in lam) for lam in result["lambdas"])
  dtype = np.dtype(result.get("dtype", "float32"))
  recon = result["recon"]
  if not isinstance(recon, np.ndarray):
    recon = np.stack(recon)  # a list of L volumes
  if len(recon) == 1:
    recon = recon[0]
  elif scan.kind == "nifti":
    recon = np.moveaxis(recon, 0, -1)  # a view: λ last, without a copy
  if scan.kind == "nifti":
    _write_nifti(scan, recon, output, f"hyperrecon lam={lam_text}", dtype)
    if save_input:
      _write_nifti(scan, result["zero_filled"], input_path(output),
                   "hyperrecon zero-filled input", dtype)
  else:
    _write_h5(scan, recon, result, output, lam_text, dtype)
  sidecar = {
      "input": os.path.abspath(scan.path),
      "model": model,
      "lambdas": result["lambdas"].tolist(),
      "lambda_axis": ("last (4th) axis" if scan.kind == "nifti" else "first axis")
      if len(result["recon"]) > 1 else None,
      "seed": result["seed"],
      "intensity_scale": scan.scale,
      "dtype": dtype.name,
      "zero_filled": input_path(output) if save_input and scan.kind == "nifti" else (
          H5_INPUT_DATASET if save_input else None),
  }
  _atomic(sidecar_path(output), lambda tmp: _write_json(tmp, sidecar))
  return paths


def _write_json(path, value):
  with open(path, "w") as f:
    json.dump(value, f, indent=1)
    f.write("\n")


def _atomic(path: str, write_fn) -> None:
  folder, name = os.path.split(os.path.abspath(path))
  suffix = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
  tmp = os.path.join(folder, f".{name}.partial{suffix}")
  try:
    write_fn(tmp)
    os.replace(tmp, path)
  except OSError as err:
    # Named after the destination: the temporary file is ours, not the user's.
    raise OSError(f"{path}: cannot be written in {folder} ({err.strerror or err})") from err
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _write_nifti(scan: Scan, data, path: str, description: str, dtype=np.float32) -> None:
  nib = common.require("nibabel")
  header = scan.nifti.header.copy()
  out = nib.Nifti1Image(np.asarray(data), scan.nifti.affine, header)
  out.set_data_dtype(dtype)
  if np.dtype(dtype).kind == "f":
    out.header.set_slope_inter(1.0, 0.0)
  else:  # nibabel picks the slope and intercept that fit the values' range
    out.header.set_slope_inter(np.nan, np.nan)
  out.header["descrip"] = description.encode()[:79]
  _atomic(path, lambda tmp: nib.save(out, tmp))


def _write_h5(scan: Scan, recon, result: dict, path: str, lam_text: str,
              dtype=np.float32) -> None:
  h5py = common.require("h5py")

  def write_fn(tmp):
    with h5py.File(tmp, "w") as f:
      f.create_dataset(H5_DATASET, data=np.asarray(recon, dtype), compression="gzip")
      f.attrs["lambdas"] = np.asarray(result["lambdas"], np.float32)
      f.attrs["lambdas_text"] = lam_text
      f.attrs["source"] = os.path.abspath(scan.path)
      f.attrs["max"] = scan.scale
      if result["zero_filled"] is not None:
        f.create_dataset(H5_INPUT_DATASET, data=np.asarray(result["zero_filled"], dtype),
                         compression="gzip")
  _atomic(path, write_fn)
