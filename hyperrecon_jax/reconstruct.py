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

The slicing plane is `config.data.axis` unless the volume is too thin for it
(fewer than `MIN_PLANE` voxels along a side of its planes, e.g. a 3-slice
stack cut across its slices): then the volume's thin axis is sliced instead
and `Scan.notes` says so. `check_memory` bounds the output's size against the
memory available before any model work, and `volume` warns
(``result['warnings']``) when the output's intensity cannot be trusted.

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

# A plane needs at least this many voxels along each side to be an image for
# the model: its Unet max-pools three times (8×), so a narrower plane is less
# than a pixel wide at its coarsest level (`data.common.check_image_size` puts
# the same floor on the training slices).
MIN_PLANE = 8

# The output is checked against this fraction of the memory available when
# the check runs; the rest is for the model, XLA's buffers and the writer.
MEMORY_FRACTION = 0.8

# Below this many voxels above the normalization percentile, the intensity
# scale is the value of a handful of voxels: one bright outlier sets the
# contrast the model sees.
MIN_VOXELS_ABOVE_PERCENTILE = 5

# A reconstruction whose mean foreground intensity is more than this factor
# off the input's does not reproduce the input: on the shipped model's own
# template the ratio stays in [0.83, 0.98] for λ ≤ 0.9 (the data term keeps
# k-space's centre, hence the mean), while slices the model cannot read (a
# 3-voxel strip) give 0.01-0.3.
INTENSITY_FACTOR = 2.0

# Output types (`--dtype`): 'input' is the input's own type.
DTYPES = ("input", "int16", "float16", "float32")

# float16 is refused for a scan whose intensities it cannot hold: the largest
# output is below twice the scale (the model's outputs stay below 1.1 of the
# normalized range on its template), and voxels at 1 % of the scale should
# keep float16's 3 significant digits (normal numbers start at 6.1e-5).
_F16_HEADROOM = 2.0
_F16_SMALLEST = 0.01


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
    notes: one-line remarks on how the scan is cut (the plane, the model's
      working resolution).
    warnings: one-line reasons to distrust the output's intensity.
    foreground: bool mask on the output's grid (`output_shape`) of the
      foreground voxels of the kept slices, for `intensity_warnings`.
    reference: the input's mean intensity over ``foreground``, clipped at
      ``scale`` (what the model sees).
    input_dtype: the input's own real value type (`output_dtype`'s 'input').
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
  notes: tuple = ()
  warnings: tuple = ()
  foreground: np.ndarray | None = None
  reference: float = float("nan")
  input_dtype: str = "float32"

  @property
  def output_shape(self) -> tuple:
    """One reconstruction's shape: the input's voxel grid (NIfTI) or (S, H, W)."""
    if self.kind == "nifti":
      return tuple(int(n) for n in self.nifti.shape[:3])
    return tuple(int(n) for n in self.grid_shape)


def input_kind(path: str) -> str:
  """'nifti' or 'h5' from the file name; ValueError for anything else."""
  if path.endswith(NIFTI_SUFFIXES):
    return "nifti"
  if path.endswith(H5_SUFFIXES):
    return "h5"
  raise errors.InputError(f"{path}: not a NIfTI (.nii, .nii.gz) or fastMRI (.h5) file")


def read_input(path: str, config, *, axis=None) -> Scan:
  """Reads a NIfTI volume or a fastMRI ``.h5`` file as the model's slices.

  Args:
    path: the file.
    config: the model's config (its ``data``: image_size, axis, percentile,
      min_foreground).
    axis: NIfTI only: the RAS axis to slice along (name or index) instead of
      ``config.data.axis``; None takes the config's, or the volume's thin
      axis when the config's planes would be narrower than `MIN_PLANE`.

  Returns:
    A `Scan`.

  Raises:
    ValueError: a file that is missing, unreadable, not 3-D, too thin to
      slice, holds NaN or infinite values or values beyond float32, or has no
      foreground (the message names the file).
  """
  kind = input_kind(path)
  if not os.path.isfile(path):
    raise errors.InputError(f"{path}: no such file")
  if kind == "nifti":
    return _read_nifti(path, config, axis)
  if axis is not None:
    raise errors.InputError(f"{path}: a fastMRI file is reconstructed slice by slice as "
                            "stored; a slicing axis applies to NIfTI input only")
  return _read_h5(path, config)


