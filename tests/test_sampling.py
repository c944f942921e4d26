"""Tests of hyperrecon_jax.sampling: DHS selection, gathering, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import sampling

# --- select_lowest ----------------------------------------------------------


def test_select_lowest_picks_the_b_smallest_in_increasing_order():
  values = jnp.asarray([0.7, 0.1, 0.9, 0.3, 0.5, 0.2], jnp.float32)
  idx = sampling.select_lowest(values, 3)
  assert idx.dtype == jnp.int32
  assert idx.shape == (3,)
  np.testing.assert_array_equal(np.asarray(idx), [1, 5, 3])


@pytest.mark.parametrize("values, b", [(np.array([3.0, 1.0]), 3), (np.array([3.0, 1.0]), 0),
                                       (np.zeros((2, 2)), 1)])
def test_select_lowest_names_an_impossible_selection(values, b):
  # It was jax.lax.top_k's "k argument to top_k must be no larger than ...".
  with pytest.raises(ValueError, match=r"select_lowest keeps 1 to B of \(B,\) values, asked "
                                       rf"for {b} of values of shape"):
    sampling.select_lowest(jnp.asarray(values), b)


def test_select_lowest_ties_prefer_the_lower_index():
  values = jnp.asarray([2.0, 1.0, 3.0, 1.0, 0.5, 1.0], jnp.float32)
  np.testing.assert_array_equal(np.asarray(sampling.select_lowest(values, 3)),
                                [4, 1, 3])
  np.testing.assert_array_equal(
      np.asarray(sampling.select_lowest(jnp.zeros(5), 2)), [0, 1])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_nan_loss_ranks_last_whatever_its_sign_bit(sign):
  # XLA's inf − inf is a NaN with the sign bit set, which negated ranked first.
  nan = np.copysign(np.float32(np.nan), np.float32(sign))
  values = jnp.asarray(np.array([0.0, nan, 2.0, 3.0], np.float32))
  np.testing.assert_array_equal(np.asarray(sampling.select_lowest(values, 2)), [0, 2])
  np.testing.assert_array_equal(np.asarray(jax.jit(sampling.select_lowest, static_argnums=1)(
      values, 4)), [0, 2, 3, 1])
  # Made as XLA makes it, inside a compiled function.
  made = jax.jit(lambda x: jnp.sum((x - x) ** 2, axis=1) + jnp.arange(4.0))(
      jnp.asarray(np.array([[0.0], [np.inf], [0.0], [0.0]], np.float32)))
  assert np.isnan(np.asarray(made)[1])
  np.testing.assert_array_equal(np.asarray(sampling.select_lowest(made, 1)), [0])


def test_a_nan_loss_ranks_after_an_infinite_one():
  values = jnp.asarray(np.array([np.nan, np.inf, 1.0, np.inf], np.float32))
  np.testing.assert_array_equal(np.asarray(sampling.select_lowest(values, 4)), [2, 1, 3, 0])


def test_zeros_of_either_sign_tie_by_index():
  values = jnp.asarray(np.array([0.0, -0.0, 1.0], np.float32))
  np.testing.assert_array_equal(np.asarray(sampling.select_lowest(values, 1)), [0])
  values = jnp.asarray(np.array([1.0, 0.0, -0.0], np.float32))
  np.testing.assert_array_equal(np.asarray(sampling.select_lowest(values, 2)), [1, 2])


def test_select_lowest_b_equal_to_batch_is_a_full_argsort():
  values = np.asarray([0.4, -1.0, 3.0, 0.0], np.float32)
  np.testing.assert_array_equal(
      np.asarray(sampling.select_lowest(jnp.asarray(values), 4)),
      np.argsort(values, kind="stable"))


def test_select_lowest_matches_stable_argsort_on_random_vectors():
  rng = np.random.default_rng(0)
  for _ in range(5):
    # Few distinct values so that ties are frequent.
    values = rng.integers(0, 4, size=16).astype(np.float32)
    for b in (1, 5, 16):
      np.testing.assert_array_equal(
          np.asarray(sampling.select_lowest(jnp.asarray(values), b)),
          np.argsort(values, kind="stable")[:b])


def test_select_lowest_under_jit_and_without_gradient():
  values = jnp.asarray([3.0, 1.0, 2.0])
  idx = jax.jit(sampling.select_lowest, static_argnums=1)(values, 2)
  np.testing.assert_array_equal(np.asarray(idx), [1, 2])
  # The indices are integers, so a loss of the selected values gets its
  # gradient through the gather only: exactly 1 on each kept entry.
  assert jnp.issubdtype(idx.dtype, jnp.integer)
  grad = jax.grad(lambda v: jnp.sum(
      jnp.take(v, sampling.select_lowest(v, 2))))(values)
  np.testing.assert_array_equal(np.asarray(grad), [0.0, 1.0, 1.0])


# --- take ---------------------------------------------------------------------


def test_take_gathers_rows_of_every_leaf():
  b = 5
  images = jnp.arange(b * 2 * 3, dtype=jnp.float32).reshape(b, 2, 3)
  coeffs = jnp.arange(b * 2, dtype=jnp.float32).reshape(b, 2)
  ids = jnp.arange(b, dtype=jnp.int32) * 10
  tree = {"image": images, "pair": (coeffs, ids)}
  idx = jnp.asarray([4, 0, 2], jnp.int32)
  out = sampling.take(tree, idx)
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
  np.testing.assert_array_equal(np.asarray(out["image"]),
                                np.asarray(images)[[4, 0, 2]])
  np.testing.assert_array_equal(np.asarray(out["pair"][0]),
                                np.asarray(coeffs)[[4, 0, 2]])
  np.testing.assert_array_equal(np.asarray(out["pair"][1]), [40, 0, 20])
  assert out["pair"][1].dtype == ids.dtype


def test_take_with_select_lowest_keeps_the_lowest_rows():
  dc = jnp.asarray([0.3, 0.1, 0.2, 0.4])
  x = jnp.arange(4 * 2, dtype=jnp.float32).reshape(4, 2)
  kept_x, kept_dc = sampling.take((x, dc), sampling.select_lowest(dc, 2))
  np.testing.assert_array_equal(np.asarray(kept_dc),
                                np.asarray([0.1, 0.2], np.float32))
  np.testing.assert_array_equal(np.asarray(kept_x), [[2.0, 3.0], [4.0, 5.0]])


# --- check_method ---------------------------------------------------------------


@pytest.mark.parametrize("method,top_b,batch,names", [
    ("uhs", 8, 32, ("mae", "ssim")),
    ("uhs", 100, 4, ("mae", "ssim")),  # top_b only matters for DHS
    ("dhs", 8, 32, ("dc", "weight_l1", "tv")),
    ("dhs", 1, 4, ("mae", "dc")),
    ("dhs", 4, 4, ["dc", "tv"]),  # b = B is allowed (DHS = UHS), lists too
])
def test_check_method_accepts_valid_settings(method, top_b, batch, names):
  sampling.check_method(method, top_b, batch, names)


def test_check_method_rejects_dhs_without_dc_naming_dc():
  with pytest.raises(ValueError, match="'dc'") as info:
    sampling.check_method("dhs", 2, 4, ("mae", "ssim"))
  assert "dhs" in str(info.value)


@pytest.mark.parametrize("top_b", [0, -1, 5, 32, True, 2.0])  # True was taken as 1
def test_check_method_rejects_top_b_outside_1_to_batch(top_b):
  with pytest.raises(ValueError, match=r"sampling.top_b must be an integer in \[1, "
                     r"batch_size=4\]") as info:
    sampling.check_method("dhs", top_b, 4, ("dc", "tv"))
  assert str(top_b) in str(info.value)


@pytest.mark.parametrize("method", ["foo", "DHS", "", "uniform"])
def test_check_method_rejects_unknown_method(method):
  with pytest.raises(ValueError, match="sampling.method") as info:
    sampling.check_method(method, 2, 4, ("dc", "tv"))
  assert repr(method) in str(info.value)
