"""The explorer's HTTP server and request handling without a model (hyperrecon_jax.explorer.server,
hyperrecon_jax.explorer.session).

`NoModel` is an `Explorer` whose model calls are stand-ins, so the parsing,
routing and error answers run in milliseconds; tests/test_explorer.py checks
the same server over HTTP with a trained model.
"""

import base64
import io
import re
import threading

from explorer_support import get
from explorer_support import get_json
from explorer_support import serve
import numpy as np
from PIL import Image
import pytest

from hyperrecon_jax import explorer
from hyperrecon_jax.explorer import server as server_lib
from hyperrecon_jax.explorer import session


class NoModel(session.Explorer):
  """An `Explorer` of given slices and network inputs, with no model behind it.

  Args:
    images: (S, H, W) the slices.
    zf_mag: (S, H, W) the magnitudes of their network inputs (distinct from
      ``images``, so that a swap of the two shows).
    losses: the loss terms' names.
  """

  def __init__(self, images, zf_mag, losses=("dc", "tv")):
    self.images, self.zf_mag, self.losses = images, zf_mag, tuple(losses)
    self.num_coeffs = len(self.losses)
    self.volumes, self.slice_numbers = [0] * len(images), list(range(len(images)))
    self._lock, self._error_scales, self._not_finite = threading.Lock(), {}, {}

  def _reconstruction(self, i, coeffs):
    # A stand-in for the model: the slice weighted by the first coefficient.
    return self.images[i] * coeffs[0], {"psnr": 1.0, "ssim": 0.5, "hfen": 0.1}

  def info(self):
    return {"model": "none"}


@pytest.fixture(scope="module")
def no_model():
  rng = np.random.default_rng(0)
  images = rng.random((3, 8, 8)).astype(np.float32)
  zf_mag = rng.random((3, 8, 8)).astype(np.float32)
  ex = NoModel(images, zf_mag)
  url, srv = serve(ex)
  yield ex, url
  srv.shutdown()
  srv.server_close()


def png_levels(data):
  """(H, W) uint8 of an 8-bit grayscale PNG, decoded by Pillow (not the test's own decoder)."""
  with Image.open(io.BytesIO(data)) as image:
    assert image.mode == "L"
    return np.asarray(image)


def test_an_internal_error_is_a_json_500_cut_short_and_the_server_keeps_serving(no_model,
                                                                               monkeypatch):
  # An exception the handler does not expect must not reach http.server,
  # which prints a traceback and drops the connection without an answer.
  ex, url = no_model
  message = "x" * 5000

  def broken():
    raise RuntimeError(message)
  monkeypatch.setattr(ex, "info", broken)
  status, body = get_json(url + "/api/info")
  error = body["error"]
  assert status == 500 and error.startswith("internal error: RuntimeError: xxx"), body
  # Cut to MAX_MESSAGE characters and an ellipsis: the message may quote a parameter.
  assert len(error) == server_lib.MAX_MESSAGE + 1 and error.endswith("x…")
  monkeypatch.undo()
  assert get_json(url + "/api/info") == (200, {"model": "none"})


def test_the_page_script_is_javascript_and_the_favicon_an_empty_204(no_model):
  _, url = no_model
  status, js, content_type = get(url + "/app.js")
  # A browser refuses to run a script served as text/html where nosniff is set.
  assert status == 200 and content_type == "text/javascript; charset=utf-8" and js
  status, body, _ = get(url + "/favicon.ico")
  assert (status, body) == (204, b"")  # not a 404 in the console of every page load


def test_truth_and_zero_filled_downloads_are_those_images(no_model):
  ex, url = no_model
  for kind, want in (("truth", ex.images[2]), ("zero_filled", ex.zf_mag[2])):
    status, body, content_type = get(f"{url}/api/download?slice=2&kind={kind}&format=npy")
    assert status == 200 and content_type == "application/octet-stream"
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), want)
    status, body, _ = get(f"{url}/api/download?slice=2&kind={kind}")
    # The level nearest to value × 255, in float64 where a float32 value
    # times 255 is exact: no level depends on the rounding of the product.
    expect = np.round(want.astype(np.float64) * 255)
    assert status == 200 and np.array_equal(png_levels(body), expect), kind


