"""Evaluate a trained workdir over a λ grid and write its report as one set.

``run(workdir)`` is what ``experiments/evaluate.py`` does: it loads the model
with the config it was trained with (read-only, so a run that is still
training can be evaluated), scores every slice of a split at every λ of a
grid (`evaluate.evaluate_grid`), and writes into ``<workdir>/eval`` (or
``out``):

- ``lambda_grid.json``: metrics per λ (means over slices, per volume, per
  slice, the zero-filled baseline, the best λ per metric, unscored slices);
- ``curves.png`` (one hyperparameter) or ``landscape.png`` (two);
- ``dhs_lambdas.png`` for a run trained with DHS: the λ it keeps (Fig. 6);
- ``slices.png`` (ground truth, input, reconstructions at several λ),
  ``diverse.png`` (the paper's Fig. 7) and ``range.png`` (where λ changes the
  image), all of the split's middle slice with the noise it was scored with.

The files are written into a temporary folder that replaces the old report
only when every file is complete: an interrupted evaluation leaves the
previous report as it was, never new numbers beside old figures.
"""

import contextlib
import os
import shutil
import sys
import tempfile
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


def check_options(grid, chunk, split, panel_lambdas) -> None:
  """Raises ValueError naming the first bad option (before any work)."""
  for name, value in (("grid", grid), ("chunk", chunk),
                      ("panel_lambdas", panel_lambdas)):
    if value is not None and (isinstance(value, bool) or int(value) != value
                              or value < 1):
      raise errors.InputError(f"{name} must be an integer ≥ 1, got {value!r}")
  from hyperrecon_jax.data import SPLITS
  if split is not None and split not in SPLITS:
    raise errors.InputError(f"split must be one of {SPLITS}, got {split!r}")


def _middle_slice(config, split, index, batch_size):
  """Slice ``index`` of a split: its image, volume id and slice index."""
  from hyperrecon_jax import data
  number, row = divmod(index, batch_size)
  for i, batch in enumerate(data.batches(config.data, split,
                                         batch_size=batch_size, training=False)):
    if i == number:
      return (np.asarray(batch["image"][row], np.float32), batch["volume"][row],
              batch["slice"][row])
  raise errors.InputError(f"the {split} split has no slice {index}")


