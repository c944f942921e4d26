"""Weight sets of the Unet's convolutions, ``{name: {'kernel', 'bias'}}``.

Taken from a plain Unet's parameters (`conv_weights`), with BatchNorm folded
in for evaluation (`fold_weights`), one per row of coefficients
(`check_rows`, `broadcast_rows`), and checked as one set before a run
(`check_one_set`). `hyperrecon_jax.grid` runs every model through them.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.hparams import maps
from hyperrecon_jax.models import normalization
from hyperrecon_jax.models.topology import conv_specs


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
  by `hyperrecon_jax.models.unet.run_folded`.

  Args:
    weights: ``{name: {'kernel', 'bias'}}``, any leading axes.
    variables: the model's variables; its BatchNorm layers are
      ``params['body']['bn_<name>']`` with statistics
      ``batch_stats['body']['bn_<name>']`` (the same leading axes, or none).
      Without them the weights pass unchanged (cast to float32).

  Returns:
    ``{name: {'kernel', 'bias'}}`` float32, for a `UnetBody` without BatchNorm.
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
