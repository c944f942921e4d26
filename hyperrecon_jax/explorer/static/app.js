// The λ explorer's page: talks to the JSON API of hyperrecon_jax/explorer.
// No libraries: curves, landscapes and the coefficient triangle are drawn on <canvas>.
//
// A model of K loss terms is steered by K − 1 hyperparameters λ or, the same
// thing, K coefficients c on the simplex. The page keeps both (state.lam,
// state.coeffs) and sends the one the user set (state.by), so a λ from the
// slider or the pad reaches the model exactly as typed, and so does a c.
"use strict";

const state = { info: null, slice: 0, lam: [0.5], coeffs: [0.5, 0.5], by: "lam", curve: null,
                pair: null, pairSide: 0, inflight: false, pending: false, curveSlice: -1,
                axis: 0, curveLoading: false, curveTicket: 0 };
const $ = (id) => document.getElementById(id);
let METRICS = ["psnr", "ssim", "hfen"];  // and "dice" with a segmenter (info.metrics)
const LABELS = { psnr: "PSNR (dB)", ssim: "SSIM", hfen: "HFEN (lower is better)",
                 dice: "Dice of the segmentation" };
const LOWER_IS_BETTER = new Set(["hfen"]);

function fmt(v, digits) { return v === null || v === undefined ? "n/a" : v.toFixed(digits); }
function level(v) { return v.toPrecision(3); }  // a white level: three decimals read 0.000 below 5e-4
function decibels(v) { return v === null || v === undefined ? "n/a" : v.toFixed(2) + " dB"; }
function lamText(lam) { return lam.map((v) => v.toFixed(3)).join(", "); }
function lamParam(lam) { return lam.map((v) => String(v)).join(","); }
function clamp01(v) { return Math.min(1, Math.max(0, isFinite(v) ? v : 0)); }
function numCoeffs() { return state.info.num_coeffs; }
// λ sets of K ≤ 3 terms are grids in λ; beyond, a design of points in c.
function byCoeffs() { return numCoeffs() >= 4; }

// An image is drawn at a whole multiple of its pixels near `target` (64 px at 3× for
// 192), never squeezed: a browser shrinking 256 px to 192 drops every fourth row and
// column, so a 256-px image is drawn at 1×. A thumbnail (`shrink`) smaller than the
// image is averaged down instead (smooth, not sampled).
function fitImage(img, size, target, shrink = false) {
  const scale = shrink ? Math.floor(target / size) : Math.max(1, Math.floor(target / size));
  img.style.width = img.style.height = (scale >= 1 ? size * scale : target) + "px";
  img.style.imageRendering = scale >= 1 ? "pixelated" : "auto";
}

function setBusy() {
  document.body.dataset.state = (state.inflight || state.pending || state.curveLoading) ? "busy" : "idle";
}

function showError(text) { $("error").textContent = text || ""; }

async function getJSON(url) {
  let response;
  try { response = await fetch(url); } catch (e) {  // no answer at all: not a bad request
    throw new Error("the explorer does not answer (was explore.py stopped?): start it " +
                    "again and reload this page");
  }
  const body = await response.json();
  if (!response.ok) { throw new Error(body.error || ("HTTP " + response.status)); }
  return body;
}

// --- λ ↔ coefficients (hyperrecon_jax.hparams) -------------------------------------

function coefficientsOf(lam) {  // Eq. 9 for K = 2, stick-breaking (Eq. 10) beyond
  if (lam.length === 1) { return [1 - lam[0], lam[0]]; }
  const c = [];
  let rest = 1;
  for (const l of lam) { c.push(l * rest); rest *= 1 - l; }
  c.push(rest);
  return c;
}

function lambdasOf(c) {  // the inverse; λ_k = 0 where no mass is left for terms k…K
  if (c.length === 2) { return [c[1]]; }
  const lam = [];
  for (let k = 0; k < c.length - 1; k++) {
    const tail = c.slice(k).reduce((s, v) => s + v, 0);
    lam.push(tail > 0 ? clamp01(c[k] / tail) : 0);
  }
  return lam;
}

