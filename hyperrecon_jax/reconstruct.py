"""Reconstruct your own scans with a trained model, at any λ.

A NIfTI volume is a ground truth that the model's own task degrades
retrospectively (its k-space mask and noise, its noise, or its downsampling);
a fastMRI ``.h5`` file gives its k-space, brought to the model's grid through
the image domain and masked with the model's mask. Slices are cut, normalized
and resized exactly as the data pipeline does (`hyperrecon_jax.data`), the
model reconstructs them at each λ, and the reconstructions are put back on
the input's grid, in the input's intensity units::

  scan = hr.reconstruct.read_input("sub-01_T1w.nii.gz", config)
  result = hr.reconstruct.volume(config, model, variables, scan, [[0.0], [0.5]])
  hr.reconstruct.write(result, "sub-01_recon.nii.gz")

NIfTI: the volume is reoriented to RAS, divided by its `config.data.percentile`
percentile of positive voxels and clipped to [0, 1]; every slice along
`config.data.axis` is cropped to the volume's foreground box (as the nifti
dataset does), reconstructed and resized back; voxels outside that box are 0.
The output has the input's orientation, affine and header.

fastMRI ``.h5``: the image is the magnitude of the inverse FFT of ``kspace``
(root-sum-of-squares over coils, centre-cropped to at most 320 × 320), or
``reconstruction_esc`` / ``reconstruction_rss`` when the file has no k-space,
divided by its maximum; the output is ``reconstruction_hyperrecon`` on that
image grid.

The measurement noise of slice ``k`` is drawn from
``fold_in(fold_in(key(seed), 0), k)`` (`evaluate.slice_keys`), so a rerun
gives the same result.

Writing the result is `hyperrecon_jax.outputs`; re-exported from there, so
``hr.reconstruct.write`` and the rest keep working: `write`, `output_paths`,
`check_outputs`, `input_path`, `sidecar_path` (and the constants
`NIFTI_SUFFIXES`, `H5_SUFFIXES`, `H5_DATASET`, `H5_INPUT_DATASET`). Cutting
and resizing the slices is `hyperrecon_jax.data.slicing`.
"""

from collections.abc import Callable
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import compilation
from hyperrecon_jax import errors
from hyperrecon_jax import evaluate
from hyperrecon_jax import hparams
from hyperrecon_jax import physics
from hyperrecon_jax.data import common
from hyperrecon_jax.data import slicing
from hyperrecon_jax.outputs import H5_DATASET  # noqa: F401
from hyperrecon_jax.outputs import H5_INPUT_DATASET  # noqa: F401
from hyperrecon_jax.outputs import H5_SUFFIXES
from hyperrecon_jax.outputs import NIFTI_SUFFIXES
from hyperrecon_jax.outputs import check_outputs  # noqa: F401
from hyperrecon_jax.outputs import input_path  # noqa: F401
from hyperrecon_jax.outputs import output_paths  # noqa: F401
from hyperrecon_jax.outputs import sidecar_path  # noqa: F401
from hyperrecon_jax.outputs import write  # noqa: F401
from hyperrecon_jax.train import configuration


@dataclasses.dataclass(frozen=True)
class Scan:
  """A user's scan cut into the model's slices, and how to put them back.

  Attributes:
    path: the input file.
    kind: 'nifti' or 'h5'.
    images: (S, size, size) float32 slices in [0, 1], the model's input grid.
    slices: (S,) slice indices (along the RAS slicing axis for NIfTI).
    kept: (S,) bool, the slices the data pipeline would keep (enough
      foreground); the others are reconstructed too.
    scale: the input intensity that maps to 1.
    grid_shape: the normalized volume's shape: RAS (X, Y, Z) for NIfTI, the
      image grid (S, H, W) for ``.h5``.
    axis: the slicing axis index (NIfTI; 0 for ``.h5``).
    box: (r0, r1, c0, c1), the crop box in oriented plane coordinates (NIfTI).
    plane_spacing: the physical (row, column) pixel size of a cropped plane.
    nifti: the input's nibabel image (NIfTI only), for its affine and header.
  """
  path: str
  kind: str
  images: np.ndarray
  slices: np.ndarray
  kept: np.ndarray
  scale: float
  grid_shape: tuple
  axis: int
  box: tuple | None
  plane_spacing: tuple
  nifti: Any = None


