"""The loss terms' formulas: each maps a batch to a (B,) vector, never a scalar.

DHS ranks samples by their own data-consistency loss and the training loss
weights each sample by its own λ, so no term averages over the batch.
Supervised terms (`mae`, `mse`, `dssim`, `hfen`) compare the reconstruction
with the ground truth; the others read the measurement (`data_consistency`),
the generated weights (`weight_l1`) or the reconstruction alone
(`total_variation`, `wavelet_l1`).
"""

import functools

import jax
import jax.numpy as jnp

from hyperrecon_jax import errors
from hyperrecon_jax import filters
from hyperrecon_jax import metrics as _metrics
from hyperrecon_jax import wavelets

_check_images = _metrics.check_images
_check_pair = _metrics.check_pair


def mae(recon, target):
  """Mean absolute error, ``mean_pixels |recon - target|``: (B, H, W) x2 -> (B,)."""
  return _metrics.mae(recon, target)


def mse(recon, target):
  """Mean squared error, ``mean_pixels (recon - target)^2``: (B, H, W) x2 -> (B,)."""
  return _metrics.mse(recon, target)


def _filter_same(x, window):
  """Separable Gaussian filter of the last two axes with zero padding ('same').

  Zero padding is separable: filtering the rows and then the columns of the
  zero-extended image equals the 2-D zero-padded filter.
  """
  r = window.shape[0] // 2
  for axis in (x.ndim - 2, x.ndim - 1):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    x = filters.correlate_valid(jnp.pad(x, pad), window, axis)
  return x


