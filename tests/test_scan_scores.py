"""Tests of hyperrecon_jax.scan_scores: a user's scan scored against itself.

The scores of real reconstructions are checked against scikit-image in
tests/test_reconstruct.py; here the reduction and the choice of the best λ,
by hand.
"""

import json

import numpy as np
import pytest

from hyperrecon_jax import scan_scores


def _moments(psnr, ssim, hfen):
  return {"psnr": psnr, "ssim": ssim, "hfen": hfen}


def test_moments_are_the_mean_and_population_std_over_slices():
  got = scan_scores.moments({"psnr": np.array([20.0, 22.0, 27.0])})
  assert got == {"psnr": (23.0, pytest.approx(np.sqrt((9 + 1 + 16) / 3)))}


def test_the_best_is_the_highest_psnr_and_ssim_and_the_lowest_hfen():
  per_lambda = [_moments((25.0, 1.0), (0.70, 0.1), (0.30, 0.0)),
                _moments((27.0, 2.0), (0.60, 0.1), (0.40, 0.0)),
                _moments((26.0, 1.5), (0.80, 0.1), (0.20, 0.0))]
  lambdas = np.array([[0.0], [0.1], [0.3]], np.float32)
  s = scan_scores.summarize(per_lambda, _moments((20.0, 1.0), (0.4, 0.1), (0.9, 0.1)),
                            lambdas, 7, "slices with foreground")
  assert s["slices"] == 7 and s["which"] == "slices with foreground"
  assert s["mean"] == {"psnr": [25.0, 27.0, 26.0], "ssim": [0.7, 0.6, 0.8],
                       "hfen": [0.3, 0.4, 0.2]}
  assert s["std"]["psnr"] == [1.0, 2.0, 1.5]
  assert s["zero_filled"] == {"psnr": 20.0, "ssim": 0.4, "hfen": 0.9}
  # λ as typed (0.1, not float32's 0.10000000149).
  assert s["best"] == {"psnr": {"index": 1, "lambda": [0.1], "value": 27.0},
                       "ssim": {"index": 2, "lambda": [0.3], "value": 0.8},
                       "hfen": {"index": 2, "lambda": [0.3], "value": 0.2}}
  assert scan_scores.describe(s, 64) == (
      "scores against the scan, on the model's 64×64 slices (7 slices with foreground): "
      "zero-filled input PSNR 20.00 dB, SSIM 0.400; best PSNR 27.00 dB at λ = 0.1; "
      "best SSIM 0.800 at λ = 0.3")
  # Another task's input by its own name (`physics.input_name`), not "zero-filled".
  assert scan_scores.describe(s, 64, "noisy input").split(": ")[1].startswith(
      "noisy input PSNR 20.00 dB")


def test_nan_means_are_never_best_and_an_all_nan_metric_has_none():
  nan = float("nan")
  per_lambda = [_moments((nan, nan), (0.5, 0.0), (nan, nan)),
                _moments((24.0, 0.0), (nan, nan), (nan, nan))]
  s = scan_scores.summarize(per_lambda, _moments((20.0, 0.0), (0.4, 0.0), (0.9, 0.0)),
                            np.array([[0.2, 0.4], [0.6, 0.8]]), 3,
                            "every slice (none has enough foreground)")
  assert s["best"]["psnr"]["index"] == 1 and s["best"]["ssim"]["index"] == 0
  assert "hfen" not in s["best"]
  assert s["which"] == "every slice (none has enough foreground)"
  assert s["best"]["psnr"]["lambda"] == [0.6, 0.8]
  # Three terms: c = (λ1, (1 − λ1)·λ2, (1 − λ1)(1 − λ2)).
  assert "best SSIM 0.500 at λ = 0.2:0.4 (c = 0.2:0.32:0.48)" in scan_scores.describe(s, 32)


def test_an_exact_reconstruction_is_best_and_written_as_null():
  inf = float("inf")
  per_lambda = [_moments((30.0, 1.0), (0.9, 0.0), (0.1, 0.0)),
                _moments((inf, 0.0), (1.0, 0.0), (0.0, 0.0))]
  s = scan_scores.summarize(per_lambda, _moments((20.0, 1.0), (0.4, 0.1), (0.9, 0.1)),
                            np.array([[0.0], [1.0]]), 1, "slices with foreground")
  assert s["mean"]["psnr"] == [30.0, None]
  assert s["best"]["psnr"] == {"index": 1, "lambda": [1.0], "value": None}
  json.dumps(s, allow_nan=False)  # strict JSON, as a report's
  assert "(1 slice with foreground)" in scan_scores.describe(s, 16)
  assert "best PSNR ∞ dB at λ = 1" in scan_scores.describe(s, 16)
  # An infinite HFEN (an empty target) is the worst, never a best.
  per_lambda = [_moments((inf, 0.0), (1.0, 0.0), (inf, 0.0))] * 2
  s = scan_scores.summarize(per_lambda, per_lambda[0], np.array([[0.0], [1.0]]), 1, "x")
  assert "hfen" not in s["best"] and s["best"]["psnr"]["index"] == 0


def test_slice_scores_of_an_exact_and_a_constant_reconstruction():
  rng = np.random.default_rng(0)
  target = rng.uniform(0, 1, (2, 16, 16)).astype(np.float32)
  exact = scan_scores.slice_scores(target, target)
  assert np.isinf(exact["psnr"]).all() and np.allclose(exact["ssim"], 1.0, atol=1e-6)
  assert np.allclose(exact["hfen"], 0.0)
  flat = scan_scores.slice_scores(np.full_like(target, 0.5), target)
  mse = np.mean((target.astype(np.float64) - 0.5) ** 2, axis=(1, 2))
  # float32 squared errors of values ≤ 1 summed over 256 pixels: 1e-4 dB.
  np.testing.assert_allclose(flat["psnr"], 10 * np.log10(1 / mse), atol=1e-4)


def test_scored_slices_are_the_kept_ones_that_are_not_constant_or_all():
  images = np.tile(np.float32([[0.2, 0.4], [0.6, 0.8]]), (5, 1, 1))
  images[2] = 0.0  # an empty slice, e.g. of a fastMRI file, which keeps every slice
  images[4] = 0.5  # a slice of one value: no edges, recovered exactly by CS-MRI

  class Scan:
    kind = "h5"
  Scan.images, Scan.kept = images, np.array([False, True, True, True, True])
  chosen, which = scan_scores.scored_slices(Scan)
  assert chosen.tolist() == [1, 3] and which == "slices that are not constant"
  Scan.kind = "nifti"
  assert scan_scores.scored_slices(Scan)[1] == "slices with foreground"
  Scan.kept = np.array([False, True, False, False, True])
  chosen, which = scan_scores.scored_slices(Scan)  # one slice is enough
  assert chosen.tolist() == [1] and which == "slices with foreground"
  Scan.kept = np.array([False, False, True, False, True])
  chosen, which = scan_scores.scored_slices(Scan)
  assert chosen.tolist() == [0, 1, 2, 3, 4] and which.startswith("every slice")


@pytest.mark.parametrize("slices, words", [(1, "1 slice that is not constant"),
                                           (2, "2 slices that are not constant")])
def test_the_scored_slices_are_counted_in_singular_or_plural(slices, words):
  flat = _moments((20.0, 0.0), (0.5, 0.0), (0.5, 0.0))
  s = scan_scores.summarize([flat], flat, np.array([[0.5]]), slices,
                            "slices that are not constant")
  assert scan_scores.describe(s, 64).startswith(
      f"scores against the scan, on the model's 64×64 slices ({words}): ")
