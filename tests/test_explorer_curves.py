"""hyperrecon_jax.explorer.curves: a slice's curve summary over the λ set."""

import base64
import io
import json

import numpy as np
from PIL import Image
import pytest

from hyperrecon_jax import hparams
from hyperrecon_jax.explorer import curves
from hyperrecon_jax.explorer import lambda_set as ls

# The explorer answers a model gone past float32 (±inf, NaN) without NumPy's
# warnings on the server's terminal.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def test_the_pair_and_the_gallery_are_distinct_loss_weightings():
  # A 5 × 5 grid of three terms: the five λ with λ₁ = 1 all weight the first
  # term alone. A model's reconstruction depends on the coefficients only, so
  # here each is an image made from them, and the first term's is the best.
  lambdas = hparams.grid(5, 2)
  coeffs = np.asarray(hparams.coefficients(lambdas))
  lambda_set = ls.LambdaSet(5, None, lambdas, coeffs)
  truth = np.zeros((8, 8), np.float32)
  pattern = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
  recons = np.einsum("gk,khw->ghw", coeffs[:, 1:], pattern[1:]) * 0.5 + truth
  recons = recons.astype(np.float32)
  psnr = -10 * np.log10(np.mean(recons ** 2, axis=(1, 2)) + 1e-12)
  g = {"recons": recons, "psnr": psnr}
  out = curves.summary(g, lambda_set, ("psnr",), gallery_size=3, gallery_tolerance_db=200.0)
  a, b = out["diverse"]["indices"]
  assert not np.array_equal(coeffs[a], coeffs[b]) and out["diverse"]["distance"] > 0
  # The pair is the farthest of the distinct good ones, recomputed here.
  unique = hparams.distinct(lambdas)
  kept = [k for k in unique if psnr[k] >= np.percentile(psnr[unique], 90)]
  far = max(((i, j) for i in kept for j in kept if i < j),
            key=lambda p: np.linalg.norm(recons[p[0]] - recons[p[1]]))
  assert (a, b) == far
  picks = out["gallery"]["indices"]
  assert len({tuple(coeffs[k]) for k in picks}) == len(picks) == 3
  assert [item["index"] for item in out["gallery"]["items"]] == picks


def _grid_summary(recons, truth):
  """`curves.summary` of (G, H, W) reconstructions over a 1-D grid of G λ, by PSNR."""
  lambdas = hparams.grid(len(recons), 1)
  lambda_set = ls.LambdaSet(len(recons), None, lambdas,
                            np.asarray(hparams.coefficients(lambdas)))
  with np.errstate(invalid="ignore"):
    psnr = -10 * np.log10(np.mean((recons - truth) ** 2, axis=(1, 2)))
  return curves.summary({"recons": recons, "psnr": psnr}, lambda_set, ("psnr",),
                        gallery_size=2, gallery_tolerance_db=200.0)


def test_a_nan_pixel_leaves_the_range_white_level_finite():
  # One NaN pixel made range_max NaN: /api/curve's JSON failed (a 500).
  rng = np.random.default_rng(1)
  recons = rng.random((5, 8, 8)).astype(np.float32)
  recons[-1, 3, 3] = np.nan
  out = _grid_summary(recons, np.zeros((8, 8), np.float32))
  spread = recons.max(0) - recons.min(0)
  assert out["range_max"] == np.nanmax(spread) > 0  # NaN at that pixel, finite elsewhere
  json.dumps(out, allow_nan=False)


def test_a_slice_whose_reconstructions_are_all_nan_has_no_pair_and_no_gallery():
  # A model gone NaN: diverse_pair raised "psnrs are all NaN" (a 500).
  recons = np.full((4, 8, 8), np.nan, np.float32)
  out = _grid_summary(recons, np.zeros((8, 8), np.float32))
  assert out["diverse"] is None and out["gallery"] is None
  assert out["best"] == {"psnr": None} and out["metrics"]["psnr"] == [None] * 4
  assert out["range_max"] == 1.0  # nothing finite to draw
  json.dumps(out, allow_nan=False)


def _line_set(num):
  """A 1-D λ grid of ``num`` points as a `lambda_set.LambdaSet`."""
  lambdas = hparams.grid(num, 1)
  return ls.LambdaSet(num, None, lambdas, np.asarray(hparams.coefficients(lambdas)))


def test_the_best_point_of_a_metric_skips_its_nan_values():
  # A model NaN at some λ only: the best point of each metric is among the
  # others, with its value, not None for the whole metric.
  scores = {"psnr": np.array([20.0, np.nan, 25.0, 24.0]),
            "hfen": np.array([np.nan, 0.3, 0.2, 0.4])}
  best = curves.best_points(scores, _line_set(4), ("psnr", "hfen"))
  assert best["psnr"]["index"] == 2 and best["psnr"]["value"] == 25.0
  assert best["psnr"]["lam"] == [0.666667]  # grid 0, 1/3, 2/3, 1
  assert best["hfen"]["index"] == 2 and best["hfen"]["value"] == 0.2  # lower is better
  assert best["hfen"]["coeffs"] == [0.333333, 0.666667]


def test_the_range_image_is_white_at_range_max():
  rng = np.random.default_rng(2)
  recons = (rng.random((4, 8, 8)) * 0.25).astype(np.float32)  # a range well below 1
  out = _grid_summary(recons, np.zeros((8, 8), np.float32))
  spread = recons.max(0).astype(np.float64) - recons.min(0)
  assert out["range_max"] == pytest.approx(spread.max(), rel=1e-6)  # float32 max − min
  png = base64.b64decode(out["range"].removeprefix("data:image/png;base64,"))
  with Image.open(io.BytesIO(png)) as image:
    levels = np.asarray(image)
  # A level may differ by one where spread / range_max lies within float32
  # roundoff of a half level; drawn on [0, 1] instead, the top would be ~64.
  want = np.round(spread / spread.max() * 255)
  assert np.abs(levels.astype(int) - want).max() <= 1 and levels.max() == 255


def test_a_slice_whose_reconstructions_are_all_infinite_has_no_pair_and_no_gallery():
  # A model blown up past float32 gives ±inf pixels and a PSNR of −inf at
  # every λ: the gallery refused its candidates ("recons[0] holds non-finite
  # values", a 500), where a model gone NaN has no pair and no gallery.
  recons = np.full((4, 8, 8), np.inf, np.float32)
  out = _grid_summary(recons, np.zeros((8, 8), np.float32))
  assert out["diverse"] is None and out["gallery"] is None
  assert out["metrics"]["psnr"] == [None] * 4 and out["range_max"] == 1.0
  json.dumps(out, allow_nan=False)


def test_reconstructions_with_an_infinite_pixel_are_left_out_of_the_pair_and_the_gallery():
  rng = np.random.default_rng(3)
  recons = rng.random((5, 8, 8)).astype(np.float32)
  recons[[1, 3], 2, 2] = np.inf
  out = _grid_summary(recons, np.zeros((8, 8), np.float32))
  assert not {1, 3} & set(out["diverse"]["indices"] + out["gallery"]["indices"])
  assert out["gallery"]["num_candidates"] == 3
  json.dumps(out, allow_nan=False)
