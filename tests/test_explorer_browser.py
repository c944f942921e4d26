"""The λ explorer's page in a real browser: headless Chromium driven by Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` and ``pip install selenium``;
nothing is downloaded at run time (the browser and driver paths are given, so
Selenium Manager never runs). Without them the test skips, unless
``HYPERRECON_REQUIRE_BROWSER=1`` (CI) makes that a failure. The server runs
in a thread with the shipped model (64×64, two loss terms), and with the
untrained four-term model of tests/explorer_support.py (32×32).
"""

import json
import os
import shutil
import threading
import urllib.parse
import urllib.request

import pytest

HOW = ("install a browser to run it: apt-get install -y chromium chromium-driver && "
       "pip install selenium")
SHIPPED = "mni152_csmri8x_dc_tv"


def _missing():
  """Why the browser test cannot run here, or None."""
  try:
    import selenium  # noqa: F401
  except ImportError:
    return "selenium is not installed"
  if not (shutil.which("chromium") or shutil.which("chromium-browser")):
    return "chromium is not installed"
  if not (shutil.which("chromedriver") or os.path.isfile("/usr/bin/chromedriver")):
    return "chromedriver is not installed"
  return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  reason = _missing()
  if reason:
    message = f"{reason}: {HOW}"
    if os.environ.get("HYPERRECON_REQUIRE_BROWSER") == "1":
      pytest.fail(f"HYPERRECON_REQUIRE_BROWSER=1 but {message}")
    pytest.skip(message)
  os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1000"):
    options.add_argument(arg)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  # Chromium leaves its singleton socket's folder in $TMPDIR when it quits.
  service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver",
                    env={**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("chromium"))})
  driver = webdriver.Chrome(options=options, service=service)
  yield driver
  driver.quit()


@pytest.fixture(scope="module")
def server():
  from hyperrecon_jax import explorer
  from hyperrecon_jax import pretrained
  config, model, variables, step = pretrained.load(SHIPPED)
  ex = explorer.Explorer(config, model, variables, name=SHIPPED, step=step)
  srv = explorer.make_server(ex, "127.0.0.1", 0)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{srv.server_address[1]}"
  srv.shutdown()
  srv.server_close()


@pytest.fixture(scope="module")
def four_server(compilation_cache):
  import explorer_support  # its K = 4 explorer: compiled once per process

  from hyperrecon_jax import explorer
  srv = explorer.make_server(explorer_support.four_term_explorer(), "127.0.0.1", 0)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{srv.server_address[1]}"
  srv.shutdown()
  srv.server_close()


@pytest.fixture(scope="module")
def three_server(compilation_cache):
  from explorer_support import tiny_explorer

  from hyperrecon_jax import explorer
  # The K = 3 explorer of test_explorer_many_terms (its compiled functions are cached).
  srv = explorer.make_server(tiny_explorer(("dc", "tv", "weight_l1")), "127.0.0.1", 0)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{srv.server_address[1]}"
  srv.shutdown()
  srv.server_close()


def api(url, path, **query):
  with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(query)}",
                              timeout=120) as r:
    return json.loads(r.read())


