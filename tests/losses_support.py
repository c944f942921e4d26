"""The batches that tests/test_losses_*.py compute loss terms of."""

import numpy as np

from hyperrecon_jax import masks
from hyperrecon_jax import physics

H, W = 24, 20


def pair(b=2, seed=0):
  """(recon, target): ``b`` random H×W targets in [0, 1] and noisy copies."""
  rng = np.random.default_rng(seed)
  target = rng.random((b, H, W)).astype(np.float32)
  recon = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
  return recon, target


def weight_tree(b=2, seed=0):
  """A small pytree of per-sample weights, every leaf with leading axis ``b``."""
  rng = np.random.default_rng(seed)
  return {
      "conv0": {"kernel": rng.standard_normal((b, 3, 3, 2, 4)).astype(np.float32),
                "bias": rng.standard_normal((b, 4)).astype(np.float32)},
      "head": {"kernel": rng.standard_normal((b, 1, 1, 4, 1)).astype(np.float32)},
  }


CSMRI = physics.CSMRI(masks.poisson_disc((H, W), 3, seed=0))
