"""The files of an evaluation report: the JSON result and the figures, written as one set.

`write` draws every figure of a `report.run` result into a temporary folder
that replaces the old report only when every file is complete: an
interrupted evaluation leaves the previous report as it was, never new
numbers beside old figures.

- ``lambda_grid.json``: the result (a grid or a design of λ alike);
- ``curves.png`` (one hyperparameter), ``landscape.png`` (a two-λ grid),
  ``ternary.png`` (three terms: the landscape on the simplex), ``pareto.png``
  (a design over three or more terms: the Pareto set in pairwise projections);
- ``dhs_lambdas.png`` for a run trained with DHS (one or two λ): the λ it
  keeps (Fig. 6);
- ``slices.png`` (ground truth, input, reconstructions at several λ),
  ``diverse.png`` (the gallery of the most different good reconstructions)
  and ``range.png`` (where λ changes the image), all of the split's middle
  slice with the noise it was scored with.
"""

import os
import shutil
import tempfile

import numpy as np

from hyperrecon_jax import errors

# λ per reconstruction call of the range map over a design: bounds the
# reconstructions held at once (256 × 256² float32 is 64 MiB).
RANGE_BLOCK = 256


def _middle_slice(config, split, index, batch_size):
  """Slice ``index`` of a split: its image, volume id and slice index."""
  from hyperrecon_jax import data
  number, row = divmod(index, batch_size)
  for i, batch in enumerate(data.batches(config.data, split,
                                         batch_size=batch_size, training=False)):
    if i == number:
      return (np.asarray(batch["image"][row], np.float32), batch["volume"][row],
              batch["slice"][row])
  raise errors.InputError(f"the {split} split has no slice {index}")


def _publish(tmp: str, out: str) -> None:
  """Replaces ``out`` by the finished folder ``tmp`` (two renames)."""
  old = None
  if os.path.exists(out):
    old = f"{tmp}.old"
    os.replace(out, old)
  os.replace(tmp, out)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _range_streaming(reconstruct, num: int):
  """max − min over λ of one slice, reconstructed `RANGE_BLOCK` λ at a time."""
  lo = hi = None
  for start in range(0, num, RANGE_BLOCK):
    r = np.asarray(reconstruct(np.arange(start, min(num, start + RANGE_BLOCK))))
    lo = r.min(0) if lo is None else np.minimum(lo, r.min(0))
    hi = r.max(0) if hi is None else np.maximum(hi, r.max(0))
  return hi - lo


def _caption(result, index) -> str:
  from hyperrecon_jax import hparams
  lam = np.asarray(result["lambdas"][index], np.float32)
  coeffs = np.asarray(hparams.coefficients(lam[None]))[0]
  return "c = (" + ", ".join(f"{v:.2f}" for v in coeffs) + ")"


def _gallery(result, config, image, zf, reconstruct, slice_row, psnrs_of_slice):
  """Adds ``result['gallery']`` for the shown slice; returns its reconstructions."""
  from hyperrecon_jax import metrics
  from hyperrecon_jax import tradeoffs
  candidates = tradeoffs.gallery_candidates(psnrs_of_slice, float(config.eval.gallery_tolerance_db))
  recons = np.asarray(reconstruct(candidates))
  target = np.broadcast_to(image, recons.shape)
  scores = {"psnr": np.full(len(result["lambdas"]), np.nan),
            "ssim": np.full(len(result["lambdas"]), np.nan)}
  scores["psnr"][candidates] = np.asarray(metrics.psnr(recons, target))
  scores["ssim"][candidates] = np.asarray(metrics.ssim(recons, target))
  section = tradeoffs.gallery_section(recons, psnrs_of_slice, candidates, result["lambdas"],
                                      int(config.eval.gallery_size),
                                      float(config.eval.gallery_tolerance_db), scores)
  section["slice"] = int(slice_row)
  result["gallery"] = section
  return recons[section["positions"]]


