"""Shared pieces of the datasets: errors, settings, slicing and resizing.

Nothing here imports TensorFlow Datasets, grain or a file-format library, so
these settings and the image helpers work with the core install.
"""

from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import hashlib
import importlib
import json
import os
from typing import Any

import numpy as np
from scipy import ndimage

from hyperrecon_jax import errors

DATASETS = ("mni152", "fastmri_knee", "nifti")
SPLITS = ("train", "validation", "test")
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}

# Voxels whose normalized intensity exceeds this count as foreground (head or
# brain) when dropping background slices and cropping to the head.
FOREGROUND_THRESHOLD = 0.05

# Voxels of margin kept around the head's bounding box before resizing, so the
# head never touches the image border.
CROP_MARGIN = 4

DATA_DIR_ENV = "HYPERRECON_DATA_DIR"
INSTALL_HINT = 'pip install -e ".[data]"'


class DataError(errors.InputError):
  """Missing, unreadable or malformed input data (the message says which)."""


def require(module_name: str):
  """Imports an optional dependency of the data package.

  Args:
    module_name: the module to import, e.g. ``"h5py"``.

  Returns:
    The imported module.

  Raises:
    ImportError: naming the extra to install when the module is missing.
  """
  try:
    return importlib.import_module(module_name)
  except ImportError as err:
    raise ImportError(
        f"hyperrecon_jax.data needs `{module_name}`, which is not installed. "
        f"Install the data extra: {INSTALL_HINT}"
    ) from err


def default_data_dir() -> str:
  """Where built datasets live: $HYPERRECON_DATA_DIR or a per-user cache."""
  env = os.environ.get(DATA_DIR_ENV)
  if env:
    return os.path.expanduser(env)
  return os.path.join(
      os.path.expanduser("~"), ".cache", "hyperrecon_jax", "tensorflow_datasets")


def field(data_config, name: str):
  """A field of a data config (a ConfigDict or a dict) that the caller reads.

  Data configs have no defaults here: ``experiments/configs/default.py``
  writes out every field.

  Raises:
    DataError: naming the field when the config lacks it.
  """
  try:
    return data_config[name]
  except KeyError:
    raise DataError(f"data config lacks field {name!r}.") from None


def check_name(name: str) -> str:
  """Returns `name` if it is a known dataset, else raises ValueError."""
  if name not in DATASETS:
    raise errors.InputError(
        f"Unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")
  return name


def check_split(split: str) -> str:
  """Returns `split` if it is a known split, else raises ValueError."""
  if split not in SPLITS:
    raise errors.InputError(f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}.")
  return split


def axis_index(axis) -> int:
  """Maps 'sagittal' | 'coronal' | 'axial' (or 0, 1, 2) to an array axis.

  Volumes are reoriented to RAS before slicing, so axis 0 runs left to right,
  1 posterior to anterior and 2 inferior to superior.
  """
  if isinstance(axis, str) and axis in AXES:
    return AXES[axis]
  if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= axis <= 2:
    return int(axis)
  raise errors.InputError(
      f"Unknown slicing axis {axis!r}; valid: {', '.join(AXES)} (or 0, 1, 2).")


def axis_name(axis) -> str:
  return {v: k for k, v in AXES.items()}[axis_index(axis)]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
  """Validates (train, validation, test) fractions that sum to one."""
  fractions = tuple(float(f) for f in fractions)
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
    raise errors.InputError(
        "split_fractions must be three non-negative numbers (train, "
        f"validation, test) that sum to 1; got {fractions}.")
  return fractions


def check_image_size(size) -> int:
  if int(size) != size or size < 8:
    raise errors.InputError(f"image_size must be an integer >= 8; got {size!r}.")
  return int(size)


def digest(settings: Mapping[str, Any]) -> str:
  """Short stable hash of the settings that change a built dataset."""
  text = json.dumps(settings, sort_keys=True, default=list)
  return hashlib.sha1(text.encode()).hexdigest()[:10]


