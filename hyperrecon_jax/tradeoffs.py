"""Evaluation of a sampled λ set: the trade-off between the loss terms, and what to show.

With K loss terms a dense λ grid has G^(K−1) points, out of reach beyond K = 3.
A report over a design of N points on the simplex (`hparams.simplex_design`)
answers three questions instead:

* **Which λ are worth having?** The Pareto set of the K loss terms' means over
  the split (`pareto_section`), and its hypervolume against the per-λ Unets'
  on one common normalized scale (`pareto.hypervolume_ratio`): how much of
  the baselines' trade-off HyperRecon recovers with one network.
* **Which λ is best for each image?** `best_per_slice`.
* **What should a person look at?** The k most different reconstructions of a
  slice among those within a tolerance of its best PSNR (`gallery_section`,
  `gallery.diverse`): candidates that are truly different images.

Everything here is host-side NumPy over an `evaluate.evaluate_grid` result,
plus the few reconstructions of one slice that the gallery compares.
"""

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import gallery
from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import pareto
from hyperrecon_jax.results import floats

# Candidates of one slice's gallery: the best this many by PSNR within the
# tolerance. Bounds the reconstructions held at once (512 × 256² float32 is
# 128 MiB) whatever the design's size.
MAX_GALLERY_CANDIDATES = 512
# The design's own seed: every report over N points of K terms evaluates the
# same λ, so two models (or two seeds) are compared on identical λ.
DESIGN_SEED = 0


def design_lambdas(num: int, num_coeffs: int) -> np.ndarray:
  """The λ of a report over ``num`` points of `hparams.simplex_design`.

  For one hyperparameter the points are sorted by λ, so they draw as a curve.

  Args:
    num: N ≥ K points (the K vertices included).
    num_coeffs: K.

  Returns:
    (N, K − 1) float32 λ.
  """
  coeffs = hparams.simplex_design(num, num_coeffs, seed=DESIGN_SEED)
  lam = np.asarray(hparams.lambdas_from_coefficients(coeffs), np.float32)
  if num_coeffs == 2:
    lam = lam[np.argsort(lam[:, 0], kind="stable")]
  return lam


def term_points(loss_terms: dict, names) -> np.ndarray:
  """(G, K) means of the named terms from a result's ``loss_terms`` section."""
  missing = [n for n in names if n not in loss_terms["mean"]]
  if missing:
    raise errors.InputError(f"the result has no values of the loss terms {missing}.")
  return np.stack([np.asarray(loss_terms["mean"][n], np.float64) for n in names], axis=1)


def pareto_unavailable(names, points, baseline_points=None) -> str | None:
  """Why the terms' Pareto set and hypervolume cannot be taken, or None.

  They need, in HyperRecon's λ and in the Unets' each, one λ where every
  term has a finite mean (a slice is left out of a term at every λ where its
  value at any λ is not finite: one λ whose reconstruction is NaN on every
  slice leaves that term no mean), and, over both, a range in every term to
  normalize by.

  Args:
    names: the K loss-term names.
    points: (G, K) mean term values of HyperRecon.
    baseline_points: optional (M, K) those of the per-λ Unets.
  """
  sets = {"HyperRecon's": np.asarray(points, np.float64)}
  if baseline_points is not None:
    sets["the Unets'"] = np.asarray(baseline_points, np.float64)
  for whose, rows in sets.items():
    if not np.isfinite(rows).all(axis=1).any():
      empty = [n for n, column in zip(names, rows.T) if not np.isfinite(column).any()]
      many = len(empty) > 1
      which = (f"the term{'s' * many} {', '.join(empty)} {'have' if many else 'has'} no "
               f"finite mean at any of {whose} λ" if empty
               else f"none of {whose} λ has a finite mean of every term")
      return (f"{which} (a slice is left out of a term at every λ where the term is not "
              "finite at one of them)")
  rows = np.concatenate(list(sets.values()))
  finite = rows[np.isfinite(rows).all(axis=1)]
  flat = [n for n, lo, hi in zip(names, finite.min(0), finite.max(0)) if not hi > lo]
  if flat:
    return (f"the term{'s' * (len(flat) > 1)} {', '.join(flat)} "
            f"{'are' if len(flat) > 1 else 'is'} the same at every λ, with no range to "
            "normalize by")
  return None


