"""Evaluate a trained workdir over a λ grid or a λ design and write its report.

``run(workdir)`` is what ``experiments/evaluate.py`` does: it loads the model
with the config it was trained with (read-only, so a run that is still
training can be evaluated), scores every slice of a split at every λ of a
grid or of a design on the simplex (`evaluate.evaluate_grid`), with a design
also every loss term and their Pareto set (`hyperrecon_jax.tradeoffs`), and
writes the report into ``<workdir>/eval`` (or ``out``) as one set
(`hyperrecon_jax.report_files`: ``lambda_grid.json`` and the figures).
"""

import contextlib
import os
import sys
import time

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import streams


class _Progress:
  """(slice, λ) pairs scored: a bar on a terminal, a line every ~10 s otherwise."""

  def __init__(self, total: int, enabled: bool):
    self._total, self._done, self._bar = total, 0, None
    self._enabled, self._last = enabled, time.time()
    if enabled and sys.stderr.isatty():
      with contextlib.suppress(ImportError):
        import tqdm
        self._bar = tqdm.tqdm(total=total, unit="pair", dynamic_ncols=True)

  def __call__(self, count: int) -> None:
    count = min(count, self._total - self._done)  # padding rows
    self._done += count
    if self._bar is not None:
      self._bar.update(count)
    elif self._enabled and (time.time() - self._last > 10
                            or self._done == self._total):
      self._last = time.time()
      print(f"evaluated {self._done:,}/{self._total:,} (slice, λ) pairs",
            file=sys.stderr, flush=True)

  def close(self):
    if self._bar is not None:
      self._bar.close()


def check_options(grid, chunk, split, panel_lambdas, samples=None) -> None:
  """Raises ValueError naming the first bad option (before any work)."""
  for name, value in (("grid", grid), ("chunk", chunk),
                      ("panel_lambdas", panel_lambdas), ("samples", samples)):
    if value is not None and (isinstance(value, bool) or int(value) != value
                              or value < 1):
      raise errors.InputError(f"{name} must be an integer ≥ 1, got {value!r}")
  from hyperrecon_jax.data import SPLITS
  if split is not None and split not in SPLITS:
    raise errors.InputError(f"split must be one of {SPLITS}, got {split!r}")


def _load_baselines(path, config):
  """The stack of per-λ Unets in ``path``, checked against the model's config."""
  import json

  from hyperrecon_jax import train
  from hyperrecon_jax.train import configuration
  b_config, model, variables, step = train.load_trained(path)
  if not isinstance(model, train.UnetStack):
    raise errors.InputError(f"{path} is not a run of per-λ baselines "
                            "(experiments/baselines.py --lambdas=...)")
  # The baselines must solve the same problem: task, data and loss terms.
  diffs = [d for d in configuration.incompatibilities(
      json.loads(b_config.to_json()), json.loads(config.to_json()))
           if not d.startswith(("model.", "hparams.", "loss_scales"))]
  if diffs:
    raise errors.InputError(f"the baselines in {path} were trained for another "
                            f"problem: {'; '.join(diffs)}")
  return model, variables, step


