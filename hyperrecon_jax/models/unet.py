"""The reconstruction Unet of HyperRecon, as a function of an explicit weights pytree.

Topology (REFERENCE.md): 2 input channels (real, imaginary of the zero-filled
image), ``channels`` features at every one of 4 levels, blocks of
[3×3 conv → BatchNorm → ReLU] × 2, 2×2 max-pooling between encoder levels,
bilinear ×2 upsampling with ``align_corners=True``, concatenation
[upsampled, skip], a 1×1 head, and a residual on the magnitude of the input:

    recon = head(features) + |zero_filled|.

The 15 convolutions' kernels and biases are *inputs* (``weights``); only the
BatchNorm scales and biases are parameters of ``UnetBody``, shared by every λ as
in the reference.
"""

from collections.abc import Mapping
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import physics
from hyperrecon_jax.hparams import maps
from hyperrecon_jax.models import layers
from hyperrecon_jax.models import normalization
from hyperrecon_jax.models import resampling

IN_CHANNELS = 2
NUM_LEVELS = 4  # resolution levels; the image is max-pooled NUM_LEVELS - 1 times


class ConvSpec(NamedTuple):
  """One convolution of the Unet: its name, kernel size and channel counts."""
  name: str
  size: int
  cin: int
  cout: int

  @property
  def kernel_shape(self):
    return (self.size, self.size, self.cin, self.cout)

  @property
  def num_weights(self):
    return self.size * self.size * self.cin * self.cout + self.cout


def conv_specs(channels: int = 32, in_channels: int = IN_CHANNELS,
               out_channels: int = 1) -> tuple[ConvSpec, ...]:
  """The Unet's 15 convolutions in execution order.

  Encoder blocks ``enc0``–``enc3`` (2→c, then c→c), decoder blocks
  ``dec0``–``dec2`` (2c→c after concatenation), and the 1×1 ``head`` (c→1).

  Args:
    channels: features at every level (32 in the paper).
    in_channels: input channels (2 for a zero-filled image; the segmentation
      Unet of `hyperrecon_jax.segmentation` reads 1).
    out_channels: head outputs (1 for a reconstruction; one per class for
      segmentation).

  Returns:
    A tuple of ``ConvSpec``.
  """
  c = channels
  specs = []
  for level in range(NUM_LEVELS):
    cin = in_channels if level == 0 else c
    specs += [ConvSpec(f"enc{level}_a", 3, cin, c),
              ConvSpec(f"enc{level}_b", 3, c, c)]
  for level in range(NUM_LEVELS - 1):
    specs += [ConvSpec(f"dec{level}_a", 3, 2 * c, c),
              ConvSpec(f"dec{level}_b", 3, c, c)]
  specs.append(ConvSpec("head", 1, c, out_channels))
  return tuple(specs)


def kept_activations(channels: int, size: int, in_channels: int = IN_CHANNELS) -> int:
  """Values per image that a training step's backward pass keeps: every convolution's input.

  A convolution's weight gradient needs its input, so the forward pass keeps
  the input of each of the `conv_specs` (BatchNorm's and ReLU's are not
  counted): a lower bound on the activations of one Unet, per image.

  Args:
    channels: features at every level.
    size: the image's height and width (a multiple of 8).
    in_channels: the Unet's input channels.

  Returns:
    The count of values.
  """
  total = 0
  for spec in conv_specs(channels, in_channels):
    block, index = spec.name[:3], int(spec.name[3]) if spec.name[3:4].isdigit() else 0
    # enc<l> runs at level l, dec<l> at level NUM_LEVELS - 2 - l, the head at full size.
    level = index if block == "enc" else NUM_LEVELS - 2 - index if block == "dec" else 0
    total += (size >> level) ** 2 * spec.cin
  return total


def check_width(**widths) -> None:
  """Refuses a width (``channels=0``, ``hyper_dim=2.5``) that is not a whole number ≥ 1.

  Flax builds a layer of 0 features without complaint (a Unet of 0 channels
  is its biases alone), and fails on a negative or fractional one deep in
  XLA, naming no argument.
  """
  for name, value in widths.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise errors.InputError(f"{name} must be a whole number ≥ 1, got {value!r}")


