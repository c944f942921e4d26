"""Figures of a λ-grid evaluation: metric curves, λ landscapes, slice panels, range maps.

Every function draws one matplotlib figure, writes it as a PNG to ``path``
(creating missing folders) and returns the path. Figures are built on
``matplotlib.figure.Figure`` with the Agg canvas, never through ``pyplot``, so
they neither need a display nor change the backend or the global figure list
of an interactive session. matplotlib is imported on first use.

Results are the dicts of `hyperrecon_jax.evaluate.evaluate_grid` (or read back
with `results.from_json`).
"""

import os

import numpy as np

from hyperrecon_jax import extras
from hyperrecon_jax import results
from hyperrecon_jax.errors import InputError

DPI = 110
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mae": "MAE", "nmse": "NMSE",
          "hfen": "HFEN", "rpsnr": "rPSNR (dB)", "dice": "segmentation Dice"}


def require_matplotlib():
  """matplotlib's Figure and Agg canvas modules.

  Returns:
    ``(matplotlib.figure, matplotlib.backends.backend_agg)``.

  Raises:
    extras.MissingDependency: matplotlib is not installed or does not import;
      a report calls this before it evaluates anything.
  """
  return (extras.require("matplotlib.figure", "viz", "hyperrecon_jax.plots"),
          extras.require("matplotlib.backends.backend_agg", "viz", "hyperrecon_jax.plots"))


def _figure(width, height):
  """A pyplot-free Figure with an Agg canvas."""
  figure, agg = require_matplotlib()
  fig = figure.Figure(figsize=(width, height), dpi=DPI)
  agg.FigureCanvasAgg(fig)
  return fig


def _save(fig, path):
  path = os.fspath(path)
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, format="png", dpi=DPI)
  return path


def _lambdas(result, num):
  lam = np.asarray(result["lambdas"], np.float64)
  if lam.ndim != 2 or lam.shape[1] != num:
    raise InputError(
        f"this figure needs a grid over {num} hyperparameter(s), result['lambdas'] "
                     f"has shape {lam.shape}.")
  return lam


def _check_metric(result, metric):
  if metric not in result.get("metrics", ()):
    raise InputError(f"metric must be one of {result.get('metrics')}, got {metric!r}.")


def metric_curves(result, path, metrics=("psnr", "ssim", "hfen"), *, band: str = "std"):
  """Metric against λ for one hyperparameter, one panel per metric.

  Each panel shows the mean over slices, a shaded band (±1 standard deviation
  over slices, or the interquartile range), the network input's score as a
  dashed line (labelled ``result['input_name']``, else "zero-filled") and the
  best λ as a dot.

  Args:
    result: an `evaluate.evaluate_grid` result over a (G, 1) λ grid.
    path: output PNG path.
    metrics: names of ``result['metrics']`` to draw.
    band: ``'std'`` or ``'iqr'``.

  Returns:
    ``path``.
  """
  lam = _lambdas(result, 1)[:, 0]
  if isinstance(metrics, str) or not metrics:
    raise InputError(f"metrics must be a non-empty sequence of names, got {metrics!r}.")
  if band not in ("std", "iqr"):
    raise InputError(f"band must be 'std' or 'iqr', got {band!r}.")
  for m in metrics:
    _check_metric(result, m)
  fig = _figure(3.2 * len(metrics), 2.8)
  for k, m in enumerate(metrics):
    ax = fig.add_subplot(1, len(metrics), k + 1)
    mean = results.metric_array(result, m)
    if band == "std":
      std = results.metric_array(result, m, "std")
      lo, hi, what = mean - std, mean + std, "±1 std"
    else:
      lo, hi = results.metric_array(result, m, "q25"), results.metric_array(result, m, "q75")
      what = "IQR"
    ax.fill_between(lam, lo, hi, alpha=0.25, color="C0", lw=0, label=what)
    ax.plot(lam, mean, color="C0", lw=1.5, label="mean")
    zf = result["zero_filled"]["mean"][m]
    if zf is not None:
      ax.axhline(zf, color="0.4", ls="--", lw=1,
                 label=result.get("input_name", "zero-filled"))
    if m == "dice" and result.get("ground_truth_dice"):
      ax.axhline(result["ground_truth_dice"]["mean"], color="C2", ls=":", lw=1,
                 label="ground truth")
    if result.get("baselines") and m in result["baselines"]["mean"]:  # paper Fig. 3/4
      b = result["baselines"]
      b_mean = np.array(b["mean"][m], np.float64)
      # Stored results of older shipped models have means only.
      b_std = np.array(b["std"][m], np.float64) if "std" in b else None
      # A shipped model's Unets are scores stored in its info.json, not measured here.
      ax.errorbar(np.asarray(b["lambdas"], np.float64)[:, 0], b_mean, yerr=b_std,
                  fmt="s", ms=4, color="C1", capsize=2, lw=1,
                  label="Unet at λ" + (" (±1 std)" if b_std is not None else "")
                  + (", stored" if "stored" in b else ""))
    if result["best"].get(m) is not None:
      best = results.best_lambda(result, m)
      ax.plot([best.lam[0]], [best.value], "o", color="C3",
              label=f"best λ={best.lam[0]:.2f}")
    ax.set_xlabel("λ")
    ax.set_ylabel(LABELS.get(m, m))
    # A margin: the markers at the ends (Unets at λ = 0 and 1) are drawn whole.
    pad = 0.03 * (lam.max() - lam.min()) or 0.03
    ax.set_xlim(lam.min() - pad, lam.max() + pad)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
  return _save(fig, path)


