"""Figures for K loss terms: the simplex landscape, Pareto projections, the gallery.

With K loss terms the loss coefficients c live on the simplex Δ^(K−1). These
figures take plain NumPy arrays (not result dicts), so any caller can draw
them: an evaluator, a notebook, the explorer. They follow the conventions of
`hyperrecon_jax.plots`: a pyplot-free Agg figure written as a PNG to ``path``
(missing folders created), the path returned, bad input an `InputError`.
"""

import numpy as np

from hyperrecon_jax import pareto
from hyperrecon_jax.errors import InputError
from hyperrecon_jax.plots import _figure
from hyperrecon_jax.plots import _fmt
from hyperrecon_jax.plots import _image
from hyperrecon_jax.plots import _psnr
from hyperrecon_jax.plots import _save
from hyperrecon_jax.plots import finite_top

# How far a row of coefficients may be off the simplex (sum 1, entries ≥ 0):
# coefficients written as JSON with a few decimals still pass.
SIMPLEX_ATOL = 1e-4
# Corners of the drawn triangle: vertex k carries all the weight on term k.
VERTICES = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3.0) / 2]])
_MARKERS = ("*", "o", "s", "D", "^", "v", "P", "X", "h", "<", ">", "p")


def barycentric_to_xy(coeffs):
  """Cartesian positions in the drawn triangle of points on the 2-simplex.

  Args:
    coeffs: (..., 3) coefficients on the simplex.

  Returns:
    (..., 2) positions: ``coeffs @ VERTICES``, so (1, 0, 0) is the corner
    (0, 0), (0, 1, 0) is (1, 0) and (0, 0, 1) is (1/2, √3/2).
  """
  coeffs = np.asarray(coeffs, np.float64)
  if coeffs.ndim < 1 or coeffs.shape[-1] != 3:
    raise InputError(f"coeffs must have shape (..., 3): three loss terms, one per corner, got "
                     f"shape {coeffs.shape}.")
  return coeffs @ VERTICES


def _on_simplex(name, coeffs, num=None):
  """``coeffs`` as a float (N, num) array after checking every row lies on the simplex."""
  coeffs = np.asarray(coeffs, np.float64)
  want = "(N, K)" if num is None else f"(N, {num})"
  if coeffs.ndim != 2 or (num is not None and coeffs.shape[1] != num) or not len(coeffs):
    raise InputError(f"{name} must have shape {want} with N ≥ 1, got shape {coeffs.shape}.")
  bad = ~np.isfinite(coeffs).all(1) | (coeffs.min(1) < -SIMPLEX_ATOL)
  bad |= np.abs(coeffs.sum(1) - 1.0) > SIMPLEX_ATOL
  if bad.any():
    i = int(np.argmax(bad))
    raise InputError(f"{name} rows must lie on the simplex (entries ≥ 0, sum 1 within "
                     f"{SIMPLEX_ATOL:g}); row {i} is {coeffs[i].tolist()} "
                     f"(sum {coeffs[i].sum():.6g}).")
  return coeffs


def _names(names, num):
  if isinstance(names, str) or len(names) != num:
    raise InputError(f"names must be {num} term names, one per column, got {names!r}.")
  return [str(n) for n in names]


def _coeff_text(c):
  return "(" + ", ".join(f"{v:.2f}" for v in c) + ")"


def _ternary_inputs(coeffs, values, names, marks):
  """The checked coefficients, values, mask of finite values, names and marks of `ternary`."""
  coeffs = _on_simplex("coeffs", coeffs, 3)
  values = np.asarray(values, np.float64)
  n = len(coeffs)
  if values.shape != (n,):
    raise InputError(f"values must have shape ({n},) like coeffs {coeffs.shape}, got shape "
                     f"{values.shape}.")
  if n < 3:
    raise InputError(f"ternary needs N ≥ 3 points to span the triangle, got coeffs of shape "
                     f"{coeffs.shape}.")
  finite = np.isfinite(values)
  if not finite.any():
    raise InputError(f"values has no finite entry (all {n} are NaN or ±inf).")
  names = _names(names, 3)
  if marks is not None and not isinstance(marks, dict):
    raise InputError(f"marks must be a dict {{label: (3,) coefficients}}, got {type(marks)}.")
  marks = [(str(k), _on_simplex(f"marks[{k!r}]", np.reshape(v, (1, -1)), 3)[0])
           for k, v in (marks or {}).items()]
  return coeffs, values, finite, names, marks


