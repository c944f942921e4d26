"""Tests of the λ explorer (hyperrecon_jax.explorer) over real HTTP, and its script.

The server runs in a thread on a free port with conftest's tiny trained run
(``run_a``: 6 steps at 32×32); every answer is checked against an independent
computation: the model applied directly, `evaluate.diverse_pair`, the metrics.
"""

import base64
import concurrent.futures
import copy
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from explorer_support import ATOL
from explorer_support import TIMEOUT_S
from explorer_support import decode_png
from explorer_support import get
from explorer_support import get_json
from explorer_support import npy
from explorer_support import serve
from explorer_support import tiny_explorer
import jax
import loop_support
import numpy as np
import pytest

from hyperrecon_jax import evaluate
from hyperrecon_jax import explorer
from hyperrecon_jax import gallery
from hyperrecon_jax import hparams
from hyperrecon_jax import metrics
from hyperrecon_jax import streams
from hyperrecon_jax import train
from hyperrecon_jax.explorer import session

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def server(compilation_cache, run_a):  # run_a's programs may be in the cache already
  config, model, variables, step = train.load_trained(run_a["workdir"])
  ex = explorer.Explorer(config, model, variables, name="run_a", step=step)
  url, srv = serve(ex)
  yield ex, url, (config, model, variables)
  srv.shutdown()
  srv.server_close()


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
    # The level nearest to value × 255, computed exactly: a float32 times 255
    # needs 32 bits of significand, which float64 holds. In float32 the product
    # is rounded first, so a value within roundoff of a half level could round
    # to the other level, depending on the sign of the model's roundoff.
    exact = np.round(np.clip(got.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(png, exact)


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


def test_the_points_where_a_diverged_model_is_not_finite_are_found(server, run_a):
  # A diverged model was served without a word: black images, n/a metrics.
  # One BatchNorm variance of −2 folds to rsqrt(−2 + eps), NaN at every λ.
  ex, _, (config, model, variables) = server
  assert ex.not_finite_points(0) == []
  stats = jax.tree_util.tree_map(np.array, variables["batch_stats"])
  stats["body"]["bn_enc0_a"]["var"][:] = -2.0
  broken = explorer.Explorer(config, model, {**variables, "batch_stats": stats},
                             name="broken", step=6)
  # The two terms alone and the centre of the simplex, in that order.
  assert broken.not_finite_points(0) == [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
  assert broken.error_scale(0) == 1.0  # the NaN errors count as 0: nothing is drawn white


def test_user_images_replace_the_split(run_a):
  config, model, variables, step = train.load_trained(run_a["workdir"])
  images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
  ex = explorer.Explorer(config, model, variables, name="x", step=step, images=images,
                        slices=[5, 6, 7], source="scan.nii.gz")
  info = ex.info()
  assert info["num_slices"] == 3 and info["source"] == "scan.nii.gz"
  assert [s["slice"] for s in info["slices"]] == [5, 6, 7]
  assert all("name" not in s for s in info["slices"])  # the page says "volume 0"
  named = explorer.Explorer(config, model, variables, name="x", step=step, images=images,
                            slices=[5, 6, 7], volume_name="scan.nii.gz")
  assert [s["name"] for s in named.info()["slices"]] == ["scan.nii.gz"] * 3
  # A download is named after the slice the page shows (it said slice0 for slice 5).
  assert ex.download(0, lam=(0.5,), fmt="npy")[2].startswith("recon_slice5_lam0.5")
  numbered = explorer.Explorer(config, model, variables, name="x", step=step, images=images,
                               slices=[5, 6, 7], slice_numbers=[82, 81, 80])
  assert [s["slice"] for s in numbered.info()["slices"]] == [82, 81, 80]
  assert numbered.download(2, kind="truth", fmt="png")[2].startswith("truth_slice80")
  numbered.volumes = [0, 3, "sub-01/anat"]  # a split of several volumes names the volume too
  assert [numbered.slice_label(i) for i in range(3)] == [
      "volume0_slice82", "volume3_slice81", "volumesub-01_anat_slice80"]
  with pytest.raises(ValueError, match="slice_numbers has 2 entries for 3 slices"):
    explorer.Explorer(config, model, variables, name="x", step=step, images=images,
                      slice_numbers=[1, 2])
  with pytest.raises(ValueError, match=r"images must have shape \(S, 32, 32\)"):
    explorer.Explorer(config, model, variables, name="x", step=step, images=images[:, :16])
  # Values beyond [0, 1] were shown and scored against a peak of 1; the
  # curves (grid.grid_metrics) then refused them at the first request.
  for bad, shown in ((images * 2, r"\[0\.\d+, 1\.\d+\]"), (images - 0.5, r"\[-0\.\d+"),
                     (np.where(images > 0.5, np.nan, images), r"\[nan, nan\]")):
    with pytest.raises(ValueError, match=rf"images must hold values in \[0, 1\] .* got values "
                                         rf"in {shown}"):
      explorer.Explorer(config, model, variables, name="x", step=step, images=bad)
  with pytest.raises(ValueError, match=r"with S ≥ 1, got \(0, 32, 32\)"):
    explorer.Explorer(config, model, variables, name="x", step=step, images=images[:0])


def test_a_users_images_are_measured_with_reconstruct_pys_noise(run_a):
  # With k-space noise, the page shows the input reconstruct.py --seed=N
  # writes (its `measure`, from the same slice indices): N = 0 by default,
  # and explore.py --seed=N for another.
  import types

  from hyperrecon_jax import reconstruct
  config, model, variables, step = train.load_trained(run_a["workdir"])
  with config.unlocked():
    config.task.noise_sigma = 0.05
  images = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
  scan = types.SimpleNamespace(images=images, slices=np.array([4, 5, 6]))
  inputs = {}
  for seed in (None, 0, 7):
    ex = explorer.Explorer(config, model, variables, name="x", step=step, images=images,
                           slices=scan.slices, seed=seed)
    inputs[seed] = np.asarray(ex._zf)
  np.testing.assert_array_equal(inputs[None], reconstruct.measure(config, scan, seed=0))
  np.testing.assert_array_equal(inputs[7], reconstruct.measure(config, scan, seed=7))
  assert np.abs(inputs[7] - inputs[0]).max() > 0.01  # the noise's draw, σ = 0.05


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


def test_a_query_sent_as_raw_utf8_is_quoted_as_sent(server):
  # curl sends a literal '１' as its UTF-8 bytes, unencoded; the answer quoted
  # their Latin-1 reading ('ï¼\x91').
  _, url, _ = server
  host, port = url.removeprefix("http://").split(":")
  with socket.create_connection((host, int(port)), timeout=30) as sock:
    sock.sendall("GET /api/curve?slice=１ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                 .encode())
    answer = b"".join(iter(lambda: sock.recv(65536), b""))
  head, _, body = answer.partition(b"\r\n\r\n")
  assert head.startswith(b"HTTP/1.0 400"), answer[:300]
  encoded_status, encoded = get_json(url + "/api/curve?slice=%EF%BC%91")
  assert encoded_status == 400 and json.loads(body) == encoded
  assert "'１'" in encoded["error"], encoded


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
  # The curve's Dice comes from the engine (grid.grid_metrics): the same as
  # segmenting its reconstructions here, as the single point above is checked.
  recons = ex.grid_reconstructions(2)["recons"]
  want = segmentation.foreground_dice(segmentation.labels(seg, recons),
                                      np.broadcast_to(ex.labels[2], recons.shape), 4)
  np.testing.assert_allclose(c["metrics"]["dice"], want, rtol=0, atol=1e-6)
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
    (["--seed=-1"], "seed"),
    (["--segmenter=/nonexistent"], "holds no trained segmenter"),
    (["--data=/tmp", "--input=scan.nii.gz"], "--input .* or --data .*, not both"),
    (["--data=/tmp", "--split=validation"], "shown whole, .* --split=validation does not apply"),
    (["--input=scan.nii.gz", "--split=validation"],
     r"--input=scan\.nii\.gz is shown whole, one scan: --split=validation does not apply"),
    # --split=test, the default, given by the user is as meaningless (it was served).
    (["--input=scan.nii.gz", "--split=test"],
     r"--input=scan\.nii\.gz is shown whole, one scan: --split=test does not apply"),
    # A free port (0) still needs a host it can bind: checked before the model
    # loads. 192.0.2.1 (TEST-NET-1, numeric: no name lookup) is no address of
    # this machine.
    (["--host=192.0.2.1", "--port=0", "--workdir=/nonexistent/run"],
     r"cannot serve on 192\.0\.2\.1:0: Cannot assign"),
    (["--data=/tmp", "--segmenter=/tmp"], "Dice is scored on the data the segmenter was "
                                          "trained for, not on another folder"),
])
def test_bad_flags_are_one_error_line(env, args, pattern):
  proc = run_script(*args, env=env)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
  assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr[-2000:]


def test_a_segmenter_of_other_images_is_refused_before_the_split_check(env, run_a,
                                                                        tmp_path):
  # The split check reads the workdir's split record and the dataset (and
  # builds a changed folder anew): a segmenter that cannot label the data
  # is refused before it. Here the record is damaged, so the old order
  # stopped on the record instead.
  from hyperrecon_jax import segmentation
  from hyperrecon_jax import segmenter_files
  from hyperrecon_jax.data import split_record
  workdir = tmp_path / "run"
  shutil.copytree(run_a["workdir"], workdir)
  (workdir / split_record.FILE).write_text("{}")
  config = train.load_trained(str(workdir))[0]
  module = segmentation.Segmenter(num_classes=4, channels=4)
  other = json.loads(config.data.to_json()) | {"image_size": 2 * config.data.image_size}
  size = other["image_size"]
  variables = module.init(jax.random.key(0), np.zeros((1, size, size), np.float32))
  segmenter_files.save(segmentation.Trained(module, variables, {
      "num_classes": 4, "channels": 4, "data": other}), str(tmp_path / "seg"))
  proc = run_script(f"--workdir={workdir}", f"--segmenter={tmp_path / 'seg'}", env=env)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
  assert re.search(r"the segmenter was trained on other images than .*: data\.image_size: "
                   rf"{size} vs {config.data.image_size}", errors[0]), errors


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
  # The train split, which is served with a note that its scores are not held out.
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "explore.py"),
                           f"--workdir={run_a['workdir']}", "--port=0", "--split=train"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=REPO)
  try:
    line = proc.stdout.readline()
    match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    status, info = get_json(match.group(1) + "api/info")
    assert status == 200 and info["step"] == 6
    # The page says so too, where the scores are read, not only the terminal.
    assert info["source"].endswith("train split (the split the model learned from: its "
                                   "scores are not held out)"), info["source"]
    assert f"slices of {info['image_size']}×{info['image_size']} px" in line  # run_a: 32×32
    assert info["image_size"] == run_a["config"].data.image_size
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
  assert ("note: the train split is the one the model learned from: its scores are not "
          "held out") in err, err


