"""Tests for hyperrecon_jax.plots_simplex: readable PNGs, the simplex geometry, bad input."""

import os

from matplotlib import image as mpimg
import numpy as np
import pytest

from hyperrecon_jax import pareto
from hyperrecon_jax import plots
from hyperrecon_jax import plots_simplex as ps
from hyperrecon_jax.errors import InputError

H = W = 16
S3 = np.sqrt(3.0)


def _read(path, size_inches):
  """Reads a PNG back and checks its pixel size against the figure size."""
  assert os.path.getsize(path) > 0
  img = mpimg.imread(path)
  want = np.round(np.asarray(size_inches)[::-1] * plots.DPI)
  assert img.ndim == 3 and np.all(np.abs(np.asarray(img.shape[:2]) - want) <= 2), img.shape
  assert img.std() > 0  # something was drawn
  return img


def _saved_figure(monkeypatch, draw):
  """The Figure that ``draw()`` saves (it is still written)."""
  figs = []
  save = ps._save

  def record(fig, path):
    figs.append(fig)
    return save(fig, path)

  monkeypatch.setattr(ps, "_save", record)
  draw()
  return figs[0]


def _simplex_grid(n):
  """All (i, j, k) / (n − 1) with i + j + k = n − 1: a regular grid on the 2-simplex."""
  return np.array([(i, j, n - 1 - i - j) for i in range(n) for j in range(n - i)], float) / (n - 1)


def _objectives(num, k, seed=0):
  """Trade-off objectives (1 − c)² of coefficients c on the simplex, slightly noisy."""
  rng = np.random.default_rng(seed)
  return (1 - rng.dirichlet(np.ones(k), num)) ** 2 + 0.02 * rng.random((num, k))


def _slice(k, seed=0):
  rng = np.random.default_rng(seed)
  target = rng.random((H, W))
  inp = np.clip(target + 0.2 * rng.standard_normal((H, W)), 0, 1)
  recons = np.clip(target[None] + 0.05 * rng.standard_normal((k, H, W)), 0, 1)
  return target, inp, recons


def test_barycentric_to_xy_by_hand():
  np.testing.assert_allclose(ps.barycentric_to_xy(np.eye(3)), [[0, 0], [1, 0], [0.5, S3 / 2]])
  points = [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5],
            [0.2, 0.3, 0.5]]
  want = [[0.5, S3 / 6], [0.5, 0.0], [0.75, S3 / 4], [0.25, S3 / 4],
          [0.3 + 0.25, 0.5 * S3 / 2]]
  np.testing.assert_allclose(ps.barycentric_to_xy(points), want, atol=1e-12)
  assert ps.barycentric_to_xy(np.full((2, 4, 3), 1 / 3)).shape == (2, 4, 2)
  with pytest.raises(InputError, match=r"coeffs must have shape \(\.\.\., 3\).*\(5, 2\)"):
    ps.barycentric_to_xy(np.full((5, 2), 0.5))


def test_ternary_on_a_grid(tmp_path):
  coeffs = _simplex_grid(8)
  values = 20 + 5 * np.exp(-np.sum((coeffs - [0.6, 0.3, 0.1]) ** 2, 1) / 0.05)
  values[3] = np.nan  # drawn grey, a cross at the point
  marks = {"best PSNR": coeffs[np.nanargmax(values)], "pick": [0.2, 0.5, 0.3]}
  path = ps.ternary(coeffs, values, tmp_path / "sub" / "t.png", names=("MAE", "SSIM", "HFEN"),
                    marks=marks)
  assert path == str(tmp_path / "sub" / "t.png")
  _read(path, (5.2, 4.4))  # 4 legend entries: 2 rows of two


@pytest.mark.parametrize("n", [3, 12])
def test_ternary_on_scattered_points(tmp_path, n):
  coeffs = np.eye(3) if n == 3 else np.random.default_rng(1).dirichlet(np.ones(3), n)
  _read(ps.ternary(coeffs, coeffs @ [1.0, 2.0, 3.0], tmp_path / "s.png", label="SSIM"),
        (5.2, 4.2))


def test_ternary_puts_vertices_at_the_corners(tmp_path, monkeypatch):
  names = ("MAE", "SSIM", "HFEN")
  fig = _saved_figure(monkeypatch, lambda: ps.ternary(
      _simplex_grid(4), np.arange(10.0), tmp_path / "t.png", names=names,
      marks={"all SSIM": [0.0, 1.0, 0.0]}))
  ax = fig.axes[0]
  mark = [line for line in ax.get_lines() if line.get_label().startswith("all SSIM")]
  assert len(mark) == 1 and mark[0].get_label() == "all SSIM: c = (0.00, 1.00, 0.00)"
  np.testing.assert_allclose(np.ravel(mark[0].get_xydata()), [1.0, 0.0])
  corners = {t.get_text(): t.xy for t in ax.texts}
  for name, xy in zip(names, [(0, 0), (1, 0), (0.5, S3 / 2)]):
    np.testing.assert_allclose(corners[name], xy)