def landscape(result, path, metric: str = "psnr"):
  """Heat map of a metric's mean over a λ1 × λ2 lattice, best point starred.

  Args:
    result: an `evaluate.evaluate_grid` result over a (n1·n2, 2) lattice with
      λ2 varying fastest (``hparams.grid(num, 2)``).
    path: output PNG path.
    metric: a name of ``result['metrics']``.

  Returns:
    ``path``.
  """
  lam = _lambdas(result, 2)
  _check_metric(result, metric)
  a1, a2 = np.unique(lam[:, 0]), np.unique(lam[:, 1])
  lattice = np.stack(np.meshgrid(a1, a2, indexing="ij"), -1).reshape(-1, 2)
  if lattice.shape != lam.shape or not np.allclose(lattice, lam):
    raise InputError("landscape needs a full λ1 × λ2 lattice with λ2 varying fastest "
                     f"(hparams.grid(num, 2)); got {lam.shape[0]} points that are not one.")
  values = results.metric_array(result, metric).reshape(a1.size, a2.size)
  fig = _figure(4.2, 3.6)
  ax = fig.add_subplot(1, 1, 1)
  # Cells centred on the grid points: λ1 on x, λ2 on y.
  im = ax.pcolormesh(_edges(a1), _edges(a2), values.T, cmap="viridis", shading="flat")
  fig.colorbar(im, ax=ax, label=LABELS.get(metric, metric))
  best = results.best_lambda(result, metric)
  ax.plot([best.lam[0]], [best.lam[1]], "*", color="w", mec="k", ms=12)
  ax.set_title(f"best λ = ({best.lam[0]:.2f}, {best.lam[1]:.2f}): {_fmt(best.value)}",
               fontsize=9)
  ax.set_xlabel("λ1")
  ax.set_ylabel("λ2")
  ax.set_aspect("equal")
  return _save(fig, path)


def lambda_histogram(kept, path, *, bins: int = 10, title: str = "λ kept by DHS"):
  """Histogram of λ values (paper Fig. 6, right): 1-D bars or a 2-D heat map.

  Args:
    kept: (N, n) λ in [0, 1], n = 1 or 2 (e.g. from
      `train.step.dhs_selected_lambdas`).
    path: output PNG path.
    bins: bins per hyperparameter over [0, 1].
    title: the figure title.

  Returns:
    ``path``.
  """
  kept = np.asarray(kept, np.float64)
  if kept.ndim != 2 or kept.shape[1] not in (1, 2) or not len(kept):
    raise InputError(f"kept must have shape (N, 1) or (N, 2) with N ≥ 1, got {kept.shape}.")
  if isinstance(bins, bool) or int(bins) != bins or bins < 1:
    raise InputError(f"bins must be an integer ≥ 1, got {bins!r}.")
  edges = np.linspace(0.0, 1.0, int(bins) + 1)
  fig = _figure(4.2, 3.4)
  ax = fig.add_subplot(1, 1, 1)
  if kept.shape[1] == 1:
    ax.hist(kept[:, 0], bins=edges, color="C0", density=True)
    ax.set_xlabel("λ")
    ax.set_ylabel("density")
  else:
    counts, _, _ = np.histogram2d(kept[:, 0], kept[:, 1], bins=[edges, edges])
    im = ax.pcolormesh(edges, edges, counts.T / len(kept), cmap="magma", shading="flat")
    fig.colorbar(im, ax=ax, label="fraction kept")
    ax.set_xlabel("λ1")
    ax.set_ylabel("λ2")
    ax.set_aspect("equal")
  ax.set_title(f"{title} (N = {len(kept)})", fontsize=9)
  return _save(fig, path)


