"""Tests for hyperrecon_jax.tradeoffs: designs, Pareto sections, per-slice best λ, galleries."""

import numpy as np
import pytest

from hyperrecon_jax import hparams
from hyperrecon_jax import pareto
from hyperrecon_jax import tradeoffs
from hyperrecon_jax.errors import InputError


@pytest.mark.parametrize("k", [2, 3, 4])
def test_design_lambdas_hold_the_vertices_and_map_back_to_the_design(k):
  lam = tradeoffs.design_lambdas(20, k)
  assert lam.shape == (20, k - 1) and lam.dtype == np.float32
  coeffs = np.asarray(hparams.coefficients(lam))
  design = hparams.simplex_design(20, k, seed=tradeoffs.DESIGN_SEED)
  # The same points, in the design's order (K ≥ 3) or sorted by λ (K = 2);
  # float32 round trip through the stick-breaking map: a few ulps.
  if k == 2:
    design = design[np.argsort(design[:, 1], kind="stable")]
    assert np.all(np.diff(lam[:, 0]) >= 0)
  np.testing.assert_allclose(coeffs, design, atol=1e-6)
  for vertex in np.eye(k):
    assert np.any(np.all(np.abs(coeffs - vertex) < 1e-6, axis=1))


def test_term_points_are_one_row_per_lambda_in_the_order_of_the_names():
  # G = 3 λ, K = 2 terms (G ≠ K, so a transposed stack has another shape).
  loss_terms = {"mean": {"dc": [1.0, 2.0, 3.0], "tv": [4.0, 5.0, 6.0], "wavelet": [7.0, 8.0, 9.0]}}
  points = tradeoffs.term_points(loss_terms, ["wavelet", "dc"])
  assert points.shape == (3, 2) and points.dtype == np.float64
  np.testing.assert_array_equal(points, [[7.0, 1.0], [8.0, 2.0], [9.0, 3.0]])
  with pytest.raises(InputError,
                     match=r"^the result has no values of the loss terms \['tv', 'mse'\]\.$"):
    tradeoffs.term_points({"mean": {"dc": [1.0, 2.0]}}, ["dc", "tv", "mse"])


def test_pareto_section_without_baselines_marks_the_front_and_its_own_hypervolume():
  # (1, 3), (2, 2), (3, 1) are non-dominated; (3, 3) is dominated by (2, 2).
  points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 3.0], [3.0, 1.0]])
  lam = np.array([[0.0], [0.3], [0.6], [1.0]])
  out = tradeoffs.pareto_section(("a", "b"), points, lam)
  assert out["front"] == [0, 1, 3]
  assert out["front_lambdas"] == [[0.0], [0.3], [1.0]]
  # Normalized on the front's own range (1..3 in both): points (0, 1),
  # (.5, .5), (1, 0) and the dominated (1, 1); reference 1.1. Sweeping x, the
  # dominated height is 1.1 − 1 on [0, .5), 1.1 − .5 on [.5, 1), 1.1 on [1, 1.1).
  expected = 0.5 * 0.1 + 0.5 * 0.6 + 0.1 * 1.1
  assert out["hypervolume"]["hyperrecon"] == pytest.approx(expected, abs=1e-12)
  assert out["hypervolume"]["reference"] == [pareto.REFERENCE] * 2


def test_pareto_section_with_baselines_gives_the_common_scale_ratio():
  points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
  base = np.array([[1.5, 3.0], [3.0, 1.5], [3.0, 3.0]])
  out = tradeoffs.pareto_section(("a", "b"), points, np.zeros((3, 1)), base, np.ones((3, 1)))
  hv = out["hypervolume"]
  assert hv == pareto.hypervolume_ratio(points, base)
  assert hv["ratio"] > 1.0  # HyperRecon's staircase contains the baselines'
  assert out["baseline_front"] == [0, 1]
  assert out["baseline_points"] == base.tolist()


def test_best_per_slice_maximizes_or_minimizes_and_marks_unscorable_slices():
  per_slice = {"psnr": [[10.0, 12.0, 11.0], [None, None, None]],
               "mae": [[0.3, 0.1, 0.2], [0.5, None, 0.4]]}
  out = tradeoffs.best_per_slice(per_slice, {"mae"})
  assert out == {"psnr": [1, -1], "mae": [1, 2]}


def test_gallery_candidates_keep_the_tolerance_best_first_and_are_capped(monkeypatch):
  psnrs = np.array([20.0, 19.5, np.nan, 18.9, 19.0, 10.0])
  np.testing.assert_array_equal(tradeoffs.gallery_candidates(psnrs, 1.0), [0, 1, 4])
  monkeypatch.setattr(tradeoffs, "MAX_GALLERY_CANDIDATES", 2)
  np.testing.assert_array_equal(tradeoffs.gallery_candidates(psnrs, 1.0), [0, 1])
  with pytest.raises(InputError, match="no λ of this slice has a finite PSNR"):
    tradeoffs.gallery_candidates(np.full(3, np.nan), 1.0)


