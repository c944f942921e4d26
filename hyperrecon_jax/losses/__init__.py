"""Per-example loss terms and their weighted composition.

Every term maps a batch to a (B,) vector, never a scalar: DHS ranks samples by
their own data-consistency loss and the training loss weights each sample by
its own λ. The training objective of one sample is

  ``L = sum_k c_k * L_k / s_k``

with loss coefficients ``c`` (from λ, see `hyperrecon_jax.hparams`) and scales
``s_k`` (a typical value of term k, so that ``alpha_k = 1 / s_k`` puts the
terms on a common footing); see `composite`.

Supervised terms ('mae', 'mse', 'ssim', 'hfen') compare the reconstruction
with the ground truth; amortized-optimization terms use the measurement ('dc'),
the generated weights ('weight_l1') or the reconstruction alone ('tv' and
'wavelet', the ℓ1 norm of its detail wavelet coefficients).

The formulas are in `formulas`, the terms by name and their composition in
`registry`; both are read from here, as ``hr.losses.<name>``.
"""

from hyperrecon_jax.losses.formulas import data_consistency
from hyperrecon_jax.losses.formulas import dssim
from hyperrecon_jax.losses.formulas import hfen
from hyperrecon_jax.losses.formulas import mae
from hyperrecon_jax.losses.formulas import mse
from hyperrecon_jax.losses.formulas import total_variation
from hyperrecon_jax.losses.formulas import wavelet_l1
from hyperrecon_jax.losses.formulas import weight_l1
from hyperrecon_jax.losses.registry import BUILT_IN
from hyperrecon_jax.losses.registry import NEEDS
from hyperrecon_jax.losses.registry import NEEDS_MEASUREMENT
from hyperrecon_jax.losses.registry import NEEDS_TARGET
from hyperrecon_jax.losses.registry import NEEDS_WEIGHTS
from hyperrecon_jax.losses.registry import TERMS
from hyperrecon_jax.losses.registry import call_term
from hyperrecon_jax.losses.registry import check_names
from hyperrecon_jax.losses.registry import composite
from hyperrecon_jax.losses.registry import compute_terms
from hyperrecon_jax.losses.registry import needs_of
from hyperrecon_jax.losses.registry import register_term

__all__ = [
    "BUILT_IN", "NEEDS", "NEEDS_MEASUREMENT", "NEEDS_TARGET", "NEEDS_WEIGHTS", "TERMS",
    "call_term", "check_names", "composite", "compute_terms", "data_consistency", "dssim",
    "hfen", "mae", "mse", "needs_of", "register_term", "total_variation", "wavelet_l1",
    "weight_l1",
]
