"""Tests for hyperrecon_jax.models.layers: the per-sample convolution's written-out gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from hyperrecon_jax.models import layers


@pytest.mark.parametrize("c, o", [(3, 2), (2, 3)])
@pytest.mark.parametrize("size", [3, 5])
def test_loop_convolution_gradients_equal_an_independent_correlation(size, c, o):
  # The 'loop' strategy computes its kernel gradient with its own convolution
  # (a custom VJP, 9× faster on CPU). Check both gradients against SciPy:
  # for y_b = x_b ⋆ k_b ('SAME', cross-correlation) and loss Σ y·g,
  # dL/dk_b[i, j, c, o] = Σ_hw x_b[h+i−p, w+j−p, c] g_b[h, w, o] and
  # dL/dx_b = Σ_o g_b[:, :, o] ⋆ flip(k_b[:, :, c, o]) (full correlation).
  # More input than output channels (the decoder's) and fewer take the kernel
  # gradient's two forms.
  rng = np.random.default_rng(size)
  b, h, p = 2, 9, size // 2
  x = rng.normal(size=(b, h, h, c)).astype(np.float32)
  k = rng.normal(size=(b, size, size, c, o)).astype(np.float32)
  g = rng.normal(size=(b, h, h, o)).astype(np.float32)
  loss = lambda x, k: jnp.sum(layers.conv2d(x, k, jnp.zeros((b, o)), per_sample=True,
                                            strategy="loop") * g)
  dx, dk = jax.jit(jax.grad(loss, (0, 1)))(x, k)
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  want_dk = np.stack([[[[signal.correlate(xp[n, :, :, ci], g[n, :, :, oi], "valid")
                         for oi in range(o)] for ci in range(c)]] for n in range(b)])
  want_dk = np.transpose(want_dk[:, 0], (0, 3, 4, 1, 2))  # (b, k, k, c, o)
  want_dx = np.stack([np.stack([sum(signal.convolve(g[n, :, :, oi], k[n, :, :, ci, oi], "same")
                                    for oi in range(o)) for ci in range(c)], -1)
                      for n in range(b)])
  # float32 sums of ~size²·h² products of O(1) terms: 1e-4 relative is ~100 ulps.
  np.testing.assert_allclose(dk, want_dk, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dx, want_dx, rtol=1e-4, atol=1e-4)
