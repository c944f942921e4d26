"""Tests for hyperrecon_jax.hparams against hand-computed cases."""

import math

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


# ---------------------------------------------------------------------------
# Coefficients ↔ λ, samplers and designs on the simplex.

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
    (np.array([[0.3, 0.3, 0.3]]), r"sum to 1 \(within 0.0001\), row 0 sums to 0.9"),
    (np.array([[0.5, 0.5], [0.5, 0.5002]]), r"row 1 sums to 1.0002"),
])
def test_check_coefficients_rejects(coeffs, match):
  with pytest.raises(ValueError, match=match):
    hparams.check_coefficients(coeffs)
  with pytest.raises(ValueError, match=match):
    hparams.lambdas_from_coefficients(coeffs)


def test_check_coefficients_names_the_value():
  with pytest.raises(ValueError, match=r"^weights rows must sum to 1"):
    hparams.check_coefficients(np.array([[0.2, 0.2]]), name="weights")


def test_check_coefficients_accepts_typed_decimals():
  # Decimals as a person types them, in float32 and float64.
  for dtype in (np.float32, np.float64):
    hparams.check_coefficients(np.array([[0.33, 0.33, 0.34], [0.3333, 0.3333, 0.3333],
                                         [1, 0, 0]], dtype))
  hparams.check_coefficients(np.zeros((0, 3)))


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
    (dict(method="dirichlet", alpha=0.0), r"alpha must be a scalar > 0, got 0.0"),
    (dict(method="faces", alpha=-1.0), r"alpha must be a scalar > 0, got -1.0"),
    (dict(method="dirichlet", alpha=np.ones(3)), r"alpha must be a scalar > 0"),
    (dict(method="dirichlet", num_lambdas=0), r"'dirichlet' sampler needs num_lambdas ≥ 1"),
])
def test_simplex_samplers_reject_bad_arguments(kwargs, match):
  kwargs = {"num_lambdas": 2, **kwargs}
  with pytest.raises(ValueError, match=match):
    hparams.sample(jax.random.key(0), 4, **kwargs)


@pytest.mark.parametrize("partitions, num_coeffs", [(2, 4), (1, 3), (4, 2), (3, 3), (5, 5)])
def test_das_dennis_counts_and_vertices_first(partitions, num_coeffs):
  points = hparams.das_dennis(partitions, num_coeffs)
  assert points.dtype == np.float32
  assert points.shape == (math.comb(partitions + num_coeffs - 1, num_coeffs - 1), num_coeffs)
  np.testing.assert_array_equal(points[:num_coeffs], np.eye(num_coeffs))
  steps = points * partitions
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-5)
  np.testing.assert_array_equal(np.round(steps).sum(axis=1), partitions)
  assert len(np.unique(np.round(steps), axis=0)) == len(points)
  np.testing.assert_array_equal(points, hparams.das_dennis(partitions, num_coeffs))


def test_das_dennis_k4_p2():
  points = hparams.das_dennis(2, 4)
  assert points.shape == (10, 4)
  np.testing.assert_array_equal(points[4:6], [[0.5, 0.5, 0, 0], [0.5, 0, 0.5, 0]])


@pytest.mark.parametrize("args, match", [
    ((0, 3), r"partitions must be an integer ≥ 1, got 0"),
    ((2, 1), r"num_coeffs must be an integer ≥ 2, got 1"),
    ((2.0, 3), r"partitions must be an integer ≥ 1, got 2.0"),
])
def test_das_dennis_rejects(args, match):
  with pytest.raises(ValueError, match=match):
    hparams.das_dennis(*args)


@pytest.mark.parametrize("num_coeffs", [2, 3, 4, 6])
def test_simplex_design_vertices_first_and_on_the_simplex(num_coeffs):
  design = hparams.simplex_design(37, num_coeffs)
  assert design.dtype == np.float32 and design.shape == (37, num_coeffs)
  np.testing.assert_array_equal(design[:num_coeffs], np.eye(num_coeffs))
  assert design.min() >= 0
  np.testing.assert_allclose(design.sum(axis=1), 1.0, atol=num_coeffs * U32 * 4)
  hparams.check_coefficients(design)
  np.testing.assert_array_equal(design, hparams.simplex_design(37, num_coeffs))
  assert not np.array_equal(design, hparams.simplex_design(37, num_coeffs, seed=1))
  np.testing.assert_array_equal(hparams.simplex_design(num_coeffs, num_coeffs), np.eye(num_coeffs))


