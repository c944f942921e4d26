"""The hypernetwork and ``HyperUnet``: loss coefficients → Unet weights → reconstruction."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.models import layers
from hyperrecon_jax.models import unet

NUM_HIDDEN = 4  # fully connected layers before the per-convolution projections


class Hypernetwork(nn.Module):
  """Maps a loss-coefficient vector to the weights of every Unet convolution.

  ``K → d → d → d → d`` fully connected layers, LeakyReLU(0.01) after each (the
  last included), then for every convolution one linear map ``d → k·k·in·out``
  (its kernel) and one ``d → out`` (its bias).

  Attributes:
    hyper_dim: width d (4, 32, 128 for HyperRecon-S, -M, -L).
    channels: Unet features at every level.
    init_scheme: ``'torch'`` or ``'flax'``, see ``layers.initializers``.
  """
  hyper_dim: int = 128
  channels: int = 32
  init_scheme: str = "torch"

  @nn.compact
  def __call__(self, coeffs):
    """Generates one weight set per row of ``coeffs``.

    Args:
      coeffs: (B, K) loss coefficients.

    Returns:
      ``{name: {'kernel': (B, k, k, in, out), 'bias': (B, out)}}``.
    """
    h = coeffs.astype(jnp.float32)
    for i in range(NUM_HIDDEN):
      kinit, binit = layers.initializers(self.init_scheme, h.shape[-1])
      h = nn.Dense(self.hyper_dim, kernel_init=kinit, bias_init=binit,
                   name=f"dense{i}")(h)
      h = nn.leaky_relu(h, negative_slope=0.01)
    kinit, binit = layers.initializers(self.init_scheme, self.hyper_dim)
    weights = {}
    for spec in unet.conv_specs(self.channels):
      kernel = nn.Dense(int(np.prod(spec.kernel_shape)), kernel_init=kinit,
                        bias_init=binit, name=f"{spec.name}_kernel")(h)
      bias = nn.Dense(spec.cout, kernel_init=kinit, bias_init=binit,
                      name=f"{spec.name}_bias")(h)
      weights[spec.name] = {
          "kernel": kernel.reshape(h.shape[:-1] + spec.kernel_shape),
          "bias": bias,
      }
    return weights


def check_coeffs(coeffs, num_coeffs: int, batch: int):
  """Trace-time shape checks: (K,) for the whole batch, or (B, K) per row."""
  shape = getattr(coeffs, "shape", None)
  if shape is None or len(shape) not in (1, 2):
    raise errors.InputError(f"coeffs must have shape ({num_coeffs},) or (B, {num_coeffs}), "
                            f"got shape {shape}")
  if shape[-1] != num_coeffs:
    raise errors.InputError(f"coeffs must have {num_coeffs} loss coefficients per row "
                            f"(num_coeffs={num_coeffs}), got shape {shape}")
  if len(shape) == 2 and shape[0] != batch:
    raise errors.InputError(f"coeffs has {shape[0]} rows but zf has batch size {batch}")


class HyperUnet(nn.Module):
  """HyperRecon: a Unet whose convolution weights are generated from λ.

  Every batch element gets the weights generated from its own coefficient
  vector. BatchNorm scales and biases are ordinary parameters shared across λ.

  Attributes:
    hyper_dim: hypernetwork width d.
    num_coeffs: K, the number of loss terms (≥ 2).
    channels: Unet features at every level.
    batch_norm: BatchNorm after every 3×3 convolution.
    init_scheme: ``'torch'`` (the reference's, default) or ``'flax'``.
    strategy: how rows with their own weights are convolved: ``'auto'``
      (``'vmap'`` on GPU/TPU, ``'loop'`` on CPU), ``'vmap'`` or ``'loop'``. It
      changes speed only; one λ for the whole batch (coefficients of shape
      (K,)) is always one weight set and ordinary convolutions.
    dtype: computation and activation dtype (see `UnetBody`).
  """
  hyper_dim: int = 128
  num_coeffs: int = 2
  channels: int = 32
  batch_norm: bool = True
  init_scheme: str = "torch"
  strategy: str = "auto"
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.num_coeffs < 2:
      raise errors.InputError(f"num_coeffs must be ≥ 2, got {self.num_coeffs}")
    if self.hyper_dim < 1:
      raise errors.InputError(f"hyper_dim must be ≥ 1, got {self.hyper_dim}")
    self.hypernetwork = Hypernetwork(self.hyper_dim, self.channels,
                                     self.init_scheme)
    self.body = unet.UnetBody(self.channels, self.batch_norm,
                              strategy=layers.resolve_strategy(self.strategy),
                              dtype=self.dtype)

  def __call__(self, zf, coeffs, *, train: bool = False,
               return_weights: bool = False):
    """Reconstructs a batch at one λ, or each element at its own.

    Args:
      zf: (B, H, W, 2) zero-filled input.
      coeffs: loss coefficients (see ``hparams.coefficients``): (K,), one
        vector for the whole batch (one generated weight set), or (B, K), one
        per element.
      train: use and update batch statistics (pass ``mutable=['batch_stats']``).
      return_weights: also return the generated weights (for weight-ℓ1).

    Returns:
      (B, H, W) float32 reconstruction; with ``return_weights`` a pair
      (reconstruction, weights) where every weight leaf has a leading axis of
      size B (size 1 for (K,) coefficients).
    """
    unet.check_input(zf)
    check_coeffs(coeffs, self.num_coeffs, zf.shape[0])
    if coeffs.ndim == 1:
      weights = self.hypernetwork(coeffs[None])
      recon = self.body(jax.tree_util.tree_map(lambda w: w[0], weights), zf,
                        per_sample=False, train=train)
    else:
      weights = self.hypernetwork(coeffs)
      recon = self.body(weights, zf, per_sample=True, train=train)
    return (recon, weights) if return_weights else recon

  def reconstruct_with(self, weights, zf):
    """Reconstructs a batch in evaluation mode with one given weight set.

    ``reconstruct_with(generate(c[None])[0], zf)`` is ``__call__(zf, c)``:
    callers that run many batches at one λ, or many λ, generate the weights
    once (`hyperrecon_jax.grid`'s λ-major grid).

    Args:
      weights: ``{name: {'kernel', 'bias'}}`` of one λ, no leading axis.
      zf: (B, H, W, 2) zero-filled input.

    Returns:
      (B, H, W) float32 reconstruction.
    """
    unet.check_input(zf)
    return self.body(weights, zf, per_sample=False, train=False)

  def generate(self, coeffs):
    """The generated convolution weights for each row of (G, K) ``coeffs``."""
    if getattr(coeffs, "ndim", None) != 2:
      raise errors.InputError(f"coeffs must have shape (G, {self.num_coeffs}), got shape "
                              f"{getattr(coeffs, 'shape', None)}")
    check_coeffs(coeffs, self.num_coeffs, coeffs.shape[0])
    return self.hypernetwork(coeffs)


def unet_variables(net: HyperUnet, variables, coeffs):
  """Variables of a plain ``Unet`` equal to ``net`` at one coefficient vector.

  Exports a fixed-λ model: the generated weights become ordinary parameters and
  the shared BatchNorm parameters and statistics are copied.

  Args:
    net: the ``HyperUnet`` module.
    variables: its variables (``params`` and, with BatchNorm, ``batch_stats``).
    coeffs: (K,) or (1, K) loss coefficients.

  Returns:
    Variables for ``Unet(channels=net.channels, batch_norm=net.batch_norm)``.
  """
  coeffs = jnp.reshape(jnp.asarray(coeffs, jnp.float32), (1, -1))
  weights = net.apply(variables, coeffs, method=HyperUnet.generate)
  params = {"body": variables["params"].get("body", {})}
  for name, w in weights.items():
    params[f"{name}_kernel"] = w["kernel"][0]
    params[f"{name}_bias"] = w["bias"][0]
  out = {"params": params}
  if "batch_stats" in variables:
    out["batch_stats"] = variables["batch_stats"]
  return out