def check_input(zf, name: str = "zf", channels: int = IN_CHANNELS):
  """Trace-time checks of a network input batch (costs nothing under jit).

  Args:
    zf: the array to check.
    name: argument name used in error messages.
    channels: its channels (2 for a zero-filled input: real, imaginary).

  Raises:
    ValueError: if ``zf`` is not (B, H, W, channels) with H and W divisible by 8.
  """
  shape = getattr(zf, "shape", None)
  if shape is None or len(shape) != 4:
    raise errors.InputError(f"{name} must have shape (B, H, W, {channels}), got shape {shape}")
  if shape[-1] != channels:
    what = " (real, imaginary)" if channels == IN_CHANNELS else ""
    raise errors.InputError(f"{name} must have {channels} channels{what} "
                            f"in its last axis, got shape {shape}")
  factor = 2 ** (NUM_LEVELS - 1)
  if shape[1] % factor or shape[2] % factor or shape[1] == 0 or shape[2] == 0:
    raise errors.InputError(f"{name}: images of {shape[1]}×{shape[2]} cannot be "
                            f"max-pooled {NUM_LEVELS - 1} times: height and width must "
                            f"be positive multiples of {factor}")


def fold_batch_norm(kernel, bias, bn_params, bn_stats):
  """A convolution followed by evaluation-mode BatchNorm, as one convolution.

  With running statistics BatchNorm is affine per output channel::

    kernel' = kernel · s,  bias' = (bias − mean) · s + β,  s = γ / sqrt(var + eps)

  Args:
    kernel: (..., kh, kw, C_in, C_out) kernel; leading axes (per-sample
      weights, a stack's members) are allowed.
    bias: (..., C_out) bias, the same leading axes.
    bn_params: the BatchNorm's ``{'scale': γ, 'bias': β}``, each (C_out,)
      or with the kernel's leading axes (one BatchNorm per member).
    bn_stats: its ``{'mean', 'var'}`` running statistics, shaped alike.

  Returns:
    ``(kernel', bias')`` in float32.
  """
  s = bn_params["scale"] * jax.lax.rsqrt(bn_stats["var"] + normalization.BATCH_NORM_EPSILON)
  return (kernel.astype(jnp.float32) * s[..., None, None, None, :],
          (bias.astype(jnp.float32) - bn_stats["mean"]) * s + bn_params["bias"])


def conv_weights(params, channels: int):
  """The convolution weights of a plain Unet's parameters, ``{name: {'kernel', 'bias'}}``.

  Args:
    params: the ``params`` of a `Unet` (leaves may carry leading axes, e.g.
      a stack's member axis).
    channels: the Unet's features at every level.
  """
  return {spec.name: {"kernel": params[f"{spec.name}_kernel"],
                      "bias": params[f"{spec.name}_bias"]}
          for spec in conv_specs(channels)}


def fold_weights(weights, variables):
  """Convolution weights in evaluation mode: each BatchNorm folded into its convolution.

  The one place where a model's BatchNorm leaves its inference path: every
  model's ``evaluation_weights`` is its weights through this function, run
  by `run_folded`.

  Args:
    weights: ``{name: {'kernel', 'bias'}}``, any leading axes.
    variables: the model's variables; its BatchNorm layers are
      ``params['body']['bn_<name>']`` with statistics
      ``batch_stats['body']['bn_<name>']`` (the same leading axes, or none).
      Without them the weights pass unchanged (cast to float32).

  Returns:
    ``{name: {'kernel', 'bias'}}`` float32, for `UnetBody` without BatchNorm.
  """
  bn_params = variables.get("params", {}).get("body", {})
  bn_stats = variables.get("batch_stats", {}).get("body", {})
  out = {}
  for name, w in weights.items():
    kernel, bias = w["kernel"].astype(jnp.float32), w["bias"].astype(jnp.float32)
    bn = f"bn_{name}"
    if bn in bn_stats:
      kernel, bias = fold_batch_norm(kernel, bias, bn_params[bn], bn_stats[bn])
    out[name] = {"kernel": kernel, "bias": bias}
  return out