function normalized(c) {
  const positive = c.map(clamp01), total = positive.reduce((s, v) => s + v, 0);
  return total > 0 ? positive.map((v) => v / total) : c.map(() => 1 / c.length);
}

// Sets coefficient k to v and rescales the others in proportion, so the sum stays 1;
// when the others are all 0, they share the rest equally.
function rescaled(c, k, v) {
  v = clamp01(v);
  const rest = c.reduce((s, x, j) => (j === k ? s : s + x), 0);
  return c.map((x, j) => (j === k ? v : rest > 1e-12 ? x * (1 - v) / rest : (1 - v) / (c.length - 1)));
}

function pointQuery() {
  return state.by === "lam" ? "lam=" + lamParam(state.lam) : "coeffs=" + lamParam(state.coeffs);
}

// --- setting the point ------------------------------------------------------------

function setLam(lam, source) {
  state.lam = lam.map(clamp01);
  state.coeffs = coefficientsOf(state.lam);
  state.by = "lam";
  pointChanged(source);
}

function setCoeffs(c, source) {
  state.coeffs = normalized(c);
  state.lam = lambdasOf(state.coeffs);
  state.by = "coeffs";
  pointChanged(source);
}

// Point k of the curve's λ set, as the set gives it (λ for grids, c for designs).
function goIndex(k) {
  if (!state.curve) { return; }
  if (byCoeffs()) { setCoeffs(state.curve.coeffs[k], null); } else { setLam(state.curve.lambdas[k], null); }
}

function pointChanged(source) {
  if (source !== "slider" && state.info.num_lambdas === 1) { $("lam-slider").value = String(state.lam[0]); }
  state.coeffs.forEach((v, k) => {
    const input = $("coeff-" + k);
    if (input && source !== "coeff-" + k) { input.value = String(v); }
    if (input) { $("coeff-val-" + k).textContent = v.toFixed(3); }
  });
  $("lam-text").textContent = lamText(state.lam);
  $("recon-caption").textContent = "reconstruction at " + pointText(state);
  $("coeff-text").textContent = state.info.losses.map((n, k) => n + " " + state.coeffs[k].toFixed(3)).join(" · ");
  $("coeff-text").dataset.coeffs = lamParam(state.coeffs);
  const base = "api/download?slice=" + state.slice + "&" + pointQuery();
  $("dl-png").href = base + "&format=png";
  $("dl-npy").href = base + "&format=npy";
  markGallery();
  markPair();
  drawCurves();
  requestRecon();
}

function padKey(event) {  // arrows move λ1 (←, →) and λ2 (↓, ↑) by 0.01
  const step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowDown: [0, -1], ArrowUp: [0, 1] }[event.key];
  if (!step) { return; }
  event.preventDefault();
  setLam([state.lam[0] + 0.01 * step[0], state.lam[1] + 0.01 * step[1]], "pad");
}

// A landscape draws its n × n grid as n × n equal cells, so grid λ = k / (n − 1)
// sits at the centre of cell k: λ = 0 and 1 are half a cell inside the edges,
// and the marker on them is whole.
function cellFraction(lam) {
  const n = state.info.grid;
  return n > 1 ? (lam * (n - 1) + 0.5) / n : lam;
}

function lamAtFraction(f) {
  const n = state.info.grid;
  return n > 1 ? (f * n - 0.5) / (n - 1) : f;
}

function padEvent(event) {
  const rect = $("pad").getBoundingClientRect();
  const x = (event.clientX - rect.left) / rect.width;
  const y = 1 - (event.clientY - rect.top) / rect.height;
  setLam([lamAtFraction(x), lamAtFraction(y)], "pad");  // outside [0, 1]: clipped
}

// --- the coefficient triangle (K = 3) ------------------------------------------------

