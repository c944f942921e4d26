"""Hyperparameter sampling during training: UHS and DHS.

* UHS (uniform hyperparameter sampling): every batch element draws its own λ
  uniformly and contributes to the gradient.
* DHS (data-driven hyperparameter sampling, the paper's §3.3): of a batch of B
  elements with their own λ, only the ``top_b`` with the *lowest data-consistency
  loss* contribute; the gradient is that of their mean total loss. The selection
  is made from a gradient-free forward pass, so discarded samples never cost a
  backward pass (see ``train.step``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors

METHODS = ("uhs", "dhs")
# DHS's BatchNorm batch: the kept rows, or the whole batch (the authors' code).
NORMALIZE = ("kept", "batch")


def check_method(method: str, top_b: int, batch_size: int, loss_names):
  """Validates a sampling configuration.

  Args:
    method: ``'uhs'`` or ``'dhs'``.
    top_b: b, the number of samples DHS keeps.
    batch_size: B.
    loss_names: the configured loss terms; DHS needs ``'dc'`` among them.

  Raises:
    ValueError: naming the offending setting.
  """
  if method not in METHODS:
    raise errors.InputError(f"sampling.method must be one of {METHODS}, got "
                            f"{method!r}")
  if method == "dhs":
    if "dc" not in tuple(loss_names):
      raise errors.InputError(
          "sampling.method='dhs' ranks samples by their data-consistency loss, "
          f"but config.losses={tuple(loss_names)} has no 'dc' term; add 'dc' "
          "or use sampling.method='uhs'")
    # True would be taken as 1 (bool is an int).
    if isinstance(top_b, bool) or not isinstance(top_b, (int, np.integer)) \
        or not 1 <= top_b <= batch_size:
      raise errors.InputError(f"sampling.top_b must be an integer in [1, batch_size="
                              f"{batch_size}], got {top_b!r}")


def select_lowest(values, b: int):
  """Indices of the ``b`` smallest entries of ``values`` (ties: lower index).

  Args:
    values: (B,) per-sample data-consistency losses.
    b: how many to keep.

  Returns:
    (b,) int32 indices, in increasing order of value.
  """
  shape = tuple(getattr(values, "shape", ()))
  if len(shape) != 1 or not 1 <= b <= shape[0]:
    raise errors.InputError(f"select_lowest keeps 1 to B of (B,) values, asked for {b} of "
                            f"values of shape {shape}.")
  # One sort by three keys: NaN or not (a NaN is no loss: last, after +inf),
  # the value, the index. Float keys are ordered totally (a NaN whose sign bit
  # is set, XLA's inf − inf, before every number; −0.0 before +0.0), so NaNs
  # and zeros are made plain first. Integer indices carry no gradient: the
  # ranking needs no stop_gradient.
  nan = jnp.isnan(values)
  plain = jnp.where(nan, jnp.inf, jnp.where(values == 0, 0.0, values))
  index = jax.lax.broadcasted_iota(jnp.int32, plain.shape, 0)
  _, _, order = jax.lax.sort((nan.astype(jnp.int32), plain, index), num_keys=3)
  return order[:b]


def take(tree, idx):
  """Gathers rows ``idx`` of every leaf of a batch-first pytree."""
  return jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), tree)