class UnetBody(nn.Module):
  """The Unet computation given its convolution weights.

  Attributes:
    channels: features at every level.
    batch_norm: whether each 3×3 convolution is followed by BatchNorm.
    strategy: per-sample convolution strategy, ``'vmap'`` or ``'loop'``.
    dtype: computation and activation dtype (float32 or bfloat16). With
      bfloat16 every activation between layers is bfloat16 (half the memory
      traffic); convolutions accumulate in float32, and parameters, BatchNorm
      statistics, the output and the loss stay float32.
    residual: add ``|zf|`` to the one-channel head and return (B, H, W), as
      the reconstruction does; False returns the head's (B, H, W, C) output.
  """
  channels: int = 32
  batch_norm: bool = True
  strategy: str = "loop"
  dtype: jnp.dtype = jnp.float32
  residual: bool = True

  @nn.compact
  def __call__(self, weights, zf, *, per_sample: bool, train: bool = False):
    """Reconstructs a batch.

    Args:
      weights: ``{name: {'kernel', 'bias'}}`` for every ``conv_specs`` entry,
        with a leading batch axis when ``per_sample`` (a convolution without
        one, shared by the whole batch, is run as one ordinary convolution).
      zf: (B, H, W, 2) zero-filled input.
      per_sample: whether every batch element has its own weights.
      train: BatchNorm uses batch statistics (and updates ``batch_stats``) when
        True, running averages when False.

    Returns:
      (B, H, W) float32 reconstruction; (B, H, W, C) head outputs without
      ``residual``.
    """
    # In evaluation mode BatchNorm is a per-channel affine map: folded into
    # the (generated) kernel and bias it costs no pass over the activations.
    fold = self.batch_norm and not train and not self.is_initializing()

    def conv_bn_relu(x, name):
      w = weights[name]
      kernel, bias = w["kernel"], w["bias"]
      if fold:
        kernel, bias = fold_batch_norm(
            kernel, bias, self.variables["params"][f"bn_{name}"],
            self.variables["batch_stats"][f"bn_{name}"])
      # The layer's name in the compiled program's metadata: a profile's
      # convolutions and fusions then say which layer they belong to.
      with jax.named_scope(name):
        x = layers.conv2d(x, kernel, bias, per_sample=per_sample and kernel.ndim == 5,
                          strategy=self.strategy, dtype=self.dtype)
        if self.batch_norm and not fold:
          x = normalization.BatchNorm(name=f"bn_{name}")(
              x, use_running_average=not train)
        return nn.relu(x)

    def block(x, prefix):
      return conv_bn_relu(conv_bn_relu(x, f"{prefix}_a"), f"{prefix}_b")

    x = zf.astype(self.dtype)
    skips = []
    for level in range(NUM_LEVELS):
      if level:
        x = resampling.max_pool2x(x)
      x = block(x, f"enc{level}")
      skips.append(x)
    skips.pop()  # the bottom level feeds the decoder directly
    for level in range(NUM_LEVELS - 1):
      x = jnp.concatenate([resampling.upsample2x(x), skips.pop()], axis=-1)
      x = block(x, f"dec{level}")
    head = weights["head"]
    with jax.named_scope("head"):
      out = layers.conv2d(x, head["kernel"], head["bias"],
                          per_sample=per_sample and head["kernel"].ndim == 5,
                          strategy=self.strategy, dtype=self.dtype)
    out = out.astype(jnp.float32)
    if not self.residual:
      return out
    return out[..., 0] + physics.magnitude(zf)


class Unet(nn.Module):
  """Plain Unet baseline: the HyperRecon topology with ordinary parameters.

  Attributes:
    channels: features at every level (32 in the paper).
    batch_norm: BatchNorm after every 3×3 convolution.
    init_scheme: ``'torch'`` (uniform ±1/√fan_in, the reference's) or ``'flax'``.
    dtype: computation and activation dtype (see `UnetBody`).
  """
  channels: int = 32
  batch_norm: bool = True
  init_scheme: str = "torch"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, zf, coeffs=None, *, train: bool = False,
               return_weights: bool = False):
    """Reconstructs a batch; the signature of `HyperUnet`, whose λ it ignores.

    Args:
      zf: (B, H, W, 2) zero-filled input.
      coeffs: ignored (a plain Unet has the one λ it was trained at); taken so
        that every model is called the same way.
      train: use and update batch statistics (pass ``mutable=['batch_stats']``).
      return_weights: also return the convolution weights (for weight-ℓ1),
        every leaf with a leading axis of size B, as `HyperUnet` gives them.

    Returns:
      (B, H, W) float32 reconstruction; with ``return_weights`` a pair
      (reconstruction, weights).
    """
    del coeffs
    check_width(channels=self.channels)
    check_input(zf)
    weights = {}
    for spec in conv_specs(self.channels):
      kinit, binit = layers.initializers(self.init_scheme, spec.size ** 2 * spec.cin)
      weights[spec.name] = {
          "kernel": self.param(f"{spec.name}_kernel", kinit, spec.kernel_shape),
          "bias": self.param(f"{spec.name}_bias", binit, (spec.cout,)),
      }
    body = UnetBody(self.channels, self.batch_norm, dtype=self.dtype,
                    name="body")
    recon = body(weights, zf, per_sample=False, train=train)
    if not return_weights:
      return recon
    return recon, broadcast_rows(weights, zf.shape[0])

  def generate(self, coeffs):
    """Its convolution weights once per row of (G, K) ``coeffs`` (it has one λ)."""
    coeffs = check_rows(coeffs)
    return broadcast_rows(conv_weights(self.variables["params"], self.channels),
                          coeffs.shape[0])

  def evaluation_weights(self, coeffs):
    """`generate`'s weights with BatchNorm folded in (`fold_weights`)."""
    coeffs = check_rows(coeffs)
    return broadcast_rows(
        fold_weights(conv_weights(self.variables["params"], self.channels), self.variables),
        coeffs.shape[0])

  def reconstruct_with(self, weights, zf):
    """Evaluation-mode reconstruction with one set of `evaluation_weights` (no row axis)."""
    check_input(zf)
    return run_folded(weights, zf, channels=self.channels, dtype=self.dtype)


