"""Evaluate a trained model and write its report: the evaluators of ``config.evals``.

``run(workdir)`` is what ``experiments/evaluate.py`` does: it loads the model
with the config it was trained with (read-only, so a run that is still
training can be evaluated), applies the report's settings (``overrides`` of
the config's ``eval`` and ``evals`` fields, e.g. ``{'eval.grid': 100}``) and
runs the evaluators ``config.evals`` lists (`hyperrecon_jax.evaluators`): the
λ grid or design over a split, the per-λ Unets, the objective, the trade-offs,
the galleries, the DHS replay and the files, written into ``<workdir>/eval``
(or ``out``) as one set.

``run(workdir, data=folder)`` scores the model on every volume of another
folder of NIfTI or fastMRI files instead of its own test split (a second site,
new subjects): the folder is built with the model's slicing and intensity
settings as an evaluation-only dataset (`hyperrecon_jax.data.EVALUATION_ONLY`,
every volume in its test split), and a volume whose content the run learned
from is refused (`hyperrecon_jax.data.split_record`).
"""

import json
import os

from hyperrecon_jax import errors
from hyperrecon_jax import evaluators

# What a report's settings may change: what to evaluate and how, never the
# model (its task, data, losses).
SETTINGS = ("eval", "evals")


def run(workdir: str | None = None, *, pretrained: str | None = None,
        folder: str | None = None, out: str | None = None, step: int | None = None,
        overrides: dict | None = None, data: str | None = None,
        progress: bool = True) -> dict:
  """Evaluates a trained model over a λ grid or a λ design and writes the report.

  Args:
    workdir: a training run's folder (read only).
    pretrained: instead of ``workdir``, the name of a model shipped with the
      package (`hyperrecon_jax.pretrained`); ``out`` is then required.
    folder: where the pretrained models are (default: the package's).
    out: where the report goes; default ``<workdir>/eval``. A folder inside
      a training run's folder is refused, but for ``<workdir>/eval`` itself
      (`run_paths.check_outside_runs`).
    step: checkpoint step (default: the newest intact one).
    overrides: ``{dotted field: value}`` of the config's ``eval`` and
      ``evals`` sections, e.g. ``{'eval.samples': 1000,
      'evals.baselines.workdir': path}``; checked before any evaluation.
    data: a folder of NIfTI volumes or fastMRI ``.h5`` files to score, every
      volume of it, instead of the model's own test split.
    progress: report progress on stderr.

  Returns:
    The result the evaluators built (`evaluators`), as written to
    ``lambda_grid.json``: the `evaluate.evaluate_grid` result with
    ``checkpoint_step``, ``split``, ``design``, ``workdir`` (or
    ``pretrained``), ``data`` (with ``data``: the dataset, the folder and
    each volume id's file) and each evaluator's part.
  """
  overrides = _grid_or_design(dict(overrides or {}))
  _check_names(overrides)
  if workdir is not None and os.path.isfile(workdir):
    # Before the report folder inside it is looked at ("cannot create <file>/eval").
    from hyperrecon_jax.train import trained
    raise errors.InputError(trained.not_a_folder(workdir))
  report = None
  if out is not None or workdir is not None:
    # Before the model loads: the report replaces this folder whole.
    from hyperrecon_jax import run_paths
    from hyperrecon_jax.evaluators import figures
    report = figures.report_folder(out or os.path.join(workdir, "eval"))
    run_paths.check_outside_runs(report, "the report folder", "--out", report_of=workdir)
    try:
      figures.check_out(report)
    except errors.InputError as e:
      if out is not None:
        raise
      # The run's own eval/ (a run received read-only, or holding other files).
      raise errors.InputError(f"{str(e).rstrip('.')}; to leave the run as it is, write the "
                              "report elsewhere with --out=DIR (in Python, out=DIR)") from None
  context = _load(workdir, pretrained, folder, report, step, progress)
  _apply(context.config, overrides)
  if data is not None:
    _score_folder(context, data)
  else:
    from hyperrecon_jax import train
    train.check_data_folder(context.config, f"the run in {workdir}" if workdir is not None
                            else context.where)
  evaluators.check(context.config)  # the settings, before any file is read
  evaluators.check_files(context)  # before the checks below build the dataset
  from hyperrecon_jax.data import split_record
  if workdir is not None:
    split_record.check_unseen(workdir, context.config.data, context.split)
  if data is not None:  # Built once every check passed.
    from hyperrecon_jax import data as data_lib
    split_record.check_slices(context.trained_on, context.config.data,
                              f"the run in {workdir}" if workdir is not None else context.where)
    volumes = data_lib.volumes(context.config.data, "test")
    # Volume ids are positions in the folder's sorted files, as in `volumes`.
    context.result["data"]["volume_names"] = {str(v.id): v.name for v in volumes}
    context.result["data"]["without_slices"] = [v.name for v in volumes if not v.slices]
    context.result["data"]["min_foreground"] = float(context.config.data.min_foreground)
  if pretrained is not None:
    # A shipped model by its name; an exported one by its folder, absolute as
    # a workdir is (a report is read from other folders).
    from hyperrecon_jax import pretrained as pretrained_lib
    shipped = pretrained in pretrained_lib.names(folder or pretrained_lib.FOLDER)
    context.result["pretrained"] = pretrained if shipped else os.path.abspath(pretrained)
  else:
    context.result["workdir"] = os.path.abspath(workdir)
  return evaluators.run(context)


