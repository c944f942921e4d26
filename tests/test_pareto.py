"""Tests for hyperrecon_jax.pareto: the non-dominated set, exact hypervolume, normalization."""

import itertools
import json
import math

import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import pareto

# Exact comparisons: both sides sum at most a few thousand float64 terms of
# size <= 1.2^5 < 3, so rounding is below 1e-12 (1e3 · 3 · 2.2e-16 ≈ 7e-13);
# inclusion–exclusion (up to 2^9 alternating terms) stays below 1e-12 as well.
ATOL = 1e-11


def _brute_non_dominated(p):
  """O(N²) reference: row i survives iff no row j is <= everywhere and < somewhere."""
  le = np.all(p[:, None, :] <= p[None, :, :], axis=2)  # le[j, i]: p_j <= p_i (NaN: False)
  lt = np.any(p[:, None, :] < p[None, :, :], axis=2)
  return ~np.any(le & lt, axis=0) & ~np.isnan(p).any(axis=1)


def _brute_hypervolume(p, ref):
  """Inclusion–exclusion over all subsets: Σ_S (−1)^(|S|+1) Π_k max(0, r_k − max_{i∈S} p_ik)."""
  p = p[~np.isnan(p).any(axis=1)]
  total = 0.0
  for size in range(1, len(p) + 1):
    for subset in itertools.combinations(range(len(p)), size):
      total += (-1) ** (size + 1) * np.prod(np.clip(ref - p[list(subset)].max(axis=0), 0, None))
  return total


def _sphere(n, k, seed):
  """N points of a concave front in [0, 1]^K: 1 − |z| / ||z|| for Gaussian z, all non-dominated."""
  z = np.abs(np.random.default_rng(seed).normal(size=(n, k)))
  return 1.0 - z / np.linalg.norm(z, axis=1, keepdims=True)


# non_dominated


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_non_dominated_matches_brute_force(k):
  rng = np.random.default_rng(k)
  for n in [0, 1, 2, 7, 40, 300]:
    # Few distinct values: many ties and identical rows; some NaN rows.
    p = rng.integers(0, 4, (n, k)).astype(float)
    p[rng.random(n) < 0.1, rng.integers(0, k)] = np.nan
    np.testing.assert_array_equal(pareto.non_dominated(p), _brute_non_dominated(p))
    q = rng.random((n, k))
    np.testing.assert_array_equal(pareto.non_dominated(q), _brute_non_dominated(q))


def test_non_dominated_duplicates_nan_and_inf():
  p = np.array([[1, 2], [1, 2], [2, 1], [2, 2], [np.nan, 0], [3, np.inf], [0, np.inf]])
  # [1, 2] twice: both kept; [2, 2] is dominated by [1, 2]; the NaN row is off the
  # front; [3, inf] is dominated by [0, inf], which nothing dominates.
  np.testing.assert_array_equal(pareto.non_dominated(p), [1, 1, 1, 0, 0, 0, 1])
  # A NaN row dominates nothing, even where its other value is smaller.
  np.testing.assert_array_equal(pareto.non_dominated([[np.nan, 0.0], [5.0, 5.0]]), [0, 1])


def test_non_dominated_tie_with_a_row_of_an_earlier_block():
  # 301 distinct rows, so two blocks of `_BLOCK` = 256. (400, 300, 0) sorts last
  # (second block) and is dominated only by (0, 300, 0) (first block), which it
  # ties in objectives 2 and 3: the front's test against it must be <=, not <.
  # (i, 300 − i, i) for i = 1..299 are mutually non-dominated (the second objective
  # falls as the first and third rise) and beat neither end row.
  p = np.array([[0, 300, 0]] + [[i, 300 - i, i] for i in range(1, 300)] + [[400, 300, 0]],
               float)
  assert len(p) > pareto._BLOCK
  expected = np.ones(len(p), bool)
  expected[-1] = False
  np.testing.assert_array_equal(_brute_non_dominated(p), expected)
  np.testing.assert_array_equal(pareto.non_dominated(p), expected)
  perm = np.random.default_rng(2).permutation(len(p))
  np.testing.assert_array_equal(pareto.non_dominated(p[perm]), expected[perm])


