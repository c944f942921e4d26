"""Tests for hyperrecon_jax.hparams (maps and samplers) against hand-computed cases:
λ ↔ coefficients and the samplers on the cube and the simplex."""


import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import errors
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
    # Not "got values in [nan, nan]".
    (np.array([[0.2, np.nan]]), r"\[0, 1\], got 1 value\(s\) that are not finite numbers"),
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
  # The range reaches both ends: no draw in the top log10(1/0.99) = 0.00436
  # of the width 2 has probability (1 − 0.00218)^20000 = 1e-19, none in the
  # bottom log10(1.01) = 0.00432 about the same.
  assert lam.max() > 0.99 and lam.min() < 0.0101
  # The quartiles of log10 λ are −1.5, −1, −0.5. A sample p-quantile has
  # standard deviation √(p(1 − p)/n) / density, with density 1/2 here (0.0061,
  # 0.0071, 0.0061); a quartile lies five of them off with probability 6e-7.
  p = np.array([0.25, 0.5, 0.75])
  quartiles = np.quantile(np.log10(lam.astype(np.float64)), p)
  tolerance = 5 * 2 * np.sqrt(p * (1 - p) / lam.size)
  assert np.all(np.abs(quartiles - [-1.5, -1.0, -0.5]) <= tolerance), quartiles


def test_uniform_sampler_is_deterministic_by_key():
  a = hparams.sample(jax.random.key(3), 8, 1)
  b = hparams.sample(jax.random.key(3), 8, 1)
  np.testing.assert_array_equal(a, b)


def test_unknown_sampler_raises():
  with pytest.raises(ValueError, match="method must be one of"):
    hparams.sample(jax.random.key(0), 2, 1, "beta")


@pytest.mark.parametrize("method, kwargs, match", [
    # log_min = 1 makes the range [0, 0] in log10: every λ exactly 1.
    ("log_uniform", dict(log_min=1.0), r"^log_min must be in \(0, 1\), got 1.0$"),
    ("log_uniform", dict(log_min=0.0), r"^log_min must be in \(0, 1\), got 0.0$"),
    # A draw is an endpoint where u < p: p = 1.5 makes every λ 0 or 1, p = −0.5 none.
    ("endpoints", dict(endpoint_prob=1.5), r"^endpoint_prob must be in \[0, 1\], got 1.5$"),
    ("endpoints", dict(endpoint_prob=-0.5), r"^endpoint_prob must be in \[0, 1\], got -0.5$"),
])
def test_cube_samplers_reject_bad_arguments(method, kwargs, match):
  with pytest.raises(errors.InputError, match=match):
    hparams.sample(jax.random.key(0), 4, 1, method, **kwargs)



# ---------------------------------------------------------------------------
# Coefficients ↔ λ and samplers on the simplex.

# Unit roundoff of float32: each rounded operation is off by at most this, relatively.
U32 = 2.0**-24


def _simplex_rows(num_coeffs, rng, num=2000):
  """Random rows of the simplex: interior points, every vertex, and rows on faces."""
  interior = rng.dirichlet(np.full(num_coeffs, 0.5), size=num)
  on_face = rng.dirichlet(np.ones(num_coeffs), size=num) * (rng.uniform(size=(num, num_coeffs))
                                                            < 0.5)
  on_face = on_face[on_face.sum(axis=1) > 0]
  on_face /= on_face.sum(axis=1, keepdims=True)
  return np.concatenate([np.eye(num_coeffs), interior, on_face]).astype(np.float32)


@pytest.mark.parametrize("num_coeffs", [2, 3, 4, 5])
def test_coefficients_round_trip_from_coefficients(num_coeffs):
  # c → λ: λ_k = c_k / r_k with the tail sum r_k off by ≤ K·u relatively, so
  # |Δλ_k| ≤ K·u. λ → c: each 1 − λ_j is then off by ≤ (K + 1)·u, a product of
  # k ≤ K − 1 such factors in [0, 1] by ≤ (K − 1)(K + 2)·u, and c_k = λ_k·Π by
  # ≤ K(K + 2)·u in all (the rounding of the product included).
  c = _simplex_rows(num_coeffs, np.random.default_rng(num_coeffs))
  back = np.asarray(hparams.coefficients(hparams.lambdas_from_coefficients(c)))
  np.testing.assert_allclose(back, c, rtol=0, atol=num_coeffs * (num_coeffs + 2) * U32)


