r"""One markdown row per evaluated run: the trade-off it recovers and how it spans λ.

  python experiments/summarize.py --workdirs=workdirs/k4/faces_s0,workdirs/k4/uniform_s0

Reads each workdir's report (``eval/lambda_grid.json``, written by
``experiments/evaluate.py --config.eval.samples=N
--config.evals.baselines.workdir=...``) and its checkpoint, and prints: the
hypervolume of HyperRecon's λ design against the per-λ Unets' (both
normalized on one scale, `hyperrecon_jax.pareto`), the size of its Pareto
set, the best mean PSNR and the PSNR range over the design, the mean PSNR at
each vertex of the simplex (each term alone) with that vertex's Unet beside
it, and the weight spread along each vertex direction
(`hyperrecon_jax.train.spread`) of the checkpoint the report scored. The
reports must share their loss terms, split, design and Unets (one folder at one
checkpoint step, named above the table); each must be its own run's. Nothing
is written.
"""

import functools
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli

_WORKDIRS = cli.define_path_list("workdirs", None, "Evaluated workdirs (comma-separated).")
flags.mark_flag_as_required("workdirs")


def _row(workdir: str) -> tuple[str, dict]:
  """A run's markdown row, and what it must share with the other rows."""
  from hyperrecon_jax import checkpoints
  from hyperrecon_jax import errors
  from hyperrecon_jax import train
  from hyperrecon_jax.train import baselines
  from hyperrecon_jax.train import spread
  if not os.path.isdir(workdir):
    what = "a file" if os.path.exists(workdir) else "no such folder"
    raise errors.InputError(f"{workdir}: {what}; give the workdirs of evaluated training runs")
  if os.path.isfile(os.path.join(workdir, baselines.RESULT_FILE)):
    raise errors.InputError(f"{workdir} holds per-λ Unets (baselines.py): summarize reads "
                            "HyperRecon runs, whose reports score such Unets beside them "
                            "(evaluate.py --baselines)")
  if os.path.isfile(os.path.join(workdir, "segmenter.json")):
    raise errors.InputError(f"{workdir} holds a segmenter (segmenter.py), not a training run: "
                            "summarize compares evaluated HyperRecon runs")
  path = os.path.join(workdir, "eval", "lambda_grid.json")
  from hyperrecon_jax import pretrained
  if os.path.isfile(os.path.join(workdir, pretrained.INFO_FILE)) and not os.path.isfile(path):
    raise errors.InputError(
        f"{workdir} is an exported model (export_pretrained.py), not a training run: "
        f"evaluate it with experiments/evaluate.py --pretrained={workdir} --samples=N "
        "--out=DIR, and compare training runs here")
  from hyperrecon_jax.evaluators import figures
  stranded = figures.stranded_report(os.path.dirname(path))
  if stranded is not None:
    raise errors.InputError(
        f"{workdir}'s report is in {stranded}, where an evaluation killed while it replaced "
        f"the report left it: move it back (mv {stranded} {os.path.dirname(path)}) or "
        f"evaluate the run again (experiments/evaluate.py --workdir={workdir}, which puts it "
        "back first)")
  if not os.path.isfile(path) and os.path.isfile(os.path.join(workdir, "lambda_grid.json")):
    # evaluate.py --out=FOLDER: the report alone, not the run it scored.
    raise errors.InputError(
        f"{workdir} is a report folder (evaluate.py --out), not a training run: summarize "
        "reads a run's own report, <workdir>/eval; evaluate the run into it "
        "(experiments/evaluate.py --workdir=RUN --samples=N) and give RUN")
  if not os.path.isfile(path):
    what = ("has not been evaluated" if os.path.isfile(os.path.join(workdir, "config.json"))
            else "is not a training run")
    raise errors.InputError(f"{workdir} {what} (no eval/lambda_grid.json); evaluate a run "
                            f"first: experiments/evaluate.py --workdir={workdir} --samples=N")
  from hyperrecon_jax import results
  with open(path) as f:
    text = f.read()
  try:
    result = results.from_json(text, path)
  except errors.InputError as e:
    raise errors.InputError(f"{str(e).rstrip('.')}; evaluate the run again") from None
  if "mean" not in result:
    raise errors.InputError(f"{path} is not a report of experiments/evaluate.py; evaluate "
                            "the run again")
  if "pareto_unavailable" in result:
    raise errors.InputError(f"{path}: {result['pareto_unavailable']}")
  if "pareto" not in result:
    raise errors.InputError(f"{path}: a grid report; summarize needs a design "
                            "(--config.eval.samples=N)")
  scored = result.get("workdir")
  if not isinstance(scored, str) or os.path.realpath(scored) != os.path.realpath(workdir):
    # evaluate.py --out takes a folder holding an earlier report, another run's too.
    design = result.get("design")
    num = (design.get("num") if isinstance(design, dict) and design.get("kind") == "samples"
           else None)
    unets = result.get("baselines")
    unets = unets.get("workdir") if isinstance(unets, dict) else None
    # The same design and Unets, so that the row compares with the others.
    again = (f"experiments/evaluate.py --workdir={workdir} --samples="
             f"{num if isinstance(num, int) and not isinstance(num, bool) else 'N'}"
             + (f" --baselines={unets}" if isinstance(unets, str) else ""))
    raise errors.InputError(
        f"{path} is the report of {scored}, not of {workdir} (another run's report, or the "
        f"run was moved): evaluate this run again, {again}")
  # The weight spreads of the checkpoint the report scored, not of a newer one.
  reported = result.get("checkpoint_step")
  try:
    config, model, variables, step = train.load_trained(
        workdir, None if reported is None else int(reported))
  except checkpoints.CheckpointError as e:
    if reported is None:
      raise
    raise errors.InputError(f"{path} scored checkpoint step {reported}: {e}; evaluate the "
                            "run again") from None
  spreads = spread.direction_spreads(model, variables["params"], tuple(config.losses))
  try:
    unets = result.get("baselines", {}).get("workdir")
    # One stack of Unets is one folder at one checkpoint: it may train on between reports.
    shared = {"loss terms": tuple(config.losses), "split": result.get("split"),
              "design": f"{len(result['coeffs'])} points",
              "Unets": (f"{os.path.realpath(unets)} (step "
                        f"{result['baselines']['checkpoint_step']})" if unets else "none"),
              # Runs of other measurements or slices: not one problem, even
              # where the loss terms are the same (Unets would be refused).
              "task": _task_text(config.task.to_dict()),
              "data": _data_text(config.data),
              # Warned about, not refused (`_warn_recipes`).
              "recipe": _recipe(config)}
    _warn_not_finite(path, result)
    return _format(workdir, result, config, step, spreads), shared
  except (KeyError, TypeError, IndexError, ValueError, AttributeError) as e:
    raise errors.InputError(f"{path}: a field is missing or malformed ({type(e).__name__}: "
                            f"{e}); evaluate the run again") from None


