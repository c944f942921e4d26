"""The evaluator that writes the report: the JSON result and the figures, as one set.

`run` draws every figure of the result into a temporary folder
that replaces the old report only when every file is complete: an
interrupted evaluation leaves the previous report as it was, never new
numbers beside old figures.

- ``lambda_grid.json``: the result (a grid or a design of λ alike);
- ``curves.png`` (one hyperparameter), ``landscape.png`` (a two-λ grid),
  ``ternary.png`` (three terms: the landscape on the simplex), ``pareto.png``
  (a design over three or more terms: the Pareto set in pairwise projections);
- ``dhs_lambdas.png`` for a run trained with DHS (one or two λ): the λ it
  keeps (Fig. 6);
- ``slices.png`` (ground truth, input, reconstructions at several λ),
  ``diverse.png`` (the gallery of the most different good reconstructions)
  and ``range.png`` (where λ changes the image), all of the split's middle
  slice with the noise it was scored with.
"""

import errno
import os
import shutil

import numpy as np

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import errors

# λ per reconstruction call of the range map over a design: bounds the
# reconstructions held at once (256 × 256² float32 is 64 MiB).
RANGE_BLOCK = 256

# Every file a report may hold: an existing folder of these alone is an
# earlier report, which a new one may replace.
REPORT_FILES = frozenset({
    "lambda_grid.json", "curves.png", "landscape.png", "ternary.png", "pareto.png",
    "dhs_lambdas.png", "slices.png", "diverse.png", "range.png"})


def report_folder(out: str) -> str:
  """The folder a report given as ``out`` replaces: absolute, links resolved.

  A report replaces its folder whole (`run`): a link given as the folder
  (``results -> /big/disk/…``) means the folder it names, which is replaced
  while the link stays.
  """
  return os.path.realpath(out)


def check_out(out: str) -> None:
  """Refuses a report folder whose replacement would lose anything but an earlier report.

  The report replaces ``out`` whole (`run`), so ``out`` must be new, empty,
  or an earlier report (`REPORT_FILES` only), and a folder must be creatable
  there. Nor may it be the current folder or one above it, which a
  replacement would leave the user's shell outside of.

  Args:
    out: the report's folder (`report_folder`).

  Raises:
    InputError: ``out`` is a file, holds anything else (a training run, a
      project, a user's files), holds the current folder, or its folder
      cannot be written.
  """
  from hyperrecon_jax import outputs
  try:
    here = os.path.realpath(os.getcwd())
  except OSError:  # the current folder was removed
    here = None
  if here is not None and (here == out or here.startswith(os.path.join(out, ""))):
    what = "the current folder" if here == out else f"a folder above the current one, {here}"
    raise errors.InputError(f"the report folder {out} is {what}: a report replaces its folder "
                            "whole, so give a folder beside or below it")
  if os.path.lexists(out) and not os.path.isdir(out):
    raise errors.InputError(f"the report folder {out} is a file; give a folder")
  if os.path.isdir(out):
    try:
      others = sorted(set(os.listdir(out)) - REPORT_FILES)
    except OSError as err:
      raise errors.InputError(f"the report folder {out} cannot be read "
                              f"({err.strerror or err})") from None
    if others:
      shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
      raise errors.InputError(
          f"the report folder {out} holds {shown}, which no report writes: a report "
          "replaces its folder whole, so give a new folder or an earlier report's")
  parent = os.path.dirname(os.path.abspath(out))
  while not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise errors.InputError(f"cannot create the report folder {out}: {parent} is a file")
  outputs.check_writable(out, parent)


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


def stranded_report(out: str) -> str | None:
  """Where the report of ``out`` is while ``out`` is missing after a killed writer, or None.

  A writer killed (``kill -9``) between `_publish`'s two renames left no
  ``out`` and the earlier report under ``<staging>.old``; the next report
  into ``out`` puts it back (`_recover`), and a reader can name it meanwhile.
  """
  if os.path.lexists(out):
    return None
  prefix = f".{os.path.basename(out)}.eval-"
  for path in atomic_writes.sweep_staging(os.path.dirname(out), prefix, dry_run=True):
    if path.endswith(".old"):
      return path
  return None


def _recover(out: str, prefix: str) -> None:
  """Cleans up after a report writer that was killed (``kill -9``) before its ``finally``.

  The earlier report stranded by a kill between the two renames
  (`stranded_report`) goes back to ``out``. Every other staging folder of a
  process that has ended goes (`sweep_staging`).
  """
  stranded = stranded_report(out)
  if stranded is not None:
    os.replace(stranded, out)
  atomic_writes.sweep_staging(os.path.dirname(out), prefix)


