"""A user's scan (NIfTI or fastMRI ``.h5``) cut into the model's slices.

`read_input` reads a file into a `Scan`: its slices on the model's square
grid, in [0, 1], and what it takes to put reconstructions back on the input's
own grid (`hyperrecon_jax.reconstruct.put_back`). Slices are cut, normalized
and resized exactly as the data pipeline does (`hyperrecon_jax.data.slicing`).

NIfTI: the volume is reoriented to RAS, divided by its `config.data.percentile`
percentile of positive voxels and clipped to [0, 1]; every slice along
`config.data.axis` is cropped to the volume's foreground box (as the nifti
dataset does) and resized to the model's grid.

fastMRI ``.h5``: read as a folder's dataset build reads it
(`hyperrecon_jax.data.fastmri.read_target`): ``reconstruction_esc``, else
``reconstruction_rss``, else the magnitude of the inverse FFT of fully sampled
``kspace`` (root-sum-of-squares over coils, centre-cropped to at most
320 × 320; undersampled k-space is refused), divided by the file's ``max``
attribute (else its largest value).

The slicing plane is `config.data.axis` unless the volume is too thin for it
(fewer than `MIN_PLANE` voxels along a side of its planes, e.g. a 3-slice
stack cut across its slices): then the volume's thin axis is sliced instead
(`slicing_axis`) and `Scan.notes` says so, as it says at what resolution the
model works. `Scan.warnings` says when the intensity scale rests on too few
voxels to be trusted.
"""

import dataclasses
import functools
import os
from typing import Any

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import memory
from hyperrecon_jax import scan_notes
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import dependencies
from hyperrecon_jax.data import nifti_voxels
from hyperrecon_jax.data import slicing

NIFTI_SUFFIXES = (".nii.gz", ".nii")
H5_SUFFIXES = (".h5",)

# The datasets' floor on a plane's sides (`slicing.MIN_PLANE`), for a scan too.
MIN_PLANE = slicing.MIN_PLANE
# Float32 volumes that normalizing a NIfTI volume holds at once, at most: the
# voxels, the normalized volume, and the masks of the positive and foreground
# voxels (a quarter of a volume each); 2.25 measured with tracemalloc, the
# rest for slice-sized temporaries (tests/test_scans_memory.py).
READ_VOLUMES = 2.5


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
      foreground voxels of the kept slices, for the intensity check of
      `hyperrecon_jax.reconstruct.intensity_warnings`.
    reference: the input's mean intensity over ``foreground``, clipped at
      ``scale`` (what the model sees).
    input_dtype: the input's own real value type (the 'input' of
      `hyperrecon_jax.outputs.output_dtype`).
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

  @property
  def input_slices(self) -> tuple[np.ndarray, int]:
    """Each slice's voxel index in the input file, and the file's axis it runs along.

    `slices` count along the RAS-reoriented volume; a viewer numbers the file's
    own voxels, which may run the other way (e.g. an LPS scan's sagittal
    slices) and along another of its axes. ``.h5`` slices are the file's own.

    Returns:
      ``(indices (S,), axis)``: the slices' indices along the input's voxel
      axis ``axis``.
    """
    if self.kind != "nifti":
      return np.asarray(self.slices), 0
    nib = dependencies.require("nibabel")
    ornt = nib.orientations.io_orientation(self.nifti.affine)
    axis = next(i for i, (ras_axis, _) in enumerate(ornt) if int(ras_axis) == self.axis)
    indices = np.asarray(self.slices)
    if ornt[axis][1] < 0:  # the file's voxels run against RAS along this axis
      indices = self.nifti.shape[axis] - 1 - indices
    return indices, axis

  def foreground_mean(self, volume: np.ndarray) -> float:
    """The mean of a volume on the output's grid over `foreground`; NaN without one."""
    if self.foreground is None:
      return float("nan")
    return _mean(volume, self.foreground)


def input_kind(path: str) -> str:
  """'nifti' or 'h5' from the file name; InputError for anything else."""
  if path.endswith(NIFTI_SUFFIXES):
    return "nifti"
  if path.endswith(H5_SUFFIXES):
    return "h5"
  if os.path.isdir(path):  # a folder of scans, say: named as one
    check_file(path)
  raise errors.InputError(f"{path}: not a NIfTI (.nii, .nii.gz) or fastMRI (.h5) file")


def check_file(path: str) -> None:
  """Raises ``InputError`` unless ``path`` is a file: a folder and a missing file named as such."""
  if os.path.isdir(path):
    raise errors.InputError(f"{path} is a folder; give one scan file")
  if not os.path.isfile(path):
    raise errors.InputError(f"{path}: no such file")


