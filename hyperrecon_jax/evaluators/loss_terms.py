"""A design's trade-offs: the weight terms, the Pareto set, the hypervolume, the best λ per slice.

Runs when the λ set is a design (``eval.samples``), whose every loss term was
scored per (slice, λ) by `lambda_set`; `hyperrecon_jax.tradeoffs` computes.
"""

import numpy as np


def run(context, settings) -> None:
  del settings
  if not context.terms:
    return
  from hyperrecon_jax import grid
  from hyperrecon_jax import hparams
  from hyperrecon_jax import tradeoffs
  result, names = context.result, tuple(context.config.losses)
  weights = grid.weight_terms(context.model, context.variables,
                              hparams.coefficients(context.lam_grid), names)
  for n, v in weights.items():
    result["loss_terms"]["mean"][n] = [float(x) for x in v]
    result["loss_terms"]["names"].append(n)
  points = tradeoffs.term_points(result["loss_terms"], names)
  b_points = b_lams = None
  if context.stack is not None:
    b_points = tradeoffs.term_points(result["baselines"]["loss_terms"], names)
    b_lams = np.asarray(context.stack[0].lambdas, np.float32)
  result["pareto"] = tradeoffs.pareto_section(names, points, context.lam_grid, b_points, b_lams)
  if "per_slice" in result:
    result["best_per_slice"] = tradeoffs.best_per_slice(
        result["per_slice"], set(result["lower_is_better"]))