@pytest.mark.parametrize("num_coeffs", [2, 3, 4, 5])
def test_lambdas_round_trip_from_lambdas(num_coeffs):
  # λ → c: c_k is a product of ≤ K factors, each off by ≤ u relatively; the
  # tail sums add ≤ K·u; the division u. So λ_k comes back within ≈ 3K·u
  # relatively; 3(K + 1)·u bounds it. Rows near 1 leave tiny tails, which the
  # tail-sum form keeps to relative precision.
  rng = np.random.default_rng(10 + num_coeffs)
  lam = rng.uniform(1e-6, 1 - 1e-6, size=(2000, num_coeffs - 1))
  extremes = np.full((2, num_coeffs - 1), 1e-6)
  extremes[1, :-1] = 1 - 2.0**-20
  lam = np.concatenate([lam, extremes]).astype(np.float32)
  back = np.asarray(hparams.lambdas_from_coefficients(hparams.coefficients(lam)))
  assert back.dtype == np.float32 and back.shape == lam.shape
  np.testing.assert_allclose(back, lam, rtol=3 * (num_coeffs + 1) * U32, atol=0)


@pytest.mark.parametrize("num_coeffs", [2, 3, 4, 5])
def test_vertices_map_to_canonical_lambdas(num_coeffs):
  # Vertex e_k: λ_j = 0 before k, λ_k = 1, and 0 after (where no mass is left,
  # any λ would do; the inverse picks 0).
  lam = np.asarray(hparams.lambdas_from_coefficients(np.eye(num_coeffs, dtype=np.float32)))
  expected = np.eye(num_coeffs, num_coeffs - 1, dtype=np.float32)
  if num_coeffs == 2:
    expected = np.array([[0.0], [1.0]], np.float32)  # Eq. 9: λ = c_2
  np.testing.assert_array_equal(lam, expected)
  np.testing.assert_array_equal(hparams.coefficients(lam), np.eye(num_coeffs))


def test_lambdas_from_coefficients_on_faces():
  c = np.array([[0.5, 0.0, 0.5, 0.0], [0.0, 0.25, 0.0, 0.75], [0.0, 0.0, 0.5, 0.5]], np.float32)
  lam = np.asarray(hparams.lambdas_from_coefficients(c))
  np.testing.assert_allclose(lam, [[0.5, 0.0, 1.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.5]])
  np.testing.assert_allclose(hparams.coefficients(lam), c)


def test_lambdas_from_coefficients_two_terms_is_eq9():
  c = np.array([[0.75, 0.25], [1.0, 0.0]], np.float32)
  np.testing.assert_array_equal(hparams.lambdas_from_coefficients(c), [[0.25], [0.0]])


