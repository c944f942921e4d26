"""Tests of hyperrecon_jax.grid, the one inference engine: λ grids in chunks in either
order, every model type, bad input, the terms of the generated weights."""

import re

from evaluation_support import SIZE
from evaluation_support import G
from evaluation_support import assert_close
from evaluation_support import network_input
from evaluation_support import per_lambda
from evaluation_support import smooth_images
from evaluation_support import tiny_hyperunet
import jax
import numpy as np
import pytest
import scipy.ndimage
from skimage.metrics import structural_similarity as sk_ssim

from hyperrecon_jax import errors
from hyperrecon_jax import grid
from hyperrecon_jax import hparams
from hyperrecon_jax import models


# S·G = 12. chunk 3 divides G; 5 is balanced to 3 calls of 4, which cross slice
# boundaries; 64 exceeds S·G (one call). Padding: see the single-slice test.
@pytest.mark.parametrize("order", ["slice", "lambda"])
@pytest.mark.parametrize("chunk", [3, 5, 64])
def test_reconstruct_grid_matches_one_call_per_lambda(chunk, order):
  net, variables, _ = tiny_hyperunet()
  zf = network_input(2, seed=chunk)
  coeffs = np.asarray(hparams.coefficients(hparams.grid(G)))
  got = grid.reconstruct_grid(net, variables, zf, coeffs, chunk=chunk, order=order)
  assert got.shape == (2, G, SIZE, SIZE)
  assert_close(got, per_lambda(zf, coeffs))


@pytest.mark.parametrize("order", ["slice", "lambda"])
def test_the_cpu_loop_strategy_gives_the_vmap_grid(order):
  # The CPU default 'loop' (one ordinary convolution per row) and 'vmap' (one
  # grouped convolution) are the same arithmetic in another layout: float32
  # roundoff apart (1e-5 of the largest value).
  net, variables, _ = tiny_hyperunet()
  loop = models.HyperUnet(hyper_dim=4, num_coeffs=2, channels=4, strategy="loop")
  zf = network_input(2, seed=21)
  coeffs = np.asarray(hparams.coefficients(hparams.grid(G)))
  got = grid.reconstruct_grid(loop, variables, zf, coeffs, chunk=5, order=order)
  assert_close(got, per_lambda(zf, coeffs))


def test_lambda_major_pads_the_last_call_and_scores_as_slice_major():
  # 5 slices in calls of 2: three calls per λ, the last padded with slice 0.
  # λ-major runs one generated weight set per call (a shared-weight Unet),
  # slice-major one per row: the same arithmetic in another order, so the
  # metrics agree to float32 roundoff (PSNR to 1e-4 dB of ~10-30 dB values).
  net, variables, _ = tiny_hyperunet()
  zf = network_input(5, seed=11)
  target = smooth_images(5, 12)
  coeffs = np.asarray(hparams.coefficients(hparams.grid(G)))
  recon = grid.reconstruct_grid(net, variables, zf, coeffs, chunk=2, order="lambda")
  assert_close(recon, per_lambda(zf, coeffs))
  by_lambda = grid.grid_metrics(net, variables, zf, target, coeffs, chunk=2,
                                    order="lambda")
  by_slice = grid.grid_metrics(net, variables, zf, target, coeffs, chunk=2,
                                   order="slice")
  for m in by_slice:
    np.testing.assert_allclose(by_lambda[m], by_slice[m], rtol=1e-4, atol=1e-6, err_msg=m)