function triangle() {  // vertices of terms 1, 2, 3: bottom left, bottom right, top
  const canvas = $("ternary"), m = 22, w = canvas.width - 2 * m;
  const bottom = canvas.height - m, h = w * Math.sqrt(3) / 2;
  return [[m, bottom], [m + w, bottom], [m + w / 2, bottom - h]];
}

function ternaryPoint(c) {
  const v = triangle();
  return [0, 1].map((d) => c[0] * v[0][d] + c[1] * v[1][d] + c[2] * v[2][d]);
}

function ternaryEvent(event) {
  const canvas = $("ternary"), rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * canvas.width / rect.width;
  const y = (event.clientY - rect.top) * canvas.height / rect.height;
  const [a, b, c] = triangle();
  const det = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1]);
  const l0 = ((b[1] - c[1]) * (x - c[0]) + (c[0] - b[0]) * (y - c[1])) / det;
  const l1 = ((c[1] - a[1]) * (x - c[0]) + (a[0] - c[0]) * (y - c[1])) / det;
  setCoeffs([l0, l1, 1 - l0 - l1], "ternary");  // outside: clipped onto the triangle
}

function drawTernary() {
  const canvas = $("ternary"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const v = triangle();
  ctx.fillStyle = "#f3f3f3"; ctx.strokeStyle = "#888"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(...v[0]); ctx.lineTo(...v[1]); ctx.lineTo(...v[2]); ctx.closePath();
  ctx.fill(); ctx.stroke();
  if (state.curve) {
    const values = state.curve.metrics.psnr, [lo, hi] = range(values);
    state.curve.coeffs.forEach((c, k) => {
      const [x, y] = ternaryPoint(c);
      ctx.fillStyle = colour(values[k] === null ? 0 : (values[k] - lo) / (hi - lo));
      ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.fill();
    });
  }
  ctx.fillStyle = "#222"; ctx.font = "12px sans-serif"; ctx.textAlign = "center";
  const names = state.info.losses;
  ctx.fillText(names[0], v[0][0] + 4, v[0][1] + 15);
  ctx.fillText(names[1], v[1][0] - 4, v[1][1] + 15);
  ctx.fillText(names[2], v[2][0], v[2][1] - 6);
  ctx.textAlign = "start";
  const [x, y] = ternaryPoint(state.coeffs);
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.stroke();
  ctx.strokeStyle = "#d62728"; ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.stroke();
}

// --- requests ---------------------------------------------------------------------

async function requestRecon() {
  if (state.inflight) { state.pending = true; setBusy(); return; }
  state.inflight = true; state.pending = false; setBusy();
  const slice = state.slice, lam = state.lam.slice(), coeffs = state.coeffs.slice();
  const query = pointQuery();
  try {
    const r = await getJSON("api/reconstruct?slice=" + slice + "&" + query);
    for (const k of ["truth", "zero_filled", "recon", "error"]) { $("img-" + k).src = r.images[k]; }
    $("psnr").textContent = decibels(r.metrics.psnr);
    $("ssim").textContent = fmt(r.metrics.ssim, 4);
    $("hfen").textContent = fmt(r.metrics.hfen, 4);
    if ("dice" in r.metrics) { $("dice").textContent = fmt(r.metrics.dice, 4); }
    $("err-range").textContent = level(r.error_scale);
    $("err-caption").title = "white: the " + state.info.error_percentile + "th percentile of this " +
        "slice's |error| at the simplex's vertices and centre, the same for every λ";
    // The point asked for, as sent.
    $("psnr").dataset.lam = lamParam(lam);
    $("psnr").dataset.coeffs = lamParam(coeffs);
    showError("");
  } catch (e) {
    // What the page showed was another point's (or slice's): none of it stays
    // under the labels of the point asked for.
    for (const k of ["truth", "zero_filled", "recon", "error"]) { $("img-" + k).removeAttribute("src"); }
    for (const m of ["psnr", "ssim", "hfen", "dice"]) { $(m).textContent = "–"; }
    $("err-range").textContent = "–";
    delete $("psnr").dataset.lam; delete $("psnr").dataset.coeffs;
    showError(String(e.message || e));
  } finally {
    state.inflight = false;
    if (state.pending) { requestRecon(); } else { setBusy(); }
  }
}

function bestButtons() { return METRICS.map((m) => "best-" + m); }

function sliceText(i) {  // as the slice menu names it: the volume's slice number, not the position
  const s = state.info.slices[i];
  return "slice " + s.slice + " of " + (s.name || "volume " + s.volume);
}

async function loadCurve() {
  const slice = state.slice, ticket = ++state.curveTicket;
  state.curveLoading = true; setBusy();
  $("status").textContent = "computing the λ set of " + sliceText(slice) + "…";
  for (const id of [...bestButtons(), "diverse", "toggle"]) { $(id).disabled = true; }
  // What was drawn from the previous slice's λ set goes until this one's arrives.
  $("gallery").replaceChildren();
  $("img-range").removeAttribute("src");
  $("range-max").textContent = "–";
  $("gallery-text").textContent = "gallery: waiting for the λ set of " + sliceText(slice);
  try {
    const c = await getJSON("api/curve?slice=" + slice);
    if (ticket !== state.curveTicket) { return; }  // a later slice was asked for
    state.curve = c; state.curveSlice = slice;
    $("img-range").src = c.range;
    $("range-max").textContent = level(c.range_max);
    for (const m of METRICS) { $("best-" + m).disabled = !c.best[m]; }
    $("diverse").disabled = !c.diverse;  // null: no reconstruction has a PSNR
    $("status").textContent = "";
    showGallery();
    drawCurves();
  } catch (e) {
    if (ticket === state.curveTicket) {  // said in the status, which a later move keeps
      $("status").textContent = "the λ set of " + sliceText(slice) + " could not be computed: " +
          String(e.message || e);
      $("gallery-text").textContent = "gallery: no λ set of " + sliceText(slice);
      showError(String(e.message || e));
    }
  } finally {
    // Only the request of the slice shown ends the wait: a discarded one is not it.
    if (ticket === state.curveTicket) { state.curveLoading = false; setBusy(); }
  }
}

// --- the gallery ------------------------------------------------------------------

function pointText(item) {
  return byCoeffs() || numCoeffs() === 3 ? "c = " + item.coeffs.map((v) => v.toFixed(2)).join(", ")
                                         : "λ = " + lamText(item.lam);
}

function showGallery() {
  const g = state.curve.gallery, box = $("gallery");
  box.replaceChildren();
  if (!g) {
    $("gallery-text").textContent = "gallery: no reconstruction of this slice has a PSNR " +
        "(the model's output is not finite)";
    return;
  }
  $("gallery-text").textContent = g.items.length > 1
    ? "gallery: the " + g.items.length + " most different of the " + g.num_candidates +
      " reconstructions within " + g.tolerance_db + " dB of the best PSNR (click one to load it)"
    : "gallery: only the best reconstruction is within " + g.tolerance_db + " dB of the best PSNR";
  g.items.forEach((item, j) => {
    const figure = document.createElement("figure");
    figure.className = "gallery-item";
    figure.id = "gallery-" + j;
    figure.dataset.index = String(item.index);
    figure.tabIndex = 0;
    figure.setAttribute("role", "button");
    const img = document.createElement("img");
    img.src = item.image; img.alt = "candidate " + (j + 1);
    fitImage(img, state.info.image_size, 128, true);
    const caption = document.createElement("figcaption");
    caption.textContent = decibels(item.metrics.psnr) + " · " + pointText(item);
    figure.append(img, caption);
    figure.addEventListener("click", () => goIndex(item.index));
    figure.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); goIndex(item.index); }
    });
    box.appendChild(figure);
  });
  markGallery();
}

