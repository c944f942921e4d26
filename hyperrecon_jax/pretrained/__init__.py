"""Models trained by this project and shipped inside the package.

Use one without training::

  import hyperrecon_jax as hr
  hr.pretrained.names()   # ['mni152_csmri8x_dc_tv', 'mni152_csmri8x_dc_tv_256']
  config, model, variables, step = hr.pretrained.load("mni152_csmri8x_dc_tv_256")
  recon = model.apply(variables, zf, coeffs)

or, in a checkout of the repository, ``python experiments/evaluate.py
--pretrained=NAME --out=DIR`` (``hr.report.run(pretrained=NAME, out=DIR)``
from an installed wheel).

Each model is a folder of this package: ``config.json`` (the config it was
trained with), ``weights.msgpack`` (its variables, the parameters in float16
to stay small, BatchNorm statistics in float32) and ``info.json`` (how it was
trained, its test metrics, the SHA-256 of the weights, ``sha256``, and of
the config, ``config_sha256``, and of its own content, ``info_sha256``).
Every load checks the three digests, since the
config defines the model as much as the weights do, and then the shape of
every stored variable against the model the config builds. `export` writes
such a folder from a training workdir. ``info.json``'s ``check`` holds the
per-slice scores of the exported model on its first test slices
(`check_scores`), so that any machine can confirm that the model it loads
reconstructs as it did where it was trained.

Loading is in `loading`, exporting in `writing`; both are read from here.
"""

from hyperrecon_jax.pretrained.loading import CONFIG_FILE
from hyperrecon_jax.pretrained.loading import FOLDER
from hyperrecon_jax.pretrained.loading import FORMAT
from hyperrecon_jax.pretrained.loading import INFO_DIGEST
from hyperrecon_jax.pretrained.loading import INFO_FILE
from hyperrecon_jax.pretrained.loading import WEIGHTS_FILE
from hyperrecon_jax.pretrained.loading import info
from hyperrecon_jax.pretrained.loading import load
from hyperrecon_jax.pretrained.loading import names
from hyperrecon_jax.pretrained.writing import CHECK_METRICS
from hyperrecon_jax.pretrained.writing import CHECK_SLICES
from hyperrecon_jax.pretrained.writing import MAX_NAME
from hyperrecon_jax.pretrained.writing import check_finite_reconstructions
from hyperrecon_jax.pretrained.writing import check_lambdas
from hyperrecon_jax.pretrained.writing import check_new_name
from hyperrecon_jax.pretrained.writing import check_scores
from hyperrecon_jax.pretrained.writing import export
from hyperrecon_jax.pretrained.writing import scores_line
from hyperrecon_jax.pretrained.writing import summary
from hyperrecon_jax.pretrained.writing import write_info

__all__ = [
    "CHECK_METRICS", "CHECK_SLICES", "CONFIG_FILE", "FOLDER", "FORMAT", "INFO_DIGEST",
    "INFO_FILE", "MAX_NAME", "WEIGHTS_FILE", "check_finite_reconstructions", "check_lambdas",
    "check_new_name", "check_scores", "export", "info", "load", "names", "scores_line",
    "summary", "write_info",
]
