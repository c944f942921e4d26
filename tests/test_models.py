"""Tests for hyperrecon_jax.models: counts, the forward pass, per-sample weights, errors."""

import functools
import re

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import models
from hyperrecon_jax.models import layers

C = 8          # narrow Unet for fast tests
SIZE = 16


def _inputs(batch=3, size=SIZE, seed=0):
  rng = np.random.default_rng(seed)
  zf = rng.normal(size=(batch, size, size, 2)).astype(np.float32)
  lam = np.linspace(0.0, 1.0, batch, dtype=np.float32)[:, None]
  return zf, np.asarray(hparams.coefficients(lam))


def _assert_close(actual, expected, rel=1e-5):
  """|actual − expected| ≤ rel · max|expected|: relative to the output scale."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  np.testing.assert_allclose(actual, expected, rtol=0,
                             atol=rel * np.abs(expected).max())


def _with_random_stats(variables, seed=1):
  """Non-trivial BatchNorm running statistics so evaluation mode is tested."""
  rng = np.random.default_rng(seed)
  stats = jax.tree_util.tree_map_with_path(
      lambda p, x: (rng.uniform(0.5, 2.0, x.shape) if p[-1].key == "var"
                    else rng.normal(0, 0.3, x.shape)).astype(np.float32),
      variables["batch_stats"])
  return {**variables, "batch_stats": stats}


@functools.cache
def _hyper(strategy="loop", batch_norm=True):
  net = models.HyperUnet(hyper_dim=4, num_coeffs=2, channels=C,
                         batch_norm=batch_norm, strategy=strategy)
  zf, coeffs = _inputs()
  variables = jax.jit(net.init)(jax.random.key(0), zf, coeffs)
  if batch_norm:
    variables = _with_random_stats(variables)
  return net, variables, jax.jit(net.apply)


@pytest.mark.parametrize("batch_norm, expected", [(True, 149_409),
                                                  (False, 148_513)])
def test_unet_parameter_count(batch_norm, expected):
  zf = jnp.zeros((1, 256, 256, 2))
  variables = jax.eval_shape(models.Unet(batch_norm=batch_norm).init,
                             jax.random.key(0), zf)
  assert models.count_params(variables["params"]) == expected


@pytest.mark.parametrize("hyper_dim, expected", [(4, 743_533), (32, 4_905_089),
                                                 (128, 19_208_993)])
def test_hyperunet_parameter_count(hyper_dim, expected):
  net = models.HyperUnet(hyper_dim=hyper_dim, num_coeffs=2)
  variables = jax.eval_shape(net.init, jax.random.key(0),
                             jnp.zeros((2, 256, 256, 2)), jnp.zeros((2, 2)))
  assert models.count_params(variables["params"]) == expected
  # The paper's formula: 148,513·(d+1) + (K·d + d + 3·(d² + d)) + 896.
  d = hyper_dim
  assert expected == 148_513 * (d + 1) + (2 * d + d + 3 * (d * d + d)) + 896


def _numpy_unet(params, stats, zf, channels):
  """An independent NumPy/SciPy forward pass of the reference topology."""
  def conv(x, name):
    k, b = params[f"{name}_kernel"], params[f"{name}_bias"]
    out = np.zeros(x.shape[:3] + (k.shape[-1],))
    for n in range(x.shape[0]):
      for o in range(k.shape[-1]):
        for i in range(k.shape[2]):
          out[n, :, :, o] += signal.correlate2d(x[n, :, :, i], k[:, :, i, o],
                                                mode="same")
    return out + b

  def bn_relu(x, name):
    p, s = params["body"][f"bn_{name}"], stats["body"][f"bn_{name}"]
    x = (x - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]
    return np.maximum(x, 0)

  def block(x, prefix):
    x = bn_relu(conv(x, f"{prefix}_a"), f"{prefix}_a")
    return bn_relu(conv(x, f"{prefix}_b"), f"{prefix}_b")

  def pool(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

  def up(x):
    # Bilinear ×2 with PyTorch's align_corners=True grid, by np.interp along
    # each axis: output i reads source position i·(n − 1)/(2n − 1).
    for axis in (1, 2):
      n = x.shape[axis]
      src = np.arange(2 * n) * (n - 1) / (2 * n - 1)
      x = np.apply_along_axis(lambda v, src=src, n=n: np.interp(src, np.arange(n), v),
                              axis, x)
    return x

  e0 = block(zf, "enc0")
  e1 = block(pool(e0), "enc1")
  e2 = block(pool(e1), "enc2")
  x = block(pool(e2), "enc3")
  x = block(np.concatenate([up(x), e2], -1), "dec0")
  x = block(np.concatenate([up(x), e1], -1), "dec1")
  x = block(np.concatenate([up(x), e0], -1), "dec2")
  del channels
  return conv(x, "head")[..., 0] + np.sqrt((zf ** 2).sum(-1))


def test_unet_matches_independent_numpy_forward():
  zf, _ = _inputs(batch=2)
  net = models.Unet(channels=4)
  variables = _with_random_stats(jax.jit(net.init)(jax.random.key(1), zf))
  out = net.apply(variables, zf)
  to_np = lambda t: jax.tree_util.tree_map(np.asarray, t)
  expected = _numpy_unet(to_np(variables["params"]),
                         to_np(variables["batch_stats"]), zf, 4)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_residual_is_input_magnitude_when_head_is_zero():
  zf, _ = _inputs(batch=2)
  net = models.Unet(channels=4)
  variables = net.init(jax.random.key(0), zf)
  params = dict(variables["params"])
  params["head_kernel"] = jnp.zeros_like(params["head_kernel"])
  params["head_bias"] = jnp.zeros_like(params["head_bias"])
  out = net.apply({**variables, "params": params}, zf)
  np.testing.assert_allclose(out, np.sqrt((zf ** 2).sum(-1)), rtol=1e-6)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_mixed_lambda_batch_equals_each_element_alone(strategy):
  net, variables, apply = _hyper(strategy)
  zf, coeffs = _inputs()
  batched = np.asarray(apply(variables, zf, coeffs))
  for i in range(zf.shape[0]):
    alone = np.asarray(apply(variables, zf[i:i + 1], coeffs[i:i + 1]))
    _assert_close(alone[0], batched[i])
    # One (K,) vector for the whole batch (one weight set, shared-weight
    # convolutions) gives the numbers of that λ in every row.
    one = np.asarray(apply(variables, zf, coeffs[i]))
    _assert_close(one[i], batched[i])
  del net


def test_strategies_agree_on_a_mixed_batch():
  zf, coeffs = _inputs()
  outs = {s: np.asarray(_hyper(s)[2](_hyper("loop")[1], zf, coeffs))
          for s in ("loop", "vmap")}
  _assert_close(outs["vmap"], outs["loop"])


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_bfloat16_keeps_activations_in_bfloat16_and_stays_close(strategy):
  # bfloat16 activations: every layer's output is rounded to 8 mantissa bits
  # (relative error 2^-9 ≈ 0.2 % each), over ~20 layers; a few percent of
  # the output scale bounds that (measured: 1.0 %). Parameters, statistics
  # and output stay float32. The backward pass runs in bfloat16 too (each
  # convolution's gradient is a bfloat16 result), ~40 more roundings; a
  # relative gradient error ε gives a cosine of about 1 − ε²/2, and ε < 0.2
  # (cosine > 0.98) bounds ~60 roundings of 2^-9 added in the same
  # direction (measured: cosine 0.990, ε ≈ 0.14). A float32 cast lost in the
  # backward pass or a gradient of the wrong layer falls far below.
  net32, variables, _ = _hyper(strategy)
  net16 = net32.clone(dtype=jnp.bfloat16)
  zf, coeffs = _inputs()
  out32 = jax.jit(net32.apply)(variables, zf, coeffs)
  out16 = jax.jit(net16.apply)(variables, zf, coeffs)
  assert out16.dtype == jnp.float32
  _assert_close(out16, out32, rel=5e-2)
  jaxpr = str(jax.make_jaxpr(net16.apply)(variables, zf, coeffs))
  # (jax 0.12 prints "reduce_max[axes=(2, 4) out_sharding=None]".)
  pools = [line for line in jaxpr.splitlines() if "reduce_max[axes=(2, 4)" in line]
  assert pools and all("bf16[" in line for line in pools), pools  # activations, not f32

  def loss(params, net):
    out, _ = net.apply({**variables, "params": params}, zf, coeffs, train=True,
                       mutable=["batch_stats"])
    return jnp.mean(out ** 2)
  # Jitted: run eagerly, the unrolled 'loop' network dispatches op by op (~30 s).
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  tree16 = grad(variables["params"], net16)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(tree16))
  g32 = jax.flatten_util.ravel_pytree(grad(variables["params"], net32))[0]
  g16 = jax.flatten_util.ravel_pytree(tree16)[0]
  assert float(g16 @ g32 / (jnp.linalg.norm(g16) * jnp.linalg.norm(g32))) > 0.98


def test_auto_strategy_is_loop_on_cpu():
  assert layers.resolve_strategy("auto") == "loop"
  with pytest.raises(ValueError, match="strategy must be one of"):
    layers.resolve_strategy("grouped")


def test_generated_weights_copied_into_unet_reproduce_output():
  net, variables, apply = _hyper()
  zf, coeffs = _inputs()
  expected = np.asarray(apply(variables, zf, np.repeat(coeffs[1:2], 3, 0)))
  base = models.Unet(channels=C)
  base_vars = models.unet_variables(net, variables, coeffs[1])
  shapes = jax.tree_util.tree_map(jnp.shape, base.init(jax.random.key(0), zf))
  assert jax.tree_util.tree_map(jnp.shape, base_vars) == shapes
  _assert_close(base.apply(base_vars, zf), expected)


def test_unet_variables_without_batch_norm_have_the_unet_s_structure():
  # An empty "body" beside the kernels gave a tree that a Unet without
  # BatchNorm does not have: restoring or comparing against its init failed.
  zf, coeffs = _inputs(size=16)
  net = models.HyperUnet(hyper_dim=4, channels=4, batch_norm=False)
  # Shapes and structure only: traced, not compiled.
  variables = jax.eval_shape(net.init, jax.random.key(0), zf, coeffs)
  got = jax.eval_shape(lambda v: models.unet_variables(net, v, coeffs[1]), variables)
  want = jax.eval_shape(models.Unet(channels=4, batch_norm=False).init, jax.random.key(0), zf)
  assert (jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
          and jax.tree_util.tree_map(jnp.shape, got) == jax.tree_util.tree_map(jnp.shape, want))


def test_reconstruct_with_evaluation_weights_is_the_model_at_that_lambda():
  net, variables, apply = _hyper()
  zf, coeffs = _inputs()
  expected = np.asarray(apply(variables, zf, coeffs[1]))
  weights = net.apply(variables, coeffs, method=models.HyperUnet.evaluation_weights)
  one = jax.tree_util.tree_map(lambda w: w[1], weights)
  got = net.apply(variables, one, zf, method=models.HyperUnet.reconstruct_with)
  # The weights of three λ generated in one product against one λ alone, and
  # BatchNorm folded once for all rows: the same sums in another blocking,
  # float32 roundoff apart.
  _assert_close(got, expected)
  # The folded weights are the generated ones through the one fold.
  generated = net.apply(variables, coeffs, method=models.HyperUnet.generate)
  folded = models.fold_weights(generated, variables)
  for name in weights:
    np.testing.assert_array_equal(weights[name]["kernel"], folded[name]["kernel"])


def test_different_lambdas_give_different_reconstructions():
  _, variables, apply = _hyper()
  zf, coeffs = _inputs()
  same_image = np.repeat(zf[:1], 3, axis=0)
  out = np.asarray(apply(variables, same_image, coeffs))
  assert np.abs(out[0] - out[2]).max() > 1e-4
  assert np.abs(out[0] - out[1]).max() > 1e-4


def test_gradients_reach_every_parameter_and_are_finite():
  net, variables, _ = _hyper()
  zf, coeffs = _inputs()

  def loss(params):
    out, updates = net.apply({**variables, "params": params}, zf, coeffs,
                             train=True, mutable=["batch_stats"])
    return jnp.mean((out - 0.5) ** 2), updates

  grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.abs(g).max() > 0, path
  assert set(grads) == {"hypernetwork", "body"}
  # Training mode updates the running statistics.
  old = variables["batch_stats"]["body"]["bn_enc0_a"]["mean"]
  new = updates["batch_stats"]["body"]["bn_enc0_a"]["mean"]
  assert np.abs(np.asarray(new) - np.asarray(old)).max() > 0


def test_return_weights_gives_per_sample_generated_weights():
  _, variables, apply = _hyper()
  zf, coeffs = _inputs()
  net = models.HyperUnet(hyper_dim=4, num_coeffs=2, channels=C, strategy="loop")
  out, weights = net.apply(variables, zf, coeffs, return_weights=True)
  _assert_close(out, apply(variables, zf, coeffs))
  assert weights["enc0_a"]["kernel"].shape == (3, 3, 3, 2, C)
  assert weights["head"]["bias"].shape == (3, 1)
  assert len(weights) == 15
  # One λ for the batch: its one weight set on every row, as a Unet or a
  # stack gives them, so that a term of the weights has a value per image.
  _, one = net.apply(variables, zf, coeffs[1], return_weights=True)
  for name in weights:
    for leaf in ("kernel", "bias"):
      got = np.asarray(one[name][leaf])
      np.testing.assert_array_equal(got, np.broadcast_to(got[0], got.shape))
      # Row 1 of a batch of three λ: the same MLP, another matmul blocking,
      # so float32 roundoff of the few layers' sums apart.
      np.testing.assert_allclose(got[0], weights[name][leaf][1], rtol=1e-5, atol=1e-6)
  assert losses.compute_terms(("weight_l1",), out, weights=one).shape == (3, 1)


def test_no_batch_norm_has_no_batch_stats():
  _, variables, apply = _hyper(batch_norm=False)
  assert "batch_stats" not in variables
  zf, coeffs = _inputs()
  assert apply(variables, zf, coeffs).shape == (3, SIZE, SIZE)


def test_torch_init_is_uniform_within_fan_in_bound():
  zf, coeffs = _inputs()
  params = models.Hypernetwork(hyper_dim=4, channels=C).init(
      jax.random.key(0), coeffs)["params"]
  for name, fan_in in [("dense0", 2), ("dense1", 4), ("enc0_a_kernel", 4)]:
    for leaf in ("kernel", "bias"):
      w = np.asarray(params[name][leaf])
      assert np.abs(w).max() <= 1 / np.sqrt(fan_in) + 1e-7
      if w.size >= 100:  # enough draws to come near the bound
        assert np.abs(w).max() > 0.9 / np.sqrt(fan_in)
  base = models.Unet(channels=C).init(jax.random.key(0), zf)["params"]
  assert np.abs(np.asarray(base["enc1_a_bias"])).max() <= 1 / np.sqrt(9 * C)
  flax_init = models.Unet(channels=C, init_scheme="flax").init(
      jax.random.key(0), zf)["params"]
  assert np.all(np.asarray(flax_init["enc1_a_bias"]) == 0)
  with pytest.raises(ValueError, match="init must be one of"):
    models.Unet(channels=C, init_scheme="xavier").init(jax.random.key(0), zf)


@pytest.mark.parametrize("num_coeffs", [3, 5])
def test_any_number_of_coefficients(num_coeffs):
  net = models.HyperUnet(hyper_dim=4, num_coeffs=num_coeffs, channels=4)
  zf, _ = _inputs(batch=2)
  lam = np.full((2, num_coeffs - 1), 0.5, np.float32)
  variables = net.init(jax.random.key(0), zf, hparams.coefficients(lam))
  assert variables["params"]["hypernetwork"]["dense0"]["kernel"].shape == (
      num_coeffs, 4)


@pytest.mark.parametrize("zf_shape, coeffs_shape, match", [
    ((3, SIZE, SIZE), (3, 2), r"shape \(B, H, W, 2\)"),
    ((3, SIZE, SIZE, 1), (3, 2), "2 channels"),
    ((3, 20, SIZE, 2), (3, 2), "max-pooled 3 times"),
    ((3, SIZE, 12, 2), (3, 2), "multiples of 8"),
    ((3, SIZE, SIZE, 2), (3, 3), "2 loss coefficients"),
    ((3, SIZE, SIZE, 2), (3,), "2 loss coefficients per row"),
    ((3, SIZE, SIZE, 2), (3, 1, 2), r"shape \(2,\) or \(B, 2\)"),
    ((3, SIZE, SIZE, 2), (2, 2), "batch size 3"),
])
def test_bad_inputs_raise_value_error(zf_shape, coeffs_shape, match):
  net, variables, _ = _hyper()
  with pytest.raises(ValueError, match=match):
    net.apply(variables, np.zeros(zf_shape, np.float32),
              np.full(coeffs_shape, 0.5, np.float32))


def test_bad_inputs_are_caught_at_trace_time_under_jit():
  _, variables, apply = _hyper()
  with pytest.raises(ValueError, match="2 channels"):
    apply(variables, np.zeros((1, SIZE, SIZE, 3), np.float32),
          np.full((1, 2), 0.5, np.float32))


def test_bad_module_settings_raise():
  zf, coeffs = _inputs()
  with pytest.raises(ValueError, match="num_coeffs must be"):
    models.HyperUnet(num_coeffs=1, channels=4).init(jax.random.key(0), zf,
                                                    coeffs[:, :1])
  with pytest.raises(ValueError, match="strategy must be one of"):
    models.HyperUnet(strategy="fast", channels=4).init(jax.random.key(0), zf,
                                                       coeffs)


@pytest.mark.parametrize("make", [
    lambda w: models.HyperUnet(hyper_dim=4, channels=w),
    lambda w: models.HyperUnet(hyper_dim=w, channels=4),
    lambda w: models.Unet(channels=w),
    lambda w: models.UnetStack(lambdas=((0.0,), (1.0,)), channels=w),
])
@pytest.mark.parametrize("width", [0, -4, 2.5, True])
def test_a_width_that_is_not_a_whole_number_of_at_least_1_is_named(make, width):
  # channels=0 gave a model of biases alone, -4 an MLIR error, 0 in a Unet a
  # ZeroDivisionError.
  zf, coeffs = _inputs()
  with pytest.raises(ValueError, match=rf"(channels|hyper_dim) must be a whole number ≥ 1, "
                                       rf"got {re.escape(repr(width))}"):
    make(width).init(jax.random.key(0), zf, coeffs)


@functools.cache
def _every_model():
  """A narrow HyperUnet, Unet and UnetStack of 2 loss terms, each with its variables."""
  zf, coeffs = _inputs()
  nets = (models.HyperUnet(hyper_dim=4, channels=4), models.Unet(channels=4),
          models.UnetStack(lambdas=((0.0,), (1.0,)), channels=4))
  return tuple((net, net.init(jax.random.key(0), zf, coeffs)) for net in nets)


def test_generate_takes_one_row_per_weight_set_for_every_model():
  # A (K,) vector gave a Unet K rows of weights and a stack weights without
  # their row axis, where a HyperUnet refused it.
  _, coeffs = _inputs()
  for net, variables in _every_model():
    for method in (net.generate, net.evaluation_weights):
      with pytest.raises(ValueError, match=r"coeffs must have shape \(G, (2|K)\), one row per "
                                           r"weight set, got shape \(2,\)"):
        net.apply(variables, coeffs[0], method=method)
      rows = net.apply(variables, coeffs, method=method)
      assert all(leaf.shape[0] == len(coeffs) for leaf in jax.tree_util.tree_leaves(rows))


def test_concrete_coefficients_off_the_simplex_are_refused_as_the_grid_refuses_them():
  # Unchecked, a HyperUnet gives NaN images at NaN and extrapolates at raw
  # loss weights, and a stack picks a member for NaN. hparams.check_coefficients'
  # words.
  zf, coeffs = _inputs()
  bad = [([np.nan, 1.0], r"coeffs must be finite, row 0 is \[nan, 1\.0\]"),
         ([3.0, -2.0], r"coeffs must be ≥ 0, row 0 is \[3\.0, -2\.0\]"),
         # Typed to four places the sum may be off by 1e-4 (hparams.SUM_TOLERANCE).
         ([0.4999, 0.4999], r"coeffs rows must sum to 1 \(within 0\.0001\), row 0 sums "
                            r"to 0\.9998")]
  for net, variables in _every_model():
    plain = isinstance(net, models.Unet)
    for row, match in bad:
      for method in (net.generate, net.evaluation_weights):
        with pytest.raises(errors.InputError, match=match.replace("row 0", "row 1")):
          net.apply(variables, np.array([[0.5, 0.5], row], np.float32), method=method)
      if plain:
        # A plain Unet has the one λ it was trained at and ignores coeffs.
        np.testing.assert_array_equal(net.apply(variables, zf, np.array(row, np.float32)),
                                      net.apply(variables, zf))
        continue
      with pytest.raises(errors.InputError, match=match):
        net.apply(variables, zf, np.array(row, np.float32))
      with pytest.raises(errors.InputError, match=match.replace("row 0", "row 2")):
        net.apply(variables, zf, np.concatenate([coeffs[:2], [row]]).astype(np.float32))
    if not plain:
      net.apply(variables, zf, np.array([0.49995, 0.49995], np.float32))  # within 1e-4
  net, variables = _every_model()[0]
  for row, match in bad:
    with pytest.raises(errors.InputError, match=match):
      models.unet_variables(net, variables, row)
  # Traced values are not looked at: no cost, and no error, in a compiled step
  # (jit), nor when tracing for a gradient (traced, not compiled, here).
  net, variables, apply = _hyper()
  assert np.isnan(apply(variables, zf, np.full((3, 2), np.nan, np.float32))).all()
  grad = jax.eval_shape(jax.grad(lambda c: net.apply(variables, zf, c).sum()),
                        np.array([3.0, -2.0], np.float32))
  assert grad.shape == (2,)


def test_reconstruct_with_refuses_weights_that_keep_their_row_axis():
  # Unchecked, XLA says "convolution requires lhs and rhs ndim to be equal, got 4 and 5".
  zf, coeffs = _inputs()
  for net, variables in _every_model():
    weights = net.apply(variables, coeffs[:1], method=net.evaluation_weights)
    with pytest.raises(errors.InputError,
                       match=r"weights must be one set, without the row axis: enc0_a has kernel "
                             r"shape \(1, 3, 3, 2, 4\), with a leading axis of 1; take row g "
                             r"of evaluation_weights"):
      net.apply(variables, weights, zf, method=net.reconstruct_with)
    one = jax.tree_util.tree_map(lambda w: w[0], weights)
    # Row 0 is the model at coeffs[0] (test_reconstruct_with_evaluation_weights_
    # is_the_model_at_that_lambda): float32 roundoff apart.
    _assert_close(net.apply(variables, one, zf, method=net.reconstruct_with),
                  net.apply(variables, zf, coeffs[0]))
    with pytest.raises(errors.InputError, match=r"weights: head must have kernel shape "
                                                r"\(1, 1, 4, 1\) and bias shape \(1,\) for 4 "
                                                r"channels, got \(1, 1, 4, 2\) and \(2,\)"):
      net.apply(variables, {**one, "head": {"kernel": np.zeros((1, 1, 4, 2), np.float32),
                                             "bias": np.zeros(2, np.float32)}}, zf,
                method=net.reconstruct_with)


def test_generate_and_unet_variables_take_lists_and_name_the_shape_given():
  zf, coeffs = _inputs()
  for net, variables in _every_model():
    for method in (net.generate, net.evaluation_weights):
      # The same values as an array: the same weights, to the bit.
      want = net.apply(variables, coeffs, method=method)
      got = net.apply(variables, coeffs.tolist(), method=method)
      for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)
  net, variables = _every_model()[0]
  # The shape given, not the (1, 9) of the function's own reshape.
  with pytest.raises(errors.InputError, match=r"coeffs must have shape \(2,\) or \(1, 2\), one "
                                              r"coefficient vector, got shape \(3, 3\)"):
    models.unet_variables(net, variables, np.full((3, 3), 1 / 3))
  want = models.unet_variables(net, variables, coeffs[1])
  for given in (coeffs[1:2], coeffs[1].tolist()):
    got = models.unet_variables(net, variables, given)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_array_equal(a, b)


def test_a_stack_of_lambdas_of_unequal_lengths_is_named():
  zf, coeffs = _inputs()
  with pytest.raises(ValueError, match=r"λ vectors of a UnetStack must have one length, got "
                                       r"\(\(0\.0,\), \(0\.5, 0\.5\)\)"):
    models.UnetStack(lambdas=((0.0,), (0.5, 0.5)), channels=4).init(jax.random.key(0), zf,
                                                                     coeffs)


def test_coefficients_as_a_list_are_taken_as_an_array():
  net, variables, _ = _hyper()
  zf, coeffs = _inputs()
  np.testing.assert_array_equal(net.apply(variables, zf, coeffs.tolist()),
                                net.apply(variables, zf, coeffs))


def test_an_empty_batch_gives_an_empty_reconstruction_under_every_strategy():
  # The unrolled loop failed to join no rows ("need at least one array").
  zf, coeffs = _inputs()
  for strategy in ("loop", "vmap"):
    net, variables, _ = _hyper(strategy)
    assert net.apply(variables, zf[:0], coeffs[:0]).shape == (0, SIZE, SIZE)


def test_a_stack_holds_the_variables_of_independent_unets_and_trains_each_on_its_block():
  # The stack's variables are L plain Unets' stacked (the layout of a stack's
  # checkpoints); in training block l of the rows goes through Unet l alone,
  # with its own BatchNorm statistics: the plain Unet's own training call.
  lambdas = ((0.0,), (0.5,), (1.0,))
  stack = models.UnetStack(lambdas, channels=C, strategy="loop")
  zf, _ = _inputs()
  coeffs = np.repeat(np.asarray(hparams.coefficients(np.asarray(lambdas))), len(zf), 0)
  variables = stack.init(jax.random.key(0), zf, coeffs[:len(zf)])
  unet = models.Unet(channels=C)
  one = jax.eval_shape(unet.init, jax.random.key(0), zf)
  assert (jax.tree_util.tree_map(lambda x: x.shape, variables)
          == jax.tree_util.tree_map(lambda x: (3,) + x.shape, one))
  tiled = np.tile(zf, (3, 1, 1, 1))
  recon, updates = stack.apply(variables, tiled, coeffs, train=True, mutable=["batch_stats"])
  for i in range(3):
    member = jax.tree_util.tree_map(lambda v, i=i: v[i], variables)
    want, want_updates = unet.apply(member, zf, train=True, mutable=["batch_stats"])
    b = len(zf)
    _assert_close(recon[i * b:(i + 1) * b], want)
    for got, ref in zip(jax.tree_util.tree_leaves(updates),
                        jax.tree_util.tree_leaves(want_updates)):
      _assert_close(got[i], ref)
  with pytest.raises(ValueError, match="equal blocks"):
    stack.apply(variables, zf[:2], coeffs[:2], train=True, mutable=["batch_stats"])
  # In evaluation each row gets its nearest member's weights (λ 0.9 → member 2).
  rows = np.asarray(hparams.coefficients(np.asarray([[0.9], [0.0], [0.6]])))
  _, weights = stack.apply(variables, zf, rows, return_weights=True)
  for row, index in enumerate([2, 0, 1]):
    np.testing.assert_array_equal(weights["enc0_a"]["kernel"][row],
                                  variables["params"]["enc0_a_kernel"][index])
  # Wrong coefficient shapes are named, as for HyperUnet (they were a
  # broadcasting error deep in the Unet); a list is an array.
  with pytest.raises(ValueError, match=r"coeffs has 3 rows but zf has batch size 1"):
    stack.apply(variables, zf[:1], rows)
  with pytest.raises(ValueError, match=r"coeffs must have shape \(2,\) or \(B, 2\)"):
    stack.apply(variables, zf, rows[None])
  np.testing.assert_array_equal(stack.apply(variables, zf, [1.0, 0.0]),
                                stack.apply(variables, zf, np.asarray([1.0, 0.0], np.float32)))


def test_every_evaluation_path_folds_the_running_statistics_as_the_numpy_unet():
  # At initialization (mean 0, var 1, scale 1, bias 0) folding BatchNorm is
  # the identity to 5e-6, so a path that skipped the fold passed the other
  # tests; with random statistics it is off by O(1). Reference: the NumPy
  # forward pass of the reference topology (float64, BatchNorm unfolded).
  # (Unet.apply itself: test_unet_matches_independent_numpy_forward.)
  zf, coeffs = _inputs()
  to_np = lambda t: jax.tree_util.tree_map(np.asarray, t)
  # As test_unet_matches_independent_numpy_forward: float32 roundoff of 15
  # layers of ≤ 72-term sums, folded or not, well inside 1e-4 of the scale.
  close = functools.partial(_assert_close, rel=1e-4)
  unet, variables = _every_model()[1]
  variables = _with_random_stats(variables)
  want = _numpy_unet(to_np(variables["params"]), to_np(variables["batch_stats"]), zf, 4)
  weights = unet.apply(variables, coeffs, method=unet.evaluation_weights)
  close(unet.apply(variables, jax.tree_util.tree_map(lambda w: w[0], weights), zf,
                   method=unet.reconstruct_with), want)

  stack, variables = _every_model()[2]  # members at λ = 0 and λ = 1
  variables = _with_random_stats(variables)
  member = lambda tree, m: to_np(jax.tree_util.tree_map(lambda v: v[m], tree))
  want = [_numpy_unet(member(variables["params"], m), member(variables["batch_stats"], m),
                      zf, 4) for m in (0, 1)]
  # coeffs rows are λ = 0, 0.5, 1: rows 0 and 2 each go to their own member.
  rows = coeffs[[0, 2, 2]]
  got = np.asarray(stack.apply(variables, zf, rows))
  close(got[0], want[0][0])
  close(got[1:], want[1][1:])
  weights = stack.apply(variables, coeffs[[0, 2]], method=stack.evaluation_weights)
  for m in (0, 1):
    close(stack.apply(variables, jax.tree_util.tree_map(lambda w, m=m: w[m], weights), zf,
                      method=stack.reconstruct_with), want[m])


def test_a_stack_s_members_start_from_their_own_draws_and_give_weights_per_row():
  stack, variables = _every_model()[2]
  zf, coeffs = _inputs()
  params = variables["params"]
  # Separate runs draw separate weights: members that start equal would stay
  # near each other, a stack of one Unet.
  for spec in models.conv_specs(4):
    assert not np.array_equal(params[f"{spec.name}_kernel"][0], params[f"{spec.name}_kernel"][1])
  # One λ for the batch: still one weight set per row (weight-ℓ1 sums per
  # row), every row member 1's at λ = 1.
  _, weights = stack.apply(variables, zf, coeffs[2], return_weights=True)
  for spec in models.conv_specs(4):
    kernel = np.asarray(weights[spec.name]["kernel"])
    assert kernel.shape == (3,) + spec.kernel_shape
    np.testing.assert_array_equal(
        kernel, np.broadcast_to(params[f"{spec.name}_kernel"][1], kernel.shape))


def test_variables_that_do_not_fit_the_model_are_named_not_a_flax_scope_error():
  # Another model's variables, variables['params'] alone, or train=True without
  # mutable were Flax scope errors (ScopeParamShapeError, ...), not InputError.
  zf, coeffs = _inputs()
  (hyper, hyper_vars), (unet, unet_vars), (stack, stack_vars) = _every_model()
  wider = models.HyperUnet(hyper_dim=8, channels=4)
  with pytest.raises(errors.InputError, match=r"variables do not fit this HyperUnet.*\(2, 4\)"):
    wider.apply(hyper_vars, zf, coeffs)
  with pytest.raises(errors.InputError, match=r"variables do not fit this Unet"):
    unet.apply(hyper_vars, zf, coeffs)
  with pytest.raises(errors.InputError, match=r"variables do not fit this UnetStack"):
    stack.apply(unet_vars, zf, coeffs)
  with pytest.raises(errors.InputError, match=r"variables\['params'\] alone"):
    hyper.apply(hyper_vars["params"], zf, coeffs)
  with pytest.raises(errors.InputError, match=r"mutable=\['batch_stats'\]"):
    hyper.apply(hyper_vars, zf, coeffs, train=True)
  out, updates = hyper.apply(hyper_vars, zf, coeffs, train=True, mutable=["batch_stats"])
  assert out.shape == zf.shape[:3] and "batch_stats" in updates
