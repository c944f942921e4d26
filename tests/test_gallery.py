"""Tests for hyperrecon_jax.gallery: greedy farthest-point galleries and per-metric bests."""

import math

import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import gallery
from hyperrecon_jax import results


def _brute_diverse(recons, psnrs, k, tolerance_db):
  """Reference: the full distance matrix and the greedy rule written out in Python."""
  x = recons.reshape(len(recons), -1).astype(np.float64)
  threshold = np.nanmax(psnrs) - tolerance_db
  candidates = [i for i in range(len(psnrs)) if psnrs[i] >= threshold]
  d = np.linalg.norm(x[:, None] - x[None], axis=2)
  picks, dists = [int(np.nanargmax(psnrs))], [math.nan]
  while len(picks) < min(k, len(candidates)):
    rest = [c for c in candidates if c not in picks]
    scores = [min(d[c, j] for j in picks) for c in rest]
    best = rest[int(np.argmax(scores))]  # first maximum: the lower index
    picks.append(best)
    dists.append(max(scores))
  return picks, dists, len(candidates)


_BRUTE_FORCE_CASES = [(1, (2, 2), 0), (6, (3,), 1), (12, (3, 3), 2), (40, (4, 5), 3),
                      (60, (8, 8), 4)]


@pytest.mark.parametrize("n, shape, seed", _BRUTE_FORCE_CASES)
def test_diverse_matches_brute_force(n, shape, seed):
  _check_against_brute_force(n, shape, seed)


@pytest.mark.parametrize("n, shape, seed", _BRUTE_FORCE_CASES)
def test_diverse_matches_brute_force_across_row_blocks(n, shape, seed, monkeypatch):
  # The cases have at most 60 candidates, inside one block of the default size;
  # blocks of 7 rows make each case with more than 7 candidates (the last three
  # at the widest tolerance) run several blocks, the last one partial.
  monkeypatch.setattr(gallery, "_ROWS", 7)
  _check_against_brute_force(n, shape, seed)


def _check_against_brute_force(n, shape, seed):
  """`gallery.diverse` against `_brute_diverse` over several k and tolerances."""
  rng = np.random.default_rng(seed)
  recons = rng.random((n, *shape)).astype(np.float32)
  psnrs = rng.uniform(30.0, 33.0, n)
  psnrs[rng.random(n) < 0.1] = np.nan
  if np.all(np.isnan(psnrs)):
    psnrs[0] = 31.0
  for k in (1, 2, 5, n + 3):
    for tolerance in (0.5, 1.5, 10.0):
      out = gallery.diverse(recons, psnrs, k, tolerance_db=tolerance)
      picks, dists, count = _brute_diverse(recons, psnrs, k, tolerance)
      assert out.indices == tuple(picks)
      assert out.num_candidates == count
      assert out.threshold == np.nanmax(psnrs) - tolerance
      # Both are square roots of sums of the same float64 squares in another
      # order: relative differences of a few ulp, far below 1e-12.
      np.testing.assert_allclose(out.min_distance, dists, rtol=1e-12)


def test_diverse_one_dimensional_images():
  # "Images" of one pixel at 0, 1, 2, 3, 10; the best PSNR is at 2. Farthest from 2
  # is 10 (distance 8); then 0 (min(2, 10) = 2 beats 1's and 3's distance 1); then
  # 1 and 3 tie at distance 1 and the lower index comes first.
  recons = np.array([0.0, 1.0, 2.0, 3.0, 10.0])[:, None]
  psnrs = np.array([30.0, 30.0, 31.0, 30.0, 30.0])
  out = gallery.diverse(recons, psnrs, 10)
  assert out.indices == (2, 4, 0, 1, 3)
  np.testing.assert_array_equal(out.min_distance, [np.nan, 8.0, 2.0, 1.0, 1.0])
  assert out.threshold == 30.0 and out.num_candidates == 5
  assert gallery.diverse(recons, psnrs, 2).indices == (2, 4)


def test_diverse_distance_is_l2_over_all_pixels():
  # (0, 0) to (3, 4): sqrt(9 + 16) = 5, as 2×1 images.
  recons = np.array([[[0.0], [0.0]], [[3.0], [4.0]]])
  out = gallery.diverse(recons, [20.0, 20.5], 2)
  assert out.indices == (1, 0) and out.min_distance[1] == 5.0


