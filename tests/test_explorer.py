"""Tests of the λ explorer (hyperrecon_jax.explorer) over real HTTP, and its script.

The server runs in a thread on a free port with conftest's tiny trained run
(``run_a``: 6 steps at 32×32); every answer is checked against an independent
computation: the model applied directly, `evaluate.diverse_pair`, the metrics.
"""

import base64
import concurrent.futures
import functools
import http.client
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

import configs
import jax
import numpy as np
import pytest

from hyperrecon_jax import evaluate
from hyperrecon_jax import explorer
from hyperrecon_jax import gallery
from hyperrecon_jax import hparams
from hyperrecon_jax import metrics
from hyperrecon_jax import streams
from hyperrecon_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


@pytest.fixture(scope="module")
def server(compilation_cache, run_a):  # run_a's programs may be in the cache already
  config, model, variables, step = train.load_trained(run_a["workdir"])
  ex = explorer.Explorer(config, model, variables, name="run_a", step=step)
  url, srv = serve(ex)
  yield ex, url, (config, model, variables)
  srv.shutdown()
  srv.server_close()


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


def direct(ex, model_parts, i, lam):
  """The model applied directly (no jit) at one λ to slice i's input."""
  _, model, variables = model_parts
  coeffs = hparams.coefficients(np.asarray([[lam]], np.float32))[0]
  return np.asarray(model.apply(variables, ex._zf[i][None], coeffs))[0]


def test_info_describes_the_model_task_slices_and_grid(server):
  ex, url, (config, _, _) = server
  status, info = get_json(url + "/api/info")
  assert status == 200
  assert info["model"] == "run_a" and info["step"] == 6
  assert info["num_lambdas"] == 1 and info["num_slices"] == len(ex.images) > 1
  assert info["task"]["name"] == "csmri" and info["task"]["acceleration"] == float(
      config.task.acceleration)
  assert info["task"]["input_name"] == "zero-filled"
  assert info["num_coeffs"] == 2 and info["losses"] == list(config.losses)
  assert info["lambda_set"] == "grid" and info["design"] is None
  np.testing.assert_allclose(info["lambdas"], hparams.grid(int(config.eval.grid), 1),
                             rtol=5e-6)  # six significant digits
  np.testing.assert_allclose(info["coeffs"], ex.coeffs, rtol=1e-6, atol=1e-7)
  assert decode_png(explorer.png_bytes(np.asarray(ex.operator.mask))).shape == (32, 32)


def test_the_inputs_are_measured_as_the_report_measures_them(server):
  ex, _, (config, _, _) = server
  key = streams.key(config, "evaluation")  # what report.run uses
  zf = evaluate.measure_slices(ex.operator, ex.images,
                               evaluate.slice_keys(key, ex.volumes, ex.slices))
  np.testing.assert_array_equal(np.asarray(zf), np.asarray(ex._zf))


def test_reconstruct_equals_the_model_and_the_metrics(server):
  ex, url, parts = server
  for i, lam in ((0, 0.3), (len(ex.images) - 1, 0.87)):
    status, r = get_json(f"{url}/api/reconstruct?slice={i}&lam={lam}")
    assert status == 200 and r["slice"] == i
    got = npy(f"{url}/api/download?slice={i}&lam={lam}&format=npy")
    want = direct(ex, parts, i, lam)
    assert got.dtype == np.float32 and got.shape == (32, 32)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    truth = ex.images[i][None]
    # The response's metrics are those of the returned image (same jitted call).
    for m in ("psnr", "ssim", "hfen"):
      value = float(getattr(metrics, m)(got[None], truth)[0])
      assert r["metrics"][m] == pytest.approx(value, rel=1e-5, abs=1e-6), m
    for name in ("truth", "zero_filled", "recon", "error"):
      head, b64 = r["images"][name].split(",", 1)
      assert head == "data:image/png;base64"

      assert decode_png(base64.b64decode(b64)).shape == (32, 32)
    png = decode_png(get(f"{url}/api/download?slice={i}&lam={lam}&format=png")[1])
    np.testing.assert_array_equal(png, np.round(np.clip(got, 0, 1) * 255).astype(np.uint8))