def list_files(root: str, suffixes: Sequence[str]) -> list[str]:
  """Sorted paths (relative to `root`) of files ending in one of `suffixes`."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for fname in filenames:
      if fname.endswith(tuple(suffixes)) and not fname.startswith("."):
        found.append(os.path.relpath(os.path.join(dirpath, fname), root))
  return sorted(found)


def fingerprint(root: str, relpaths: Sequence[str]) -> str:
  """Hash of file names and sizes: cheap, and changes when inputs change."""
  entries = [(p, os.path.getsize(os.path.join(root, p))) for p in relpaths]
  return digest({"files": entries})


def split_volumes(num: int, fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
  """Assigns volume indices 0..num-1 to splits with a seeded permutation.

  Validation and test get ``round(num * fraction)`` volumes each, at least one
  when their fraction is positive and there are three or more volumes; the
  training split gets the rest.

  Args:
    num: number of volumes.
    fractions: (train, validation, test) fractions.
    seed: seed of the permutation, so the split is reproducible.

  Returns:
    Sorted volume indices per split name.
  """
  _, f_val, f_test = check_fractions(fractions)
  order = np.random.default_rng(seed).permutation(num)
  n_val = int(round(num * f_val))
  n_test = int(round(num * f_test))
  if num >= 3:
    n_val = max(n_val, 1 if f_val > 0 else 0)
    n_test = max(n_test, 1 if f_test > 0 else 0)
  n_val = min(n_val, num)
  n_test = min(n_test, num - n_val)
  return {
      "validation": sorted(int(i) for i in order[:n_val]),
      "test": sorted(int(i) for i in order[n_val:n_val + n_test]),
      "train": sorted(int(i) for i in order[n_val + n_test:]),
  }


def check_finite(values: np.ndarray, path: str, what: str = "voxels") -> None:
  """Rejects an input array with NaN or infinite values.

  Such values mean broken data (a failed reconstruction or conversion), and
  no repair is right: zeroing NaN hides the damage, and an infinity saturates
  its slices white once the volume is normalized.

  Args:
    values: the array as read from the file (real or complex).
    path: the file, named in the error.
    what: what the values are, e.g. "voxels" or "values of 'kspace'".

  Raises:
    DataError: naming the file and the number of non-finite values.
  """
  values = np.asarray(values)
  if values.dtype.kind not in "fc":  # Integers are always finite.
    return
  bad = values.size - int(np.count_nonzero(np.isfinite(values)))
  if bad:
    raise DataError(
        f"{path}: {bad:,} of {values.size:,} {what} are not finite (NaN or ±Inf); "
        "fix or remove the file.")


def normalize_percentile(volume: np.ndarray, percentile: float) -> np.ndarray:
  """Divides by a high percentile of the positive voxels and clips to [0, 1].

  A percentile rather than the maximum keeps a few very bright voxels (vessels,
  fat, artefacts) from darkening the whole volume.

  Args:
    volume: any real array.
    percentile: e.g. 99.5.

  Returns:
    float32 array in [0, 1].

  Raises:
    DataError: when the volume has no positive voxel.
  """
  volume = np.nan_to_num(np.asarray(volume, np.float32))
  scale = percentile_scale(volume, percentile)
  return np.clip(volume / scale, 0.0, 1.0).astype(np.float32)


def percentile_scale(volume: np.ndarray, percentile: float) -> float:
  """The intensity `normalize_percentile` maps to 1.

  Raises:
    DataError: when the volume has no positive voxel.
  """
  volume = np.asarray(volume, np.float32)
  positive = volume[volume > 0]
  if positive.size == 0:
    raise DataError("the volume has no positive voxel")
  return float(np.percentile(positive, percentile))


def orient(plane: np.ndarray) -> np.ndarray:
  """Turns a RAS plane (first axis horizontal) to the usual display view."""
  return np.rot90(plane)


def square_placement(shape: Sequence[int], size: int,
                     spacing: Sequence[float] = (1.0, 1.0)) -> tuple[int, int, int, int]:
  """Where `fit_to_square` puts an image of `shape`: (height, width, top, left).

  The image is scaled so its larger physical side fills `size` and centred.
  """
  h, w = shape
  ph, pw = h * spacing[0], w * spacing[1]
  scale = size / max(ph, pw)
  out_h = int(min(size, max(1, round(ph * scale))))
  out_w = int(min(size, max(1, round(pw * scale))))
  return out_h, out_w, (size - out_h) // 2, (size - out_w) // 2


def fit_to_square(image: np.ndarray, size: int, *, order: int,
                  spacing: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
  """Resizes `image` so its whole extent fits `size`, then zero-pads to square.

  The aspect ratio is kept in physical units (`spacing` is the pixel size of
  rows and columns). Downsampling low-passes first with a Gaussian of
  sigma = (factor - 1) / 2 (as scikit-image's anti-aliasing) so small sizes do
  not alias; `order=0` (nearest neighbour, for labels) never filters.

  Args:
    image: (H, W) array.
    size: output side length.
    order: spline order for `scipy.ndimage.zoom` (1 for images, 0 for labels).
    spacing: physical (row, column) pixel size.

  Returns:
    (size, size) array of the input dtype, the content centred.
  """
  h, w = image.shape
  out_h, out_w, top, left = square_placement((h, w), size, spacing)
  zoom = (out_h / h, out_w / w)
  source = image
  if order > 0:
    sigma = [max(0.0, (1.0 / z - 1.0) / 2.0) for z in zoom]
    if max(sigma) > 0:
      source = ndimage.gaussian_filter(image.astype(np.float32), sigma, mode="nearest")
  resized = ndimage.zoom(source, zoom, order=order, mode="nearest", grid_mode=True)
  resized = resized[:out_h, :out_w]
  out = np.zeros((size, size), dtype=image.dtype)
  out[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
  return out


def unfit_from_square(square: np.ndarray, shape: Sequence[int],
                      spacing: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
  """Inverse of `fit_to_square`: the image's region of `square` at `shape`.

  Cuts out the region `fit_to_square` filled and resizes it back (linear
  interpolation with the same grid convention), so a model's output on the
  square lies on the original pixel grid. Detail finer than the square's
  pixels is not recovered.

  Args:
    square: (size, size) array.
    shape: the original (H, W).
    spacing: the original physical (row, column) pixel size.

  Returns:
    (H, W) float32 array.
  """
  h, w = (int(v) for v in shape)
  out_h, out_w, top, left = square_placement((h, w), square.shape[0], spacing)
  region = np.asarray(square, np.float32)[top:top + out_h, left:left + out_w]
  back = ndimage.zoom(region, (h / out_h, w / out_w), order=1, mode="nearest",
                      grid_mode=True)
  out = np.zeros((h, w), np.float32)
  out[:min(h, back.shape[0]), :min(w, back.shape[1])] = back[:h, :w]
  return out


@dataclasses.dataclass(frozen=True)
class Slice:
  """One 2-D example before encoding: original slice index, image, label."""
  index: int
  image: np.ndarray
  label: np.ndarray | None = None


def foreground_fractions(foreground: np.ndarray, axis: int) -> np.ndarray:
  """Fraction of foreground voxels in each slice along `axis`."""
  others = tuple(a for a in range(3) if a != axis)
  return foreground.mean(axis=others)


def crop_box(foreground: np.ndarray, axis: int, min_foreground: float):
  """The kept slices of a volume and the crop box that `volume_slices` uses.

  Args:
    foreground: (X, Y, Z) boolean foreground mask, RAS.
    axis: slicing axis index.
    min_foreground: minimum foreground fraction of a kept slice.

  Returns:
    ``(keep, (r0, r1, c0, c1))``: the indices of the kept slices along
    ``axis`` and the half-open row and column bounds, in oriented (`orient`)
    plane coordinates, of the union of their foreground plus `CROP_MARGIN`;
    ``box`` is None when no slice is kept.
  """
  keep = np.flatnonzero(foreground_fractions(foreground, axis) >= min_foreground)
  if keep.size == 0:
    return keep, None
  # The crop box comes from all kept slices, so every split of a volume (and
  # every slice `reconstruct` puts back) shares one scale.
  planes = np.moveaxis(foreground, axis, 0)
  union = np.zeros(planes.shape[1:], bool)
  for k in keep:  # Plane by plane: a fancy-indexed copy of the volume is slow.
    union |= planes[k]
  union = orient(union)
  rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
  r0, r1 = max(rows[0] - CROP_MARGIN, 0), min(rows[-1] + 1 + CROP_MARGIN, union.shape[0])
  c0, c1 = max(cols[0] - CROP_MARGIN, 0), min(cols[-1] + 1 + CROP_MARGIN, union.shape[1])
  return keep, (int(r0), int(r1), int(c0), int(c1))


def oriented_spacing(spacing: Sequence[float], axis: int) -> tuple[float, float]:
  """The (row, column) pixel size of an `orient`ed plane cut along `axis`."""
  inplane = [s for a, s in enumerate(spacing) if a != axis]
  return (inplane[1], inplane[0])  # rot90 swaps the two axes


def volume_slices(image: np.ndarray, *, axis, size: int, min_foreground: float,
                  foreground: np.ndarray | None = None,
                  label: np.ndarray | None = None,
                  spacing: Sequence[float] = (1.0, 1.0, 1.0),
                  indices: Sequence[int] | None = None) -> Iterator[Slice]:
  """Cuts a normalized RAS volume into square slices that show the whole head.

  Slices whose foreground covers less than `min_foreground` of their area are
  dropped as background. Every kept slice is cropped to the same box (the
  union of the foreground over the volume, plus a margin), so all slices share
  one scale, then resized with `fit_to_square`.

  Args:
    image: (X, Y, Z) float volume in [0, 1], RAS orientation.
    axis: slicing axis (name or index).
    size: output side length.
    min_foreground: minimum foreground fraction of a kept slice.
    foreground: boolean foreground mask; default image > FOREGROUND_THRESHOLD
      (or label > 0).
    label: optional integer label volume of the same shape.
    spacing: voxel size of the three axes.
    indices: optional subset of slice indices to consider.

  Yields:
    `Slice` records in increasing slice index.
  """
  ax = axis_index(axis)
  if foreground is None:
    foreground = image > FOREGROUND_THRESHOLD
    if label is not None:
      foreground = foreground | (label > 0)
  keep, box = crop_box(foreground, ax, min_foreground)
  if keep.size == 0:
    return
  if indices is not None:
    keep = np.intersect1d(keep, np.asarray(indices, int))
  r0, r1, c0, c1 = box
  plane_spacing = oriented_spacing(spacing, ax)
  image_planes = np.moveaxis(image, ax, 0)
  label_planes = None if label is None else np.moveaxis(label, ax, 0)
  for k in keep:
    img = orient(image_planes[k])[r0:r1, c0:c1]
    img = np.clip(fit_to_square(img.astype(np.float32), size, order=1,
                                spacing=plane_spacing), 0.0, 1.0)
    lab = None
    if label is not None:
      lab = orient(label_planes[k])[r0:r1, c0:c1]
      lab = fit_to_square(lab, size, order=0, spacing=plane_spacing)
    yield Slice(int(k), img, lab)
