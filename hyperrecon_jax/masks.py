"""Undersampling masks for compressed-sensing MRI (host NumPy, cached).

Convention: every mask is returned **centred**, i.e. with the k-space centre
(DC) at index ``(H // 2, W // 2)``, the way masks are usually drawn and
stored. `hyperrecon_jax.physics.CSMRI` applies ``ifftshift`` to the mask once
so that it lines up with the *unshifted* orthonormal FFT of the image.

Masks are float32 arrays of 0s and 1s with shape ``(H, W)``. Generation runs
on the host with NumPy, is deterministic given ``seed``, and is cached, so
asking again for the same mask is free (a fresh copy is returned each time).
The real acceleration of a mask is ``H * W / number of sampled entries``; see
`acceleration`.
"""

from collections.abc import Sequence
import functools
import math

import numpy as np

from hyperrecon_jax import errors

# Poisson-disc radius bisection: relative tolerance on the achieved
# acceleration and the cap on the number of trial masks.
_POISSON_RTOL = 0.02
_POISSON_MAX_TRIALS = 40
# Random sequential adsorption of disks saturates at ~0.547 area coverage,
# i.e. ~0.7 / r^2 points per pixel for exclusion radius r; used only for the
# first guess of the radius scale.
_RSA_DENSITY = 0.7


def _whole(value) -> int | None:
  """``value`` as an int if it is a whole number (64, 64.0, np.int64(64)), else None."""
  if isinstance(value, (bool, np.bool_)):
    return None
  try:
    whole = int(value)
    return whole if float(value) == whole else None
  except (TypeError, ValueError, OverflowError):  # None, a string, NaN, ±inf
    return None


def _check_shape(shape) -> tuple[int, int]:
  try:
    sides = tuple(_whole(s) for s in shape)
  except TypeError:
    raise errors.InputError(f"shape must be a pair of positive ints, got {shape!r}.") from None
  if len(sides) != 2 or None in sides or min(sides) < 1:
    # int() would cut 64.7 to 64 and build a mask of a size nobody asked for.
    raise errors.InputError(f"shape must be a pair of positive ints (H, W), got {shape!r}.")
  return sides


def _check_seed(seed) -> int:
  whole = _whole(seed)
  if whole is None or whole < 0:
    # int() would cut 1.5 to 1: the mask of another seed, without a word.
    raise errors.InputError(f"seed must be a whole number ≥ 0, got {seed!r}.")
  return whole


def _check_acceleration(acceleration) -> float:
  try:
    acceleration = float(acceleration)
  except (TypeError, ValueError):
    raise errors.InputError(f"acceleration must be a finite number > 1, got "
                            f"{acceleration!r}.") from None
  if not acceleration > 1.0 or not math.isfinite(acceleration):
    raise errors.InputError(f"acceleration must be a finite number > 1, got {acceleration!r}.")
  return acceleration


def acceleration(mask) -> float:
  """The real acceleration of a mask: ``mask.size / number of sampled entries``.

  Args:
    mask: array of 0s and 1s (any shape, any dtype).

  Returns:
    The acceleration as a Python float (``inf`` for an empty mask).
  """
  mask = np.asarray(mask)
  num_sampled = int(np.count_nonzero(mask))
  return math.inf if num_sampled == 0 else mask.size / num_sampled