def slice_name(result: dict, row: int) -> str:
  """Row ``row`` of a report's slices as a viewer finds it: its volume and slice number.

  A report's slices (``result['slices']``) are numbered by their row; a
  reader looks for the volume (its file, for a folder of ``--data``) and the
  slice index, which is what this names (``volume 0 slice 90``,
  ``sub-12.nii.gz slice 3``).
  """
  volume = result["slices"]["volume"][row]
  number = result["slices"]["slice"][row]
  name = result.get("data", {}).get("volume_names", {}).get(str(volume))
  return f"{name or f'volume {volume}'} slice {number}"


def unscored_lines(result: dict, shown: int = 5) -> list[str]:
  """What a report's statistics left out, and why, for the terminal.

  The slices whose reconstruction is not finite at some λ
  (`results.reconstructions_not_finite`) are counted first, as a model that
  diverged or overflows. Then, per metric, the slices left out of its
  statistics (`results.summarize`'s ``unscored``).

  Args:
    result: a report's result (`run`).
    shown: the most slices named per metric.

  Returns:
    Warning lines, without the ``warning:`` prefix.
  """
  from hyperrecon_jax import results
  psnr = result.get("per_slice", {}).get("psnr", [])
  broken = int(results.reconstructions_not_finite(psnr).any(axis=1).sum())
  lines = [f"the model's reconstructions are not finite (NaN, ±inf, or too large for "
           f"float32) on {broken} of {len(psnr)} slices at some λ: it diverged or overflows "
           "on these inputs, and their scores are left out"] if broken else []
  for metric, where in result["unscored"].items():
    named = ", ".join(f"volume {v} slice {s}" for v, s in where[:shown])
    more = f" and {len(where) - shown} more" if len(where) > shown else ""
    lines.append(f"{len(where)} slice(s) left out of {metric} (not finite at some λ or for "
                 f"the input, e.g. a constant ground truth slice): {named}{more}")
  return lines