def test_curve_agrees_with_the_grid_the_pair_and_the_best(server):
  ex, url, _ = server
  i = 1
  status, c = get_json(f"{url}/api/curve?slice={i}")
  assert status == 200
  recons = ex.grid_reconstructions(i)["recons"]
  grid = np.asarray(c["lambdas"], np.float32)
  assert recons.shape == (len(grid), 32, 32)
  # A grid row equals /api/reconstruct at that λ (the exact float32 value).
  k = len(grid) // 3
  lam = ",".join(repr(float(v)) for v in ex.lam_grid[k])
  one = npy(f"{url}/api/download?slice={i}&lam={lam}&format=npy")
  np.testing.assert_allclose(one, recons[k], atol=ATOL, rtol=0)
  target = np.broadcast_to(ex.images[i], recons.shape)
  psnr = np.asarray(metrics.psnr(recons, target))
  np.testing.assert_allclose(c["metrics"]["psnr"], psnr, rtol=1e-6)
  a, b, _ = evaluate.diverse_pair(recons, psnr)
  assert c["diverse"]["indices"] == [a, b]
  assert c["diverse"]["lambdas"] == [c["lambdas"][a], c["lambdas"][b]]
  assert c["diverse"]["coeffs"] == [c["coeffs"][a], c["coeffs"][b]]
  assert c["best"]["psnr"]["index"] == int(np.argmax(c["metrics"]["psnr"]))
  assert c["best"]["ssim"]["index"] == int(np.argmax(c["metrics"]["ssim"]))
  assert c["best"]["hfen"]["index"] == int(np.argmin(c["metrics"]["hfen"]))
  best = c["best"]["psnr"]["index"]
  assert c["best"]["psnr"]["lam"] == c["lambdas"][best] == explorer.rounded(ex.lam_grid[best])
  picked = gallery.diverse(recons, psnr, ex.gallery_size, tolerance_db=ex.gallery_tolerance_db)
  assert c["gallery"]["indices"] == list(picked.indices)
  assert [item["index"] for item in c["gallery"]["items"]] == list(picked.indices)
  spread = npy(f"{url}/api/download?slice={i}&kind=range&format=npy")
  np.testing.assert_array_equal(spread, recons.max(0) - recons.min(0))
  assert c["range_max"] == pytest.approx(float(spread.max()))


@pytest.mark.parametrize("query, code, pattern", [
    ("/api/reconstruct?lam=0.5", 400, "missing parameter 'slice'"),
    ("/api/reconstruct?slice=0", 400, "missing parameter 'lam' .* or 'coeffs'"),
    ("/api/reconstruct?slice=0&lam=0.5&coeffs=0.5,0.5", 400,
     "either 'lam' or 'coeffs', not both"),
    ("/api/reconstruct?slice=0&coeffs=0.5", 400, r"coeffs must have 2 value\(s\)"),
    ("/api/reconstruct?slice=0&coeffs=0.5,0.6", 400,
     r"coeffs must sum to 1 \(within 0.0001\), got '0.5,0.6', which sums to 1.1"),
    ("/api/reconstruct?slice=0&coeffs=1.5,-0.5", 400, "coeffs must be ≥ 0"),
    ("/api/reconstruct?slice=0&coeffs=nan,1", 400, "coeffs must be finite"),
    ("/api/reconstruct?slice=0&coeffs=a,b", 400, "coeffs must be 2 comma-separated"),
    ("/api/reconstruct?slice=1&slice=2&lam=0.5", 400, "parameter 'slice' is given 2 times"),
    ("/api/curve?slice=1&lam=0.5", 400, r"unknown parameter 'lam' for /api/curve \(it takes "
     r"slice\)"),
    ("/api/info?x=1", 400, "unknown parameter 'x' for /api/info"),
    ("/api/reconstruct?slice=abc&lam=0.5", 400, "slice must be an integer"),
    ("/api/reconstruct?slice=-1&lam=0.5", 400, r"slice must be in \[0, \d+\], got -1"),
    ("/api/reconstruct?slice=9999&lam=0.5", 400, "slice must be in"),
    ("/api/reconstruct?slice=0&lam=x", 400, "lam must be 1 comma-separated number"),
    ("/api/reconstruct?slice=0&lam=1.5", 400, r"lam must lie in \[0, 1\]"),
    ("/api/reconstruct?slice=0&lam=-0.1", 400, r"lam must lie in \[0, 1\]"),
    ("/api/reconstruct?slice=0&lam=nan", 400, r"lam must lie in \[0, 1\]"),
    ("/api/reconstruct?slice=0&lam=0.1,0.2", 400, "lam must have 1 value"),
    ("/api/reconstruct?slice=0&lam=", 400, "lam must be"),
    ("/api/curve", 400, "missing parameter 'slice'"),
    ("/api/curve?slice=1e9", 400, "slice must be an integer"),
    ("/api/download?slice=0&lam=0.5&format=gif", 400, "format must be 'png' or 'npy'"),
    ("/api/download?slice=0&format=png", 400, "missing parameter 'lam' .* or 'coeffs'"),
    ("/api/download?slice=0&lam=0.5&kind=foo", 400, "kind must be one of"),
    ("/api/nothing", 404, "unknown path '/api/nothing'"),
    ("/etc/passwd", 404, "unknown path"),
])
def test_bad_requests_are_json_errors_naming_the_problem(server, query, code, pattern):
  _, url, _ = server
  status, body = get_json(url + query)
  assert status == code and re.search(pattern, body["error"]), body
  assert get_json(url + "/api/info")[0] == 200  # still serving