def _volume_shape(path: str, shape: tuple) -> tuple:
  """The 3-D shape of a NIfTI file's header shape, or an error saying what it is."""
  if len(shape) == 4 and shape[3] == 1:
    shape = shape[:3]
  if len(shape) == 4:
    raise errors.InputError(
        f"{path}: has shape {shape}; expected a 3-D volume, and this is a series of "
        f"{shape[3]} volumes: split it (e.g. fslsplit) and reconstruct each")
  if len(shape) == 2:
    raise errors.InputError(f"{path}: has shape {shape}; expected a 3-D volume (a single "
                            f"slice is stored as ({shape[0]}, {shape[1]}, 1))")
  if len(shape) != 3:
    raise errors.InputError(f"{path}: has shape {shape}; expected a 3-D volume")
  if min(shape) < 1:
    raise errors.InputError(f"{path}: has shape {shape}: it holds no voxel")
  return shape


def slicing_axis(path: str, ras_shape, configured, requested=None) -> tuple[int, str | None]:
  """The RAS axis to cut a volume along, and a note when it is not the configured one.

  Args:
    path: the file, for the messages.
    ras_shape: the volume's (X, Y, Z) shape in RAS orientation.
    configured: the model's `config.data.axis`.
    requested: an axis the user asked for, or None.

  Returns:
    ``(axis index, note or None)``.

  Raises:
    InputError: the requested axis's planes, or every axis's, are narrower
      than `MIN_PLANE` voxels.
  """
  ras_shape = tuple(int(n) for n in ras_shape)

  def plane(a):
    return [n for i, n in enumerate(ras_shape) if i != a]

  def fits(a):
    return min(plane(a)) >= MIN_PLANE

  usable = [a for a in range(3) if fits(a)]
  if not usable:
    raise errors.InputError(
        f"{path}: has RAS shape {ras_shape}, so every plane is narrower than {MIN_PLANE} "
        "voxels on a side: there is no image for the model to reconstruct")
  thin = min(usable, key=lambda a: (ras_shape[a], a))  # the fewest, largest planes
  name = common.axis_name
  if requested is not None:
    a = common.axis_index(requested)
    if not fits(a):
      h, w = plane(a)
      raise errors.InputError(
          f"{path}: its {name(a)} planes are {h}×{w} voxels (RAS shape {ras_shape}), "
          f"narrower than {MIN_PLANE}; slice {name(thin)} instead (--axis={name(thin)})")
    return a, None
  a = common.axis_index(configured)
  if fits(a):
    return a, None
  h, w = plane(a)
  return thin, (f"slicing {name(thin)} (RAS axis {thin}), not the model's {name(a)}: the "
                f"volume's {name(a)} planes would be {h}×{w}-voxel strips (RAS shape "
                f"{ras_shape}), narrower than {MIN_PLANE} voxels")


def _real_float32(raw: np.ndarray, path: str) -> np.ndarray:
  """The voxels as float32, refusing values that are not real or do not fit."""
  if raw.dtype.kind not in "biuf":
    raise errors.InputError(f"{path}: its voxels are of type {raw.dtype}; expected real "
                            "numbers (a magnitude image)")
  common.check_finite(raw, path)
  if raw.dtype.kind == "f" and raw.dtype.itemsize > 4:
    limit = float(np.finfo(np.float32).max)
    magnitude = np.abs(raw)
    beyond = int(np.count_nonzero(magnitude > limit))
    if beyond:
      raise errors.InputError(
          f"{path}: {beyond:,} of {raw.size:,} voxels are finite in its {raw.dtype} but "
          f"beyond float32's range (largest magnitude {magnitude.max():.3g} > {limit:.3g}), "
          "in which the model computes; rescale the volume")
  return raw.astype(np.float32)


