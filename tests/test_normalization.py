"""Tests for hyperrecon_jax.models.normalization: PyTorch's statistics, the written-out gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax.models import normalization


def test_batch_norm_keeps_pytorch_running_statistics():
  # Independent NumPy reference of torch.nn.BatchNorm2d (momentum 0.1).
  x = np.random.default_rng(0).normal(2.0, 3.0, (3, 5, 4, 2)).astype(np.float32)
  bn = normalization.BatchNorm()
  variables = bn.init(jax.random.key(0), x, use_running_average=False)
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0.0)
  np.testing.assert_array_equal(variables["batch_stats"]["var"], 1.0)
  y, updates = bn.apply(variables, x, use_running_average=False,
                        mutable=["batch_stats"])
  flat = x.reshape(-1, 2).astype(np.float64)
  mean, biased, unbiased = flat.mean(0), flat.var(0), flat.var(0, ddof=1)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(biased + 1e-5),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * mean,
                             rtol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["var"],
                             0.9 + 0.1 * unbiased, rtol=1e-5)
  # Evaluation mode normalizes with the running statistics.
  stats = {"mean": np.array([1.0, -2.0], np.float32),
           "var": np.array([4.0, 0.25], np.float32)}
  out = bn.apply({"params": variables["params"], "batch_stats": stats}, x,
                 use_running_average=True)
  np.testing.assert_allclose(out, (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5),
                             rtol=1e-5, atol=1e-5)




def _plain_batch_norm(x, scale, bias, epsilon=normalization.BATCH_NORM_EPSILON):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.mean(jnp.square(x - mean), axes)
  return (x - mean) / jnp.sqrt(var + epsilon) * scale + bias, mean, var


@pytest.mark.parametrize("shape", [(3, 5, 4, 2), (2, 8, 8, 3)])
def test_batch_normalize_gradients_match_autodiff_of_its_formula(shape):
  # batch_normalize writes its own gradient; JAX's autodiff of the plain
  # formula is the reference, for cotangents on the output and on both
  # returned statistics (a mean far from 0 against the spread, as after a
  # convolution with a bias, exercises the two-pass variance).
  rng = np.random.default_rng(3)
  x = rng.normal(2.0, 3.0, shape).astype(np.float32)
  c = shape[-1]
  scale = rng.uniform(0.5, 2.0, c).astype(np.float32)
  bias = rng.normal(size=c).astype(np.float32)
  cot = (rng.normal(size=shape).astype(np.float32), rng.normal(size=c).astype(np.float32),
         rng.normal(size=c).astype(np.float32))
  out, vjp = jax.vjp(lambda *a: normalization.batch_normalize(*a, normalization.BATCH_NORM_EPSILON),
                     x, scale, bias)
  want_out, want_vjp = jax.vjp(_plain_batch_norm, x, scale, bias)
  grads, want_grads = vjp(cot), want_vjp(cot)
  # Sums over the n = B·H·W ≤ 128 values of a channel: float32 roundoff is
  # ≲ n·2⁻²⁴ ≈ 1e-5 of the largest term; a wrong term is off by O(1).
  for got, want in zip((*out, *grads), (*want_out, *want_grads)):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