def _triangulation(xy, finite):
  """The Delaunay triangulation of ``xy``, masked where a triangle touches a missing value."""
  from matplotlib.tri import Triangulation

  try:
    tri = Triangulation(xy[:, 0], xy[:, 1])
  except (RuntimeError, ValueError) as e:  # qhull: all points on one line
    raise InputError(f"coeffs must not all lie on one line of the simplex; their {len(xy)} "
                     "points span no area to draw a field on.") from e
  missing = ~finite[tri.triangles].all(1)
  if missing.all():
    raise InputError("every triangle between the points touches a missing value; give finite "
                     "values at 3 points or more that span an area.")
  tri.set_mask(missing)
  return tri, missing


def _ternary_frame(ax):
  """Draws the triangle's outline and its lines of constant coefficient on ``ax``."""
  # Faint lines of constant coefficient at 0.25, 0.5, 0.75 help read positions.
  for k in range(3):
    for t in (0.25, 0.5, 0.75):
      ends = np.zeros((2, 3))  # c_k = t from one edge to the other
      ends[:, k] = t
      ends[0, (k + 1) % 3] = ends[1, (k + 2) % 3] = 1 - t
      seg = barycentric_to_xy(ends)
      ax.plot(seg[:, 0], seg[:, 1], color="w", lw=0.5, alpha=0.5)
  corners = np.vstack([VERTICES, VERTICES[:1]])
  ax.plot(corners[:, 0], corners[:, 1], color="k", lw=1)


def _ternary_points(ax, xy, finite, marks, names):
  """Draws the evaluated points, the marks and the corners' names on ``ax``."""
  # A three-term grid holds copies of one weighting (λ1 = 1): one point each.
  distinct = len(np.unique(xy[finite].round(9), axis=0))
  ax.plot(xy[finite, 0], xy[finite, 1], ".", color="k", ms=2, alpha=0.35,
          label=f"evaluated ({distinct})")
  if not finite.all():
    ax.plot(xy[~finite, 0], xy[~finite, 1], "x", color="0.35", ms=4,
            label=f"no value ({(~finite).sum()})")
  for k, (text, c) in enumerate(marks):
    x, y = barycentric_to_xy(c)
    ax.plot([x], [y], _MARKERS[k % len(_MARKERS)], color=f"C{(k + 1) % 10}", mec="k", mew=0.7,
            ms=11 if k == 0 else 8, label=f"{text}: c = {_coeff_text(c)}")
  for name, (x, y), va, dy in zip(names, VERTICES, ("top", "top", "bottom"), (-6, -6, 6)):
    ax.annotate(name, (x, y), xytext=(0, dy), textcoords="offset points", ha="center", va=va,
                fontsize=9, fontweight="bold")