def test_lambdas_from_coefficients_under_jit():
  c = _simplex_rows(4, np.random.default_rng(0), num=50)
  np.testing.assert_allclose(jax.jit(hparams.lambdas_from_coefficients)(c),
                             hparams.lambdas_from_coefficients(c), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("coeffs, match", [
    (np.array([0.5, 0.5]), r"shape \(B, K\) with K ≥ 2, got shape \(2,\)"),
    (np.ones((3, 1)), r"shape \(B, K\) with K ≥ 2, got shape \(3, 1\)"),
    (np.array([[0.5, 0.5], [np.nan, 1.0]]), r"finite, row 1 is \[nan, 1.0\]"),
    (np.array([[1.5, -0.5]]), r"≥ 0, row 0 is \[1.5, -0.5\]"),
    # The sum's tolerance is no licence for a negative entry: this row sums to 1.
    # (lambdas_from_coefficients checks it as float32, whose digits the message shows.)
    (np.array([[0.5, 0.5], [1.00005, -0.00005]]), r"≥ 0, row 1 is \[1\.0000\d*, -[\d.]+e-05\]"),
    (np.array([[0.3, 0.3, 0.3]]), r"sum to 1 \(within 0.0001\), row 0 sums to 0.9"),
    (np.array([[0.5, 0.5], [0.5, 0.5002]]), r"row 1 sums to 1.0002"),
])
def test_check_coefficients_rejects(coeffs, match):
  with pytest.raises(ValueError, match=match):
    hparams.check_coefficients(coeffs)
  with pytest.raises(ValueError, match=match):
    hparams.lambdas_from_coefficients(coeffs)


def test_a_lambda_out_of_range_is_named_to_its_digits():
  # ".4g" printed 1.0001 as "1".
  with pytest.raises(ValueError,
                     match=r"lam must lie in \[0, 1\], got values in \[1\.0001, 1\.0001\]"):
    hparams.coefficients(np.array([[1.0001]], np.float32))


def test_check_coefficients_names_the_value():
  with pytest.raises(ValueError, match=r"^weights rows must sum to 1"):
    hparams.check_coefficients(np.array([[0.2, 0.2]]), name="weights")


def test_check_coefficients_accepts_typed_decimals():
  # Decimals as a person types them, in float32 and float64.
  for dtype in (np.float32, np.float64):
    hparams.check_coefficients(np.array([[0.33, 0.33, 0.34], [0.3333, 0.3333, 0.3333],
                                         [1, 0, 0]], dtype))
  hparams.check_coefficients(np.zeros((0, 3)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_coefficients_of_a_narrow_float_type_are_allowed_its_rounding(dtype):
  # 1/K rounded to bfloat16 (eps 2⁻⁷) sums to 1.00195 for K = 3: within K·eps
  # of 1, not within 1e-4. NumPy does not count bfloat16 as a float type.
  for k in (3, 5):
    row = jnp.full((2, k), 1 / k, dtype)
    assert abs(float(np.asarray(row, np.float64)[0].sum()) - 1) <= k * float(jnp.finfo(dtype).eps)
    hparams.check_coefficients(row)
    hparams.check_coefficients(np.asarray(row))
  with pytest.raises(errors.InputError, match="must sum to 1"):
    hparams.check_coefficients(jnp.full((1, 3), 0.3, dtype))


def test_lists_are_checked_as_the_arrays_they_stand_for():
  # A list has no shape attribute, so a check of `.shape` alone refuses it.
  hparams.check_lambda([[0.2], [1.0]])
  hparams.check_lambda(((0.0, 0.5),))
  hparams.check_coefficients([[0.2, 0.8], [0.33, 0.67]])
  hparams.check_coefficients([[0.3333, 0.3333, 0.3333]])  # sum 0.9999, within 1e-4
  for check, value, match in [
      (hparams.check_lambda, [[0.2], [1.5]],
       r"lam must lie in \[0, 1\], got values in \[0\.2, 1\.5\]"),
      (hparams.check_lambda, [0.2], r"lam must have shape \(B, K-1\) .*got shape \(1,\)"),
      (hparams.check_coefficients, [[0.5, 0.5], [0.3, 0.6]], r"row 1 sums to 0\.9$"),
      (hparams.check_coefficients, [[0.5, 0.5], [0.3333, 0.6665]], r"row 1 sums to 0\.9998$"),
      (hparams.check_coefficients, [0.5, 0.5], r"got shape \(2,\)"),
      (hparams.check_coefficients, [[0.5, 0.5], [1.0]],
       r"coeffs must be an array of numbers, got rows of unequal lengths: "
       r"\[\[0\.5, 0\.5\], \[1\.0\]\]"),
  ]:
    with pytest.raises(errors.InputError, match=match):
      check(value)


def test_check_coefficients_skips_values_under_jit():
  bad = np.array([[0.3, 0.3, 0.3]], np.float32)
  lam = jax.jit(hparams.lambdas_from_coefficients)(bad)  # no check on traced values
  assert lam.shape == (1, 2)


def _moment_tolerance(x, num_se=5.0):
  """Several standard errors of a sample's mean and of its variance, per column."""
  n = x.shape[0]
  centred = x - x.mean(axis=0)
  var = centred.var(axis=0)
  mean_se = np.sqrt(var / n)
  var_se = np.sqrt(((centred**4).mean(axis=0) - var**2) / n)  # of the sample variance
  return num_se * mean_se, num_se * var_se


@pytest.mark.parametrize("num_coeffs", [3, 5])
@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_dirichlet_sampler_matches_theory(num_coeffs, alpha):
  n = 20000
  lam = np.asarray(hparams.sample(jax.random.key(5), n, num_coeffs - 1, "dirichlet",
                                  alpha=alpha))
  assert lam.shape == (n, num_coeffs - 1) and lam.min() >= 0 and lam.max() <= 1
  c = np.asarray(hparams.coefficients(lam), np.float64)
  np.testing.assert_allclose(c.sum(axis=1), 1.0, atol=1e-6)
  mean_tol, var_tol = _moment_tolerance(c)
  k = num_coeffs
  # Symmetric Dirichlet(α·1_K): E c_k = 1/K, Var c_k = (K − 1) / (K²(Kα + 1)).
  assert np.all(np.abs(c.mean(axis=0) - 1 / k) < mean_tol)
  assert np.all(np.abs(c.var(axis=0) - (k - 1) / (k**2 * (k * alpha + 1))) < var_tol)


def test_uniform_sampler_is_not_uniform_on_the_simplex():
  # Stick-breaking of uniform λ: E c_k = 2^−k for k < K, E c_K = 2^−(K−1).
  c = np.asarray(hparams.coefficients(hparams.sample(jax.random.key(6), 20000, 3)))
  mean_tol, _ = _moment_tolerance(c)
  assert np.all(np.abs(c.mean(axis=0) - [0.5, 0.25, 0.125, 0.125]) < mean_tol)
  d = np.asarray(hparams.coefficients(hparams.sample(jax.random.key(6), 20000, 3, "dirichlet")))
  assert np.all(np.abs(d.mean(axis=0) - 0.25) < _moment_tolerance(d)[0])


def _binomial_tolerance(prob, n, num_se=5.0):
  return num_se * np.sqrt(prob * (1 - prob) / n) + 1e-12


@pytest.mark.parametrize("num_coeffs", [2, 3, 5])
def test_faces_sampler_rates(num_coeffs):
  n, prob = 20000, 0.3
  lam = np.asarray(hparams.sample(jax.random.key(7), n, num_coeffs - 1, "faces",
                                  endpoint_prob=prob))
  assert lam.min() >= 0 and lam.max() <= 1
  c = np.asarray(hparams.coefficients(lam))
  np.testing.assert_allclose(c.sum(axis=1), 1.0, atol=1e-6)
  nonzero = (c > 0).sum(axis=1)
  face = nonzero < num_coeffs
  assert abs(face.mean() - prob) < _binomial_tolerance(prob, n)
  n_face = int(face.sum())
  # The face dimension m is uniform in {0, …, K−2}: m + 1 terms on, a vertex
  # for m = 0 (for K = 2 every face row is a vertex, λ ∈ {0, 1}).
  for on in range(1, num_coeffs):
    share = np.mean(nonzero[face] == on)
    assert abs(share - 1 / (num_coeffs - 1)) < _binomial_tolerance(1 / (num_coeffs - 1), n_face)
  vertex = nonzero == 1
  np.testing.assert_array_equal(c[vertex].max(axis=1), 1.0)
  if num_coeffs == 2:
    assert np.all(np.isin(lam[face], [0.0, 1.0]))
  else:
    # The subset is uniform: each term is off in 1 − E[(m + 1)/K] = 1/2 of face rows.
    off = np.mean(c[face] == 0, axis=0)
    assert np.all(np.abs(off - 0.5) < _binomial_tolerance(0.5, n_face))


@pytest.mark.parametrize("method", ["dirichlet", "faces"])
def test_simplex_samplers_under_jit_with_traced_arguments(method):
  draw = jax.jit(lambda key, p, a: hparams.sample(key, 2000, 3, method, endpoint_prob=p,
                                                  alpha=a))
  key = jax.random.key(8)
  np.testing.assert_allclose(draw(key, 0.5, 0.7),
                             hparams.sample(key, 2000, 3, method, endpoint_prob=0.5, alpha=0.7),
                             rtol=1e-6, atol=1e-7)
  for p in (0.0, 1.0):
    c = np.asarray(hparams.coefficients(draw(key, p, 1.0)))
    face = np.mean((c == 0).any(axis=1))
    assert face == (p if method == "faces" else 0.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="faces", endpoint_prob=1.5), r"endpoint_prob must be in \[0, 1\], got 1.5"),
    (dict(method="dirichlet", alpha=0.0), r"alpha must be a finite scalar > 0, got 0.0"),
    (dict(method="faces", alpha=-1.0), r"alpha must be a finite scalar > 0, got -1.0"),
    (dict(method="dirichlet", alpha=np.ones(3)), r"alpha must be a finite scalar > 0"),
    # It passed, and drew NaN λ (all of them under jit, where α may be traced).
    (dict(method="faces", alpha=np.inf), r"alpha must be a finite scalar > 0, got inf"),
    (dict(method="dirichlet", num_lambdas=0), r"'dirichlet' sampler needs num_lambdas ≥ 1"),
])
def test_simplex_samplers_reject_bad_arguments(kwargs, match):
  kwargs = {"num_lambdas": 2, **kwargs}
  with pytest.raises(ValueError, match=match):
    hparams.sample(jax.random.key(0), 4, **kwargs)


