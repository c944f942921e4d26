"""HyperRecon models: the functional Unet, the hypernetwork and ``HyperUnet``."""

from hyperrecon_jax.models.hypernetwork import HYPER_INITS
from hyperrecon_jax.models.hypernetwork import Hypernetwork
from hyperrecon_jax.models.hypernetwork import HyperUnet
from hyperrecon_jax.models.hypernetwork import conditioned_specs
from hyperrecon_jax.models.hypernetwork import unet_variables
from hyperrecon_jax.models.layers import BATCH_NORM_EPSILON
from hyperrecon_jax.models.layers import STRATEGIES
from hyperrecon_jax.models.layers import resolve_strategy
from hyperrecon_jax.models.unet import Unet
from hyperrecon_jax.models.unet import UnetBody
from hyperrecon_jax.models.unet import conv_specs
from hyperrecon_jax.models.unet import count_params
from hyperrecon_jax.models.unet import fold_batch_norm

__all__ = [
    "BATCH_NORM_EPSILON", "HYPER_INITS", "conditioned_specs", "resolve_strategy",
    "HyperUnet", "Hypernetwork", "STRATEGIES", "Unet", "UnetBody",
    "conv_specs", "count_params", "fold_batch_norm", "unet_variables",
]