def pareto_section(names, points, lambdas, baseline_points=None,
                   baseline_lambdas=None) -> dict:
  """The Pareto set of HyperRecon's λ and, with baselines, the hypervolume ratio.

  Args:
    names: the K loss-term names (the objectives, all minimized).
    points: (G, K) mean term values of HyperRecon at each evaluated λ.
    lambdas: (G, K − 1) those λ.
    baseline_points: optional (M, K) mean term values of the per-λ Unets.
    baseline_lambdas: their (M, K − 1) λ.

  Returns:
    ``{'terms': [K], 'front': [indices of the non-dominated λ], 'front_lambdas':
    [...], 'hypervolume': {...}}`` where ``hypervolume`` is
    `pareto.hypervolume_ratio`'s dict with baselines (``hyperrecon``,
    ``baselines``, ``ratio``, the normalization bounds and the reference
    point), else HyperRecon's own on its own bounds; with baselines also
    ``baseline_front`` (indices of the non-dominated Unets) and, when a term
    of the weights (``weight_l1``) sits beside two or more terms of the
    reconstruction, ``hypervolume_image_terms``: the same ratio over those
    terms alone.
  """
  points = np.asarray(points, np.float64)
  front = pareto.non_dominated(points)
  index = np.flatnonzero(front)
  out = {"terms": list(names), "front": [int(i) for i in index],
         "front_lambdas": floats(np.asarray(lambdas)[index])}
  if baseline_points is None:
    lower, upper = pareto.bounds(points)
    hv = pareto.hypervolume(pareto.normalize(points, lower, upper),
                            np.full(points.shape[1], pareto.REFERENCE))
    out["hypervolume"] = {"hyperrecon": float(hv), "lower": floats(lower),
                          "upper": floats(upper),
                          "reference": [pareto.REFERENCE] * points.shape[1]}
    return out
  baseline_points = np.asarray(baseline_points, np.float64)
  out["hypervolume"] = pareto.hypervolume_ratio(points, baseline_points)
  image = [k for k, n in enumerate(names) if n not in losses.NEEDS_WEIGHTS]
  if 2 <= len(image) < len(names):
    # A Unet can drive its own weights to 0 at the weight term's vertex, a
    # hypernetwork must generate them: the trade-off between the images alone
    # tells the two apart.
    out["hypervolume_image_terms"] = {
        "terms": [names[k] for k in image],
        **pareto.hypervolume_ratio(points[:, image], baseline_points[:, image])}
  out["baseline_front"] = [int(i) for i in np.flatnonzero(pareto.non_dominated(baseline_points))]
  out["baseline_lambdas"] = floats(baseline_lambdas)
  out["baseline_points"] = floats(baseline_points)
  return out


def best_per_slice(per_slice: dict, lower_is_better) -> dict:
  """For each metric, the index of each slice's best λ.

  Args:
    per_slice: ``{metric: (S, G)}`` (a result's ``per_slice``, None as NaN).
    lower_is_better: names of the metrics to minimize.

  Returns:
    ``{metric: [S indices]}``; -1 for a slice with no finite value.
  """
  out = {}
  for m, rows in per_slice.items():
    v = np.array(rows, dtype=np.float64)
    v = -v if m not in lower_is_better else v
    finite = np.isfinite(v).any(1)
    best = np.argmin(np.where(np.isfinite(v), v, np.inf), axis=1)
    out[m] = [int(b) if f else -1 for b, f in zip(best, finite)]
  return out


def gallery_candidates(psnrs, tolerance_db: float, lambdas=None) -> np.ndarray:
  """Indices of the λ within ``tolerance_db`` of the best PSNR, best first, capped.

  At most `MAX_GALLERY_CANDIDATES`, the best by PSNR: the reconstructions of
  the candidates are held at once to compare them. Given the (G, K − 1)
  ``lambdas``, one λ per loss weighting (`hparams.distinct`): a λ grid of
  three terms holds copies of one reconstruction, which would fill the
  gallery with one image.
  """
  psnrs = np.asarray(psnrs, np.float64)
  if not np.isfinite(psnrs).any():
    raise errors.InputError("no λ of this slice has a finite PSNR: there is no gallery to show.")
  keep = np.flatnonzero(psnrs >= np.nanmax(psnrs) - tolerance_db)
  if lambdas is not None:
    keep = np.intersect1d(keep, hparams.distinct(lambdas))
  order = keep[np.argsort(-psnrs[keep], kind="stable")]
  return order[:MAX_GALLERY_CANDIDATES]


def gallery_section(recons, psnrs, candidates, lambdas, k: int, tolerance_db: float,
                    scores=None) -> dict:
  """The k most different good reconstructions of one slice.

  Args:
    recons: (C, H, W) reconstructions at the ``candidates``.
    psnrs: (G,) PSNR of the slice at every evaluated λ.
    candidates: (C,) indices into the evaluated λ (`gallery_candidates`).
    lambdas: (G, K − 1) the evaluated λ.
    k: gallery size.
    tolerance_db: the PSNR tolerance the candidates were chosen with.
    scores: optional ``{metric: (G,)}`` to store beside each pick.

  Returns:
    ``{'indices': [picks into the evaluated λ], 'lambdas', 'coeffs',
    'min_distance', 'psnr', 'tolerance_db', 'num_candidates', 'scores',
    'positions': [picks into candidates, the rows of recons]}``.
  """
  candidates = np.asarray(candidates)
  psnrs = np.asarray(psnrs, np.float64)
  picked = gallery.diverse(recons, psnrs[candidates], k, tolerance_db=tolerance_db)
  index = candidates[list(picked.indices)]
  lam = np.asarray(lambdas, np.float32)[index]
  out = {"indices": [int(i) for i in index], "lambdas": floats(lam),
         "coeffs": floats(hparams.coefficients(lam)),
         "min_distance": floats(picked.min_distance), "psnr": floats(psnrs[index]),
         "tolerance_db": float(tolerance_db), "num_candidates": int(len(candidates)),
         "positions": [int(i) for i in picked.indices]}
  if scores:
    out["scores"] = {m: floats(np.asarray(v, np.float64)[index]) for m, v in scores.items()}
  return out
