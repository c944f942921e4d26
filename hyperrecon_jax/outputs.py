"""The output of a reconstruction: its type, its size in memory, its files.

`write` takes a `hyperrecon_jax.reconstruct.volume` result and writes, for a
NIfTI input, a NIfTI volume with the input's affine and header (3-D for one
λ, 4-D with λ last for several), or, for a fastMRI ``.h5`` input, an ``.h5``
file with the ``reconstruction_hyperrecon`` dataset; beside it a JSON sidecar
(`sidecar_path`) with the input, the model, the λ values, the loss
coefficients and the seed, and, when the zero-filled input is saved, that too
(`input_path`, or the ``zero_filled`` dataset of the ``.h5`` file).
`output_paths` lists every file a write creates and `check_outputs` refuses
existing ones unless overwriting is asked for, and folders that cannot be
written in, so a caller can check before any work. Each file is written
beside its destination and renamed into place (atomically), so an interrupted
write leaves no half-written output. The values are written in the result's
``dtype`` (`output_dtype`: float32 unless asked otherwise; integer NIfTI types
are scaled to the output's range by the header's slope and intercept).

The sidecar records, for each output volume in order, its λ and its loss
coefficients (the simplex point the model was given), with the loss terms'
names, so that a 4-D output over a design on the simplex can be read back.
"""

from collections.abc import Callable
from collections.abc import Sequence
import json
import os
import tempfile

import numpy as np

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import errors
from hyperrecon_jax import run_paths
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import nifti_headers
from hyperrecon_jax.scans import H5_SUFFIXES
from hyperrecon_jax.scans import NIFTI_SUFFIXES
from hyperrecon_jax.scans import Scan

H5_DATASET = "reconstruction_hyperrecon"
H5_INPUT_DATASET = "zero_filled"

# Output types (`--dtype`): 'input' is the input's own type.
DTYPES = ("input", "int16", "float16", "float32")

# float16 is refused for a scan whose intensities it cannot hold: the largest
# output is below twice the scale (the model's outputs stay below 1.1 of the
# normalized range on its template), and voxels at 1 % of the scale should
# keep float16's 3 significant digits (normal numbers start at 6.1e-5).
_F16_HEADROOM = 2.0
_F16_SMALLEST = 0.01

def output_dtype(scan: Scan, name: str, output: str | None = None) -> np.dtype:
  """The value type of the written reconstruction (``--dtype``).

  Args:
    scan: the `Scan`.
    name: one of `DTYPES`; 'input' is the input's own type (NIfTI: its
      stored type, integers scaled to the output's range by the header's
      slope and intercept; ``.h5``: the real type of its image or k-space).
    output: the output path, for the messages.

  Raises:
    InputError: an unknown name, float16 for NIfTI (which has no such type),
      int16 for ``.h5`` (which has no scale factor), or float16 for a scan
      whose intensities it cannot hold.
  """
  where = f"--output={output}" if output else f"a {scan.kind} output"
  if name not in DTYPES:
    raise errors.InputError(f"--dtype={name}: expected one of {', '.join(DTYPES)}")
  dtype = np.dtype(scan.input_dtype if name == "input" else name)
  if dtype == np.float16 and scan.kind == "nifti":
    raise errors.InputError(f"--dtype=float16: NIfTI has no float16 type ({where}); give "
                            "--dtype=int16 for 2 bytes a voxel, scaled to the output's range")
  if dtype.kind in "iu" and scan.kind == "h5":
    raise errors.InputError(f"--dtype={name}: an .h5 output holds no scale factor for "
                            f"integers ({where}); give --dtype=float16 for 2 bytes a value")
  if dtype.kind in "iu":
    # nibabel stores integers with a float32 slope: at least the smallest
    # normal float32, or the header cannot hold it.
    smallest = float(np.finfo(np.float32).smallest_normal) * float(np.iinfo(dtype).max)
    if not scan.scale >= smallest:
      raise errors.InputError(
          f"--dtype={name}: {scan.path}'s intensities (up to {scan.scale:.3g}) are too small "
          f"for {dtype.name}'s float32 scale factor (at least {smallest:.3g} at the top of "
          "the range): give --dtype=float32")
  if dtype == np.float16:
    info = np.finfo(np.float16)
    if not (scan.scale * _F16_HEADROOM <= float(info.max)
            and scan.scale * _F16_SMALLEST >= float(info.smallest_normal)):
      raise errors.InputError(
          f"--dtype=float16 keeps 3 digits only for magnitudes from "
          f"{float(info.smallest_normal):.2g} to {float(info.max):g}, and {scan.path}'s "
          f"intensities span {scan.scale * _F16_SMALLEST:.3g} to "
          f"{scan.scale * _F16_HEADROOM:.3g}: give --dtype=float32")
  return dtype


def storage_dtype(dtype) -> np.dtype:
  """The in-memory type of an output of ``dtype``: floats as they are, integers float32.

  Integers are scaled to the output's range when written, from float32 values.
  """
  dtype = np.dtype(dtype)
  return dtype if dtype.kind == "f" else np.dtype(np.float32)


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


