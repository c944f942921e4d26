"""Tests for hyperrecon_jax.losses."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt
import scipy.ndimage

from hyperrecon_jax import errors
from hyperrecon_jax import losses
from hyperrecon_jax import masks
from hyperrecon_jax import metrics
from hyperrecon_jax import physics

H, W = 24, 20


def _pair(b=2, seed=0):
  rng = np.random.default_rng(seed)
  target = rng.random((b, H, W)).astype(np.float32)
  recon = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
  return recon, target


def _weights(b=2, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "conv0": {"kernel": rng.standard_normal((b, 3, 3, 2, 4)).astype(np.float32),
                "bias": rng.standard_normal((b, 4)).astype(np.float32)},
      "head": {"kernel": rng.standard_normal((b, 1, 1, 4, 1)).astype(np.float32)},
  }


CSMRI = physics.CSMRI(masks.poisson_disc((H, W), 3, seed=0))


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
  recon, target = _pair()
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
  recon, target = _pair()
  y = op.measure(target, jax.random.PRNGKey(0))
  np.testing.assert_allclose(losses.data_consistency(recon, y, op),
                             op.data_consistency(recon, y), rtol=1e-6)


def test_weight_l1():
  w = _weights()
  ref = [sum(np.abs(leaf[b]).sum() for leaf in jax.tree_util.tree_leaves(w)) for b in range(2)]
  np.testing.assert_allclose(losses.weight_l1(w), ref, rtol=1e-5)
  with pytest.raises(ValueError, match="leading batch axis"):
    losses.weight_l1({"a": np.zeros((2, 3)), "b": np.zeros((3, 3))})
  with pytest.raises(ValueError, match="no leaves"):
    losses.weight_l1({})


def test_compute_terms_and_composite():
  recon, target = _pair()
  w = _weights()
  y = CSMRI.measure(target)
  names = ("mae", "ssim", "dc", "tv", "weight_l1", "mse")
  terms = losses.compute_terms(names, recon, target, operator=CSMRI, measurement=y, weights=w)
  assert terms.shape == (2, 6)
  expected = [losses.mae(recon, target), losses.dssim(recon, target),
              CSMRI.data_consistency(recon, y), losses.total_variation(recon),
              losses.weight_l1(w), losses.mse(recon, target)]
  for k, e in enumerate(expected):
    np.testing.assert_allclose(terms[:, k], e, rtol=1e-5)
  # AO terms need no target.
  ao = losses.compute_terms(("dc", "weight_l1", "tv"), recon, operator=CSMRI, measurement=y,
                            weights=w)
  np.testing.assert_allclose(ao, terms[:, [2, 4, 3]], rtol=1e-6)

  coeffs = np.array([[0.2, 0.8], [0.5, 0.5]], np.float32)
  per_term = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
  np.testing.assert_allclose(losses.composite(per_term, coeffs, (0.5, 2.0)),
                             [0.2 * 1 / 0.5 + 0.8 * 2 / 2, 0.5 * 3 / 0.5 + 0.5 * 4 / 2])
  # A scale that is not a positive number made a term's weight infinite,
  # negative (rewarding the loss) or NaN without a word.
  for bad in ((0.0, 2.0), (0.5, -2.0), (np.nan, 1.0), (np.inf, 1.0)):
    with pytest.raises(ValueError, match=r"scales must be finite and > 0"):
      losses.composite(per_term, coeffs, bad)


def test_registry_and_validation():
  assert set(losses.TERMS) == {"mae", "mse", "ssim", "hfen", "dc", "tv", "wavelet", "weight_l1"}
  assert losses.BUILT_IN == set(losses.TERMS)
  assert losses.NEEDS_TARGET == {"mae", "mse", "ssim", "hfen"}
  assert losses.NEEDS_MEASUREMENT == {"dc"} and losses.NEEDS_WEIGHTS == {"weight_l1"}
  assert losses.check_names(["mae", "ssim"]) == ("mae", "ssim")
  # The hint matters where a run's extension imports but registers nothing:
  # evaluate.py's loss-term scores end here, not in check_config.
  with pytest.raises(ValueError, match=r"unknown loss term.*'l2'.*valid: \['dc'.*registered by "
                                       r"hr.losses.register_term, for a run in a module named "
                                       r"in its config.extensions"):
    losses.check_names(("mae", "l2"))
  with pytest.raises(ValueError, match="repeat"):
    losses.check_names(("mae", "mae"))
  with pytest.raises(ValueError, match="at least one"):
    losses.check_names(())
  with pytest.raises(ValueError, match="string"):
    losses.check_names("mae")
  recon, target = _pair()
  with pytest.raises(ValueError, match="unknown loss term"):
    losses.compute_terms(("perceptual",), recon, target)
  with pytest.raises(ValueError, match="'dc' needs operator and measurement"):
    losses.compute_terms(("dc",), recon, target, operator=CSMRI)
  with pytest.raises(ValueError, match="'weight_l1' needs weights"):
    losses.compute_terms(("weight_l1",), recon, target)
  with pytest.raises(ValueError, match="'mae' needs target"):
    losses.compute_terms(("mae",), recon)
  with pytest.raises(errors.InputError, match="'hfen' needs target"):
    losses.compute_terms(("tv", "hfen"), recon)


def test_a_registered_term_is_computed_with_what_it_needs(own_terms):
  import own_terms as module  # registers grad_diff (target) and weight_l2 (weights)
  recon, target = _pair()
  weights = _weights()
  got = np.asarray(losses.compute_terms(("grad_diff", "weight_l2", "mae"), recon, target,
                                        weights=weights))
  d = np.diff(recon, axis=2).astype(np.float64) - np.diff(target, axis=2)
  np.testing.assert_allclose(got[:, 0], np.sum(d * d, axis=(1, 2)), rtol=1e-5)
  l2 = sum(np.sum(np.square(np.asarray(leaf, np.float64)).reshape(2, -1), axis=1)
           for leaf in jax.tree_util.tree_leaves(weights))
  np.testing.assert_allclose(got[:, 1], l2, rtol=1e-5)
  np.testing.assert_allclose(got[:, 2], losses.mae(recon, target), rtol=1e-6)
  assert "grad_diff" in losses.NEEDS_TARGET and "weight_l2" in losses.NEEDS_WEIGHTS
  assert losses.TERMS["grad_diff"] is module.grad_diff
  with pytest.raises(errors.InputError, match="'grad_diff' needs target"):
    losses.compute_terms(("grad_diff",), recon)
  with pytest.raises(errors.InputError, match="'weight_l2' needs weights"):
    losses.compute_terms(("weight_l2",), recon, target)


def test_a_registered_term_is_given_only_what_its_needs_name(own_terms):
  # Every input is passed; each term sees what it declared and None for the
  # rest, in a jitted call as training makes it.
  recon, target = _pair()
  op = physics.Denoise(sigma=0.0)
  seen = {}

  def spy(name):
    def term(recon, target, *, operator, measurement, weights, **_):
      seen[name] = tuple(v is not None for v in (recon, target, operator, measurement,
                                                   weights))
      return jnp.zeros(2) if recon is None else jnp.sum(recon, axis=(1, 2))
    return term

  for name, needs in (("spy_none", ()), ("spy_target", ("target",)),
                      ("spy_measured", ("measurement",)), ("spy_weights", ("weights",))):
    losses.register_term(name, spy(name), needs=needs)
  names = ("spy_none", "spy_target", "spy_measured", "spy_weights")
  jax.jit(lambda r, t, w: losses.compute_terms(names, r, t, operator=op, measurement=t,
                                               weights=w))(recon, target, _weights())
  #                            recon, target, operator, measurement, weights
  assert seen == {"spy_none": (True, False, False, False, False),
                  "spy_target": (True, True, False, False, False),
                  "spy_measured": (True, False, True, True, False),
                  "spy_weights": (False, False, False, False, True)}
  assert [losses.needs_of(n) for n in names] == [(), ("target",), ("measurement",),
                                                 ("weights",)]


def test_a_term_that_reads_what_its_needs_leave_out_is_named(own_terms):
  # The docs' grad_diff without needs=('target',): given no target, it fails
  # where training traces it, with a message naming it, not in the report.
  recon, target = _pair()
  losses.register_term("no_needs", lambda recon, target, **_: jnp.sum(
      jnp.abs(recon - target), axis=(1, 2)))
  with pytest.raises(errors.InputError, match=(
      r"loss term 'no_needs' raised TypeError: .*It is given what its needs name, \(\), and "
      r"None for the rest \(register_term's needs=\)")):
    jax.jit(lambda r, t: losses.compute_terms(("no_needs",), r, t))(recon, target)


def test_the_needs_sets_imported_early_list_terms_registered_later(own_terms):
  # Held, as `from hyperrecon_jax.losses import NEEDS_TARGET` holds them, before
  # own_terms registers grad_diff (target) and weight_l2 (weights).
  needs_target, needs_weights = losses.NEEDS_TARGET, losses.NEEDS_WEIGHTS
  import own_terms as module
  assert losses.TERMS["weight_l2"] is module.weight_l2
  assert "grad_diff" in needs_target and "weight_l2" in needs_weights
  assert needs_weights == {"weight_l1", "weight_l2"}
  assert needs_weights & {"weight_l2", "tv"} == {"weight_l2"}


def test_register_term_refuses_what_cannot_work(own_terms):
  fn = lambda recon, target, **_: losses.mae(recon, target)
  for name in ("", "Bad", "two words", "1st", 3):
    with pytest.raises(errors.InputError, match="lowercase letters"):
      losses.register_term(name, fn)
  with pytest.raises(errors.InputError, match="'ssim' is a built-in loss term"):
    losses.register_term("ssim", fn, needs=("target",), replace=True)
  with pytest.raises(errors.InputError, match="must be a function"):
    losses.register_term("my_mae", 1.0)
  with pytest.raises(errors.InputError, match=r"among \('target', 'measurement', 'weights'\)"):
    losses.register_term("my_mae", fn, needs=("truth",))
  with pytest.raises(errors.InputError, match="of λ alone and can need nothing else"):
    losses.register_term("my_mae", fn, needs=("weights", "target"))
  losses.register_term("my_mae", fn, needs="target")  # one need as a string
  with pytest.raises(errors.InputError, match="'my_mae' is registered already; pass replace"):
    losses.register_term("my_mae", fn, needs=("target",))
  # TERMS is read-only: assigning to it would skip what a term needs.
  with pytest.raises(errors.InputError, match=r"read-only.*register_term\('mine', fn"):
    losses.TERMS["mine"] = fn
  assert "mine" not in losses.TERMS


def test_replacing_a_term_recompiles_what_traced_it(own_terms):
  recon, target = _pair()
  mean = jax.jit(lambda r, t: losses.compute_terms(("probe_term",), r, t)[:, 0])
  losses.register_term("probe_term", lambda recon, target, **_: jnp.mean(recon, axis=(1, 2)),
                       needs=("target",))
  np.testing.assert_allclose(mean(recon, target), recon.mean(axis=(1, 2)), rtol=1e-6)
  losses.register_term("probe_term", lambda recon, target, **_: 1000 + jnp.mean(recon, (1, 2)),
                       needs=("target",), replace=True)
  # The jitted function traced the old term; replacing it cleared the caches.
  np.testing.assert_allclose(mean(recon, target), 1000 + recon.mean(axis=(1, 2)), rtol=1e-6)
  assert "probe_term" in losses.NEEDS_TARGET


def test_a_term_replaced_with_other_needs_moves_between_the_needs_sets(own_terms):
  # A term replaced with other needs must leave the sets of its old needs:
  # otherwise training keeps handing it (and asking for) an input it no
  # longer declares, and compute_terms refuses it without that input.
  recon, target = _pair()
  w = _weights()
  losses.register_term("swapped_term", lambda recon, target, **_: jnp.mean(
      jnp.abs(recon - target), axis=(1, 2)), needs=("target",))
  assert losses.needs_of("swapped_term") == ("target",)
  losses.register_term("swapped_term", lambda recon, target, *, weights, **_: losses.weight_l1(
      weights), needs=("weights",), replace=True)
  assert "swapped_term" not in losses.NEEDS_TARGET
  assert "swapped_term" in losses.NEEDS_WEIGHTS
  assert losses.needs_of("swapped_term") == ("weights",)
  # No target needed now; the values are the weights' ℓ1 norms (by hand in
  # test_weight_l1), summed in float32: a few ulps.
  ref = [sum(np.abs(leaf[b]).sum() for leaf in jax.tree_util.tree_leaves(w)) for b in range(2)]
  np.testing.assert_allclose(losses.compute_terms(("swapped_term",), recon, weights=w)[:, 0],
                             ref, rtol=1e-5)


def test_a_term_that_returns_no_vector_is_named(own_terms):
  recon, target = _pair()
  losses.register_term("scalar_term", lambda recon, target, **_: 0.0)
  with pytest.raises(errors.InputError,
                     match=r"'scalar_term' returned shape \(\), expected \(2,\)"):
    losses.compute_terms(("scalar_term",), recon, target)
  # A term of the weights registered without needs=('weights',) gets None.
  losses.register_term("forgot_needs", lambda recon, target, *, weights, **_: sum(
      jnp.sum(jnp.abs(w)) for w in jax.tree_util.tree_leaves(weights)))
  with pytest.raises(errors.InputError, match=r"needs=\('weights',\)"):
    losses.compute_terms(("forgot_needs",), recon, target, weights=None)


def test_bad_shapes():
  recon, target = _pair()
  with pytest.raises(ValueError, match="same shape"):
    losses.mae(recon, target[:, :-1])
  with pytest.raises(ValueError, match="same shape"):
    losses.compute_terms(("tv", "mae"), recon, target[:1])
  with pytest.raises(ValueError, match=r"recon must have shape \(B, H, W\)"):
    losses.total_variation(recon[0])
  with pytest.raises(ValueError, match="coeffs"):
    losses.composite(np.ones((2, 2)), np.ones((2, 3)), np.ones(2))
  with pytest.raises(ValueError, match="scales"):
    losses.composite(np.ones((2, 2)), np.ones((2, 2)), np.ones(3))
  with pytest.raises(ValueError, match="per_term"):
    losses.composite(np.ones(2), np.ones(2), np.ones(2))
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
  recon, target = _pair()
  fn = GRAD_CASES[name]
  g = jax.jit(jax.grad(lambda r: jnp.sum(fn(r, target))))(recon)
  g = np.asarray(g)
  assert g.shape == recon.shape
  assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
  # Per-example: each output depends on its own image only.
  g0 = np.asarray(jax.grad(lambda r: fn(r, target)[0])(recon))
  assert np.abs(g0[0]).max() > 0 and np.all(g0[1] == 0)


def test_weight_l1_gradient():
  w = _weights()
  g = jax.grad(lambda w: jnp.sum(losses.weight_l1(w)))(w)
  for leaf, gl in zip(jax.tree_util.tree_leaves(w), jax.tree_util.tree_leaves(g)):
    np.testing.assert_allclose(gl, np.sign(leaf))


def test_jit_and_vmap():
  recon, target = _pair()
  w = _weights()
  y = CSMRI.measure(target)
  names = ("mae", "ssim", "dc", "tv", "weight_l1")

  @functools.partial(jax.jit, static_argnums=0)
  def run(names, op, recon, target, y, w):
    terms = losses.compute_terms(names, recon, target, operator=op, measurement=y, weights=w)
    return losses.composite(terms, jnp.full(terms.shape, 0.5), jnp.ones(terms.shape[1]))

  eager = losses.composite(
      losses.compute_terms(names, recon, target, operator=CSMRI, measurement=y, weights=w),
      np.full((2, 5), 0.5, np.float32), np.ones(5, np.float32))
  np.testing.assert_allclose(run(names, CSMRI, recon, target, y, w), eager, rtol=1e-5)

  two = lambda a: jax.tree_util.tree_map(lambda v: np.stack([v, v]), a)
  terms = jax.vmap(lambda r, t, y, w: losses.compute_terms(
      names, r, t, operator=CSMRI, measurement=y, weights=w))(
          two(recon), two(target), two(y), two(w))
  assert terms.shape == (2, 2, 5)
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
  np.testing.assert_allclose(
      jax.vmap(losses.composite)(two(np.ones((2, 3))), two(np.ones((2, 3))), two(np.ones(3)))[1],
      [3.0, 3.0])


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
  recon, _ = _pair()  # 24 x 20: 8 does not divide 20
  with pytest.raises(errors.InputError,
                     match=r"divisible by 2\*\*3 = 8, got recon of shape \(2, 24, 20\) "
                           r"\(W=20\); crop or pad"):
    losses.compute_terms(("tv", "wavelet"), recon)
  with pytest.raises(errors.InputError, match="unknown wavelet 'sym4'"):
    losses.wavelet_l1(recon, wavelet="sym4", levels=2)
  with pytest.raises(errors.InputError, match=r"recon must have shape \(B, H, W\)"):
    losses.wavelet_l1(recon[0], levels=2)


def test_hfen_term_is_the_metric_with_a_gradient_at_equality():
  recon, target = _pair()
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


def test_compute_terms_with_the_wavelet_term():
  s = 32
  rng = np.random.default_rng(4)
  target = rng.random((2, s, s)).astype(np.float32)
  recon = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
  op = physics.CSMRI(masks.poisson_disc((s, s), 3, seed=0))
  y = op.measure(target)
  w = _weights()
  terms = losses.compute_terms(("dc", "tv", "wavelet", "weight_l1"), recon, operator=op,
                               measurement=y, weights=w)
  assert terms.shape == (2, 4)
  expected = [op.data_consistency(recon, y), losses.total_variation(recon),
              losses.wavelet_l1(recon, wavelet="db2", levels=3), losses.weight_l1(w)]
  for k, e in enumerate(expected):
    np.testing.assert_allclose(terms[:, k], e, rtol=1e-6)
