"""Tests for the λ-path variants of hyperrecon_jax.models.hypernetwork.

The paper's hypernetwork (``hyper_init='reference'``, ``conditioned='all'``) is
tested in test_models.py against the reference's counts and outputs; here the
hypernetwork's MLP against NumPy, the offset initialization and the partly
conditioned Unet.
"""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import models

C = 8  # narrow Unet for fast tests
D = 4
SIZE = 16
DECODER = ("dec0_a", "dec0_b", "dec1_a", "dec1_b", "dec2_a", "dec2_b", "head")


def _inputs(batch=3, seed=0):
  rng = np.random.default_rng(seed)
  zf = rng.normal(size=(batch, SIZE, SIZE, 2)).astype(np.float32)
  lam = np.linspace(0.0, 1.0, batch, dtype=np.float32)[:, None]
  return zf, np.asarray(hparams.coefficients(lam))


@functools.cache
def _net(hyper_init="reference", conditioned="all", strategy="loop"):
  net = models.HyperUnet(hyper_dim=D, num_coeffs=2, channels=C, strategy=strategy,
                         hyper_init=hyper_init, conditioned=conditioned)
  zf, coeffs = _inputs()
  variables = jax.jit(net.init)(jax.random.key(0), zf, coeffs)
  # Non-trivial running statistics, so that evaluation mode is tested.
  rng = np.random.default_rng(1)
  stats = jax.tree_util.tree_map_with_path(
      lambda p, x: (rng.uniform(0.5, 2.0, x.shape) if p[-1].key == "var"
                    else rng.normal(0, 0.3, x.shape)).astype(np.float32),
      variables["batch_stats"])
  return net, {**variables, "batch_stats": stats}


def _f64(x):
  return np.asarray(x, np.float64)


def _generate(net, variables, coeffs):
  return net.apply(variables, coeffs, method=models.HyperUnet.generate)


def test_offset_init_starts_every_lambda_as_one_plain_unet():
  net, variables = _net("offset")
  _, coeffs = _inputs()
  weights = _generate(net, variables, coeffs)
  hyper = variables["params"]["hypernetwork"]
  for spec in models.conv_specs(C):
    # A = 0: the generated weights are the projections' biases b for every λ ...
    assert not np.any(hyper[f"{spec.name}_kernel"]["kernel"])
    assert not np.any(hyper[f"{spec.name}_bias"]["kernel"])
    kernel = np.asarray(weights[spec.name]["kernel"])
    np.testing.assert_array_equal(kernel, np.broadcast_to(kernel[:1], kernel.shape))
    np.testing.assert_array_equal(
        kernel[0], np.reshape(hyper[f"{spec.name}_kernel"]["bias"], spec.kernel_shape))
    # ... and b is drawn as a plain Unet's convolution: U(±1/√fan_in).
    bound = 1.0 / np.sqrt(spec.size ** 2 * spec.cin)
    for value in (kernel[0], np.asarray(weights[spec.name]["bias"][0])):
      assert np.abs(value).max() <= bound
    if spec.size == 3:
      # 144 or more draws: the largest lies above 0.9·bound unless the
      # initializer is another one (by chance: 0.9^144 ≈ 3e-7).
      assert np.abs(kernel[0]).max() > 0.9 * bound


def test_offset_init_learns_the_projections_first():
  """With A = 0 only A gets a gradient at step 0 (dL/dh = Aᵀ·dL/dW = 0)."""
  net, variables = _net("offset")
  zf, coeffs = _inputs()

  def loss(params):
    recon = net.apply({**variables, "params": params}, zf, coeffs)
    return jnp.sum(recon * coeffs[:, :1, None])  # depends on λ

  grads = jax.grad(loss)(variables["params"])["hypernetwork"]
  for i in range(4):
    assert not np.any(grads[f"dense{i}"]["kernel"])
  assert np.any(grads["head_kernel"]["kernel"])
  # One gradient step separates the λ (of the hypernetwork's parameters only A
  # can: the biases b are shared by every λ).
  params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, variables["params"],
                                  {**jax.tree_util.tree_map(jnp.zeros_like,
                                                            variables["params"]),
                                   "hypernetwork": grads})
  weights = _generate(net, {**variables, "params": params}, coeffs)
  kernel = np.asarray(weights["head"]["kernel"])
  assert np.abs(kernel[0] - kernel[-1]).max() > 0


