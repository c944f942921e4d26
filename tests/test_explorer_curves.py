"""hyperrecon_jax.explorer.curves: a slice's curve summary over the λ set."""

import json

import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax.explorer import curves
from hyperrecon_jax.explorer import lambda_set as ls


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