def _calib_slices(shape, calib):
  return tuple(slice(n // 2 - c // 2, n // 2 - c // 2 + c) for n, c in zip(shape, calib))


def _default_calib(shape):
  # ~8% of each side (20 lines at 256), at least 2 so a tiny mask keeps a centre.
  return tuple(min(n, max(2, round(0.08 * n))) for n in shape)


def _greedy_disc_mask(cand, scale_y, scale_x, priority):
  """Sequential greedy variable-radius Poisson-disc selection, in parallel rounds.

  Visiting candidates in ``priority`` order and keeping each one that has no
  kept neighbour within its exclusion ellipse is random sequential adsorption,
  i.e. dart throwing restricted to pixel centres. Doing that in Python is too
  slow, so the same result is computed in rounds: a candidate is decided once
  all its earlier conflicting candidates are decided (kept if none of them was
  kept). Two pixels conflict when their offset lies inside the ellipse of the
  larger of their two radii.

  Args:
    cand: (H, W) bool, pixels that may be sampled.
    scale_y, scale_x: (H, W) exclusion radii in pixels along each axis (>= 1).
    priority: (H, W) distinct integers, the visiting order.

  Returns:
    (H, W) bool mask of the kept pixels.
  """
  h, w = cand.shape
  ry_max = int(math.ceil(scale_y[cand].max())) if cand.any() else 1
  rx_max = int(math.ceil(scale_x[cand].max())) if cand.any() else 1
  pad = ((ry_max, ry_max), (rx_max, rx_max))
  cand_p = np.pad(cand, pad)
  sy_p = np.pad(scale_y, pad)
  sx_p = np.pad(scale_x, pad)
  prio_p = np.pad(priority, pad)
  index_p = np.pad(np.arange(h * w).reshape(h, w), pad)
  later_list, earlier_list = [], []
  # Offsets in one half-plane; each unordered pair is visited once.
  for dy in range(0, ry_max + 1):
    for dx in range(-rx_max, rx_max + 1):
      if dy == 0 and dx <= 0:
        continue
      win = (slice(ry_max + dy, ry_max + dy + h), slice(rx_max + dx, rx_max + dx + w))
      sy = np.maximum(scale_y, sy_p[win])
      sx = np.maximum(scale_x, sx_p[win])
      conflict = cand & cand_p[win] & ((dy / sy) ** 2 + (dx / sx) ** 2 < 1.0)
      if not conflict.any():
        continue
      i = np.flatnonzero(conflict)
      j = index_p[win].ravel()[i]
      i_first = priority.ravel()[i] < prio_p[win].ravel()[i]
      earlier_list.append(np.where(i_first, i, j))
      later_list.append(np.where(i_first, j, i))
  earlier = np.concatenate(earlier_list) if earlier_list else np.zeros(0, int)
  later = np.concatenate(later_list) if later_list else np.zeros(0, int)

  undecided = cand.ravel().copy()
  kept = np.zeros(h * w, bool)
  while undecided.any():
    blocked = np.zeros(h * w, bool)
    blocked[later[undecided[earlier]]] = True
    new = undecided & ~blocked
    kept |= new
    killed = np.zeros(h * w, bool)
    killed[later[new[earlier]]] = True
    undecided &= ~(new | killed)
    # Edges with a decided end can never block or kill again.
    live = undecided[earlier] & undecided[later]
    earlier, later = earlier[live], later[live]
  return kept.reshape(h, w)


def _calib_distance(shape, calib):
  """(H, W) normalised distance of each pixel from the calibration box."""
  ny, nx = shape
  cy, cx = calib
  y, x = np.mgrid[:ny, :nx].astype(np.float64)
  # As in sigpy.mri.poisson: 0 inside the box, 1 at the middle of each edge of
  # k-space; measured from the DC index n // 2, where the box is centred
  # (sigpy's n / 2 is half a pixel off it on an odd side, where frequency −k
  # then fell farther out than +k and was sampled less).
  dx = np.maximum(np.abs(x - nx // 2) - cx / 2, 0)
  dy = np.maximum(np.abs(y - ny // 2) - cy / 2, 0)
  dx /= max(dx.max(), 1e-12)
  dy /= max(dy.max(), 1e-12)
  return np.hypot(dx, dy)


def _bisect_accel(make, x, accel, rtol, x_max, increasing, hi=None):
  """The (mask, acceleration) of ``make(x)`` closest to ``accel``, bisecting ``x >= 0``."""
  lo = 0.0
  best = None
  for _ in range(_POISSON_MAX_TRIALS):
    mask, got = make(x)
    if best is None or abs(got - accel) < abs(best[1] - accel):
      best = mask, got
    if abs(got - accel) <= rtol * accel:
      break
    if (got < accel) == increasing:
      lo = x
    else:
      hi = x
    if hi is None:
      if x > x_max:
        break  # only the calibration box is left; cannot go sparser.
      x *= 1.3
    else:
      x = 0.5 * (lo + hi)
  return best


def _slope_guess(scales, base, cand, accel, m):
  """The slope at which the saturated RSA density model reaches ``accel``."""
  # A first guess from the model means no trial uses huge radii (their cost
  # grows with the radius squared).
  ny, nx = base.shape

  def model_accel(slope):
    sy, sx = scales(slope)
    density = np.minimum(1.0, _RSA_DENSITY / (sy * sx))
    return ny * nx / (base.sum() + density[cand].sum())

  lo, hi = 0.0, float(m)
  for _ in range(50):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if model_accel(mid) < accel else (lo, mid)
  return hi


@functools.lru_cache(maxsize=64)
def _poisson_disc_cached(shape, accel, seed, calib, crop_corner, rtol):
  """The Poisson-disc mask of `poisson_disc` for checked, hashable arguments."""
  ny, nx = shape
  r = _calib_distance(shape, calib)
  base = np.zeros(shape, bool)
  base[_calib_slices(shape, calib)] = True
  cand = ~base
  if crop_corner:
    cand &= r < 1
  priority = np.random.default_rng(seed).permutation(ny * nx).reshape(shape)
  m = max(nx, ny)

  def scales(slope, core=0.0):
    s = 1.0 + slope * np.maximum(r - core, 0.0)
    return np.maximum(s * ny / m, 1.0), np.maximum(s * nx / m, 1.0)

  def trial(slope, core=0.0):
    mask = base | _greedy_disc_mask(cand, *scales(slope, core), priority)
    return mask, ny * nx / np.count_nonzero(mask)

  full_accel = trial(0.0)[1]
  if full_accel > accel * (1 + rtol):
    raise errors.InputError(
        f"acceleration={accel} is below the smallest one a Poisson-disc mask of "
        f"shape {shape} with crop_corner={crop_corner} reaches ({full_accel:.3f}).")
  # On the pixel grid any radius > 1 already excludes the 4-neighbours, so the
  # density jumps from 1 to ~1/3 as soon as slope > 0. Accelerations below
  # that jump (~3x) are reached instead by growing a fully sampled core
  # r < core (radius 1) inside the densest sparse pattern (radius just above 1).
  tiny_slope = 1e-3
  jump_mask, jump_accel = trial(tiny_slope)
  if accel < jump_accel * (1 - rtol):
    best_mask, best_accel = _bisect_accel(lambda c: trial(tiny_slope, c), 0.5, accel, rtol,
                                          4 * m, increasing=False, hi=1.0)
  else:
    slope = max(_slope_guess(scales, base, cand, accel, m), tiny_slope)
    best_mask, best_accel = _bisect_accel(trial, slope, accel, rtol, 4 * m, increasing=True)
    if abs(jump_accel - accel) < abs(best_accel - accel):
      best_mask, best_accel = jump_mask, jump_accel
  if abs(best_accel - accel) > 0.05 * accel:
    raise errors.InputError(
        f"acceleration={accel} cannot be reached within 5% for shape {shape} and "
        f"calib={calib}: closest is {best_accel:.3f}.")
  return best_mask.astype(np.float32)


def poisson_disc(shape: Sequence[int],
                 acceleration: float,
                 *,
                 seed: int = 0,
                 calib: Sequence[int] | None = None,
                 crop_corner: bool = True,
                 rtol: float = _POISSON_RTOL) -> np.ndarray:
  """Variable-density 2-D Poisson-disc mask, centred.

  Samples are pixels kept by dart throwing (random sequential adsorption in a
  seeded random order) with an exclusion radius that grows linearly with the
  distance ``r`` from the calibration box, ``radius = 1 + slope * r`` pixels
  (per axis scaled by the aspect ratio, as sigpy.mri.poisson does), so the
  density falls off toward the edges of k-space (a radius of 1 excludes no
  other pixel, i.e. samples fully). ``slope`` is found by bisection until the
  real acceleration is within ``rtol`` of the request; on a small mask, where
  one sample more or less moves the acceleration by more than that, the
  closest trial is kept, and refused if it is more than 5% off. On the pixel
  grid any radius > 1 excludes the 4-neighbours, so the density drops from 1
  to about 1/3 at once; requests below that jump (about 3x) use a tiny slope
  and instead bisect the size of a fully sampled disc ``r < core`` around the
  calibration box. The ``calib`` box around the centre is always fully
  sampled, and with ``crop_corner`` the corners outside the ellipse inscribed
  in k-space are never sampled (this limits the smallest acceleration to
  about 4/pi for a square image).

  Args:
    shape: (H, W) of the mask, whole numbers (64 or 64.0, not 64.7).
    acceleration: requested acceleration, a finite number > 1.
    seed: seed of the random visiting order; same seed, same mask.
    calib: (cH, cW) size of the fully sampled calibration box; defaults to 8%
      of each side (at least 2), i.e. 20x20 at 256x256 and 5x5 at 64x64.
    crop_corner: leave the k-space corners (outside the inscribed ellipse)
      unsampled.
    rtol: relative tolerance on the achieved acceleration, 0.02 by default (at
      most 0.05). Changing it changes the masks of existing configs.

  Returns:
    (H, W) float32 array of 0s and 1s with the k-space centre at
    (H // 2, W // 2).

  Raises:
    ValueError: for a shape that is not two whole numbers ≥ 1, an
      acceleration that is not a finite number > 1, a calibration box that
      is not two whole numbers or does not fit, a seed that is not a whole
      number ≥ 0, or an acceleration that cannot be reached within 5%.
  """
  shape = _check_shape(shape)
  accel = _check_acceleration(acceleration)
  if calib is None:
    calib = _default_calib(shape)
  try:
    sides = tuple(_whole(c) for c in calib)
  except TypeError:
    raise errors.InputError(f"calib must be a pair of ints, got {calib!r}.") from None
  if None in sides:  # int() would cut (8.5, 8) to (8, 8)
    raise errors.InputError(f"calib must be a pair of ints, got {calib!r}.")
  calib = sides
  if len(calib) != 2 or min(calib) < 0 or any(c >= n for c, n in zip(calib, shape)):
    raise errors.InputError(
        f"calib must be a pair of ints 0 <= c < side, got {calib!r} for shape {shape}.")
  if calib[0] * calib[1] > shape[0] * shape[1] / accel:
    raise errors.InputError(
        f"calib={calib} alone samples more than 1/acceleration={1 / accel:.4f} "
        f"of a {shape} mask; use a smaller calib or acceleration.")
  if not 0 < rtol <= 0.05:
    raise errors.InputError(f"rtol must be in (0, 0.05], got {rtol!r}.")
  return _poisson_disc_cached(shape, accel, _check_seed(seed), calib, bool(crop_corner),
                              float(rtol)).copy()


@functools.lru_cache(maxsize=64)
def _cartesian_cached(shape, accel, center_fraction, kind, seed):
  h, w = shape
  num_low = max(1, round(w * center_fraction))
  num_lines = max(num_low, round(w / accel))
  rng = np.random.default_rng(seed)
  cols = np.zeros(w, bool)
  # Same placement of the low-frequency block as fastMRI's mask functions.
  pad = (w - num_low + 1) // 2
  cols[pad:pad + num_low] = True
  outside = np.flatnonzero(~cols)
  extra = num_lines - num_low
  if kind == "random":
    # Exactly `extra` lines (fastMRI draws each line independently, which only
    # matches the acceleration on average).
    cols[rng.choice(outside, size=extra, replace=False)] = True
  elif extra:
    # Evenly spaced among the columns outside the centre block, random offset;
    # like fastMRI's equispaced masks but with the exact number of lines.
    spacing = outside.size / extra
    offset = rng.uniform(0, spacing)
    cols[outside[np.floor(offset + np.arange(extra) * spacing).astype(int)]] = True
  mask = np.zeros(shape, np.float32)
  mask[:, cols] = 1.0
  return mask


def cartesian(shape: Sequence[int],
              acceleration: float,
              *,
              center_fraction: float = 0.08,
              kind: str = "random",
              seed: int = 0) -> np.ndarray:
  """1-D Cartesian (fastMRI-style) mask of full columns, centred.

  Phase encodes run along the last axis (fastMRI convention): each sampled
  column ``k`` gives ``mask[:, k] = 1``. A block of
  ``max(1, round(W * center_fraction))`` central columns is always sampled
  (the DC column at least, however narrow the mask); the remaining columns,
  chosen uniformly at random (``kind='random'``) or evenly spaced among the
  non-central columns with a random offset (``kind='equispaced'``), bring the
  total to ``round(W / acceleration)`` columns (the block alone where that is
  fewer), so the real acceleration is as close to the request as whole columns
  allow.

  Args:
    shape: (H, W) of the mask, whole numbers (64 or 64.0, not 64.7).
    acceleration: requested acceleration, a finite number > 1.
    center_fraction: fraction of columns in the fully sampled centre, in (0, 1).
    kind: 'random' or 'equispaced'.
    seed: seed of the random choices; same seed, same mask.

  Returns:
    (H, W) float32 array of 0s and 1s, k-space centre at column W // 2.

  Raises:
    ValueError: for a shape that is not two whole numbers ≥ 1, an
      acceleration that is not a finite number > 1, center_fraction outside
      (0, 1) or larger than 1 / acceleration, an unknown kind, or a seed that
      is not a whole number ≥ 0.
  """
  shape = _check_shape(shape)
  accel = _check_acceleration(acceleration)
  center_fraction = float(center_fraction)
  if not 0 < center_fraction < 1:
    raise errors.InputError(f"center_fraction must be in (0, 1), got {center_fraction!r}.")
  if round(shape[1] * center_fraction) > round(shape[1] / accel):
    raise errors.InputError(
        f"center_fraction={center_fraction} samples more columns than "
        f"acceleration={accel} allows for width {shape[1]}.")
  if kind not in ("random", "equispaced"):
    raise errors.InputError(f"kind must be 'random' or 'equispaced', got {kind!r}.")
  return _cartesian_cached(shape, accel, center_fraction, kind, _check_seed(seed)).copy()