def run(workdir: str | None = None, *, pretrained: str | None = None,
        folder: str | None = None, out: str | None = None, grid: int | None = None,
        samples: int | None = None, split: str | None = None, chunk: int | None = None,
        step: int | None = None, panel_lambdas: int = 5,
        baselines: str | None = None, segmenter: str | None = None,
        progress: bool = True) -> dict:
  """Evaluates a trained workdir over a λ grid or a λ design and writes the report.

  Args:
    workdir: a training run's folder (read only).
    pretrained: instead of ``workdir``, the name of a model shipped with the
      package (`hyperrecon_jax.pretrained`); ``out`` is then required.
    folder: where the pretrained models are (default: the package's).
    out: where the report goes; default ``<workdir>/eval``.
    grid: λ values per hyperparameter (default: the config's ``eval.grid``);
      one or two hyperparameters only.
    samples: instead of a grid, N points of a design on the simplex (the K
      vertices and a scrambled Sobol sequence, `tradeoffs.design_lambdas`),
      for any number of terms; default the config's ``eval.samples`` when K ≥
      4 (grids stop at two hyperparameters). A design also scores every loss
      term at every λ, and reports their Pareto set and hypervolume.
    split: 'train', 'validation' or 'test' (default: ``eval.split``).
    chunk: model batch of one call (default: ``eval.chunk``).
    step: checkpoint step (default: the newest intact one).
    panel_lambdas: λ values shown in ``slices.png``.
    baselines: the workdir of per-λ Unets (``experiments/baselines.py``) to
      score on the same slices and noise; they are stored under
      ``'baselines'`` and drawn on ``curves.png`` and ``slices.png``.
      Without it, a pretrained model's stored Unet scores (its ``info.json``,
      same split) are drawn on ``curves.png``.
    segmenter: the folder of a segmenter (``experiments/segmenter.py``) for
      this data: every reconstruction is also scored by its Dice (§5.5.1).
    progress: report progress on stderr.

  Returns:
    The `evaluate.evaluate_grid` result with ``checkpoint_step``, ``split``,
    ``design``, ``workdir`` (or ``pretrained``), ``gallery``
    (`tradeoffs.gallery_section` of the shown slice) and ``gallery_split``
    (`split_gallery.section`: the most different λ good on the split); with baselines
    ``baselines`` (each Unet's statistics) and ``objective``
    (`train.baselines.compare_objectives`); for a DHS run ``dhs`` (the λ it
    keeps on `DHS_REPLAY_BATCHES` train batches); for a design
    ``loss_terms``, ``pareto`` (`tradeoffs.pareto_section`) and
    ``best_per_slice``.
  """
  from hyperrecon_jax import physics
  from hyperrecon_jax import report_files
  from hyperrecon_jax import split_gallery

  check_options(grid, chunk, split, panel_lambdas, samples)
  model_at = _load_model(workdir, pretrained, folder, out, step)
  config = model_at.config
  stack = _load_baselines(baselines, config) if baselines else None  # before any work
  seg = _load_segmenter(segmenter, config, model_at.where) if segmenter else None
  split = split or config.eval.split
  chunk = int(chunk or config.eval.chunk)
  out = os.path.abspath(out or os.path.join(workdir, "eval"))
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  lam_grid, design = _lambda_set(config, grid, samples)
  terms = _image_terms(config) if design["kind"] == "samples" else ()

  result = _evaluate(config, model_at.model.apply, model_at.variables, operator, split,
                     lam_grid, chunk, seg, terms, progress)
  result.update(checkpoint_step=model_at.step, split=split, design=design,
                input_name=physics.input_name(config.task.name))
  _provenance(result, workdir, pretrained, model_at, segmenter, baselines)
  b_apply = b_grid = b_lams = None
  if stack is not None:
    b_apply, b_grid, b_lams = _score_baselines(result, config, model_at, stack, baselines,
                                               operator, split, chunk, seg, terms)
  if terms:
    _tradeoffs(result, config, model_at, lam_grid, stack, b_lams)
  if config.model.hyper_dim and len(lam_grid) > 1:
    result["gallery_split"] = split_gallery.section(result, config, model_at, operator, split,
                                                    lam_grid, chunk)
  dhs = _dhs(result, config, model_at, operator)
  report_files.write(out, result, config, model_at, operator, split, lam_grid, chunk,
                     panel_lambdas, seg, dhs, (b_apply, b_grid, b_lams))
  return result


def _dhs(result, config, model_at, operator):
  """For a DHS run, ``result['dhs']``: the λ it keeps at this checkpoint; else None."""
  if not (config.model.hyper_dim and config.sampling.method == "dhs"):
    return None
  result["dhs"] = _dhs_replay(config, model_at.model, model_at.variables, operator,
                              streams.key(config, "evaluation"))
  return result["dhs"]