def input_kind(path: str) -> str:
  """'nifti' or 'h5' from the file name; ValueError for anything else."""
  if path.endswith(NIFTI_SUFFIXES):
    return "nifti"
  if path.endswith(H5_SUFFIXES):
    return "h5"
  raise errors.InputError(f"{path}: not a NIfTI (.nii, .nii.gz) or fastMRI (.h5) file")


def read_input(path: str, config) -> Scan:
  """Reads a NIfTI volume or a fastMRI ``.h5`` file as the model's slices.

  Args:
    path: the file.
    config: the model's config (its ``data``: image_size, axis, percentile,
      min_foreground).

  Returns:
    A `Scan`.

  Raises:
    ValueError: a file that is missing, unreadable, not 3-D, holds NaN or
      infinite values, or has no foreground (the message names the file).
  """
  kind = input_kind(path)
  if not os.path.isfile(path):
    raise errors.InputError(f"{path}: no such file")
  if kind == "nifti":
    return _read_nifti(path, config)
  return _read_h5(path, config)


def _read_nifti(path: str, config) -> Scan:
  nib = common.require("nibabel")
  try:
    img = nib.load(path)
    shape = tuple(img.shape)
  except Exception as err:  # nibabel raises many types for bad files.
    raise errors.InputError(f"{path}: cannot be read as NIfTI ({err})") from None
  if len(shape) == 4 and shape[3] == 1:
    shape = shape[:3]
  if len(shape) != 3 or min(shape) < 2:
    raise errors.InputError(f"{path}: has shape {tuple(img.shape)}; expected a 3-D volume "
                            "(one scan, not a series: split a 4-D file first)")
  try:
    canonical = nib.as_closest_canonical(img)
    data = np.asarray(canonical.dataobj, np.float32)
  except Exception as err:  # noqa: BLE001 (a truncated file fails here)
    raise errors.InputError(f"{path}: cannot read its voxels ({err})") from None
  data = data.reshape(data.shape[:3])  # a singleton 4th axis
  common.check_finite(data, path)
  size = int(config.data.image_size)
  axis = common.axis_index(config.data.axis)
  try:
    scale = slicing.percentile_scale(data, float(config.data.percentile))
  except common.DataError as err:
    raise errors.InputError(f"{path}: {err}") from None
  volume = np.clip(data / scale, 0.0, 1.0)
  foreground = volume > slicing.FOREGROUND_THRESHOLD
  keep, box = slicing.crop_box(foreground, axis, float(config.data.min_foreground))
  if box is None:
    raise errors.InputError(
        f"{path}: no slice has {config.data.min_foreground:.0%} of its area above "
        f"{slicing.FOREGROUND_THRESHOLD} of the {config.data.percentile}th percentile "
        "intensity: nothing to reconstruct")
  zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
  plane_spacing = slicing.oriented_spacing(zooms, axis)
  r0, r1, c0, c1 = box
  planes = np.moveaxis(volume, axis, 0)
  images = np.stack([
      np.clip(slicing.fit_to_square(slicing.orient(plane)[r0:r1, c0:c1], size, order=1,
                                   spacing=plane_spacing), 0.0, 1.0)
      for plane in planes]).astype(np.float32)
  kept = np.zeros(len(planes), bool)
  kept[keep] = True
  return Scan(path, "nifti", images, np.arange(len(planes)), kept, scale,
              volume.shape, axis, box, plane_spacing, img)