def _publish(tmp: str, out: str) -> None:
  """Replaces ``out`` by the finished folder ``tmp`` (two renames).

  An exception between the renames (Ctrl-C, SIGTERM, a failed second rename)
  puts the earlier report back in ``out`` before it propagates: the earlier
  report stays until the new one is in place. Only ``kill -9`` there strands
  it (`stranded_report`).
  """
  old = f"{tmp}.old" if os.path.exists(out) else None
  try:
    if old is not None:
      os.replace(out, old)
    os.replace(tmp, out)
  except BaseException as e:
    # Either rename is atomic: whichever completed is what the folders show.
    if old is not None and os.path.lexists(old) and not os.path.lexists(out):
      os.replace(old, out)
    elif isinstance(e, OSError) and e.errno in (errno.ENOTEMPTY, errno.EEXIST):
      # Another report writer published into ``out`` between the two renames.
      if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # the report both replaced
      raise errors.InputError(
          f"{out}: another report was written there while this one was finishing (a second "
          "experiments/evaluate.py with this --out?): that one is kept, this one is "
          "discarded") from None
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _range_streaming(reconstruct, num: int):
  """max − min over λ of one slice, reconstructed `RANGE_BLOCK` λ at a time."""
  lo = hi = None
  for start in range(0, num, RANGE_BLOCK):
    r = np.asarray(reconstruct(np.arange(start, min(num, start + RANGE_BLOCK))))
    # fmin and fmax pass NaN over: a λ whose output is not finite there
    # leaves the range of the others (NaN only where no λ is finite).
    lo = np.fmin.reduce(r, 0) if lo is None else np.fmin(lo, np.fmin.reduce(r, 0))
    hi = np.fmax.reduce(r, 0) if hi is None else np.fmax(hi, np.fmax.reduce(r, 0))
  return hi - lo


def _caption(result, index) -> str:
  from hyperrecon_jax import hparams
  lam = np.asarray(result["lambdas"][index], np.float32)
  coeffs = np.asarray(hparams.coefficients(lam[None]))[0]
  return "c = (" + ", ".join(f"{v:.2f}" for v in coeffs) + ")"


class _Shown:
  """The split's middle slice, measured exactly as it was scored, and its λ set.

  A slice's noise comes from its own volume and slice ids, so this is the
  measurement the slice's scores in the result were computed from.
  """

  def __init__(self, result, config, model_at, operator, split, lam_grid, chunk):
    from hyperrecon_jax import evaluate as ev
    from hyperrecon_jax import hparams
    from hyperrecon_jax import physics
    from hyperrecon_jax import streams
    self.row = result["num_slices"] // 2
    self.image, volume, slice_ = _middle_slice(config, split, self.row,
                                               int(config.train.batch_size))
    key = streams.key(config, "evaluation")
    self.zf = ev.measure_slices(operator, self.image[None],
                                ev.slice_keys(key, [volume], [slice_]))[0]
    self.zf_mag = np.asarray(physics.magnitude(self.zf))
    self.coeffs = np.asarray(hparams.coefficients(lam_grid))
    self.lam_grid, self.chunk, self.model_at = lam_grid, chunk, model_at
    self.recons = None  # every λ's reconstruction, for a grid

  def reconstruct(self, index):
    """(len(index), H, W) reconstructions at the evaluated λ of ``index``."""
    from hyperrecon_jax import grid
    if self.recons is not None:
      return self.recons[index]
    return np.asarray(grid.reconstruct_grid(self.model_at.model, self.model_at.variables,
                                            self.zf, self.coeffs[index], chunk=self.chunk))


def _psnrs_and_range(result, shown, design):
  """The shown slice's PSNR at every λ and its range map over λ (None for one λ).

  A grid holds every λ's reconstruction of the slice at once; a design (up
  to many thousands of λ) is streamed for the range and its PSNRs are read
  from the result.
  """
  from hyperrecon_jax import metrics
  count = len(shown.lam_grid)
  if design == "samples":
    psnrs = np.array(result["per_slice"]["psnr"][shown.row], np.float64)
    return psnrs, _range_streaming(shown.reconstruct, count) if count > 1 else None
  shown.recons = shown.reconstruct(np.arange(count))
  target = np.broadcast_to(shown.image, shown.recons.shape)
  psnrs = np.asarray(metrics.psnr(shown.recons, target), np.float64)
  spread = (np.fmax.reduce(shown.recons, 0) - np.fmin.reduce(shown.recons, 0)
            if count > 1 else None)  # as `_range_streaming`
  return psnrs, spread


