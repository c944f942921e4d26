"""Hyperparameters λ ∈ [0, 1]^(K−1) and the K loss coefficients they stand for.

The hypernetwork's input is the coefficient vector, not λ (as in the reference).
`coefficients` maps λ to it (paper Eq. 9 for K = 2, Eq. 10 and its
stick-breaking extension for K ≥ 3) and `lambdas_from_coefficients` back;
`weighting` says which λ weight the loss alike and `distinct` keeps one of
each (`maps`). Training draws λ (`sample`) on the cube or, through the
inverse map, on the simplex ('dirichlet', 'faces'; `samplers`). Evaluation
uses a `grid` for K ≤ 3 and a design on the simplex beyond
(`simplex_design`, `das_dennis`; `designs`). Command lines give λ (`parse_lambdas`) or coefficients
(`parse_coefficients`; `flags`), each number in decimal (`parse_number`).
"""

from hyperrecon_jax.hparams.designs import das_dennis
from hyperrecon_jax.hparams.designs import grid
from hyperrecon_jax.hparams.designs import simplex_design
from hyperrecon_jax.hparams.flags import parse_coefficients
from hyperrecon_jax.hparams.flags import parse_lambdas
from hyperrecon_jax.hparams.flags import parse_number
from hyperrecon_jax.hparams.maps import SUM_TOLERANCE
from hyperrecon_jax.hparams.maps import check_coefficients
from hyperrecon_jax.hparams.maps import check_lambda
from hyperrecon_jax.hparams.maps import coefficients
from hyperrecon_jax.hparams.maps import distinct
from hyperrecon_jax.hparams.maps import lambdas_from_coefficients
from hyperrecon_jax.hparams.maps import weighting
from hyperrecon_jax.hparams.samplers import SAMPLERS
from hyperrecon_jax.hparams.samplers import SIMPLEX_SAMPLERS
from hyperrecon_jax.hparams.samplers import sample
from hyperrecon_jax.hparams.samplers import sample_coefficients

__all__ = [
    "SAMPLERS", "SIMPLEX_SAMPLERS", "SUM_TOLERANCE", "check_coefficients", "check_lambda",
    "coefficients", "das_dennis", "distinct", "grid", "lambdas_from_coefficients",
    "parse_coefficients", "parse_lambdas", "parse_number", "sample", "sample_coefficients",
    "simplex_design", "weighting",
]
