"""Arrays equal to float32 rounding: the copies that an exact digest misses.

The copy checks compare SHA-256 digests of normalized voxels or slices
(`checksums.array_digest`), which catch a file stored in other bytes as long
as its normalized values come out bit for bit the same. They do not always: a
volume saved with another ``scl_slope`` (3 instead of 1), or its voxels
multiplied by 3 and stored as floats, is normalized by a percentile of its
own, and the float32 quotients differ from the original's by one or two units
in the last place (up to 1.2·10⁻⁷ of values in [0, 1]) at about a sixth of the
voxels. An `Index` finds such copies without keeping the arrays: it keeps a
`thumbnail` of each (means over at most 16 blocks per axis, 256 numbers for a
slice) and calls two arrays of one shape the same when every block mean
agrees within `TOLERANCE`. Rounding moves a block mean by at most the largest
difference of its voxels (≤ 1.2·10⁻⁷ here); two different images, even
neighbouring slices of one volume, differ by orders of magnitude more
somewhere. A copy resampled, filtered or cropped to another box is another
image and is not found (docs/data.md).
"""

import numpy as np

# 80× the largest difference float32 rounding makes here; the smallest largest
# block-mean difference between any two slices of a split of the embedded
# MNI152 data, at 64×64 and at 256×256, is 0.037.
TOLERANCE = 1e-5
BLOCKS = 16  # per axis
# Thumbnails are filed by their mean in bins this wide; a match lies in the
# same or a neighbouring bin (`TOLERANCE` is below a bin's width).
_BIN = 1e-4
# An array whose every block mean lies below this is nearly blank (one voxel
# of 2·10⁻³ in a 256×256 slice); any two such would match, so they are not
# compared (exact digests still are).
MIN_SIGNAL = 100 * TOLERANCE


def thumbnail(array) -> np.ndarray:
  """Means of ``array`` over at most `BLOCKS` nearly equal blocks per axis (float64)."""
  out = np.asarray(array, np.float64)
  for axis, n in enumerate(out.shape):
    edges = np.linspace(0, n, min(BLOCKS, n) + 1).astype(int)
    counts = np.diff(edges).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
    out = np.add.reduceat(out, edges[:-1], axis=axis) / counts
  return out


class Index:
  """Thumbnails of arrays, each with a name, to find an array's near copy among them."""

  def __init__(self):
    self._bins: dict[tuple, list[tuple[np.ndarray, object]]] = {}

  @staticmethod
  def _bin(shape: tuple, thumb: np.ndarray) -> tuple:
    return shape, int(np.floor(float(thumb.mean()) / _BIN))

  def add(self, array, name) -> None:
    """Files ``array`` (by its thumbnail) under ``name``."""
    array = np.asarray(array)
    thumb = thumbnail(array)
    if thumb.max() >= MIN_SIGNAL:
      self._bins.setdefault(self._bin(array.shape, thumb), []).append((thumb, name))

  def find(self, array):
    """The name of an added array of the same shape equal to ``array`` within `TOLERANCE`, or None.

    Args:
      array: an array of the same kind as those added (values in [0, 1]).

    Returns:
      The name given to `add` with the first matching array, or None (also
      for a nearly blank array, `MIN_SIGNAL`).
    """
    array = np.asarray(array)
    thumb = thumbnail(array)
    if thumb.max() < MIN_SIGNAL:
      return None
    shape, k = self._bin(array.shape, thumb)
    for b in (k, k - 1, k + 1):
      for other, name in self._bins.get((shape, b), ()):
        if np.max(np.abs(other - thumb)) <= TOLERANCE:
          return name
    return None
