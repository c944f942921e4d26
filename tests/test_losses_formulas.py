"""Tests for hyperrecon_jax.losses.formulas: each term's values, gradients and shapes."""

import warnings

import jax
import jax.numpy as jnp
from losses_support import CSMRI
from losses_support import pair
from losses_support import weight_tree
import numpy as np
import pytest
import pywt
import scipy.ndimage

from hyperrecon_jax import errors
from hyperrecon_jax import losses
from hyperrecon_jax import metrics
from hyperrecon_jax import physics


def test_mae_mse_by_hand():
  recon = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
  target = np.ones((1, 2, 2), np.float32)
  np.testing.assert_allclose(losses.mae(recon, target), [1.0])
  np.testing.assert_allclose(losses.mse(recon, target), [1.5])


def _numpy_reference_dssim(recon, target):
  """1 − SSIM as ``pytorch_ssim`` computes it: zero padding, mean over all pixels."""
  x = np.arange(11) - 5.0
  g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
  g /= g.sum()
  window = np.outer(g, g)
  out = []
  for a, b in zip(np.asarray(recon, np.float64), np.asarray(target, np.float64)):
    f = lambda v: scipy.ndimage.correlate(v, window, mode="constant", cval=0.0)
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    out.append(1.0 - ssim_map.mean())
  return np.array(out)


def test_dssim_follows_the_reference_loss():
  recon, target = pair()
  # float32 moments of values in [0, 1] filtered by weights summing to 1:
  # absolute roundoff ~1e-7 per moment, amplified at most ~10× by the ratio.
  np.testing.assert_allclose(losses.dssim(recon, target),
                             _numpy_reference_dssim(recon, target), atol=2e-6)
  np.testing.assert_allclose(losses.dssim(target, target), 0.0, atol=1e-6)
  # Not the metric's convention: the borders count here (as in the reference).
  assert np.all(np.abs(np.asarray(losses.dssim(recon, target))
                       - (1 - np.asarray(metrics.ssim(recon, target)))) > 1e-3)


def test_total_variation_by_hand():
  x = np.array([[[0.0, 1.0, 3.0],
                 [2.0, 2.0, 0.0]]], np.float32)
  # Vertical |2-0| + |2-1| + |0-3| = 6; horizontal |1-0| + |3-1| + |2-2| + |0-2| = 5.
  np.testing.assert_allclose(losses.total_variation(x), [11.0])
  np.testing.assert_allclose(losses.total_variation(np.ones((2, 4, 4))), [0.0, 0.0])


@pytest.mark.parametrize("op", [CSMRI, physics.Denoise(0.1), physics.SuperResolution(4)],
                         ids=["csmri", "denoise", "superres"])
def test_data_consistency_delegates(op):
  recon, target = pair()
  y = op.measure(target, jax.random.PRNGKey(0))
  np.testing.assert_allclose(losses.data_consistency(recon, y, op),
                             op.data_consistency(recon, y), rtol=1e-6)


def test_weight_l1():
  w = weight_tree()
  ref = [sum(np.abs(leaf[b]).sum() for leaf in jax.tree_util.tree_leaves(w)) for b in range(2)]
  np.testing.assert_allclose(losses.weight_l1(w), ref, rtol=1e-5)
  with pytest.raises(ValueError, match="leading batch axis"):
    losses.weight_l1({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})
  with pytest.raises(ValueError, match="no leaves"):
    losses.weight_l1({})


def test_bad_shapes():
  recon, target = pair()
  with pytest.raises(ValueError, match="same shape"):
    losses.mae(recon, target[:, :-1])
  with pytest.raises(ValueError, match=r"recon must have shape \(B, H, W\)"):
    losses.total_variation(recon[0])
  with pytest.raises(ValueError, match="recon has images"):
    losses.data_consistency(np.zeros((2, 8, 8)), CSMRI.measure(target), CSMRI)


