"""The per-λ Unets (``experiments/baselines.py``) on the slices and noise HyperRecon was scored on.

``workdir`` names the stack's run; each Unet is scored at its own λ by the
same program (`lambda_set.score`), so the curves compare like with like.
Without one, a shipped model's stored Unet scores (its ``info.json``, same
split) are reported, marked as stored: their weights are not shipped.

A stack whose checkpoint is short of its ``config.train.num_steps`` (an
interrupted ``baselines.py``) is scored as it is, with a line in the
report's ``warnings`` (`unfinished`): Unets trained for fewer steps make
HyperRecon look better than it is.
"""

import json
import os

import numpy as np

from hyperrecon_jax import errors


def check(config, settings) -> None:
  """Refuses a ``config.evals.baselines.workdir`` that is not a folder name (or '')."""
  del config
  if not isinstance(settings.get("workdir", ""), str):
    raise errors.InputError("config.evals.baselines.workdir must be a folder or ''")


def _workdir(settings) -> str:
  """The stack's workdir, a leading ``~`` the user's home (a shell leaves it after ``=``)."""
  return os.path.expanduser(settings.get("workdir", ""))


def prepare(context, settings) -> None:
  """Loads the per-λ Unets of ``settings.workdir``, if any, into ``context.stack``."""
  path = _workdir(settings)
  if path:
    b_config, *stack = _load(path, context.config, trained_on=context.trained_on,
                             learned=context.learned)
    context.stack, context.stack_num_steps = tuple(stack), int(b_config.train.num_steps)


def unfinished(path: str, step: int, num_steps: int) -> str | None:
  """The warning for a stack whose checkpoint is short of its training, or None.

  Args:
    path: the stack's workdir (the report records it absolute).
    step: the step of the checkpoint scored.
    num_steps: the stack's ``config.train.num_steps`` (stored with that
      checkpoint).

  Returns:
    One line naming the folder, the step and ``num_steps``; None for a
    finished stack.
  """
  if step >= num_steps:
    return None
  return (f"the per-λ Unets of {path} are at step {step} of their "
          f"config.train.num_steps={num_steps} (an unfinished baselines.py run: rerun it to "
          "finish)")


def load(path, config, *, trained_on=None, learned=None, flag="config.evals.baselines.workdir"):
  """``(model, variables, step)`` of the stack in ``path``, checked against ``config``.

  Args:
    path: the stack's workdir.
    config: the HyperRecon model's config, with the data to score.
    trained_on: the data config (as JSON) the HyperRecon model learned
      from, when ``config.data`` is another folder; the stack must have
      learned from the same data.
    learned: the data record (`split_record.read`) of the model's run, or
      None: a stack that learned from other volumes is refused.
    flag: how the caller's user gave ``path``, for the messages.
  """
  return _load(path, config, trained_on=trained_on, learned=learned, flag=flag)[1:]


def _load(path, config, *, trained_on=None, learned=None, flag="config.evals.baselines.workdir"):
  """`load`'s ``(model, variables, step)``, after the config stored with the checkpoint."""
  from hyperrecon_jax import checkpoints
  from hyperrecon_jax import train
  from hyperrecon_jax.train import run_fields
  setting = f"{flag}={path}"
  if not os.path.isdir(path):
    what = "is a file" if os.path.exists(path) else "no such folder"
    raise errors.InputError(f"{setting}: {what}; give the --workdir of a run of "
                            "experiments/baselines.py (hyperrecon_jax.train.baselines."
                            "train_baselines)")
  if os.path.isfile(os.path.join(path, "segmenter.json")):
    raise errors.InputError(f"{setting} holds a segmenter, not per-λ Unets: a report takes "
                            "it as config.evals.lambda_set.segmenter")
  if not os.path.isdir(checkpoints.checkpoint_dir(path)):
    raise errors.InputError(f"{setting} holds no checkpoint: train the per-λ Unets first "
                            f"(experiments/baselines.py --workdir={path}, or "
                            "hyperrecon_jax.train.baselines.train_baselines)")
  from hyperrecon_jax.data import split_record
  split_record.check_unseen(path, config.data, str(config.eval.split))
  b_config, model, variables, step = train.load_trained(path)
  if not train.stack_lambdas(model):
    raise errors.InputError(f"{path} is not a run of per-λ baselines "
                            "(experiments/baselines.py --lambdas=...)")
  # The baselines must solve the same problem: task, data and loss terms (a
  # seed of their own is another draw of that problem).
  mine = json.loads(config.to_json())
  if trained_on:
    mine["data"] = trained_on
  diffs = [d for d in run_fields.incompatibilities(json.loads(b_config.to_json()), mine)
           if not d.startswith(("model.", "hparams.", "loss_scales", "eval", "segmenter",
                                "train."))]
  if diffs:
    raise errors.InputError(f"the baselines in {path} were trained for another "
                            f"problem: {'; '.join(diffs)}")
  _check_scales(path, train.stack_lambdas(model), b_config.loss_scales, config.loss_scales)
  # data.manual_dir is where the folder is on this machine, not which data it holds.
  split_record.check_same_data(learned, split_record.read(path), f"the baselines in {path}")
  return b_config, model, variables, step