function markGallery() {  // outlines the candidate shown, if one is
  if (!state.curve || !state.curve.gallery) { return; }
  const key = lamParam(state.coeffs.map((v) => v.toFixed(4)));
  state.curve.gallery.items.forEach((item, j) => {
    const same = lamParam(item.coeffs.map((v) => v.toFixed(4))) === key;
    $("gallery-" + j).classList.toggle("current", same);
  });
}

// --- drawing ----------------------------------------------------------------------

function colour(t) {  // dark blue → teal → yellow, t in [0, 1]
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  t = Math.min(1, Math.max(0, isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return "rgb(" + c.join(",") + ")";
}

function range(values) {
  const finite = values.filter((v) => v !== null && isFinite(v));
  if (!finite.length) { return [0, 1]; }
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (hi === lo) { hi = lo + 1e-6; }
  return [lo, hi];
}

// A metric against one coordinate: λ (K = 2), or a coefficient (K ≥ 4, design points).
function drawCurve(canvas, metric) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  const scatter = byCoeffs(), term = state.info.losses[state.axis];
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#222"; ctx.font = "12px sans-serif";
  ctx.fillText(LABELS[metric] + (scatter ? " against c(" + term + ")" : " over λ"), 8, 14);
  if (!state.curve) { return; }
  const values = state.curve.metrics[metric];
  const xs = scatter ? state.curve.coeffs.map((c) => c[state.axis]) : state.curve.lambdas.map((l) => l[0]);
  const now = scatter ? state.coeffs[state.axis] : state.lam[0];
  const [lo, hi] = range(values);
  const L = 40, R = w - 10, T = 22, B = h - 22;
  const px = (x) => L + x * (R - L), py = (v) => B - (v - lo) / (hi - lo) * (B - T);
  ctx.strokeStyle = "#999"; ctx.strokeRect(L, T, R - L, B - T);
  ctx.fillText(hi.toPrecision(4), 2, T + 8); ctx.fillText(lo.toPrecision(4), 2, B);
  ctx.fillText("0", L - 3, h - 6); ctx.fillText(scatter ? "c(" + term + ")" : "λ", (L + R) / 2 - 10, h - 6);
  ctx.fillText("1", R - 6, h - 6);
  if (scatter) {
    const best = state.curve.best[metric];
    values.forEach((v, i) => {
      if (v === null) { return; }
      ctx.fillStyle = best && best.index === i ? "#d62728" : "#1f5fbf";
      ctx.beginPath(); ctx.arc(px(xs[i]), py(v), best && best.index === i ? 4 : 2.5, 0, 2 * Math.PI); ctx.fill();
    });
  } else {
    ctx.strokeStyle = "#1f5fbf"; ctx.lineWidth = 2; ctx.beginPath();
    let started = false;
    values.forEach((v, i) => {
      if (v === null) { started = false; return; }
      if (started) { ctx.lineTo(px(xs[i]), py(v)); } else { ctx.moveTo(px(xs[i]), py(v)); started = true; }
    });
    ctx.stroke();
  }
  ctx.strokeStyle = "#d62728"; ctx.lineWidth = 1.5; ctx.beginPath();
  ctx.moveTo(px(now), T); ctx.lineTo(px(now), B); ctx.stroke();
}

function drawLandscape(canvas, metric, title) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const n = state.info.grid, top = title ? 18 : 0, side = Math.min(w, h - top);
  if (state.curve) {
    const values = state.curve.metrics[metric];
    let [lo, hi] = range(values);
    const flip = LOWER_IS_BETTER.has(metric);  // bright = good for every metric
    values.forEach((v, k) => {
      const i = Math.floor(k / n), j = k % n;  // λ2 varies fastest
      const t = v === null ? 0 : (v - lo) / (hi - lo);
      ctx.fillStyle = colour(flip ? 1 - t : t);
      ctx.fillRect(i * side / n, top + side - (j + 1) * side / n, side / n + 1, side / n + 1);
    });
  } else {
    ctx.fillStyle = "#eee"; ctx.fillRect(0, top, side, side);
  }
  if (title) { ctx.fillStyle = "#222"; ctx.font = "12px sans-serif"; ctx.fillText(title, 4, 13); }
  if (title && state.curve) {  // the colour scale, bright = good, beside the square
    const [lo, hi] = range(state.curve.metrics[metric]), flip = LOWER_IS_BETTER.has(metric);
    const x0 = side + 8, steps = 32;
    for (let k = 0; k < steps; k++) {
      ctx.fillStyle = colour(1 - (k + 0.5) / steps);
      ctx.fillRect(x0, top + k * side / steps, 12, side / steps + 1);
    }
    ctx.fillStyle = "#222";
    ctx.fillText((flip ? lo : hi).toPrecision(4), x0 + 16, top + 10);
    ctx.fillText((flip ? hi : lo).toPrecision(4), x0 + 16, top + side);
  }
  const x = cellFraction(state.lam[0]) * side, y = top + (1 - cellFraction(state.lam[1])) * side;
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.stroke();
  ctx.strokeStyle = "#d62728"; ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.stroke();
}