def _read_h5(path: str, config) -> Scan:
  from hyperrecon_jax.data import fastmri
  h5py = common.require("h5py")
  try:
    with h5py.File(path, "r") as f:
      if "kspace" in f:
        key = "kspace"
      else:
        key = next((k for k in fastmri.TARGET_KEYS if k in f), None)
      if key is None:
        raise errors.InputError(f"{path}: has neither 'kspace' nor "
                                f"{' nor '.join(repr(k) for k in fastmri.TARGET_KEYS)} "
                                f"(found {sorted(f.keys())}); is this a fastMRI file?")
      raw = f[key][()]
  except OSError as err:
    raise errors.InputError(f"{path}: cannot be read as an HDF5 file ({err})") from None
  if key == "kspace" and (raw.ndim not in (3, 4) or raw.dtype.kind != "c"):
    raise errors.InputError(f"{path}: 'kspace' has shape {raw.shape} and dtype {raw.dtype}; "
                            "expected complex (slices, [coils,] height, width)")
  if key != "kspace" and raw.ndim != 3:
    raise errors.InputError(
        f"{path}: '{key}' has shape {raw.shape}; expected (slices, height, width)")
  common.check_finite(raw, path, f"values of '{key}'")
  volume = (fastmri.kspace_to_image(raw) if key == "kspace" else np.asarray(raw)).astype(np.float32)
  scale = float(volume.max())
  if not scale > 0:
    raise errors.InputError(f"{path}: the '{key}' volume is all zero")
  volume = np.clip(volume / scale, 0.0, 1.0)
  size = int(config.data.image_size)
  images = np.stack([np.clip(slicing.fit_to_square(s, size, order=1), 0.0, 1.0)
                     for s in volume]).astype(np.float32)
  n = len(volume)
  return Scan(path, "h5", images, np.arange(n), np.ones(n, bool), scale,
              volume.shape, 0, None, (1.0, 1.0))


def parse_lambdas(text: str, num_lambdas: int) -> np.ndarray:
  """``--lam`` text (`hparams.parse_lambdas`) as checked (L, num_lambdas) λ values.

  Raises:
    InputError: naming the bad item, or a value outside [0, 1].
  """
  return check_lambdas(hparams.parse_lambdas(text, num_lambdas, flag="--lam"), num_lambdas)


def check_lambdas(lambdas, num_lambdas: int) -> np.ndarray:
  """λ values as a (L, num_lambdas) float32 array in [0, 1].

  Args:
    lambdas: (L, num_lambdas) values; for one hyperparameter also (L,) or a
      number.
    num_lambdas: the model's number of hyperparameters.

  Raises:
    ValueError: the wrong shape, or a value outside [0, 1] (named).
  """
  arr = np.asarray(lambdas, np.float64)
  if num_lambdas == 1 and arr.ndim < 2:
    arr = arr.reshape(-1, 1)
  if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != num_lambdas:
    raise errors.InputError(f"λ values of shape {arr.shape}: the model has {num_lambdas} "
                            f"hyperparameter(s), so give (L, {num_lambdas})")
  for row in arr:
    if not (np.all(np.isfinite(row)) and row.min() >= 0 and row.max() <= 1):
      raise errors.InputError(f"λ = {':'.join(f'{v:g}' for v in row)} is outside [0, 1]")
  return arr.astype(np.float32)


def measure(config, scan: Scan, *, seed: int = 0):
  """The model's zero-filled input of every slice, (S, size, size, 2)."""
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  keys = evaluate.slice_keys(jax.random.key(int(seed)), np.zeros(len(scan.slices), int),
                             scan.slices)
  return evaluate.measure_slices(operator, jnp.asarray(scan.images), keys)