def test_simplex_design_two_terms_is_the_sobol_sequence():
  from scipy.stats import qmc
  u = qmc.Sobol(d=1, scramble=True, seed=3).random_base2(3)[:6, 0]
  design = hparams.simplex_design(8, 2, seed=3)
  np.testing.assert_allclose(hparams.lambdas_from_coefficients(design)[2:, 0], u, atol=1e-7)


@pytest.mark.parametrize("num_coeffs", [3, 4])
def test_simplex_design_has_low_discrepancy(num_coeffs):
  # Uniform on the simplex: E c_k = 1/K, Var c_k = (K − 1) / (K²(K + 1)). A
  # random sample of n points would miss 1/K by about sqrt(Var / n); the Sobol
  # design must do five times better.
  n = 1024
  points = hparams.simplex_design(n + num_coeffs, num_coeffs)[num_coeffs:]
  iid_se = np.sqrt((num_coeffs - 1) / (num_coeffs**2 * (num_coeffs + 1)) / n)
  assert np.all(np.abs(points.mean(axis=0) - 1 / num_coeffs) < iid_se / 5)


@pytest.mark.parametrize("args, match", [
    ((3, 4), r"num ≥ num_coeffs \(the 4 vertices come first\), got num=3, num_coeffs=4"),
    ((5, 1), r"num_coeffs must be an integer ≥ 2, got 1"),
])
def test_simplex_design_rejects(args, match):
  with pytest.raises(ValueError, match=match):
    hparams.simplex_design(*args)


def test_grid_stops_at_two_hyperparameters():
  with pytest.raises(ValueError, match=r"grids stop at two hyperparameters, got 3 .*"
                                       r"simplex_design\(N, 4\).*evaluate.py "
                                       r"--config.eval.samples=N"):
    hparams.grid(5, 3)
  with pytest.raises(ValueError, match=r"grid supports 1 or 2 hyperparameters, got 0"):
    hparams.grid(5, 0)


@pytest.mark.parametrize("text, num_lambdas, expected", [
    ("0.3", 1, [[0.3]]),
    (" 0,0.5,1 ", 1, [[0.0], [0.5], [1.0]]),
    ("grid:3", 1, [[0.0], [0.5], [1.0]]),
    ("grid:2", 2, [[0, 0], [0, 1], [1, 0], [1, 1]]),
    ("0.2:0.4,1:0", 2, [[0.2, 0.4], [1.0, 0.0]]),
    ("0.1:0.2:0.3", 3, [[0.1, 0.2, 0.3]]),
])
def test_parse_lambdas_good(text, num_lambdas, expected):
  lam = hparams.parse_lambdas(text, num_lambdas)
  assert lam.dtype == np.float32
  np.testing.assert_allclose(lam, expected)


@pytest.mark.parametrize("num_lambdas", [1, 3])
def test_parse_lambdas_samples(num_lambdas):
  k = num_lambdas + 1
  lam = hparams.parse_lambdas("samples:9", num_lambdas)
  assert lam.dtype == np.float32 and lam.shape == (9, num_lambdas)
  np.testing.assert_allclose(hparams.coefficients(lam), hparams.simplex_design(9, k),
                             atol=k * (k + 2) * U32)