function drawCurves() {
  if (!state.info) { return; }
  for (const m of METRICS) {
    const canvas = $("curve-" + m);
    if (state.info.num_lambdas === 2) { drawLandscape(canvas, m, LABELS[m] + " landscape (λ1 →, λ2 ↑)"); }
    else { drawCurve(canvas, m); }
  }
  if (state.info.num_lambdas === 2) { drawLandscape($("pad"), "psnr", null); drawTernary(); }
}

// --- buttons ----------------------------------------------------------------------

function goBest(metric) {
  if (state.curve && state.curve.best[metric]) { goIndex(state.curve.best[metric].index); }
}

function pairText(k) {
  const item = { lam: state.curve.lambdas[k], coeffs: state.curve.coeffs[k] };
  return pointText(item);
}

function showPair() {
  const d = state.curve.diverse;
  if (d.indices[0] === d.indices[1]) {  // evaluate.diverse_pair keeps one: no pair
    state.pair = null;
    $("pair-text").textContent = "no diverse pair: of the " + state.curve.lambdas.length +
        " λ of this slice, only (" + pairText(d.indices[0]) + ") is in the top 10 % by PSNR; " +
        "the gallery below shows the good ones";
    $("toggle").disabled = true;
    goIndex(d.indices[0]);
    return;
  }
  state.pair = d.indices; state.pairSide = 0;
  state.pairBase = "diverse pair: (" + pairText(d.indices[0]) + ") and (" +
      pairText(d.indices[1]) + "), ℓ2 distance " + d.distance.toFixed(3);
  $("toggle").disabled = false;
  goIndex(d.indices[0]);
}