@jax.jit
def dssim(recon, target):
  """Structural dissimilarity ``1 - SSIM``, as the reference trains it: (B, H, W) x2 -> (B,).

  ``SSIM = mean_p [(2 mu_x mu_y + C1)(2 s_xy + C2)] / [(mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)]``
  with local statistics from an 11x11 Gaussian window (sigma 1.5), ``C1 =
  0.01^2``, ``C2 = 0.03^2`` (data range 1). The reference's loss
  (``pytorch_ssim``) filters with 5 pixels of zero padding and averages the
  SSIM map over **all** H x W positions, borders included, and so does this
  one; its loss scale (0.322) was measured that way. The *metric*
  `hyperrecon_jax.metrics.ssim` follows scikit-image instead and averages only
  the (H-10) x (W-10) positions where the window fits: 15-18 % different
  values at 64x64, ~1 % at 256x256. The registry name of this term is 'ssim'.
  """
  _check_pair(recon, target)
  x = jnp.asarray(recon, jnp.float32)
  y = jnp.asarray(target, jnp.float32)
  window = filters.gaussian_window(_metrics.SSIM_FILTER_SIZE, _metrics.SSIM_FILTER_SIGMA)
  # One filter call for the five local moments, stacked as in the metric.
  mu_x, mu_y, xx, yy, xy = _filter_same(jnp.stack([x, y, x * x, y * y, x * y]), window)
  var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
  c1, c2 = _metrics.SSIM_K1 ** 2, _metrics.SSIM_K2 ** 2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
      (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
  return 1.0 - jnp.mean(ssim_map, axis=(1, 2))


def total_variation(recon):
  """Anisotropic total variation, ``sum_p |x[i+1, j] - x[i, j]| + |x[i, j+1] - x[i, j]|``.

  Forward differences, summed (not averaged) over each image.

  Args:
    recon: (B, H, W) images.

  Returns:
    (B,) TV.
  """
  _check_images("recon", recon)
  x = recon.astype(jnp.float32)
  return (jnp.sum(jnp.abs(jnp.diff(x, axis=1)), axis=(1, 2))
          + jnp.sum(jnp.abs(jnp.diff(x, axis=2)), axis=(1, 2)))


@jax.jit
def hfen(recon, target):
  """High-frequency error norm as a loss, ``||LoG(recon) - LoG(target)||_2 / ||LoG(target)||_2``.

  The value is `hyperrecon_jax.metrics.hfen`'s (15x15 Laplacian of Gaussian,
  sigma 1.5, normalized by the ground truth's LoG) for a target that is not
  constant. That function is not reused as is because its gradient is NaN
  where ``recon == target`` (the derivative of the norm at 0 is 0 * inf);
  here the norm's gradient is 0 there, the norm's minimum. The term is
  undefined (inf or NaN) for a target whose LoG is 0, e.g. an all-zero slice,
  and meaningless for one whose LoG is near 0: a constant slice c gives a LoG
  of about 8.9e-6·c from the kernel's truncation, and the term a large finite
  value that depends on c (the metric calls it not finite). The data
  pipelines drop background slices.

  Args:
    recon: (B, H, W) reconstructions.
    target: (B, H, W) ground truth.

  Returns:
    (B,) HFEN.
  """
  _check_pair(recon, target, "recon", "target")
  # LoG(recon - target), as in the metric: exactly 0 for equal images.
  recon, target = recon.astype(jnp.float32), target.astype(jnp.float32)
  diff, log_t = jnp.split(_metrics.laplacian_of_gaussian(
      jnp.concatenate([recon - target, target])), 2)
  sq = jnp.sum(diff ** 2, axis=(1, 2))
  # The inner where keeps sqrt's infinite derivative at 0 out of the
  # gradient (the outer one alone would multiply it by 0: NaN).
  positive = sq > 0
  err = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return err / jnp.sqrt(jnp.sum(log_t ** 2, axis=(1, 2)))


@functools.partial(jax.jit, static_argnames=("wavelet", "levels"))
def wavelet_l1(recon, *, wavelet: str = "db2", levels: int = 3):
  """ℓ1 norm of the detail wavelet coefficients, ``sum_{l, b} sum_p |W_{l,b}(recon)[p]|``.

  ``W`` is the orthonormal periodic 2-D DWT `hyperrecon_jax.wavelets.dwt2`;
  the sum runs over the detail bands b in {H, V, D} of every level l = 1..L
  and is not averaged, like `total_variation`: the sparsity prior of
  compressed sensing (Lustig et al. 2007). The approximation band is left
  out: it carries the image's local means, and penalizing it would pull the
  intensity towards 0 instead of favouring sparse edges. Periodic boundaries
  give a constant image zero details, so the term is 0 for it (up to
  roundoff).

  Image sizes: H and W must be divisible by ``2**levels`` (8 for the
  registered 'wavelet' term: db2, 3 levels), otherwise InputError. The levels
  are not reduced to fit, which would change the term's size and invalidate
  its loss scale without notice.

  Args:
    recon: (B, H, W) images.
    wavelet: a name of `hyperrecon_jax.wavelets.WAVELETS`.
    levels: number of decomposition levels L ≥ 1.

  Returns:
    (B,) ℓ1 norms.

  Raises:
    InputError: for a bad shape, wavelet or number of levels.
  """
  _check_images("recon", recon)
  wavelets.check_levels(recon.shape, levels, "recon")
  _, details = wavelets.dwt2(recon, wavelet, levels)
  return sum(jnp.sum(jnp.abs(band), axis=(1, 2)) for level in details for band in level)


def data_consistency(recon, measurement, operator):
  """``||A(recon) - y||^2`` per example, delegated to ``operator.data_consistency``.

  Args:
    recon: (B, H, W) reconstructions.
    measurement: the measurement y, as returned by ``operator.measure``.
    operator: a `hyperrecon_jax.physics` operator.

  Returns:
    (B,) data-consistency loss.
  """
  return operator.data_consistency(recon, measurement)


def weight_l1(weights):
  """ℓ1 norm of each sample's generated weights, ``sum_leaves sum |w|``.

  Args:
    weights: pytree (e.g. ``{'conv0': {'kernel': (B, 3, 3, 2, 32),
      'bias': (B, 32)}, ...}``) whose every leaf has the same leading batch
      axis B.

  Returns:
    (B,) sum of absolute values over all leaves and all non-batch axes.
  """
  leaves = jax.tree_util.tree_leaves(weights)
  if not leaves:
    raise errors.InputError("weights must be a non-empty pytree of arrays, got no leaves.")
  shapes = [tuple(getattr(leaf, "shape", ())) for leaf in leaves]
  if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
    raise errors.InputError(
        "every leaf of weights must have the same leading batch axis, got leaf "
        f"shapes {shapes}.")
  return sum(jnp.sum(jnp.abs(leaf.astype(jnp.float32)).reshape(leaf.shape[0], -1), axis=1)
             for leaf in leaves)
