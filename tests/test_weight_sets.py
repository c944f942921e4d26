"""Tests for hyperrecon_jax.models.weight_sets: taking, folding, checking weight sets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax.models import Unet
from hyperrecon_jax.models import layers
from hyperrecon_jax.models import weight_sets
from hyperrecon_jax.models.topology import conv_specs

C = 4


@functools.cache
def _unet_variables(batch_norm=True):
  """Random values in the variables of a narrow Unet: weights, BatchNorm parameters, statistics."""
  shapes = jax.eval_shape(Unet(channels=C, batch_norm=batch_norm).init,
                          jax.random.key(0), jnp.zeros((1, 16, 16, 2)))
  rng = np.random.default_rng(1)

  def draw(path, x):
    if path[-1].key in ("var", "scale"):  # positive, as BatchNorm's are
      return rng.uniform(0.5, 2.0, x.shape).astype(np.float32)
    return rng.normal(0, 0.3, x.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("per_sample", [False, True])
def test_folded_batch_norm_is_the_convolution_then_batch_norm(per_sample):
  # Evaluation mode folds BatchNorm into the kernel and bias (UnetBody does
  # so for every model): a convolution with the folded weights equals the
  # convolution followed by the running-statistics BatchNorm, in NumPy.
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  kshape = (2, 3, 3, 3, 5) if per_sample else (3, 3, 3, 5)
  kernel = rng.normal(size=kshape).astype(np.float32)
  bias = rng.normal(size=kshape[:-4] + (5,)).astype(np.float32)
  bn = {"scale": rng.uniform(0.5, 1.5, 5), "bias": rng.normal(size=5)}
  stats = {"mean": rng.normal(size=5), "var": rng.uniform(0.5, 2.0, 5)}
  bn, stats = ({k: v.astype(np.float32) for k, v in d.items()} for d in (bn, stats))

  def conv(k, b):
    return np.asarray(layers.conv2d(jnp.asarray(x), jnp.asarray(k), jnp.asarray(b),
                                    per_sample=per_sample, strategy="vmap", dtype=jnp.float32))

  want = ((conv(kernel, bias) - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
          * bn["scale"] + bn["bias"])
  got = conv(*weight_sets.fold_batch_norm(kernel, bias, bn, stats))
  # float32 roundoff of a 27-term sum, reassociated by the scaling.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_conv_weights_are_the_unet_s_parameters_by_convolution():
  params = _unet_variables()["params"]
  weights = weight_sets.conv_weights(params, C)
  assert list(weights) == [s.name for s in conv_specs(C)]
  for spec in conv_specs(C):
    assert weights[spec.name]["kernel"] is params[f"{spec.name}_kernel"]
    assert weights[spec.name]["bias"] is params[f"{spec.name}_bias"]


def test_fold_weights_folds_each_batch_norm_into_its_convolution_by_the_formula():
  variables = _unet_variables()
  weights = weight_sets.conv_weights(variables["params"], C)
  folded = weight_sets.fold_weights(weights, variables)
  for spec in conv_specs(C):
    kernel = np.asarray(weights[spec.name]["kernel"], np.float64)
    bias = np.asarray(weights[spec.name]["bias"], np.float64)
    bn = variables["params"]["body"].get(f"bn_{spec.name}")
    if bn is None:  # the head has no BatchNorm
      want_kernel, want_bias = kernel, bias
    else:
      stats = variables["batch_stats"]["body"][f"bn_{spec.name}"]
      s = np.asarray(bn["scale"], np.float64) / np.sqrt(np.asarray(stats["var"], np.float64)
                                                        + 1e-5)
      want_kernel, want_bias = kernel * s, (bias - stats["mean"]) * s + bn["bias"]
    got = folded[spec.name]
    assert got["kernel"].dtype == got["bias"].dtype == jnp.float32
    # One float32 product and sum per value: a few ulps of the largest value.
    np.testing.assert_allclose(got["kernel"], want_kernel, rtol=1e-6,
                               atol=1e-6 * np.abs(want_kernel).max())
    np.testing.assert_allclose(got["bias"], want_bias, rtol=1e-6,
                               atol=1e-6 * np.abs(want_bias).max())


def test_fold_weights_without_batch_norm_only_casts_to_float32():
  variables = _unet_variables(batch_norm=False)
  weights = jax.tree_util.tree_map(lambda w: w.astype(jnp.bfloat16),
                                   weight_sets.conv_weights(variables["params"], C))
  folded = weight_sets.fold_weights(weights, variables)
  for name, w in weights.items():
    for part in ("kernel", "bias"):
      assert folded[name][part].dtype == jnp.float32
      np.testing.assert_array_equal(folded[name][part], np.asarray(w[part], np.float32))


def _one_set():
  return {s.name: {"kernel": np.zeros(s.kernel_shape, np.float32),
                   "bias": np.zeros(s.cout, np.float32)} for s in conv_specs(C)}


def test_check_one_set_takes_one_set_and_names_what_is_not():
  weights = _one_set()
  weight_sets.check_one_set(weights, C)
  with pytest.raises(errors.InputError, match=r"must be a dict \{name: \{'kernel', 'bias'\}\}, "
                                              r"got list"):
    weight_sets.check_one_set([weights], C)
  with pytest.raises(errors.InputError, match=r"lack the kernel and bias of convolution "
                                              r"'dec1_b'"):
    weight_sets.check_one_set({k: v for k, v in weights.items() if k != "dec1_b"}, C)
  rows = jax.tree_util.tree_map(lambda w: w[None].repeat(3, 0), weights)
  with pytest.raises(errors.InputError, match=r"one set, without the row axis: enc0_a has "
                                              r"kernel shape \(3, 3, 3, 2, 4\), with a leading "
                                              r"axis of 3"):
    weight_sets.check_one_set(rows, C)
  with pytest.raises(errors.InputError, match=r"enc0_a must have kernel shape \(3, 3, 2, 8\) "
                                              r"and bias shape \(8,\) for 8 channels, got "
                                              r"\(3, 3, 2, 4\) and \(4,\)"):
    weight_sets.check_one_set(weights, 8)


def test_check_one_set_refuses_a_bias_of_the_wrong_shape_beside_a_right_kernel():
  # A (1,) bias would broadcast over a convolution's C outputs without a word.
  weights = _one_set()
  weights["enc2_b"] = {"kernel": weights["enc2_b"]["kernel"], "bias": np.zeros(1, np.float32)}
  with pytest.raises(errors.InputError, match=r"enc2_b must have kernel shape \(3, 3, 4, 4\) "
                                              r"and bias shape \(4,\) for 4 channels, got "
                                              r"\(3, 3, 4, 4\) and \(1,\)"):
    weight_sets.check_one_set(weights, C)


def test_check_rows_takes_rows_on_the_simplex_and_names_the_rest():
  rows = weight_sets.check_rows([[0.25, 0.75], [1.0, 0.0]], 2)
  assert isinstance(rows, jax.Array) and rows.shape == (2, 2)
  with pytest.raises(errors.InputError, match=r"shape \(G, 2\), one row per weight set, got "
                                              r"shape \(2,\)"):
    weight_sets.check_rows(np.array([0.5, 0.5]), 2)
  with pytest.raises(errors.InputError, match=r"shape \(G, 3\).*got shape \(1, 2\)"):
    weight_sets.check_rows(np.array([[0.5, 0.5]]), 3)
  with pytest.raises(errors.InputError, match=r"shape \(G, K\).*got shape \(2,\)"):
    weight_sets.check_rows(np.array([0.5, 0.5]))
  with pytest.raises(errors.InputError, match=r"row 1"):
    weight_sets.check_rows(np.array([[0.5, 0.5], [0.9, 0.9]]), 2)
  # Traced rows are not looked at: a compiled call costs nothing more.
  traced = jax.jit(lambda c: weight_sets.check_rows(c, 2))(np.full((1, 2), np.nan, np.float32))
  assert np.isnan(traced).all()


def test_broadcast_rows_gives_every_leaf_a_leading_axis_of_identical_rows():
  weights = {"a": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}}
  rows = weight_sets.broadcast_rows(weights, 4)
  assert rows["a"]["kernel"].shape == (4, 2, 3) and rows["a"]["bias"].shape == (4, 3)
  for g in range(4):
    np.testing.assert_array_equal(rows["a"]["kernel"][g], weights["a"]["kernel"])