@pytest.mark.parametrize("method", hparams.SAMPLERS)
def test_sample_coefficients_are_the_draw_of_sample(method):
  key, n, k = jax.random.key(9), 512, 4
  c = np.asarray(hparams.sample_coefficients(key, n, k, method, alpha=0.5))
  lam = np.asarray(hparams.sample(key, n, k - 1, method, alpha=0.5))
  assert c.shape == (n, k) and c.min() >= 0
  np.testing.assert_allclose(c.sum(axis=1), 1.0, atol=1e-6)
  if method in hparams.SIMPLEX_SAMPLERS:  # the λ are the coefficients' own
    np.testing.assert_array_equal(lam, hparams.lambdas_from_coefficients(c))
  else:  # the coefficients are the λ's own
    np.testing.assert_array_equal(c, hparams.coefficients(lam))


@pytest.mark.parametrize("method", hparams.SIMPLEX_SAMPLERS)
def test_simplex_draws_keep_their_smallest_coefficients(method):
  # Dirichlet(0.2) over 4 terms: a coefficient is exactly 0 with probability
  # about P(Beta(0.2, 0.6) < 1.2e-38) = 2e-8 per term, so never in 20,000 rows
  # (expected 0.002). Through λ, c_4 < 2⁻²⁴·c_3 came back as 0: in 1.8 % of rows.
  key, n = jax.random.key(10), 20000
  c = np.asarray(hparams.sample_coefficients(key, n, 4, method, endpoint_prob=0.0, alpha=0.2))
  assert np.count_nonzero(c == 0) == 0
  from hyperrecon_jax import train
  config = _config_with(sampler=method, alpha=0.2, endpoint_prob=0.0)
  np.testing.assert_array_equal(train.sample_coefficients(config, key, n), c)


