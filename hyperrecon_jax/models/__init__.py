"""HyperRecon models: the Unet, ``HyperUnet`` and ``UnetStack``, all called one way.

Every model is a flax module with

- ``apply(variables, zf, coeffs, train=..., return_weights=..., mutable=...)``:
  reconstruct (B, H, W, 2) inputs at (K,) coefficients for the whole batch or
  (B, K), one vector per row (a plain ``Unet`` has one λ and ignores them);
- ``generate(coeffs)``: the convolution weights at each row of (G, K)
  coefficients, as training's weight-ℓ1 sees them;
- ``evaluation_weights(coeffs)``: the same with BatchNorm folded in
  (`weight_sets.fold_weights`, the one place it is folded), and
- ``reconstruct_with(weights, zf)``: the evaluation-mode reconstruction with
  one such weight set, shared by the batch.

`hyperrecon_jax.grid` runs every inference through the last two (the weights
of a λ generated once, then an ordinary Unet) or through ``apply``.
"""

from hyperrecon_jax.models.hypernetwork import HYPER_INITS
from hyperrecon_jax.models.hypernetwork import Hypernetwork
from hyperrecon_jax.models.hypernetwork import HyperUnet
from hyperrecon_jax.models.hypernetwork import conditioned_specs
from hyperrecon_jax.models.hypernetwork import unet_variables
from hyperrecon_jax.models.layers import STRATEGIES
from hyperrecon_jax.models.layers import resolve_strategy
from hyperrecon_jax.models.normalization import BATCH_NORM_EPSILON
from hyperrecon_jax.models.stack import UnetStack
from hyperrecon_jax.models.topology import conv_specs
from hyperrecon_jax.models.topology import kept_activations
from hyperrecon_jax.models.unet import Unet
from hyperrecon_jax.models.unet import UnetBody
from hyperrecon_jax.models.unet import count_params
from hyperrecon_jax.models.weight_sets import fold_batch_norm
from hyperrecon_jax.models.weight_sets import fold_weights

__all__ = [
    "BATCH_NORM_EPSILON", "HYPER_INITS", "conditioned_specs", "resolve_strategy",
    "HyperUnet", "Hypernetwork", "STRATEGIES", "Unet", "UnetBody",
    "UnetStack", "conv_specs", "count_params", "fold_batch_norm", "fold_weights",
    "kept_activations", "unet_variables",
]