def test_the_page_is_served_with_its_script(server):
  _, url, _ = server
  status, html, content_type = get(url + "/")
  assert status == 200 and content_type.startswith("text/html")
  assert b'<script src="app.js">' in html and b"http" not in html.replace(b"http-equiv", b"")
  status, js, _ = get(url + "/app.js")
  assert status == 200 and b"api/reconstruct" in js and b"http://" not in js


def test_concurrent_requests_agree_with_sequential_ones(server):
  ex, url, _ = server
  queries = [(i % len(ex.images), round(0.1 * (i % 10), 2)) for i in range(24)]
  download = lambda q: npy(f"{url}/api/download?slice={q[0]}&lam={q[1]}&format=npy")
  meta = lambda q: get_json(f"{url}/api/reconstruct?slice={q[0]}&lam={q[1]}")[1]["metrics"]
  curve = lambda i: get_json(f"{url}/api/curve?slice={i}")[1]["metrics"]["psnr"]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    images = list(pool.map(download, queries))
    scores = list(pool.map(meta, queries))
    curves = list(pool.map(curve, [2, 2, 3, 3, 2, 3, 2, 3]))
  for q, image, score in zip(queries, images, scores):
    np.testing.assert_array_equal(image, download(q))
    assert score == meta(q)
  for i, values in zip([2, 2, 3, 3, 2, 3, 2, 3], curves):
    assert values == curve(i)


def test_a_plain_unet_or_a_misplaced_design_is_refused(run_a):
  config, model, variables, step = train.load_trained(run_a["workdir"])
  # A design on the simplex is for K ≥ 4 terms: refused for two, not ignored.
  with pytest.raises(ValueError, match="design on the simplex is for models of 4 or more"):
    explorer.Explorer(config, model, variables, name="two", step=step, design=8)
  config = config.copy_and_resolve_references()
  config.model.hyper_dim = 0
  with pytest.raises(ValueError, match=r"plain is a plain Unet trained at one λ = \(0\.5\): "
                                       "the explorer needs a HyperRecon model"):
    explorer.Explorer(config, model, variables, name="plain", step=step)