def test_the_script_explores_a_users_nifti_volume(run_a, env, tmp_path):
  import nibabel as nib
  import scipy.ndimage
  rng = np.random.default_rng(0)
  volume = np.zeros((40, 40, 12), np.float32)
  volume[6:34, 8:32, 2:10] = scipy.ndimage.gaussian_filter(rng.random((28, 24, 8)), 1.0)
  # Six voxels far brighter than the rest (a lesion, a vessel): the model reads
  # them at the intensity scale, which reconstruct.py warns of, as must the explorer.
  volume[10, 10, 2:8] = 10 * volume.max()
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
    assert status == 200 and info["source"] == f"{path}, slices numbered along its voxel axis 2"
    # The slices with foreground, 2…9, numbered as the (RAS) file numbers them;
    # test_scans checks a file stored in another order.
    assert [s["slice"] for s in info["slices"]] == list(range(2, 10))
    # The page names the slices by the file ("slice 2 of scan.nii.gz"), not "volume 0".
    assert {s["name"] for s in info["slices"]} == {"scan.nii.gz"}
    status, r = get_json(match.group(1) + "api/reconstruct?slice=0&lam=0.5")
    assert status == 200 and r["metrics"]["psnr"] is not None
  finally:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130
  # The scan's notes and warnings, as reconstruct.py prints them for this file.
  from hyperrecon_jax import scans
  scan = scans.read_input(path, run_a["config"])
  assert scan.notes and scan.warnings
  for line in [f"note: {n}" for n in scan.notes] + [f"warning: {w}" for w in scan.warnings]:
    assert line in err.splitlines(), (line, err)


