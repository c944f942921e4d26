// The λ explorer's page: talks to the JSON API of hyperrecon_jax/explore.py.
// No libraries: curves and landscapes are drawn on <canvas>.
"use strict";

const state = { info: null, slice: 0, lam: [0.5], curve: null, pair: null, pairSide: 0,
                inflight: false, pending: false, curveSlice: -1 };
const $ = (id) => document.getElementById(id);
let METRICS = ["psnr", "ssim", "hfen"];  // and "dice" with a segmenter (info.metrics)
const LABELS = { psnr: "PSNR (dB)", ssim: "SSIM", hfen: "HFEN (lower is better)",
                 dice: "Dice of the segmentation" };

function fmt(v, digits) { return v === null || v === undefined ? "n/a" : v.toFixed(digits); }
function lamText(lam) { return lam.map((v) => v.toFixed(3)).join(", "); }
function lamParam(lam) { return lam.map((v) => String(v)).join(","); }

function setBusy() {
  document.body.dataset.state = (state.inflight || state.pending || state.curveLoading) ? "busy" : "idle";
}

function showError(text) { $("error").textContent = text || ""; }

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) { throw new Error(body.error || ("HTTP " + response.status)); }
  return body;
}

// --- λ input ----------------------------------------------------------------------

function setLam(lam, fromUser) {
  state.lam = lam.map((v) => Math.min(1, Math.max(0, v)));
  if (!fromUser && state.info.num_lambdas === 1) { $("lam-slider").value = String(state.lam[0]); }
  $("lam-text").textContent = lamText(state.lam);
  const base = "api/download?slice=" + state.slice + "&lam=" + lamParam(state.lam);
  $("dl-png").href = base + "&format=png";
  $("dl-npy").href = base + "&format=npy";
  drawCurves();
  requestRecon();
}

function padEvent(event) {
  const rect = $("pad").getBoundingClientRect();
  const x = (event.clientX - rect.left) / rect.width;
  const y = 1 - (event.clientY - rect.top) / rect.height;
  setLam([x, y], true);
}

// --- requests ---------------------------------------------------------------------

async function requestRecon() {
  if (state.inflight) { state.pending = true; setBusy(); return; }
  state.inflight = true; state.pending = false; setBusy();
  const slice = state.slice, lam = state.lam.slice();
  try {
    const r = await getJSON("api/reconstruct?slice=" + slice + "&lam=" + lamParam(lam));
    for (const k of ["truth", "zero_filled", "recon", "error"]) { $("img-" + k).src = r.images[k]; }
    $("psnr").textContent = fmt(r.metrics.psnr, 2) + " dB";
    $("ssim").textContent = fmt(r.metrics.ssim, 4);
    $("hfen").textContent = fmt(r.metrics.hfen, 4);
    if ("dice" in r.metrics) { $("dice").textContent = fmt(r.metrics.dice, 4); }
    $("psnr").dataset.lam = lamParam(lam);  // the λ asked for, as sent
    showError("");
  } catch (e) {
    showError(String(e.message || e));
  } finally {
    state.inflight = false;
    if (state.pending) { requestRecon(); } else { setBusy(); }
  }
}

async function loadCurve() {
  const slice = state.slice;
  state.curveLoading = true; setBusy();
  $("status").textContent = "computing the λ grid of slice " + slice + "…";
  for (const id of ["best-psnr", "best-ssim", "best-dice", "diverse", "toggle"]) { $(id).disabled = true; }
  try {
    const c = await getJSON("api/curve?slice=" + slice);
    if (slice !== state.slice) { return; }
    state.curve = c; state.curveSlice = slice;
    $("img-range").src = c.range;
    $("range-max").textContent = c.range_max.toFixed(3);
    $("best-psnr").disabled = !c.best.psnr;
    $("best-ssim").disabled = !c.best.ssim;
    $("best-dice").disabled = !c.best.dice;
    $("diverse").disabled = false;
    $("status").textContent = "";
    drawCurves();
  } catch (e) {
    showError(String(e.message || e));
  } finally {
    state.curveLoading = false; setBusy();
  }
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

function drawCurve(canvas, metric) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#222"; ctx.font = "12px sans-serif";
  ctx.fillText(LABELS[metric] + " over λ", 8, 14);
  if (!state.curve) { return; }
  const values = state.curve.metrics[metric], lams = state.curve.lambdas;
  const [lo, hi] = range(values);
  const L = 40, R = w - 10, T = 22, B = h - 22;
  const px = (x) => L + x * (R - L), py = (v) => B - (v - lo) / (hi - lo) * (B - T);
  ctx.strokeStyle = "#999"; ctx.strokeRect(L, T, R - L, B - T);
  ctx.fillText(hi.toPrecision(4), 2, T + 8); ctx.fillText(lo.toPrecision(4), 2, B);
  ctx.fillText("0", L - 3, h - 6); ctx.fillText("λ", (L + R) / 2, h - 6); ctx.fillText("1", R - 6, h - 6);
  ctx.strokeStyle = "#1f5fbf"; ctx.lineWidth = 2; ctx.beginPath();
  let started = false;
  values.forEach((v, i) => {
    if (v === null) { started = false; return; }
    if (started) { ctx.lineTo(px(lams[i][0]), py(v)); } else { ctx.moveTo(px(lams[i][0]), py(v)); started = true; }
  });
  ctx.stroke();
  ctx.strokeStyle = "#d62728"; ctx.lineWidth = 1.5; ctx.beginPath();
  ctx.moveTo(px(state.lam[0]), T); ctx.lineTo(px(state.lam[0]), B); ctx.stroke();
}

