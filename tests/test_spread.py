"""Tests for hyperrecon_jax.train.spread: distances between generated Unets."""

import functools

import jax
import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax import models
from hyperrecon_jax.train import spread


@functools.cache
def _model(k):
  net = models.HyperUnet(hyper_dim=4, num_coeffs=k, channels=2, strategy="vmap")
  variables = net.init(jax.random.key(0), np.zeros((1, 16, 16, 2), np.float32),
                       np.full((1, k), 1.0 / k, np.float32))
  return net, variables["params"]


def _generated(net, params, coeffs):
  weights = net.apply({"params": params}, np.asarray(coeffs, np.float32), method="generate")
  return np.concatenate([np.asarray(x, np.float64).reshape(x.shape[0], -1)
                         for x in jax.tree_util.tree_leaves(weights)], 1)


def test_direction_spreads_against_numpy_distances():
  net, params = _model(4)
  names = ("dc", "tv", "wavelet", "weight_l1")
  out = spread.direction_spreads(net, params, names)
  w = _generated(net, params, np.concatenate([np.eye(4), np.full((1, 4), 0.25)]))
  expected = np.linalg.norm(w[:4] - w[4], axis=1) / np.linalg.norm(w[4])
  assert list(out) == [f"weight_spread_{n}" for n in names]
  # float32 generation and norms of ~10^3 values: relative roundoff ~1e-6.
  np.testing.assert_allclose(list(out.values()), expected, rtol=1e-5)
  assert all(v > 0 for v in out.values())  # a random hypernetwork depends on λ


def test_weight_spread_is_the_largest_pairwise_distance_over_the_centre():
  net, params = _model(2)
  lams = [(0.0,), (0.5,), (1.0,)]
  w = _generated(net, params, hparams.coefficients(np.array(lams + [(0.5,)], np.float32)))
  d = np.linalg.norm(w[:3, None] - w[None, :3], axis=-1)
  np.testing.assert_allclose(spread.weight_spread(net, params, lams),
                             d.max() / np.linalg.norm(w[3]), rtol=1e-5)


def test_only_the_generated_convolutions_count_when_some_are_shared():
  # With conditioned='head' the shared convolutions, the same at every λ,
  # went into ||W(centre)|| and shrank the logged spread 7.5×.
  from hyperrecon_jax.models import hypernetwork
  net = models.HyperUnet(hyper_dim=4, num_coeffs=2, channels=2, strategy="vmap",
                         conditioned="dec,head")
  params = net.init(jax.random.key(0), np.zeros((1, 16, 16, 2), np.float32),
                    np.full((1, 2), 0.5, np.float32))["params"]
  names = {spec.name for spec in hypernetwork.conditioned_specs(2, "dec,head")}

  def flat(coeffs, keep=names):
    weights = net.apply({"params": params}, np.asarray(coeffs, np.float32), method="generate")
    assert names < set(weights)  # some convolutions are shared
    return np.concatenate([np.asarray(x, np.float64).reshape(x.shape[0], -1)
                           for k in sorted(weights) if keep is None or k in keep
                           for x in jax.tree_util.tree_leaves(weights[k])], 1)

  lams = [(0.0,), (0.5,), (1.0,)]
  coeffs = hparams.coefficients(np.array(lams + [(0.5,)], np.float32))
  w = flat(coeffs)
  d = np.linalg.norm(w[:3, None] - w[None, :3], axis=-1)
  got = spread.weight_spread(net, params, lams)
  np.testing.assert_allclose(got, d.max() / np.linalg.norm(w[3]), rtol=1e-5)
  every = flat(coeffs, keep=None)
  # The shared part cancels in the distances; it only enlarges the centre's norm.
  assert got > 1.01 * d.max() / np.linalg.norm(every[3])
  w = flat(np.concatenate([np.eye(2), np.full((1, 2), 0.5)]))
  np.testing.assert_allclose(list(spread.direction_spreads(net, params, ("mae", "ssim")).values()),
                             np.linalg.norm(w[:2] - w[2], axis=1) / np.linalg.norm(w[2]),
                             rtol=1e-5)