def _gallery(result, config, shown, psnrs):
  """Adds ``result['gallery']`` for the shown slice; returns its reconstructions.

  None, with a note, when no λ gives the slice a finite PSNR: there is no
  best to be within a tolerance of.
  """
  from hyperrecon_jax import metrics
  from hyperrecon_jax import tradeoffs
  if not np.isfinite(psnrs).any():
    from hyperrecon_jax import report
    note(result, f"no gallery (diverse.png) of {report.slice_name(result, shown.row)}: its "
                 "PSNR is not finite at any λ")
    return None
  tolerance = float(config.eval.gallery_tolerance_db)
  candidates = tradeoffs.gallery_candidates(psnrs, tolerance, result["lambdas"])
  recons = shown.reconstruct(candidates)
  target = np.broadcast_to(shown.image, recons.shape)
  scores = {m: np.full(len(result["lambdas"]), np.nan) for m in ("psnr", "ssim")}
  scores["psnr"][candidates] = np.asarray(metrics.psnr(recons, target))
  scores["ssim"][candidates] = np.asarray(metrics.ssim(recons, target))
  section = tradeoffs.gallery_section(recons, psnrs, candidates, result["lambdas"],
                                      int(config.eval.gallery_size), tolerance, scores)
  section["slice"] = int(shown.row)
  result["gallery"] = section
  return recons[section["positions"]]


def check(config, settings) -> None:
  """Refuses a ``config.evals.figures.panel_lambdas`` that is not an integer ≥ 1."""
  del config
  n = settings.get("panel_lambdas")
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise errors.InputError(f"config.evals.figures.panel_lambdas must be an integer ≥ 1, "
                            f"got {n!r}")


def check_files(context, settings) -> None:
  """matplotlib draws: a missing or broken viz extra is said before any evaluation."""
  del context, settings
  from hyperrecon_jax import plots
  plots.require_matplotlib()


