"""Tests for hyperrecon_jax.plots: every figure is a readable PNG; bad input raises."""

import os

from matplotlib import image as mpimg
import numpy as np
import pytest

from hyperrecon_jax import hparams
from hyperrecon_jax import plots
from hyperrecon_jax import results

H = W = 24


def _result(num_lambdas, num=5, slices=4):
  """A synthetic λ-grid result (no model): smooth per-slice metric surfaces."""
  lam = hparams.grid(num, num_lambdas)
  rng = np.random.default_rng(num_lambdas)
  bump = np.exp(-np.sum((lam - 0.4) ** 2, axis=1) / 0.1)
  grid = {m: bump[None] * (1 + rng.random((slices, 1))) + 0.1 * rng.random((slices, len(lam)))
          for m in results.METRICS}
  base = {m: rng.random(slices) for m in results.METRICS}
  return results.summarize(grid, base, lam, [0, 0, 1, 1][:slices], list(range(slices)))


def _read(path, size_inches):
  """Reads a PNG back and checks its pixel size against the figure size."""
  assert os.path.getsize(path) > 0
  img = mpimg.imread(path)
  want = np.round(np.asarray(size_inches)[::-1] * plots.DPI)
  assert img.ndim == 3 and np.all(np.abs(np.asarray(img.shape[:2]) - want) <= 2), img.shape
  assert img.std() > 0  # something was drawn
  return img


def _slice(seed=0):
  rng = np.random.default_rng(seed)
  target = rng.random((H, W))
  zf = np.clip(target + 0.2 * rng.standard_normal((H, W)), 0, 1)
  recons = np.clip(target[None] + 0.05 * rng.standard_normal((3, H, W)), 0, 1)
  return target, zf, recons


@pytest.mark.parametrize("band", ["std", "iqr"])
def test_metric_curves(tmp_path, band):
  path = plots.metric_curves(_result(1), tmp_path / "sub" / "curves.png", band=band)
  assert path == str(tmp_path / "sub" / "curves.png")
  _read(path, (3.2 * 3, 2.8))


def test_metric_curves_after_json_round_trip(tmp_path):
  result = results.from_json(results.to_json(_result(1)))
  path = plots.metric_curves(result, tmp_path / "c.png", metrics=("mae",))
  _read(path, (3.2, 2.8))


def test_landscape(tmp_path):
  path = plots.landscape(_result(2), str(tmp_path / "land.png"), metric="ssim")
  _read(path, (4.2, 3.6))


def test_slice_panel(tmp_path):
  target, zf, recons = _slice()
  path = plots.slice_panel(target, zf, recons, [0.0, 0.5, 1.0], tmp_path / "panel.png")
  _read(path, (1.9 * 5, 2.1 + 0.2))
  path = plots.slice_panel(target, zf, recons, hparams.grid(2, 2)[:3], tmp_path / "err.png",
                           metric_values=[0.9, 0.8, 0.7], errors=True, metric_name="SSIM")
  _read(path, (1.9 * 5, 2 * 2.1 + 0.2))


def test_the_unet_row_is_titled_with_each_unet_s_own_lambda(tmp_path, monkeypatch):
  # A grid without the Unets' λ (--grid=4: 0, 1/3, 2/3, 1) shows HyperRecon at
  # the nearest grid λ; each Unet keeps the λ it was trained at.
  target, zf, recons = _slice()
  texts = _drawn_texts(monkeypatch, lambda: plots.slice_panel(
      target, zf, recons, [0.0, 1 / 3, 1.0], tmp_path / "p.png", baseline=recons,
      baseline_lams=[0.0, 0.5, 1.0]))
  unets = [t.split("\n")[0] for t in texts if t.startswith("Unet λ")]
  assert unets == ["Unet λ = 0.00", "Unet λ = 0.50", "Unet λ = 1.00"], texts
  assert any(t.startswith("λ = 0.33\n") for t in texts), texts
  with pytest.raises(ValueError, match=r"baseline_lams must have the shape of lams \(3,\)"):
    plots.slice_panel(target, zf, recons, [0.0, 0.5, 1.0], tmp_path / "q.png",
                      baseline=recons, baseline_lams=[0.0, 1.0])