def test_user_images_replace_the_split(run_a):
  config, model, variables, step = train.load_trained(run_a["workdir"])
  images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
  ex = explorer.Explorer(config, model, variables, name="x", step=step, images=images,
                        slices=[5, 6, 7], source="scan.nii.gz")
  info = ex.info()
  assert info["num_slices"] == 3 and info["source"] == "scan.nii.gz"
  assert [s["slice"] for s in info["slices"]] == [5, 6, 7]
  with pytest.raises(ValueError, match=r"images must have shape \(S, 32, 32\)"):
    explorer.Explorer(config, model, variables, name="x", step=step, images=images[:, :16])


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
  """The K = 4 explorer, built once per process (tests/test_explorer_browser.py too)."""
  # Its PSNR spans ~9 dB over the design: 2 dB leave 6 candidates for 4 pictures.
  return tiny_explorer(FOUR_TERMS, design=FOUR_DESIGN, gallery_tolerance_db=2.0)


@pytest.fixture(scope="module")
def four(compilation_cache):
  ex = four_term_explorer()
  url, srv = serve(ex)
  yield ex, url
  srv.shutdown()
  srv.server_close()


def test_two_hyperparameters_take_two_lambda_values():
  ex = tiny_explorer(("dc", "tv", "weight_l1"))
  info = ex.info()
  assert info["num_lambdas"] == 2 and len(info["lambdas"]) == 16
  assert info["num_coeffs"] == 3 and info["losses"] == ["dc", "tv", "weight_l1"]
  recon, scores = ex.reconstruction(1, "0.25,0.75")
  coeffs = hparams.coefficients(np.asarray([[0.25, 0.75]], np.float32))[0]
  want = np.asarray(ex.model.apply(ex.variables, ex._zf[1][None], coeffs))[0]
  np.testing.assert_allclose(recon, want, atol=ATOL, rtol=0)
  # The same point as coefficients (Eq. 10: 0.25, 0.75·0.75, 0.75·0.25).
  by_coeffs, _ = ex.reconstruction(1, coeffs="0.25,0.5625,0.1875")
  np.testing.assert_allclose(by_coeffs, recon, atol=ATOL, rtol=0)
  c = ex.curve(1)
  assert len(c["metrics"]["psnr"]) == 16 and len(c["best"]["psnr"]["lam"]) == 2
  assert len(c["coeffs"]) == 16 and len(c["best"]["psnr"]["coeffs"]) == 3
  for lam, pattern in (("0.5", "lam must have 2 value"), ("0.1,0.2,0.3", "lam must have 2"),
                       ("0.1,x", "lam must be 2 comma-separated"),
                       ("0.1,1.01", r"lam must lie in \[0, 1\]")):
    with pytest.raises(explorer.BadRequest, match=pattern):
      ex.reconstruct(0, lam)


# --- four loss terms: coefficients, a design on the simplex, the gallery ------------------


def test_four_terms_are_scored_on_a_design_on_the_simplex(four):
  ex, url = four
  status, info = get_json(url + "/api/info")
  assert status == 200
  assert info["num_coeffs"] == 4 and info["num_lambdas"] == 3
  assert info["losses"] == list(FOUR_TERMS)
  assert info["lambda_set"] == "simplex_design" and info["grid"] is None
  assert info["design"] == FOUR_DESIGN == len(info["coeffs"]) == len(info["lambdas"])
  design = hparams.simplex_design(FOUR_DESIGN, 4)
  assert info["coeffs"] == explorer.rounded(design)
  assert info["coeffs"][:4] == np.eye(4).tolist()  # each term alone first
  assert info["lambdas"] == explorer.rounded(hparams.lambdas_from_coefficients(design))
  # A grid is for K ≤ 3 and a design for K ≥ 4: the other is refused, not ignored.
  with pytest.raises(ValueError, match="λ grid serves models of 2 or 3 loss terms"):
    explorer.Explorer(ex.config, ex.model, ex.variables, name="x", step=0, images=ex.images,
                      grid=5)


