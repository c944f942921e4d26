"""The interactive λ explorer: a local web server, its JSON API and its page.

`Explorer` holds a model and a split's slices, measured as the evaluation
report measures them, and answers with plain dicts; `make_server` puts it
behind ``http.server`` (``experiments/explore.py``; the page is in
``explorer/static/``)::

  explorer = Explorer(config, model, variables, name="mni152_csmri8x_dc_tv", step=9701)
  server = make_server(explorer, "127.0.0.1", 8765)
  server.serve_forever()

API (GET, JSON unless a download): ``/api/info`` (the model, its loss terms,
the slices, the λ set); ``/api/reconstruct?slice=I&lam=a[,b,…]`` or
``…&coeffs=c1,…,cK`` (the K − 1 hyperparameters or the K loss coefficients
on the simplex; images as PNG data URLs, PSNR/SSIM/HFEN, both forms of the
point); ``/api/curve?slice=I`` (metrics over the λ set, best point per
metric, the diverse pair, the gallery of diverse good reconstructions, the
range map); ``/api/download?slice=I&(lam|coeffs)=...&format=png|npy[&kind=
recon|error|range|truth|zero_filled]``. Every error is JSON ``{"error":
"..."}``: a bad or repeated parameter 400, an unknown path 404, another
method than GET 405, an oversized request line 414.
"""

from hyperrecon_jax.explorer.grid_cache import CACHE_BYTES
from hyperrecon_jax.explorer.images import data_url
from hyperrecon_jax.explorer.images import png_bytes
from hyperrecon_jax.explorer.json_numbers import rounded
from hyperrecon_jax.explorer.lambda_set import DESIGN_SIZE
from hyperrecon_jax.explorer.request_params import KINDS
from hyperrecon_jax.explorer.request_params import BadRequest
from hyperrecon_jax.explorer.server import PAGE_DIR
from hyperrecon_jax.explorer.server import REQUEST_TIMEOUT_S
from hyperrecon_jax.explorer.server import Handler
from hyperrecon_jax.explorer.server import make_server
from hyperrecon_jax.explorer.session import ERROR_PERCENTILE
from hyperrecon_jax.explorer.session import Explorer
from hyperrecon_jax.explorer.task_info import task_text

__all__ = ["BadRequest", "CACHE_BYTES", "DESIGN_SIZE", "ERROR_PERCENTILE", "Explorer", "Handler",
           "KINDS", "PAGE_DIR", "REQUEST_TIMEOUT_S", "data_url", "make_server", "png_bytes",
           "rounded", "task_text"]