def test_the_script_explores_every_volume_of_another_folder(run_a, env, tmp_path):
  site = loop_support.write_site(tmp_path / "site", (11, 12))
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "experiments", "explore.py"),
                           f"--workdir={run_a['workdir']}", f"--data={site}", "--port=0"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=REPO)
  try:
    # The folder's dataset is built first (TFDS says so on stdout).
    lines = []
    while not (lines and "serving the λ explorer" in lines[-1]) and len(lines) < 50:
      lines.append(proc.stdout.readline())
      if not lines[-1] and proc.poll() is not None:
        break
    match = re.search(r"at (http://127\.0\.0\.1:\d+/)", lines[-1])
    assert match, (lines, proc.stderr.read() if proc.poll() is not None else "")
    status, info = get_json(match.group(1) + "api/info")
    assert status == 200 and info["source"] == f"every volume of {site}"
    # Both volumes, each with its 10 axial slices of brain (write_site).
    shown = [(s["volume"], s["name"], s["slice"]) for s in info["slices"]]
    assert shown == [(v, f"sub-{11 + v}.nii.gz", k) for v in (0, 1) for k in range(3, 13)]
  finally:
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
  assert proc.returncode == 130


def test_a_folder_holding_a_padded_copy_of_the_training_data_is_refused(env, tmp_path):
  # The shipped 64×64 model learned from the MNI152 template; a copy padded
  # with zeros is another file with other voxels but gives its slices back.
  import nibabel as nib
  import numpy as np

  from hyperrecon_jax.data import mni152
  t1 = nib.load(mni152.template_paths()["t1"])
  padded = np.pad(np.asarray(t1.dataobj), ((0, 0), (0, 0), (4, 0)))
  nib.save(nib.Nifti1Image(padded, t1.affine), str(tmp_path / "padded.nii.gz"))
  proc = run_script("--pretrained=mni152_csmri8x_dc_tv", f"--data={tmp_path}", env=env)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
  assert len(errors) == 1 and re.search(
      r"slices of .* are, bit for bit or to float32 rounding, slices the model "
      r"mni152_csmri8x_dc_tv "
      r"trained or validated on: padded\.nii\.gz", errors[0]), proc.stderr[-2000:]