def write(out, result, config, model_at, operator, split, lam_grid, chunk, panel_lambdas,
          seg, dhs, baselines) -> None:
  """Computes the shown slice's gallery and writes the report into ``out`` as one set.

  Args:
    out: the report folder (replaced whole).
    result: the `report.run` result (gains ``gallery``).
    config: the model's config.
    model_at: the loaded model (``model``, ``variables``).
    operator: the task's operator.
    split: the evaluated split.
    lam_grid: (G, K − 1) the evaluated λ.
    chunk: model batch of one call.
    panel_lambdas: λ shown in ``slices.png`` (a grid).
    seg: the segmenter or None (adds Dice to the curves).
    dhs: the DHS replay or None.
    baselines: ``(apply_fn, variables, lambdas)`` of the per-λ Unets, or Nones.
  """
  from hyperrecon_jax import evaluate as ev
  from hyperrecon_jax import hparams
  from hyperrecon_jax import plots
  from hyperrecon_jax import plots_simplex
  from hyperrecon_jax import streams
  apply_fn, variables = model_at.model.apply, model_at.variables
  b_apply, b_grid, b_lams = baselines
  num_lambdas = lam_grid.shape[1]
  design = result.get("design", {}).get("kind")
  key = streams.key(config, "evaluation")
  coeffs = np.asarray(hparams.coefficients(lam_grid))

  # The split's middle slice, measured exactly as it was scored (a slice's
  # noise comes from its own volume and slice ids).
  middle = result["num_slices"] // 2
  image, volume, slice_ = _middle_slice(config, split, middle, int(config.train.batch_size))
  zf = ev.measure_slices(operator, image[None], ev.slice_keys(key, [volume], [slice_]))[0]
  zf_mag = np.asarray(ev.magnitude(zf))
  reconstruct = lambda index: ev.reconstruct_grid(apply_fn, variables, zf, coeffs[index],
                                                  chunk=chunk)
  if design == "samples":
    recons = None
    psnrs = np.array(result["per_slice"]["psnr"][middle], np.float64)
    spread = _range_streaming(reconstruct, len(lam_grid)) if len(lam_grid) > 1 else None
  else:
    recons = np.asarray(reconstruct(np.arange(len(lam_grid))))
    from hyperrecon_jax import metrics
    psnrs = np.asarray(metrics.psnr(recons, np.broadcast_to(image, recons.shape)), np.float64)
    spread = recons.max(0) - recons.min(0) if len(lam_grid) > 1 else None
  shown = _gallery(result, config, image, zf, reconstruct, middle, psnrs)

  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".eval-", dir=os.path.dirname(out))
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private
  try:
    with open(os.path.join(tmp, "lambda_grid.json"), "w") as f:
      f.write(ev.to_json(result))
    names = tuple(config.losses)
    if num_lambdas == 1 and len(lam_grid) > 1:
      plots.metric_curves(result, os.path.join(tmp, "curves.png"),
                          ("psnr", "ssim", "hfen") + (("dice",) if seg else ()))
    elif num_lambdas == 2 and design == "grid":
      plots.landscape(result, os.path.join(tmp, "landscape.png"))
    if len(names) == 3 and len(lam_grid) >= 3:
      best = {f"best {m}": coeffs[result["best"][m]["index"]]
              for m in ("psnr", "ssim") if result["best"].get(m)}
      plots_simplex.ternary(coeffs, np.asarray(ev.metric_array(result, "psnr")),
                    os.path.join(tmp, "ternary.png"), names=names, label="PSNR (dB)",
                    marks=best)
    if "pareto" in result and len(names) >= 3:
      _pareto_figure(result, names, os.path.join(tmp, "pareto.png"))

    if design == "samples":
      # The vertices: each term alone (the first K points of the design), for K ≥ 3.
      picks = (np.unique(np.linspace(0, len(lam_grid) - 1, panel_lambdas).round().astype(int))
               if num_lambdas == 1 else np.arange(len(names)))
      panel = np.asarray(reconstruct(picks))
    else:
      picks = np.unique(np.linspace(0, len(lam_grid) - 1, panel_lambdas).round().astype(int))
      panel = None
    baseline_row = None
    if b_apply is not None and num_lambdas == 1:
      # HyperRecon at the evaluated λ nearest each baseline's, above that Unet.
      picks = np.abs(lam_grid[:, 0][None] - b_lams[:, :1]).argmin(1)
      panel = None
      baseline_row = np.asarray(ev.reconstruct_grid(
          b_apply, b_grid, zf, hparams.coefficients(b_lams), chunk=chunk))
    if panel is None:
      panel = recons[picks] if recons is not None else np.asarray(reconstruct(picks))
    plots.slice_panel(image, zf_mag, panel, lam_grid[picks], os.path.join(tmp, "slices.png"),
                      errors=True, baseline=baseline_row, input_name=result["input_name"])
    g = result["gallery"]
    captions = [f"{_caption(result, i)}\nPSNR {p:.2f} dB, SSIM {s:.3f}" for i, p, s in zip(
        g["indices"], g["scores"]["psnr"], g["scores"]["ssim"])]
    plots_simplex.gallery(image, zf_mag, shown, captions, os.path.join(tmp, "diverse.png"),
                  title=(f"{len(shown)} most different reconstructions within "
                         f"{g['tolerance_db']:g} dB of the best PSNR "
                         f"({g['num_candidates']} candidates)"),
                  input_name=result["input_name"])
    if dhs is not None and num_lambdas <= 2:
      plots.lambda_histogram(dhs["kept"], os.path.join(tmp, "dhs_lambdas.png"),
                             bins=10 if num_lambdas == 1 else 5)
    if spread is not None:
      plots.spread_map(spread, os.path.join(tmp, "range.png"))
    _publish(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _pareto_figure(result, names, path):
  from hyperrecon_jax import plots_simplex
  from hyperrecon_jax import tradeoffs
  p = result["pareto"]
  points = tradeoffs.term_points(result["loss_terms"], names)
  front = np.zeros(len(points), bool)
  front[p["front"]] = True
  b_points = b_front = None
  if "baseline_points" in p:
    b_points = np.asarray(p["baseline_points"], np.float64)
    b_front = np.zeros(len(b_points), bool)
    b_front[p["baseline_front"]] = True
  plots_simplex.pareto_projections(points, front, path, names=names, baseline_points=b_points,
                           baseline_front=b_front)
