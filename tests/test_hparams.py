"""Tests for hyperrecon_jax.hparams against hand-computed cases."""

import jax
import numpy as np
import pytest

from hyperrecon_jax import hparams


def test_two_terms_follow_eq9():
  lam = np.array([[0.0], [0.25], [1.0]], np.float32)
  np.testing.assert_allclose(hparams.coefficients(lam),
                             [[1.0, 0.0], [0.75, 0.25], [0.0, 1.0]])


def test_three_terms_follow_eq10():
  lam = np.array([[0.2, 0.5], [0.0, 0.0], [1.0, 0.3], [0.5, 1.0]], np.float32)
  expected = [[0.2, 0.8 * 0.5, 0.8 * 0.5],
              [0.0, 0.0, 1.0],
              [1.0, 0.0, 0.0],
              [0.5, 0.5, 0.0]]
  np.testing.assert_allclose(hparams.coefficients(lam), expected, atol=1e-7)


def test_four_terms_stick_breaking():
  lam = np.array([[0.5, 0.5, 0.5]], np.float32)
  np.testing.assert_allclose(hparams.coefficients(lam),
                             [[0.5, 0.25, 0.125, 0.125]])


@pytest.mark.parametrize("num_coeffs", [2, 3, 4, 7])
def test_coefficients_sum_to_one_and_are_nonnegative(num_coeffs):
  lam = np.random.default_rng(num_coeffs).uniform(size=(50, num_coeffs - 1))
  coeffs = np.asarray(hparams.coefficients(lam))
  assert coeffs.shape == (50, num_coeffs)
  np.testing.assert_allclose(coeffs.sum(axis=1), 1.0, rtol=1e-6)
  assert coeffs.min() >= 0.0


def test_coefficients_under_jit():
  lam = np.array([[0.2, 0.5]], np.float32)
  np.testing.assert_allclose(jax.jit(hparams.coefficients)(lam),
                             hparams.coefficients(lam))


@pytest.mark.parametrize("lam, match", [
    (np.array([[1.5]]), r"\[0, 1\]"),
    (np.array([[-0.1, 0.5]]), r"\[0, 1\]"),
    (np.array([[np.nan]]), r"\[0, 1\]"),
    (np.array([0.5, 0.5]), r"shape \(B, K-1\)"),
    (np.zeros((3, 0)), r"shape \(B, K-1\)"),
])
def test_bad_lambda_raises(lam, match):
  with pytest.raises(ValueError, match=match):
    hparams.coefficients(lam)


@pytest.mark.parametrize("method", hparams.SAMPLERS)
def test_samplers_stay_in_unit_interval(method):
  lam = np.asarray(hparams.sample(jax.random.key(0), 4000, 2, method))
  assert lam.shape == (4000, 2)
  assert lam.min() >= 0.0 and lam.max() <= 1.0


def test_endpoint_sampler_hits_endpoints_at_requested_rate():
  lam = np.asarray(hparams.sample(jax.random.key(1), 20000, 1, "endpoints",
                                  endpoint_prob=0.2))
  ends = np.mean((lam == 0.0) | (lam == 1.0))
  assert abs(ends - 0.2) < 0.02
  assert abs(np.mean(lam == 1.0) - 0.1) < 0.015


def test_log_uniform_sampler_is_uniform_in_log10():
  lam = np.asarray(hparams.sample(jax.random.key(2), 20000, 1, "log_uniform",
                                  log_min=1e-2))
  assert lam.min() >= 1e-2 * 0.999
  frac_below_tenth = np.mean(lam < 0.1)  # half of [-2, 0] in log10
  assert abs(frac_below_tenth - 0.5) < 0.02


def test_uniform_sampler_is_deterministic_by_key():
  a = hparams.sample(jax.random.key(3), 8, 1)
  b = hparams.sample(jax.random.key(3), 8, 1)
  np.testing.assert_array_equal(a, b)


def test_unknown_sampler_raises():
  with pytest.raises(ValueError, match="method must be one of"):
    hparams.sample(jax.random.key(0), 2, 1, "beta")


def test_grid_shapes_and_order():
  one = hparams.grid(5)
  np.testing.assert_allclose(one[:, 0], [0, 0.25, 0.5, 0.75, 1.0])
  two = hparams.grid(3, 2)
  assert two.shape == (9, 2)
  np.testing.assert_allclose(two[:3], [[0, 0], [0, 0.5], [0, 1]])
  with pytest.raises(ValueError):
    hparams.grid(1)
  with pytest.raises(ValueError):
    hparams.grid(4, 3)