def test_gallery_candidates_keep_one_lambda_per_loss_weighting():
  # A 3 × 3 grid of three terms: rows 6, 7, 8 all weight the first term
  # alone, one reconstruction scored three times.
  lam = hparams.grid(3, 2)
  psnrs = np.array([15.0, 16.0, 17.0, 18.0, 19.0, 19.2, 20.0, 20.0, 20.0])
  np.testing.assert_array_equal(tradeoffs.gallery_candidates(psnrs, 1.0), [6, 7, 8, 5, 4])
  np.testing.assert_array_equal(tradeoffs.gallery_candidates(psnrs, 1.0, lam), [6, 5, 4])


def test_gallery_section_maps_picks_back_to_the_evaluated_lambdas():
  # Candidates 5, 2, 7 of 8 λ; images 1-pixel at 0, 0.1, 1: the farthest from
  # the best (index 5, at 0) is index 7 (at 1), then index 2.
  psnrs = np.zeros(8)
  psnrs[[5, 2, 7]] = [30.0, 29.9, 29.8]
  recons = np.array([[[0.0]], [[0.1]], [[1.0]]])
  lam = np.linspace(0, 1, 8, dtype=np.float32)[:, None]
  out = tradeoffs.gallery_section(recons, psnrs, np.array([5, 2, 7]), lam, 3, 1.0,
                                  {"psnr": psnrs})
  assert out["indices"] == [5, 7, 2] and out["positions"] == [0, 2, 1]
  np.testing.assert_allclose(out["lambdas"], lam[[5, 7, 2]].tolist())
  np.testing.assert_allclose(out["coeffs"], np.asarray(hparams.coefficients(lam[[5, 7, 2]])))
  assert out["min_distance"][0] is None  # no earlier pick: NaN, stored as None
  np.testing.assert_allclose(out["min_distance"][1:], [1.0, 0.1])
  assert out["scores"]["psnr"] == [30.0, 29.8, 29.9]
  assert out["num_candidates"] == 3 and out["tolerance_db"] == 1.0


def test_with_a_weight_term_the_image_terms_get_their_own_hypervolume_ratio():
  names = ("dc", "tv", "weight_l1")
  points = np.array([[1.0, 3.0, 50.0], [2.0, 2.0, 60.0], [3.0, 1.0, 55.0]])
  base = np.array([[1.5, 3.0, 1.0], [3.0, 1.5, 70.0], [3.0, 3.0, 65.0]])
  out = tradeoffs.pareto_section(names, points, np.zeros((3, 2)), base, np.ones((3, 2)))
  hi = out["hypervolume_image_terms"]
  assert hi["terms"] == ["dc", "tv"]
  assert {k: v for k, v in hi.items() if k != "terms"} == pareto.hypervolume_ratio(
      points[:, :2], base[:, :2])
  assert "hypervolume_image_terms" not in tradeoffs.pareto_section(
      ("dc", "tv"), points[:, :2], np.zeros((3, 1)), base[:, :2], np.ones((3, 1)))
  # One image term beside the weight term: no trade-off among the images to measure.
  assert "hypervolume_image_terms" not in tradeoffs.pareto_section(
      ("dc", "weight_l1"), points[:, ::2], np.zeros((3, 1)), base[:, ::2], np.ones((3, 1)))


def test_a_term_without_a_finite_mean_or_a_range_is_named_instead_of_a_pareto_set():
  # The report raised "the point sets hold no finite row" after all its scoring.
  names = ("dc", "tv", "wavelet")
  lam = hparams.grid(3, 2)[:3]
  points = np.array([[1.0, np.nan, 3.0], [2.0, np.nan, 1.0], [0.5, np.nan, 2.0]])
  expected = ("the term tv has no finite mean at any of HyperRecon's λ (a slice is left out of "
              "a term at every λ where the term is not finite at one of them)")
  assert tradeoffs.pareto_unavailable(names, points) == expected
  # The Unets' finite means do not make HyperRecon's set usable: the ratio needs both.
  unets = [[1.0, 5.0, 1.0], [0.2, 4.5, 2.5]]
  assert tradeoffs.pareto_unavailable(names, points, unets) == expected
  assert tradeoffs.pareto_unavailable(names, [[1.0, 4.0, 1.0]], [[np.nan] * 3]).startswith(
      "the terms dc, tv, wavelet have no finite mean at any of the Unets' λ")
  diagonal = np.where(np.eye(3, dtype=bool), np.nan, 1.0)  # no row of three finite terms
  assert tradeoffs.pareto_unavailable(names, diagonal).startswith(
      "none of HyperRecon's λ has a finite mean of every term")
  points[:, 1] = 4.0
  assert tradeoffs.pareto_unavailable(names, points) == (
      "the term tv is the same at every λ, with no range to normalize by")
  # Constant over HyperRecon's λ, but the Unets give it a range: usable.
  assert tradeoffs.pareto_unavailable(names, points, unets) is None
  assert tradeoffs.pareto_unavailable(names, points, [[1.0, 4.0, 1.0]]) == (
      "the term tv is the same at every λ, with no range to normalize by")
  # Where it says None, the section can be taken.
  points[:, 1] = [4.0, 5.0, 6.0]
  for base in (None, unets):
    assert tradeoffs.pareto_unavailable(names, points, base) is None
    section = tradeoffs.pareto_section(names, points, lam, base,
                                       None if base is None else lam[:2])
    assert section["terms"] == list(names)