def _scale_warning(data: np.ndarray, percentile: float) -> tuple:
  positive = int(np.count_nonzero(data > 0))
  above = positive * (1.0 - percentile / 100.0)
  if above >= MIN_VOXELS_ABOVE_PERCENTILE:
    return ()
  return (f"the intensity scale (the {percentile:g}th percentile) rests on {above:.1f} of "
          f"the scan's {positive:,} positive voxels, so one bright voxel sets the contrast "
          "the model sees: the output's intensity cannot be trusted",)


def _resolution_note(size: int, plane: tuple, grid: tuple, what: str, unit: str) -> str:
  """One line on the model's working resolution against the input's."""
  h, w = (int(n) for n in plane)
  coarser = max(h, w) / size
  detail = (f", {coarser:.1f}× coarser: detail finer than {coarser:.1f} {unit}s is lost"
            if coarser > 1.05 else "")
  return (f"the model reconstructs at {size}×{size}: each slice's {h}×{w}-{unit} {what} is "
          f"resized to fit{detail}; the output is put back on the input's "
          f"{'×'.join(str(n) for n in grid)} grid")


def _read_nifti(path: str, config, axis=None) -> Scan:
  nib = common.require("nibabel")
  try:
    img = nib.load(path)
    shape = tuple(img.shape)
  except Exception as err:  # nibabel raises many types for bad files.
    raise errors.InputError(f"{path}: cannot be read as NIfTI ({err})") from None
  shape = _volume_shape(path, shape)
  # The RAS shape from the header alone: the plane is chosen before any voxel is read.
  ornt = nib.orientations.io_orientation(img.affine)
  ras_shape = [0, 0, 0]
  for n, (out_axis, _) in zip(shape, ornt):
    ras_shape[int(out_axis)] = n
  axis, axis_note = slicing_axis(path, ras_shape, config.data.axis, axis)
  try:
    canonical = nib.as_closest_canonical(img)
    raw = np.asanyarray(canonical.dataobj)
  except Exception as err:  # noqa: BLE001 (a truncated file fails here)
    raise errors.InputError(f"{path}: cannot read its voxels ({err})") from None
  data = _real_float32(raw.reshape(raw.shape[:3]), path)  # a singleton 4th axis dropped
  del raw
  size = int(config.data.image_size)
  percentile = float(config.data.percentile)
  try:
    scale = slicing.percentile_scale(data, percentile)
  except common.DataError as err:
    raise errors.InputError(f"{path}: {err}") from None
  volume = np.clip(data / scale, 0.0, 1.0)
  warnings = _scale_warning(data, percentile)
  del data
  foreground = volume > slicing.FOREGROUND_THRESHOLD
  keep, box = slicing.crop_box(foreground, axis, float(config.data.min_foreground))
  if box is None:
    raise errors.InputError(
        f"{path}: no {common.axis_name(axis)} slice has {config.data.min_foreground:.0%} of "
        f"its area above {slicing.FOREGROUND_THRESHOLD} of the {percentile:g}th percentile "
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
  # The foreground the intensity check compares: that of the slices the data
  # pipeline keeps, all inside the crop box.
  np.moveaxis(foreground, axis, 0)[~kept] = False
  reference = _mean(volume, foreground) * scale
  notes = (() if axis_note is None else (axis_note,)) + (
      _resolution_note(size, (r1 - r0, c1 - c0), shape, "foreground box", "voxel"),)
  return Scan(path, "nifti", images, np.arange(len(planes)), kept, scale,
              volume.shape, axis, box, plane_spacing, img, notes=notes, warnings=warnings,
              foreground=_ras_to_input(img, foreground), reference=reference,
              input_dtype=_nifti_dtype(img))


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
  """The mean of ``values`` over ``mask`` in float64; NaN for an empty mask."""
  if not mask.any():
    return float("nan")
  return float(np.mean(values[mask], dtype=np.float64))


def _nifti_dtype(img) -> str:
  dtype = np.dtype(img.get_data_dtype())
  return dtype.name if dtype.kind in "iuf" else "float32"


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
  if min(raw.shape[-2:]) < MIN_PLANE:
    raise errors.InputError(f"{path}: '{key}' has shape {raw.shape}: its images are "
                            f"narrower than {MIN_PLANE} pixels, too small to reconstruct")
  common.check_finite(raw, path, f"values of '{key}'")
  # The input's own type, as a real one: complex k-space gives a magnitude.
  real = np.empty(0, raw.dtype).real.dtype
  input_dtype = real.name if real.kind == "f" else "float32"
  volume = (fastmri.kspace_to_image(raw) if key == "kspace" else np.asarray(raw)).astype(np.float32)
  scale = float(volume.max())
  if not scale > 0:
    raise errors.InputError(f"{path}: the '{key}' volume is all zero")
  volume = np.clip(volume / scale, 0.0, 1.0)
  size = int(config.data.image_size)
  images = np.stack([np.clip(slicing.fit_to_square(s, size, order=1), 0.0, 1.0)
                     for s in volume]).astype(np.float32)
  n = len(volume)
  foreground = volume > slicing.FOREGROUND_THRESHOLD
  reference = _mean(volume, foreground) * scale
  notes = (_resolution_note(size, volume.shape[1:], volume.shape[1:], "image", "pixel"),)
  return Scan(path, "h5", images, np.arange(n), np.ones(n, bool), scale,
              volume.shape, 0, None, (1.0, 1.0), notes=notes, foreground=foreground,
              reference=reference, input_dtype=input_dtype)


# Beyond this many λ values even one 64×64 slice's output (16 KiB a λ) is 16 GB.
MAX_LAMBDAS = 1_000_000


def parse_lambdas(text: str, num_lambdas: int) -> np.ndarray:
  """``--lam`` text (`hparams.parse_lambdas`) as checked (L, num_lambdas) λ values.

  Raises:
    InputError: naming the bad item, a value outside [0, 1], or a grid of
      more than `MAX_LAMBDAS` points (refused before it is built).
  """
  text = str(text).strip()
  # Counted before `hparams` builds the list, which alone could exhaust memory.
  form, _, number = text.partition(":")
  if form in ("grid", "samples") and number.strip().isdigit():
    n = int(number)
    count = n ** num_lambdas if form == "grid" and num_lambdas <= 2 else n
    if count > MAX_LAMBDAS:
      size = f"{n}^{num_lambdas} = {count:,}" if count != n else f"{count:,}"
      raise errors.InputError(
          f"--lam={text} gives {size} λ values, more than {MAX_LAMBDAS:,}, each a whole "
          "reconstructed volume; give a smaller N")
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
  good = np.all(np.isfinite(arr) & (arr >= 0) & (arr <= 1), axis=1)
  if not good.all():
    row = arr[np.argmin(good)]
    raise errors.InputError(f"λ = {':'.join(f'{v:g}' for v in row)} is outside [0, 1]")
  return arr.astype(np.float32)


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


def available_memory() -> int | None:
  """Bytes this process may still allocate, or None when unknown.

  The kernel's MemAvailable (free memory plus reclaimable caches), lowered to
  the room left under a cgroup (container) memory limit.
  """
  available = None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          available = int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  if available is None:
    try:
      available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
      return None
  for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                  "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
    try:
      with open(limit_file) as f:
        limit = f.read().strip()
      with open(usage_file) as f:
        usage = int(f.read().strip())
    except (OSError, ValueError):
      continue
    if limit.isdigit():
      available = min(available, max(0, int(limit) - usage))
    break
  return available


def _gib(n: float) -> str:
  return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_memory(scan: Scan, num_lambdas: int, dtype="float32", *, save_input: bool = False,
                 available: int | None = None) -> int:
  """Refuses an output that would not fit in memory, before any model work.

  The reconstructions are held in memory until written: ``num_lambdas``
  volumes of the output's grid (`Scan.output_shape`) in `storage_dtype`,
  the zero-filled input if saved, and two float32 volumes (one being put back,
  one being written). That must fit in `MEMORY_FRACTION` of the memory
  available.

  Args:
    scan: the `Scan`.
    num_lambdas: the number of λ values.
    dtype: the output's value type (`output_dtype`).
    save_input: whether the zero-filled input is kept too.
    available: bytes available (default: `available_memory`; no check when
      unknown).

  Returns:
    The bytes needed.

  Raises:
    InputError: the size, the memory, and how many λ values fit.
  """
  voxels = int(np.prod(scan.output_shape))
  itemsize = storage_dtype(dtype).itemsize
  per_volume = voxels * itemsize
  need = (num_lambdas + int(save_input)) * per_volume + 2 * voxels * 4
  available = available_memory() if available is None else available
  if available is None:
    return need
  allowed = int(MEMORY_FRACTION * available)
  if need <= allowed:
    return need
  fit = (allowed - 2 * voxels * 4) // per_volume - int(save_input)
  grid = "×".join(str(n) for n in scan.output_shape)
  how = (f"give at most {fit:,} λ values per run" if fit >= 1
         else "even one λ does not fit: free memory first")
  if scan.kind == "h5" and itemsize > 2:
    how += " or --dtype=float16"
  raise errors.InputError(
      f"{scan.path}: {num_lambdas:,} λ value(s) × {grid} voxels × {itemsize} bytes need "
      f"{_gib(need)} of memory, more than the {_gib(allowed)} allowed "
      f"({MEMORY_FRACTION:.0%} of the {_gib(available)} available); {how}")


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
  return np.stack(list(_each_lambda(model, variables, zf, lambdas, batch=batch,
                                    progress=progress)))


def _each_lambda(model, variables, zf, lambdas, *, batch: int, progress=None):
  """`reconstruct_slices` one λ at a time: yields (S, H, W) float32 for each λ.

  One compiled function serves every λ (a new `jit` wrapper would compile
  again), and only one λ's slices are held at a time.
  """
  zf = jnp.asarray(zf, jnp.float32)
  coeffs = hparams.coefficients(jnp.asarray(lambdas, jnp.float32))
  apply = compilation.inference_jit(model.apply)
  n = zf.shape[0]
  batch = max(1, min(int(batch), n))
  # Padded with the first slices: one compiled shape for the last batch too.
  blocks = [(start, zf[np.arange(start, start + batch) % n]) for start in range(0, n, batch)]
  for c in coeffs:
    out = np.empty((n,) + tuple(zf.shape[1:3]), np.float32)
    for start, block in blocks:
      out[start:start + batch] = np.asarray(apply(variables, block, c))[:n - start]
      if progress is not None:
        progress(min(batch, n - start))
    yield out


def _ras_to_input(img, ras: np.ndarray) -> np.ndarray:
  """A RAS (X, Y, Z) array in the voxel order of the NIfTI image ``img``."""
  nib = common.require("nibabel")
  ornt = nib.orientations.io_orientation(img.affine)
  to_input = nib.orientations.ornt_transform(
      nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
  return nib.orientations.apply_orientation(ras, to_input)


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
  return _ras_to_input(scan.nifti, ras).astype(np.float32)


def intensity_warnings(scan: Scan, lambdas, recon) -> list[str]:
  """Says when the reconstructions' intensity is not the input's.

  Compares each reconstruction's mean over the foreground (`Scan.foreground`)
  with the input's (`Scan.reference`); more than `INTENSITY_FACTOR` off means
  the model did not reproduce this input at that λ.

  Args:
    scan: the `Scan`.
    lambdas: (L, K − 1) λ values.
    recon: (L, *output_shape) reconstructions.

  Returns:
    At most one line.
  """
  if scan.foreground is None or not scan.foreground.any() or not scan.reference > 0:
    return []
  ratios = np.array([_mean(r, scan.foreground) for r in recon])
  ratios /= scan.reference
  off = ~((ratios >= 1 / INTENSITY_FACTOR) & (ratios <= INTENSITY_FACTOR))
  if not off.any():
    return []
  band = f"outside [{1 / INTENSITY_FACTOR:g}, {INTENSITY_FACTOR:g}]"
  lo, hi = ratios[off].min(), ratios[off].max()
  spread = f"{lo:.2g}×" if np.isclose(lo, hi, rtol=0.05) else f"{lo:.2g}× to {hi:.2g}×"
  if off.all():
    where = "at every λ" if len(ratios) > 1 else (
        f"at λ = {':'.join(f'{v:g}' for v in lambdas[0])}")
    return [f"{where} the reconstruction's mean intensity in the foreground is {spread} the "
            f"input's ({band}): the output's intensity cannot be trusted; the model does not "
            "reproduce this scan (see the notes on slicing and resolution)"]
  shown = ", ".join(":".join(f"{v:g}" for v in lam) for lam in np.asarray(lambdas)[off][:5])
  more = f" and {int(off.sum()) - 5} more" if off.sum() > 5 else ""
  return [f"at λ = {shown}{more} the reconstruction's mean intensity in the foreground is "
          f"{spread} the input's ({band}, unlike at the other λ values): there the "
          "output's intensity is not the input's"]


def volume(config, model, variables, scan: Scan, lambdas, *, seed: int = 0,
           batch: int | None = None, save_input: bool = False,
           progress: Callable[[int], None] | None = None, dtype: str = "float32",
           available: int | None = None) -> dict:
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
    dtype: the output's value type, one of `DTYPES` (`output_dtype`).
    available: bytes of memory available (`check_memory`).

  Returns:
    A dict: ``scan``, ``lambdas`` (L, K − 1), ``recon`` (L, *output_shape),
    ``zero_filled`` (one volume, or None), ``seed``, ``dtype`` (the name of
    the written type), ``warnings`` (lines: `Scan.warnings` and
    `intensity_warnings`).

  Raises:
    InputError: a plain Unet, bad λ values, a bad ``dtype``, or an output
      too large for memory; all before any model work.
  """
  if not config.model.hyper_dim:
    raise errors.InputError("this is a plain Unet (one λ, the one it was trained at): "
                            "reconstruct needs a HyperRecon model")
  lambdas = check_lambdas(lambdas, configuration.num_lambdas(config))
  out_dtype = output_dtype(scan, dtype)
  check_memory(scan, len(lambdas), out_dtype, save_input=save_input, available=available)
  store = storage_dtype(out_dtype)
  zf = measure(config, scan, seed=seed)
  # One λ at a time, straight into the output: the model-grid slices of every
  # λ at once would need as much memory again.
  recon = np.empty((len(lambdas),) + scan.output_shape, store)
  squares = _each_lambda(model, variables, zf, lambdas,
                         batch=batch or int(config.eval.chunk), progress=progress)
  for i, square in enumerate(squares):
    recon[i] = put_back(scan, square)
  zero_filled = None
  if save_input:
    magnitude = np.sqrt(np.sum(np.square(np.asarray(zf)), axis=-1))
    zero_filled = put_back(scan, magnitude).astype(store)
  warnings = list(scan.warnings) + intensity_warnings(scan, lambdas, recon)
  return {"scan": scan, "lambdas": lambdas, "recon": recon, "zero_filled": zero_filled,
          "seed": int(seed), "dtype": out_dtype.name, "warnings": warnings}