def test_four_terms_reconstruct_from_coefficients_or_lambdas(four):
  ex, url = four
  status, r = get_json(f"{url}/api/reconstruct?slice=1&coeffs=0.1,0.2,0.3,0.4")
  assert status == 200
  assert r["coeffs"] == [0.1, 0.2, 0.3, 0.4]  # as typed, not 0.10000000149011612
  lam = hparams.lambdas_from_coefficients(np.asarray([[0.1, 0.2, 0.3, 0.4]], np.float32))[0]
  assert r["lam"] == explorer.rounded(lam) == [0.1, 0.222222, 0.428571]
  want = np.asarray(ex.model.apply(ex.variables, ex._zf[1][None],
                                   np.asarray([0.1, 0.2, 0.3, 0.4], np.float32)))[0]
  got = npy(f"{url}/api/download?slice=1&coeffs=0.1,0.2,0.3,0.4&format=npy")
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
  assert r["metrics"]["psnr"] == pytest.approx(
      float(metrics.psnr(got[None], ex.images[1][None])[0]), rel=1e-5)
  # The same point given as λ; and coefficients typed as decimals (sum 0.9999).
  for query in ("lam=" + ",".join(repr(float(v)) for v in lam), "coeffs=0.1,0.2,0.3,0.3999"):
    status, again = get_json(f"{url}/api/reconstruct?slice=1&{query}")
    assert status == 200 and again["metrics"]["psnr"] == pytest.approx(
        r["metrics"]["psnr"], abs=1e-3), query
    np.testing.assert_allclose(again["coeffs"], r["coeffs"], atol=1e-4)
  status, _, content_type = get(f"{url}/api/download?slice=1&coeffs=0.1,0.2,0.3,0.4")
  assert status == 200 and content_type == "image/png"


def test_four_terms_curve_has_the_best_points_and_the_gallery(four):
  ex, url = four
  status, c = get_json(f"{url}/api/curve?slice=1")
  assert status == 200
  g = ex.grid_reconstructions(1)
  want = np.asarray(one_call_per_point(ex, 1))
  np.testing.assert_allclose(g["recons"], want, atol=ATOL, rtol=0)
  np.testing.assert_allclose(c["metrics"]["psnr"], g["psnr"], rtol=1e-6)
  assert c["coeffs"] == explorer.rounded(ex.coeffs) and len(c["lambdas"]) == FOUR_DESIGN
  for m in ("psnr", "ssim"):
    k = int(np.argmax(g[m]))
    assert c["best"][m]["index"] == k and c["best"][m]["coeffs"] == c["coeffs"][k]
  picked = gallery.diverse(g["recons"], g["psnr"], 4, tolerance_db=2.0)
  items = c["gallery"]["items"]
  assert c["gallery"]["tolerance_db"] == 2.0
  assert len(items) == 4 and c["gallery"]["indices"] == list(picked.indices)
  assert c["gallery"]["num_candidates"] == picked.num_candidates >= 4
  assert c["gallery"]["threshold"] == pytest.approx(picked.threshold)
  for item, k, d in zip(items, picked.indices, picked.min_distance):
    assert item["index"] == k and item["coeffs"] == c["coeffs"][k]
    assert item["lam"] == c["lambdas"][k]
    assert item["metrics"]["psnr"] == pytest.approx(g["psnr"][k])
    assert item["min_distance"] == (None if np.isnan(d) else pytest.approx(d))
    png = decode_png(base64.b64decode(item["image"].split(",", 1)[1]))
    np.testing.assert_array_equal(png, decode_png(explorer.png_bytes(g["recons"][k])))


def one_call_per_point(ex, i):
  """Slice i at every point of the design, one model call each (the test's own loop)."""
  return np.stack([ex.model.apply(ex.variables, ex._zf[i][None], c)[0] for c in ex.coeffs])


