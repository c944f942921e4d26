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



def test_training_mode_adds_epsilon_to_the_batch_variance():
  # A channel whose batch variance (1e-6) is below ε = 1e-5: normalized by
  # sqrt(var + ε), ~3.3× less than by sqrt(var) alone (PyTorch's formula).
  x = 1e-3 * np.random.default_rng(4).normal(size=(2, 4, 4, 1)).astype(np.float32)
  bn = normalization.BatchNorm()
  variables = bn.init(jax.random.key(0), x, use_running_average=False)
  y, _ = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  flat = x.astype(np.float64).ravel()
  want = (x - flat.mean()) / np.sqrt(flat.var() + 1e-5)
  # float32 statistics of 32 values: relative roundoff ~1e-6 of |y| ≤ 1.
  np.testing.assert_allclose(y, want, rtol=0, atol=1e-5)


def test_batch_variance_is_exact_for_a_mean_far_from_zero():
  # Two passes, mean((x − μ)²), as PyTorch: for values 300 ± 0.1 in float32
  # the one-pass E[x²] − μ² loses every digit (E[x²] ≈ 9e4 has an ulp of
  # 0.008, the variance is 0.01). Two passes: μ is within a few ulps of 300
  # (~1e-4, which changes the variance by ~1e-8) and the centred squares sum
  # with relative roundoff ~n·2⁻²⁴ ≈ 4e-6; the output's error is ~1e-4/σ = 1e-3.
  x = (300 + 0.1 * np.random.default_rng(5).normal(size=(3, 5, 4, 2))).astype(np.float32)
  bn = normalization.BatchNorm()
  variables = bn.init(jax.random.key(0), x, use_running_average=False)
  y, updates = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
  flat = x.reshape(-1, 2).astype(np.float64)
  mean, biased, unbiased = flat.mean(0), flat.var(0), flat.var(0, ddof=1)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(biased + 1e-5), rtol=0, atol=1e-2)
  np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * unbiased, rtol=1e-5)
  _, stats_mean, var = normalization.batch_normalize(jnp.asarray(x), jnp.ones(2), jnp.zeros(2),
                                                     normalization.BATCH_NORM_EPSILON)
  np.testing.assert_allclose(var, biased, rtol=1e-4)
  np.testing.assert_allclose(stats_mean, mean, rtol=1e-6)


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


@pytest.mark.parametrize("use_running_average", [False, True])
def test_bfloat16_activations_come_out_in_bfloat16(use_running_average):
  # UnetBody's bfloat16 mode keeps every activation between layers in
  # bfloat16 (half the memory traffic); BatchNorm computes in float32 and
  # casts back. Its values are the float32 layer's rounded once to bfloat16:
  # within 2⁻⁸ of each value (8 significant bits), plus float32 roundoff.
  x = np.random.default_rng(6).normal(1.0, 2.0, (2, 4, 4, 3)).astype(np.float32)
  x16 = jnp.asarray(x, jnp.bfloat16)
  bn = normalization.BatchNorm()
  variables = bn.init(jax.random.key(0), x16, use_running_average=False)
  y16, _ = bn.apply(variables, x16, use_running_average=use_running_average,
                    mutable=["batch_stats"])
  y32, _ = bn.apply(variables, jnp.asarray(x16, jnp.float32),
                    use_running_average=use_running_average, mutable=["batch_stats"])
  assert y16.dtype == jnp.bfloat16
  y32 = np.asarray(y32)
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=2 ** -8,
                             atol=1e-6 * np.abs(y32).max())