# --- settings, names and scales on an untrained tiny model (no run, no server) --------


@pytest.fixture(scope="module")
def tiny(compilation_cache):
  """`explorer_support.tiny_explorer` of data consistency + TV: 2 slices, a 4-point grid."""
  return tiny_explorer(("dc", "tv"))


def test_the_gallery_follows_the_configs_size_and_an_explicit_tolerance(tiny):
  config = tiny.config.copy_and_resolve_references()
  # Every distinct point a candidate: the gallery's length is its size.
  config.eval.gallery_size, config.eval.gallery_tolerance_db = 2, 200.0
  assert config.eval.gallery_size != session.GALLERY_SIZE
  ex = explorer.Explorer(config, tiny.model, tiny.variables, name="t", step=0,
                         images=tiny.images)
  gallery = ex.curve(0)["gallery"]
  assert (ex.gallery_size, len(gallery["items"]), gallery["tolerance_db"]) == (2, 2, 200.0)
  # An explicit 0 dB, though falsy, overrides the config: only points at the
  # best PSNR are candidates.
  ex = explorer.Explorer(config, tiny.model, tiny.variables, name="t", step=0,
                         images=tiny.images, gallery_tolerance_db=0.0)
  curve = ex.curve(0)
  psnr = np.asarray(curve["metrics"]["psnr"])
  assert ex.gallery_tolerance_db == 0.0 and curve["gallery"]["tolerance_db"] == 0.0
  assert curve["gallery"]["num_candidates"] == np.sum(psnr == psnr.max()) == 1


def test_downloads_are_named_after_the_volume_slice_and_point(tiny):
  ex = copy.copy(tiny)
  assert ex.download(0, coeffs="0.25,0.75")[2] == "recon_slice0_coeffs0.25_0.75.png"
  assert ex.download(0, lam=(0.75,))[2] == "recon_slice0_lam0.75.png"
  # Slice 80 of two volumes: two volumes are enough to name them.
  ex.volumes, ex.slice_numbers = [0, 3], [80, 80]
  assert [ex.slice_label(i) for i in range(2)] == ["volume0_slice80", "volume3_slice80"]
  assert ex.download(1, lam=(0.5,), fmt="npy")[2] == "recon_volume3_slice80_lam0.5.npy"


def test_the_error_scale_of_a_blown_up_model_is_capped_at_1(tiny):
  # BatchNorm variances 1e6 times smaller scale each normalized activation
  # by 1e3: the reconstructions, and their errors, are far outside [0, 1].
  variables = jax.tree_util.tree_map(np.asarray, tiny.variables)
  variables["batch_stats"] = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 1e-6 if p[-1].key == "var" else x, variables["batch_stats"])
  ex = explorer.Explorer(tiny.config, tiny.model, variables, name="big", step=0,
                         images=tiny.images)
  probes = np.concatenate([np.eye(2), [[0.5, 0.5]]])
  errors = np.abs(np.stack([ex.reconstruction(0, coeffs=c)[0] for c in probes])
                  - ex.images[0])
  assert np.all(np.isfinite(errors))
  assert np.percentile(errors, explorer.ERROR_PERCENTILE) > 1.0
  assert ex.error_scale(0) == 1.0
  assert ex.reconstruct(0, lam=(0.5,))["error_scale"] == 1.0