@pytest.mark.parametrize("text, num_lambdas, match", [
    ("0.3,x", 1, r"^--lam=0.3,x: 'x' is not a number$"),
    ("0.1:0.2", 1, r"'0.1:0.2' has 2 values, .* has 1 hyperparameter\(s\) \(one value per item\)"),
    ("0.1", 2, r"'0.1' has 1 values, .* has 2 hyperparameter\(s\) \(write 2 values as a:b\)"),
    ("0.1:0.2", 3, r"has 3 hyperparameter\(s\) \(write 3 values as a:b:c\)"),
    ("grid:x", 1, r"^--lam=grid:x: grid:N needs an integer N$"),
    ("grid:1", 1, r"^--lam=grid:1: N must be ≥ 2"),
    ("grid:3", 3, r"^--lam=grid:3: grids stop at two hyperparameters.*simplex_design"),
    ("samples:x", 3, r"^--lam=samples:x: samples:N needs an integer N$"),
    ("samples:3", 3, r"^--lam=samples:3: .*num ≥ num_coeffs .*got num=3, num_coeffs=4"),
])
def test_parse_lambdas_errors(text, num_lambdas, match):
  with pytest.raises(ValueError, match=match):
    hparams.parse_lambdas(text, num_lambdas)


def test_parse_lambdas_names_the_flag():
  with pytest.raises(ValueError, match=r"^--lambdas=grid:4: grids stop"):
    hparams.parse_lambdas("grid:4", 4, flag="--lambdas")


@pytest.mark.parametrize("text, num_coeffs, expected", [
    ("1:0:0,0.33:0.33:0.34", 3, [[1, 0, 0], [0.33, 0.33, 0.34]]),
    ("0.3333:0.3333:0.3333", 3, [[0.3333] * 3]),
    (" 0.25: 0.75 ", 2, [[0.25, 0.75]]),
    ("0.1:0.2:0.3:0.4", 4, [[0.1, 0.2, 0.3, 0.4]]),
])
def test_parse_coefficients_good(text, num_coeffs, expected):
  c = hparams.parse_coefficients(text, num_coeffs)
  assert c.dtype == np.float32 and c.shape == (len(expected), num_coeffs)
  np.testing.assert_allclose(c, expected)


@pytest.mark.parametrize("text, num_coeffs, match", [
    ("1:0,x:1", 2, r"^--coeffs=1:0,x:1: 'x:1' is not a number$"),
    ("0.5:nan", 2, r"'0.5:nan' is not a finite number"),
    ("0.5:0.5", 3, r"'0.5:0.5' has 2 values, the model's loss has 3 terms "
                   r"\(write 3 coefficients as a:b:c\)"),
    ("1.5:-0.5", 2, r"'1.5:-0.5' has a negative coefficient \(-0.5\)"),
    ("1:0:0,0.3:0.3:0.3", 3, r"^--coeffs=1:0:0,0.3:0.3:0.3: '0.3:0.3:0.3' sums to 0.9; "
                             r"coefficients must sum to 1 \(within 0.0001\)$"),
    ("0.6:0.6", 2, r"'0.6:0.6' sums to 1.2;"),
    ("1e308:1e308", 2, r"'1e308:1e308' sums to inf;"),  # finite values, an overflowing sum
    ("0_1:0", 2, r"'0_1:0' is not a number"),  # Python's float reads 1
])
def test_parse_coefficients_errors(text, num_coeffs, match):
  with pytest.raises(ValueError, match=match):
    hparams.parse_coefficients(text, num_coeffs)


def test_parse_coefficients_names_the_flag_and_checks_num_coeffs():
  with pytest.raises(ValueError, match=r"^--weights=0.2:0.2: "):
    hparams.parse_coefficients("0.2:0.2", 2, flag="--weights")
  with pytest.raises(ValueError, match=r"num_coeffs must be an integer ≥ 2, got 1"):
    hparams.parse_coefficients("1", 1)


@pytest.mark.parametrize("text, value", [
    ("0.3", 0.3), (" .5 ", 0.5), ("1.", 1.0), ("+1e-3", 1e-3), ("-2E2", -200.0), ("inf", np.inf),
    ("-Infinity", -np.inf)])
def test_parse_number_reads_decimal_numbers(text, value):
  assert hparams.parse_number(text) == value


@pytest.mark.parametrize("text", ["", "0_1", "\u0661", "0x1", "1e", "e3", "1,5", "one"])
def test_parse_number_refuses_what_float_alone_would_read_or_is_no_number(text):
  with pytest.raises(ValueError, match="not a decimal number"):
    hparams.parse_number(text)
