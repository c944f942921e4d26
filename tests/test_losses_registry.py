"""Tests for hyperrecon_jax.losses.registry: terms by name, their needs and composition."""

import functools

import jax
import jax.numpy as jnp
from losses_support import CSMRI
from losses_support import pair
from losses_support import weight_tree
import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import losses
from hyperrecon_jax import masks
from hyperrecon_jax import physics


def test_compute_terms_and_composite():
  recon, target = pair()
  w = weight_tree()
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
  recon, target = pair()
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
  recon, target = pair()
  weights = weight_tree()
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
  recon, target = pair()
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
                                               weights=w))(recon, target, weight_tree())
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
  recon, target = pair()
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
  recon, target = pair()
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
  recon, target = pair()
  w = weight_tree()
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
  recon, target = pair()
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
  recon, target = pair()
  with pytest.raises(ValueError, match="same shape"):
    losses.compute_terms(("tv", "mae"), recon, target[:1])
  with pytest.raises(ValueError, match="coeffs"):
    losses.composite(np.ones((2, 2)), np.ones((2, 3)), np.ones(2))
  with pytest.raises(ValueError, match="scales"):
    losses.composite(np.ones((2, 2)), np.ones((2, 2)), np.ones(3))
  with pytest.raises(ValueError, match="per_term"):
    losses.composite(np.ones(2), np.ones(2), np.ones(2))


def test_compute_terms_and_composite_under_jit_and_vmap():
  recon, target = pair()
  w = weight_tree()
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
  np.testing.assert_allclose(
      jax.vmap(losses.composite)(two(np.ones((2, 3))), two(np.ones((2, 3))), two(np.ones(3)))[1],
      [3.0, 3.0])


def test_compute_terms_with_the_wavelet_term():
  s = 32
  rng = np.random.default_rng(4)
  target = rng.random((2, s, s)).astype(np.float32)
  recon = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
  op = physics.CSMRI(masks.poisson_disc((s, s), 3, seed=0))
  y = op.measure(target)
  w = weight_tree()
  terms = losses.compute_terms(("dc", "tv", "wavelet", "weight_l1"), recon, operator=op,
                               measurement=y, weights=w)
  assert terms.shape == (2, 4)
  expected = [op.data_consistency(recon, y), losses.total_variation(recon),
              losses.wavelet_l1(recon, wavelet="db2", levels=3), losses.weight_l1(w)]
  for k, e in enumerate(expected):
    np.testing.assert_allclose(terms[:, k], e, rtol=1e-6)
