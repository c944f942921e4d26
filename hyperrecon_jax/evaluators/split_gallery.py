"""The evaluator of the most different good λ for a whole split, not one slice.

A slice's gallery (`tradeoffs.gallery_section`) compares the reconstructions
of one image. For the split, a λ is good when its mean PSNR over the split is
within the tolerance of the best mean, and two λ are as different as their
reconstructions of a fixed set of the split's slices (`NUM_SLICES`, evenly
spaced, each measured as it was scored): the ℓ2 distance over all their
pixels. Farthest-point sampling then picks the k most different
(`gallery.diverse`).
"""

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import hparams
from hyperrecon_jax import tradeoffs

# Slices whose reconstructions stand for the split: enough to see a λ's
# effect on several anatomies, few enough to hold every candidate's
# reconstructions at once (see `MAX_BYTES`).
NUM_SLICES = 8
# The candidates' reconstructions held at once; fewer candidates (the best by
# mean PSNR) beyond it.
MAX_BYTES = 256 << 20


def slices_of(config, split: str, rows) -> tuple[np.ndarray, list, list]:
  """Rows ``rows`` (sorted) of a split: images (N, H, W), volume ids, slice indices."""
  from hyperrecon_jax import data
  wanted, images, volumes, slices = set(int(r) for r in rows), [], [], []
  batch_size, offset = int(config.train.batch_size), 0
  for batch in data.batches(config.data, split, batch_size=batch_size, training=False):
    valid = np.asarray(batch["valid"], bool)
    for i in np.flatnonzero(valid):
      if offset + i in wanted:
        images.append(np.asarray(batch["image"][i], np.float32))
        volumes.append(batch["volume"][i])
        slices.append(batch["slice"][i])
    offset += int(valid.sum())
    if offset > max(wanted):
      break
  if len(images) != len(wanted):
    raise errors.InputError(f"the {split} split has {offset} slices, fewer than asked for")
  return np.stack(images), volumes, slices


def run(context, settings) -> None:
  """The evaluator: ``result['gallery_split']`` for a HyperRecon model over several λ."""
  del settings
  if context.config.model.hyper_dim and len(context.lam_grid) > 1:
    if context.result["best"].get("psnr") is None:
      from hyperrecon_jax.evaluators import figures
      figures.note(context.result, "no gallery of the split: no λ has a mean PSNR (every "
                   "slice's PSNR is not finite at some λ; see 'unscored')")
      return
    context.result["gallery_split"] = section(context)


def section(context) -> dict:
  """The k most different λ that are good on the split.

  Args:
    context: an `evaluators.Context` whose result holds the λ set's scores
      (its mean PSNR per λ); its config gives ``eval.gallery_size`` and
      ``eval.gallery_tolerance_db``.

  Returns:
    `tradeoffs.gallery_section`'s dict (with the split's mean PSNR and SSIM
    as ``scores``) plus ``slices``: the split rows compared.
  """
  from hyperrecon_jax import evaluate as ev
  from hyperrecon_jax import grid
  from hyperrecon_jax import streams
  result, config, lam_grid = context.result, context.config, context.lam_grid
  mean_psnr = np.array([np.nan if v is None else v for v in result["mean"]["psnr"]], np.float64)
  tolerance = float(config.eval.gallery_tolerance_db)
  rows = np.unique(np.linspace(0, result["num_slices"] - 1, NUM_SLICES).round().astype(int))
  images, volumes, slices = slices_of(config, context.split, rows)
  per_candidate = images[0].size * len(rows) * 4
  candidates = tradeoffs.gallery_candidates(mean_psnr, tolerance, lam_grid)
  candidates = candidates[:max(1, MAX_BYTES // per_candidate)]
  key = streams.key(config, "evaluation")
  zf = ev.measure_slices(context.operator, images, ev.slice_keys(key, volumes, slices))
  coeffs = np.asarray(hparams.coefficients(lam_grid[candidates]))
  recons = np.asarray(grid.reconstruct_grid(context.model, context.variables, zf,
                                            coeffs, chunk=context.chunk))  # (S, C, H, W)
  recons = np.swapaxes(recons, 0, 1)  # a candidate's slices as one image
  scores = {m: np.array([np.nan if v is None else v for v in result["mean"][m]], np.float64)
            for m in ("psnr", "ssim")}
  out = tradeoffs.gallery_section(recons, mean_psnr, candidates, lam_grid,
                                  int(config.eval.gallery_size), tolerance, scores)
  out["slices"] = [int(r) for r in rows]
  return out