def _publish(tmp: str, out: str) -> None:
  """Replaces ``out`` by the finished folder ``tmp`` (two renames)."""
  old = None
  if os.path.exists(out):
    old = f"{tmp}.old"
    os.replace(out, old)
  os.replace(tmp, out)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


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
        split: str | None = None, chunk: int | None = None,
        step: int | None = None, panel_lambdas: int = 5,
        baselines: str | None = None, segmenter: str | None = None,
        progress: bool = True) -> dict:
  """Evaluates a trained workdir over a λ grid and writes the report.

  Args:
    workdir: a training run's folder (read only).
    pretrained: instead of ``workdir``, the name of a model shipped with the
      package (`hyperrecon_jax.pretrained`); ``out`` is then required.
    folder: where the pretrained models are (default: the package's).
    out: where the report goes; default ``<workdir>/eval``.
    grid: λ values per hyperparameter (default: the config's ``eval.grid``).
    split: 'train', 'validation' or 'test' (default: ``eval.split``).
    chunk: model batch of one call (default: ``eval.chunk``).
    step: checkpoint step (default: the newest intact one).
    panel_lambdas: λ values shown in ``slices.png``.
    baselines: the workdir of per-λ Unets (``experiments/baselines.py``) to
      score on the same slices and noise; they are stored under
      ``'baselines'`` and drawn on ``curves.png`` and ``slices.png``.
      Without it, a pretrained model's stored Unet scores (its ``info.json``,
      same split) are drawn on ``curves.png``.
    segmenter: the folder of a segmenter (``experiments/segmenter.py``)
      trained on this data: every reconstruction is also scored by the Dice
      of its segmentation (paper §5.5.1), drawn on ``curves.png``.
    progress: report progress on stderr.

  Returns:
    The `evaluate.evaluate_grid` result, with ``checkpoint_step``, ``split``
    and ``workdir`` added, and ``baselines`` (``workdir``,
    ``checkpoint_step``, ``lambdas`` and the ``mean``, ``std``, ``q25``,
    ``q75`` and ``per_slice`` statistics of each Unet) and ``objective``
    (`train.baselines.compare_objectives`: HyperRecon and each Unet on the
    validation objective at that Unet's λ) when given; for a DHS run,
    ``dhs``: the λ it keeps at this checkpoint on `DHS_REPLAY_BATCHES`
    batches of the train split (``sampled``, ``kept``; ``dhs_lambdas.png``).
  """

  from hyperrecon_jax import data
  from hyperrecon_jax import evaluate as ev
  from hyperrecon_jax import hparams
  from hyperrecon_jax import metrics
  from hyperrecon_jax import physics
  from hyperrecon_jax import plots
  from hyperrecon_jax import train
  from hyperrecon_jax.train import baselines as baselines_lib

  check_options(grid, chunk, split, panel_lambdas)
  if (workdir is None) == (pretrained is None):
    raise errors.InputError("give either a workdir or a pretrained model name, not "
                            f"{'both' if workdir else 'neither'}")
  if pretrained is not None:
    from hyperrecon_jax import pretrained as pretrained_lib
    if out is None:
      raise errors.InputError("a pretrained model has no workdir: give --out=DIR for the report")
    if step is not None:
      raise errors.InputError("a pretrained model has one checkpoint: --step does not apply")
    config, model, variables, step = pretrained_lib.load(
        pretrained, folder=folder or pretrained_lib.FOLDER)
    where = f"the pretrained model {pretrained!r}"
    stored_test = pretrained_lib.info(pretrained, folder or pretrained_lib.FOLDER).get("test", {})
  else:
    config, model, variables, step = train.load_trained(workdir, step)
    where = workdir
  if baselines:  # checked before any work
    b_model, b_variables, b_step = _load_baselines(baselines, config)
  seg = None
  if segmenter:
    from hyperrecon_jax import segmentation
    seg = segmentation.load(segmenter)
    segmentation.check_data(seg, config.data, where)
  grid = int(grid or config.eval.grid)
  split = split or config.eval.split
  chunk = int(chunk or config.eval.chunk)
  out = os.path.abspath(out or os.path.join(workdir, "eval"))
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  num_lambdas = train.num_lambdas(config)
  if config.model.hyper_dim:
    lam_grid = hparams.grid(grid, num_lambdas)
  else:  # a plain Unet has one λ: the one it was trained at
    lam_grid = np.asarray([config.hparams.fixed], np.float32)
  apply_fn = model.apply
  batch_size = int(config.train.batch_size)
  num_slices = data.num_examples(config.data, split)
  key = streams.key(config, "evaluation")
  bar = _Progress(num_slices * len(lam_grid), progress)
  try:
    result = ev.evaluate_grid(
        apply_fn, variables, operator,
        data.batches(config.data, split, batch_size=batch_size, training=False),
        lam_grid, key=key, chunk=chunk, progress=bar, segmenter=seg)
  finally:
    bar.close()
  result.update(checkpoint_step=step, split=split,
                input_name=physics.input_name(config.task.name))
  if pretrained is not None:
    result["pretrained"] = pretrained
  else:
    result["workdir"] = os.path.abspath(workdir)
  if seg is not None:
    result["segmenter"] = os.path.abspath(segmenter)
  if pretrained is not None and not baselines and stored_test.get("baselines") and (
      stored_test.get("split") == split):
    # The Unets trained beside the shipped model were scored when it was
    # exported, on this split with the same noise; their weights are not
    # shipped, so their means (and spreads) are drawn but not re-measured.
    result["baselines"] = {"stored": f"info.json of {pretrained}",
                           **stored_test["baselines"]}
  if baselines:
    b_apply, b_grid = baselines_lib.grid_model(b_model, b_variables)
    b_lams = np.asarray(b_model.lambdas, np.float32)
    b_result = ev.evaluate_grid(
        b_apply, b_grid, operator,
        data.batches(config.data, split, batch_size=batch_size, training=False),
        b_lams, key=key, chunk=chunk, segmenter=seg)  # the same key: the same noise
    result["baselines"] = {"workdir": os.path.abspath(baselines),
                           "checkpoint_step": b_step,
                           **{k: b_result[k] for k in (
                               "lambdas", "mean", "std", "q25", "q75",
                               "per_slice", "unscored")}}
    if config.model.hyper_dim:
      result["objective"] = baselines_lib.compare_objectives(
          config, model, variables, b_model, b_variables)

  dhs = None
  if config.model.hyper_dim and config.sampling.method == "dhs":
    dhs = _dhs_replay(config, model, variables, operator, key)
    result["dhs"] = dhs

  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".eval-", dir=os.path.dirname(out))
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private
  try:
    with open(os.path.join(tmp, "lambda_grid.json"), "w") as f:
      f.write(ev.to_json(result))
    if num_lambdas == 1 and len(lam_grid) > 1:
      plots.metric_curves(result, os.path.join(tmp, "curves.png"),
                          ("psnr", "ssim", "hfen") + (("dice",) if seg else ()))
    elif num_lambdas == 2:
      plots.landscape(result, os.path.join(tmp, "landscape.png"))

    # Figures of the split's middle slice, measured exactly as it was scored
    # (a slice's noise comes from its own volume and slice ids).
    image, volume, slice_ = _middle_slice(config, split, result["num_slices"] // 2,
                                          batch_size)
    zf = ev.measure_slices(operator, image[None], ev.slice_keys(key, [volume], [slice_]))[0]
    recons = np.asarray(ev.reconstruct_grid(apply_fn, variables, zf,
                                            hparams.coefficients(lam_grid), chunk=chunk))
    zf_mag = np.asarray(ev.magnitude(zf))
    picks = np.unique(np.linspace(0, len(lam_grid) - 1, panel_lambdas).round().astype(int))
    baseline_row = None
    if baselines and num_lambdas == 1:
      # HyperRecon at the grid λ nearest each baseline's, above that Unet.
      picks = np.abs(lam_grid[:, 0][None] - b_lams[:, :1]).argmin(1)
      baseline_row = np.asarray(ev.reconstruct_grid(
          b_apply, b_grid, zf, hparams.coefficients(b_lams), chunk=chunk))
    plots.slice_panel(image, zf_mag, recons[picks], lam_grid[picks],
                      os.path.join(tmp, "slices.png"), errors=True,
                      baseline=baseline_row, input_name=result["input_name"])
    psnrs = np.asarray(metrics.psnr(recons, np.broadcast_to(image, recons.shape)))
    i, j, _ = ev.diverse_pair(recons, psnrs)
    plots.slice_panel(image, zf_mag, recons[[i, j]], lam_grid[[i, j]],
                      os.path.join(tmp, "diverse.png"), errors=True,
                      input_name=result["input_name"])
    if dhs is not None:
      plots.lambda_histogram(dhs["kept"], os.path.join(tmp, "dhs_lambdas.png"),
                             bins=10 if num_lambdas == 1 else 5)
    if len(lam_grid) > 1:
      plots.range_map(recons, os.path.join(tmp, "range.png"))
    _publish(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return result


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
