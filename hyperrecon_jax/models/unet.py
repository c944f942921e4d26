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

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperrecon_jax import errors
from hyperrecon_jax import physics
from hyperrecon_jax.models import layers
from hyperrecon_jax.models import normalization
from hyperrecon_jax.models import resampling
from hyperrecon_jax.models import weight_sets
from hyperrecon_jax.models.topology import IN_CHANNELS
from hyperrecon_jax.models.topology import NUM_LEVELS
from hyperrecon_jax.models.topology import check_width
from hyperrecon_jax.models.topology import conv_specs


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


class CheckedApply:
  """``apply`` of every model: variables that do not fit it are an `errors.InputError`.

  Flax's own errors (a parameter of another shape or name, an empty
  collection, BatchNorm statistics it may not update) name its scopes, not
  what to change: another model's variables, ``variables['params']`` alone,
  or ``train=True`` without ``mutable=['batch_stats']``.
  """

  def apply(self, variables, *args, **kwargs):
    try:
      return super().apply(variables, *args, **kwargs)
    except (flax.errors.ScopeParamShapeError, flax.errors.ScopeParamNotFoundError,
            flax.errors.ScopeCollectionNotFound, flax.errors.ScopeVariableNotFoundError,
            flax.errors.ModifyScopeVariableError) as e:
      name = type(self).__name__
      what = str(e).split(" (https://")[0].rstrip(".")
      if not hasattr(variables, "keys") or "params" not in variables:
        keys = sorted(variables) if hasattr(variables, "keys") else type(variables).__name__
        raise errors.InputError(
            f"variables must be the dict {name}.init returns, with 'params' (and "
            f"'batch_stats'), got {keys}: pass the whole variables, not "
            "variables['params'] alone") from None
      if isinstance(e, flax.errors.ModifyScopeVariableError):
        raise errors.InputError(
            f"{name}.apply(..., train=True) updates the BatchNorm statistics: pass "
            f"mutable=['batch_stats'] and get (output, updates) back ({what})") from None
      raise errors.InputError(
          f"variables do not fit this {name}: {what}; they belong to another model "
          "(another kind, hyper_dim, channels or number of loss terms): build the model "
          "from the variables' own config (hr.train.load_trained and "
          "hr.pretrained.load return both)") from None


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
        kernel, bias = weight_sets.fold_batch_norm(
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


class Unet(CheckedApply, nn.Module):
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
    return recon, weight_sets.broadcast_rows(weights, zf.shape[0])

  def generate(self, coeffs):
    """Its convolution weights once per row of (G, K) ``coeffs`` (it has one λ)."""
    coeffs = weight_sets.check_rows(coeffs)
    weights = weight_sets.conv_weights(self.variables["params"], self.channels)
    return weight_sets.broadcast_rows(weights, coeffs.shape[0])

  def evaluation_weights(self, coeffs):
    """`generate`'s weights with BatchNorm folded in (`weight_sets.fold_weights`)."""
    coeffs = weight_sets.check_rows(coeffs)
    weights = weight_sets.conv_weights(self.variables["params"], self.channels)
    return weight_sets.broadcast_rows(weight_sets.fold_weights(weights, self.variables),
                                      coeffs.shape[0])

  def reconstruct_with(self, weights, zf):
    """Evaluation-mode reconstruction with one set of `evaluation_weights` (no row axis)."""
    check_input(zf)
    return run_folded(weights, zf, channels=self.channels, dtype=self.dtype)


def run_folded(weights, zf, *, channels: int, per_sample: bool = False,
               strategy: str = "loop", dtype=jnp.float32):
  """The Unet at evaluation-mode weights (`weight_sets.fold_weights`): (B, H, W) images.

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
    weight_sets.check_one_set(weights, channels)
  body = UnetBody(channels, batch_norm=False, strategy=strategy, dtype=dtype, parent=None)
  return body.apply({}, weights, zf, per_sample=per_sample)


def count_params(params) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