function markPair() {  // says which of the pair is shown: neither once the point moved off it
  if (!state.pair || !state.curve) { return; }
  const key = lamParam(state.coeffs.map((v) => v.toFixed(4)));
  const side = state.pair.findIndex(
      (k) => lamParam(state.curve.coeffs[k].map((v) => v.toFixed(4))) === key);
  $("pair-text").textContent = state.pairBase + "; " + (side < 0
      ? "showing neither (toggle pair goes back to one)" : "showing the " + (side ? "second" : "first"));
}

function togglePair() {
  if (!state.pair) { return; }
  state.pairSide = 1 - state.pairSide;
  goIndex(state.pair[state.pairSide]);
}

// --- start ------------------------------------------------------------------------

function buildCoefficientSliders(info) {
  info.losses.forEach((name, k) => {
    const row = document.createElement("label");
    row.className = "coeff-row";
    const term = document.createElement("span");
    term.className = "term"; term.textContent = name;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: "0", max: "1", step: "any", id: "coeff-" + k });
    input.className = "coeff";
    input.setAttribute("aria-label", "coefficient of " + name);
    const value = document.createElement("output");
    value.id = "coeff-val-" + k;
    row.append(term, input, value);
    $("coeff-sliders").appendChild(row);
    const onSlide = () => setCoeffs(rescaled(state.coeffs, k, Number(input.value)), "coeff-" + k);
    input.addEventListener("input", onSlide);
    input.addEventListener("change", onSlide);
  });
}