def _edges(axis):
  """Cell edges around sorted grid coordinates (midpoints, end cells mirrored)."""
  if axis.size == 1:
    return np.array([axis[0] - 0.5, axis[0] + 0.5])
  mid = (axis[1:] + axis[:-1]) / 2
  return np.concatenate([[2 * axis[0] - mid[0]], mid, [2 * axis[-1] - mid[-1]]])


def _image(name, x, shape=None):
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or (shape is not None and x.shape != shape):
    want = "(H, W)" if shape is None else str(shape)
    raise InputError(f"{name} must have shape {want}, got shape {x.shape}.")
  return x


def finite_top(arrays) -> float:
  """The largest finite value of ``arrays``, 0.0 if none: an image's top colour.

  Finite only: one NaN pixel (a model's output not finite somewhere) would
  make ``max`` NaN, and an image drawn on a NaN scale is blank.
  """
  values = np.asarray(arrays, np.float64)
  values = values[np.isfinite(values)]
  return float(values.max()) if values.size else 0.0


def _psnr(x, target):
  mse = np.mean((x - target) ** 2)
  return np.inf if mse == 0 else 10 * np.log10(1.0 / mse)


def _fmt(v):
  return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def _lam_text(lam):
  return ", ".join(f"{v:.2f}" for v in np.atleast_1d(lam))


