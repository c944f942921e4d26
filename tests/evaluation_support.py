"""What the tests of the λ grid and of evaluation share: a tiny HyperUnet with
drawn variables (built once per process), smooth test images, and the reference of one
model call per λ.
"""

import functools

import jax
import numpy as np
import scipy.ndimage

from hyperrecon_jax import models

SIZE = 16
G = 6


def smooth_images(batch, seed):
  """Smooth images in [0, 1] (SSIM and HFEN well defined)."""
  x = scipy.ndimage.gaussian_filter(np.random.default_rng(seed).random((batch, SIZE, SIZE)),
                                    (0, 1.5, 1.5))
  lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
  return ((x - lo) / (hi - lo)).astype(np.float32)


@functools.cache
def tiny_hyperunet():
  """A tiny HyperUnet in evaluation mode with non-trivial BatchNorm statistics.

  Variables are drawn with NumPy on the shapes from ``eval_shape`` (PyTorch-like
  ranges): ``net.init`` itself takes ~15 s to compile on 2 cores. 'vmap'
  compiles faster than the CPU default 'loop'; the grid logic is the same.
  """
  net = models.HyperUnet(hyper_dim=4, num_coeffs=2, channels=4, strategy="vmap")
  shapes = jax.eval_shape(net.init, jax.random.key(0), np.zeros((1, SIZE, SIZE, 2), np.float32),
                          np.zeros((1, 2), np.float32))
  rng = np.random.default_rng(1)

  def draw(path, x):
    name = path[-1].key
    if name == "kernel":
      bound = 1 / np.sqrt(x.shape[0])
      return rng.uniform(-bound, bound, x.shape).astype(np.float32)
    low, high = {"scale": (0.8, 1.2), "var": (0.5, 2.0)}.get(name, (-0.3, 0.3))
    return rng.uniform(low, high, x.shape).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  return net, variables, jax.jit(net.apply)


def per_lambda(zf, coeffs):
  """Reference: one ordinary model call per λ, (S, G, H, W)."""
  _, variables, apply = tiny_hyperunet()
  s = zf.shape[0]
  return np.stack([np.asarray(apply(variables, zf, np.tile(c, (s, 1)))) for c in coeffs], 1)


def network_input(batch, seed):
  x = smooth_images(batch, seed)
  return np.stack([x, 0.1 * np.sin(x * 5)], -1).astype(np.float32)


def assert_close(actual, expected, rel=1e-5):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * np.abs(expected).max())
