"""Tests for hyperrecon_jax.metrics against independent references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from hyperrecon_jax import errors
from hyperrecon_jax import metrics


def _pair(b=3, h=40, w=36, seed=0, noise=0.1):
  rng = np.random.default_rng(seed)
  # Smooth images plus noise: SSIM well away from 0 and 1.
  target = scipy.ndimage.gaussian_filter(rng.random((b, h, w)), (0, 2, 2))
  target = (target - target.min()) / (target.max() - target.min())
  pred = np.clip(target + noise * rng.standard_normal(target.shape), 0, 1)
  return pred.astype(np.float32), target.astype(np.float32)


def _f64(x):
  return np.asarray(x, np.float64)


def test_ssim_matches_skimage():
  pred, target = _pair()
  got = np.asarray(metrics.ssim(pred, target))
  assert got.shape == (3,)
  # skimage filters with reflection but averages only over the interior
  # (crops (win_size - 1) // 2 = 5 pixels per border), i.e. the same window
  # positions as this 'valid' filtering; both use population statistics.
  ref = [sk_ssim(_f64(t), _f64(p), gaussian_weights=True, sigma=1.5,
                 use_sample_covariance=False, data_range=1.0) for p, t in zip(pred, target)]
  np.testing.assert_allclose(got, ref, atol=1e-4)
  assert 0.1 < got.min() and got.max() < 0.99
  # data_range: SSIM of images scaled by 2 with data range 2 is unchanged.
  np.testing.assert_allclose(metrics.ssim(2 * pred, 2 * target, data_range=2.0), got, atol=1e-5)


def test_ssim_of_an_image_with_itself_is_one_to_float32_rounding():
  # In exact arithmetic SSIM(x, x) is 1 at every window position; in float32
  # two kinds of rounding move it. (a) About ten roundings of quantities that
  # do not cancel (the luminance term's products and sums, the divisions, the
  # mean), 10 · 2⁻²⁴ = 6e-7 in all. (b) The covariance E[xy] − μxμy and the
  # variance E[x²] − μx² cancel, and XLA may round the two along different
  # paths (another vector lane, a fused multiply-add, fast math's
  # reassociation): one rounding of E[x²] apart, cs = (2 cov + C2) /
  # (2 var + C2) is off 1 by 2 · 2⁻²⁴ · E[x²] / (2 var + C2), 2.4e-5 at these
  # images' flattest bright positions (fast math reaches 2.9e-5 at one: two
  # roundings). The bound is (a) plus (b) averaged over the positions, from
  # float64 moments: 3.6e-6 to 5.5e-6 for these images, against 1 − SSIM of
  # at most 4.2e-7 with XLA's default flags and 1.13e-6 with
  # --xla_cpu_enable_fast_math=true.
  _, target = _pair()
  u, r, sigma = 2.0 ** -24, (metrics.SSIM_FILTER_SIZE - 1) // 2, metrics.SSIM_FILTER_SIGMA

  def window_mean(a):  # at the valid positions, as ssim filters
    return scipy.ndimage.gaussian_filter(a, sigma, truncate=r / sigma)[r:-r, r:-r]

  bound = []
  for t in _f64(target):
    mu, xx = window_mean(t), window_mean(t * t)
    bound.append(10 * u + 2 * u * np.mean(xx / (2 * (xx - mu * mu) + metrics.SSIM_K2 ** 2)))
  assert np.all(np.abs(1 - _f64(metrics.ssim(target, target))) <= bound)


def test_ssim_stays_within_its_range_on_nearly_flat_pairs():
  # Flat images (means 0.6 to 1, noise 1e-3) and copies shifted by up to 1e-3
  # with noise 1e-4: SSIM is 1 − 1e-5 in float64, but the float32 covariance,
  # a difference of moments near 1 that is of order 1e-6, can exceed
  # √(var_x var_y) by more than that deficit. Without the clamp of the
  # covariance to √(var_x var_y), 2 to 10 of such 16 images score above 1 (by
  # up to 6.5e-5) for each of the seeds 0 to 5, with or without LLVM's
  # optimization or fast math; with it, every one stays below 1 − 1.5e-5.
  rng = np.random.default_rng(0)
  base = rng.uniform(0.6, 1.0, (16, 1, 1))
  target = base + 1e-3 * rng.standard_normal((16, 16, 16))
  pred = target + rng.uniform(-1e-3, 1e-3, (16, 1, 1)) + 1e-4 * rng.standard_normal(target.shape)
  got = _f64(metrics.ssim(pred.astype(np.float32), target.astype(np.float32)))
  assert np.all((-1 <= got) & (got <= 1)), got.max()


def test_ssim_matches_skimage_on_a_flat_zero_background():
  # A brain slice's usual case: structure in the middle, exact zeros around.
  # At the 77% of window positions that see only zeros every moment is 0,
  # and SSIM there is C1·C2 / (C1·(2·floor + C2)): 1 to float32 with the
  # variance floor eps², 1 - 2·eps/C2 = 1 - 2.6e-4 with a floor of eps (a
  # 2.0e-4 shift of the mean). Elsewhere float32 against float64 differs by
  # < 1e-6 (2e-7 here); atol 2e-5 is a tenth of the one, 20 times the other.
  rng = np.random.default_rng(0)
  target = np.zeros((2, 64, 64))
  target[:, 24:40, 24:40] = scipy.ndimage.gaussian_filter(rng.random((2, 16, 16)), (0, 2, 2))
  target /= target.max()
  pred = np.clip(target + 0.05 * rng.standard_normal(target.shape) * (target > 0), 0, 1)
  pred, target = pred.astype(np.float32), target.astype(np.float32)
  ref = [sk_ssim(_f64(t), _f64(p), gaussian_weights=True, sigma=1.5,
                 use_sample_covariance=False, data_range=1.0) for p, t in zip(pred, target)]
  np.testing.assert_allclose(metrics.ssim(pred, target), ref, rtol=0, atol=2e-5)


def test_ssim_matches_skimage_where_the_means_differ():
  # Dark images whose means differ by a factor 2: the luminance term
  # (2 μx μy + C1) / (μx² + μy² + C1) is far from 1 and C1 = (K1 L)² is of
  # the size of μ², so a wrong K1 moves SSIM by ~1e-2. (_pair's images have
  # μx ≈ μy, where C1 hardly matters: K1 = 0.02 passed test_ssim_matches_skimage.)
  # float32 against float64: E[x²] ≤ 0.01 here, so the cancellation in
  # var = E[x²] − μ² costs ≤ 2·2⁻²⁴·0.01 / C2 ≈ 1.3e-6 of SSIM per position,
  # plus ~10 roundings (6e-7); atol 1e-5 covers both, 1e-3 of the K1 effect.
  _, target = _pair(b=2, h=24, w=24, seed=6)
  target = 0.1 * target
  pred = (0.5 * target + 0.01 * np.random.default_rng(6).standard_normal(target.shape))
  pred, target = pred.astype(np.float32), target.astype(np.float32)
  ref = [sk_ssim(_f64(t), _f64(p), gaussian_weights=True, sigma=1.5,
                 use_sample_covariance=False, data_range=1.0) for p, t in zip(pred, target)]
  np.testing.assert_allclose(metrics.ssim(pred, target), ref, rtol=0, atol=1e-5)
  # fastMRI's volume SSIM shares K1 (skimage's default, 0.01).
  ref = np.mean([sk_ssim(_f64(t), _f64(p), data_range=1.0) for p, t in zip(pred, target)])
  np.testing.assert_allclose(metrics.volume_ssim(pred, target, data_range=1.0), ref,
                             rtol=0, atol=1e-5)


def test_ssim_of_11x11_images_is_the_one_window_skimage_scores():
  # The smallest images ssim accepts: the window fits at one position, the
  # one skimage keeps after cropping 5 pixels per border. Tolerance as in
  # test_ssim_matches_skimage.
  pred, target = _pair(b=2, h=11, w=11, seed=7)
  ref = [sk_ssim(_f64(t), _f64(p), gaussian_weights=True, sigma=1.5,
                 use_sample_covariance=False, data_range=1.0) for p, t in zip(pred, target)]
  np.testing.assert_allclose(metrics.ssim(pred, target), ref, rtol=0, atol=1e-4)


def test_psnr_matches_skimage():
  pred, target = _pair()
  ref = [sk_psnr(_f64(t), _f64(p), data_range=1.0) for p, t in zip(pred, target)]
  np.testing.assert_allclose(metrics.psnr(pred, target), ref, atol=1e-4)
  ref2 = [sk_psnr(_f64(t), _f64(p), data_range=2.0) for p, t in zip(pred, target)]
  np.testing.assert_allclose(metrics.psnr(pred, target, data_range=2.0), ref2, atol=1e-4)
  assert np.isinf(np.asarray(metrics.psnr(target, target))).all()


def test_mae_mse_nmse_by_hand():
  pred = np.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
  target = np.array([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], np.float32)
  np.testing.assert_allclose(metrics.mae(pred, target), [(0 + 1 + 2 + 3) / 4, 0.5])
  np.testing.assert_allclose(metrics.mse(pred, target), [(0 + 1 + 4 + 9) / 4, 0.5])
  np.testing.assert_allclose(metrics.nmse(pred, target), [14 / 4, 2 / 2])
  np.testing.assert_allclose(metrics.psnr(pred, target), [10 * np.log10(1 / 3.5),
                                                         10 * np.log10(2)], rtol=1e-6)


@pytest.mark.parametrize("fn", [metrics.ssim, metrics.hfen])
def test_filtered_metrics_have_no_products_a_gpu_would_round(fn):
  # A GPU's default for float32 convolutions and matrix products can be TF32
  # (10 mantissa bits): the SSIM of a 256² slice moved by up to 6e-3 when its
  # filter's operands were rounded so. Written as shifted slices, multiplied
  # and added elementwise, the filters are float32 on every backend.
  pred, target = _pair(b=2, h=24, w=24)
  program = jax.jit(fn).lower(pred, target).as_text()
  assert "convolution" not in program and "dot_general" not in program


def test_laplacian_of_gaussian_matches_scipy():
  _, target = _pair(b=2, h=33, w=20)
  got = np.asarray(metrics.laplacian_of_gaussian(target))
  ref = np.stack([scipy.ndimage.gaussian_laplace(_f64(t), sigma=1.5, truncate=7 / 1.5)
                  for t in target])
  np.testing.assert_allclose(got, ref, atol=1e-6)
  # 15x15 support: radius 7.
  impulse = np.zeros((1, 31, 31), np.float32)
  impulse[0, 15, 15] = 1
  support = np.abs(np.asarray(metrics.laplacian_of_gaussian(impulse))[0]) > 0
  rows = np.flatnonzero(support.any(axis=1))
  assert rows.min() == 8 and rows.max() == 22


def test_hfen_matches_scipy_and_uses_ground_truth_norm():
  pred, target = _pair()

  def ref(p, t):
    lp = scipy.ndimage.gaussian_laplace(_f64(p), sigma=1.5, truncate=7 / 1.5)
    lt = scipy.ndimage.gaussian_laplace(_f64(t), sigma=1.5, truncate=7 / 1.5)
    return np.linalg.norm(lp - lt) / np.linalg.norm(lt)

  got = np.asarray(metrics.hfen(pred, target))
  np.testing.assert_allclose(got, [ref(p, t) for p, t in zip(pred, target)], rtol=1e-5)
  # Normalized by the target's LoG, so swapping the arguments changes it.
  swapped = np.asarray(metrics.hfen(target, pred))
  np.testing.assert_allclose(swapped, [ref(t, p) for p, t in zip(pred, target)], rtol=1e-5)
  assert np.all(np.abs(swapped - got) > 1e-3)
  np.testing.assert_allclose(metrics.hfen(target, target), 0.0)


def test_hfen_of_a_constant_target_is_not_finite():
  # A constant image has no edges: its LoG is 0, so HFEN is x / 0. The
  # truncated kernel's LoG of a constant c is 2·sum(d2)·c = −8.9e-6·c
  # (scipy's too), which would make it a large finite number.
  pred, target = _pair(b=2)
  constant = np.full_like(target, 0.5)
  residue = scipy.ndimage.gaussian_laplace(_f64(constant[0]), sigma=1.5, truncate=7 / 1.5)
  assert 0 < np.abs(residue).max() < 1e-5
  got = np.asarray(metrics.hfen(pred, constant))
  assert np.all(np.isposinf(got))
  assert np.all(np.isnan(metrics.hfen(constant, constant)))
  assert not np.any(np.isfinite(metrics.hfen(pred, np.zeros_like(target))))
  # One pixel off constant is an edge: the ratio is defined, and scipy's.
  nearly = constant.copy()
  nearly[:, 20, 18] += 0.01
  lp = scipy.ndimage.gaussian_laplace(_f64(pred[0]), sigma=1.5, truncate=7 / 1.5)
  lt = scipy.ndimage.gaussian_laplace(_f64(nearly[0]), sigma=1.5, truncate=7 / 1.5)
  np.testing.assert_allclose(metrics.hfen(pred, nearly)[0],
                             np.linalg.norm(lp - lt) / np.linalg.norm(lt), rtol=1e-4)


def test_rpsnr():
  pred, target = _pair()
  zf = np.clip(target + 0.3 * np.random.default_rng(1).standard_normal(target.shape),
               -1, 2).astype(np.float32)

  def mm(x):
    x = _f64(x)
    return (x - x.min()) / (x.max() - x.min())

  ref = [sk_psnr(mm(t), mm(p), data_range=1) - sk_psnr(mm(t), mm(z), data_range=1)
         for p, z, t in zip(pred, zf, target)]
  got = np.asarray(metrics.rpsnr(pred, zf, target))
  np.testing.assert_allclose(got, ref, atol=1e-3)
  assert np.all(got > 0)
  # Min-max normalization makes it invariant to affine changes of each image.
  np.testing.assert_allclose(metrics.rpsnr(3 * pred + 1, zf, target), got, atol=1e-3)
  np.testing.assert_allclose(metrics.minmax(np.full((1, 4, 4), 5.0)), 0.0)


def test_dice_by_hand():
  true = np.array([[[0, 0, 1, 1],
                    [0, 0, 1, 1],
                    [2, 2, 2, 2],
                    [2, 2, 2, 2]]])
  pred = np.array([[[0, 0, 0, 1],
                    [0, 0, 1, 1],
                    [2, 2, 2, 2],
                    [2, 2, 2, 0]]])
  got = np.asarray(metrics.dice(pred, true, num_classes=4))
  assert got.shape == (1, 4)
  # class 0: P=6, T=4, overlap 4; class 1: P=3, T=4, overlap 3;
  # class 2: P=7, T=8, overlap 7; class 3 absent from both -> 1.
  np.testing.assert_allclose(got[0], [8 / 10, 6 / 7, 14 / 15, 1.0], rtol=1e-6)
  # A class present in one map only scores 0.
  np.testing.assert_allclose(metrics.dice(np.zeros((1, 2, 2), int), np.ones((1, 2, 2), int), 2),
                             [[0.0, 0.0]])
  with pytest.raises(ValueError, match="num_classes"):
    metrics.dice(pred, true, num_classes=0)
  with pytest.raises(ValueError, match="integer"):
    metrics.dice(pred.astype(np.float32), true, num_classes=3)
  # Labels outside [0, C) belonged to no class: their pixels vanished from
  # every class's Dice instead of counting as disagreement.
  bad_true, bad_pred = true.copy(), pred.copy()
  bad_true[0, 3] = 3   # a row of label 3 with 3 classes
  bad_pred[0, 0, 0] = -1
  with pytest.raises(ValueError, match=r"true_labels: 4 of 16 labels lie outside \[0, 3\) "
                                       r"\(values 0\.\.3\)"):
    metrics.dice(pred, bad_true, num_classes=3)
  with pytest.raises(ValueError, match=r"pred_labels: 1 of 16 labels lie outside \[0, 4\) "
                                       r"\(values -1\.\.2\)"):
    metrics.dice(bad_pred, true, num_classes=4)


def test_volume_metrics_match_fastmri():
  pred, target = _pair(b=4, h=32, w=28)
  pred, target = 3 * pred, 3 * target  # data range is the volume maximum, not 1.
  maxval = target.max()
  mse = np.mean((_f64(pred) - _f64(target)) ** 2)
  np.testing.assert_allclose(metrics.volume_psnr(pred, target),
                             10 * np.log10(maxval ** 2 / mse), rtol=1e-5)
  np.testing.assert_allclose(metrics.volume_psnr(pred, target),
                             sk_psnr(_f64(target), _f64(pred), data_range=maxval), rtol=1e-5)
  np.testing.assert_allclose(
      metrics.volume_nmse(pred, target),
      np.linalg.norm(_f64(target) - _f64(pred)) ** 2 / np.linalg.norm(_f64(target)) ** 2,
      rtol=1e-5)
  # fastMRI: skimage defaults (7x7 uniform window, sample covariance).
  ref = np.mean([sk_ssim(_f64(t), _f64(p), data_range=maxval) for p, t in zip(pred, target)])
  np.testing.assert_allclose(metrics.volume_ssim(pred, target), ref, atol=1e-5)
  ref_g = np.mean([sk_ssim(_f64(t), _f64(p), data_range=maxval, gaussian_weights=True,
                           sigma=1.5, use_sample_covariance=False) for p, t in zip(pred, target)])
  np.testing.assert_allclose(metrics.volume_ssim(pred, target, gaussian=True), ref_g, atol=1e-4)
  # Flat slices: fastMRI's float64 moments against float32 ones, which keep
  # their digits only about each slice's mean (E[x²] − E[x]² of the raw
  # float32 values gives 0.98901 for the first pair, skimage 0.98824).
  rng = np.random.default_rng(1)
  for t, p in ((np.full((2, 16, 16), 0.7), np.full((2, 16, 16), 0.6)),
               (np.full((2, 16, 16), 0.95), np.full((2, 16, 16), 0.93)),
               (0.8 + 1e-3 * rng.standard_normal((2, 16, 16)),
                0.79 + 1e-3 * rng.standard_normal((2, 16, 16)))):
    t, p = t.astype(np.float32), p.astype(np.float32)
    ref = np.mean([sk_ssim(_f64(a), _f64(b), data_range=float(t.max())) for a, b in zip(t, p)])
    np.testing.assert_allclose(metrics.volume_ssim(p, t), ref, atol=1e-5)
  # Differs from the per-slice convention (peak 1).
  assert abs(float(metrics.volume_psnr(pred, target))
             - float(jnp.mean(metrics.psnr(pred, target)))) > 1.0


PER_SLICE = {
    "psnr": metrics.psnr,
    "ssim": metrics.ssim,
    "mae": metrics.mae,
    "mse": metrics.mse,
    "nmse": metrics.nmse,
    "hfen": metrics.hfen,
}


@pytest.mark.parametrize("name", sorted(PER_SLICE))
def test_jit_and_vmap(name):
  fn = PER_SLICE[name]
  pred, target = _pair(b=2, h=24, w=20)
  eager = np.asarray(fn(pred, target))
  assert eager.shape == (2,)
  np.testing.assert_allclose(jax.jit(fn)(pred, target), eager, rtol=1e-5)
  stacked = jax.vmap(fn)(np.stack([pred, target]), np.stack([target, target]))
  assert stacked.shape == (2, 2)
  np.testing.assert_allclose(stacked[0], eager, rtol=1e-5)


def test_jit_and_vmap_others():
  pred, target = _pair(b=2, h=24, w=20)
  two = lambda a: np.stack([a, a])
  for fn, args, shape in [
      (metrics.rpsnr, (pred, pred * target, target), (2,)),
      (metrics.laplacian_of_gaussian, (pred,), (2, 24, 20)),
      (metrics.minmax, (pred,), (2, 24, 20)),
      (metrics.volume_psnr, (pred, target), ()),
      (metrics.volume_nmse, (pred, target), ()),
      (metrics.volume_ssim, (pred, target), ()),
  ]:
    eager = np.asarray(fn(*args))
    assert eager.shape == shape, fn
    np.testing.assert_allclose(jax.jit(fn)(*args), eager, rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(fn)(*map(two, args))[1], eager, rtol=1e-5)
  labels = (np.arange(2 * 8 * 8).reshape(2, 8, 8) % 3)
  dice = jax.jit(metrics.dice, static_argnums=2)
  assert dice(labels, labels, 3).shape == (2, 3)
  assert jax.vmap(lambda a, b: metrics.dice(a, b, 3))(two(labels), two(labels)).shape == (2, 2, 3)


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.mae, metrics.mse,
                                metrics.nmse, metrics.hfen])
def test_bad_shapes(fn):
  with pytest.raises(ValueError, match="same shape"):
    fn(np.zeros((2, 16, 16)), np.zeros((2, 16, 12)))
  with pytest.raises(ValueError, match=r"pred must have shape \(B, H, W\)"):
    fn(np.zeros((16, 16)), np.zeros((16, 16)))


def test_a_range_per_image_is_each_images_own():
  # skimage at each image's own data_range; float32 against float64 as in
  # test_ssim_matches_skimage (1e-5). psnr and ssim took a (B,) range, ssim
  # averaged every row over all the ranges (the range broadcast against them).
  pred, target = _pair(b=2, seed=3)
  peaks = np.array([1.0, 2.5], np.float32)
  got = metrics.ssim(pred, target, data_range=peaks)
  want = [sk_ssim(_f64(target[i]), _f64(pred[i]), data_range=float(d), gaussian_weights=True,
                  sigma=1.5, use_sample_covariance=False) for i, d in enumerate(peaks)]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  want = [sk_psnr(_f64(target[i]), _f64(pred[i]), data_range=float(d))
          for i, d in enumerate(peaks)]
  np.testing.assert_allclose(metrics.psnr(pred, target, data_range=peaks), want, rtol=1e-5)
  for fn in (metrics.psnr, metrics.ssim):
    # A (B, 1) range broadcast psnr's (B,) values to a (B, B) table.
    with pytest.raises(ValueError, match=r"data_range must be a scalar or a \(2,\) vector, "
                                         r"one per image, got shape \(2, 1\)"):
      fn(pred, target, data_range=peaks[:, None])


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.mse, metrics.hfen])
def test_complex_images_are_refused(fn):
  # float32 conversion kept the real part: mse(t + 1j·t, t) was 0.
  pred, target = _pair(b=1, seed=4)
  with pytest.raises(ValueError, match=r"pred is complex \(complex64\): pass real images"):
    fn((pred + 1j * pred).astype(np.complex64), target)


def test_bad_inputs_other():
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim(np.zeros((1, 8, 16)), np.zeros((1, 8, 16)))
  with pytest.raises(ValueError, match="zero_filled_magnitude"):
    metrics.rpsnr(np.zeros((1, 8, 8)), np.zeros((1, 8, 8, 2)), np.zeros((1, 8, 8)))
  with pytest.raises(ValueError, match=r"\(S, H, W\)"):
    metrics.volume_ssim(np.zeros((8, 8)), np.zeros((8, 8)))
  with pytest.raises(ValueError, match="7x7"):
    metrics.volume_ssim(np.zeros((2, 6, 8)), np.zeros((2, 6, 8)))
  with pytest.raises(ValueError, match="same shape"):
    metrics.dice(np.zeros((1, 4, 4), int), np.zeros((1, 4, 5), int), 2)


def test_a_volume_range_must_be_a_scalar():
  # One volume has one peak L: a (S,) or (2,) range would broadcast
  # volume_psnr's scalar into a vector of scores and break volume_ssim's windows.
  pred, target = _pair(b=3, h=16, w=16, seed=5)
  for fn in (metrics.volume_psnr, metrics.volume_ssim):
    for shape in ((3,), (2,), (1,), (1, 1)):
      with pytest.raises(errors.InputError,
                         match=rf"data_range must be a scalar, the volume's peak L, got shape "
                               rf"\({', '.join(map(str, shape))},?\)"):
        fn(pred, target, data_range=np.full(shape, 2.0, np.float32))
  # A 0-d array is a scalar. PSNR at L = 2 by hand in float64; float32's
  # sum of S·H·W = 768 squares is off by at most 767·2⁻²⁴ ≈ 4.6e-5
  # relative, 10/ln 10 · 4.6e-5 ≈ 2.0e-4 dB, and the differences, squares
  # and log a few 2⁻²⁴ more.
  mse = np.mean((_f64(pred) - _f64(target)) ** 2)
  np.testing.assert_allclose(metrics.volume_psnr(pred, target, data_range=np.array(2.0)),
                             10 * np.log10(4.0 / mse), rtol=0, atol=2.1e-4)
  # SSIM against skimage as in test_volume_metrics_match_fastmri.
  np.testing.assert_allclose(metrics.volume_ssim(pred, target, data_range=np.float32(2.0)),
                             np.mean([sk_ssim(_f64(t), _f64(p), data_range=2.0)
                                      for p, t in zip(pred, target)]), rtol=0, atol=1e-5)