def test_partly_conditioned_parameter_count_by_hand():
  net, variables = _net("reference", "dec,head")
  # 3×3 kernels plus biases: enc0_a 2→8, the other encoder convolutions 8→8,
  # the decoder's first convolutions 16→8 (after the concatenation).
  enc = (9 * 2 * 8 + 8) + 7 * (9 * 8 * 8 + 8)
  dec = 3 * (9 * 16 * 8 + 8) + 3 * (9 * 8 * 8 + 8) + (8 + 1)
  hidden = (2 * D + D) + 3 * (D * D + D)
  batch_norm = 14 * 2 * C
  expected = hidden + (D + 1) * dec + enc + batch_norm
  assert models.count_params(variables["params"]) == expected
  full, full_variables = _net("reference", "all")
  assert (models.count_params(full_variables["params"])
          == hidden + (D + 1) * (enc + dec) + batch_norm)


def test_shared_convolutions_are_the_same_for_every_lambda():
  net, variables = _net("reference", "dec,head")
  _, coeffs = _inputs()
  weights = _generate(net, variables, coeffs)
  assert set(weights) == {spec.name for spec in models.conv_specs(C)}
  for spec in models.conv_specs(C):
    kernel = np.asarray(weights[spec.name]["kernel"])
    assert kernel.shape == (3,) + spec.kernel_shape
    if spec.name in DECODER:
      assert np.abs(kernel[0] - kernel[-1]).max() > 0
    else:
      np.testing.assert_array_equal(
          kernel, np.broadcast_to(variables["params"][f"{spec.name}_kernel"],
                                  kernel.shape))


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_partly_conditioned_mixed_batch_equals_each_element_alone(strategy):
  net, variables = _net("reference", "dec,head", strategy)
  zf, coeffs = _inputs()
  mixed = np.asarray(net.apply(variables, zf, coeffs))
  for i in range(3):
    alone = np.asarray(net.apply(variables, zf[i:i + 1], coeffs[i]))[0]
    # One λ alone is one weight set of the same products: float32 roundoff
    # of a 16-channel sum, relative to the output's scale.
    np.testing.assert_allclose(mixed[i], alone, rtol=0,
                               atol=1e-5 * np.abs(alone).max())