def read_input(path: str, config, *, axis=None, available: int | None = None) -> Scan:
  """Reads a NIfTI volume or a fastMRI ``.h5`` file as the model's slices.

  Args:
    path: the file.
    config: the model's config (its ``data``: image_size, axis, percentile,
      min_foreground; and name, when present: a file of another kind than
      the model's data gets a note in ``Scan.notes``).
    axis: NIfTI only: the RAS axis to slice along (name or index) instead of
      ``config.data.axis``; None takes the config's, or the volume's thin
      axis when the config's planes would be narrower than `MIN_PLANE`.
    available: bytes of memory available for reading (`check_read_memory`;
      default `memory.available_memory`).

  Returns:
    A `Scan`.

  Raises:
    InputError: a file that is missing, unreadable, not 3-D, too thin to
      slice, holds NaN or infinite values or values beyond float32, or has no
      foreground, or is too large to read in the memory available (the
      message names the file).
  """
  kind = input_kind(path)
  check_file(path)
  if kind == "nifti":
    scan = _read_nifti(path, config, axis, available)
  elif axis is not None:
    raise errors.InputError(f"{path}: a fastMRI file is reconstructed slice by slice as "
                            "stored; a slicing axis applies to NIfTI input only")
  else:
    scan = _read_h5(path, config, available)
  learned = config.data.get("name")  # a model's config has it; a bare data config may not
  learned_h5 = learned == "fastmri_knee"
  if learned is not None and (kind == "h5") != learned_h5:
    # Allowed (a look across data), but the intensities differ from training's.
    ways = ("its maximum, as a fastMRI dataset is",
            f"its {float(config.data.percentile):g}th percentile, as a NIfTI dataset is")
    scan = dataclasses.replace(scan, notes=scan.notes + (
        f"the model learned from {'fastMRI .h5 files' if learned_h5 else 'NIfTI volumes'} "
        f"scaled by {ways[0] if learned_h5 else ways[1]}; this file is scaled by "
        f"{ways[1] if learned_h5 else ways[0]}, so its intensities are not those of the "
        "model's training data",))
  return scan


def _volume_shape(path: str, shape: tuple) -> tuple:
  """The 3-D shape of a NIfTI file's header shape, or an error saying what it is."""
  while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1), (X, Y, Z, 1, 1): one volume
    shape = shape[:-1]
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
  plane = functools.partial(slicing.plane_sides, ras_shape)

  def fits(a):
    return min(plane(a)) >= MIN_PLANE

  usable = [a for a in range(3) if fits(a)]
  if not usable:
    raise errors.InputError(
        f"{path}: has RAS shape {ras_shape}, so every plane is narrower than {MIN_PLANE} "
        "voxels on a side: there is no image for the model to reconstruct")
  thin = min(usable, key=lambda a: (ras_shape[a], a))  # the fewest, largest planes
  name = config_fields.axis_name
  if requested is not None:
    a = config_fields.axis_index(requested)
    if not fits(a):
      h, w = plane(a)
      raise errors.InputError(
          f"{path}: its {name(a)} planes are {h}×{w} voxels (RAS shape {ras_shape}), "
          f"narrower than {MIN_PLANE}; slice {name(thin)} instead (--axis={name(thin)})")
    return a, None
  a = config_fields.axis_index(configured)
  if fits(a):
    return a, None
  h, w = plane(a)
  return thin, (f"slicing {name(thin)} (RAS axis {thin}), not the model's {name(a)}: the "
                f"volume's {name(a)} planes would be {h}×{w}-voxel strips (RAS shape "
                f"{ras_shape}), narrower than {MIN_PLANE} voxels")


def read_memory(shape) -> int:
  """The most bytes reading a NIfTI volume of ``shape`` holds at once.

  The larger of reading the voxels (`nifti_voxels.read_bytes`) and
  normalizing them (`READ_VOLUMES` float32 volumes), for any stored type,
  compressed or not, scaled or not.
  """
  voxels = int(np.prod(tuple(int(n) for n in shape)[:3]))
  return max(nifti_voxels.read_bytes(shape), int(READ_VOLUMES * voxels * 4))


def check_read_memory(path: str, shape, available: int | None = None, *,
                      need: int | None = None, what: str = "voxels as float32") -> int:
  """Refuses, from the header alone, a volume too large to read.

  Args:
    path: the file, named in the error.
    shape: its voxels' shape (from the header).
    available: bytes available (default `memory.available_memory`; no check
      when unknown).
    need: the bytes reading needs (default: a NIfTI volume's, `read_memory`).
    what: what the shape counts, for the message.

  Returns:
    The bytes reading needs.

  Raises:
    InputError: naming the file, its shape, the bytes needed and those allowed
      (`memory.MEMORY_FRACTION` of the available).
  """
  need = read_memory(shape) if need is None else need
  available = memory.available_memory() if available is None else available
  if available is None or need <= memory.MEMORY_FRACTION * available:
    return need
  grid = "×".join(str(int(n)) for n in shape)
  raise errors.InputError(
      f"{path}: reading its {grid} {what} needs {memory.byte_size(need)} of memory, "
      f"more than the {memory.byte_size(int(memory.MEMORY_FRACTION * available))} allowed "
      f"({memory.MEMORY_FRACTION:.0%} of the {memory.byte_size(available)} available); free "
      "memory, or crop or resample the volume first")


