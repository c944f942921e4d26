"""Every slice of ``eval.split`` at every λ of a grid or a design (`evaluate.evaluate_grid`).

The λ set is the config's: a grid of ``eval.grid`` values per hyperparameter
(one or two hyperparameters), or with ``eval.samples = N > 0`` a design of N
points on the simplex of loss coefficients (its K vertices and a scrambled
Sobol sequence, `tradeoffs.design_lambdas`), for any number of terms; a design
also scores every loss term of the reconstruction at every λ. A plain Unet
is scored at the one λ it was trained at. With ``segmenter`` (the folder of
``experiments/segmenter.py``) every reconstruction is also scored by Dice.
"""

import os

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import progress as progress_lib
from hyperrecon_jax import streams
from hyperrecon_jax.train import config_checks


def _integer(name, value, low):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise errors.InputError(f"config.{name} must be an integer ≥ {low}, got {value!r}")


def check(config, settings) -> None:
  """Refuses bad ``config.eval`` settings (grid, chunk, samples, gallery, split) and a
  ``segmenter`` that is no folder name, with an `errors.InputError` naming the field."""
  from hyperrecon_jax.data import SPLITS
  _integer("eval.grid", config.eval.grid, 2)  # λ values per axis, both ends included
  _integer("eval.chunk", config.eval.chunk, 1)
  _integer("eval.samples", config.eval.samples, 0)
  _integer("eval.gallery_size", config.eval.gallery_size, 1)
  tolerance = config.eval.gallery_tolerance_db
  if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
      0 <= tolerance < float("inf")):
    raise errors.InputError("config.eval.gallery_tolerance_db must be a finite number ≥ 0 "
                            f"(dB), got {tolerance!r}")
  # A report's settings alone (no model yet) are checked as one hyperparameter.
  config_checks.check_eval_size(
      config.eval, len(tuple(config.losses)) - 1 if "losses" in config else 1)
  if config.eval.split not in SPLITS:
    raise errors.InputError(f"config.eval.split must be one of {SPLITS}, got "
                            f"{config.eval.split!r}")
  if not isinstance(settings.get("segmenter", ""), str):
    raise errors.InputError("config.evals.lambda_set.segmenter must be a folder or ''")


def _segmenter(settings) -> str:
  """The segmenter's folder, a leading ``~`` the user's home (a shell leaves it after ``=``)."""
  return os.path.expanduser(settings.get("segmenter", ""))


def check_files(context, settings) -> None:
  """Loads the segmenter and refuses one trained on other images or labels.

  Reads files only: `report.run` calls it before the checks that build the
  dataset, so that label files changed since the segmenter learned them are
  refused before a build of the changed folder.

  Args:
    context: the report's `evaluators.Context`; sets ``context.segmenter``.
    settings: ``config.evals.lambda_set``.
  """
  path = _segmenter(settings)
  if path and context.segmenter is None:
    from hyperrecon_jax import segmenter_files
    context.segmenter = segmenter_files.load(path)
    segmenter_files.check_data(context.segmenter, context.config.data, context.where)


def prepare(context, settings) -> None:
  """Sets the context's λ set (``lam_grid``, the result's ``design``), its segmenter
  (checked against the split) and, for a design, the loss terms scored."""
  context.lam_grid, design = lambda_set(context.config)
  context.result["design"] = design
  path = _segmenter(settings)
  if path:
    from hyperrecon_jax import segmenter_files
    check_files(context, settings)  # loads it, unless done before
    segmenter_files.check_split(context.segmenter, context.config.data, context.split)
    context.result["segmenter"] = os.path.abspath(path)
  if design["kind"] == "samples":
    from hyperrecon_jax import losses
    context.terms = tuple(n for n in context.config.losses if n not in losses.NEEDS_WEIGHTS)


def lambda_set(config):
  """The λ to evaluate, (G, K − 1), and a description of them: a grid, a design or the fixed λ."""
  from hyperrecon_jax import hparams
  from hyperrecon_jax import tradeoffs
  from hyperrecon_jax import train
  k = train.num_coeffs(config)
  samples = int(config.eval.samples)
  if not config.model.hyper_dim:  # a plain Unet has one λ: the one it was trained at
    if samples:
      raise errors.InputError("a plain Unet has one λ: config.eval.samples does not apply")
    return np.asarray([config.hparams.fixed], np.float32), {"kind": "fixed"}
  if samples:
    if samples < k:
      raise errors.InputError(f"config.eval.samples={samples}: a design on the simplex of "
                              f"{k} terms needs at least its {k} vertices")
    return tradeoffs.design_lambdas(samples, k), {
        "kind": "samples", "num": samples,
        "method": "simplex vertices + scrambled Sobol (hparams.simplex_design)",
        "seed": tradeoffs.DESIGN_SEED}
  if k >= 4:
    raise errors.InputError(
        f"the model has {k} loss terms ({k - 1} hyperparameters): grids stop at two; "
        "score a design of N points on the simplex instead (--samples=N, "
        "config.eval.samples=N)")
  grid = int(config.eval.grid)
  return hparams.grid(grid, k - 1), {"kind": "grid", "num": grid}


def run(context, settings) -> None:
  del settings
  from hyperrecon_jax import physics
  context.result.update(score(context, context.model, context.variables, context.lam_grid,
                              progress=context.progress))
  context.result.update(checkpoint_step=context.step, split=context.split,
                        input_name=physics.input_name(context.config.task.name))
  # A run's report only: an exported model is what its folder ships, however
  # far it trained (its info.json says; the shipped 64² model's time budget
  # stopped it at 9,701 of 10,000 steps).
  warning = ("workdir" in context.result
             and unfinished(context.step, int(context.config.train.num_steps)))
  if warning:
    context.result.setdefault("warnings", []).append(warning)


def unfinished(step: int, num_steps: int) -> str | None:
  """The report's warning for a run scored short of its training, None for a finished one."""
  if step >= num_steps:
    return None
  return (f"the run is at step {step} of its config.train.num_steps={num_steps} (still "
          "training, or stopped): these are not the finished model's scores")


def score(context, model, variables, lam_grid, *, progress=False) -> dict:
  """`evaluate.evaluate_grid` of a model on the context's split, noise and segmenter."""
  from hyperrecon_jax import data
  from hyperrecon_jax import evaluate as ev
  config = context.config
  total = data.num_examples(config.data, context.split) * len(lam_grid)
  bar = progress_lib.Progress(
      total, "pair", lambda done, total, _: f"evaluated {done:,}/{total:,} (slice, λ) pairs",
      enabled=progress)
  try:
    return ev.evaluate_grid(
        model, variables, context.operator,
        data.batches(config.data, context.split, batch_size=int(config.train.batch_size),
                     training=False),
        lam_grid, key=streams.key(config, "evaluation"), chunk=context.chunk, progress=bar,
        segmenter=context.segmenter, terms=context.terms)
  finally:
    bar.close()