# What else decides what a run learned, beside the columns (sampler, sampling
# method, seed, step): two rows that differ here compare more than a sampler.
_RECIPE = ("model.hyper_dim", "model.channels", "model.batch_norm", "model.init_scheme",
           "model.dtype", "model.hyper_init", "model.conditioned", "loss_scales", "extensions",
           "train.batch_size", "train.num_steps", "train.lr", "train.lr_decay_every",
           "train.lr_decay_factor")
# The settings a sampler or sampling method reads, compared between runs that use it.
_SAMPLER_FIELDS = {"endpoints": ("endpoint_prob", "endpoint_prob_final"),
                   "faces": ("endpoint_prob", "endpoint_prob_final", "alpha"),
                   "dirichlet": ("alpha",), "log_uniform": ("log_min",)}


def _recipe(config) -> dict:
  """``{field: value}`` of a run's training recipe other than the table's columns."""
  from hyperrecon_jax.train import run_fields
  value = functools.partial(run_fields.value_at, config)
  out = {f: value(f) for f in _RECIPE}
  sampler = str(config.hparams.sampler)
  for f in _SAMPLER_FIELDS.get(sampler, ()):
    out[f"hparams.{f} ({sampler})"] = value(f"hparams.{f}")
  if str(config.sampling.method) == "dhs":
    for f in ("top_b", "normalize"):
      out[f"sampling.{f} (dhs)"] = value(f"sampling.{f}")
  return out


def _warn_recipes(workdirs, recipes) -> None:
  """A warning naming the recipe fields (`_recipe`) on which the runs differ."""
  if len(recipes) < 2 or any(r is None for r in recipes):
    return
  fields = [f for f in recipes[0] if all(f in r for r in recipes)
            and len({repr(r[f]) for r in recipes}) > 1]
  if fields:
    diffs = "; ".join(f + " (" + ", ".join(f"{w}: {r[f]!r}" for w, r in
                                           zip(workdirs, recipes)) + ")" for f in fields)
    print(f"warning: the runs differ in more than the columns (λ sampler, sampling, seed, "
          f"step) show: {diffs}; a difference between their rows is not the sampler's "
          "alone", file=sys.stderr)


def _task_text(task: dict) -> str:
  """The task and the fields its operator reads (`physics.task_fields`): a denoising run
  does not depend on ``task.acceleration``."""
  from hyperrecon_jax import physics
  return ", ".join(f"{k}={task[k]}" for k in sorted(physics.task_fields(task)))


def _data_text(data) -> str:
  """What decides a run's test slices and their intensities: the dataset, its folder and
  the other fields its build reads (`data.config_fields.SETTINGS_FIELDS`)."""
  from hyperrecon_jax.data import config_fields
  folder = os.path.realpath(data.manual_dir) if data.manual_dir else "embedded"
  fields = [f for f in config_fields.SETTINGS_FIELDS[data.name] if f != "manual_dir"]
  values = [tuple(v) if isinstance(v, (list, tuple)) else v for v in (data[f] for f in fields)]
  return f"{data.name} ({folder}), " + ", ".join(f"{f}={v}" for f, v in zip(fields, values))


