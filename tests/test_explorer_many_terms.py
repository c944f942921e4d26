"""Tests of the λ explorer for three and four loss terms: λ or coefficients, a design
on the simplex, the gallery, and the cache of each slice's λ set under concurrent requests.

The model is an untrained tiny HyperRecon (``explorer_support.tiny_explorer``); every
answer is checked against the model applied directly, `gallery.diverse` and the metrics.
"""

import base64
import concurrent.futures
import re
import threading

from explorer_support import ATOL
from explorer_support import FOUR_DESIGN
from explorer_support import FOUR_TERMS
from explorer_support import decode_png
from explorer_support import four_term_explorer
from explorer_support import get
from explorer_support import get_json
from explorer_support import npy
from explorer_support import serve
from explorer_support import tiny_explorer
import numpy as np
import pytest

from hyperrecon_jax import explorer
from hyperrecon_jax import gallery
from hyperrecon_jax import hparams
from hyperrecon_jax import metrics


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


def test_a_nan_in_the_lambda_set_is_answered_not_a_500():
  """One NaN pixel of one λ's reconstruction: /api/curve was a 500 and the range PNG black."""
  ex = tiny_explorer(("dc", "tv"))
  compute = ex._compute_grid

  def one_nan_pixel(i):
    g = compute(i)
    g["recons"] = g["recons"].copy()
    g["recons"][-1, 3, 3] = np.nan
    return g
  ex._compute_grid = one_nan_pixel
  url, srv = serve(ex)
  try:
    status, curve = get_json(url + "/api/curve?slice=0")
    assert status == 200, curve
    spread = npy(url + "/api/download?slice=0&kind=range&format=npy")
    assert np.isnan(spread[3, 3]) and curve["range_max"] == pytest.approx(np.nanmax(spread))
    status, png, _ = get(url + "/api/download?slice=0&kind=range")
    assert status == 200
    # White at the finite maximum; it was black everywhere.
    # In float64, as the PNG's levels are computed: a float32 quotient is
    # rounded before × 255, so a value within roundoff of a half level could
    # land on the other level.
    top = float(np.nanmax(spread))
    expected = np.round(np.clip(np.nan_to_num(spread.astype(np.float64), nan=0.0) / top, 0, 1)
                        * 255)
    np.testing.assert_array_equal(decode_png(png), expected)
  finally:
    srv.shutdown()
    srv.server_close()


def test_a_download_checks_a_lambda_it_does_not_use(four):
  # kind=range with lam=abc was a 200: a malformed parameter is a 400 on every kind.
  _, url = four
  for kind in ("truth", "zero_filled", "range"):
    status, body = get_json(url + f"/api/download?slice=0&kind={kind}&lam=abc")
    assert status == 400 and "lam must be" in body["error"], body
  status, _, _ = get(url + "/api/download?slice=0&kind=truth&lam=0.5,0.5,0.5")
  assert status == 200


def test_download_names_tell_close_lambdas_apart():
  # lam=0.12345 and 0.12349 were both recon_…_lam0.1235.png.
  ex = tiny_explorer(("dc", "tv"))
  names = [ex.download(0, lam=(lam,))[2] for lam in (0.12345, 0.12349, 0.5)]
  assert names == ["recon_slice0_lam0.12345.png", "recon_slice0_lam0.12349.png",
                   "recon_slice0_lam0.5.png"]


def test_a_burst_of_clients_is_queued_not_reset(four):
  # The listen queue of 5 reset 29 of 100 simultaneous connections.
  ex, url = four
  barrier = threading.Barrier(100)

  def one(_):
    barrier.wait()
    return get(url + "/api/info", timeout=120)[0]
  with concurrent.futures.ThreadPoolExecutor(100) as pool:
    assert list(pool.map(one, range(100))) == [200] * 100
