r"""Evaluates a trained model over a grid or a design of λ and writes its report.

  python experiments/evaluate.py --workdir=workdirs/demo [--grid=100] [--split=test]
  python experiments/evaluate.py --workdir=workdirs/demo_k4 --samples=1000 \
      [--baselines=workdirs/demo_k4_baselines]
  python experiments/evaluate.py --pretrained=mni152_csmri8x_dc_tv --out=DIR
  python experiments/evaluate.py --workdir=workdirs/demo --data=FOLDER --out=DIR

The report is what the model's config says (its ``eval`` section and the
evaluators of ``evals``, `hyperrecon_jax.evaluators`); ``--config.eval.*`` and
``--config.evals.*`` change it for this report, and ``--grid``, ``--samples``,
``--split`` and ``--baselines`` are short for ``--config.eval.grid``,
``--config.eval.samples``, ``--config.eval.split`` and
``--config.evals.baselines.workdir``. ``eval.samples=N`` evaluates N
points of a design on the simplex of loss coefficients (its vertices
included), for any number of loss terms, scores every loss term at every λ
and prints the Pareto set and its hypervolume (against the per-λ Unets' with
``evals.baselines.workdir``).

``--data=FOLDER`` scores every volume of another folder of NIfTI volumes or
fastMRI ``.h5`` files (a second site, new subjects) instead of the model's own
test split, sliced and scaled as the model's training data were; a volume the
run learned from (the same file content) is refused.

Reads the workdir only (a run that is still training can be evaluated) and
writes the report (``lambda_grid.json`` and the figures) into
``<workdir>/eval`` or ``--out``, replacing the previous report only once every
file is complete.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli
import cli_report

_WORKDIR, _PRETRAINED, _STEP = cli.define_model_flags()
_OUT = cli.define_path("out", None, "Folder of the report (default: "
                       "<workdir>/eval).")
_DATA = cli.define_path("data", None, "Score every volume of this folder of NIfTI "
                        "volumes or fastMRI .h5 files instead of the model's test "
                        "split.")
_SETTINGS = cli_report.define_report_settings()
_SHORTHANDS = cli_report.define_report_shorthands()


def main(argv):
  cli.quiet_libraries()
  from hyperrecon_jax import report
  with cli.user_errors():
    overrides = cli_report.report_overrides(_SETTINGS, _SHORTHANDS)
    # Before the model loads.
    report.check_settings(cli_report.report_settings(_SETTINGS, overrides))
    result = report.run(_WORKDIR.value, pretrained=_PRETRAINED.value, out=_OUT.value,
                        step=_STEP.value, overrides=overrides, data=_DATA.value)
  zf = result["zero_filled"]["mean"]
  if "data" in result:
    d = result["data"]
    n = len(d["volume_names"])
    empty = len(d.get("without_slices", ()))
    scored = (f"every volume of {d['folder']} ({n} volume{'s' * (n != 1)}"
              f"{f', {empty} of them without a slice' if empty else ''}, {d['dataset']})")
  elif result["split"] == "train":
    # Allowed (a look at the fit), but its numbers are not held out.
    scored = ("train, the split the model learned from"
              + (" and so did the segmenter" if "dice" in zf else "") + ": not a held-out score")
  else:
    scored = result["split"]
  print(f"{result['num_slices']} slices of {scored} "
        f"(checkpoint step {result['checkpoint_step']}), "
        f"{len(result['lambdas'])} λ values")
  for line in report.unscored_lines(result) + list(result.get("warnings", ())):
    print(f"warning: {line}", file=sys.stderr)
  name = result.get("input_name", "zero-filled")
  print(f"{name}: PSNR {_number(zf['psnr'], '.2f')} dB, SSIM {_number(zf['ssim'], '.4f')}")
  if "ground_truth_dice" in result:
    print(f"segmentation Dice: {name} {_number(zf['dice'], '.4f')}, ground truth "
          f"{_number(result['ground_truth_dice']['mean'], '.4f')}")
  for metric in ("psnr", "ssim", "hfen") + (("dice",) if "dice" in zf else ()):
    best = result["best"][metric]
    if best is None:
      print(f"best {metric}: none (no slice could be scored)")
      continue
    lam = ", ".join(f"{v:.3g}" for v in best["lam"])
    coeffs = result["coeffs"][best["index"]]
    # From three terms on λ is a stick-breaking code: the weights say more.
    weights = (", c = (" + ", ".join(f"{v:.3g}" for v in coeffs) + ")"
               if len(coeffs) > 2 else "")
    print(f"best {metric}: {best['value']:.4g} at λ = ({lam}){weights}")
  if "data" in result:
    print("\n".join(report.volume_lines(result, name)))
  if "baselines" in result:
    b = result["baselines"]
    stored = f" (stored in the {b['stored']})" if "stored" in b else ""
    for i, lam in enumerate(b["lambdas"]):
      dice = (f", Dice {_number(b['mean']['dice'][i], '.4f')}" if "dice" in b["mean"] else "")
      print(f"Unet at λ = ({', '.join(f'{v:.3g}' for v in lam)}){stored}: PSNR "
            f"{_number(b['mean']['psnr'][i], '.2f')} dB, SSIM "
            f"{_number(b['mean']['ssim'][i], '.4f')}{dice}")
  if "objective" in result:
    o = result["objective"]
    print(f"{o['split']} objective Σ c_k(λ) term_k / s_k (lower is better):")
    for lam, h, b in zip(o["lambdas"], o["hyperrecon"], o["baselines"]):
      print(f"  λ = ({', '.join(f'{v:.3g}' for v in lam)}): HyperRecon "
            f"{_number(h['objective'], '.4g')}, Unet at λ {_number(b['objective'], '.4g')}")
  if "pareto" in result:
    _print_tradeoffs(result)
  if "pareto_unavailable" in result:
    print(f"note: {result['pareto_unavailable']}", file=sys.stderr)
  for line in result.get("notes", ()):
    print(f"note: {line}", file=sys.stderr)
  if "gallery" in result:  # diverse.png: every report, grid or design
    g = result["gallery"]
    print(f"gallery of {report.slice_name(result, g['slice'])}: {len(g['indices'])} most "
          f"different of {g['num_candidates']} reconstructions within {g['tolerance_db']:g} dB "
          "of its best PSNR, at c = " + "; ".join(
              "(" + ", ".join(f"{v:.2f}" for v in c) + ")" for c in g["coeffs"]))
  if "gallery_split" in result:
    g = result["gallery_split"]
    print(f"gallery of the {'folder' if 'data' in result else 'split'} "
          f"({len(g['slices'])} slices compared): {len(g['indices'])} "
          f"most different of {g['num_candidates']} λ within {g['tolerance_db']:g} dB of the "
          "best mean PSNR, at c = " + "; ".join(
              "(" + ", ".join(f"{v:.2f}" for v in c) + ")" for c in g["coeffs"]))
  print(f"written: {_OUT.value or os.path.join(_WORKDIR.value, 'eval')}")


def _number(value, spec: str) -> str:
  """A score as the report holds it: None (no slice could be scored) reads n/a."""
  return "n/a" if value is None else format(value, spec)


def _print_tradeoffs(result):
  p, hv = result["pareto"], result["pareto"]["hypervolume"]
  print(f"Pareto set of ({', '.join(p['terms'])}): {len(p['front'])} of "
        f"{len(result['lambdas'])} λ are non-dominated")
  if "ratio" in hv:
    print(f"hypervolume (normalized terms, reference {hv['reference'][0]:g}): HyperRecon "
          f"{hv['hyperrecon']:.4g}, Unets {hv['baselines']:.4g}, ratio "
          f"{hv['ratio']:.3f}")
    if "hypervolume_image_terms" in p:
      hi = p["hypervolume_image_terms"]
      print(f"over the terms of the image alone ({', '.join(hi['terms'])}): HyperRecon "
            f"{hi['hyperrecon']:.4g}, Unets {hi['baselines']:.4g}, ratio {hi['ratio']:.3f}")
  else:
    # Normalized on HyperRecon's own range, so 1 means nothing: compare runs
    # only through a common range (--baselines, summarize.py).
    most = hv["reference"][0] ** len(p["terms"])
    print(f"hypervolume (normalized terms, reference {hv['reference'][0]:g}): "
          f"{hv['hyperrecon']:.4g} of at most {most:.4g} on HyperRecon's own range (at most "
          "when one λ is best on every term); with --baselines it is compared with the Unets'")


if __name__ == "__main__":
  cli.run(main)
