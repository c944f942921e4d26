"""The interactive λ explorer: a local web server, its JSON API and its page.

`Explorer` holds a model and a split's slices, measured as the evaluation
report measures them, and answers with plain dicts; `make_server` puts it
behind ``http.server`` (``experiments/explore.py``; the page is in
``explorer/static/``)::

  explorer = Explorer(config, model, variables, name="mni152_csmri8x_dc_tv", step=9701)
  server = make_server(explorer, "127.0.0.1", 8765)
  server.serve_forever()

API (GET, JSON unless a download): ``/api/info``; ``/api/reconstruct?slice=I&
lam=a[,b]`` (images as PNG data URLs, PSNR/SSIM/HFEN); ``/api/curve?slice=I``
(metrics over the λ grid, the diverse pair, best λ per metric, the range
map); ``/api/download?slice=I&lam=...&format=png|npy[&kind=recon|error|
range|truth|zero_filled]``. A bad parameter is HTTP 400 with ``{"error": "..."}``,
an unknown path 404.
"""

from hyperrecon_jax.explorer.images import data_url
from hyperrecon_jax.explorer.images import png_bytes
from hyperrecon_jax.explorer.server import PAGE_DIR
from hyperrecon_jax.explorer.server import Handler
from hyperrecon_jax.explorer.server import make_server
from hyperrecon_jax.explorer.session import CACHE_BYTES
from hyperrecon_jax.explorer.session import ERROR_RANGE
from hyperrecon_jax.explorer.session import KINDS
from hyperrecon_jax.explorer.session import BadRequest
from hyperrecon_jax.explorer.session import Explorer
from hyperrecon_jax.explorer.session import task_text

__all__ = ["BadRequest", "CACHE_BYTES", "ERROR_RANGE", "Explorer", "Handler", "KINDS",
           "PAGE_DIR", "data_url", "make_server", "png_bytes", "task_text"]
