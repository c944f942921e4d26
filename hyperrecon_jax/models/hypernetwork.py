"""The hypernetwork and ``HyperUnet``: loss coefficients → Unet weights → reconstruction."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.hparams import maps
from hyperrecon_jax.models import layers
from hyperrecon_jax.models import topology
from hyperrecon_jax.models import unet
from hyperrecon_jax.models import weight_sets

NUM_HIDDEN = 4  # fully connected layers before the per-convolution projections


HYPER_INITS = ("reference", "offset")


def conditioned_specs(channels: int, conditioned: str) -> tuple:
  """The Unet convolutions whose weights the hypernetwork generates.

  Args:
    channels: Unet features at every level.
    conditioned: ``'all'`` (the paper's) or comma-separated prefixes of
      convolution names (``topology.conv_specs``), e.g. ``'dec,head'`` for the
      decoder and the head.

  Returns:
    The ``ConvSpec`` of the conditioned convolutions, in execution order.

  Raises:
    InputError: a prefix that names no convolution, or none given.
  """
  specs = topology.conv_specs(channels)
  if conditioned == "all":
    return specs
  prefixes = tuple(p.strip() for p in str(conditioned).split(",") if p.strip())
  names = tuple(spec.name for spec in specs)
  for prefix in prefixes:
    if not any(name.startswith(prefix) for name in names):
      raise errors.InputError(f"conditioned: {prefix!r} is the prefix of no Unet "
                              f"convolution; they are {names}")
  if not prefixes:
    raise errors.InputError("conditioned must be 'all' or name at least one Unet "
                            f"convolution by prefix, got {conditioned!r}")
  return tuple(spec for spec in specs if spec.name.startswith(prefixes))


def _offset_bias_init(kernel_init, shape):
  """The initializer of a flattened (k·k·in·out,) vector drawn as a ``shape`` kernel."""

  def init(key, flat_shape, dtype=jnp.float32):
    return kernel_init(key, shape, dtype).reshape(flat_shape)

  return init


class Hypernetwork(nn.Module):
  """Maps a loss-coefficient vector to the weights of the Unet's convolutions.

  ``K → d → d → d → d`` fully connected layers, LeakyReLU(0.01) after each (the
  last included), then for every conditioned convolution one linear map
  ``d → k·k·in·out`` (its kernel) and one ``d → out`` (its bias), each
  ``W(λ) = A·h(λ) + b``.

  Attributes:
    hyper_dim: width d (4, 32, 128 for HyperRecon-S, -M, -L).
    channels: Unet features at every level.
    init_scheme: ``'torch'`` or ``'flax'``, see ``layers.initializers``.
    hyper_init: how the projections start. ``'reference'``: A and b drawn as
      the reference draws them (``init_scheme`` with fan-in d). ``'offset'``:
      A = 0 and b drawn as a plain Unet's convolution, so every λ starts as
      the same Unet and ``A·h(λ)`` is a λ-dependent offset to shared weights
      ``b`` learned from there.
    conditioned: which convolutions are generated (``conditioned_specs``).
  """
  hyper_dim: int = 128
  channels: int = 32
  init_scheme: str = "torch"
  hyper_init: str = "reference"
  conditioned: str = "all"

  @nn.compact
  def __call__(self, coeffs):
    """Generates one weight set per row of ``coeffs``.

    Args:
      coeffs: (B, K) loss coefficients.

    Returns:
      ``{name: {'kernel': (B, k, k, in, out), 'bias': (B, out)}}`` for every
      conditioned convolution.
    """
    if self.hyper_init not in HYPER_INITS:
      raise errors.InputError(f"hyper_init must be one of {HYPER_INITS}, got "
                              f"{self.hyper_init!r}")
    h = coeffs.astype(jnp.float32)
    for i in range(NUM_HIDDEN):
      kinit, binit = layers.initializers(self.init_scheme, h.shape[-1])
      h = nn.Dense(self.hyper_dim, kernel_init=kinit, bias_init=binit,
                   name=f"dense{i}")(h)
      h = nn.leaky_relu(h, negative_slope=0.01)
    weights = {}
    reference = layers.initializers(self.init_scheme, self.hyper_dim)
    for spec in conditioned_specs(self.channels, self.conditioned):
      if self.hyper_init == "reference":
        inits = (reference, reference)
      else:
        conv_k, conv_b = layers.initializers(self.init_scheme,
                                             spec.size ** 2 * spec.cin)
        zeros = jax.nn.initializers.zeros
        inits = ((zeros, _offset_bias_init(conv_k, spec.kernel_shape)),
                 (zeros, conv_b))
      kernel = nn.Dense(int(np.prod(spec.kernel_shape)), kernel_init=inits[0][0],
                        bias_init=inits[0][1], name=f"{spec.name}_kernel")(h)
      bias = nn.Dense(spec.cout, kernel_init=inits[1][0], bias_init=inits[1][1],
                      name=f"{spec.name}_bias")(h)
      weights[spec.name] = {
          "kernel": kernel.reshape(h.shape[:-1] + spec.kernel_shape),
          "bias": bias,
      }
    return weights


def check_coeffs(coeffs, num_coeffs: int, batch: int):
  """Checks a model call's coefficients: (K,) for the whole batch, or (B, K) per row.

  The shapes are checked at trace time. Concrete values (outside ``jit``,
  ``grad`` and ``vmap``) must also lie on the simplex
  (`hparams.check_coefficients`): off it (raw loss weights, NaN) a model
  extrapolates and a stack picks a member, without a word. Tracers are not
  looked at, so a compiled training step pays nothing.

  Raises:
    InputError: naming the shape, or the first row off the simplex.
  """
  shape = getattr(coeffs, "shape", None)
  if shape is None or len(shape) not in (1, 2):
    raise errors.InputError(f"coeffs must have shape ({num_coeffs},) or (B, {num_coeffs}), "
                            f"got shape {shape}")
  if shape[-1] != num_coeffs:
    raise errors.InputError(f"coeffs must have {num_coeffs} loss coefficients per row "
                            f"(num_coeffs={num_coeffs}), got shape {shape}")
  if len(shape) == 2 and shape[0] != batch:
    raise errors.InputError(f"coeffs has {shape[0]} rows but zf has batch size {batch}")
  if not isinstance(coeffs, jax.core.Tracer):
    maps.check_coefficients(np.reshape(np.asarray(coeffs), (-1, num_coeffs)))


class HyperUnet(unet.CheckedApply, nn.Module):
  """HyperRecon: a Unet whose convolution weights are generated from λ.

  Every batch element gets the weights generated from its own coefficient
  vector. BatchNorm scales and biases are ordinary parameters shared across λ,
  as are the convolutions that ``conditioned`` leaves out.

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
    hyper_init: ``'reference'`` or ``'offset'``, see `Hypernetwork`.
    conditioned: ``'all'`` (the paper's) or the comma-separated prefixes of
      the convolutions generated from λ (``conditioned_specs``); the others are
      ordinary parameters, initialized as a plain Unet's.
  """
  hyper_dim: int = 128
  num_coeffs: int = 2
  channels: int = 32
  batch_norm: bool = True
  init_scheme: str = "torch"
  strategy: str = "auto"
  dtype: jnp.dtype = jnp.float32
  hyper_init: str = "reference"
  conditioned: str = "all"

  def setup(self):
    if isinstance(self.num_coeffs, (int, np.integer)) and self.num_coeffs < 2:
      raise errors.InputError(f"num_coeffs must be ≥ 2, got {self.num_coeffs}")
    topology.check_width(num_coeffs=self.num_coeffs, hyper_dim=self.hyper_dim,
                         channels=self.channels)
    self.hypernetwork = Hypernetwork(self.hyper_dim, self.channels,
                                     self.init_scheme, self.hyper_init,
                                     self.conditioned)
    generated = {s.name for s in conditioned_specs(self.channels, self.conditioned)}
    shared = {}
    for spec in topology.conv_specs(self.channels):
      if spec.name in generated:
        continue
      kinit, binit = layers.initializers(self.init_scheme, spec.size ** 2 * spec.cin)
      shared[spec.name] = {
          "kernel": self.param(f"{spec.name}_kernel", kinit, spec.kernel_shape),
          "bias": self.param(f"{spec.name}_bias", binit, (spec.cout,)),
      }
    self.shared = shared
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
        per element; concrete ones off the simplex are refused (`check_coeffs`).
      train: use and update batch statistics (pass ``mutable=['batch_stats']``).
      return_weights: also return the generated weights (for weight-ℓ1).

    Returns:
      (B, H, W) float32 reconstruction; with ``return_weights`` a pair
      (reconstruction, weights) where every weight leaf has a leading axis of
      size B, the one weight set repeated for (K,) coefficients, as every
      model gives them (a term of the weights gives one value per row).
    """
    unet.check_input(zf)
    coeffs = jnp.asarray(coeffs)  # a list, as the other models take
    check_coeffs(coeffs, self.num_coeffs, zf.shape[0])
    rows = coeffs[None] if coeffs.ndim == 1 else coeffs
    generated = self.hypernetwork(rows)
    if coeffs.ndim == 1:
      recon = self.body({**jax.tree_util.tree_map(lambda w: w[0], generated),
                         **self.shared}, zf, per_sample=False, train=train)
    else:
      # Shared convolutions keep one weight set: the body runs them as
      # ordinary convolutions of the whole batch.
      recon = self.body({**generated, **self.shared}, zf, per_sample=True,
                        train=train)
    if not return_weights:
      return recon
    rows = zf.shape[0]
    generated = jax.tree_util.tree_map(
        lambda w: jnp.broadcast_to(w, (rows,) + w.shape[1:]), generated)
    return recon, self._with_shared(generated, rows)

  def _with_shared(self, generated, rows: int):
    """Generated weights plus the shared ones, each with a leading axis of ``rows``."""
    shared = jax.tree_util.tree_map(
        lambda w: jnp.broadcast_to(w, (rows,) + w.shape), dict(self.shared))
    return {**generated, **shared}

  def generate(self, coeffs):
    """The convolution weights at each row of (G, K) ``coeffs``, shared ones included.

    These are the weights training's weight-ℓ1 sees: generated, BatchNorm
    not folded. Lists are taken as arrays; concrete rows must lie on the
    simplex (`weight_sets.check_rows`).
    """
    coeffs = weight_sets.check_rows(coeffs, self.num_coeffs)
    return self._with_shared(self.hypernetwork(coeffs), coeffs.shape[0])

  def evaluation_weights(self, coeffs):
    """`generate`'s weights with the shared BatchNorm folded in (`weight_sets.fold_weights`).

    ``reconstruct_with(tree_map(lambda w: w[g], evaluation_weights(c)), zf)``
    is ``__call__(zf, c[g])`` in evaluation mode: callers that run many
    batches at one λ, or many λ, generate the weights once
    (`hyperrecon_jax.grid`'s λ-major grid).
    """
    return weight_sets.fold_weights(self.generate(coeffs), self.variables)

  def reconstruct_with(self, weights, zf):
    """Evaluation-mode reconstruction of a batch with one set of `evaluation_weights`.

    Args:
      weights: ``{name: {'kernel', 'bias'}}`` of one λ, no leading axis.
      zf: (B, H, W, 2) zero-filled input.

    Returns:
      (B, H, W) float32 reconstruction.
    """
    unet.check_input(zf)
    return unet.run_folded(weights, zf, channels=self.channels, dtype=self.dtype)


def unet_variables(net: HyperUnet, variables, coeffs):
  """Variables of a plain ``Unet`` equal to ``net`` at one coefficient vector.

  Exports a fixed-λ model: the generated weights become ordinary parameters and
  the shared BatchNorm parameters and statistics are copied.

  Args:
    net: the ``HyperUnet`` module.
    variables: its variables (``params`` and, with BatchNorm, ``batch_stats``).
    coeffs: (K,) or (1, K) loss coefficients on the simplex.

  Returns:
    Variables for ``Unet(channels=net.channels, batch_norm=net.batch_norm)``.

  Raises:
    InputError: coefficients of another shape, or concrete ones off the
      simplex (`hparams.check_coefficients`).
  """
  coeffs = maps.as_array(coeffs, "coeffs")
  k = net.num_coeffs
  if tuple(coeffs.shape) not in ((k,), (1, k)):
    raise errors.InputError(f"coeffs must have shape ({k},) or (1, {k}), one coefficient "
                            f"vector, got shape {tuple(coeffs.shape)}")
  coeffs = jnp.reshape(jnp.asarray(coeffs, jnp.float32), (1, k))
  weights = net.apply(variables, coeffs, method=HyperUnet.generate)
  # The shared BatchNorm parameters; a Unet without BatchNorm has no "body".
  shared = variables["params"]
  params = {"body": shared["body"]} if "body" in shared else {}
  for name, w in weights.items():  # the shared convolutions included
    params[f"{name}_kernel"] = w["kernel"][0]
    params[f"{name}_bias"] = w["bias"][0]
  out = {"params": params}
  if "batch_stats" in variables:
    out["batch_stats"] = variables["batch_stats"]
  return out