def ternary(coeffs, values, path, *, names=("term 1", "term 2", "term 3"),
            label: str = "PSNR (dB)", marks=None):
  """A value over the loss coefficients of 3 terms, drawn on the 2-simplex.

  The triangle's vertex k is all weight on term k (labelled with its name).
  The values are interpolated linearly over a Delaunay triangulation of the
  points (Gouraud shading), so a regular grid mapped to the simplex and a
  scattered design are drawn alike; the points themselves are shown as faint
  dots. Triangles touching a missing value (NaN or ±inf) are grey and those
  points are crosses. Outside the points' convex hull nothing is drawn. Faint
  white lines mark each coefficient at 0.25, 0.5 and 0.75.

  Args:
    coeffs: (N, 3) coefficients on the simplex, N ≥ 3 (not all on one line).
    values: (N,) the value at each point; at least one finite.
    path: output PNG path.
    names: the 3 term names, in the order of the columns.
    label: what the values are (the colour bar's label).
    marks: optional ``{label: (3,) coefficients}`` drawn as labelled markers
      (the best coefficients per metric, the gallery's picks); the legend
      gives each one's coefficients.

  Returns:
    ``path``.
  """
  coeffs, values, finite, names, marks = _ternary_inputs(coeffs, values, names, marks)
  n = len(coeffs)
  xy = barycentric_to_xy(coeffs)
  tri, missing = _triangulation(xy, finite)
  # The legend sits under the triangle, two entries a row; the figure grows with it.
  rows = (len(marks) + 1 + (not finite.all()) + 1) // 2
  fig = _figure(5.2, 4.0 + 0.2 * rows)
  ax = fig.add_subplot(1, 1, 1)
  # Masked triangles are never read, but Gouraud shading takes a value per point.
  filled = np.where(finite, values, values[finite].mean())
  im = ax.tripcolor(tri, filled, shading="gouraud", cmap="viridis",
                    vmin=values[finite].min(), vmax=values[finite].max())
  fig.colorbar(im, ax=ax, label=label, shrink=0.8)
  if missing.any():
    from matplotlib.collections import PolyCollection

    ax.add_collection(PolyCollection(xy[tri.triangles[missing]], facecolor="0.75",
                                     edgecolor="0.75", lw=0.3))
  _ternary_frame(ax)
  _ternary_points(ax, xy, finite, marks, names)
  # A three-term grid holds copies of one weighting (λ1 = 1): its N λ are fewer points.
  distinct = len(np.unique(xy[finite].round(9), axis=0))
  points = f", {distinct} distinct with a value" if distinct < n else ""
  ax.set_title(f"{label} over the coefficients of 3 terms (N = {n}{points})", fontsize=9)
  ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
  ax.set_xlim(-0.08, 1.08)
  ax.set_ylim(-0.1, VERTICES[2, 1] + 0.08)
  ax.set_aspect("equal")
  ax.set_axis_off()
  return _save(fig, path)


def _objectives(name, points, num=None):
  points = np.asarray(points, np.float64)
  want = "(N, K) with K ≥ 2" if num is None else f"(M, {num})"
  if points.ndim != 2 or not len(points) or points.shape[1] < 2 or (
      num is not None and points.shape[1] != num):
    raise InputError(f"{name} must have shape {want} and at least one row, got shape "
                     f"{points.shape}.")
  if not np.isfinite(points).all():
    raise InputError(f"{name} must be finite; row {int(np.argmin(np.isfinite(points).all(1)))} "
                     "is not.")
  return points


def _mask(name, mask, num):
  mask = np.asarray(mask)
  if mask.shape != (num,) or not (mask.dtype == bool or np.isin(mask, (0, 1)).all()):
    raise InputError(f"{name} must be a ({num},) boolean mask, got shape {mask.shape} "
                     f"dtype {mask.dtype}.")
  return mask.astype(bool)


def _baselines(baseline_points, baseline_front, k):
  """The checked (M, K) baseline objectives and their (M,) non-dominated mask, or Nones."""
  if baseline_points is None:
    if baseline_front is not None:
      raise InputError("baseline_front needs baseline_points.")
    return None, None
  base = _objectives("baseline_points", baseline_points, k)
  base_front = (pareto.non_dominated(base) if baseline_front is None
                else _mask("baseline_front", baseline_front, len(base)))
  return base, base_front