def test_diverse_tolerance_filter():
  # Best 30 dB, tolerance 1: candidates need >= 29.0 (inclusive); NaN never passes.
  psnrs = np.array([30.0, 29.5, 28.9, np.nan, 29.0, 25.0])
  recons = np.arange(6.0)[:, None, None] * [[1.0, -1.0]]
  out = gallery.diverse(recons, psnrs, 10, tolerance_db=1.0)
  assert out.threshold == 29.0 and out.num_candidates == 3
  assert sorted(out.indices) == [0, 1, 4] and out.indices[0] == 0
  out = gallery.diverse(recons, psnrs, 10, tolerance_db=0.0)
  assert out.indices == (0,) and out.num_candidates == 1


def test_diverse_identical_images_come_last():
  # Two copies of one image and a different one: the copy is picked last, at 0.0.
  recons = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
  out = gallery.diverse(recons, [31.0, 30.0, 30.0], 3)
  assert out.indices == (0, 2, 1)
  assert out.min_distance[1:] == (math.sqrt(2.0), 0.0)


@pytest.mark.parametrize("recons, psnrs, k, tolerance, match", [
    (np.zeros((3, 2)), [np.nan] * 3, 2, 1.0, "all NaN"),
    (np.zeros((3, 2)), [1.0, 2.0], 2, 1.0, "shape"),
    (np.zeros((3, 2)), np.zeros((3, 1)), 2, 1.0, "shape"),
    (np.zeros(3), [1.0, 2.0, 3.0], 2, 1.0, "shape"),
    (np.zeros((0, 2)), [], 2, 1.0, "shape"),
    (np.zeros((3, 2)), [1.0, 2.0, 3.0], 0, 1.0, "k must"),
    (np.zeros((3, 2)), [1.0, 2.0, 3.0], 2.5, 1.0, "k must"),
    (np.zeros((3, 2)), [1.0, 2.0, 3.0], 2, -1.0, "tolerance_db"),
    (np.zeros((3, 2)), [1.0, 2.0, 3.0], 2, np.nan, "tolerance_db"),
    (np.array([[0.0], [np.nan]]), [1.0, 1.0], 2, 1.0, r"recons\[1\]"),
    # recons[1] is no candidate (10 dB): the bad row is the second candidate, recons[2].
    (np.array([[0.0, 0.0], [0.0, 0.0], [np.nan, 0.0]]), [30.0, 10.0, 30.0], 2, 1.0,
     r"^recons\[2\] holds non-finite values\.$"),
])
def test_diverse_bad_input(recons, psnrs, k, tolerance, match):
  with pytest.raises(errors.InputError, match=match):
    gallery.diverse(recons, psnrs, k, tolerance_db=tolerance)


def test_gallery_is_frozen():
  out = gallery.diverse(np.zeros((2, 2)), [1.0, 2.0], 2)
  with pytest.raises(AttributeError):
    out.indices = (0,)


def test_per_metric_best():
  values = {"psnr": [30.0, np.nan, 32.0, 32.0], "mae": np.array([0.3, 0.1, np.nan, 0.2]),
            "ssim": [np.nan, 0.5, 0.7, 0.6]}
  # PSNR ties at 2 and 3: the lower index. The global set names more metrics than given.
  assert gallery.per_metric_best(values, results.LOWER_IS_BETTER) == {"psnr": 2, "mae": 1,
                                                                      "ssim": 2}
  assert gallery.per_metric_best({"mae": [0.3, 0.1]}, set()) == {"mae": 0}
  assert gallery.per_metric_best({}, set()) == {}


@pytest.mark.parametrize("values, match", [
    ({"psnr": [1.0, 2.0], "ssim": [0.5]}, r"values\['ssim'\].*\(2,\)"),
    ({"psnr": np.zeros((2, 2))}, "shape"),
    ({"psnr": [1.0], "mae": [np.nan]}, "mae"),
    ({"psnr": []}, "psnr"),
])
def test_per_metric_best_bad_input(values, match):
  with pytest.raises(errors.InputError, match=match):
    gallery.per_metric_best(values, {"mae"})