@pytest.mark.parametrize("query, pattern", [
    ("coeffs=0.25,0.25,0.5", r"coeffs must have 4 value\(s\) for this model \(one per loss "
     r"term: dc, tv, weight_l1, mse\), got 3"),
    ("coeffs=0.2,0.2,0.2,0.2", r"coeffs must sum to 1 \(within 0.0001\), got "
     r"'0.2,0.2,0.2,0.2', which sums to 0.8$"),
    ("coeffs=0.5,0.5,0.5,-0.5", "coeffs must be ≥ 0"),
    ("coeffs=inf,0,0,0", "coeffs must be finite"),
    ("coeffs=0.5,0.5,,0", "coeffs must be 4 comma-separated number"),
    ("coeffs=", "coeffs must be 4 comma-separated number"),
    ("coeffs=0.25,0.25,0.25,0.25&lam=0.5,0.5,0.5", "either 'lam' or 'coeffs', not both"),
    ("lam=0.5,0.5", r"lam must have 3 value\(s\) for this model \(4 loss terms\)"),
    ("", r"missing parameter 'lam' \(3 value\(s\) in \[0, 1\]\) or 'coeffs' \(4 values"),
])
def test_four_terms_bad_points_are_400s_naming_the_problem(four, query, pattern):
  _, url = four
  for path in ("/api/reconstruct", "/api/download"):
    status, body = get_json(f"{url}{path}?slice=0&{query}")
    assert status == 400 and re.search(pattern, body["error"]), (path, body)


def test_points_in_answers_read_as_typed(server):
  _, url, _ = server
  status, body, _ = get(f"{url}/api/reconstruct?slice=0&lam=0.05")
  assert status == 200
  r = json.loads(body)
  assert r["lam"] == [0.05] and r["coeffs"] == [0.95, 0.05]
  assert b'"lam": [0.05]' in body and b"0.0500000" not in body
  assert explorer.rounded(np.float32(1 / 3)) == 0.333333
  assert explorer.rounded([[np.float32(0.7), np.nan]]) == [[0.7, None]]


# --- HTTP: every error is JSON, and nothing holds the server ------------------------------


def request(url, method, path, body=None, headers=None):
  """(status, headers, body bytes) of one request with any method."""
  host, port = url.removeprefix("http://").split(":")
  conn = http.client.HTTPConnection(host, int(port), timeout=30)
  try:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.headers, response.read()
  finally:
    conn.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"])
def test_other_methods_are_405_json_with_allow(server, method):
  _, url, _ = server
  status, headers, body = request(url, method, "/api/info", body=b'{"a": 1}',
                                  headers={"Content-Type": "application/json"})
  assert status == 405 and headers["Allow"] == "GET", body
  assert headers["Content-Type"] == "application/json"
  assert f"method '{method}' is not allowed" in json.loads(body)["error"]


def test_head_is_405_with_headers_only(server):
  _, url, _ = server
  status, headers, body = request(url, "HEAD", "/api/info")
  assert status == 405 and headers["Allow"] == "GET" and body == b""
  assert headers["Content-Type"] == "application/json"


def test_oversized_and_malformed_requests_are_json(server):
  _, url, _ = server
  status, headers, body = request(url, "GET", "/api/info?x=" + "a" * 70_000)
  assert status == 414 and headers["Content-Type"] == "application/json"
  assert "URI" in json.loads(body)["error"]
  # A request line that is not HTTP/1.x: 400, its quote cut short.
  host, port = url.removeprefix("http://").split(":")
  with socket.create_connection((host, int(port)), timeout=30) as sock:
    sock.sendall(b"GET /api/info " + b"x" * 1000 + b"\r\n\r\n")
    answer = b"".join(iter(lambda: sock.recv(65536), b""))
  head, _, body = answer.partition(b"\r\n\r\n")
  assert head.startswith(b"HTTP/1.0 400") and b"application/json" in head, answer[:300]
  error = json.loads(body)["error"]
  assert error.startswith("Bad request version") and len(error) <= 201 and error.endswith("…")


def test_long_parameter_values_are_cut_in_messages(server):
  _, url, _ = server
  for path, query in (("/api/curve", "slice=" + "7" * 5000 + "x"),
                      ("/api/reconstruct", "slice=0&lam=" + "0.5," * 2000),
                      ("/api/reconstruct", "slice=0&coeffs=" + "0.5," * 2000),
                      ("/api/download", "slice=0&lam=0.5&format=" + "g" * 500),
                      ("/api/curve", "slice=0&" + "q" * 500 + "=1")):
    status, body = get_json(f"{url}{path}?{query}")
    assert status == 400 and len(body["error"]) < 300 and "…" in body["error"], body
  status, body = get_json(url + "/" + "p" * 3000)
  assert status == 404 and len(body["error"]) < 300


