"""Tests for hyperrecon_jax.models.resampling: values and written-out gradients.

References: the dense align_corners=True interpolation matrices (NumPy) and a
NumPy loop over pooling windows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax.models import resampling


def _align_corners_matrix(n_in, n_out):
  """(n_out, n_in) PyTorch align_corners=True linear interpolation, row by row."""
  u = np.zeros((n_out, n_in))
  for i in range(n_out):
    if n_in == 1:
      u[i, 0] = 1.0
      continue
    src = i * (n_in - 1) / (n_out - 1)
    lo = min(int(np.floor(src)), n_in - 2)
    u[i, lo] += 1 - (src - lo)
    u[i, lo + 1] += src - lo
  return u


def test_upsampling_matches_align_corners_reference():
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype(np.float32)
  out = np.asarray(resampling.upsample2x(jnp.asarray(x)))

  def reference_1d(n_in, n_out, i):  # PyTorch's align_corners=True source index
    src = i * (n_in - 1) / (n_out - 1)
    lo = min(int(np.floor(src)), n_in - 2)
    return lo, src - lo

  b, h, w, c = x.shape
  expected = np.zeros((b, 2 * h, 2 * w, c))
  for i in range(2 * h):
    i0, fi = reference_1d(h, 2 * h, i)
    for j in range(2 * w):
      j0, fj = reference_1d(w, 2 * w, j)
      expected[:, i, j] = ((1 - fi) * (1 - fj) * x[:, i0, j0]
                           + (1 - fi) * fj * x[:, i0, j0 + 1]
                           + fi * (1 - fj) * x[:, i0 + 1, j0]
                           + fi * fj * x[:, i0 + 1, j0 + 1])
  np.testing.assert_allclose(out, expected, atol=1e-5)
  # Corners coincide exactly under align_corners=True.
  np.testing.assert_allclose(out[:, 0, 0], x[:, 0, 0], atol=1e-6)
  np.testing.assert_allclose(out[:, -1, -1], x[:, -1, -1], atol=1e-6)




@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 8, 1, 2), (1, 2, 16, 3)])
def test_upsampling_gradient_is_the_transpose_of_the_interpolation(shape):
  # upsample2x writes its own gradient (gathers through the adjoint taps);
  # the reference is the transpose of the dense interpolation matrices:
  # y = U_h x U_wᵀ per image and channel, so dL/dx = U_hᵀ g U_w.
  rng = np.random.default_rng(2)
  x = rng.normal(size=shape).astype(np.float32)
  b, h, w, c = shape
  g = rng.normal(size=(b, 2 * h, 2 * w, c)).astype(np.float32)
  u_h, u_w = _align_corners_matrix(h, 2 * h), _align_corners_matrix(w, 2 * w)
  y, vjp = jax.vjp(resampling.upsample2x, jnp.asarray(x))
  want_y = np.einsum("ih,bhwc,jw->bijc", u_h, x, u_w)
  want_dx = np.einsum("ih,bijc,jw->bhwc", u_h, g, u_w)
  # Each value sums ≤ 4·4 float32 products of O(1) terms: 1e-5 is ~100 ulps.
  np.testing.assert_allclose(np.asarray(y), want_y, rtol=0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]), want_dx, rtol=0, atol=1e-5)
  # Under jit, as in training, the same.
  dx = jax.jit(lambda x, g: jax.vjp(resampling.upsample2x, x)[1](g)[0])(x, g)
  np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 8, 33])
def test_adjoint_taps_are_the_columns_of_the_interpolation(n):
  idx, w = resampling.align_corners_adjoint_taps(n, 2 * n)
  dense = np.zeros((2 * n, n))
  for j in range(idx.shape[0]):
    np.add.at(dense, (idx[j], np.arange(n)), w[j])
  np.testing.assert_allclose(dense, _align_corners_matrix(n, 2 * n), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 7, 5, 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pooling_and_its_gradient_match_a_numpy_loop(shape, ties):
  rng = np.random.default_rng(1)
  # Small integers make windows with several equal maxima: the gradient goes
  # to the first in row-major order (PyTorch's and XLA's choice).
  x = (rng.integers(0, 3, shape) if ties else rng.normal(size=shape)).astype(np.float32)
  b, h, w, c = shape
  want_y = np.zeros((b, h // 2, w // 2, c), np.float32)
  want_dx = np.zeros(shape, np.float32)
  dy = rng.normal(size=want_y.shape).astype(np.float32)
  for n, i, j, k in np.ndindex(want_y.shape):
    window = x[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, k].ravel()
    want_y[n, i, j, k] = window.max()
    first = int(np.argmax(window))  # NumPy's argmax: the first maximum
    want_dx[n, 2 * i + first // 2, 2 * j + first % 2, k] = dy[n, i, j, k]
  y, vjp = jax.vjp(resampling.max_pool2x, jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(y), want_y)
  np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(dy))[0]), want_dx)