@pytest.mark.parametrize("order", ["slice", "lambda"])
def test_grid_metrics_can_return_the_reconstructions_it_scored(order):
  # The explorer's curves: every reconstruction of the grid and its scores
  # from one program, each call scored as it is made (the metrics of the
  # whole stack at once took 19 times its memory). Padding row 1 is dropped
  # from both. Tolerances: float32 roundoff, as in the test above.
  net, variables, _ = tiny_hyperunet()
  zf, target = network_input(3, seed=41), smooth_images(3, 42)
  valid = np.array([True, False, True])
  coeffs = np.asarray(hparams.coefficients(hparams.grid(G)))
  got = grid.grid_metrics(net, variables, zf, target, coeffs, chunk=2, order=order,
                          valid=valid, keep_recons=True)
  assert got["recons"].shape == (2, G, SIZE, SIZE) and got["recons"].dtype == np.float32
  assert_close(got["recons"], per_lambda(zf, coeffs)[valid])
  plain = grid.grid_metrics(net, variables, zf, target, coeffs, chunk=2, order=order,
                            valid=valid)
  assert set(got) == set(plain) | {"recons"}
  for m in plain:
    np.testing.assert_allclose(got[m], plain[m], rtol=1e-6, atol=1e-7, err_msg=m)
  # Every score against its definition in float64 on the reconstructions
  # returned, which catches a metric called with its arguments swapped or the
  # wrong one called. Tolerances: float32 sums of 256 pixels against float64,
  # ~1e-6 relative (4e-6 dB); the margins as in test_metrics.py.
  recons = got["recons"].reshape(-1, SIZE, SIZE).astype(np.float64)
  kept = np.repeat(target[valid].astype(np.float64), G, axis=0)
  zf_mag = np.repeat(np.hypot(zf[valid, ..., 0], zf[valid, ..., 1]).astype(np.float64), G, axis=0)

  def psnr(p, t):
    return 10 * np.log10(1 / np.mean((p - t) ** 2))

  def log(x):
    return scipy.ndimage.gaussian_laplace(x, sigma=1.5, truncate=7 / 1.5)

  def minmax(x):
    return (x - x.min()) / (x.max() - x.min())

  direct = {
      "psnr": [psnr(p, t) for p, t in zip(recons, kept)],
      "ssim": [sk_ssim(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                       data_range=1.0) for p, t in zip(recons, kept)],
      "mae": [np.mean(np.abs(p - t)) for p, t in zip(recons, kept)],
      "nmse": [np.sum((p - t) ** 2) / np.sum(t ** 2) for p, t in zip(recons, kept)],
      "hfen": [np.linalg.norm(log(p) - log(t)) / np.linalg.norm(log(t))
               for p, t in zip(recons, kept)],
      "rpsnr": [psnr(minmax(p), minmax(t)) - psnr(minmax(z), minmax(t))
                for p, z, t in zip(recons, zf_mag, kept)],
  }
  assert set(direct) == set(plain)
  for m, atol, rtol in (("psnr", 1e-4, 0), ("rpsnr", 1e-4, 0), ("ssim", 1e-5, 0),
                        ("mae", 0, 1e-5), ("nmse", 0, 1e-5), ("hfen", 0, 1e-5)):
    np.testing.assert_allclose(got[m], np.reshape(direct[m], (2, G)), rtol=rtol, atol=atol,
                               err_msg=m)


def test_lambda_major_generates_the_weights_of_a_block_of_lambdas_at_once(monkeypatch):
  # 7 λ in blocks of 4: two `evaluation_weights` calls, the second padded
  # with λ 0, then one shared-weight Unet per call: each λ's reconstruction
  # is the model's own call at that λ.
  monkeypatch.setattr(grid, "LAMBDA_BLOCK", 4)
  net, variables, _ = tiny_hyperunet()
  zf = network_input(3, seed=31)
  coeffs = np.asarray(hparams.coefficients(hparams.grid(7)))
  got = grid.reconstruct_grid(net, variables, zf, coeffs, chunk=2, order="lambda")
  assert_close(got, per_lambda(zf, coeffs))


@pytest.mark.parametrize("order", ["slice", "lambda"])
def test_every_model_type_runs_on_the_grid_as_its_own_calls(order):
  # A plain Unet (one λ) and a stack of three (each λ answered by its nearest
  # member) on the same engine as a HyperUnet: each grid column is the
  # model's evaluation-mode call at that λ, to float32 roundoff (BatchNorm
  # folded into the weights is the same affine map, reassociated).
  zf = network_input(2, seed=41)
  coeffs = np.asarray(hparams.coefficients(hparams.grid(3)))
  for model in (models.Unet(channels=4),
                models.UnetStack(((0.0,), (0.4,), (1.0,)), channels=4)):
    variables = model.init(jax.random.key(2), zf, coeffs[:2])
    variables = jax.tree_util.tree_map(  # BatchNorm statistics away from (0, 1)
        lambda x: x * 1.3 + 0.1 if x.ndim <= 2 else x, variables)
    want = np.stack([np.asarray(model.apply(variables, zf, np.tile(c, (2, 1))))
                     for c in coeffs], 1)
    got = grid.reconstruct_grid(model, variables, zf, coeffs, chunk=2, order=order)
    assert_close(got, want)