def _provenance(result, workdir, pretrained, model_at, segmenter, baselines):
  """Where the model (and the segmenter) came from; a shipped model's stored Unets."""
  if pretrained is not None:
    result["pretrained"] = pretrained
    _stored_baselines(result, model_at.stored_test, result["split"], baselines)
  else:
    result["workdir"] = os.path.abspath(workdir)
  if segmenter:
    result["segmenter"] = os.path.abspath(segmenter)


class _ModelAt:
  """A loaded model: config, module, variables, step, where it came from."""

  def __init__(self, config, model, variables, step, where, stored_test=None):
    self.config, self.model, self.variables, self.step = config, model, variables, step
    self.where, self.stored_test = where, stored_test or {}


def _load_model(workdir, pretrained, folder, out, step) -> _ModelAt:
  from hyperrecon_jax import train
  if (workdir is None) == (pretrained is None):
    raise errors.InputError("give either a workdir or a pretrained model name, not "
                            f"{'both' if workdir else 'neither'}")
  if pretrained is None:
    return _ModelAt(*train.load_trained(workdir, step), workdir)
  from hyperrecon_jax import pretrained as pretrained_lib
  if out is None:
    raise errors.InputError("a pretrained model has no workdir: give --out=DIR for the report")
  if step is not None:
    raise errors.InputError("a pretrained model has one checkpoint: --step does not apply")
  folder = folder or pretrained_lib.FOLDER
  config, model, variables, step = pretrained_lib.load(pretrained, folder=folder)
  return _ModelAt(config, model, variables, step, f"the pretrained model {pretrained!r}",
                  pretrained_lib.info(pretrained, folder).get("test", {}))


def _load_segmenter(path, config, where):
  from hyperrecon_jax import segmentation
  seg = segmentation.load(path)
  segmentation.check_data(seg, config.data, where)
  return seg


def _lambda_set(config, grid, samples):
  """The λ to evaluate and a description of them: a grid, a design or the fixed λ."""
  from hyperrecon_jax import hparams
  from hyperrecon_jax import tradeoffs
  from hyperrecon_jax import train
  k = train.num_coeffs(config)
  if not config.model.hyper_dim:  # a plain Unet has one λ: the one it was trained at
    if samples:
      raise errors.InputError("a plain Unet has one λ: --samples does not apply")
    return np.asarray([config.hparams.fixed], np.float32), {"kind": "fixed"}
  if grid is not None and samples is not None:
    raise errors.InputError("give --grid or --samples, not both")
  if samples is None and grid is None and k >= 4:
    samples = int(config.eval.samples) or None
    if samples is None:
      raise errors.InputError(
          f"the model has {k} loss terms ({k - 1} hyperparameters): grids stop at two; "
          "give --samples=N (or set config.eval.samples)")
  if samples is not None:
    if samples < k:
      raise errors.InputError(f"--samples={samples}: a design on the simplex of {k} terms "
                              f"needs at least its {k} vertices")
    return tradeoffs.design_lambdas(samples, k), {
        "kind": "samples", "num": int(samples),
        "method": "simplex vertices + scrambled Sobol (hparams.simplex_design)",
        "seed": tradeoffs.DESIGN_SEED}
  grid = int(grid or config.eval.grid)
  return hparams.grid(grid, k - 1), {"kind": "grid", "num": grid}


def _image_terms(config):
  from hyperrecon_jax import losses
  return tuple(n for n in config.losses if n not in losses.NEEDS_WEIGHTS)


def _evaluate(config, apply_fn, variables, operator, split, lam_grid, chunk, seg, terms,
              progress):
  from hyperrecon_jax import data
  from hyperrecon_jax import evaluate as ev
  num_slices = data.num_examples(config.data, split)
  bar = _Progress(num_slices * len(lam_grid), progress)
  try:
    return ev.evaluate_grid(
        apply_fn, variables, operator,
        data.batches(config.data, split, batch_size=int(config.train.batch_size),
                     training=False),
        lam_grid, key=streams.key(config, "evaluation"), chunk=chunk, progress=bar,
        segmenter=seg, terms=terms)
  finally:
    bar.close()