def test_a_stalled_or_non_http_client_is_dropped(server):
  _, url, _ = server
  host, port = url.removeprefix("http://").split(":")
  for junk in (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):  # nothing; a TLS hello
    with socket.create_connection((host, int(port)), timeout=30) as sock:
      sock.sendall(junk)
      start = time.monotonic()
      assert sock.recv(1024) == b""  # closed by the server, without an answer
      assert time.monotonic() - start < TIMEOUT_S + 5
  assert explorer.REQUEST_TIMEOUT_S <= 5 and explorer.Handler.timeout == explorer.REQUEST_TIMEOUT_S
  assert get_json(url + "/api/info")[0] == 200


def test_a_cached_curve_does_not_wait_for_one_being_computed(four, monkeypatch):
  ex, url = four
  assert get_json(f"{url}/api/curve?slice=0")[0] == 200  # cached
  with ex._grids._lock:
    ex._grids._cache.pop(1, None)
  started, release, calls = threading.Event(), threading.Event(), []
  compute = ex._compute_grid

  def slow(i):
    calls.append(i)
    started.set()
    assert release.wait(60)
    return compute(i)

  monkeypatch.setattr(ex, "_compute_grid", slow)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    first = pool.submit(get_json, f"{url}/api/curve?slice=1")
    assert started.wait(60)
    second = pool.submit(get_json, f"{url}/api/curve?slice=1")  # waits for the first
    try:
      status, cached = get_json(f"{url}/api/curve?slice=0", timeout=10)  # not 60 s
      assert status == 200 and cached["slice"] == 0 and not first.done()
    finally:
      release.set()
    (s1, c1), (s2, c2) = first.result(60), second.result(60)
  assert s1 == s2 == 200 and c1 == c2 and calls == [1]  # computed once


def test_error_images_are_scaled_per_slice(server):
  ex, url, parts = server
  scales = []
  for i in (0, 2):
    probes = [direct_coeffs(ex, parts, i, c) for c in ([1.0, 0.0], [0.0, 1.0], [0.5, 0.5])]
    errors = np.abs(np.stack(probes) - ex.images[i])
    want = min(float(np.percentile(errors, explorer.ERROR_PERCENTILE)), 1.0)
    status, r = get_json(f"{url}/api/reconstruct?slice={i}&lam=0.3")
    assert status == 200 and r["error_scale"] == pytest.approx(want, rel=1e-4)
    recon = npy(f"{url}/api/download?slice={i}&lam=0.3&format=npy")
    shown = decode_png(base64.b64decode(r["images"]["error"].split(",", 1)[1]))
    expect = np.round(np.clip(np.abs(recon - ex.images[i]) / r["error_scale"], 0, 1) * 255)
    assert np.abs(shown.astype(int) - expect).max() <= 1
    png = decode_png(get(f"{url}/api/download?slice={i}&lam=0.3&format=png&kind=error")[1])
    np.testing.assert_array_equal(png, shown)
    assert get_json(f"{url}/api/curve?slice={i}")[1]["error_scale"] == r["error_scale"]
    scales.append(r["error_scale"])
  assert scales[0] != scales[1]


def direct_coeffs(ex, model_parts, i, coeffs):
  """The model applied directly at (K,) coefficients to slice i's input."""
  _, model, variables = model_parts
  return np.asarray(model.apply(variables, ex._zf[i][None], np.asarray(coeffs, np.float32)))[0]


