"""The evaluators of a report, chosen by ``config.evals`` as big_vision's are.

`hyperrecon_jax.report` loads a model into a `Context` and runs every
evaluator named in ``config.evals`` with that entry's settings, in the order of
`ORDER` (each may use what those before it added): first every evaluator's
``check_files`` (files read, nothing built: `report.run` calls them before
its data checks, which may build the dataset), then every ``prepare``
(checks and loading, so that a wrong setting fails in seconds, before any
long work), then every ``run``, which adds its part to ``context.result``.

=============  ==========================================================  ================
evaluator      job                                                         settings
=============  ==========================================================  ================
lambda_set     every slice of ``eval.split`` at every λ of the grid        ``segmenter``
               (``eval.grid``) or design (``eval.samples``); with a
               segmenter, the Dice of every reconstruction
baselines      the per-λ Unets of a stack on the same slices and noise     ``workdir``
objective      HyperRecon and each Unet on that Unet's training objective  —
loss_terms     a design's weight terms, Pareto set, hypervolume, best λ    —
split_gallery  the most different λ that are good over the split           —
dhs_replay     the λ a DHS run keeps (the paper's Fig. 6)                  ``batches``
figures        ``lambda_grid.json`` and the figures, written as one set     ``panel_lambdas``
=============  ==========================================================  ================

`validation` is the evaluator of the training loop (every
``train.eval_every`` steps); it is not part of a report.
"""

import dataclasses
import importlib
from typing import Any

from hyperrecon_jax import errors

ORDER = ("lambda_set", "baselines", "objective", "loss_terms", "split_gallery",
         "dhs_replay", "figures")


@dataclasses.dataclass
class Context:
  """A loaded model, what the report is about, and the result being built.

  Attributes:
    config: the model's config, with the report's settings applied.
    model: the model (`hyperrecon_jax.models`).
    variables: its variables.
    step: its checkpoint step.
    where: what the model is, for messages (a workdir, a shipped name).
    operator: the task's operator.
    out: the report's folder.
    progress: show progress on stderr.
    stored_test: a shipped model's stored test scores (its ``info.json``).
    trained_on: the data config the model learned from, as JSON
      (``config.data`` is the data scored, another folder with
      ``report.run(data=...)``).
    learned: the data record of the model's run (`split_record.read` of its
      workdir), or None (a shipped model, a dataset not split by volume).
    result: the report, built by the evaluators.
    lam_grid: (G, K − 1) the evaluated λ (`lambda_set`).
    segmenter: a `segmentation.Trained`, or None (`lambda_set`).
    terms: the loss terms scored per (slice, λ) (`lambda_set`).
    stack: ``(model, variables, step)`` of the per-λ Unets, or None (`baselines`).
    stack_num_steps: the stack's ``config.train.num_steps`` (`baselines`).
  """
  config: Any
  model: Any
  variables: Any
  step: int
  where: str
  operator: Any
  out: str
  progress: bool = True
  stored_test: dict = dataclasses.field(default_factory=dict)
  trained_on: dict = dataclasses.field(default_factory=dict)
  learned: dict | None = None
  result: dict = dataclasses.field(default_factory=dict)
  lam_grid: Any = None
  segmenter: Any = None
  terms: tuple = ()
  stack: Any = None
  stack_num_steps: int = 0

  @property
  def split(self) -> str:
    return str(self.config.eval.split)

  @property
  def chunk(self) -> int:
    return int(self.config.eval.chunk)


def chosen(config) -> list[tuple[str, Any, Any]]:
  """``(name, module, settings)`` of every evaluator of ``config.evals``, in `ORDER`.

  Args:
    config: the experiment config.
  """
  evals = config.get("evals")
  if evals is None:
    raise errors.InputError("the config has no evals section: it lists the report's "
                            f"evaluators, of {ORDER}")
  unknown = sorted(set(evals) - set(ORDER))
  if unknown:
    raise errors.InputError(f"config.evals names no evaluator {unknown}; they are {ORDER}")
  if "lambda_set" not in evals:
    raise errors.InputError("config.evals must hold lambda_set: every other evaluator "
                            "builds on its scores")
  return [(name, importlib.import_module(f"hyperrecon_jax.evaluators.{name}"), evals[name])
          for name in ORDER if name in evals]


def check(config) -> None:
  """Checks the settings of every chosen evaluator (no files read)."""
  for _, module, settings in chosen(config):
    if hasattr(module, "check"):
      module.check(config, settings)


def check_files(context: Context) -> None:
  """Runs each chosen evaluator's ``check_files``: its checks that read files but build nothing."""
  for _, module, settings in chosen(context.config):
    if hasattr(module, "check_files"):
      module.check_files(context, settings)


def run(context: Context) -> dict:
  """Prepares, then runs, every evaluator of ``context.config.evals``; returns the result."""
  evaluators = chosen(context.config)
  for _, module, settings in evaluators:
    if hasattr(module, "check"):
      module.check(context.config, settings)
  for _, module, settings in evaluators:
    if hasattr(module, "prepare"):
      module.prepare(context, settings)
  for _, module, settings in evaluators:
    module.run(context, settings)
  return context.result