def test_a_nan_pixel_leaves_the_slice_panel_s_error_scale_finite(tmp_path, monkeypatch):
  target, zf, recons = _slice()
  zf, recons[1, 2, 2] = zf.copy(), np.nan
  zf[5, 5] = np.nan  # the first map: Python's max then stays NaN
  limits = []
  save = plots._save

  def record(fig, path):
    limits.extend(im.get_clim() for ax in fig.axes for im in ax.get_images()
                  if ax.get_title() == "|error|")
    return save(fig, path)
  monkeypatch.setattr(plots, "_save", record)
  plots.slice_panel(target, zf, recons, [0.0, 0.5, 1.0], tmp_path / "p.png", errors=True)
  top = max(np.nanmax(np.abs(x - target)) for x in [zf, *recons])
  assert len(limits) == 4 and all(lim == (0.0, top) for lim in limits), limits


def _drawn_texts(monkeypatch, draw):
  """The titles and legend entries of the figure ``draw()`` saves."""
  texts = []
  save = plots._save

  def record(fig, path):
    for ax in fig.axes:
      texts.append(ax.get_title())
      if ax.get_legend():
        texts.extend(t.get_text() for t in ax.get_legend().get_texts())
    return save(fig, path)

  monkeypatch.setattr(plots, "_save", record)
  draw()
  return texts


def test_the_input_is_named_for_its_task(tmp_path, monkeypatch):
  target, zf, recons = _slice()
  texts = _drawn_texts(monkeypatch, lambda: plots.slice_panel(
      target, zf, recons, [0.0, 0.5, 1.0], tmp_path / "p.png", input_name="noisy input"))
  assert any(t.startswith("noisy input\nPSNR") for t in texts), texts
  assert not any("zero-filled" in t for t in texts)
  result = {**_result(1), "input_name": "noisy input"}
  texts = _drawn_texts(monkeypatch, lambda: plots.metric_curves(result, tmp_path / "c.png"))
  assert texts.count("noisy input") == 3 and "zero-filled" not in texts  # one per panel
  # A result written before the name was stored: CS-MRI's.
  texts = _drawn_texts(monkeypatch, lambda: plots.metric_curves(_result(1), tmp_path / "d.png"))
  assert texts.count("zero-filled") == 3