def test_partly_conditioned_gradients_agree_between_strategies():
  zf, coeffs = _inputs()
  grads = []
  for strategy in ("loop", "vmap"):
    net, variables = _net("reference", "enc0,head", strategy)

    def loss(params, net=net, variables=variables):
      out, _ = net.apply({**variables, "params": params}, zf, coeffs, train=True,
                         mutable=["batch_stats"])
      return jnp.mean(out ** 2)

    grads.append(jax.flatten_util.ravel_pytree(
        jax.grad(loss)(variables["params"]))[0])
  # The loop's custom kernel gradient against XLA's grouped convolution: the
  # same sums in another order.
  scale = np.abs(np.asarray(grads[1])).max()
  np.testing.assert_allclose(grads[0], grads[1], rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("conditioned, count", [
    ("all", 15), ("head", 1), ("dec", 6), ("enc0, dec2", 4), ("enc", 8)])
def test_conditioned_specs_select_by_prefix(conditioned, count):
  specs = models.conditioned_specs(C, conditioned)
  assert len(specs) == count
  order = [s.name for s in models.conv_specs(C)]
  assert [s.name for s in specs] == [n for n in order if n in {s.name for s in specs}]


@pytest.mark.parametrize("conditioned, match", [
    ("decoder", "'decoder' is the prefix of no Unet convolution"),
    (" , ", "name at least one Unet convolution"),
])
def test_bad_conditioned_names_the_problem(conditioned, match):
  with pytest.raises(errors.InputError, match=match):
    models.conditioned_specs(C, conditioned)


def test_bad_hyper_init_raises():
  net = models.HyperUnet(hyper_dim=D, channels=C, hyper_init="zeros")
  zf, coeffs = _inputs()
  with pytest.raises(errors.InputError, match=r"hyper_init must be one of .*'zeros'"):
    net.init(jax.random.key(0), zf, coeffs)


def test_each_hidden_layer_is_drawn_within_its_own_fan_in_bound():
  # PyTorch's default init, U(±1/√fan_in): the first layer's fan-in is K = 2
  # (bound 0.71), the others' d = 128 (bound 0.088). (The projections' fan-in
  # d: test_models.py's test_torch_init_is_uniform_within_fan_in_bound.) Only
  # the head conditioned: one pair of projections to initialize, not 15.
  hyper = models.Hypernetwork(hyper_dim=128, channels=4, conditioned="head")
  _, coeffs = _inputs()
  params = jax.jit(hyper.init)(jax.random.key(0), coeffs)["params"]
  for name, fan_in in (("dense0", 2), ("dense1", 128), ("dense2", 128), ("dense3", 128)):
    bound = 1 / np.sqrt(fan_in)
    for leaf in ("kernel", "bias"):
      w = np.abs(np.asarray(params[name][leaf]))
      # 128 or more uniform draws: the largest lies above 0.9·bound but for
      # a chance of 0.9^128 ≈ 1e-6 (a fixed key: deterministic here).
      assert w.size >= 128 and 0.9 * bound < w.max() <= bound, (name, leaf, w.max())


def test_hypernetwork_is_the_documented_mlp():
  # K → d → d → d → d Dense layers, LeakyReLU(0.01) after each, then one
  # Dense per generated kernel and bias, against the same MLP in NumPy.
  # Parameters drawn in [-1, 1] (weights and biases alike) so that every
  # hidden layer has negative pre-activations, where the slope shows.
  hyper = models.Hypernetwork(hyper_dim=8, channels=C)
  coeffs = np.asarray(hparams.coefficients(np.array([[0.0], [0.3], [1.0]], np.float32)))
  shapes = jax.eval_shape(hyper.init, jax.random.key(0), coeffs)
  rng = np.random.default_rng(2)
  params = jax.tree_util.tree_map(
      lambda x: rng.uniform(-1, 1, x.shape).astype(np.float32), shapes)["params"]
  got = hyper.apply({"params": params}, coeffs)

  def leaky_relu(z):
    return np.where(z >= 0, z, 0.01 * z)

  h = coeffs.astype(np.float64)
  for i in range(4):
    layer = params[f"dense{i}"]
    z = h @ _f64(layer["kernel"]) + _f64(layer["bias"])
    assert (z < 0).sum() >= 3 and (z > 0).sum() >= 3, (i, z)
    h = leaky_relu(z)
  assert set(got) == {spec.name for spec in models.conv_specs(C)}
  for spec in models.conv_specs(C):
    for part, shape in (("kernel", spec.kernel_shape), ("bias", (spec.cout,))):
      layer = params[f"{spec.name}_{part}"]
      want = (h @ _f64(layer["kernel"]) + _f64(layer["bias"])).reshape((3,) + shape)
      # float32 dot products of at most d + 1 = 9 terms, five layers deep:
      # a few 1e-6 of the magnitudes summed; 1e-5 of the largest value.
      np.testing.assert_allclose(got[spec.name][part], want, rtol=0,
                                 atol=1e-5 * np.abs(want).max(), err_msg=spec.name)