function drawLandscape(canvas, metric, title) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const n = state.info.grid, top = title ? 18 : 0, side = Math.min(w, h - top);
  if (state.curve) {
    const values = state.curve.metrics[metric];
    let [lo, hi] = range(values);
    const flip = metric === "hfen";  // bright = good for every metric
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
  const x = state.lam[0] * side, y = top + (1 - state.lam[1]) * side;
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.stroke();
  ctx.strokeStyle = "#d62728"; ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.stroke();
}

function drawCurves() {
  if (!state.info) { return; }
  for (const m of METRICS) {
    const canvas = $("curve-" + m);
    if (state.info.num_lambdas === 1) { drawCurve(canvas, m); }
    else { drawLandscape(canvas, m, LABELS[m] + " landscape (λ1 →, λ2 ↑)"); }
  }
  if (state.info.num_lambdas === 2) { drawLandscape($("pad"), "psnr", null); }
}

// --- buttons ----------------------------------------------------------------------

function goBest(metric) {
  if (state.curve && state.curve.best[metric]) { setLam(state.curve.best[metric].lam, false); }
}

function showPair() {
  const d = state.curve.diverse;
  state.pair = d.lambdas; state.pairSide = 0;
  $("pair-text").textContent = "diverse pair: λ = (" + lamText(d.lambdas[0]) + ") and (" +
      lamText(d.lambdas[1]) + "), ℓ2 distance " + d.distance.toFixed(3) + "; showing the first";
  $("toggle").disabled = false;
  setLam(d.lambdas[0], false);
}

function togglePair() {
  if (!state.pair) { return; }
  state.pairSide = 1 - state.pairSide;
  $("pair-text").textContent = $("pair-text").textContent.replace(
      /showing the (first|second)/, "showing the " + (state.pairSide ? "second" : "first"));
  setLam(state.pair[state.pairSide], false);
}

// --- start ------------------------------------------------------------------------

async function start() {
  setBusy();
  let info;
  try { info = await getJSON("api/info"); } catch (e) { showError(String(e.message || e)); return; }
  state.info = info;
  METRICS = info.metrics;
  if (METRICS.includes("dice")) {
    for (const id of ["dice-box", "best-dice", "curve-dice"]) { $(id).hidden = false; }
  }
  $("model").textContent = "model " + info.model + " (step " + info.step + ")";
  $("task").textContent = info.task.text;
  // The network's input is named for its task (physics.input_name).
  const input = info.task.input_name;
  $("input-caption").textContent = input === "zero-filled" ? "input (zero-filled magnitude)" : input;
  $("img-zero_filled").alt = input;
  if (info.task.mask_image) { $("mask-img").src = info.task.mask_image; $("mask-img").hidden = false; }
  $("source").textContent = info.source + ", " + info.num_slices + " slices";
  $("err-range").textContent = String(info.error_range);
  info.slices.forEach((s, i) => {
    const option = document.createElement("option");
    option.value = String(i); option.textContent = i + " (volume " + s.volume + ", slice " + s.slice + ")";
    $("slice").appendChild(option);
  });
  state.slice = Math.floor(info.num_slices / 2);
  $("slice").value = String(state.slice);
  $("slice").addEventListener("change", () => {
    state.slice = Number($("slice").value); state.curve = null; state.pair = null;
    $("pair-text").textContent = ""; $("toggle").disabled = true;
    setLam(state.lam, false); loadCurve();
  });
  if (info.num_lambdas === 1) {
    $("one-lambda").hidden = false;
    const slider = $("lam-slider");
    const onSlide = () => setLam([Number(slider.value)], true);
    slider.addEventListener("input", onSlide);
    slider.addEventListener("change", onSlide);
  } else {
    $("two-lambda").hidden = false;
    let dragging = false;
    $("pad").addEventListener("pointerdown", (e) => { dragging = true; padEvent(e); });
    $("pad").addEventListener("pointermove", (e) => { if (dragging) { padEvent(e); } });
    window.addEventListener("pointerup", () => { dragging = false; });
  }
  $("best-psnr").addEventListener("click", () => goBest("psnr"));
  $("best-ssim").addEventListener("click", () => goBest("ssim"));
  $("best-dice").addEventListener("click", () => goBest("dice"));
  $("diverse").addEventListener("click", showPair);
  $("toggle").addEventListener("click", togglePair);
  setLam(new Array(info.num_lambdas).fill(0.5), false);
  loadCurve();
}

start();