def slice_panel(target, zero_filled_mag, recons, lams, path, metric_values=None, *,
                errors: bool = False, metric_name: str = "PSNR", baseline=None,
                baseline_lams=None, input_name: str = "zero-filled"):
  """Ground truth, zero-filled input and reconstructions at several λ, side by side.

  Images share the grey [0, 1] range. Titles give λ and the metric (PSNR with
  peak 1, computed here unless ``metric_values`` are given). With ``errors``,
  a second row shows |image − ground truth| on one shared colour scale.

  Args:
    target: (H, W) ground truth.
    zero_filled_mag: (H, W) magnitude of the zero-filled input.
    recons: (N, H, W) reconstructions.
    lams: N hyperparameter values: (N,) or (N, n).
    path: output PNG path.
    metric_values: optional (N,) values for the reconstructions' titles.
    errors: add the row of absolute-error maps.
    metric_name: the name shown with ``metric_values``.
    baseline: optional (N, H, W) reconstructions of Unets, shown in a row
      under the HyperRecon row (paper Fig. 5a), Unet k under reconstruction
      k: order ``recons`` so that each is the HyperRecon reconstruction at
      (or nearest) its Unet's λ; the report reconstructs it at that λ.
    baseline_lams: the λ each Unet was trained at, shape as ``lams``; None:
      ``lams`` (the HyperRecon row is at the Unets' own λ).
    input_name: the input's title (`physics.input_name` of the task).

  Returns:
    ``path``.
  """
  target = _image("target", target)
  zf = _image("zero_filled_mag", zero_filled_mag, target.shape)
  recons = np.asarray(recons, np.float64)
  if recons.ndim != 3 or recons.shape[1:] != target.shape or recons.shape[0] < 1:
    raise InputError(
        f"recons must have shape (N, {target.shape[0]}, {target.shape[1]}) with "
                     f"N >= 1, got shape {recons.shape}.")
  n = recons.shape[0]
  lams = np.asarray(lams, np.float64)
  if lams.shape[:1] != (n,) or lams.ndim > 2:
    raise InputError(
        f"lams must have shape ({n},) or ({n}, n_lambdas), got shape {lams.shape}.")
  if metric_values is None:
    values, metric_name = [_psnr(r, target) for r in recons], "PSNR"
  else:
    values = np.asarray(metric_values, np.float64)
    if values.shape != (n,):
      raise InputError(f"metric_values must have shape ({n},), got shape {values.shape}.")
  if baseline is not None:
    baseline = np.asarray(baseline, np.float64)
    if baseline.shape != recons.shape:
      raise InputError(f"baseline must have the shape of recons {recons.shape}, got "
                       f"shape {baseline.shape}.")
    baseline_lams = lams if baseline_lams is None else np.asarray(baseline_lams, np.float64)
    if baseline_lams.shape != lams.shape:
      raise InputError(f"baseline_lams must have the shape of lams {lams.shape}, got shape "
                       f"{baseline_lams.shape}.")
  images = [target, zf] + list(recons)
  titles = ["ground truth", f"{input_name}\nPSNR {_fmt(_psnr(zf, target))}"] + [
      f"λ = {_lam_text(lam)}\n{metric_name} {_fmt(v)}" for lam, v in zip(lams, values)]
  rows, cols = (2 if errors else 1) + (baseline is not None), n + 2
  fig = _figure(1.9 * cols, 2.1 * rows + 0.2)
  err_max = finite_top([np.abs(x - target) for x in images[1:]]) or 1.0
  for k, (img, title) in enumerate(zip(images, titles)):
    ax = fig.add_subplot(rows, cols, k + 1)
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    if errors and k > 0:
      ax = fig.add_subplot(rows, cols, cols + k + 1)
      im = ax.imshow(np.abs(img - target), cmap="inferno", vmin=0.0, vmax=err_max,
                     interpolation="nearest")
      ax.set_title("|error|", fontsize=8)
      ax.set_axis_off()
  if baseline is not None:
    ax = fig.add_subplot(rows, cols, rows * cols - cols + 1)
    ax.text(0.5, 0.5, "Unet trained\nat each λ", ha="center", va="center", fontsize=9)
    ax.set_axis_off()
    for k, (img, lam) in enumerate(zip(baseline, baseline_lams)):
      ax = fig.add_subplot(rows, cols, rows * cols - cols + 3 + k)
      ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_title(f"Unet λ = {_lam_text(lam)}\nPSNR {_fmt(_psnr(img, target))}", fontsize=8)
      ax.set_axis_off()
  if errors:
    # The first cell of the error row (under the ground truth) holds the colour bar.
    ax = fig.add_subplot(rows, cols, cols + 1)
    ax.set_axis_off()
    fig.colorbar(im, cax=ax.inset_axes([0.45, 0.05, 0.12, 0.9]))
  return _save(fig, path)


def range_map(recons, path, *, title: str = "range over λ"):
  """Per-pixel range (max − min over λ) of reconstructions: where λ matters.

  Args:
    recons: (G, H, W) reconstructions of one slice over a λ grid.
    path: output PNG path.
    title: the axes title.

  Returns:
    ``path``.
  """
  recons = np.asarray(recons, np.float64)
  if recons.ndim != 3 or recons.shape[0] < 1:
    raise InputError(f"recons must have shape (G, H, W), got shape {recons.shape}.")
  return spread_map(recons.max(0) - recons.min(0), path, title=title)


def spread_map(spread, path, *, title: str = "range over λ"):
  """`range_map` of a range computed elsewhere (e.g. streamed over a large λ set).

  Args:
    spread: (H, W) per-pixel max − min over λ.
    path: output PNG path.
    title: the axes title.

  Returns:
    ``path``.
  """
  spread = _image("spread", spread)
  fig = _figure(3.6, 3.0)
  ax = fig.add_subplot(1, 1, 1)
  # A range is ≥ 0: its bar starts at 0, and a constant or NaN map, which
  # matplotlib would autoscale to (−0.1, 0.1), gets (0, 1).
  top = finite_top(spread)
  im = ax.imshow(spread, cmap="magma", vmin=0.0, vmax=top if top > 0 else 1.0,
                 interpolation="nearest")
  fig.colorbar(im, ax=ax, label="max − min")
  ax.set_title(title, fontsize=9)
  ax.set_axis_off()
  return _save(fig, path)