def run(context, settings) -> None:
  """Computes the shown slice's gallery and writes the report into ``context.out`` as one set.

  The result gains ``gallery``; ``settings.panel_lambdas`` λ are shown in
  ``slices.png`` (a grid).
  """
  from hyperrecon_jax import plots
  from hyperrecon_jax import results
  result, config, out, lam_grid = context.result, context.config, context.out, context.lam_grid
  seg, dhs = context.segmenter, result.get("dhs")
  baselines = (None,) * 3
  if context.stack is not None:
    baselines = (*context.stack[:2], np.asarray(context.stack[0].lambdas, np.float32))
  panel_lambdas = int(settings["panel_lambdas"])
  design = result.get("design", {}).get("kind")
  shown = _Shown(result, config, context, context.operator, context.split, lam_grid,
                 context.chunk)
  psnrs, spread = _psnrs_and_range(result, shown, design)
  gallery = _gallery(result, config, shown, psnrs)
  drawn = _overview_plan(result, tuple(config.losses), len(shown.coeffs), design)

  os.makedirs(os.path.dirname(out), exist_ok=True)
  prefix = f".{os.path.basename(out)}.eval-"
  _recover(out, prefix)
  tmp = atomic_writes.staging_folder(os.path.dirname(out), prefix)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private
  try:
    # A full disk's error from a figure's write names no file: the report's does.
    with atomic_writes.naming_file(out):
      with open(os.path.join(tmp, "lambda_grid.json"), "w") as f:
        f.write(results.to_json(result))
      _overview_figures(tmp, result, config, shown.coeffs, drawn, seg)
      _slice_figures(tmp, result, shown, design, panel_lambdas, baselines, gallery)
      num_lambdas = lam_grid.shape[1]
      if dhs is not None and num_lambdas <= 2:
        plots.lambda_histogram(dhs["kept"], os.path.join(tmp, "dhs_lambdas.png"),
                               bins=10 if num_lambdas == 1 else 5)
      if spread is not None:
        plots.spread_map(spread, os.path.join(tmp, "range.png"))
    _publish(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def note(result, text: str) -> None:
  """Adds a line to ``result['notes']``: a part of the report left out, and why."""
  result.setdefault("notes", []).append(text)


def _overview_plan(result, names, count: int, design) -> list[str]:
  """The overview figures of the scores to draw, with a note for those left out.

  The curves, landscape and ternary are left out when no λ has a mean PSNR
  (`results` leaves out of every λ a slice not finite at one). Decided before
  the report's JSON is written, which holds the notes.
  """
  drawn = []
  if len(names) == 2 and count > 1:
    drawn.append("curves.png")
  elif len(names) == 3 and design == "grid":
    drawn.append("landscape.png")
  if len(names) == 3 and count >= 3:
    drawn.append("ternary.png")
  if drawn and result["best"].get("psnr") is None:
    note(result, f"no {' or '.join(drawn)}: no λ has a mean PSNR (every slice's PSNR is not "
                 "finite at some λ; see 'unscored')")
    return []
  return drawn


def _overview_figures(tmp, result, config, coeffs, drawn, seg):
  """Scores over the whole λ set: the ``drawn`` of `_overview_plan`, the Pareto projections."""
  from hyperrecon_jax import plots
  from hyperrecon_jax import plots_simplex
  from hyperrecon_jax import results
  names = tuple(config.losses)
  if "curves.png" in drawn:
    plots.metric_curves(result, os.path.join(tmp, "curves.png"),
                        ("psnr", "ssim", "hfen") + (("dice",) if seg else ()))
  if "landscape.png" in drawn:
    plots.landscape(result, os.path.join(tmp, "landscape.png"))
  if "ternary.png" in drawn:
    best = {f"best {m}": coeffs[result["best"][m]["index"]]
            for m in ("psnr", "ssim") if result["best"].get(m)}
    plots_simplex.ternary(coeffs, np.asarray(results.metric_array(result, "psnr")),
                          os.path.join(tmp, "ternary.png"), names=names, label="PSNR (dB)",
                          marks=best)
  if "pareto" in result and len(names) >= 3:
    _pareto_figure(result, names, os.path.join(tmp, "pareto.png"))


def _slice_figures(tmp, result, shown, design, panel_lambdas, baselines, gallery):
  """The shown slice: reconstructions at several λ (with the Unets'), the gallery."""
  from hyperrecon_jax import grid
  from hyperrecon_jax import hparams
  from hyperrecon_jax import plots
  from hyperrecon_jax import plots_simplex
  b_model, b_variables, b_lams = baselines
  lam_grid = shown.lam_grid
  num_lambdas = lam_grid.shape[1]
  picks = panel_picks(len(lam_grid), num_lambdas, design, panel_lambdas)
  recons, lams, baseline_row = None, lam_grid[picks], None
  if b_model is not None and num_lambdas == 1:
    # HyperRecon at each Unet's own λ, above that Unet (paper Fig. 5a): one
    # loss weighting per column, whether or not the λ set holds it.
    coeffs = hparams.coefficients(b_lams)
    recons, lams = np.asarray(grid.reconstruct_grid(
        shown.model_at.model, shown.model_at.variables, shown.zf, coeffs,
        chunk=shown.chunk)), b_lams
    baseline_row = np.asarray(grid.reconstruct_grid(
        b_model, b_variables, shown.zf, coeffs, chunk=shown.chunk))
  plots.slice_panel(shown.image, shown.zf_mag,
                    shown.reconstruct(picks) if recons is None else recons, lams,
                    os.path.join(tmp, "slices.png"), errors=True, baseline=baseline_row,
                    input_name=result["input_name"])
  if gallery is None:
    return
  g = result["gallery"]
  captions = [f"{_caption(result, i)}\nPSNR {p:.2f} dB, SSIM {s:.3f}" for i, p, s in zip(
      g["indices"], g["scores"]["psnr"], g["scores"]["ssim"])]
  plots_simplex.gallery(shown.image, shown.zf_mag, gallery, captions,
                        os.path.join(tmp, "diverse.png"),
                        title=(f"{len(gallery)} most different reconstructions within "
                               f"{g['tolerance_db']:g} dB of the best PSNR "
                               f"({g['num_candidates']} candidates)"),
                        input_name=result["input_name"])


def panel_picks(count: int, num_lambdas: int, design, panel_lambdas: int) -> np.ndarray:
  """The indices of the λ ``slices.png`` shows, of ``count`` evaluated (without Unets).

  One hyperparameter: ``panel_lambdas`` λ evenly spaced over the grid. Two (a
  G × G grid, λ₁ the outer axis): its diagonal (0, 0) … (1, 1), ``panel_lambdas``
  points of it; evenly spaced over the flattened grid they fell off it, e.g.
  (0.2, 0.8) and (0.8, 0.2) for G = 11. A design: its vertices, each term alone.
  """
  if design == "samples" and num_lambdas > 1:
    return np.arange(num_lambdas + 1)
  side = int(round(np.sqrt(count)))
  if num_lambdas == 2 and side * side == count:  # a G × G grid, not a list of λ
    steps = np.unique(np.linspace(0, side - 1, panel_lambdas).round().astype(int))
    return steps * (side + 1)
  return np.unique(np.linspace(0, count - 1, panel_lambdas).round().astype(int))


def _pareto_figure(result, names, path):
  from hyperrecon_jax import plots_simplex
  from hyperrecon_jax import tradeoffs
  p = result["pareto"]
  points = tradeoffs.term_points(result["loss_terms"], names)
  front = np.zeros(len(points), bool)
  front[p["front"]] = True
  b_points = b_front = None
  if "baseline_points" in p:
    b_points = np.asarray(p["baseline_points"], np.float64)
    b_front = np.zeros(len(b_points), bool)
    b_front[p["baseline_front"]] = True
  plots_simplex.pareto_projections(points, front, path, names=names, baseline_points=b_points,
                           baseline_front=b_front)
