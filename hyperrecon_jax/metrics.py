"""Image-quality metrics, per example.

Every per-slice metric takes (B, H, W) arrays and returns a (B,) vector (Dice:
(B, C)), never a batch mean, so that λ-grid evaluation and per-volume
aggregation can be done by the caller. Images are compared as they are (no
clipping); ``data_range`` is the peak value, 1 for images in [0, 1]. The
metrics are wrapped in ``jax.jit`` so that evaluating host arrays eagerly
runs one fused computation; inside another jit the wrapper costs nothing.

The fastMRI per-volume convention is provided separately by `volume_psnr`,
`volume_ssim` and `volume_nmse`, which take the (S, H, W) slices of one
volume and return a scalar: the data range is the target volume's maximum,
PSNR and NMSE pool the error over all voxels, and SSIM uses skimage's
default 7x7 uniform window with sample covariance, averaged over slices.
Their numbers differ from the mean over slices of the per-slice metrics
(peak 1, 11x11 Gaussian SSIM window); report which convention a number uses.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import filters

# Gaussian SSIM window of Wang et al. (2004), also the reference's SSIM loss.
SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# HFEN: 15x15 Laplacian of Gaussian, sigma 1.5 (radius 7 = truncate 7 / 1.5).
HFEN_SIGMA = 1.5
HFEN_RADIUS = 7


def check_images(name: str, x, layout: str = "(B, H, W)") -> None:
  """Raises ValueError unless ``x`` has 3 axes, named by ``layout`` in the message.

  Shapes are static, so under ``jax.jit`` the check runs once, at trace time.
  """
  shape = tuple(getattr(x, "shape", ()))
  if len(shape) != 3:
    raise errors.InputError(f"{name} must have shape {layout}, got shape {shape}.")
  if jnp.issubdtype(getattr(x, "dtype", jnp.float32), jnp.complexfloating):
    # float32 conversion would keep the real part and score that.
    raise errors.InputError(f"{name} is complex ({x.dtype}): pass real images, e.g. the "
                            "magnitude (hr.physics.magnitude of a (..., 2) image).")


def check_pair(pred, target, pred_name: str = "pred", target_name: str = "target",
               layout: str = "(B, H, W)") -> None:
  """Raises ValueError unless both are 3-axis arrays of the same shape."""
  check_images(pred_name, pred, layout)
  check_images(target_name, target, layout)
  if pred.shape != target.shape:
    raise errors.InputError(
        f"{pred_name} and {target_name} must have the same shape, got "
        f"{tuple(pred.shape)} and {tuple(target.shape)}.")


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


@jax.jit
def mse(pred, target):
  """Mean squared error per example, ``mean_pixels (pred - target)^2``."""
  check_pair(pred, target)
  return jnp.mean((_f32(pred) - _f32(target)) ** 2, axis=(1, 2))


@jax.jit
def mae(pred, target):
  """Mean absolute error per example, ``mean_pixels |pred - target|``."""
  check_pair(pred, target)
  return jnp.mean(jnp.abs(_f32(pred) - _f32(target)), axis=(1, 2))


@jax.jit
def psnr(pred, target, data_range=1.0):
  """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

  Args:
    pred: (B, H, W) reconstructions.
    target: (B, H, W) ground truth.
    data_range: peak value, a scalar or a (B,) vector.

  Returns:
    (B,) PSNR; ``inf`` where pred equals target.
  """
  return 10.0 * jnp.log10(_peak(data_range, pred.shape[0]) ** 2 / mse(pred, target))


def _peak(data_range, batch: int):
  """``data_range`` as a scalar or a (B,) float32 vector; other shapes are refused.

  (A (B, 1) range would broadcast against the (B,) values to a (B, B) table.)
  """
  peak = jnp.asarray(data_range, jnp.float32)
  if peak.shape not in ((), (batch,)):
    raise errors.InputError(f"data_range must be a scalar or a ({batch},) vector, one "
                            f"per image, got shape {tuple(peak.shape)}.")
  return peak


@jax.jit
def nmse(pred, target):
  """Normalized MSE per example, ``||pred - target||^2 / ||target||^2``."""
  check_pair(pred, target)
  pred, target = _f32(pred), _f32(target)
  return jnp.sum((pred - target) ** 2, axis=(1, 2)) / jnp.sum(target ** 2, axis=(1, 2))


@jax.jit
def ssim(pred, target, data_range=1.0):
  """Structural similarity per example, in [-1, 1].

  ``SSIM = mean_p [(2 mu_x mu_y + C1)(2 s_xy + C2)] / [(mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)]``
  with local means, variances and covariance from an 11x11 Gaussian window
  (sigma 1.5, population statistics), ``C1 = (0.01 L)^2``,
  ``C2 = (0.03 L)^2``, ``L = data_range``. The filtering is 'valid': the mean
  runs over the (H-10) x (W-10) positions where the window fits in the image,
  as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` averages (it filters with reflection but then
  crops 5 pixels from each border before the mean).

  Args:
    pred: (B, H, W) reconstructions, H, W >= 11.
    target: (B, H, W) ground truth.
    data_range: peak value, a scalar or a (B,) vector.

  Returns:
    (B,) SSIM.
  """
  check_pair(pred, target)
  if min(pred.shape[1:]) < SSIM_FILTER_SIZE:
    raise errors.InputError(
        f"ssim needs images of at least {SSIM_FILTER_SIZE}x{SSIM_FILTER_SIZE}, got "
        f"shape {tuple(pred.shape)}.")
  peak = _peak(data_range, pred.shape[0])
  if peak.ndim:
    # SSIM at range L is SSIM at range 1 of the images divided by L: the means
    # scale by 1/L, the (co)variances and C1, C2 by 1/L², and the ratio not at all.
    scale = peak[:, None, None]
    return ssim(_f32(pred) / scale, _f32(target) / scale)
  x, y = _f32(pred), _f32(target)
  window = filters.gaussian_window(SSIM_FILTER_SIZE, SSIM_FILTER_SIGMA)
  # The five local moments in one filter call, valid positions only. Stacked
  # on a new axis: concatenated along the batch and split again, the same
  # arrays made XLA's CPU gradient 2.6× slower (docs/changelog.md).
  moments = jnp.stack([x, y, x * x, y * y, x * y])
  for axis in (2, 3):
    moments = filters.correlate_valid(moments, window, axis)
  mu_x, mu_y, xx, yy, xy = moments
  # E[x²] − E[x]² can round below 0 on flat patches, and the covariance above
  # √(var_x var_y); clamped, every position's SSIM stays within [−1, 1].
  tiny = jnp.finfo(jnp.float32).eps ** 2
  var_x = jnp.maximum(xx - mu_x * mu_x, tiny)
  var_y = jnp.maximum(yy - mu_y * mu_y, tiny)
  cov = xy - mu_x * mu_y
  cov = jnp.sign(cov) * jnp.minimum(jnp.sqrt(var_x * var_y), jnp.abs(cov))
  c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
      (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
  return jnp.mean(ssim_map, axis=(1, 2))


@functools.partial(jax.jit, static_argnames=("sigma", "radius"))
def laplacian_of_gaussian(x, sigma: float = HFEN_SIGMA, radius: int = HFEN_RADIUS):
  """Per-image LoG, ``d2G/dy2 * x + d2G/dx2 * x``, (B, H, W) -> (B, H, W).

  Equals ``scipy.ndimage.gaussian_laplace(x[b], sigma, truncate=radius/sigma)``
  (default 'reflect' border): the sum over the two axes of a second-derivative
  Gaussian filter along that axis and a Gaussian filter along the other.
  """
  check_images("x", x)
  x = _f32(x)
  g = filters.gaussian_kernel1d(float(sigma), 0, int(radius))
  d2 = filters.gaussian_kernel1d(float(sigma), 2, int(radius))
  return (filters.correlate1d_reflect(filters.correlate1d_reflect(x, d2, 1), g, 2)
          + filters.correlate1d_reflect(filters.correlate1d_reflect(x, g, 1), d2, 2))


@jax.jit
def hfen(pred, target):
  """High-frequency error norm, ``||LoG(pred) - LoG(target)||_2 / ||LoG(target)||_2``.

  LoG is `laplacian_of_gaussian` (15x15, sigma 1.5). Normalized by the ground
  truth's LoG (the reference normalized by the prediction's). A constant
  target (all-zero included) has no edges: its LoG is 0, and its HFEN is not
  finite (inf, or NaN where the numerator is 0 as well). The truncated
  kernel's LoG of a constant c is about 8.9e-6·c instead of 0, and would
  give a large finite value that says nothing about the reconstruction.

  Args:
    pred: (B, H, W) reconstructions.
    target: (B, H, W) ground truth.

  Returns:
    (B,) HFEN.
  """
  check_pair(pred, target)
  # The filter is linear: LoG(pred) - LoG(target) is taken as LoG(pred -
  # target), which is exactly 0 for equal images on every backend (two
  # filterings of equal images, even in one batched call, differed by
  # rounding with jaxlib 0.6) and cancels nothing.
  pred, target = _f32(pred), _f32(target)
  diff, lt = jnp.split(laplacian_of_gaussian(jnp.concatenate([pred - target, target])), 2)
  constant = jnp.max(target, axis=(1, 2)) == jnp.min(target, axis=(1, 2))
  norm = jnp.where(constant, 0.0, jnp.sqrt(jnp.sum(lt ** 2, axis=(1, 2))))
  return jnp.sqrt(jnp.sum(diff ** 2, axis=(1, 2))) / norm


@jax.jit
def minmax(x):
  """Maps each image of (B, H, W) linearly onto [0, 1]; a constant image maps to 0."""
  check_images("x", x)
  x = _f32(x)
  lo = jnp.min(x, axis=(1, 2), keepdims=True)
  span = jnp.max(x, axis=(1, 2), keepdims=True) - lo
  return (x - lo) / jnp.where(span > 0, span, 1.0)


@jax.jit
def rpsnr(pred, zero_filled_magnitude, target):
  """Relative PSNR, the gain of the reconstruction over the zero-filled input, in dB.

  ``rPSNR = PSNR(mm(pred), mm(target)) - PSNR(mm(zf), mm(target))`` with peak 1,
  where ``mm`` is `minmax` applied to each image separately: all three images
  (reconstruction, zero-filled magnitude and ground truth) are min-max
  normalized to [0, 1] before the PSNRs are taken.

  Args:
    pred: (B, H, W) reconstructions.
    zero_filled_magnitude: (B, H, W) magnitude of the zero-filled input,
      e.g. ``physics.magnitude(zf)`` of the (B, H, W, 2) network input.
    target: (B, H, W) ground truth.

  Returns:
    (B,) rPSNR.
  """
  check_pair(pred, target)
  check_pair(zero_filled_magnitude, target, "zero_filled_magnitude")
  t = minmax(target)
  return psnr(minmax(pred), t) - psnr(minmax(zero_filled_magnitude), t)


def dice(pred_labels, true_labels, num_classes: int):
  """Hard Dice per class, ``2 |P_c & T_c| / (|P_c| + |T_c|)``.

  A class absent from both label maps scores 1.0 (perfect agreement).

  Args:
    pred_labels: (B, H, W) integer labels in [0, num_classes).
    true_labels: (B, H, W) integer labels in [0, num_classes).
    num_classes: number of classes C (static), >= 1.

  Returns:
    (B, C) Dice, background class 0 included.
  """
  check_pair(pred_labels, true_labels, "pred_labels", "true_labels")
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 1:
    raise errors.InputError(f"num_classes must be an int >= 1, got {num_classes!r}.")
  for name, lab in (("pred_labels", pred_labels), ("true_labels", true_labels)):
    check_labels(lab, num_classes, name)
  return _dice(pred_labels, true_labels, num_classes)


def check_labels(labels, num_classes: int, name: str = "labels") -> None:
  """Refuses labels that are not integers in [0, num_classes).

  ``one_hot`` maps a label outside [0, C) to no class at all, which would
  silently drop those pixels from every class's Dice, and a cast to int
  would truncate float labels (2.9 → 2). Labels traced under a caller's jit
  cannot be looked at; those come from argmax or checked data.

  Raises:
    InputError: naming ``name``, the dtype or the labels outside the range.
  """
  dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
  if not jnp.issubdtype(dtype, jnp.integer):
    raise errors.InputError(f"{name} must be integer labels, got dtype {dtype}.")
  if not isinstance(labels, jax.core.Tracer):
    values = np.asarray(labels)
    outside = (values < 0) | (values >= num_classes)
    if outside.any():
      raise errors.InputError(
          f"{name}: {int(outside.sum()):,} of {values.size:,} labels lie outside "
          f"[0, {num_classes}) (values {values.min()}..{values.max()}); they would "
          "belong to no class.")


@functools.partial(jax.jit, static_argnames="num_classes")
def _dice(pred_labels, true_labels, num_classes: int):
  p = jax.nn.one_hot(pred_labels, num_classes, dtype=jnp.float32)
  t = jax.nn.one_hot(true_labels, num_classes, dtype=jnp.float32)
  inter = jnp.sum(p * t, axis=(1, 2))
  total = jnp.sum(p, axis=(1, 2)) + jnp.sum(t, axis=(1, 2))
  return jnp.where(total > 0, 2 * inter / jnp.where(total > 0, total, 1.0), 1.0)


# fastMRI per-volume metrics (conventions in the module docstring).

FASTMRI_SSIM_WIN = 7


def _check_volumes(pred_volume, target_volume):
  check_pair(pred_volume, target_volume, "pred_volume", "target_volume", "(S, H, W)")


def _range(target_volume, data_range):
  """The volume's peak L: ``data_range``, a scalar, or the target's maximum for None.

  One volume has one peak, shared by its slices: a vector would broadcast
  against the scalar result (or the slices) into a vector of scores.
  """
  if data_range is None:
    return jnp.max(target_volume)
  if np.shape(data_range) != ():
    raise errors.InputError(f"data_range must be a scalar, the volume's peak L, got shape "
                            f"{np.shape(data_range)}")
  return jnp.asarray(data_range, jnp.float32)


@jax.jit
def volume_psnr(pred_volume, target_volume, data_range=None):
  """fastMRI PSNR of a volume, ``10 log10(L^2 / mean_voxels (pred - target)^2)``.

  Args:
    pred_volume: (S, H, W) reconstructed slices of one volume.
    target_volume: (S, H, W) ground-truth slices.
    data_range: the peak L, a scalar; defaults to ``max(target_volume)`` as
      in fastMRI.

  Returns:
    Scalar PSNR in dB.

  Raises:
    InputError: a ``data_range`` that is not a scalar.
  """
  _check_volumes(pred_volume, target_volume)
  pred, target = _f32(pred_volume), _f32(target_volume)
  return 10.0 * jnp.log10(_range(target, data_range) ** 2 / jnp.mean((pred - target) ** 2))


@jax.jit
def volume_nmse(pred_volume, target_volume):
  """fastMRI NMSE of a volume, ``||pred - target||^2 / ||target||^2`` over all voxels."""
  _check_volumes(pred_volume, target_volume)
  pred, target = _f32(pred_volume), _f32(target_volume)
  return jnp.sum((pred - target) ** 2) / jnp.sum(target ** 2)


def _box_mean(x, win):
  """Valid-mode win x win moving average of (S, H, W)."""
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, win, win), (1, 1, 1), "VALID")
  return s / (win * win)


@functools.partial(jax.jit, static_argnames="gaussian")
def volume_ssim(pred_volume, target_volume, data_range=None, *, gaussian=False):
  """fastMRI SSIM of a volume: the mean over slices of per-slice SSIM.

  Per slice, ``SSIM = mean_p [(2 mu_x mu_y + C1)(2 s_xy + C2)] /
  [(mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)]`` with ``C1 = (0.01 L)^2``,
  ``C2 = (0.03 L)^2`` and ``L = max(target_volume)`` shared by all slices.
  By default the local statistics come from a 7x7 uniform window with sample
  (co)variances (x 49/48), averaged over the (H-6) x (W-6) positions where
  the window fits, which is exactly fastMRI's
  ``structural_similarity(gt[s], pred[s], data_range=gt.max())``.

  Args:
    pred_volume: (S, H, W) reconstructed slices of one volume.
    target_volume: (S, H, W) ground-truth slices.
    data_range: the peak L, a scalar; defaults to ``max(target_volume)``.
    gaussian: use the 11x11 Gaussian window of `ssim`
      instead (same volume data range and slice average).

  Returns:
    Scalar SSIM.

  Raises:
    InputError: a ``data_range`` that is not a scalar.
  """
  _check_volumes(pred_volume, target_volume)
  pred, target = _f32(pred_volume), _f32(target_volume)
  peak = _range(target, data_range)
  if gaussian:
    return jnp.mean(ssim(pred, target, data_range=peak))
  win = FASTMRI_SSIM_WIN
  if min(pred.shape[1:]) < win:
    raise errors.InputError(
        f"volume_ssim needs slices of at least {win}x{win}, got shape {tuple(pred.shape)}.")
  c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
  # The (co)variances are taken about each slice's mean: E[x²] − E[x]² of
  # the raw values loses float32 digits on flat windows, where it is a small
  # difference of large numbers (SSIM off by 8e-4 on two flat slices).
  t_mean = jnp.mean(target, axis=(1, 2), keepdims=True)
  p_mean = jnp.mean(pred, axis=(1, 2), keepdims=True)
  t, p = target - t_mean, pred - p_mean
  mt, mp = _box_mean(t, win), _box_mean(p, win)
  cov_norm = win * win / (win * win - 1.0)
  vx = cov_norm * (_box_mean(t * t, win) - mt * mt)
  vy = cov_norm * (_box_mean(p * p, win) - mp * mp)
  vxy = cov_norm * (_box_mean(t * p, win) - mt * mp)
  mx, my = mt + t_mean, mp + p_mean
  s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
  return jnp.mean(s)
