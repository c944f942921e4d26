"""hyperrecon_jax.explorer.curves: a slice's curve summary over the λ set."""

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