def test_ternary_title_counts_the_points_it_draws(tmp_path, monkeypatch):
  # A 5 × 5 λ grid of three terms holds 5 copies of c = (1, 0, 0) (λ1 = 1): the
  # title said "N = 25" above a legend of "evaluated (21)".
  from hyperrecon_jax import hparams
  coeffs = np.asarray(hparams.coefficients(hparams.grid(5, 2)), np.float64)
  fig = _saved_figure(monkeypatch, lambda: ps.ternary(coeffs, np.arange(25.0), tmp_path / "t.png"))
  ax = fig.axes[0]
  assert ax.get_title().endswith("(N = 25, 21 distinct with a value)")
  assert any(line.get_label() == "evaluated (21)" for line in ax.get_lines())
  fig = _saved_figure(monkeypatch, lambda: ps.ternary(
      _simplex_grid(4), np.arange(10.0), tmp_path / "u.png"))
  assert fig.axes[0].get_title().endswith("(N = 10)")


def test_ternary_draws_its_values(tmp_path):
  coeffs = _simplex_grid(6)
  a = _read(ps.ternary(coeffs, coeffs[:, 0], tmp_path / "a.png"), (5.2, 4.2))
  again = _read(ps.ternary(coeffs, coeffs[:, 0], tmp_path / "a2.png"), (5.2, 4.2))
  np.testing.assert_array_equal(a, again)
  b = _read(ps.ternary(coeffs, coeffs[:, 2], tmp_path / "b.png"), (5.2, 4.2))
  assert np.abs(a - b).max() > 0.1


@pytest.mark.parametrize("k, size", [(2, (5.0, 3.2)), (4, (7.6, 7.6)), (6, (10.4, 10.4))])
def test_pareto_projections(tmp_path, monkeypatch, k, size):
  points = _objectives(30, k)
  front = pareto.non_dominated(points)
  base = _objectives(k + 1, k, seed=1) + 0.05
  names = ["MAE", "SSIM", "HFEN", "DC", "TV", "wl1"][:k]
  fig = _saved_figure(monkeypatch, lambda: ps.pareto_projections(
      points, front, tmp_path / "p.png", names=names, baseline_points=base))
  _read(str(tmp_path / "p.png"), size)
  panels = [ax for ax in fig.axes if ax.axison]
  assert len(panels) == k * (k - 1) // 2
  # The names label the outer axes: x along the bottom row, y down the left column.
  assert {ax.get_xlabel() for ax in panels} - {""} == set(names[:-1])
  assert {ax.get_ylabel() for ax in panels} - {""} == set(names[1:])
  assert sum(ax.get_legend() is not None for ax in fig.axes) == 1
  # The report's "objective" is Σ c_k·term_k/s_k: the figure's axes are the terms.
  assert fig.get_suptitle().startswith(f"Pareto front of {k} loss terms")
  legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
  assert legend.get_title().get_text() == "every loss term minimized"


def test_pareto_projections_with_a_baseline_front(tmp_path):
  points = _objectives(20, 3)
  base = _objectives(4, 3, seed=2)
  _read(ps.pareto_projections(points, pareto.non_dominated(points), tmp_path / "p.png",
                              names=("a", "b", "c"), baseline_points=base,
                              baseline_front=[True, False, True, False]), (5.2, 5.2))


def test_gallery(tmp_path, monkeypatch):
  target, inp, recons = _slice(1)
  _read(ps.gallery(target, inp, recons, ["c = (0.5, 0.5)"], tmp_path / "g1.png", errors=False),
        (1.9 * 3, 1.9 + 0.3 + 0.3))
  target, inp, recons = _slice(3)
  captions = [f"c = (0.{i}0, 0.{9 - i}0)\nPSNR 2{i}.0 dB\nSSIM 0.8{i}" for i in range(3)]
  fig = _saved_figure(monkeypatch, lambda: ps.gallery(
      target, inp, recons, captions, tmp_path / "g3.png", input_name="noisy input"))
  _read(str(tmp_path / "g3.png"), (1.9 * 5, 2 * 1.9 + 2 * 0.45 + 0.3))
  titles = [ax.get_title() for ax in fig.axes]
  assert all(c in titles for c in captions)
  assert any(t.startswith("noisy input\nPSNR") for t in titles) and "zero-filled" not in titles
  # The colour bar is an inset of the cell under the ground truth.
  bars = [c for ax in fig.axes for c in ax.child_axes if "|error|" in c.get_ylabel()]
  assert len(bars) == 1  # one shared error scale, its range stated