GRAD_CASES = {
    "mae": lambda r, t: losses.mae(r, t),
    "mse": lambda r, t: losses.mse(r, t),
    "ssim": lambda r, t: losses.dssim(r, t),
    "tv": lambda r, t: losses.total_variation(r),
    "hfen": lambda r, t: losses.hfen(r, t),
    # 24 x 20 images: 2 levels fit (4 divides both).
    "wavelet": lambda r, t: losses.wavelet_l1(r, levels=2),
    "dc_csmri": lambda r, t: losses.data_consistency(r, CSMRI.measure(t), CSMRI),
    "dc_denoise": lambda r, t: losses.data_consistency(r, t + 0.05, physics.Denoise(0.1)),
    "dc_superres": lambda r, t: losses.data_consistency(
        r, physics.SuperResolution(4).measure(t), physics.SuperResolution(4)),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradients_finite_nonzero(name):
  recon, target = pair()
  fn = GRAD_CASES[name]
  g = jax.jit(jax.grad(lambda r: jnp.sum(fn(r, target))))(recon)
  g = np.asarray(g)
  assert g.shape == recon.shape
  assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
  # Per-example: each output depends on its own image only.
  g0 = np.asarray(jax.grad(lambda r: fn(r, target)[0])(recon))
  assert np.abs(g0[0]).max() > 0 and np.all(g0[1] == 0)


def test_weight_l1_gradient():
  w = weight_tree()
  g = jax.grad(lambda w: jnp.sum(losses.weight_l1(w)))(w)
  for leaf, gl in zip(jax.tree_util.tree_leaves(w), jax.tree_util.tree_leaves(g)):
    np.testing.assert_allclose(gl, np.sign(leaf))


def test_each_term_under_vmap():
  recon, target = pair()
  w = weight_tree()
  two = lambda a: jax.tree_util.tree_map(lambda v: np.stack([v, v]), a)
  for fn in (losses.mae, losses.mse, losses.dssim):
    np.testing.assert_allclose(jax.vmap(fn)(two(recon), two(target))[1], fn(recon, target),
                               rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(losses.total_variation)(two(recon))[1],
                             losses.total_variation(recon), rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(losses.hfen)(two(recon), two(target))[1],
                             losses.hfen(recon, target), rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(lambda r: losses.wavelet_l1(r, levels=2))(two(recon))[1],
                             losses.wavelet_l1(recon, levels=2), rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(losses.weight_l1)(two(w))[1], losses.weight_l1(w),
                             rtol=1e-5)


# The wavelet and HFEN terms.

EPS32 = float(np.finfo(np.float32).eps)


def _numpy_reference_wavelet_l1(x, wavelet, levels):
  """Sum of |detail coefficients| of ``pywt.wavedec2`` (periodization), in float64."""
  out = []
  for image in np.asarray(x, np.float64):
    # pywt warns when a level is shorter than the filter; with periodization
    # the transform stays the exact periodic one.
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", "Level value of", UserWarning)
      coeffs = pywt.wavedec2(image, wavelet, mode="periodization", level=levels)
    out.append(sum(np.abs(band).sum() for level in coeffs[1:] for band in level))
  return np.array(out)


def _wavelet_atol(x, wavelet, levels):
  """Error bound of the sum: its N detail coefficients, each within the float32
  bound of tests/test_wavelets.py, ``2 F L`` ulps of ``2**L * max|x|``."""
  f = len(pywt.Wavelet(wavelet).dec_lo)
  n = x.shape[1] * x.shape[2] * (1 - 4.0 ** -levels)
  return n * 2 * f * levels * EPS32 * 2 ** levels * float(np.abs(x).max())


@pytest.mark.parametrize("wavelet,levels,size", [("db2", 3, 32), ("haar", 1, 16), ("db4", 2, 24)])
def test_wavelet_l1_matches_pywt(wavelet, levels, size):
  x = np.random.default_rng(3).random((3, size, size + 8)).astype(np.float32)
  got = losses.wavelet_l1(x, wavelet=wavelet, levels=levels)
  assert got.shape == (3,)
  np.testing.assert_allclose(got, _numpy_reference_wavelet_l1(x, wavelet, levels), rtol=0,
                             atol=_wavelet_atol(x, wavelet, levels))


def test_wavelet_term_is_db2_three_levels_and_fits_32_and_64():
  for size in (32, 64):
    recon = np.random.default_rng(size).random((2, size, size)).astype(np.float32)
    term = losses.compute_terms(("wavelet",), recon)[:, 0]
    np.testing.assert_allclose(term, _numpy_reference_wavelet_l1(recon, "db2", 3), rtol=0,
                               atol=_wavelet_atol(recon, "db2", 3))
    # Periodic boundaries: a constant image has only roundoff in its details,
    # at most about F ulps of each coefficient's scale 2**L * value.
    flat = np.full((2, size, size), 0.7, np.float32)
    n = size * size * (1 - 4.0 ** -3)
    np.testing.assert_allclose(losses.wavelet_l1(flat), 0.0, atol=n * 4 * EPS32 * 8 * 0.7)
  # The mean intensity is not penalized: only the details count.
  np.testing.assert_allclose(losses.wavelet_l1(recon + 0.25), losses.wavelet_l1(recon),
                             rtol=1e-5)


def test_wavelet_l1_sizes_it_cannot_take():
  recon, _ = pair()  # 24 x 20: 8 does not divide 20
  with pytest.raises(errors.InputError,
                     match=r"divisible by 2\*\*3 = 8, got recon of shape \(2, 24, 20\) "
                           r"\(W=20\); crop or pad"):
    losses.compute_terms(("tv", "wavelet"), recon)
  with pytest.raises(errors.InputError, match="unknown wavelet 'sym4'"):
    losses.wavelet_l1(recon, wavelet="sym4", levels=2)
  with pytest.raises(errors.InputError, match=r"recon must have shape \(B, H, W\)"):
    losses.wavelet_l1(recon[0], levels=2)


def test_hfen_term_is_the_metric_with_a_gradient_at_equality():
  recon, target = pair()
  np.testing.assert_allclose(losses.hfen(recon, target), metrics.hfen(recon, target), rtol=1e-6)
  terms = losses.compute_terms(("mae", "hfen"), recon, target)
  np.testing.assert_allclose(terms[:, 1], metrics.hfen(recon, target), rtol=1e-6)
  np.testing.assert_array_equal(losses.hfen(target, target), [0.0, 0.0])
  # The metric's gradient is NaN where recon == target; the loss's is 0 there,
  # finite elsewhere (test_gradients_finite_nonzero).
  half = np.concatenate([target[:1], recon[1:]])
  g = np.asarray(jax.grad(lambda r: jnp.sum(losses.hfen(r, target)))(half))
  assert np.all(g[0] == 0) and np.all(np.isfinite(g[1])) and np.abs(g[1]).max() > 0
  g_metric = np.asarray(jax.grad(lambda r: jnp.sum(metrics.hfen(r, target)))(half))
  np.testing.assert_allclose(g[1], g_metric[1], rtol=1e-5, atol=1e-9)