def reconstruct_slices(model, variables, zf, lambdas, *, batch: int = 8,
                       progress: Callable[[int], None] | None = None) -> np.ndarray:
  """Reconstructs every slice at every λ, in batches of slices under `jit`.

  Each λ generates one set of Unet weights that a whole batch shares (the
  coefficients' shape (K,) selects that path), so the cost is that of a
  plain Unet per slice.

  Args:
    model: the model (`pretrained.load` / `train.load_trained`), HyperRecon.
    variables: its variables.
    zf: (S, H, W, 2) zero-filled inputs.
    lambdas: (L, K − 1) λ values.
    batch: slices per call; the last batch is padded (one compiled shape).
    progress: called with the number of slices done after each batch.

  Returns:
    (L, S, H, W) float32 reconstructions.
  """
  zf = jnp.asarray(zf, jnp.float32)
  coeffs = hparams.coefficients(jnp.asarray(lambdas, jnp.float32))
  apply = compilation.inference_jit(model.apply)
  n = zf.shape[0]
  batch = max(1, min(int(batch), n))
  out = np.empty((len(coeffs), n) + tuple(zf.shape[1:3]), np.float32)
  for start in range(0, n, batch):
    rows = np.arange(start, start + batch) % n  # padded with the first slices
    block = zf[rows]
    for i, c in enumerate(coeffs):
      out[i, start:start + batch] = np.asarray(apply(variables, block, c))[:n - start]
    if progress is not None:
      progress(min(batch, n - start))
  return out


def put_back(scan: Scan, squares) -> np.ndarray:
  """Model-grid slices back on the input's grid, in the input's units.

  Args:
    scan: the `Scan` the slices came from.
    squares: (S, size, size) one value per slice of ``scan``.

  Returns:
    NIfTI: the volume in the input's own voxel order (not RAS), voxels outside
    the crop box 0. ``.h5``: (S, H, W) on the image grid.
  """
  squares = np.asarray(squares, np.float32)
  if scan.kind == "h5":
    shape = scan.grid_shape[1:]
    return np.stack([slicing.unfit_from_square(s, shape) for s in squares]) * scan.scale
  nib = common.require("nibabel")
  r0, r1, c0, c1 = scan.box
  others = [n for a, n in enumerate(scan.grid_shape) if a != scan.axis]
  planes = np.zeros((scan.grid_shape[scan.axis], *others), np.float32)
  oriented = np.zeros(slicing.orient(planes[0]).shape, np.float32)
  for k, square in zip(scan.slices, squares):
    oriented[:] = 0
    oriented[r0:r1, c0:c1] = slicing.unfit_from_square(square, (r1 - r0, c1 - c0),
                                                      scan.plane_spacing)
    planes[k] = np.rot90(oriented, -1)  # undoes `slicing.orient`
  ras = np.moveaxis(planes, 0, scan.axis) * scan.scale
  ornt = nib.orientations.io_orientation(scan.nifti.affine)
  to_input = nib.orientations.ornt_transform(
      nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
  return nib.orientations.apply_orientation(ras, to_input).astype(np.float32)


def volume(config, model, variables, scan: Scan, lambdas, *, seed: int = 0,
           batch: int | None = None, save_input: bool = False,
           progress: Callable[[int], None] | None = None) -> dict:
  """Reconstructs a scan at each λ and puts the result on its grid.

  Args:
    config: the model's config.
    model: the model; ``variables``: its variables.
    variables: the model's variables.
    scan: from `read_input`.
    lambdas: (L, K − 1) λ values in [0, 1].
    seed: the measurement noise's seed.
    batch: slices per call (default ``config.eval.chunk``).
    save_input: also put back the zero-filled input's magnitude.
    progress: called with the number of slices done, L times over the scan.

  Returns:
    A dict: ``scan``, ``lambdas`` (L, K − 1), ``recon`` (L volumes on the
    input's grid), ``zero_filled`` (one volume, or None), ``seed``.
  """
  if not config.model.hyper_dim:
    raise errors.InputError("this is a plain Unet (one λ, the one it was trained at): "
                            "reconstruct needs a HyperRecon model")
  lambdas = check_lambdas(lambdas, configuration.num_lambdas(config))
  zf = measure(config, scan, seed=seed)
  squares = reconstruct_slices(model, variables, zf, lambdas,
                               batch=batch or int(config.eval.chunk), progress=progress)
  recon = [put_back(scan, s) for s in squares]
  zero_filled = None
  if save_input:
    zero_filled = put_back(scan, np.sqrt(np.sum(np.square(np.asarray(zf)), axis=-1)))
  return {"scan": scan, "lambdas": lambdas, "recon": recon,
          "zero_filled": zero_filled, "seed": int(seed)}