def test_a_nan_pixel_leaves_the_error_scale_finite(tmp_path, monkeypatch):
  # One NaN pixel made the scale's top NaN: every map blank but one, drawn on
  # (-0.1, 0.1), and the bar read "0 – nan".
  target, inp, recons = _slice(3)
  recons[1, 3, 3] = np.nan
  fig = _saved_figure(monkeypatch, lambda: ps.gallery(
      target, inp, recons, ["a", "b", "c"], tmp_path / "g.png"))
  errors = np.abs(recons - target)
  top = np.nanmax(errors)  # the reconstructions' largest finite |error|
  limits = [im.get_clim() for ax in fig.axes for im in ax.get_images()
            if "|" in ax.get_title()]
  assert len(limits) == 4 and all(lim == (0.0, top) for lim in limits), limits


def test_bad_input(tmp_path):
  out = tmp_path / "x.png"
  coeffs, values = _simplex_grid(4), np.arange(10.0)
  with pytest.raises(InputError, match=r"coeffs must have shape \(N, 3\).*\(10, 2\)"):
    ps.ternary(coeffs[:, :2], values, out)
  off = coeffs.copy()
  off[4] *= 1.001
  with pytest.raises(InputError, match="simplex.*row 4"):
    ps.ternary(off, values, out)
  ps.ternary(coeffs + 1e-5 / 3, values, tmp_path / "ok.png")  # within the tolerance
  negative = coeffs.copy()
  negative[0] = [1.1, -0.1, 0.0]
  with pytest.raises(InputError, match="row 0"):
    ps.ternary(negative, values, out)
  with pytest.raises(InputError, match=r"values must have shape \(10,\)"):
    ps.ternary(coeffs, values[:-1], out)
  with pytest.raises(InputError, match="N ≥ 3"):
    ps.ternary(coeffs[:2], values[:2], out)
  with pytest.raises(InputError, match="one line"):
    ps.ternary([[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0]], [1.0, 2.0, 3.0], out)
  with pytest.raises(InputError, match="no finite"):
    ps.ternary(coeffs, np.full(10, np.nan), out)
  with pytest.raises(InputError, match="names"):
    ps.ternary(coeffs, values, out, names=("a", "b"))
  with pytest.raises(InputError, match="marks"):
    ps.ternary(coeffs, values, out, marks={"best": [0.5, 0.6, 0.0]})

  points = _objectives(8, 3)
  front = pareto.non_dominated(points)
  names = ("a", "b", "c")
  with pytest.raises(InputError, match=r"front must be a \(8,\) boolean mask"):
    ps.pareto_projections(points, front[:-1], out, names=names)
  with pytest.raises(InputError, match=r"K ≥ 2.*\(8, 1\)"):
    ps.pareto_projections(points[:, :1], front, out, names=names[:1])
  with pytest.raises(InputError, match="names must be 3"):
    ps.pareto_projections(points, front, out, names=("a", "b"))
  with pytest.raises(InputError, match=r"baseline_points must have shape \(M, 3\)"):
    ps.pareto_projections(points, front, out, names=names, baseline_points=points[:, :2])
  with pytest.raises(InputError, match=r"baseline_front must be a \(8,\)"):
    ps.pareto_projections(points, front, out, names=names, baseline_points=points,
                          baseline_front=front[:3])
  with pytest.raises(InputError, match="baseline_front needs"):
    ps.pareto_projections(points, front, out, names=names, baseline_front=front)
  with pytest.raises(InputError, match="finite"):
    ps.pareto_projections(np.where(front[:, None], np.nan, points), front, out, names=names)

  target, inp, recons = _slice(2)
  with pytest.raises(InputError, match=r"recons must have shape \(k, 16, 16\)"):
    ps.gallery(target, inp, recons[0], ["a", "b"], out)
  with pytest.raises(InputError, match="recons"):
    ps.gallery(target, inp, recons[:, :-1], ["a", "b"], out)
  with pytest.raises(InputError, match="captions must be 2 strings"):
    ps.gallery(target, inp, recons, ["a"], out)
  with pytest.raises(InputError, match="captions"):
    ps.gallery(target, inp, recons, "ab", out)
  with pytest.raises(InputError, match="input_mag"):
    ps.gallery(target, inp[:-1], recons, ["a", "b"], out)
  assert not out.exists()
