"""A design's trade-offs: the weight terms, the Pareto set, the hypervolume, the best λ per slice.

Runs when the λ set is a design (``eval.samples``), whose every loss term was
scored per (slice, λ) by `lambda_set`; `hyperrecon_jax.tradeoffs` computes.
"""

import numpy as np


def add_weight_terms(terms: dict, model, variables, lams, names) -> None:
  """Adds the weight terms' values at each λ to a ``loss_terms`` section.

  The image terms were scored per slice; a weight term (`grid.weight_terms`)
  depends on λ alone. ``terms['names']`` then lists every term in the
  config's order, as the report's ``pareto.terms`` does.

  Args:
    terms: the section (`evaluate.summarize_terms`), changed in place.
    model, variables: the network whose weights are scored.
    lams: (G, K − 1) λ.
    names: the config's loss terms, in order.
  """
  from hyperrecon_jax import grid
  from hyperrecon_jax import hparams
  for n, v in grid.weight_terms(model, variables, hparams.coefficients(lams), names).items():
    terms["mean"][n] = [float(x) for x in v]
  terms["names"] = [n for n in names if n in terms["mean"]]


def run(context, settings) -> None:
  del settings
  if not context.terms:
    return
  from hyperrecon_jax import tradeoffs
  result, names = context.result, tuple(context.config.losses)
  add_weight_terms(result["loss_terms"], context.model, context.variables, context.lam_grid,
                   names)
  points = tradeoffs.term_points(result["loss_terms"], names)
  b_points = b_lams = None
  if context.stack is not None:
    b_points = tradeoffs.term_points(result["baselines"]["loss_terms"], names)
    b_lams = np.asarray(context.stack[0].lambdas, np.float32)
  # Said in the report rather than raised: the scores computed are kept.
  problem = tradeoffs.pareto_unavailable(names, points, b_points)
  if problem:
    result["pareto_unavailable"] = f"no Pareto set or hypervolume: {problem}"
  else:
    result["pareto"] = tradeoffs.pareto_section(names, points, context.lam_grid, b_points,
                                                b_lams)
  if "per_slice" in result:
    result["best_per_slice"] = tradeoffs.best_per_slice(
        result["per_slice"], set(result["lower_is_better"]))