def test_unets_at_the_ends_are_drawn_whole_and_stored_ones_say_so(tmp_path, monkeypatch):
  # The x axis ended at λ = 0 and 1, cutting the Unets' markers there in half;
  # a shipped model's Unets, read from its info.json, looked measured.
  base = {"lambdas": [[0.0], [1.0]], "mean": {m: [0.5, 0.6] for m in results.METRICS}}
  limits, labels = [], []
  save = plots._save

  def record(fig, path):
    limits.extend(ax.get_xlim() for ax in fig.axes)
    labels.extend(t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
    return save(fig, path)

  monkeypatch.setattr(plots, "_save", record)
  result = {**_result(1), "baselines": {**base, "stored": "info.json of m"}}
  plots.metric_curves(result, tmp_path / "c.png")
  assert all(lo < 0.0 and hi > 1.0 for lo, hi in limits), limits
  assert labels.count("Unet at λ, stored") == 3
  plots.metric_curves({**_result(1), "baselines": base}, tmp_path / "d.png")
  assert labels.count("Unet at λ") == 3


def test_range_map(tmp_path):
  _, _, recons = _slice()
  _read(plots.range_map(recons, tmp_path / "range.png"), (3.6, 3.0))


def test_lambda_histogram(tmp_path):
  rng = np.random.default_rng(0)
  _read(plots.lambda_histogram(rng.random((50, 1)), tmp_path / "h1.png"), (4.2, 3.4))
  _read(plots.lambda_histogram(rng.random((50, 2)), tmp_path / "h2.png"), (4.2, 3.4))
  with pytest.raises(ValueError, match=r"\(N, 1\) or \(N, 2\)"):
    plots.lambda_histogram(rng.random((5, 3)), tmp_path / "bad.png")
  with pytest.raises(ValueError, match="bins"):
    plots.lambda_histogram(rng.random((5, 1)), tmp_path / "bad.png", bins=0)
  assert not (tmp_path / "bad.png").exists()


def test_figures_draw_their_data(tmp_path):
  # Not only a non-blank PNG: the same data give the same pixels, and
  # changing what is plotted (one metric's curve, one reconstruction) changes
  # them. A figure that ignored its input would fail.
  result = _result(1)
  a = _read(plots.metric_curves(result, tmp_path / "a.png", metrics=("psnr",)), (3.2, 2.8))
  again = _read(plots.metric_curves(result, tmp_path / "a2.png", metrics=("psnr",)), (3.2, 2.8))
  np.testing.assert_array_equal(a, again)
  changed = results.from_json(results.to_json(result))
  changed["mean"]["psnr"] = [2 * v for v in changed["mean"]["psnr"]]
  b = _read(plots.metric_curves(changed, tmp_path / "b.png", metrics=("psnr",)), (3.2, 2.8))
  assert np.abs(a - b).max() > 0.1

  target, zf, recons = _slice()
  lams = [0.0, 0.5, 1.0]
  p = _read(plots.slice_panel(target, zf, recons, lams, tmp_path / "p.png"), (1.9 * 5, 2.3))
  recons[1] = 1.0 - recons[1]
  q = _read(plots.slice_panel(target, zf, recons, lams, tmp_path / "q.png"), (1.9 * 5, 2.3))
  # Only the second reconstruction's panel changes: the pixels that differ
  # lie in one column band of the five (ground truth, input, 3 λ).
  cols = np.nonzero(np.abs(p - q).max(axis=(0, 2)) > 0.1)[0]
  assert cols.size and (cols.max() - cols.min()) < p.shape[1] / 5


def test_bad_input(tmp_path):
  target, zf, recons = _slice()
  out = tmp_path / "x.png"
  with pytest.raises(ValueError, match="1 hyperparameter"):
    plots.metric_curves(_result(2), out)
  with pytest.raises(ValueError, match="metric"):
    plots.metric_curves(_result(1), out, metrics=("dice",))
  with pytest.raises(ValueError, match="band"):
    plots.metric_curves(_result(1), out, band="minmax")
  with pytest.raises(ValueError, match="2 hyperparameter"):
    plots.landscape(_result(1), out)
  partial = _result(2)
  partial["lambdas"] = partial["lambdas"][:-1]
  with pytest.raises(ValueError, match="lattice"):
    plots.landscape(partial, out)
  with pytest.raises(ValueError, match="target"):
    plots.slice_panel(target[None], zf, recons, [0, 0.5, 1], out)
  with pytest.raises(ValueError, match="zero_filled_mag"):
    plots.slice_panel(target, zf[:-1], recons, [0, 0.5, 1], out)
  with pytest.raises(ValueError, match="recons"):
    plots.slice_panel(target, zf, recons[0], [0, 0.5, 1], out)
  with pytest.raises(ValueError, match="lams"):
    plots.slice_panel(target, zf, recons, [0, 1], out)
  with pytest.raises(ValueError, match="metric_values"):
    plots.slice_panel(target, zf, recons, [0, 0.5, 1], out, metric_values=[1.0])
  with pytest.raises(ValueError, match="recons"):
    plots.range_map(recons[0], out)
  assert not out.exists()


def test_spread_map_draws_a_given_range_as_range_map_draws_recons(tmp_path):
  recons = np.random.default_rng(0).random((3, 16, 12))
  a = plots.range_map(recons, tmp_path / "a.png")
  b = plots.spread_map(recons.max(0) - recons.min(0), tmp_path / "b.png")
  # The same image drawn the same way: the two PNG files are byte-identical.
  assert open(a, "rb").read() == open(b, "rb").read()
  with pytest.raises(ValueError, match="spread must have shape"):
    plots.spread_map(recons, tmp_path / "c.png")