@pytest.mark.parametrize("order, slices, chunk, backend, want", [
    ("auto", 8, 8, "gpu", "lambda"), ("auto", 4, 8, "gpu", "lambda"),
    ("auto", 3, 8, "gpu", "slice"), ("auto", 1, 32, "gpu", "slice"),
    ("auto", 1, 32, "cpu", "lambda"), ("auto", 3, 8, "cpu", "lambda"),
    ("slice", 32, 8, "cpu", "slice"), ("slice", 32, 8, "gpu", "slice"),
    ("lambda", 1, 8, "gpu", "lambda")])
def test_resolve_order(order, slices, chunk, backend, want):
  from hyperrecon_jax import grid
  assert grid.resolve_order(order, slices, chunk, backend) == want


def test_resolve_order_reads_the_default_backend():
  from hyperrecon_jax import grid
  assert grid.resolve_order("auto", 1, 32) == grid.resolve_order("auto", 1, 32,
                                                                jax.default_backend())


def test_an_unknown_order_is_refused():
  from hyperrecon_jax import grid
  with pytest.raises(ValueError, match="order must be one of"):
    grid.resolve_order("random", 4, 8)


def test_reconstruct_grid_single_slice():
  net, variables, _ = tiny_hyperunet()
  zf = network_input(2, seed=3)
  coeffs = np.asarray(hparams.coefficients(hparams.grid(5)))
  # 5 pairs, chunk 4: two calls of 3, the last one padded.
  got = grid.reconstruct_grid(net, variables, zf[1], coeffs, chunk=4)
  assert got.shape == (5, SIZE, SIZE)
  assert_close(got, per_lambda(zf, coeffs)[1])


@pytest.mark.parametrize("zf_shape, coeffs_shape, chunk, match", [
    ((2, SIZE, SIZE), (G, 2), 4, "zf"),
    ((2, SIZE, SIZE, 3), (G, 2), 4, "zf"),
    ((2, SIZE, SIZE, 2), (G,), 4, "coeffs"),
    ((2, SIZE, SIZE, 2), (G, 2), 0, "chunk"),
    ((2, SIZE, SIZE, 2), (G, 2), 2.0, "chunk"),
])
def test_reconstruct_grid_bad_input(zf_shape, coeffs_shape, chunk, match):
  net, variables, _ = tiny_hyperunet()
  with pytest.raises(ValueError, match=match):
    grid.reconstruct_grid(net, variables, np.zeros(zf_shape, np.float32),
                              np.zeros(coeffs_shape, np.float32), chunk=chunk)



@pytest.mark.parametrize("zf_shape", [(2, SIZE, SIZE), (2, SIZE, SIZE, 3), (SIZE, SIZE)])
def test_a_bad_zf_is_named_by_the_shape_given(zf_shape):
  # (B, H, W) images were reported as "got shape (1, 2, H, W)": the shape after
  # a single slice's added axis, not the one passed.
  net, variables, _ = tiny_hyperunet()
  coeffs = np.asarray(hparams.coefficients(hparams.grid(2)))
  with pytest.raises(errors.InputError, match=re.escape(f"got shape {zf_shape}.")):
    grid.reconstruct_grid(net, variables, np.zeros(zf_shape, np.float32), coeffs)

def test_default_chunk_is_small_on_cpu():
  # The CPU 'loop' strategy unrolls the chunk, so a big default compiles slowly.
  assert grid.default_chunk() == grid.DEFAULT_CHUNK_CPU == 8


def test_coefficients_off_the_simplex_are_refused():
  # Raw loss weights or NaN: the model extrapolated without a word.
  net, variables, _ = tiny_hyperunet()
  zf = network_input(2, 0)
  for coeffs, pattern in (([[1.0, 1.0]], "rows must sum to 1 .* row 0 sums to 2"),
                          ([[np.nan, 1.0]], r"must be finite, row 0 is \[nan, 1\.0\]"),
                          ([[0.5, 0.5], [1.5, -0.5]], "row 1")):
    with pytest.raises(ValueError, match=pattern):
      grid.reconstruct_grid(net, variables, zf, np.asarray(coeffs, np.float32))