def _read_nifti(path: str, config, axis=None, available=None) -> Scan:
  nib = dependencies.require("nibabel")
  try:
    img = nib.load(path)
    shape = tuple(img.shape)
  except Exception as err:  # nibabel raises many types for bad files.
    raise errors.InputError(f"{path}: cannot be read as NIfTI ({err})") from None
  shape = _volume_shape(path, shape)
  problem = slicing.orientation_problem(img.affine)
  if problem:
    raise errors.InputError(f"{path}: {problem}")
  # The RAS shape from the header alone: the plane is chosen before any voxel is read.
  ras_shape = slicing.ras_shape(shape, nib.orientations.io_orientation(img.affine))
  axis, axis_note = slicing_axis(path, ras_shape, config.data.axis, axis)
  check_read_memory(path, shape, available)
  data = nifti_voxels.read_float32(path)
  size = int(config.data.image_size)
  percentile = float(config.data.percentile)
  try:
    scale = slicing.percentile_scale(data, percentile)
  except data_errors.DataError as err:
    raise errors.InputError(f"{path}: {err}") from None
  positive = int(np.count_nonzero(slicing.positive_voxels(data)))
  warnings = (scan_notes.scale_warning(positive, percentile)
              + scan_notes.bright_region_warning(data, scale)
              + scan_notes.clipping_warnings(data, scale, positive)
              + scan_notes.few_values_warning(data))
  # After the warnings and in place, so that reading holds at most two float32
  # copies of the volume at once: a volume can take much of the memory.
  volume = data / scale
  del data
  np.clip(volume, 0.0, 1.0, out=volume)
  foreground = volume > slicing.FOREGROUND_THRESHOLD
  keep, box = slicing.crop_box(foreground, axis, float(config.data.min_foreground))
  if box is None:
    raise errors.InputError(
        f"{path}: no {config_fields.axis_name(axis)} slice has {config.data.min_foreground:.0%} of "
        f"its area above {slicing.FOREGROUND_THRESHOLD} of the {percentile:g}th percentile "
        "intensity: nothing to reconstruct")
  warnings += scan_notes.outside_box_warning(foreground, axis, box)
  # From the affine that gave the orientation, not the header's pixdim: a file
  # whose pixdim disagrees with its sform would get another slice shape
  # depending on whether it is stored RAS (nibabel keeps its header) or not
  # (nibabel derives the header from the affine).
  zooms = tuple(float(z) for z in nib.affines.voxel_sizes(nifti_voxels.ras_affine(img)))
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
      scan_notes.resolution_note(size, (r1 - r0, c1 - c0), shape, "foreground box", "voxel",
                                 plane_spacing),)
  return Scan(path, "nifti", images, np.arange(len(planes)), kept, scale,
              volume.shape, axis, box, plane_spacing, img, notes=notes, warnings=warnings,
              foreground=ras_to_input(img, foreground), reference=reference,
              input_dtype=_nifti_dtype(img))


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
  """The mean of ``values`` over ``mask`` in float64; NaN for an empty mask."""
  if not mask.any():
    return float("nan")
  return float(np.mean(values[mask], dtype=np.float64))


def _nifti_dtype(img) -> str:
  dtype = np.dtype(img.get_data_dtype())
  return dtype.name if dtype.kind in "iuf" else "float32"


def _read_h5(path: str, config, available=None) -> Scan:
  from hyperrecon_jax.data import fastmri
  key, shape, need = fastmri.read_bytes(path)
  check_read_memory(path, shape, available, need=need, what=f"values of '{key}'")
  # The dataset build's reader: one file is read, chosen and scaled as a
  # folder of them is (the target first, then fully sampled k-space).
  target = fastmri.read_target(
      path, "The model's input is simulated from the image with the model's own mask, so "
      "these measurements would be undersampled twice")
  scale = target.scale
  # As for NIfTI: what the clip to [0, 1] takes from the image is said.
  positive = int(np.count_nonzero(slicing.positive_voxels(target.volume)))
  warnings = scan_notes.clipping_warnings(target.volume * scale, scale, positive)
  volume = np.clip(target.volume, 0.0, 1.0)
  # The input's own type, as a real one: complex k-space gives a magnitude.
  real = np.empty(0, target.dtype).real.dtype
  input_dtype = real.name if real.kind == "f" else "float32"
  size = int(config.data.image_size)
  images = np.stack([np.clip(slicing.fit_to_square(s, size, order=1), 0.0, 1.0)
                     for s in volume]).astype(np.float32)
  n = len(volume)
  foreground = volume > slicing.FOREGROUND_THRESHOLD
  reference = _mean(volume, foreground) * scale
  notes = (scan_notes.resolution_note(size, volume.shape[1:], volume.shape[1:], "image", "pixel"),)
  return Scan(path, "h5", images, np.arange(n), np.ones(n, bool), scale,
              volume.shape, 0, None, (1.0, 1.0), notes=notes, warnings=warnings,
              foreground=foreground, reference=reference, input_dtype=input_dtype)


def ras_to_input(img, ras: np.ndarray) -> np.ndarray:
  """A RAS (X, Y, Z) array in the voxel order of the NIfTI image ``img``."""
  nib = dependencies.require("nibabel")
  ornt = nib.orientations.io_orientation(img.affine)
  to_input = nib.orientations.ornt_transform(
      nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
  return nib.orientations.apply_orientation(ras, to_input)
