"""``UnetStack``: the per-λ baselines, L plain Unets trained side by side as one model."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax.models import hypernetwork
from hyperrecon_jax.models import layers
from hyperrecon_jax.models import topology
from hyperrecon_jax.models import unet
from hyperrecon_jax.models import weight_sets


class UnetStack(unet.CheckedApply, nn.Module):
  """L plain Unets, one per λ vector of ``lambdas``, called like every model.

  Every variable is a `unet.Unet`'s with a leading axis of size L; the members
  are initialized independently, as separate runs would be.

  A row is reconstructed by the member whose coefficients
  (``hparams.coefficients`` of its λ) are nearest to the row's (ℓ1), so a
  stack answers for any λ with its nearest Unet and for its own λ with
  exactly that Unet. In training every member trains on the whole data
  batch with its own BatchNorm statistics, as a separate run would: the
  rows then come as L equal blocks, block l at member l's coefficients
  (``train.sample_coefficients`` lays them out so, and the train step
  repeats the data batch once per block); block l goes to member l by its
  place, whatever coefficients its rows carry.

  Attributes:
    lambdas: the λ vector of each member (L ≥ 1).
    channels: features at every level.
    batch_norm: BatchNorm after every 3×3 convolution.
    init_scheme: ``'torch'`` or ``'flax'``.
    strategy: ``'auto'``, ``'vmap'`` or ``'loop'``: in training the members
      run as one vmap or unrolled, and in evaluation rows with their own
      weights are convolved so (see `HyperUnet`). It changes speed only.
    dtype: computation and activation dtype (see `unet.UnetBody`).
  """
  lambdas: tuple
  channels: int = 32
  batch_norm: bool = True
  init_scheme: str = "torch"
  strategy: str = "auto"
  dtype: jnp.dtype = jnp.float32

  def _member(self) -> unet.Unet:
    return unet.Unet(self.channels, self.batch_norm, self.init_scheme, self.dtype, parent=None)

  @nn.compact
  def __call__(self, zf, coeffs, *, train: bool = False, return_weights: bool = False):
    """Reconstructs a batch, each row by its nearest member.

    Args:
      zf: (B, H, W, 2) zero-filled input; in training B = L·b, L blocks of b.
      coeffs: (K,) for the whole batch, or (B, K), one vector per row; concrete
        ones off the simplex are refused (`hypernetwork.check_coeffs`).
      train: train every member on its block (pass ``mutable=['batch_stats']``).
      return_weights: also return each row's member's convolution weights,
        every leaf with a leading axis of size B.

    Returns:
      (B, H, W) float32 reconstruction; with ``return_weights`` a pair.
    """
    unet.check_input(zf)
    topology.check_width(channels=self.channels)
    num = len(self.lambdas)
    if num < 1:
      raise errors.InputError("a UnetStack needs at least one λ vector.")
    if len({len(lam) for lam in self.lambdas}) > 1:
      raise errors.InputError(f"the λ vectors of a UnetStack must have one length, got "
                              f"{tuple(tuple(lam) for lam in self.lambdas)}")
    # As HyperUnet's: unchecked, a wrong shape is a broadcasting error deep in the Unet.
    coeffs = jnp.asarray(coeffs)
    hypernetwork.check_coeffs(coeffs, len(self.lambdas[0]) + 1, zf.shape[0])
    member = self._member()
    stacked = lambda init: lambda rng, *shape: jax.vmap(lambda k: init(k, *shape))(
        jax.random.split(rng, num))
    params = {}
    for spec in topology.conv_specs(self.channels):
      kinit, binit = layers.initializers(self.init_scheme, spec.size ** 2 * spec.cin)
      params[f"{spec.name}_kernel"] = self.param(f"{spec.name}_kernel", stacked(kinit),
                                                 spec.kernel_shape)
      params[f"{spec.name}_bias"] = self.param(f"{spec.name}_bias", stacked(binit),
                                               (spec.cout,))
    variables = {"params": params}
    if self.batch_norm:
      # The members' BatchNorm layers as a member initializes them.
      body = lambda k, part: member.init(k, zf[:1])[part]["body"]
      params["body"] = self.param("body", stacked(lambda k: body(k, "params")))
      stats = self.variable("batch_stats", "body", lambda: stacked(
          lambda k: body(k, "batch_stats"))(self.make_rng("params")))
      variables["batch_stats"] = {"body": stats.value}
    if train:
      recon, weights, updates = self._train(variables, zf, coeffs, return_weights)
      if self.batch_norm and not self.is_initializing():
        stats.value = updates
    else:
      index = self._nearest(coeffs)
      rows = jax.tree_util.tree_map(lambda w: w[index],
                                    self._weights(variables, folded=True))
      recon = unet.run_folded(rows, zf, channels=self.channels, per_sample=coeffs.ndim == 2,
                              strategy=layers.resolve_strategy(self.strategy),
                              dtype=self.dtype)
      if not return_weights:
        return recon
      weights = jax.tree_util.tree_map(lambda w: w[index], self._weights(variables))
      if coeffs.ndim == 1:
        weights = weight_sets.broadcast_rows(weights, zf.shape[0])
    return (recon, weights) if return_weights else recon

  def _train(self, variables, zf, coeffs, return_weights):
    """Each member on its block in training mode: (recon, weights, new statistics)."""
    num = len(self.lambdas)
    if zf.shape[0] % num or getattr(coeffs, "shape", (None,))[0] != zf.shape[0]:
      raise errors.InputError(
          f"in training a stack of {num} Unets takes {num} equal blocks of rows with (B, K) "
          f"coefficients, got zf {zf.shape} and coefficients {getattr(coeffs, 'shape', None)}.")
    blocks = zf.reshape((num, -1) + zf.shape[1:])
    member = self._member()

    def one(v, z):
      return member.apply(v, z, train=True, return_weights=return_weights,
                          mutable=["batch_stats"])

    if layers.resolve_strategy(self.strategy) == "vmap":
      out, updates = jax.vmap(one)(variables, blocks)
    else:
      # XLA's CPU convolution of a batch of weights against a batch of inputs
      # (what vmap lowers to) is far slower than L ordinary ones.
      each = [one(jax.tree_util.tree_map(lambda v, i=i: v[i], variables), blocks[i])
              for i in range(num)]
      out, updates = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *each)
    merge = lambda x: x.reshape((-1,) + x.shape[2:])
    recon, weights = out if return_weights else (out, None)
    weights = None if weights is None else jax.tree_util.tree_map(merge, weights)
    return merge(recon), weights, updates.get("batch_stats", {}).get("body")

  def _nearest(self, coeffs):
    """The member index of each coefficient row: () for (K,), (B,) for (B, K)."""
    table = hparams.coefficients(jnp.asarray(self.lambdas, jnp.float32))  # (L, K)
    if coeffs.shape[-1] != table.shape[-1]:
      raise errors.InputError(f"coeffs must have {table.shape[-1]} loss coefficients per "
                              f"row, got shape {coeffs.shape}")
    return jnp.argmin(jnp.sum(jnp.abs(coeffs[..., None, :] - table), -1), -1)

  def _weights(self, variables, *, folded: bool = False):
    """Every member's convolution weights (L, ...), BatchNorm folded when ``folded``."""
    weights = weight_sets.conv_weights(variables["params"], self.channels)
    return weight_sets.fold_weights(weights, variables) if folded else weights

  def generate(self, coeffs):
    """The convolution weights of each row's nearest member, for (G, K) ``coeffs``."""
    coeffs = weight_sets.check_rows(coeffs, len(self.lambdas[0]) + 1)
    return jax.tree_util.tree_map(lambda w: w[self._nearest(coeffs)],
                                  self._weights(self.variables))

  def evaluation_weights(self, coeffs):
    """`generate`'s weights with each member's BatchNorm folded in."""
    coeffs = weight_sets.check_rows(coeffs, len(self.lambdas[0]) + 1)
    return jax.tree_util.tree_map(lambda w: w[self._nearest(coeffs)],
                                  self._weights(self.variables, folded=True))

  def reconstruct_with(self, weights, zf):
    """Evaluation-mode reconstruction with one set of `evaluation_weights` (no row axis)."""
    unet.check_input(zf)
    return unet.run_folded(weights, zf, channels=self.channels, dtype=self.dtype)