def test_coefficients_as_lists_are_taken_as_arrays():
  # A list has no shape attribute, so a check of `.shape` alone refuses it.
  net, variables, _ = tiny_hyperunet()
  zf = network_input(2, seed=3)
  coeffs = np.asarray(hparams.coefficients(hparams.grid(G)))
  # The same compiled program on the same float32 values: equal to the bit.
  np.testing.assert_array_equal(
      grid.reconstruct_grid(net, variables, zf, coeffs.tolist(), chunk=3, order="lambda"),
      grid.reconstruct_grid(net, variables, zf, coeffs, chunk=3, order="lambda"))
  np.testing.assert_array_equal(
      grid.weight_terms(net, variables, coeffs.tolist(), ("weight_l1",))["weight_l1"],
      grid.weight_terms(net, variables, coeffs, ("weight_l1",))["weight_l1"])
  with pytest.raises(ValueError, match=r"rows must sum to 1 .* row 1 sums to 0\.9"):
    grid.reconstruct_grid(net, variables, zf, [[0.5, 0.5], [0.3, 0.6]])


def test_grid_metrics_bad_input():
  net, variables, _ = tiny_hyperunet()
  zf, coeffs = network_input(2, 0), np.full((G, 2), 0.5, np.float32)
  with pytest.raises(ValueError, match="target"):
    grid.grid_metrics(net, variables, zf, np.zeros((2, SIZE, 8)), coeffs)
  with pytest.raises(ValueError, match="valid"):
    grid.grid_metrics(net, variables, zf, np.clip(zf[..., 0], 0, 1), coeffs, valid=[True])
  # Images on another scale (×1000) scored about −58 dB without a word.
  target = smooth_images(2, 1)
  for bad, shown in ((target * 1000, r"\[\d.*, \d{3}\.?\d*\]"), (target - 0.5, r"\[-0\.\d+"),
                     (np.where(target > 0.5, np.nan, target), r"\[nan")):
    with pytest.raises(ValueError, match=r"target must hold images in \[0, 1\] .*got values in "
                       + shown):
      grid.grid_metrics(net, variables, zf, bad, coeffs)
    with pytest.raises(ValueError, match=r"target must hold images in \[0, 1\]"):
      grid.zero_filled_metrics(zf, bad)


def test_weight_terms_are_the_weight_l1_of_the_generated_weights():
  from hyperrecon_jax import losses
  net, variables, _ = tiny_hyperunet()
  coeffs = np.asarray(hparams.coefficients(hparams.grid(35)))  # two blocks of 18, one padded
  out = grid.weight_terms(net, variables, coeffs, ("dc", "weight_l1"))
  direct = np.asarray(losses.weight_l1(net.apply(variables, coeffs,
                                                 method=models.HyperUnet.generate)))
  assert list(out) == ["weight_l1"] and out["weight_l1"].shape == (35,)
  np.testing.assert_allclose(out["weight_l1"], direct, rtol=1e-6)
  assert grid.weight_terms(net, variables, coeffs, ("dc",)) == {}


def test_weight_terms_of_ones_own_are_computed_by_their_own_function(own_terms):
  import own_terms as module  # registers weight_l2, a term of the weights
  net, variables, _ = tiny_hyperunet()
  coeffs = np.asarray(hparams.coefficients(hparams.grid(5)))
  out = grid.weight_terms(net, variables, coeffs, ("weight_l2", "dc", "weight_l1"))
  generated = net.apply(variables, coeffs, method=models.HyperUnet.generate)
  assert list(out) == ["weight_l2", "weight_l1"]
  l2 = sum(np.sum(np.square(np.asarray(leaf, np.float64)).reshape(5, -1), axis=1)
           for leaf in jax.tree_util.tree_leaves(generated))
  np.testing.assert_allclose(out["weight_l2"], l2, rtol=1e-5)
  np.testing.assert_allclose(out["weight_l2"], module.weight_l2(None, None, weights=generated),
                             rtol=1e-6)
  assert not np.allclose(out["weight_l2"], out["weight_l1"])