def run_folded(weights, zf, *, channels: int, per_sample: bool = False,
               strategy: str = "loop", dtype=jnp.float32):
  """The Unet at evaluation-mode weights (`fold_weights`): (B, H, W) reconstruction.

  Every model's ``reconstruct_with`` is this function.

  Args:
    weights: ``{name: {'kernel', 'bias'}}`` BatchNorm folded; with
      ``per_sample`` every leaf has a leading batch axis.
    zf: (B, H, W, 2) zero-filled input.
    channels: features at every level.
    per_sample: whether each batch row has its own weights.
    strategy: 'vmap' or 'loop' (see `UnetBody`).
    dtype: activation dtype.

  Raises:
    InputError: without ``per_sample``, weights that are not one set of
      ``channels`` (still with the row axis of ``evaluation_weights``, say).
  """
  if not per_sample:
    check_one_set(weights, channels)
  body = UnetBody(channels, batch_norm=False, strategy=strategy, dtype=dtype, parent=None)
  return body.apply({}, weights, zf, per_sample=per_sample)


def check_one_set(weights, channels: int) -> None:
  """Refuses weights that are not one set of the Unet's convolutions (trace time).

  ``evaluation_weights`` gives one set per row of its coefficients, every
  leaf with a leading row axis; ``reconstruct_with`` takes one of them. Run
  with the axis left on, XLA fails on the rank of a convolution, naming no
  argument.

  Args:
    weights: ``{name: {'kernel', 'bias'}}`` for every `conv_specs` entry.
    channels: features at every level.

  Raises:
    InputError: naming the first convolution whose kernel or bias has
      another shape.
  """
  if not isinstance(weights, Mapping):
    raise errors.InputError(f"weights must be a dict {{name: {{'kernel', 'bias'}}}}, got "
                            f"{type(weights).__name__}")
  for spec in conv_specs(channels):
    w = weights.get(spec.name)
    if not isinstance(w, Mapping) or "kernel" not in w or "bias" not in w:
      raise errors.InputError(f"weights lack the kernel and bias of convolution {spec.name!r}")
    kernel, bias = tuple(np.shape(w["kernel"])), tuple(np.shape(w["bias"]))
    if kernel == spec.kernel_shape and bias == (spec.cout,):
      continue
    if kernel[1:] == spec.kernel_shape and bias[1:] == (spec.cout,):
      raise errors.InputError(
          f"weights must be one set, without the row axis: {spec.name} has kernel shape "
          f"{kernel}, with a leading axis of {kernel[0]}; take row g of evaluation_weights, "
          "jax.tree_util.tree_map(lambda w: w[g], weights)")
    raise errors.InputError(f"weights: {spec.name} must have kernel shape {spec.kernel_shape} "
                            f"and bias shape ({spec.cout},) for {channels} channels, got "
                            f"{kernel} and {bias}")


def check_rows(coeffs, num_coeffs: int | None = None):
  """Refuses ``generate``'s coefficients unless (G, K) on the simplex: one weight set per row.

  Every model's weights then have a leading row axis, which `hyperrecon_jax.grid`
  indexes; a (K,) vector would be read as K rows, or give no row axis at all.
  Concrete rows (outside ``jit``, ``grad`` and ``vmap``) must lie on the
  simplex (`hparams.check_coefficients`), as a model call's must
  (`hypernetwork.check_coeffs`); tracers are not looked at.

  Args:
    coeffs: (G, K) coefficients, an array or nested lists.
    num_coeffs: K, or None for a model that takes any K ≥ 2 (a plain Unet).

  Returns:
    ``coeffs`` as a JAX array (a tracer stays as it is).

  Raises:
    InputError: naming the shape, or the first row off the simplex.
  """
  coeffs = maps.as_array(coeffs, "coeffs")
  shape = tuple(coeffs.shape)
  k = "K" if num_coeffs is None else num_coeffs
  if len(shape) != 2 or (num_coeffs is not None and shape[1] != num_coeffs):
    raise errors.InputError(f"coeffs must have shape (G, {k}), one row per weight set, got "
                            f"shape {shape}")
  if not isinstance(coeffs, jax.core.Tracer):
    maps.check_coefficients(coeffs)
  return jnp.asarray(coeffs)


def broadcast_rows(weights, rows: int):
  """Shared weights with a leading axis of ``rows`` (every row the same)."""
  return jax.tree_util.tree_map(lambda w: jnp.broadcast_to(w, (rows,) + w.shape), weights)


def count_params(params) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
