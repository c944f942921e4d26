"""What a user is told about how their scan was read: one line each.

`hyperrecon_jax.scans` normalizes a NIfTI volume as the data pipeline does:
it divides it by a percentile of its positive voxels, clips it to [0, 1],
crops every slice to the box of the slices with enough foreground and resizes
it to the model's grid. Each step can lose what the scan holds. The warnings
(`scans.Scan.warnings`: reasons to distrust the output's intensity) name a
scale set by a handful of voxels or by a small bright region, negative or very
bright voxels clipped, foreground outside the box, and a volume of a few
distinct values (a mask or a segmentation); each function returns
an empty tuple when there is nothing to say. The resolution note
(`scans.Scan.notes`) says at what resolution the model works.
"""

import numpy as np

from hyperrecon_jax.data import slicing

# Below this many voxels above the normalization percentile, the intensity
# scale is the value of a handful of voxels: one bright outlier sets the
# contrast the model sees.
MIN_VOXELS_ABOVE_PERCENTILE = 5
# The clip to [0, scale] is worth a warning when it takes this share of the
# voxels above the background below 0, or this share of the positive voxels
# above CAPPED_FACTOR × the scale (a scan's own brightest voxels, the 0.5 %
# above the percentile, lie mostly below it).
NEGATIVE_SHARE = 0.01
CAPPED_FACTOR = 2.0
CAPPED_SHARE = 0.0005
# A percentile scale above this many times the 99th percentile of the positive
# voxels is set by a bright region of under 1 % of them (the MNI152 template's
# 99.5th percentile is 1.009× its 99th): from 0.5 % of the voxels on, such a
# region is the percentile itself, which the capped count above cannot see.
BRIGHT_SCALE_FACTOR = 2.0
# Foreground outside the crop box (in slices too empty to be kept, whose
# voxels the box was not made from) comes back as 0: worth a warning from this
# share of the scan's foreground voxels on (a stray speck of noise is not).
OUTSIDE_SHARE = 0.0005
# A scan from a scanner or a pipeline has hundreds of distinct intensities or
# more (an 8-bit scan of a head uses most of its 256); a mask has 2, a
# segmentation one per label (FreeSurfer's aseg about 45).
FEW_VALUES = 64
# Voxels counted at a time: a scan shows more than FEW_VALUES in an evenly
# spread sample this large, and the whole volume is counted (in pieces this
# large, so that reading still holds about two copies of it) only when it does not.
_SAMPLE = 1 << 16


def scale_warning(positive: int, percentile: float) -> tuple:
  """A warning when fewer than `MIN_VOXELS_ABOVE_PERCENTILE` voxels lie above the scale.

  Args:
    positive: the scan's number of positive voxels.
    percentile: the normalization percentile (`config.data.percentile`).

  Returns:
    ``()`` or a one-line warning.
  """
  above = positive * (1.0 - percentile / 100.0)
  # A percentile written in decimal (99.9) is not one in binary: 5,000 voxels
  # at 99.9 give 4.99999999999945, five voxels all the same.
  if above >= MIN_VOXELS_ABOVE_PERCENTILE * (1 - 1e-9):
    return ()
  return (f"the intensity scale (the {percentile:g}th percentile) rests on {above:.4g} of "
          f"the scan's {positive:,} positive voxels, so one bright voxel sets the contrast "
          "the model sees: the output's intensity cannot be trusted",)


def clipping_warnings(data: np.ndarray, scale: float, positive: int) -> tuple:
  """What the clip to [0, scale] takes from the scan, where it takes a visible part.

  Negative voxels beyond the background level (a z-scored or offset scan) and
  voxels beyond `CAPPED_FACTOR` times the scale (a bright lesion) come back
  at 0 and at the scale: the output cannot show them.
  """
  warnings = []
  level = slicing.FOREGROUND_THRESHOLD * scale
  negative = int(np.count_nonzero(data < -level))
  # Masks, not np.abs(data): a mask is a quarter of a float32 volume.
  significant = int(np.count_nonzero(data > level)) + negative
  if negative and negative >= NEGATIVE_SHARE * significant:
    warnings.append(
        f"{negative:,} voxels ({negative / significant:.0%} of those above the background) are "
        f"negative, down to {float(data.min()):.4g}: the model reads magnitude images "
        "(intensities ≥ 0) and sets them to 0, so the output loses them (a z-scored or "
        "offset scan: reconstruct the scan as acquired)")
  capped = int(np.count_nonzero(data > CAPPED_FACTOR * scale))
  if capped >= max(MIN_VOXELS_ABOVE_PERCENTILE, CAPPED_SHARE * positive):
    warnings.append(
        f"{capped:,} voxels are brighter than {CAPPED_FACTOR:g}× the intensity scale "
        f"({scale:.4g}), up to {float(data.max()) / scale:.3g}×: the model reads them at the "
        "scale, so the output loses their contrast")
  return tuple(warnings)