def volume_lines(result: dict, input_name: str, shown: int = 10) -> list[str]:
  """Each volume's mean PSNR, input and model at the best mean-PSNR λ, lowest first.

  Args:
    result: a report's result with ``data`` (`run` with ``data``).
    input_name: what the network's input is called (e.g. 'zero-filled').
    shown: the most volumes listed: the lowest and highest halves.

  Returns:
    Lines for the terminal: a warning naming the volumes that kept no slice,
    then (when a λ could be scored) the volumes by PSNR; a volume without a
    scored slice ('n/a') comes last.
  """
  from hyperrecon_jax.data import summary
  empty = result["data"].get("without_slices")
  warning = [summary.without_slices(empty, result["data"]["min_foreground"])] if empty else []
  best = result["best"]["psnr"]
  if best is None:
    return warning
  names = result["data"]["volume_names"]
  rows = sorted(
      ((result["volume_mean"]["psnr"][k][best["index"]],
        result["zero_filled"]["volume_mean"]["psnr"][k], names.get(str(v), f"volume {v}"))
       for k, v in enumerate(result["volumes"])),
      key=lambda row: (row[0] is None, row[0] or 0.0))
  lam = ", ".join(f"{v:.3g}" for v in best["lam"])
  lines = [*warning,
           f"per volume, PSNR (dB) {input_name} → model at λ = ({lam}), lowest first:"]
  if len(rows) > shown:
    rows = rows[:shown // 2] + [None] + rows[len(rows) - shown // 2:]
  for row in rows:
    if row is None:
      lines.append(f"  … {len(result['volumes']) - shown} more in lambda_grid.json "
                   "(volume_mean)")
      continue
    model, zf, file = row
    text = [f"{x:.2f}" if x is not None else "n/a" for x in (zf, model)]
    lines.append(f"  {file}: {text[0]} → {text[1]}")
  return lines


def check_settings(settings) -> None:
  """Checks a report's settings (``eval`` and ``evals`` sections) before any model loads."""
  evaluators.check(settings)


def _grid_or_design(overrides: dict) -> dict:
  """A grid asked for replaces the model's design of λ; a grid and a design together are refused.

  A model trained with ``eval.samples`` set (every model of four terms or
  more) would otherwise keep its design and drop the grid without a word.
  """
  if "eval.grid" not in overrides:
    return overrides
  if overrides.get("eval.samples"):
    raise errors.InputError(
        f"a grid (config.eval.grid={overrides['eval.grid']}, --grid) and a design "
        f"(config.eval.samples={overrides['eval.samples']}, --samples) both choose the λ "
        "to score: give one of them")
  return {**overrides, "eval.samples": 0}


def _check_names(overrides) -> None:
  for name in overrides:
    if name.split(".")[0] not in SETTINGS:
      raise errors.InputError(f"{name}: a report's settings are the config's "
                              f"{' and '.join(SETTINGS)} fields, not the model's")


def _apply(config, overrides) -> None:
  try:
    config.update_from_flattened_dict(overrides)
  except (KeyError, AttributeError, TypeError) as err:
    raise errors.InputError(f"report settings {sorted(overrides)}: {err}") from None


def _score_folder(context, folder: str) -> None:
  """Points the report at every volume of ``folder`` (see the module docstring)."""
  from hyperrecon_jax import data
  if context.split != "test":
    raise errors.InputError(
        f"--data={folder} is scored whole, as the test split of its evaluation-only "
        f"build: --split / config.eval.split={context.split!r} does not apply")
  segmenter = context.config.evals.get("lambda_set", {}).get("segmenter", "")
  if segmenter:
    # A segmenter knows the classes of the labels it learned; another
    # folder's label volumes follow their own scheme.
    raise errors.InputError(
        f"config.evals.lambda_set.segmenter={segmenter}: Dice is scored on the data the "
        f"segmenter was trained for, not on another folder ({folder})")
  scored = data.folder_config(context.config.data, folder)
  with context.config.unlocked():
    context.config.data = scored
  # A shipped model's stored scores are of its own test split.
  context.stored_test = {}
  context.result["data"] = {"dataset": scored.name, "folder": scored.manual_dir}


def _load(workdir, pretrained, folder, out, step, progress) -> evaluators.Context:
  """The model and its operator in a new `evaluators.Context`; ``out``: `report_folder`'s."""
  from hyperrecon_jax import physics
  from hyperrecon_jax import train
  from hyperrecon_jax.data import split_record
  if (workdir is None) == (pretrained is None):
    raise errors.InputError("give either a workdir or a pretrained model name, not "
                            f"{'both' if workdir else 'neither'}")
  stored_test = {}
  if pretrained is None:
    config, model, variables, step = train.load_trained(workdir, step)
    where = workdir
  else:
    from hyperrecon_jax import pretrained as pretrained_lib
    if out is None:
      raise errors.InputError("a pretrained model has no workdir: give --out=DIR for the "
                              "report")
    if step is not None:
      raise errors.InputError("a pretrained model has one checkpoint: --step does not apply")
    folder = folder or pretrained_lib.FOLDER
    config, model, variables, step = pretrained_lib.load(pretrained, folder=folder)
    where = f"the pretrained model {pretrained!r}"
    stored_test = pretrained_lib.info(pretrained, folder).get("test", {})
  if len(train.stack_lambdas(model)) == 1:
    config, model, variables = train.unstack(config, variables)
  elif train.stack_lambdas(model):
    # Its Unets answer each λ with the nearest one's reconstruction: a report
    # over λ would score them at λ they were not trained at.
    raise errors.InputError(
        f"{where} is {train.describe_model(config)}: score it beside a HyperRecon model "
        f"(evaluate.py --workdir=HYPER --baselines={where})")
  size = int(config.data.image_size)
  return evaluators.Context(
      config=config, model=model, variables=variables, step=step, where=where,
      operator=physics.make_operator(config.task, (size, size)),
      out=out, progress=progress,
      stored_test=stored_test, trained_on=json.loads(config.data.to_json()),
      learned=split_record.read(workdir) if pretrained is None else None)
