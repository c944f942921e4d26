"""A trained stack of per-λ Unets as one model of the λ-grid convention.

`grid_model` gives a `state.UnetStack` the ``apply_fn(variables, zf, coeffs)``
of `hyperrecon_jax.grid`, so the stack is scored by the same engine as a
HyperRecon model: in training-time validation (`loop`) and in the evaluation
report's overlay of the per-λ Unets (`hyperrecon_jax.report`). It lives apart
from `baselines`, which trains stacks through `loop`, so that `loop` need not
import the module that imports it.
"""

import functools

import jax
import jax.numpy as jnp

from hyperrecon_jax import hparams
from hyperrecon_jax import models


def _folded_weights(variables, channels: int):
  """A plain Unet's weights in evaluation mode, BatchNorm folded into its
  convolutions (`models.fold_batch_norm`): ``{name: {'kernel', 'bias'}}`` for
  ``models.UnetBody(batch_norm=False)``."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  out = {}
  for spec in models.conv_specs(channels):
    kernel, bias = params[f"{spec.name}_kernel"], params[f"{spec.name}_bias"]
    bn = f"bn_{spec.name}"
    if stats and bn in stats.get("body", {}):
      kernel, bias = models.fold_batch_norm(kernel, bias, params["body"][bn],
                                            stats["body"][bn])
    out[spec.name] = {"kernel": kernel, "bias": bias}
  return out


@functools.cache
def _table_apply(channels: int, strategy: str, dtype):
  """``apply(variables, zf, coeffs)`` of a λ → Unet table (one per setting).

  Cached: the function is a static argument of the grid program.
  """
  body = models.UnetBody(channels, batch_norm=False, strategy=strategy,
                         dtype=dtype)

  def apply(variables, zf, coeffs):
    table = variables["coeffs"]  # (L, K)
    # (B, K): each row its nearest Unet; (K,): one Unet for the whole batch.
    index = jnp.argmin(jnp.sum(jnp.abs(coeffs[..., None, :] - table), -1), -1)
    weights = jax.tree_util.tree_map(lambda w: w[index], variables["weights"])
    return body.apply({}, weights, zf, per_sample=coeffs.ndim == 2)

  return apply


def grid_model(model, variables):
  """A trained stack as a model of `evaluate.evaluate_grid`'s convention.

  Each (slice, coefficients) row is reconstructed by the stack's Unet whose
  coefficients are nearest, in evaluation mode (BatchNorm folded, see
  `models.fold_batch_norm`), so a grid over the stack's own λ scores every baseline
  on the same slices and noise as the HyperRecon grid.

  Args:
    model: a `state.UnetStack`, e.g. from ``load_trained``.
    variables: its (stacked) variables.

  Returns:
    ``(apply_fn, grid_variables)``.
  """
  unet = model.unet
  weights = jax.vmap(lambda v: _folded_weights(v, unet.channels))(variables)
  coeffs = hparams.coefficients(jnp.asarray(model.lambdas, jnp.float32))
  strategy = models.resolve_strategy(model.strategy)
  apply_fn = _table_apply(unet.channels, strategy, unet.dtype)
  return apply_fn, {"weights": weights, "coeffs": coeffs}