function dragging(canvas, handler) {
  let down = false;
  canvas.addEventListener("pointerdown", (e) => { down = true; handler(e); });
  canvas.addEventListener("pointermove", (e) => { if (down) { handler(e); } });
  window.addEventListener("pointerup", () => { down = false; });
}

async function start() {
  setBusy();
  let info;
  try { info = await getJSON("api/info"); } catch (e) { showError(String(e.message || e)); return; }
  state.info = info;
  METRICS = info.metrics;
  if (METRICS.includes("dice")) {
    for (const id of ["dice-box", "best-dice", "curve-dice"]) { $(id).hidden = false; }
  }
  $("model").textContent = "model " + info.model + " (step " + info.step + ", " +
    info.image_size + "×" + info.image_size + " px)";
  $("task").textContent = info.task.text;
  $("losses").textContent = info.losses.join(", ");
  // The network's input is named for its task (physics.input_name).
  const input = info.task.input_name;
  $("input-caption").textContent = input === "zero-filled" ? "input (zero-filled magnitude)" : input;
  $("img-zero_filled").alt = input;
  if (info.task.mask_image) { $("mask-img").src = info.task.mask_image; $("mask-img").hidden = false; }
  for (const k of ["truth", "zero_filled", "recon", "error", "range"]) {
    fitImage($("img-" + k), info.image_size, 192);
  }
  fitImage($("mask-img"), info.image_size, 64, true);
  $("source").textContent = info.source + ", " + info.num_slices + " slices";
  info.slices.forEach((s, i) => {
    const option = document.createElement("option");
    option.value = String(i); option.textContent = i + " (" + (s.name || "volume " + s.volume) + ", slice " + s.slice + ")";
    $("slice").appendChild(option);
  });
  state.slice = Math.floor(info.num_slices / 2);
  $("slice").value = String(state.slice);
  $("slice").addEventListener("change", () => {
    state.slice = Number($("slice").value); state.curve = null; state.pair = null;
    $("pair-text").textContent = ""; $("toggle").disabled = true;
    pointChanged(null); loadCurve();
  });
  if (info.num_lambdas === 1) {
    $("one-lambda").hidden = false;
    $("lam-meaning").textContent = "loss = (1 − λ)·" + info.losses[0] + " + λ·" + info.losses[1] +
        " (each term over its loss scale): λ = 0 weights " + info.losses[0] + " alone, λ = 1 " +
        info.losses[1] + " alone";
    const slider = $("lam-slider");
    const onSlide = () => setLam([Number(slider.value)], "slider");
    slider.addEventListener("input", onSlide);
    slider.addEventListener("change", onSlide);
  } else {
    $("coeff-box").hidden = false;
    buildCoefficientSliders(info);
  }
  if (info.num_lambdas === 2) {
    $("two-lambda").hidden = false;
    $("ternary-box").hidden = false;
    dragging($("pad"), padEvent);
    $("pad").addEventListener("keydown", padKey);
    dragging($("ternary"), ternaryEvent);
  }
  if (byCoeffs()) {  // a design in c: curves against one coefficient, chosen here
    $("axis-box").hidden = false;
    info.losses.forEach((name, k) => {
      const option = document.createElement("option");
      option.value = String(k); option.textContent = name;
      $("axis-term").appendChild(option);
    });
    $("axis-term").addEventListener("change", () => { state.axis = Number($("axis-term").value); drawCurves(); });
  }
  for (const m of METRICS) { $("best-" + m).addEventListener("click", () => goBest(m)); }
  $("diverse").addEventListener("click", showPair);
  $("toggle").addEventListener("click", togglePair);
  if (byCoeffs()) { setCoeffs(new Array(info.num_coeffs).fill(1 / info.num_coeffs), null); }
  else { setLam(new Array(info.num_lambdas).fill(0.5), null); }
  loadCurve();
}

start();
