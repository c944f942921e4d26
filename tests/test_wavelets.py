"""Tests for hyperrecon_jax.wavelets, against PyWavelets (the independent reference)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

from hyperrecon_jax import errors
from hyperrecon_jax import wavelets

EPS32 = float(np.finfo(np.float32).eps)
# (H, W) with H, W divisible by 2**3. At 24 and 8 the coarse levels are
# shorter than db4's 8 taps, so the periodic wrap-around is exercised.
SHAPES = [(24, 40), (8, 16), (32, 24)]


def _images(shape, b=2, seed=0):
  return np.random.default_rng(seed).random((b,) + shape).astype(np.float32)


def _tolerance(wavelet, levels, x):
  """Absolute float32 error bound of a `dwt2` coefficient.

  Each level makes two passes (along H, then W), each summing F products;
  a 2-D orthonormal level scales a constant by 2, so coefficients are at
  most about ``2**levels * max|x|``, and the roundoff of earlier levels is
  carried along undamped: ``2 F levels`` ulps of ``2**levels * max|x|``.
  """
  f = len(pywt.Wavelet(wavelet).dec_lo)
  return 2 * f * levels * EPS32 * 2 ** levels * float(np.abs(x).max())


def test_filters_follow_the_definitions_and_pywt():
  for name in wavelets.WAVELETS:
    h, g = wavelets.filters(name)
    f = len(h)
    # Orthonormal scaling filter: sum √2, orthonormal to its even shifts.
    np.testing.assert_allclose(h.sum(), np.sqrt(2), rtol=1e-14)
    for k in range(f // 2):
      np.testing.assert_allclose(h[:f - 2 * k] @ h[2 * k:], float(k == 0), atol=1e-14)
    # Daubechies: F / 2 vanishing moments of the wavelet filter.
    for p in range(f // 2):
      np.testing.assert_allclose(np.arange(f) ** p @ g, 0.0, atol=1e-12)
    # PyWavelets convolves with dec_lo / dec_hi where dwt2 correlates.
    w = pywt.Wavelet(name)
    np.testing.assert_allclose(h[::-1], w.dec_lo, rtol=0, atol=1e-15)
    np.testing.assert_allclose(g[::-1], w.dec_hi, rtol=0, atol=1e-15)
  assert set(wavelets.WAVELETS) >= {"haar", "db2", "db4"}


def _pywt(x, wavelet, levels):
  """``pywt.wavedec2`` of one image in float64."""
  # PyWavelets warns when a level is shorter than the filter; with
  # periodization the transform is still the exact periodic one.
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Level value of", UserWarning)
    return pywt.wavedec2(x.astype(np.float64), wavelet, mode="periodization", level=levels)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("wavelet", wavelets.WAVELETS)
def test_dwt2_matches_pywt(wavelet, levels, shape):
  x = _images(shape)
  approx, details = wavelets.dwt2(x, wavelet, levels)
  assert approx.dtype == jnp.float32 and len(details) == levels
  atol = _tolerance(wavelet, levels, x)
  for b in range(x.shape[0]):
    ref = _pywt(x[b], wavelet, levels)
    assert approx[b].shape == ref[0].shape
    np.testing.assert_allclose(approx[b], ref[0], rtol=0, atol=atol)
    # Coarsest level first, bands (cH, cV, cD), as pywt orders them.
    for mine, theirs in zip(details, ref[1:]):
      assert len(mine) == 3
      for band, ref_band in zip(mine, theirs):
        assert band[b].shape == ref_band.shape
        np.testing.assert_allclose(band[b], ref_band, rtol=0, atol=atol)


def _all_coefficients(approx, details):
  return [approx] + [band for level in details for band in level]


@pytest.mark.parametrize("wavelet", wavelets.WAVELETS)
def test_parseval(wavelet):
  x = _images((24, 40), b=3, seed=1) - 0.5
  coeffs = _all_coefficients(*wavelets.dwt2(x, wavelet, 3))
  energy = sum(np.sum(np.asarray(c, np.float64) ** 2, axis=(1, 2)) for c in coeffs)
  assert sum(c.shape[1] * c.shape[2] for c in coeffs) == 24 * 40
  # Each coefficient carries a relative roundoff of about 2 F L ulps (see
  # _tolerance), its square twice that.
  rtol = 4 * len(wavelets.filters(wavelet)[0]) * 3 * EPS32
  np.testing.assert_allclose(energy, np.sum(np.asarray(x, np.float64) ** 2, axis=(1, 2)),
                             rtol=rtol)


def test_constant_image_has_no_details():
  x = np.full((2, 16, 32), 0.7, np.float32)
  for wavelet in wavelets.WAVELETS:
    approx, details = wavelets.dwt2(x, wavelet, 3)
    for level in details:
      for band in level:
        np.testing.assert_allclose(band, 0.0, atol=1e-6)
    # The energy is all in the approximation: 0.7 * 2**3 per coefficient.
    np.testing.assert_allclose(approx, 0.7 * 8, rtol=1e-6)


def test_jit_and_grad():
  x = _images((16, 24), b=2, seed=2)

  @jax.jit
  def energy(x):
    return sum(jnp.sum(c ** 2) for c in _all_coefficients(*wavelets.dwt2(x, "db4", 3)))

  # Orthonormal: ||W x||^2 = ||x||^2, so the gradient is 2 x.
  np.testing.assert_allclose(jax.grad(energy)(x), 2 * x, atol=1e-5)

  # The gradient of one coefficient is its basis function, W^T e = W^-1 e
  # (orthonormal), which is pywt.waverec2 of a unit coefficient.
  pick = jax.jit(jax.grad(lambda x: wavelets.dwt2(x, "db2", 2)[1][1][2][1, 3, 5]))
  g = np.asarray(pick(x))
  assert np.all(g[0] == 0)
  unit = [np.zeros((4, 6)), tuple(np.zeros((4, 6)) for _ in range(3)),
          tuple(np.zeros((8, 12)) for _ in range(3))]
  unit[2][2][3, 5] = 1.0
  np.testing.assert_allclose(g[1], pywt.waverec2(unit, "db2", mode="periodization"),
                             atol=1e-6)


def test_bad_input():
  x = _images((24, 40))
  with pytest.raises(errors.InputError, match=r"unknown wavelet 'db3'; valid: \['haar'"):
    wavelets.dwt2(x, "db3", 1)
  with pytest.raises(errors.InputError, match="levels must be an integer >= 1, got 0"):
    wavelets.dwt2(x, "haar", 0)
  # A bool is an int to Python; True is no number of levels.
  with pytest.raises(errors.InputError, match="levels must be an integer >= 1, got True"):
    wavelets.dwt2(x, "haar", True)
  with pytest.raises(errors.InputError,
                     match=r"divisible by 2\*\*4 = 16, got images of shape \(2, 24, 40\) "
                           r"\(H=24, W=40\)"):
    wavelets.dwt2(x, "haar", 4)
  with pytest.raises(errors.InputError, match=r"W=20"):
    wavelets.dwt2(_images((24, 20)), "haar", 3)
  with pytest.raises(errors.InputError, match=r"images must have shape \(B, H, W\)"):
    wavelets.dwt2(x[0], "haar", 1)
