"""Tests for hyperrecon_jax.filters against SciPy and hand-computed weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from hyperrecon_jax import filters
from hyperrecon_jax import physics


def _f64(x):
  return np.asarray(x, np.float64)


def test_gaussian_window_is_the_normalized_gaussian():
  # Hand-computed: exp(-x²/2σ²) at x = -2..2, σ = 1, divided by its sum.
  g = np.exp(-np.arange(-2, 3) ** 2 / 2.0)
  np.testing.assert_allclose(filters.gaussian_window(5, 1.0), g / g.sum(), rtol=1e-6)
  assert filters.gaussian_window(11, 1.5).dtype == np.float32
  # An even size is centred between its two middle samples: x = -1.5..1.5.
  g = np.exp(-np.arange(-1.5, 2) ** 2 / 2.0)
  np.testing.assert_allclose(filters.gaussian_window(4, 1.0), g / g.sum(), rtol=1e-6)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_gaussian_kernel1d_is_scipys(order):
  # SciPy correlates with the reversed kernel (a convolution), so filtering
  # an impulse with a zero border reads the kernel back in its own order;
  # order 1 (odd) tells a reversed kernel apart. Both are float64 sums of the
  # same few products.
  impulse = np.zeros(31)
  impulse[15] = 1.0
  want = scipy.ndimage.gaussian_filter1d(impulse, 1.5, order=order, truncate=7 / 1.5,
                                         mode="constant")[15 - 7:15 + 8]
  np.testing.assert_allclose(filters.gaussian_kernel1d(1.5, order, 7), want, atol=1e-15)


@pytest.mark.parametrize("axis", [1, 2])
def test_correlate1d_reflect_is_scipys(axis):
  # An asymmetric kernel and an odd size tell a flipped kernel or a shifted
  # border apart; float32 sums of 7 products below 1: ≤ 7·2⁻²⁴·7 ≈ 3e-6.
  rng = np.random.default_rng(3)
  x = rng.uniform(-1, 1, (2, 13, 11)).astype(np.float32)
  kernel = np.array([0.3, -0.2, 0.5, 1.0, -0.4, 0.1, 0.25])
  got = filters.correlate1d_reflect(jnp.asarray(x), kernel, axis)
  want = scipy.ndimage.correlate1d(_f64(x), kernel, axis=axis, mode="reflect")
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_correlate_valid_and_its_gradient_against_the_dense_operator(axis):
  # The filter along `axis` is the linear map y = M x with M[i, i + k] =
  # kernel[k]; its gradient (the custom VJP) must be Mᵀ dy. An asymmetric
  # kernel tells a reversed kernel or a shifted padding apart. Each value is
  # a float32 sum of 5 products of numbers below 1 (rounding ≤ 5·5·2⁻²⁴ ≈
  # 1.5e-6), well inside 1e-5.
  rng = np.random.default_rng(7)
  x = rng.uniform(-1, 1, (2, 20, 17)).astype(np.float32)
  kernel = np.array([0.1, -0.7, 0.25, 0.9, -0.3])
  length = x.shape[axis]
  m = np.zeros((length - 4, length))
  for i in range(length - 4):
    m[i, i:i + 5] = kernel
  y, vjp = jax.vjp(lambda v: filters.correlate_valid(v, kernel, axis), jnp.asarray(x))
  want = np.moveaxis(np.tensordot(m, np.moveaxis(_f64(x), axis, 0), axes=1), 0, axis)
  np.testing.assert_allclose(y, want, atol=1e-5)
  dy = rng.uniform(-1, 1, y.shape).astype(np.float32)
  want_dx = np.moveaxis(np.tensordot(m.T, np.moveaxis(_f64(dy), axis, 0), axes=1), 0, axis)
  np.testing.assert_allclose(vjp(jnp.asarray(dy))[0], want_dx, atol=1e-5)


def test_the_cached_kernel_is_read_only():
  # An edit in place changed every later call's kernel (hfen became NaN).
  kernel = filters.gaussian_kernel1d(1.5, 0, 7)
  with pytest.raises(ValueError, match="read-only"):
    kernel /= 2
  assert filters.gaussian_kernel1d(1.5, 0, 7).sum() == pytest.approx(1.0)


def test_bicubic_weights_factor_4():
  d = filters.bicubic_downsample_matrix(16, 4)
  for i in range(4):
    np.testing.assert_allclose(d[i, 4 * i:4 * i + 4], [-0.09375, 0.59375, 0.59375, -0.09375])
    assert np.count_nonzero(d[i]) == 4
  # Factor 2: the same taps straddle the 2-blocks and pile up at the borders.
  d2 = filters.bicubic_downsample_matrix(8, 2)
  np.testing.assert_allclose(d2[0, :3], [-0.09375 + 0.59375, 0.59375, -0.09375])
  np.testing.assert_allclose(d2[-1, -3:], [-0.09375, 0.59375, 0.59375 - 0.09375])
  np.testing.assert_allclose(d2.sum(axis=1), 1.0)


def test_the_cached_downsampling_matrix_is_read_only():
  d = filters.bicubic_downsample_matrix(16, 2)
  with pytest.raises(ValueError, match="read-only"):
    d *= 0  # it zeroed every later SuperResolution(2) of 16-pixel sides
  assert physics.SuperResolution(2).forward(np.ones((1, 16, 16), np.float32)).min() > 0.99


def test_the_superres_operator_uses_the_downsampling_matrix():
  x = np.random.default_rng(0).random((1, 16, 12)).astype(np.float32)
  d_h, d_w = filters.bicubic_downsample_matrix(16, 4), filters.bicubic_downsample_matrix(12, 4)
  np.testing.assert_allclose(physics.SuperResolution(4).forward(x)[0], d_h @ _f64(x[0]) @ d_w.T,
                             atol=1e-6)
