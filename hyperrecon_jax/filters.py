"""One-dimensional filters, applied separably along one axis of an image batch.

The windows of the SSIM loss and metric (`gaussian_window`), the Gaussian
derivative kernels of HFEN's Laplacian of Gaussian (`gaussian_kernel1d`, as
`scipy.ndimage` builds them), the 'valid' correlation that applies them with
its own, cheaper gradient (`correlate_valid`, `correlate1d_reflect`), and the
matrix of PyTorch's bicubic downsampling (`bicubic_downsample_matrix`, the
super-resolution operator's ``D``). Kernels are NumPy arrays built on the
host; the correlations are traced JAX code.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_window(size: int, sigma: float) -> np.ndarray:
  """The normalized Gaussian ``exp(−x²/2σ²)`` on ``x = −(size−1)/2 … (size−1)/2``, float32."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-x ** 2 / (2.0 * sigma ** 2))
  return (g / g.sum()).astype(np.float32)


@functools.lru_cache(maxsize=8)
def gaussian_kernel1d(sigma: float, order: int, radius: int) -> np.ndarray:
  """1-D Gaussian (derivative) kernel exactly as `scipy.ndimage` builds it.

  The Gaussian ``exp(-x^2 / 2 sigma^2)`` on ``x = -radius .. radius`` is
  normalized to sum 1 *before* differentiation; the ``order``-th derivative
  multiplies it by the polynomial obtained from ``d/dx`` of ``q(x) exp(.)``.
  The array is cached and read-only (an edit in place would change every
  later call's kernel); copy it to change it.
  """
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  phi = np.exp(-0.5 / sigma ** 2 * x ** 2)
  phi /= phi.sum()
  q = np.zeros(order + 1)
  q[0] = 1.0
  # q'(x) - q(x) x / sigma^2, on polynomial coefficients.
  deriv = np.diag(np.arange(1, order + 1), 1) + np.diag(np.full(order, -1 / sigma ** 2), -1)
  for _ in range(order):
    q = deriv @ q
  kernel = (x[:, None] ** np.arange(order + 1)) @ q * phi
  kernel.setflags(write=False)
  return kernel


def correlate_valid(x, kernel, axis: int):
  """'Valid' correlation with a 1-D kernel along one axis: ``y[i] = Σ_k kernel[k]·x[i + k]``.

  Written as a sum of shifted slices, which XLA fuses into one pass over the
  image. As one-channel convolutions, the two 11-tap filters of the SSIM loss
  were a visible part of a CPU training step of HyperRecon (docs/changelog.md);
  the slices cost a fraction. The gradient is the same kind of pass (the
  transpose below): autodiff of the slices pads and adds one full-size array
  per tap, which made the SSIM loss's gradient several times slower
  (docs/changelog.md).

  Args:
    x: array, already padded along ``axis``.
    kernel: (n,) NumPy weights.
    axis: the axis to filter.

  Returns:
    ``x`` shorter by ``n − 1`` along ``axis``.
  """
  weights = tuple(float(w) for w in np.asarray(kernel, np.float64).ravel())
  return _correlate_valid(x, weights, int(axis) % jnp.ndim(x))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _correlate_valid(x, weights, axis):
  n = x.shape[axis] - len(weights) + 1
  terms = [w * jax.lax.slice_in_dim(x, k, k + n, axis=axis) for k, w in enumerate(weights)]
  return functools.reduce(jnp.add, terms)


def _correlate_valid_fwd(x, weights, axis):
  return _correlate_valid(x, weights, axis), None


def _correlate_valid_bwd(weights, axis, _, dy):
  # dx[j] = Σ_k kernel[k]·dy[j − k]: the 'valid' correlation of dy, zero-padded
  # by n − 1 on both sides, with the reversed kernel.
  pad = [(0, 0)] * dy.ndim
  pad[axis] = (len(weights) - 1, len(weights) - 1)
  return (_correlate_valid(jnp.pad(dy, pad), weights[::-1], axis),)


_correlate_valid.defvjp(_correlate_valid_fwd, _correlate_valid_bwd)


def correlate1d_reflect(x, kernel, axis):
  """Correlation of (B, H, W) with an odd 1-D kernel along axis 1 or 2, SciPy 'reflect' border."""
  radius = (len(kernel) - 1) // 2
  pad = [(0, 0)] * 3
  pad[axis] = (radius, radius)
  # SciPy's 'reflect' (d c b a | a b c d) is NumPy's 'symmetric'.
  return correlate_valid(jnp.pad(x, pad, mode="symmetric"), kernel, axis)


def _cubic(t: float, a: float = -0.75) -> float:
  """Keys cubic convolution kernel W(t), as in PyTorch's bicubic."""
  t = abs(t)
  if t <= 1:
    return ((a + 2) * t - (a + 3)) * t * t + 1
  if t < 2:
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
  return 0.0


@functools.lru_cache(maxsize=32)
def bicubic_downsample_matrix(size: int, factor: int) -> np.ndarray:
  """(size // factor, size) matrix of PyTorch's bicubic downsampling along one axis.

  Equals ``F.interpolate(mode='bicubic', align_corners=False, antialias=False)``
  with ``scale_factor=1/factor``: output sample ``i`` reads the source position
  ``s = factor * (i + 0.5) - 0.5``, with ``j = floor(s)`` and ``t = s - j``,
  from pixels ``j-1 .. j+2`` with weights ``W(t+1), W(t), W(1-t), W(2-t)``
  (Keys, a = -0.75); pixel indices are clamped to ``[0, size-1]``, so weights
  falling outside the image pile onto the border pixel. For even factors
  ``t = 1/2`` and the taps are [-0.09375, 0.59375, 0.59375, -0.09375] on
  pixels ``f*i + f/2 - 2 .. f*i + f/2 + 1`` (for 4: the block ``4i .. 4i+3``,
  never clamped; for 2: ``2i-1 .. 2i+2``, clamped at both ends); for odd
  factors ``t = 0`` and the result is plain subsampling of pixel ``f*i + (f-1)/2``.

  Args:
    size: input length, divisible by ``factor``.
    factor: integer downsampling factor >= 2.

  Returns:
    float64 array D with ``y = D @ x`` along the axis; cached and read-only
    (an edit in place would change every later operator's), copy it to change it.
  """
  out = size // factor
  d = np.zeros((out, size))
  for i in range(out):
    s = factor * (i + 0.5) - 0.5
    j = math.floor(s)
    t = s - j
    for k, w in zip(range(j - 1, j + 3), (_cubic(t + 1), _cubic(t), _cubic(1 - t), _cubic(2 - t))):
      d[i, min(max(k, 0), size - 1)] += w
  d.setflags(write=False)
  return d