def stale_files(scan_kind: str, output: str, save_input: bool,
                source: str | None = None) -> list[str]:
  """Files of an earlier output set that a write without them leaves in place.

  A NIfTI output written without ``--save_input`` over one written with it
  keeps the earlier ``*_zero_filled`` volume beside the new set (whose sidecar
  says ``"zero_filled": null``); it is the user's to keep or delete.

  Args:
    scan_kind: 'nifti' or 'h5'.
    output: the output path given.
    save_input: whether this write saved the zero-filled input.
    source: the input scan: never named, since the input of a run may carry
      the name an earlier run gave its zero-filled volume.

  Returns:
    The paths, each an existing file this write did not make.
  """
  if scan_kind != "nifti" or save_input:
    return []
  partner = input_path(output)
  if not os.path.exists(partner) or (source is not None and os.path.exists(source)
                                     and os.path.samefile(partner, source)):
    return []
  return [partner]


def check_outputs(paths: Sequence[str], overwrite: bool, source: str | None = None) -> None:
  """Refuses outputs that cannot or must not be written.

  Args:
    paths: the files to write (`output_paths`).
    overwrite: whether existing files may be replaced.
    source: the input scan, which is never replaced, nor its own JSON
      sidecar (a BIDS scan's metadata, ``sub-01_T1w.json``).

  Raises:
    InputError: an output is the input scan or its sidecar, a folder, or
      exists (unless ``overwrite``), lies inside a training run's folder
      (`run_paths.check_outside_runs`), or its folder is missing or cannot be
      written.
  """
  probed = set()
  # The JSON beside the scan with its name: where BIDS keeps the scan's metadata.
  own_sidecar = (sidecar_path(source) if source is not None
                 and source.endswith(NIFTI_SUFFIXES + H5_SUFFIXES) else None)
  for p in paths:
    if (own_sidecar is not None and os.path.exists(p) and os.path.exists(own_sidecar)
        and os.path.samefile(p, own_sidecar)):
      raise errors.InputError(f"{p} is the input scan's own sidecar ({own_sidecar}); write "
                              "the reconstruction under another name")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
      what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
      raise errors.InputError(f"{p}: the folder {folder} {what}")
    if source is not None and os.path.exists(p) and os.path.samefile(p, source):
      raise errors.InputError(f"{p} is the input scan; write the reconstruction to "
                              "another file")
    run_paths.check_outside_runs(p, "the output", "--output")
    if os.path.isdir(p):
      raise errors.InputError(f"{p} is a folder; give a file name")
    if os.path.exists(p) and not overwrite:
      raise errors.InputError(f"{p} exists; give --overwrite (in Python, overwrite=True) "
                              "to replace it")
    if folder not in probed:
      check_writable(p, folder)
      probed.add(folder)


def check_writable(path: str, folder: str) -> None:
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


def write(result: dict, output: str, *, model: str | None = None,
          overwrite: bool = False) -> list[str]:
  """Writes a `hyperrecon_jax.reconstruct.volume` result: output, sidecar, input if saved.

  NIfTI: a 3-D volume for one λ, 4-D (λ last) for several, with the input's
  affine and header, the λ values in the header's description as far as its
  80 characters allow. ``.h5``: ``reconstruction_hyperrecon``
  (S, H, W) for one λ, (L, S, H, W) for several, and ``zero_filled`` if
  saved; the λ values and coefficients in its attributes. The sidecar lists
  each output volume's λ and coefficients, in order, and the result's
  ``scores``. The files are written
  as a set (`_write_all`): a failed or interrupted write (a full disk,
  Ctrl-C) leaves none of them, and with ``overwrite`` the previous set whole.
  Values are of ``result['dtype']`` (default float32). ``model`` is the
  sidecar's ``model``, e.g. ``"NAME (step N)"``; null when not given.

  Returns:
    The paths written.
  """
  scan = result["scan"]
  save_input = result["zero_filled"] is not None
  paths = output_paths(scan.kind, output, save_input)
  check_outputs(paths, overwrite, source=scan.path)
  lam_text = ",".join(":".join(f"{v:g}" for v in lam) for lam in result["lambdas"])
  dtype = np.dtype(result.get("dtype", "float32"))
  recon = result["recon"]
  if not isinstance(recon, np.ndarray):
    recon = np.stack(recon)  # a list of L volumes
  if len(recon) == 1:
    recon = recon[0]
  elif scan.kind == "nifti":
    recon = np.moveaxis(recon, 0, -1)  # a view: λ last, without a copy
  files = []  # (destination, function writing it to a given path)
  if scan.kind == "nifti":
    files.append((output, lambda tmp: _write_nifti(
        scan, recon, tmp, f"{nifti_headers.OUTPUT_DESCRIPTION}lam={lam_text}", dtype)))
    if save_input:
      files.append((input_path(output), lambda tmp: _write_nifti(
          scan, result["zero_filled"], tmp, f"{nifti_headers.OUTPUT_DESCRIPTION}zero-filled input",
          dtype)))
  else:
    files.append((output, lambda tmp: _write_h5(scan, recon, result, tmp, lam_text, dtype)))
  sidecar = {
      "input": os.path.abspath(scan.path),
      "model": model or None,
      "loss_terms": list(result["loss_terms"]),
      "lambdas": _rows(result["lambdas"]),
      "coefficients": _rows(result["coeffs"]),
      "lambda_axis": ("last (4th) axis" if scan.kind == "nifti" else "first axis")
      if len(result["recon"]) > 1 else None,
      "seed": result["seed"],
      "intensity_scale": scan.scale,
      "dtype": dtype.name,
      # Absolute, as "input": a relative path would be the working folder's.
      "zero_filled": (os.path.abspath(input_path(output)) if save_input and scan.kind == "nifti"
                      else H5_INPUT_DATASET if save_input else None),
  }
  if "scores" in result:
    sidecar["scores"] = result["scores"]
  files.append((sidecar_path(output), lambda tmp: _write_json(tmp, sidecar)))
  _write_all(files)
  return paths