def _pareto_panel(ax, points, front, base, base_front, j, i):
  """Draws objective ``i`` against objective ``j`` of the points and baselines on ``ax``."""
  ax.plot(points[:, j], points[:, i], ".", color="0.6", ms=3, alpha=0.5,
          label=f"evaluated ({len(points)})")
  ax.plot(points[front, j], points[front, i], "o", color="C0", ms=4, mec="k", mew=0.3,
          label=f"non-dominated ({front.sum()})")
  if base is not None and base_front.any():
    ax.plot(base[base_front, j], base[base_front, i], "s", color="C1", ms=5, mec="k",
            mew=0.6, label=f"baseline, non-dominated ({base_front.sum()})")
  if base is not None and not base_front.all():
    ax.plot(base[~base_front, j], base[~base_front, i], "s", mfc="none", mec="C1", ms=5,
            mew=1.0, label=f"baseline, dominated ({(~base_front).sum()})")
  ax.grid(alpha=0.3)
  ax.tick_params(labelsize=7)


def _pareto_legend(fig, first, k):
  """Draws the legend of panel ``first``'s entries, right of it for K = 2, else in a corner."""
  handles, labels = first.get_legend_handles_labels()
  legend = dict(fontsize=8, frameon=False, title="every loss term minimized", title_fontsize=8)
  if k == 2:
    first.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), **legend)
  else:
    # The upper triangle is empty: the legend takes its corner cell.
    ax = fig.add_subplot(k - 1, k - 1, k - 1)
    ax.set_axis_off()
    # Left out of tight_layout: a legend wider than its cell would shrink every column.
    ax.legend(handles, labels, loc="upper right", **legend).set_in_layout(False)


def pareto_projections(points, front, path, *, names, baseline_points=None,
                       baseline_front=None):
  """Pairwise projections of K minimized objectives, the Pareto front highlighted.

  A corner plot: the panel in row i, column j (j < i) plots objective i
  against objective j, so each column shares its x axis and each row its y
  axis, and the term names label the outer axes. All evaluated points are
  faint grey, the non-dominated ones (in all K objectives, so in a projection
  some lie behind others) are blue; baselines are orange squares, filled
  when non-dominated. The legend sits in the empty upper triangle. K = 2 is
  one panel, K = 4 six; K = 6 gives 15 panels of about 2 inches, still
  legible with the names on the outer axes only, beyond that the panels get
  small and tick labels crowd.

  Args:
    points: (N, K) objective values of the evaluated coefficients, K ≥ 2.
    front: (N,) boolean mask of the non-dominated rows of ``points``.
    path: output PNG path.
    names: the K objective (term) names.
    baseline_points: optional (M, K) objective values of the baselines
      (e.g. Unets trained at fixed coefficients).
    baseline_front: optional (M,) boolean mask of the non-dominated baselines;
      computed among the baselines when omitted.

  Returns:
    ``path``.
  """
  points = _objectives("points", points)
  n, k = points.shape
  front = _mask("front", front, n)
  names = _names(names, k)
  base, base_front = _baselines(baseline_points, baseline_front, k)
  cell = 2.4 if k <= 4 else 2.0
  size = k - 1
  # K = 2 has no empty cell for the legend: it goes right of the one panel.
  fig = _figure(cell * size + 0.4 + 2.2 * (k == 2), cell * size + 0.4 + 0.4 * (k == 2))
  axes = {}
  for i in range(1, k):
    for j in range(i):
      ax = fig.add_subplot(size, size, (i - 1) * size + j + 1,
                           sharex=axes.get((k - 1, j)) or axes.get((i - 1, j)),
                           sharey=axes.get((i, 0)))
      axes[(i, j)] = ax
      _pareto_panel(ax, points, front, base, base_front, j, i)
      if j == 0:
        ax.set_ylabel(names[i], fontsize=9)
      else:
        ax.tick_params(labelleft=False)
      if i == k - 1:
        ax.set_xlabel(names[j], fontsize=9)
      else:
        ax.tick_params(labelbottom=False)
  _pareto_legend(fig, axes[(1, 0)], k)
  # "Loss terms", not "objectives": the report's objective is their weighted sum.
  fig.suptitle(f"Pareto front of {k} loss terms" + (", pairwise projections" if k > 2 else ""),
               fontsize=10)
  return _save(fig, path)