def _stored_baselines(result, stored_test, split, baselines):
  if not baselines and stored_test.get("baselines") and stored_test.get("split") == split:
    # The Unets trained beside the shipped model were scored when it was
    # exported, on this split with the same noise; their weights are not
    # shipped, so their means (and spreads) are drawn but not re-measured.
    result["baselines"] = {"stored": f"info.json of {result['pretrained']}",
                           **stored_test["baselines"]}


def _score_baselines(result, config, model_at, stack, path, operator, split, chunk, seg,
                     terms):
  """Scores the per-λ Unets at their own λ on the same slices and noise."""
  from hyperrecon_jax.train import baselines as baselines_lib
  from hyperrecon_jax.train import stack_model
  b_model, b_variables, b_step = stack
  b_apply, b_grid = stack_model.grid_model(b_model, b_variables)
  b_lams = np.asarray(b_model.lambdas, np.float32)
  b_result = _evaluate(config, b_apply, b_grid, operator, split, b_lams, chunk, seg, terms,
                       False)  # the same key: the same noise
  result["baselines"] = {"workdir": os.path.abspath(path), "checkpoint_step": b_step,
                         **{k: b_result[k] for k in ("lambdas", "mean", "std", "q25", "q75",
                                                      "per_slice", "unscored")}}
  if terms:
    weights = baselines_lib.member_weight_terms(b_model, b_variables, config.losses)
    b_terms = b_result["loss_terms"]
    for n, v in weights.items():
      b_terms["mean"][n] = [float(x) for x in v]
      b_terms["names"].append(n)
    result["baselines"]["loss_terms"] = {k: b_terms[k] for k in ("names", "mean", "std")}
  if config.model.hyper_dim:
    result["objective"] = baselines_lib.compare_objectives(
        config, model_at.model, model_at.variables, b_model, b_variables)
  return b_apply, b_grid, b_lams


def _tradeoffs(result, config, model_at, lam_grid, stack, b_lams):
  """Adds the weight terms, the Pareto set, the hypervolume and the per-slice best λ."""
  from hyperrecon_jax import grid as grid_lib
  from hyperrecon_jax import hparams
  from hyperrecon_jax import tradeoffs
  names = tuple(config.losses)
  weights = grid_lib.weight_terms(model_at.model, model_at.variables,
                                  hparams.coefficients(lam_grid), names)
  for n, v in weights.items():
    result["loss_terms"]["mean"][n] = [float(x) for x in v]
    result["loss_terms"]["names"].append(n)
  points = tradeoffs.term_points(result["loss_terms"], names)
  b_points = None
  if stack is not None:
    b_points = tradeoffs.term_points(result["baselines"]["loss_terms"], names)
  result["pareto"] = tradeoffs.pareto_section(names, points, lam_grid, b_points, b_lams)
  if "per_slice" in result:
    result["best_per_slice"] = tradeoffs.best_per_slice(
        result["per_slice"], set(result["lower_is_better"]))


# Batches of the train split replayed for the DHS histogram: with the paper's
# 8 of 32 (or the demo's 2 of 8) that is 800 (200) kept λ, a few seconds of
# forward passes; 25 batches left most cells of a 2-D histogram empty.
DHS_REPLAY_BATCHES = 100


def _dhs_replay(config, model, variables, operator, key) -> dict:
  """Which λ DHS keeps at this checkpoint, on the train split (Fig. 6)."""
  import jax

  from hyperrecon_jax import data
  from hyperrecon_jax.results import floats
  from hyperrecon_jax.train import step as step_lib
  batches = data.batches(config.data, "train", batch_size=int(config.train.batch_size),
                         seed=streams.seed(config, "replay"), training=True)
  sampled, kept = step_lib.dhs_selected_lambdas(
      config, model, variables, operator, batches, jax.random.fold_in(key, 1 << 20),
      num_batches=DHS_REPLAY_BATCHES)
  return {"split": "train", "batches": DHS_REPLAY_BATCHES,
          "top_b": int(config.sampling.top_b), "sampled": floats(sampled),
          "kept": floats(kept)}