def _check_scales(path, lambdas, theirs, mine) -> None:
  """Refuses Unets that minimized another weighting of the terms than the model's λ means.

  A Unet trained at a λ that weights one term alone learns the same whatever
  the scales (the scale-measuring stack, at λ = 0 and 1, has all of them 1),
  and scales that are proportional weight every λ alike. Otherwise a Unet at λ
  minimized Σ c_k(λ)·term_k/s'_k, another λ of the model's loss, so the
  objective and the curves would not compare like with like.
  """
  from hyperrecon_jax import hparams
  theirs, mine = np.asarray(theirs, np.float64), np.asarray(mine, np.float64)
  coeffs = np.asarray(hparams.coefficients(np.asarray(lambdas, np.float32)))
  mixed = [lam for lam, c in zip(lambdas, coeffs) if np.count_nonzero(c) > 1]
  if not mixed or np.allclose(theirs / theirs[0], mine / mine[0], rtol=1e-6, atol=0):
    return
  shown = ", ".join("(" + ", ".join(f"{v:g}" for v in lam) + ")" for lam in mixed[:3])
  raise errors.InputError(
      f"the baselines in {path} were trained with loss_scales "
      f"({', '.join(f'{v:.6g}' for v in theirs)}), the model with "
      f"({', '.join(f'{v:.6g}' for v in mine)}): the Unets at λ = {shown}, which mix the "
      "terms, minimized another weighting than the model's λ there, so the objective and the "
      "curves would not compare like with like. Train them with the model's scales "
      f"(--config.loss_scales=\"({', '.join(f'{v:.6g}' for v in mine)})\")")


def run(context, settings) -> None:
  from hyperrecon_jax.evaluators import lambda_set
  from hyperrecon_jax.evaluators import loss_terms
  result = context.result
  if context.stack is None:
    stored = context.stored_test
    if stored.get("baselines") and stored.get("split") == result["split"]:
      # The Unets trained beside the shipped model were scored when it was
      # exported, on this split with the same noise; their weights are not
      # shipped, so their means (and spreads) are drawn but not re-measured.
      result["baselines"] = {"stored": f"info.json of {result['pretrained']}",
                             **stored["baselines"]}
    return
  model, variables, step = context.stack
  lams = np.asarray(model.lambdas, np.float32)
  scored = lambda_set.score(context, model, variables, lams)  # the same key: the same noise
  # Absolute, as the report records the stack: the report is read later, from anywhere.
  where = os.path.abspath(_workdir(settings))
  result["baselines"] = {"workdir": where,
                         "checkpoint_step": step, "num_steps": context.stack_num_steps,
                         **{k: scored[k] for k in ("lambdas", "mean", "std", "q25", "q75",
                                                    "per_slice", "unscored")}}
  warning = unfinished(where, step, context.stack_num_steps)
  if warning:
    result.setdefault("warnings", []).append(warning)
  if context.terms:
    terms = scored["loss_terms"]
    loss_terms.add_weight_terms(terms, model, variables, lams, tuple(context.config.losses))
    result["baselines"]["loss_terms"] = {k: terms[k] for k in ("names", "mean", "std")}
