"""What the explorer's tests share: a served explorer, HTTP helpers, a PNG decoder,
and an untrained tiny explorer of any loss terms (the K = 4 one built once per process,
for tests/test_explorer_many_terms.py and tests/test_explorer_browser.py).
"""

import functools
import io
import json
import struct
import threading
import urllib.error
import urllib.request
import zlib

import configs
import jax
import numpy as np

from hyperrecon_jax import explorer
from hyperrecon_jax import train

# The same float32 computation in another order (jit fusion, shared weights vs.
# the grid's per-row weights): each output pixel of the tiny Unet (values O(1))
# is a chain of ~10 convolutions of ≤ 3·3·8 = 72 products; with unit roundoff
# u = 2^-24 the worst-case bound is ~10·72·u ≈ 4e-5 (what we see is ~1e-6).
ATOL = 4e-5
# The test servers' socket timeout: short, so that the stalled-client test
# waits little; the default (explorer.REQUEST_TIMEOUT_S) is checked on its own.
TIMEOUT_S = 1.0


def serve(ex):
  """(url, server) of ``ex`` on a free port, served by a daemon thread."""
  srv = explorer.make_server(ex, "127.0.0.1", 0, timeout=TIMEOUT_S)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  return f"http://127.0.0.1:{srv.server_address[1]}", srv


def get(url, timeout=120):
  """(status, body bytes, content type) of a GET, errors included."""
  try:
    with urllib.request.urlopen(url, timeout=timeout) as r:
      return r.status, r.read(), r.headers["Content-Type"]
  except urllib.error.HTTPError as e:
    return e.code, e.read(), e.headers["Content-Type"]


def get_json(url, timeout=120):
  status, body, content_type = get(url, timeout)
  assert content_type == "application/json", (status, body[:300])
  return status, json.loads(body)


def npy(url):
  status, body, _ = get(url)
  assert status == 200, body[:300]
  return np.load(io.BytesIO(body))


def decode_png(data):
  """A grayscale 8-bit PNG (filter 0, as explorer.png_bytes writes) → (H, W) uint8."""
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  pos, idat, header = 8, b"", None
  while pos < len(data):
    (length,), tag = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
    body = data[pos + 8:pos + 8 + length]
    assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(
        tag + body)
    if tag == b"IHDR":
      header = struct.unpack(">IIBBBBB", body)
    elif tag == b"IDAT":
      idat += body
    pos += 12 + length
  w, h, depth, colour = header[:4]
  assert (depth, colour) == (8, 0)
  rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, w + 1)
  assert np.all(rows[:, 0] == 0)
  return rows[:, 1:]


def tiny_explorer(losses, **kwargs):
  """An untrained HyperRecon of ``losses`` on two smooth random 32×32 images.

  Its variables are drawn on the shapes from ``eval_shape`` (compiling
  ``init`` takes ~15 s on 2 cores); BatchNorm statistics stay positive. The
  hypernetwork's projections have no bias and large kernels, so the
  generated weights, and the images, depend on the coefficients (PSNR spans
  ~9 dB over the simplex).
  """
  config = configs.default()
  config.data.image_size = 32
  config.losses = tuple(losses)
  config.loss_scales = (1.0,) * len(losses)
  config.model.update(hyper_dim=4, channels=4, strategy="vmap")
  config.eval.grid = 4
  train.check_config(config)
  model = train.build_model(config)
  shapes = jax.eval_shape(lambda: train.create_state(config, model, jax.random.key(0))
                          .variables())
  rng = np.random.default_rng(0)

  def draw(path, x):
    keys = [p.key for p in path]
    if keys[-1] == "var":
      return rng.uniform(0.5, 2.0, x.shape).astype(np.float32)
    if "hypernetwork" in keys and not keys[-2].startswith("dense"):
      return (rng.uniform(-1.0, 1.0, x.shape) * (keys[-1] == "kernel")).astype(np.float32)
    scale = 1.5 if keys[-2].startswith("dense") else 0.3
    return rng.uniform(-scale, scale, x.shape).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  images = scipy_smooth(rng.random((2, 32, 32)))
  return explorer.Explorer(config, model, variables, name="tiny", step=0, images=images,
                           **kwargs)


def scipy_smooth(noise):
  """(S, H, W) noise blurred and scaled to [0, 1]: an image with structure."""
  import scipy.ndimage
  images = scipy.ndimage.gaussian_filter(noise, (0, 2, 2))
  return ((images - images.min()) / np.ptp(images)).astype(np.float32)


FOUR_TERMS = ("dc", "tv", "weight_l1", "mse")
FOUR_DESIGN = 16  # points of the K = 4 explorer's design: 4 vertices, 12 Sobol points


@functools.cache
def four_term_explorer():
  """The K = 4 explorer, built once per process."""
  # Its PSNR spans ~9 dB over the design: 2 dB leave 6 candidates for 4 pictures.
  return tiny_explorer(FOUR_TERMS, design=FOUR_DESIGN, gallery_tolerance_db=2.0)