def gallery(target, input_mag, recons, captions, path, *,
            title: str = "most different good reconstructions",
            input_name: str = "zero-filled", errors: bool = True):
  """Ground truth, the network input and k candidate reconstructions, captioned.

  The images share the grey [0, 1] range. With ``errors``, a second row shows
  |image − ground truth| for the input and each candidate on one colour scale,
  from 0 to the largest candidate error (stated by the colour bar under the
  ground truth); the input's larger errors saturate, so the candidates'
  differences stay visible. Meant for k up to about 8; more make a wide
  figure.

  Args:
    target: (H, W) ground truth.
    input_mag: (H, W) magnitude of the network input (e.g. zero-filled).
    recons: (k, H, W) candidate reconstructions, k ≥ 1.
    captions: k strings, one per candidate (may span lines, e.g.
      ``"c = (0.70, 0.10, 0.20)\\nPSNR 24.1 dB, SSIM 0.81"``).
    path: output PNG path.
    title: the figure title.
    input_name: the input's caption (`physics.input_name` of the task).
    errors: add the row of absolute-error maps.

  Returns:
    ``path``.
  """
  target = _image("target", target)
  inp = _image("input_mag", input_mag, target.shape)
  recons = np.asarray(recons, np.float64)
  if recons.ndim != 3 or recons.shape[1:] != target.shape or recons.shape[0] < 1:
    raise InputError(f"recons must have shape (k, {target.shape[0]}, {target.shape[1]}) with "
                     f"k ≥ 1, got shape {recons.shape}.")
  k = recons.shape[0]
  if isinstance(captions, str) or len(captions) != k:
    raise InputError(f"captions must be {k} strings, one per reconstruction, got "
                     f"{captions!r}.")
  images = [target, inp, *recons]
  lines = max(str(c).count("\n") + 1 for c in [*captions, "a\nb"])
  titles = ["ground truth", f"{input_name}\nPSNR {_fmt(_psnr(inp, target))} dB",
            *map(str, captions)]
  # Captions of many coefficients (K = 6: about 40 characters) shrink to fit their column.
  widest = max(len(line) for t in titles for line in t.split("\n"))
  font = max(5.5, min(8.0, 8.0 * 34 / widest))
  rows, cols = 1 + bool(errors), k + 2
  fig = _figure(1.9 * cols, 1.9 * rows + 0.15 * lines * rows + 0.3)
  err = np.abs(np.asarray(images[1:]) - target)
  err_max = finite_top(err[1:]) or finite_top(err) or 1.0
  for c, (img, text) in enumerate(zip(images, titles)):
    ax = fig.add_subplot(rows, cols, c + 1)
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(text, fontsize=font)
    ax.set_axis_off()
    if errors and c > 0:
      ax = fig.add_subplot(rows, cols, cols + c + 1)
      im = ax.imshow(err[c - 1], cmap="inferno", vmin=0.0, vmax=err_max, interpolation="nearest")
      ax.set_title("|input − truth|" if c == 1 else "|recon − truth|", fontsize=8)
      ax.set_axis_off()
  if errors:
    # The cell under the ground truth holds the shared colour bar.
    ax = fig.add_subplot(rows, cols, cols + 1)
    ax.set_axis_off()
    bar = fig.colorbar(im, cax=ax.inset_axes([0.45, 0.05, 0.12, 0.9]),
                       extend="max" if finite_top(err[0]) > err_max else "neither")
    bar.set_label(f"|error|, 0 – {_fmt(err_max)}", fontsize=8)
    bar.ax.tick_params(labelsize=7)
  fig.suptitle(title, fontsize=10)
  return _save(fig, path)