def test_the_error_scale_is_the_99th_percentile_of_the_errors_at_the_vertices_and_centre(
    no_model):
  # docs/cli.md: white is the 99th percentile of the slice's |error| at each
  # term alone and at the centre of the simplex. The stand-in model's
  # reconstructions there are the slice times 1, 0 and 0.5.
  ex, url = no_model
  assert explorer.ERROR_PERCENTILE == 99.0
  image = ex.images[1].astype(np.float64)
  want = np.percentile(np.stack([0 * image, image, 0.5 * image]), 99.0)
  # The explorer takes its percentile of float32 errors: a relative roundoff
  # of 2^-24 per value, 1e-6 with the interpolation.
  assert ex.error_scale(1) == pytest.approx(want, rel=1e-6)
  status, r = get_json(f"{url}/api/reconstruct?slice=1&lam=0.5")
  assert status == 200 and r["error_scale"] == ex.error_scale(1)


def test_reconstruct_shows_the_slices_network_input_as_the_zero_filled_image(no_model):
  ex, url = no_model
  status, r = get_json(f"{url}/api/reconstruct?slice=1&lam=0.5")
  assert status == 200
  for name, want in (("truth", ex.images[1]), ("zero_filled", ex.zf_mag[1])):
    data = r["images"][name].removeprefix("data:image/png;base64,")
    np.testing.assert_array_equal(png_levels(base64.b64decode(data)),
                                  np.round(want.astype(np.float64) * 255))


@pytest.mark.parametrize("kind", ["truth", "zero_filled", "range"])
@pytest.mark.parametrize("point, name", [("coeffs=abc", "coeffs"), ("coeffs=0.7,0.7", "coeffs"),
                                         ("lam=nan", "lam")])
def test_a_download_checks_a_point_it_does_not_use(no_model, kind, point, name):
  # The coefficients were not checked for kinds that do not use them
  # (lam was): a malformed parameter is a 400 whatever the kind.
  _, url = no_model
  status, body = get_json(f"{url}/api/download?slice=0&kind={kind}&{point}")
  assert status == 400 and body["error"].startswith(f"{name} must"), body


@pytest.mark.parametrize("query, pattern", [
    ("/api/reconstruct?slice=%FF&lam=0.5", "slice must be an integer, got '\ufffd'"),  # not UTF-8
    ("/api/reconstruct?slice=0&lam=%00", "lam must be 1 comma-separated number"),
    ("/api/reconstruct?slice=0&lam=0.5%00", "lam must be 1 comma-separated number"),
    ("/api/reconstruct?slice=0;lam=0.5", "slice must be an integer"),  # ';' separates nothing
    ("/api/reconstruct?slice&lam=0.5", "slice must be an integer, got ''"),
    ("/api/reconstruct?slice=0&lam=1e400", r"lam must lie in \[0, 1\]"),  # inf once parsed
    ("/api/reconstruct?slice=0&coeffs=1e308,1e308", "coeffs must sum to 1 .* sums to inf"),
    ("/api/reconstruct?slice=0&coeffs=0,0", "coeffs must sum to 1 .* sums to 0$"),
    ("/api/reconstruct?slice=0&lam=0.5&coeffs=", r"either 'lam' or 'coeffs', not both "
     r"\(coeffs= is given, empty\):"),
    ("/api/curve?slice=1.0", "slice must be an integer, got '1.0'"),
    ("/api/curve?slice=3", r"slice must be in \[0, 2\], got 3"),
    ("/api/curve?Slice=1", "unknown parameter 'Slice' for /api/curve"),
    ("/api/download?slice=0&kind=truth&format=PNG", "format must be 'png' or 'npy', got 'PNG'"),
    ("/api/download?slice=0&kind=&format=png", "kind must be one of .*, got ''"),
])
# 1e308 + 1e308 overflows in the validator's sum: a 400, without NumPy's
# warning on the server's terminal.
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_odd_parameters_are_400s_naming_the_parameter(no_model, query, pattern):
  _, url = no_model
  status, body = get_json(url + query)
  assert status == 400 and re.search(pattern, body["error"]), body
  assert get_json(url + "/api/info")[0] == 200  # still serving
