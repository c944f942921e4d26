"""Tests for hyperrecon_jax.models.topology: the convolutions, the kept activations, widths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperrecon_jax import errors
from hyperrecon_jax.models import Unet
from hyperrecon_jax.models import topology


def test_conv_specs_are_the_reference_unet_s_fifteen_convolutions():
  specs = topology.conv_specs(32)
  assert [s.name for s in specs] == (
      [f"enc{i}_{ab}" for i in range(4) for ab in "ab"]
      + [f"dec{i}_{ab}" for i in range(3) for ab in "ab"] + ["head"])
  shapes = {s.name: s.kernel_shape for s in specs}
  assert shapes["enc0_a"] == (3, 3, 2, 32)
  assert shapes["enc3_b"] == (3, 3, 32, 32)
  assert shapes["dec0_a"] == (3, 3, 64, 32)  # after concatenating the skip
  assert shapes["head"] == (1, 1, 32, 1)
  # By hand: 3·3·2·32+32 + 10·(3·3·32·32+32) + 3·(3·3·64·32+32) + 32+1, the
  # reference Unet's parameters less its 14 BatchNorms' 2·32 each (REFERENCE.md).
  assert sum(s.num_weights for s in specs) == 608 + 10 * 9248 + 3 * 18464 + 33 == 148_513
  seg = topology.conv_specs(4, in_channels=1, out_channels=5)
  assert seg[0].kernel_shape == (3, 3, 1, 4) and seg[-1].kernel_shape == (1, 1, 4, 5)


def _convolution_inputs_per_image(channels, size):
  """Σ over a training step's convolutions of |input| / batch, read from its jaxpr."""
  net = Unet(channels=channels)
  zf = jnp.zeros((2, size, size, 2))
  variables = jax.eval_shape(net.init, jax.random.key(0), zf)
  jaxpr = jax.make_jaxpr(lambda v: net.apply(v, zf, train=True, mutable=["batch_stats"]))(
      variables)
  sizes = []

  def visit(jaxpr):
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr holds its Jaxpr
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        sizes.append(int(np.prod(eqn.invars[0].aval.shape)) // 2)
      for value in eqn.params.values():  # the bodies of pjit, remat, custom_vjp
        for sub in value if isinstance(value, (tuple, list)) else [value]:
          if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
            visit(sub)

  visit(jaxpr.jaxpr)
  return sizes


@pytest.mark.parametrize("channels, size", [(4, 16), (3, 24)])
def test_kept_activations_are_the_inputs_of_the_model_s_convolutions(channels, size):
  sizes = _convolution_inputs_per_image(channels, size)
  assert len(sizes) == len(topology.conv_specs(channels))
  assert topology.kept_activations(channels, size) == sum(sizes)


def test_kept_activations_by_hand():
  # 4 channels at 16²: enc0 16²·(2+4), enc1 8²·(4+4), enc2 4²·8, enc3 2²·8;
  # dec0 at 4²·(8+4), dec1 at 8²·(8+4), dec2 at 16²·(8+4); the head 16²·4.
  want = 256 * 6 + 64 * 8 + 16 * 8 + 4 * 8 + 16 * 12 + 64 * 12 + 256 * 12 + 256 * 4
  assert topology.kept_activations(4, 16) == want == 7_264


@pytest.mark.parametrize("width", [0, -4, 2.5, True, "8", None])
def test_check_width_names_a_width_that_is_not_a_whole_number_of_at_least_1(width):
  with pytest.raises(errors.InputError, match=r"hyper_dim must be a whole number ≥ 1, got "):
    topology.check_width(channels=4, hyper_dim=width)


def test_check_width_takes_whole_numbers_of_numpy_too():
  topology.check_width(channels=1, hyper_dim=np.int64(32))