def test_a_segmenter_adds_dice(server, run_a):
  from hyperrecon_jax import segmentation
  ex0, _, (config, model, variables) = server
  module = segmentation.Segmenter(num_classes=4, channels=4)
  shapes = jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, 32, 32), np.float32))
  rng = np.random.default_rng(0)
  seg_vars = jax.tree_util.tree_map_with_path(
      lambda path, x: (rng.uniform(0.5, 2.0, x.shape) if path[-1].key == "var" else
                       rng.uniform(-0.5, 0.5, x.shape)).astype(np.float32), shapes)
  seg = segmentation.Trained(module, seg_vars, {"data": json.loads(config.data.to_json())})
  ex = explorer.Explorer(config, model, variables, name="run_a", step=6, segmenter=seg, grid=5)
  assert ex.info()["metrics"] == ["psnr", "ssim", "hfen", "dice"]
  recon, scores = ex.reconstruction(2, 0.4)
  pred = segmentation.labels(seg, recon[None])
  want = segmentation.foreground_dice(pred, ex.labels[2][None], 4)[0]
  assert scores["dice"] == pytest.approx(float(want), abs=1e-6)
  c = ex.curve(2)
  assert len(c["metrics"]["dice"]) == 5
  assert c["best"]["dice"]["index"] == int(np.argmax(c["metrics"]["dice"]))
  images = np.zeros((1, 32, 32), np.float32)
  with pytest.raises(ValueError, match="segmenter does not apply to a user's images"):
    explorer.Explorer(config, model, variables, name="x", step=6, segmenter=seg, images=images)


# --- the script --------------------------------------------------------------------------


def run_script(*args, env):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "explore.py"),
                         *args], env=env, capture_output=True, text=True, timeout=300,
                        cwd=REPO, check=False)


@pytest.fixture(scope="module")
def env(data_dir, compilation_cache):
  out = dict(os.environ, JAX_PLATFORMS="cpu", HYPERRECON_DATA_DIR=data_dir,
             JAX_COMPILATION_CACHE_DIR=str(compilation_cache))
  # The processes compile as a user's would, except for conftest's faster
  # compilation (the same HLO programs).
  out["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                              if "xla_backend_optimization_level" in f)
  return out


@pytest.mark.parametrize("args, pattern", [
    (["--pretrained=mni152_csmri8x_dc_tv", "--workdir=/tmp"], "at most one of --workdir"),
    (["--workdir=/nonexistent/run"], "does not exist"),
    (["--pretrained=nope"], "no pretrained model 'nope'"),
    (["--port=-1"], "port"),
    (["--grid=1"], "grid"),
    (["--segmenter=/nonexistent"], "holds no trained segmenter"),
])
def test_bad_flags_are_one_error_line(env, args, pattern):
  proc = run_script(*args, env=env)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
  assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr[-2000:]


def test_a_busy_port_is_one_error_line_naming_it(env):
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    proc = run_script(f"--port={port}", env=env)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
  assert len(errors) == 1, proc.stderr[-2000:]
  assert f"port {port} on 127.0.0.1 is already in use" in errors[0]
  assert "--port=" in errors[0] and "Errno" not in errors[0]


def test_the_script_serves_until_ctrl_c(run_a, env):
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "explore.py"),
                           f"--workdir={run_a['workdir']}", "--port=0"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
  try:
    line = proc.stdout.readline()
    match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    status, info = get_json(match.group(1) + "api/info")
    assert status == 200 and info["step"] == 6
    assert f"slices of {info['image_size']}×{info['image_size']} px" in line  # run_a: 32×32
    assert info["image_size"] == run_a["config"].data.image_size
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_the_script_explores_a_users_nifti_volume(run_a, env, tmp_path):
  import nibabel as nib
  import scipy.ndimage
  rng = np.random.default_rng(0)
  volume = np.zeros((40, 40, 12), np.float32)
  volume[6:34, 8:32, 2:10] = scipy.ndimage.gaussian_filter(rng.random((28, 24, 8)), 1.0)
  path = str(tmp_path / "scan.nii.gz")
  nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "explore.py"),
                           f"--workdir={run_a['workdir']}", f"--input={path}", "--port=0"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=REPO)
  try:
    match = re.search(r"at (http://127\.0\.0\.1:\d+/)", proc.stdout.readline())
    assert match, proc.stderr.read() if proc.poll() is not None else ""
    status, info = get_json(match.group(1) + "api/info")
    assert status == 200 and info["source"] == path and 1 <= info["num_slices"] <= 12
    status, r = get_json(match.group(1) + "api/reconstruct?slice=0&lam=0.5")
    assert status == 200 and r["metrics"]["psnr"] is not None
  finally:
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
  assert proc.returncode == 130