def test_non_dominated_large_front_across_blocks():
  # 3,000 points of a front (many blocks of rows), plus a dominated copy of each.
  front = _sphere(3000, 4, seed=0)
  p = np.concatenate([front, front + 0.01])
  expected = np.concatenate([np.ones(3000, bool), np.zeros(3000, bool)])
  perm = np.random.default_rng(1).permutation(len(p))
  np.testing.assert_array_equal(pareto.non_dominated(p[perm]), expected[perm])


# hypervolume: hand-computed cases


def test_hypervolume_one_objective():
  # The union of [0.2, 1] and [0.5, 1] is [0.2, 1]: 1 − 0.2 = 0.8.
  assert pareto.hypervolume([[0.5], [0.2]], [1.0]) == pytest.approx(0.8, abs=ATOL)


def test_hypervolume_two_objectives():
  # Staircase of (1, 3), (2, 2), (3, 1) under r = (4, 4), in columns of x:
  # [1, 2) × [3, 4) = 1·1 = 1, [2, 3) × [2, 4) = 1·2 = 2, [3, 4) × [1, 4) = 1·3 = 3;
  # total 1 + 2 + 3 = 6. (2.5, 2.5) is dominated by (2, 2) and adds nothing.
  p = [[1, 3], [2, 2], [3, 1], [2.5, 2.5]]
  assert pareto.hypervolume(p, [4, 4]) == pytest.approx(6.0, abs=ATOL)


def test_hypervolume_three_objectives():
  # Two boxes under r = (2, 2, 2): (0, 0, 1) has 2·2·1 = 4, (1, 1, 0) has 1·1·2 = 2,
  # their intersection [1, 2]^3 has 1: 4 + 2 − 1 = 5.
  assert pareto.hypervolume([[0, 0, 1], [1, 1, 0]], 2.0) == pytest.approx(5.0, abs=ATOL)
  # Three boxes of 2·1·1 = 2 each (6); each pair meets in [1, 2]^3 (3 × 1 = 3), so does
  # the triple (1): 6 − 3 + 1 = 4.
  p = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
  assert pareto.hypervolume(p, [2, 2, 2]) == pytest.approx(4.0, abs=ATOL)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_hypervolume_matches_inclusion_exclusion(k):
  rng = np.random.default_rng(10 + k)
  for trial in range(30):
    # A reference of its own in each objective (mean 1.0), so that a reference
    # coordinate read for the wrong objective changes the value.
    ref = rng.uniform(0.8, 1.2, k)
    n = int(rng.integers(0, 10))
    p = rng.random((n, k)) * 1.2  # about 1 in 6 coordinates beyond the reference
    if trial % 2:
      # Ties and duplicates, and coordinates equal to the reference's.
      p, ref = np.round(p, 1), np.round(ref, 1)
    if n and trial % 3 == 0:
      p[0, 0] = np.nan
    assert pareto.hypervolume(p, ref) == pytest.approx(_brute_hypervolume(p, ref), abs=ATOL)


