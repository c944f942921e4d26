"""Orthogonal 2-D discrete wavelet transform with periodic boundaries, in JAX.

The transform of `dwt2` is PyWavelets' ``pywt.wavedec2(x, wavelet,
mode='periodization', level=levels)`` for each image of a batch, with the same
ordering and sign conventions, written in ``jax.numpy`` so that it runs under
``jax.jit`` and ``jax.grad`` (the 'wavelet' loss term trains through it).
Periodic extension keeps the transform orthonormal: each level maps N samples
to N / 2 approximation and N / 2 detail coefficients, and the sum of squares of
all coefficients equals that of the image (Parseval).

The filters are Daubechies' orthonormal scaling filters h (sum √2, sum of
squares 1; 'haar' is 'db1'), kept here as constants: PyWavelets is only the
tests' independent reference, never a run-time dependency.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import metrics

_SQRT2 = math.sqrt(2.0)
_SQRT3 = math.sqrt(3.0)

# Scaling (reconstruction low-pass) filters h[0..F-1], in the order of
# Daubechies, "Ten Lectures on Wavelets" (1992), Table 6.1, normalized to
# sum √2; PyWavelets calls them ``rec_lo``.
_SCALING_FILTERS = {
    "haar": (1 / _SQRT2, 1 / _SQRT2),
    # The closed form for two vanishing moments (Daubechies 1988).
    "db2": ((1 + _SQRT3) / (4 * _SQRT2), (3 + _SQRT3) / (4 * _SQRT2),
            (3 - _SQRT3) / (4 * _SQRT2), (1 - _SQRT3) / (4 * _SQRT2)),
    # Four vanishing moments: no closed form; the minimum-phase spectral factor.
    "db4": (0.2303778133088965, 0.7148465705529157, 0.6308807679298589,
            -0.027983769416859854, -0.18703481171909309, 0.030841381835560764,
            0.0328830116668852, -0.010597401785069032),
}
WAVELETS = tuple(_SCALING_FILTERS)


def filters(wavelet: str) -> tuple[np.ndarray, np.ndarray]:
  """The analysis filters (h, g) of a wavelet, as `dwt2` correlates them.

  ``h`` is the scaling filter and ``g[m] = (-1)^m h[F-1-m]`` its quadrature
  mirror; PyWavelets' ``dec_lo`` and ``dec_hi`` are ``h`` and ``g`` reversed
  (it convolves where `dwt2` correlates).

  Args:
    wavelet: a name of `WAVELETS`.

  Returns:
    (h, g), two float64 arrays of the filter length F.

  Raises:
    InputError: for an unknown wavelet.
  """
  if wavelet not in _SCALING_FILTERS:
    raise errors.InputError(f"unknown wavelet {wavelet!r}; valid: {list(WAVELETS)}.")
  h = np.asarray(_SCALING_FILTERS[wavelet], np.float64)
  g = (-1.0) ** np.arange(len(h)) * h[::-1]
  return h, g


def _roll_left(x, shift: int, axis: int):
  """``x[(i + shift) mod n]`` along ``axis`` for a static shift, as two slices."""
  n = x.shape[axis]
  shift %= n
  if shift == 0:
    return x
  return jnp.concatenate([jax.lax.slice_in_dim(x, shift, n, axis=axis),
                          jax.lax.slice_in_dim(x, 0, shift, axis=axis)], axis=axis)


def _analysis_1d(x, h, g, axis: int):
  """One periodic analysis step along ``axis``: N samples -> (N/2 low-pass, N/2 high-pass).

  ``a[o] = Σ_m h[m] x[(2o + m + 1 - F/2) mod N]`` and likewise ``d`` with
  ``g``. The samples at ``2o + r`` are the even (r even) or odd (r odd)
  samples rolled by ``r // 2``, so each tap is a slice of one polyphase
  component that both filters share, and XLA fuses the sum into one pass.
  The index wraps modulo N, so this stays exact when N < F at coarse levels.
  """
  n = x.shape[axis]
  phases = (jax.lax.slice_in_dim(x, 0, n, stride=2, axis=axis),
            jax.lax.slice_in_dim(x, 1, n, stride=2, axis=axis))
  lo = hi = 0.0
  for m, (hm, gm) in enumerate(zip(h, g)):
    r = (m + 1 - len(h) // 2) % n
    tap = _roll_left(phases[r % 2], r // 2, axis)
    lo = lo + float(hm) * tap
    hi = hi + float(gm) * tap
  return lo, hi


def check_levels(shape, levels: int, name: str = "images") -> None:
  """Raises InputError unless ``levels`` ≥ 1 halvings fit the last two axes of ``shape``.

  Args:
    shape: (B, H, W).
    levels: number of decomposition levels.
    name: what the images are called in the message.
  """
  if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
    raise errors.InputError(f"levels must be an integer >= 1, got {levels!r}.")
  step = 2 ** int(levels)
  bad = [f"{axis}={size}" for axis, size in zip("HW", shape[1:]) if size % step]
  if bad:
    raise errors.InputError(
        f"a {levels}-level wavelet transform needs H and W divisible by 2**{levels} = {step}, "
        f"got {name} of shape {tuple(shape)} ({', '.join(bad)}); crop or pad the images "
        f"to a multiple of {step}, or use fewer levels.")


@functools.partial(jax.jit, static_argnames=("wavelet", "levels"))
def dwt2(images, wavelet: str, levels: int):
  """Multilevel orthonormal 2-D DWT of each image, periodic boundaries.

  Per level, the approximation ``a`` (the image at level 0) is filtered along
  H and then W by `_analysis_1d`: ``cA = lo_W lo_H a``, ``cH = lo_W hi_H a``
  (horizontal edges), ``cV = hi_W lo_H a``, ``cD = hi_W hi_H a``; the next
  level transforms ``cA``. Equals ``pywt.wavedec2(x, wavelet,
  mode='periodization', level=levels)`` image by image.

  Args:
    images: (B, H, W) real images, H and W divisible by ``2**levels``.
    wavelet: a name of `WAVELETS` ('haar', 'db2', 'db4').
    levels: number of levels L ≥ 1 (static).

  Returns:
    ``(cA, details)``: the (B, H / 2^L, W / 2^L) float32 approximation and a
    list of L tuples ``(cH, cV, cD)``, coarsest level first, level l (from the
    finest, l = 1) of shape (B, H / 2^l, W / 2^l).

  Raises:
    InputError: for an unknown wavelet, ``levels`` < 1, images not of shape
      (B, H, W), or H or W not divisible by ``2**levels``.
  """
  h, g = filters(wavelet)
  metrics.check_images("images", images)
  check_levels(images.shape, levels)
  approx = jnp.asarray(images).astype(jnp.float32)
  details = []
  for _ in range(levels):
    lo_h, hi_h = _analysis_1d(approx, h, g, axis=1)
    # Both halves along W in one call: half as many slice ops to trace.
    lo_w, hi_w = _analysis_1d(jnp.concatenate([lo_h, hi_h]), h, g, axis=2)
    approx, c_h = jnp.split(lo_w, 2)
    c_v, c_d = jnp.split(hi_w, 2)
    details.append((c_h, c_v, c_d))
  return approx, details[::-1]
