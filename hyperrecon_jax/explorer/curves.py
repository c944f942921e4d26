"""A slice's scores over the λ set, summarised: the best points, the diverse pair, the gallery.

`summary` turns one slice's `scoring.score_grid` result into the body of
``/api/curve``: the metric curves, the best point of each metric, the paper's
Fig. 7 pair (`evaluate.diverse_pair`), the gallery of good and mutually
different reconstructions (`gallery.diverse`), and the range map.
"""

import numpy as np

from hyperrecon_jax import evaluate as ev
from hyperrecon_jax import gallery as gallery_lib
from hyperrecon_jax import hparams
from hyperrecon_jax.explorer.images import data_url
from hyperrecon_jax.explorer.images import white_level
from hyperrecon_jax.explorer.json_numbers import finite_or_none
from hyperrecon_jax.explorer.json_numbers import rounded

LOWER_IS_BETTER = ("hfen",)  # metrics whose best point is their minimum


def spread(recons) -> np.ndarray:
  """(H, W) the range map: max − min over the λ set of (G, H, W) reconstructions."""
  with np.errstate(invalid="ignore"):  # inf − inf where every λ is +inf: NaN, drawn black
    return recons.max(0) - recons.min(0)


def best_points(scores, lambda_set, metric_names) -> dict:
  """{metric: {index, lam, coeffs, value}} of the best point; None where all NaN.

  Args:
    scores: {metric: (G,)} over the λ set.
    lambda_set: the `lambda_set.LambdaSet` they were scored on.
    metric_names: the metrics to report.
  """
  best = {}
  for m in metric_names:
    values = scores[m]
    if np.all(np.isnan(values)):
      best[m] = None
      continue
    k = int(np.nanargmin(values) if m in LOWER_IS_BETTER else np.nanargmax(values))
    best[m] = {"index": k, "lam": rounded(lambda_set.lambdas[k]),
               "coeffs": rounded(lambda_set.coeffs[k]), "value": finite_or_none(values[k])}
  return best


def summary(g, lambda_set, metric_names, *, gallery_size, gallery_tolerance_db) -> dict:
  """The curve of one slice (`Explorer.curve`, without its slice and error scale).

  Args:
    g: the slice's `scoring.score_grid` result: ``recons`` (G, H, W) and
      each metric (G,).
    lambda_set: the `lambda_set.LambdaSet` it was scored on.
    metric_names: the metrics to report.
    gallery_size: diverse good reconstructions to pick.
    gallery_tolerance_db: how far below the best PSNR they may be.

  Returns:
    ``lambdas``, ``coeffs``, ``metrics``, ``best``, ``diverse`` and
    ``gallery`` (None where every PSNR is NaN), ``range_max`` and ``range``
    (a PNG data URL, white at ``range_max``, `images.white_level`).
  """
  lambdas, coeffs = lambda_set.lambdas, lambda_set.coeffs
  # A λ grid of three terms holds copies of one loss weighting (and of its
  # reconstruction); the pair and the gallery choose among distinct ones.
  unique = hparams.distinct(lambdas)
  recons, psnr = g["recons"][unique], np.asarray(g["psnr"], np.float64)[unique]
  # A reconstruction with a pixel that is not finite (a model gone NaN, or
  # past float32's range: ±inf and a PSNR of −inf) has no distance to the
  # others: the pair and the gallery choose among the finite ones.
  psnr = np.where(np.isfinite(recons.reshape(len(recons), -1)).all(axis=1), psnr, np.nan)
  diverse = gallery = None  # where no reconstruction is finite
  if not np.all(np.isnan(psnr)):
    a, b, distance = ev.diverse_pair(recons, psnr)
    a, b = int(unique[a]), int(unique[b])
    diverse = {"indices": [a, b], "lambdas": [rounded(lambdas[a]), rounded(lambdas[b])],
               "coeffs": [rounded(coeffs[a]), rounded(coeffs[b])],
               "distance": finite_or_none(distance)}
    picked = gallery_lib.diverse(recons, psnr, gallery_size, tolerance_db=gallery_tolerance_db)
    picks = [int(unique[k]) for k in picked.indices]
    items = [{"index": k, "lam": rounded(lambdas[k]), "coeffs": rounded(coeffs[k]),
              "metrics": {m: finite_or_none(g[m][k]) for m in metric_names},
              "min_distance": finite_or_none(d), "image": data_url(g["recons"][k])}
             for k, d in zip(picks, picked.min_distance)]
    gallery = {"indices": picks, "items": items,
               "threshold": finite_or_none(picked.threshold),
               "num_candidates": picked.num_candidates, "tolerance_db": gallery_tolerance_db}
  range_map = spread(g["recons"])
  white = white_level(range_map)
  return {"lambdas": rounded(lambdas), "coeffs": rounded(coeffs),
          "metrics": {m: [finite_or_none(v) for v in g[m]] for m in metric_names},
          "best": best_points(g, lambda_set, metric_names), "diverse": diverse,
          "gallery": gallery, "range_max": white, "range": data_url(range_map, white)}