@pytest.mark.parametrize("ref", [[1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
def test_hypervolume_one_point_against_a_different_reference_per_objective(ref):
  # One point at 0.5 in every objective: its box, Π_k (r_k − 0.5), e.g.
  # 0.5 · 1.5 · 2.5 · 3.5 = 6.5625 for K = 4.
  k = len(ref)
  expected = math.prod(r - 0.5 for r in ref)
  assert pareto.hypervolume(np.full((1, k), 0.5), ref) == pytest.approx(expected, abs=ATOL)


def _slab_hypervolume_3d(p, ref):
  """Reference for K = 3: Σ over z slabs of the 2-D area the points below dominate.

  The area of a 2-D set is found on the grid of its coordinates: a cell is
  covered iff some point is <= its lower corner.
  """
  p = p[np.all(p < ref, axis=1)]
  zs = np.append(np.unique(p[:, 2]), ref[2])
  total = 0.0
  for z, z_next in zip(zs[:-1], zs[1:]):
    q = p[p[:, 2] <= z, :2]
    xs, ys = np.append(np.unique(q[:, 0]), ref[0]), np.append(np.unique(q[:, 1]), ref[1])
    covered = np.any((q[:, None, None, 0] <= xs[None, :-1, None])
                     & (q[:, None, None, 1] <= ys[None, None, :-1]), axis=0)
    total += (z_next - z) * np.sum(covered * np.outer(np.diff(xs), np.diff(ys)))
  return total


def test_hypervolume_three_objectives_large_set():
  # 150 points: a front and random points, against the independent slab sum.
  rng = np.random.default_rng(3)
  p = np.concatenate([_sphere(100, 3, seed=2), rng.random((50, 3))])
  ref = np.full(3, 1.1)
  assert pareto.hypervolume(p, ref) == pytest.approx(_slab_hypervolume_3d(p, ref), abs=ATOL)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_hypervolume_extra_constant_objective_multiplies(k):
  # A (K+1)-th objective equal to c for every point stretches the set along it:
  # HV_{K+1} = HV_K · (r_{K+1} − c). 200 points make WFG recurse on large limited sets.
  p = _sphere(200, k, seed=k)
  c, r = 0.25, 1.1
  lifted = np.concatenate([p, np.full((200, 1), c)], axis=1)
  expected = pareto.hypervolume(p, r) * (r - c)
  assert pareto.hypervolume(lifted, r) == pytest.approx(expected, rel=1e-12)


def test_hypervolume_four_objectives_matches_monte_carlo():
  p = _sphere(20, 4, seed=5)
  ref = np.full(4, 1.1)
  lower = p.min(axis=0)
  box = np.prod(ref - lower)  # every dominated point lies in [lower, ref]
  # The estimate box · (hits / M) has standard error box · sqrt(q(1 − q) / M) <=
  # box / (2 sqrt(M)) for the hit rate q; M is chosen so that the tolerance,
  # 1% of the box, is 5 of those bounds.
  tol = 0.01 * box
  m = math.ceil((5 * box / (2 * tol)) ** 2)
  x = np.random.default_rng(6).uniform(lower, ref, size=(m, 4))
  hits = np.zeros(m, bool)
  for point in p:
    hits |= np.all(x >= point, axis=1)
  q = hits.mean()
  standard_error = box * math.sqrt(q * (1 - q) / m)
  assert tol >= 5 * standard_error
  assert pareto.hypervolume(p, ref) == pytest.approx(box * q, abs=tol)


def test_hypervolume_invariant_to_dominated_points_and_order():
  p = _sphere(300, 4, seed=7)
  ref = np.full(4, 1.1)
  value = pareto.hypervolume(p, ref)
  rng = np.random.default_rng(8)
  # Points weakly worse than a front point: copies, and copies moved up in objectives.
  dominated = p[rng.integers(0, 300, 200)] + rng.random((200, 4)) * (rng.random((200, 4)) < 0.5)
  more = np.concatenate([p, dominated, p[:10]])
  # The rows are cut to one canonical sorted front first, so the value is the same
  # computation on the same numbers: equal to rounding (ATOL) or better.
  assert pareto.hypervolume(more, ref) == pytest.approx(value, abs=ATOL)
  assert pareto.hypervolume(more[rng.permutation(len(more))], ref) == pytest.approx(value,
                                                                                    abs=ATOL)


def test_hypervolume_ignores_points_outside_reference():
  p = np.array([[0.2, 0.5], [0.5, 0.2]])
  ref = [1.0, 1.0]
  value = pareto.hypervolume(p, ref)
  # On the reference in one objective, beyond it, +inf, and NaN: none contributes.
  # Nor does a -inf row that is on the reference elsewhere: its box is empty, not
  # unbounded.
  outside = [[0.0, 1.0], [1.0, 0.0], [0.0, 1.5], [np.inf, 0.0], [np.nan, 0.0], [-5.0, np.nan],
             [-np.inf, 1.0]]
  assert pareto.hypervolume(np.concatenate([p, outside]), ref) == pytest.approx(value, abs=ATOL)
  assert pareto.hypervolume(outside, ref) == 0.0
  # (0.5, 0.5)'s box alone: (1 − 0.5)² = 0.25.
  assert pareto.hypervolume([[-np.inf, 1.0], [0.5, 0.5]], 1.0) == pytest.approx(0.25, abs=ATOL)
  assert pareto.hypervolume(np.zeros((0, 2)), ref) == 0.0


@pytest.mark.parametrize("points, reference, match", [
    (np.zeros(3), 1.0, "shape"),
    (np.zeros((3, 0)), 1.0, "shape"),
    (np.zeros((2, 3, 1)), 1.0, "shape"),
    (np.zeros((3, 2)), [1.0, 1.0, 1.0], "shape"),
    (np.zeros((3, 2)), [1.0, np.nan], "finite"),
    (np.zeros((3, 2)), np.inf, "finite"),
    ([[0.0, -np.inf]], 1.0, "unbounded"),
])
def test_hypervolume_bad_input(points, reference, match):
  with pytest.raises(errors.InputError, match=match):
    pareto.hypervolume(points, reference)


def test_non_dominated_bad_shape():
  with pytest.raises(errors.InputError, match="shape"):
    pareto.non_dominated(np.zeros(4))


# normalize, bounds, hypervolume_ratio


def test_normalize_and_bounds():
  a = np.array([[1.0, 10.0], [3.0, 20.0], [np.nan, 0.0]])
  b = np.array([[2.0, 30.0], [np.inf, -100.0]])
  lower, upper = pareto.bounds(a, b)  # non-finite rows left out
  np.testing.assert_array_equal(lower, [1.0, 10.0])
  np.testing.assert_array_equal(upper, [3.0, 30.0])
  # (1 − 1)/2 = 0, (3 − 1)/2 = 1, (10 − 10)/20 = 0, (20 − 10)/20 = 0.5.
  np.testing.assert_allclose(pareto.normalize(a[:2], lower, upper), [[0.0, 0.0], [1.0, 0.5]])
  assert np.isnan(pareto.normalize(a, lower, upper)[2, 0])


@pytest.mark.parametrize("call, match", [
    (lambda: pareto.normalize([[1.0, 2.0]], [0.0, 2.0], [1.0, 2.0]), "objective 1"),
    (lambda: pareto.normalize([[1.0, 2.0]], [0.0, 3.0], [1.0, 2.0]), "objective 1"),
    (lambda: pareto.normalize([[1.0, 2.0]], [0.0], [1.0]), "shape"),
    (lambda: pareto.normalize([[1.0]], [np.nan], [1.0]), "finite"),
    (lambda: pareto.bounds(), "at least one"),
    (lambda: pareto.bounds(np.zeros((2, 2)), np.zeros((2, 3))), "same number"),
    (lambda: pareto.bounds([[np.nan, 1.0]]), "no finite row"),
    (lambda: pareto.hypervolume_ratio([[0.0, 1.0]], [[np.nan, 0.0]]), "baseline_points"),
    (lambda: pareto.hypervolume_ratio([[0.0, 1.0]], [[0.0, 2.0]]), "objective 0"),
])
def test_normalize_bounds_ratio_errors(call, match):
  with pytest.raises(errors.InputError, match=match):
    call()


def test_hypervolume_ratio_hand_computed():
  # Common bounds (0, 0)–(2, 2) in the original units; normalized, HyperRecon is
  # (0, 1), (1, 0) and the baseline (0.5, 0.5). Under r = 1.1: HyperRecon covers
  # 1.1·0.1 + 0.1·1.1 − 0.1·0.1 = 0.21, the baseline 0.6·0.6 = 0.36.
  out = pareto.hypervolume_ratio([[0.0, 2.0], [2.0, 0.0]], [[1.0, 1.0]])
  assert out["hyperrecon"] == pytest.approx(0.21, abs=ATOL)
  assert out["baselines"] == pytest.approx(0.36, abs=ATOL)
  assert out["ratio"] == pytest.approx(0.21 / 0.36, rel=1e-10)
  assert out["lower"] == [0.0, 0.0] and out["upper"] == [2.0, 2.0]
  assert out["reference"] == [pareto.REFERENCE] * 2
  assert json.loads(json.dumps(out)) == out  # plain floats and lists


def test_hypervolume_ratio_of_equal_sets_is_one():
  p = _sphere(50, 3, seed=9) * [1.0, 10.0, 100.0]  # objectives on very different scales
  assert pareto.hypervolume_ratio(p, p)["ratio"] == pytest.approx(1.0, abs=1e-15)