def _warn_not_finite(path: str, result: dict) -> None:
  """A warning for NaN means (λ with no scorable slice) and a NaN hypervolume ratio."""
  import numpy as np
  psnr = np.array(result["mean"]["psnr"], np.float64)
  bad = int(np.sum(~np.isfinite(psnr)))
  if bad:
    print(f"warning: {path}: the mean PSNR is not a number at {bad} of {psnr.size} λ (no "
          "slice scored there); the row's best and range leave them out", file=sys.stderr)
  ratio = result["pareto"]["hypervolume"].get("ratio")
  if ratio is not None and not np.isfinite(ratio):
    print(f"warning: {path}: the hypervolume ratio is {ratio}", file=sys.stderr)


def _format(workdir, result, config, step, spreads) -> str:
  import numpy as np

  from hyperrecon_jax import hparams
  names = tuple(config.losses)
  hv = result["pareto"]["hypervolume"]
  psnr = np.array(result["mean"]["psnr"], np.float64)
  coeffs = np.asarray(result["coeffs"], np.float64)
  vertices = [int(np.argmin(np.abs(coeffs - e).sum(1))) for e in np.eye(len(names))]
  unets = {}
  if "baselines" in result:
    # By loss weighting, not by λ: for three terms λ = (1, 0.5) and (1, 0) both
    # weight the first term alone.
    b = np.asarray(hparams.coefficients(np.asarray(result["baselines"]["lambdas"],
                                                   np.float32)), np.float64)
    for k, v in enumerate(vertices):
      match = np.flatnonzero(np.abs(b - coeffs[v]).sum(1) < 1e-5)
      if match.size:
        unets[k] = result["baselines"]["mean"]["psnr"][int(match[0])]
  vertex_text = " / ".join(
      f"{psnr[v]:.2f}" + (f" ({unets[k]:.2f})" if k in unets else "")
      for k, v in enumerate(vertices))
  ratio = f"{hv['ratio']:.3f}" if "ratio" in hv else "–"
  image = result["pareto"].get("hypervolume_image_terms")
  if image:
    ratio += f" ({image['ratio']:.3f})"
  sampling = f"{config.hparams.sampler}, {str(config.sampling.method).upper()}"
  finite = psnr[np.isfinite(psnr)]  # the warning above names the others
  best, span = ((f"{finite.max():.2f}", f"{finite.min():.2f}–{finite.max():.2f}") if finite.size
                else ("n/a", "n/a"))
  return (f"| {workdir} | {sampling} | {config.train.seed} | {step} | {ratio} | "
          f"{len(result['pareto']['front'])}/{len(psnr)} | {best} | {span} | {vertex_text} | "
          + " / ".join(f"{spreads[f'weight_spread_{n}']:.3f}" for n in names) + " |")


def table(workdirs) -> str:
  """The header line and the markdown table of the evaluated runs ``workdirs``.

  Args:
    workdirs: the runs' folders, one row each.

  Returns:
    The text to print.

  Raises:
    InputError: an entry that is empty, listed twice, not an evaluated run,
      or a report that does not compare with the others (module docstring).
  """
  from hyperrecon_jax import errors
  if "" in [w.strip() for w in workdirs]:
    raise errors.InputError(f"--workdirs={','.join(workdirs)} has an empty entry "
                            "(a doubled or trailing comma)")
  real = [os.path.realpath(w) for w in workdirs]
  twice = next((w for w, r in zip(workdirs, real) if real.count(r) > 1), None)
  if twice is not None:
    raise errors.InputError(f"--workdirs lists {twice} twice: its row would be repeated")
  # Every row before the table: an error is then the only output.
  rows, shared = zip(*[_row(workdir) for workdir in workdirs])
  recipes = [s.pop("recipe", None) for s in shared]
  for what in shared[0]:
    values = [s[what] for s in shared]
    if len(set(values)) > 1:
      runs = "; ".join(f"{w}: {_text(v)}" for w, v in zip(workdirs, values))
      raise errors.InputError(
          f"the reports differ in their {what} ({runs}): their hypervolumes, Pareto sets "
          "and PSNRs are not comparable; summarize reports of one task and data, one set "
          "of loss terms, one split, one design and one stack of Unets at a time")
  _warn_recipes(workdirs, recipes)
  first = shared[0]
  return "\n".join([
      f"{_text(first['loss terms'])} · {first['split']} split · a design of "
      f"{first['design']} · Unets: {first['Unets']}",
      "",
      "| run | λ sampler, sampling | seed | step | hypervolume / Unets' (image terms) | "
      "Pareto set | best PSNR | PSNR over the design | PSNR at each vertex (its Unet) | "
      "weight spread per vertex |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
      *rows])


def main(argv):
  cli.quiet_libraries()
  with cli.user_errors():
    text = table(_WORKDIRS.value)
  print(text)


def _text(value) -> str:
  return ", ".join(value) if isinstance(value, tuple) else str(value)


if __name__ == "__main__":
  cli.run(main)