def _config_with(**hparam_fields):
  import configs
  config = configs.default()
  config.losses, config.loss_scales = ("dc", "tv", "wavelet", "mse"), (1.0,) * 4
  config.hparams.update(hparam_fields)
  return config


def test_two_terms_off_their_sum_keep_their_ratio():
  # λ = c_2 put the whole error of the sum on c_1: equal weights typed as
  # 0.49995:0.49995 (accepted, within SUM_TOLERANCE) reached the model as
  # (0.50005, 0.49995). Now c_2 / (c_1 + c_2), as the tail sums of K ≥ 3.
  lam = np.asarray(hparams.lambdas_from_coefficients(np.array([[0.49995, 0.49995]])))
  np.testing.assert_allclose(lam, 0.5, rtol=0, atol=2 ** -24)
  np.testing.assert_allclose(hparams.lambdas_from_coefficients(np.array([[0.7, 0.3]])), 0.3,
                             rtol=2 ** -23)


def test_distinct_keeps_one_lambda_per_loss_weighting():
  # Three terms: where λ₁ = 1, λ₂ does not count (c = (1, 0, 0) for any λ₂).
  lam = hparams.grid(3, 2)  # λ₁ major: rows 6, 7, 8 are (1, 0), (1, 0.5), (1, 1)
  np.testing.assert_array_equal(hparams.distinct(lam), [0, 1, 2, 3, 4, 5, 6])
  # Four terms: (1, ·, ·) and (a, 1, ·) repeat; the order of first rows is kept.
  lam = np.array([[0.5, 1, 0], [1, 0, 0], [0.5, 1, 1], [0, 0, 0], [1, 1, 1]], np.float32)
  np.testing.assert_array_equal(hparams.distinct(lam), [0, 1, 3])
  # Two terms: the map is one to one; −0.0 and 0.0 are one λ.
  lam = np.array([[0.0], [0.25], [-0.0], [1.0]], np.float32)
  np.testing.assert_array_equal(hparams.distinct(lam), [0, 1, 3])


def test_weighting_is_lambda_up_to_and_including_its_first_one():
  assert hparams.weighting((1.0, 0.0)) == (1.0,)
  assert hparams.weighting((0.5, 1.0, 0.3)) == (0.5, 1.0)
  assert hparams.weighting(np.array([[0.25, 0.75]])) == (0.25, 0.75)  # no 1: all of it
  zero, one = hparams.weighting(np.array([-0.0, 1.0, 1.0], np.float32))
  assert (zero, one) == (0.0, 1.0) and math.copysign(1.0, zero) == 1.0


def test_two_lambdas_weight_the_loss_alike_exactly_when_their_coefficients_are_equal():
  # Every pair of a 3 × 3 × 3 cube of four-term λ (values 0, ½, 1: the ones
  # and the zeros where stick-breaking collapses), against the coefficients.
  import itertools
  lam = np.array(list(itertools.product([0.0, 0.5, 1.0], repeat=3)), np.float32)
  coeffs = np.asarray(hparams.coefficients(lam))
  for i, j in itertools.combinations(range(len(lam)), 2):
    same = hparams.weighting(lam[i]) == hparams.weighting(lam[j])
    assert same == np.array_equal(coeffs[i], coeffs[j]), (lam[i], lam[j])
