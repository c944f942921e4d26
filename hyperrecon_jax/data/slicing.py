"""How a 3-D volume becomes the dataset's square 2-D slices, and back.

A volume, reoriented to RAS and normalized (`normalize_percentile`), is cut
along an axis; slices with too little foreground are dropped, every kept slice
is cropped to one box around the volume's foreground (`crop_box`), turned to
the display view (`orient`) and resized to a square that keeps the physical
aspect ratio (`fit_to_square`). `unfit_from_square` is the way back, onto the
original pixel grid. Used by the dataset builders (`hyperrecon_jax.data.mni152`,
`nifti`, `fastmri`) and by `hyperrecon_jax.reconstruct`, which cuts a user's
scan exactly as the datasets do and puts the reconstructions back.

Nothing here imports TensorFlow Datasets, grain or a file-format library, so
these helpers work with the core install.
"""

from collections.abc import Iterator
from collections.abc import Sequence
import dataclasses

import numpy as np
from scipy import ndimage

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors

# Voxels whose normalized intensity exceeds this count as foreground (head or
# brain) when dropping background slices and cropping to the head.
FOREGROUND_THRESHOLD = 0.05

# Voxels of margin kept around the head's bounding box before resizing, so the
# head never touches the image border.
CROP_MARGIN = 4

# A plane needs at least this many voxels along each side to be an image for
# the model: its Unet max-pools three times (8×), so a narrower plane is less
# than a pixel wide at its coarsest level (`config_fields.check_image_size` puts the
# same floor on the slices' size). A volume of 1–7 slices cut across them
# would give strips of one to seven rows stretched over the whole image.
MIN_PLANE = 8


def orientation_problem(affine) -> str | None:
  """Why a NIfTI affine gives the volume no orientation, or None if it gives one.

  nibabel's orientation of such an affine has NaN axes, and its errors then
  say nothing of the header ("expected str instance, NoneType found").
  """
  affine = np.asarray(affine, np.float64)
  if not np.all(np.isfinite(affine)):
    return ("its affine (the header's voxel-to-world matrix) holds NaN or ±Inf, so the "
            "volume has no orientation; fix the header")
  if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
    return ("its affine (the header's voxel-to-world matrix) is singular (a zero voxel size "
            "or repeated axes), so the volume has no orientation; fix the header")
  return None


def ras_shape(shape: Sequence[int], orientation) -> tuple[int, int, int]:
  """A volume's shape in RAS axis order, from its header alone (no voxel read).

  Args:
    shape: the stored voxel shape (its first three axes).
    orientation: ``nibabel.orientations.io_orientation`` of its affine:
      for each stored axis, its RAS axis and direction.
  """
  out = [0, 0, 0]
  for n, (ras_axis, _) in zip(shape, orientation):
    out[int(ras_axis)] = int(n)
  return tuple(out)


def plane_sides(shape: Sequence[int], axis) -> tuple[int, int]:
  """The sides of the planes cut along ``axis`` of a RAS ``shape``: the two other axes."""
  ax = config_fields.axis_index(axis)
  h, w = (int(n) for a, n in enumerate(shape) if a != ax)
  return h, w


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


# Voxels at or below this fraction of a volume's maximum are background, not
# "positive": a file that stores intensities as raw·slope + intercept reads
# back its zero background as float32 rounding (1e-7 of a scale of 200),
# which had counted as positive and moved the percentile.
POSITIVE_FRACTION = 1e-6


def positive_voxels(volume: np.ndarray) -> np.ndarray:
  """The mask of a volume's positive voxels: above `POSITIVE_FRACTION` of its maximum."""
  volume = np.asarray(volume, np.float32)
  peak = float(volume.max()) if volume.size else 0.0
  return volume > POSITIVE_FRACTION * max(peak, 0.0)


def percentile_scale(volume: np.ndarray, percentile: float) -> float:
  """The intensity `normalize_percentile` maps to 1: a percentile of the `positive_voxels`.

  Raises:
    DataError: when the volume has no positive voxel.
  """
  volume = np.asarray(volume, np.float32)
  positive = volume[positive_voxels(volume)]
  if positive.size == 0:
    raise data_errors.DataError("the volume has no positive voxel")
  # `positive` is a copy of its own: partitioned in place, not copied again.
  return float(np.percentile(positive, percentile, overwrite_input=True))


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
  ax = config_fields.axis_index(axis)
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