def _rows(values) -> list:
  """Rows of λ or coefficients as JSON lists, to float32's 7 significant digits.

  Seven digits drop the roundoff of λ ↔ coefficient conversions (a typed 0.3
  stays 0.3, not 0.29999998) and change a reconstruction by far less than
  float32's own precision.
  """
  return [[float(f"{v:.7g}") for v in row] for row in np.asarray(values, np.float64)]


def _write_json(path, value):
  with open(path, "w") as f:
    json.dump(value, f, indent=1)
    f.write("\n")


def _temporary(path: str) -> str:
  """A hidden file beside ``path``, of its suffix (nibabel reads the format from it)."""
  name = os.path.basename(path)
  suffix = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
  return atomic_writes.partial_file(path, suffix)


def _write_all(files: Sequence[tuple[str, Callable[[str], None]]]) -> None:
  """Writes a set of files beside their destinations, then renames them all into place.

  Args:
    files: (destination, write_fn) pairs; ``write_fn(path)`` writes one file.

  Raises:
    OSError: naming the destination (not the temporary file) that could not
      be written. Nothing is renamed until every file is written, so a failure
      or an interrupt leaves no file of the set and every temporary removed;
      only the renames, microseconds apart, are not one step.
  """
  # What a writer killed by kill -9 (no `finally`) left: a volume's worth each.
  for folder in sorted({os.path.dirname(os.path.abspath(path)) for path, _ in files}):
    atomic_writes.sweep_partial_files(folder)
  staged = []
  try:
    for path, write_fn in files:
      staged.append(_temporary(path))
      try:
        write_fn(staged[-1])
      except OSError as err:
        folder = os.path.dirname(os.path.abspath(path))
        raise OSError(f"{path}: cannot be written in {folder} ({err.strerror or err})") from err
    for tmp, (path, _) in zip(staged, files):
      os.replace(tmp, path)
  finally:
    for tmp in staged:
      if os.path.exists(tmp):
        os.remove(tmp)


def _write_nifti(scan: Scan, data, path: str, description: str, dtype=np.float32) -> None:
  nib = dependencies.require("nibabel")
  header = scan.nifti.header.copy()
  out = nib.Nifti1Image(np.asarray(data), scan.nifti.affine, header)
  out.set_data_dtype(dtype)
  if np.dtype(dtype).kind == "f":
    out.header.set_slope_inter(1.0, 0.0)
  else:  # nibabel picks the slope and intercept that fit the values' range
    out.header.set_slope_inter(np.nan, np.nan)
  out.header["descrip"] = description.encode()[:79]
  if np.ndim(data) == 4:
    # The 4th axis is λ: a time unit and the input's repetition time would make
    # viewers show the λ volumes as time points seconds apart.
    out.header.set_xyzt_units(xyz=header.get_xyzt_units()[0], t="unknown")
    out.header["pixdim"][4] = 1.0
    out.header["toffset"] = 0.0
  nib.save(out, path)


def _write_h5(scan: Scan, recon, result: dict, path: str, lam_text: str,
              dtype=np.float32) -> None:
  h5py = dependencies.require("h5py")
  with h5py.File(path, "w") as f:
    f.create_dataset(H5_DATASET, data=np.asarray(recon, dtype), compression="gzip")
    f.attrs["lambdas"] = np.asarray(result["lambdas"], np.float32)
    f.attrs["lambdas_text"] = lam_text
    f.attrs["coefficients"] = np.asarray(result["coeffs"], np.float32)
    f.attrs["loss_terms"] = list(result["loss_terms"])
    f.attrs["source"] = os.path.abspath(scan.path)
    f.attrs["max"] = scan.scale
    if result["zero_filled"] is not None:
      f.create_dataset(H5_INPUT_DATASET, data=np.asarray(result["zero_filled"], dtype),
                       compression="gzip")