def page(driver, url):
  """Loads the page and waits for its first reconstruction and λ set; (find, wait, idle)."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  find = lambda i: driver.find_element(By.ID, i)
  wait = WebDriverWait(driver, 120, poll_frequency=0.05)
  idle = lambda d: d.execute_script("return document.body.dataset.state") == "idle"
  driver.get(url + "/")
  wait.until(lambda d: idle(d) and find("best-psnr").is_enabled())
  return find, wait, idle


def image(driver, element_id):
  """The data URL an <img> shows."""
  return driver.execute_script(f"return document.getElementById('{element_id}').src")


def test_the_page_follows_the_slider_and_the_buttons(browser, server):
  from selenium.webdriver.common.by import By
  driver = browser
  # The first reconstruction and the slice's λ grid arrive; every image loads.
  find, wait, idle = page(driver, server)
  for name in ("truth", "zero_filled", "recon", "error", "range"):
    wait.until(lambda d, n=name: d.execute_script(
        f"const i = document.getElementById('img-{n}'); return i.complete && i.naturalWidth"
        ) == 64)
  assert "CS-MRI 8× acceleration" in find("task").text
  # The input is named for the task by the page's script (the HTML's own alt
  # text is "zero-filled input").
  assert find("input-caption").text == "input (zero-filled magnitude)"
  assert find("img-zero_filled").get_attribute("alt") == "zero-filled"
  assert SHIPPED in find("model").text and "64×64 px" in find("model").text
  index = int(find("slice").get_attribute("value"))

  def shown(lam):
    """Waits for λ on the page, then checks its text against the API's answer."""
    answer = api(server, "/api/reconstruct", slice=index, lam=lam)
    want = answer["metrics"]
    wait.until(lambda d: idle(d) and float(find("psnr").get_attribute("data-lam")) == lam)
    assert find("lam-text").text == f"{lam:.3f}"
    assert find("psnr").text == f"{want['psnr']:.2f} dB"
    assert find("ssim").text == f"{want['ssim']:.4f}"
    assert image(driver, "img-recon") == answer["images"]["recon"]
    # c = (1 − λ, λ) (Eq. 9), named by term; |error| white at the slice's scale.
    terms = find("coeff-text").text.split(" · ")
    assert [t.split()[0] for t in terms] == ["dc", "tv"]
    assert [float(t.split()[1]) for t in terms] == pytest.approx([1 - lam, lam], abs=1e-3)
    assert float(find("err-range").text) == pytest.approx(answer["error_scale"], rel=1e-2)
    return want

  # A score that is not a number reads "n/a", not "PSNR n/a dB" (the page's
  # own formatting, called as the page calls it).
  assert driver.execute_script("return [decibels(null), decibels(21.234)]") == [
      "n/a", "21.23 dB"]
  # Move the slider as a drag does: set the value, fire input events.
  before = find("psnr").text
  for lam in (0.9, 0.23):
    driver.execute_script(
        "const s = document.getElementById('lam-slider'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));", str(lam))
    shown(lam)
  assert find("psnr").text != before

  curve = api(server, "/api/curve", slice=index)
  find("best-psnr").click()
  best = curve["best"]["psnr"]["lam"][0]
  wait.until(lambda d: abs(float(find("lam-slider").get_attribute("value")) - best) < 1e-6)
  got = shown(best)
  assert got["psnr"] == pytest.approx(curve["best"]["psnr"]["value"], abs=1e-3)

  find("diverse").click()
  first, second = (pair[0] for pair in curve["diverse"]["lambdas"])
  shown(first)
  find("toggle").click()
  shown(second)
  assert find("pair-text").text.endswith("showing the second")
  # Moved off the pair, the page no longer says that one of it is shown.
  off = next(v for v in (0.987, 0.986) if v not in (first, second))
  driver.execute_script(
      "const s = document.getElementById('lam-slider'); s.value = arguments[0];"
      "s.dispatchEvent(new Event('input'));", str(off))
  shown(off)
  assert "showing the" not in find("pair-text").text, find("pair-text").text
  find("toggle").click()
  shown(first)
  assert find("pair-text").text.endswith("showing the first")

  # The gallery: a click loads that candidate.
  items = curve["gallery"]["items"]
  assert len(driver.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item")) == len(items) >= 2
  find("gallery-1").click()
  shown(items[1]["lam"][0])
  assert "current" in find("gallery-1").get_attribute("class")

  # Keyboard: a gallery item is a button (Enter), the pad is not on this page.
  from selenium.webdriver.common.keys import Keys
  find("gallery-0").send_keys(Keys.ENTER)
  shown(items[0]["lam"][0])
  assert find("recon-caption").text == f"reconstruction at λ = {items[0]['lam'][0]:.3f}"
  assert find("lam-meaning").text.startswith("loss = (1 − λ)·dc + λ·tv")

  # Images at a whole multiple of their pixels: 64 px at 3×; 256 px at 1×, not
  # squeezed to 192 (which drops rows); a thumbnail smaller than the image smoothed.
  assert find("img-recon").size == {"width": 192, "height": 192}
  # The curves over λ sit under the controls, on the first screen (1400×1000).
  bottom = driver.execute_script(
      "return [document.getElementById('curve-psnr').getBoundingClientRect().bottom"
      " + window.scrollY, window.innerHeight];")
  assert bottom[0] < bottom[1], bottom
  fitted = driver.execute_script(
      "const i = document.createElement('img'), j = document.createElement('img');"
      "fitImage(i, 256, 192); fitImage(j, 256, 128, true);"
      "return [i.style.width, i.style.imageRendering, j.style.width, j.style.imageRendering];")
  assert fitted == ["256px", "pixelated", "128px", "auto"]

  # A diverse "pair" of one reconstruction (a small grid keeps one λ in the top
  # 10 %: evaluate.diverse_pair returns it twice) is said to be none.
  one = curve["best"]["psnr"]["index"]
  driver.execute_script("state.curve.diverse.indices = [arguments[0], arguments[0]];", one)
  find("diverse").click()
  assert find("pair-text").text.startswith("no diverse pair: of the ")
  assert not find("toggle").is_enabled()

  # A slice change clears what the old slice's λ set drew, at once; asked for
  # twice in a row, the page is idle only once the second slice's set is shown.
  n = len(driver.find_elements(By.CSS_SELECTOR, "#slice option"))
  other = [(index + 3) % n, (index + 5) % n]
  cleared = driver.execute_script(
      "const s = document.getElementById('slice');"
      "for (const v of arguments[0]) { s.value = String(v); s.dispatchEvent(new Event('change')); }"
      "return [document.getElementById('img-range').hasAttribute('src'),"
      "        document.getElementById('range-max').textContent, document.body.dataset.state];",
      other)
  assert cleared == [False, "–", "busy"]
  wait.until(idle)
  assert driver.execute_script("return state.curveSlice") == other[1]
  # Three significant digits, as the |error| scale: three decimals read 0.000
  # for a range below 5e-4.
  range_max = api(server, "/api/curve", slice=other[1])["range_max"]
  assert float(find("range-max").text) == pytest.approx(range_max, rel=5e-3)
  assert driver.execute_script("return [level(0.00042), level(0.5)]") == [
      "0.000420", "0.500"]

  errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors, errors


def test_four_terms_have_one_slider_per_coefficient_and_a_gallery(browser, four_server):
  from selenium.webdriver.common.by import By
  driver, url = browser, four_server
  find, wait, idle = page(driver, url)
  index = int(find("slice").get_attribute("value"))
  inputs = driver.find_elements(By.CSS_SELECTOR, "#coeff-sliders input.coeff")
  assert len(inputs) == 4 and find("coeff-box").is_displayed()
  assert not find("lam-slider").is_displayed() and not find("pad").is_displayed()
  assert not find("ternary").is_displayed()

  def values():
    return [float(i.get_attribute("value")) for i in inputs]

  def shown():
    """Waits for the page's coefficients to be shown; checks them against the API."""
    wait.until(lambda d: idle(d) and find("psnr").get_attribute("data-coeffs")
               == find("coeff-text").get_attribute("data-coeffs"))
    sent = find("psnr").get_attribute("data-coeffs")
    coeffs = [float(v) for v in sent.split(",")]
    assert coeffs == pytest.approx(values(), abs=1e-9) and sum(coeffs) == pytest.approx(1)
    answer = api(url, "/api/reconstruct", slice=index, coeffs=sent)
    assert find("psnr").text == f"{answer['metrics']['psnr']:.2f} dB"
    assert image(driver, "img-recon") == answer["images"]["recon"]
    return coeffs

  assert shown() == pytest.approx([0.25] * 4)
  before = image(driver, "img-recon")
  # Drag the second slider to 0.55: the others keep their ratios, the sum stays 1.
  driver.execute_script(
      "const s = document.getElementById('coeff-1'); s.value = '0.55';"
      "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));")
  coeffs = shown()
  assert coeffs == pytest.approx([0.15, 0.55, 0.15, 0.15], abs=1e-9)
  assert image(driver, "img-recon") != before
  assert [o.text for o in driver.find_elements(By.CSS_SELECTOR, "#coeff-sliders output")] == [
      "0.150", "0.550", "0.150", "0.150"]

  curve = api(url, "/api/curve", slice=index)
  items = curve["gallery"]["items"]
  figures = driver.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item")
  assert len(figures) == len(items) >= 4
  assert [int(f.get_attribute("data-index")) for f in figures] == curve["gallery"]["indices"]
  find("gallery-2").click()
  assert shown() == pytest.approx(items[2]["coeffs"], abs=1e-5)
  assert "current" in find("gallery-2").get_attribute("class")
  find("best-ssim").click()
  assert shown() == pytest.approx(curve["best"]["ssim"]["coeffs"], abs=1e-5)

  # The server gone (explore.py stopped) as the slice changes: the page says so,
  # shows none of the old slice's images or scores under the new slice's name,
  # and does not go on saying that it is computing the λ set.
  other = (index + 1) % len(driver.find_elements(By.CSS_SELECTOR, "#slice option"))
  driver.execute_script(
      "window.fetch = () => Promise.reject(new TypeError('Failed to fetch'));"
      "const s = document.getElementById('slice'); s.value = String(arguments[0]);"
      "s.dispatchEvent(new Event('change'));", other)
  wait.until(idle)
  assert find("psnr").text == "–" and find("ssim").text == "–", find("psnr").text
  for name in ("truth", "zero_filled", "recon", "error"):
    assert find(f"img-{name}").get_attribute("src") is None, name
  assert "does not answer" in find("error").text, find("error").text
  assert "computing" not in find("status").text, find("status").text

  errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors, errors


def test_three_terms_pad_puts_each_grid_lambda_at_its_cell_centre(browser, three_server):
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.keys import Keys
  driver, url = browser, three_server
  find, wait, idle = page(driver, url)
  pad = find("pad")
  assert pad.is_displayed() and find("ternary").is_displayed()
  assert not find("lam-slider").is_displayed()
  index = int(find("slice").get_attribute("value"))
  curve = api(url, "/api/curve", slice=index)
  n = api(url, "/api/info")["grid"]
  assert curve["lambdas"][0] == [0.0, 0.0] and curve["lambdas"][-1] == [1.0, 1.0]
  side = pad.size["width"]
  assert pad.size["height"] == side
  cell = side / n

  def click(i, j):
    """Clicks the centre of the pad's cell of grid point (λ1, λ2) = (i, j) / (n − 1)."""
    x, y = (i + 0.5) * cell, side - (j + 0.5) * cell
    # Offsets from the element's centre; whole pixels, so within half a pixel of the centre.
    ActionChains(driver).move_to_element_with_offset(
        pad, round(x - side / 2), round(y - side / 2)).click().perform()
    wait.until(idle)
    return driver.execute_script("return state.lam")

  # A click within half a pixel of a cell's centre is that cell's grid λ, to
  # half a pixel over the (n − 1)/n-wide span of a λ unit: 0.5 / (cell · (n − 1)).
  tol = 0.5 / (cell * (n - 1)) + 1e-9
  assert click(0, 0) == pytest.approx([0.0, 0.0], abs=tol)
  assert click(n - 1, n - 1) == pytest.approx([1.0, 1.0], abs=tol)
  assert click(1, n - 2) == pytest.approx([1 / (n - 1), (n - 2) / (n - 1)], abs=tol)
  # The marker at λ = (0, 0) is drawn whole, centred on cell (0, 0): its red
  # ring (radius 4) is inside the canvas on every side.
  driver.execute_script("setLam([0, 0], 'test');")
  wait.until(idle)
  red = driver.execute_script(
      "const c = document.getElementById('pad'), ctx = c.getContext('2d'), h = c.height;"
      "const x = arguments[0], y = h - arguments[0];"
      "return [[x - 4, y], [x + 4, y], [x, y - 4], [x, y + 4]].map("
      "  ([u, v]) => Array.from(ctx.getImageData(Math.round(u), Math.round(v), 1, 1).data));",
      0.5 * driver.execute_script("return document.getElementById('pad').width") / n)
  for r, g, b, _ in red:
    assert r > 150 and g < 100 and b < 100, red  # #d62728, antialiased
  # The arrow keys move λ by 0.01 from there, clipped to [0, 1].
  find("pad").send_keys(Keys.ARROW_LEFT, Keys.ARROW_RIGHT, Keys.ARROW_UP, Keys.ARROW_UP,
                        Keys.ARROW_DOWN)
  wait.until(idle)
  assert driver.execute_script("return state.lam") == pytest.approx([0.01, 0.01], abs=1e-12)
  errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors, errors