def bright_region_warning(data: np.ndarray, scale: float) -> tuple:
  """A warning when a percentile scale lies beyond `BRIGHT_SCALE_FACTOR` × the 99th percentile.

  For a scale that is a high percentile (NIfTI's): a bright region of 0.5 to
  1 % of the positive voxels is then that percentile, and the rest of the
  scan reaches only a fraction of the model's range, darker than any image it
  learned from. (A fastMRI target's scale is its stored maximum, which lies
  above the 99th percentile by nature.)

  Args:
    data: the scan's voxels as read.
    scale: the intensity mapped to 1.

  Returns:
    ``()`` or a one-line warning.
  """
  values = data[slicing.positive_voxels(data)]
  # `values` is a copy of its own: partitioned in place, not copied again.
  p99 = float(np.percentile(values, 99, overwrite_input=True)) if values.size else 0.0
  if not (p99 > 0 and scale > BRIGHT_SCALE_FACTOR * p99):
    return ()
  return (f"the intensity scale ({scale:.4g}) is {scale / p99:.3g}× the 99th percentile of the "
          f"positive voxels ({p99:.4g}): a bright region of under 1 % of the scan sets it, and "
          f"the rest of the scan reaches at most {p99 / scale:.2g} of the model's range, darker "
          "than the images it learned from: the output's intensity and contrast cannot be "
          "trusted (mask or clip that region first)",)


def outside_box_warning(foreground: np.ndarray, axis: int, box: tuple) -> tuple:
  """Foreground the crop box leaves out, which the output puts back as 0.

  The box holds every kept slice's foreground (`slicing.crop_box`); a slice
  with too little foreground to be kept can reach beyond it, e.g. a bright
  marker or a part of the neck at the edge of the field of view.
  """
  r0, r1, c0, c1 = box
  total = int(np.count_nonzero(foreground))
  outside, where = 0, []
  for k, plane in enumerate(np.moveaxis(foreground, axis, 0)):
    oriented = slicing.orient(plane)
    n = int(np.count_nonzero(oriented)) - int(np.count_nonzero(oriented[r0:r1, c0:c1]))
    if n:
      outside += n
      where.append(k)
  if outside < max(MIN_VOXELS_ABOVE_PERCENTILE, OUTSIDE_SHARE * total):
    return ()
  return (f"{outside:,} foreground voxels in {len(where):,} slice(s) (RAS slices "
          f"{where[0]}–{where[-1]}) lie outside the crop box of the slices with enough "
          "foreground to be reconstructed as the model was trained: the model never sees "
          "them and the output is 0 there",)


def resolution_note(size: int, plane: tuple, grid: tuple, what: str, unit: str,
                    spacing: tuple = (1.0, 1.0)) -> str:
  """One line on the model's working resolution against the input's.

  Args:
    size: the model's side.
    plane: (rows, columns) of the region resized to fit (`slicing.fit_to_square`).
    grid: the input's shape, for the line.
    what: what the region is ("foreground box", "image").
    unit: what its elements are ("voxel", "pixel").
    spacing: the region's physical (row, column) element size: the resize
      keeps the physical aspect, so with anisotropic elements one side shrinks
      more than the other.

  Returns:
    The line, with the larger of the two sides' shrink factors: the region's
    larger physical side over ``size``, in elements of the finer spacing.
  """
  h, w = (int(n) for n in plane)
  coarser = max(h * spacing[0], w * spacing[1]) / size / min(spacing)
  detail = (f", {coarser:.1f}× coarser: detail finer than {coarser:.1f} {unit}s is lost"
            if coarser > 1.05 else "")
  return (f"the model reconstructs at {size}×{size}: each slice's {h}×{w}-{unit} {what} is "
          f"resized to fit{detail}; a reconstruction written out is put back on the input's "
          f"{'×'.join(str(n) for n in grid)} grid")


def few_values_warning(data: np.ndarray) -> tuple:
  """A warning when the volume holds at most `FEW_VALUES` distinct values.

  A mask or a segmentation given in place of the scan is reconstructed as an
  image of its labels, without a word otherwise.

  Args:
    data: the volume's voxels as read (before normalization).

  Returns:
    ``()`` or a one-line warning with the count and the first values.
  """
  flat = data.reshape(-1)
  if np.unique(flat[::max(1, flat.size // _SAMPLE)]).size > FEW_VALUES:
    return ()
  values = set()
  for start in range(0, flat.size, _SAMPLE):
    values.update(np.unique(flat[start:start + _SAMPLE]).tolist())
    if len(values) > FEW_VALUES:
      return ()
  values = np.sort(np.asarray(list(values)))
  shown = ", ".join(f"{v:g}" for v in values[:5]) + (", …" if values.size > 5 else "")
  return (f"the volume holds only {values.size} distinct values ({shown}): a mask or a "
          "segmentation rather than a scan? The model reconstructs it as an image",)
