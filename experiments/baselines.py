r"""Trains the per-λ baseline Unets together in one program; measures the loss scales.

  python experiments/baselines.py --config=experiments/configs/demo.py \
      --workdir=workdirs/demo_baselines [--lambdas=0,0.25,0.5,0.75,1]

One plain Unet per λ (the paper's §5.3 baselines), all updated by one jitted
step on the same batches (`hyperrecon_jax.train.baselines`). ``--lambdas``
lists the λ values (one hyperparameter), λ vectors joined by ``:`` (e.g.
``0:0,0:1,1:0``), ``grid:N`` for N values per hyperparameter (one or two), or
``rays:P`` for the structured rays of a Das–Dennis design with P partitions
(any number of terms: the vertices and, for P = 2, the edge midpoints; 10
Unets for four terms). The default,
the one-hot λ, trains the single-term Unets that define the loss scales s_k
(the paper's α_k = 1/s_k) and prints the override that uses them:

  python experiments/train.py --config=... --config.loss_scales="(0.0512, 0.297)"

``--scales=gradient`` trains nothing: it measures loss scales that give every
term the same gradient norm at the run's initialization (the alternative the
paper names in §7; `hyperrecon_jax.train.gradient_scales`), writes
``<workdir>/gradient_scales.json`` and prints the override.

Writes ``<workdir>/baselines.json``. Overlay the baselines on a HyperRecon
evaluation with ``experiments/evaluate.py --workdir=HYPER --baselines=DIR``.
Rerunning the same command resumes an unfinished stack and re-measures a
finished one without training it again.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli
import cli_config
import cli_unread

_CONFIG = cli_config.define_config_file("Experiment config file (path[:arg]).")
_WORKDIR = cli.define_path("workdir", None, "Folder of the baselines.")
_LAMBDAS = flags.DEFINE_string(
    "lambdas", None, "λ of the baselines: 0,0.5,1 | 0:0,1:1 | grid:N (one λ per loss "
    "weighting) | rays:P | samples:N (default: the one-hot λ, i.e. the loss scales).")
_SCALES = flags.DEFINE_enum(
    "scales", "value", ["value", "gradient"],
    "Without --lambdas: 'value' trains the one-hot Unets (the paper's s_k); "
    "'gradient' matches the terms' gradient norms at initialization.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_lambdas(text: str, num_lambdas: int):
  """``--lambdas`` as a list of λ tuples (`hparams.parse_lambdas`, or ``rays:P``)."""
  import math
  import re

  from hyperrecon_jax import errors
  from hyperrecon_jax import hparams
  from hyperrecon_jax.train import baselines
  form, _, number = text.strip().partition(":")
  if form == "grid" and num_lambdas > 2:
    raise errors.InputError(
        f"--lambdas={text}: grids stop at two hyperparameters and this config has "
        f"{num_lambdas} hyperparameters ({num_lambdas + 1} loss terms); give "
        "--lambdas=samples:N or rays:P for points on the simplex, or vectors of "
        f"{num_lambdas} values, e.g. --lambdas=" + ":".join(["0.5"] * num_lambdas))
  if form in ("grid", "samples") and re.fullmatch(r"[0-9]+", number.strip()):
    # Counted before it is built: a design of 10⁹ points would not fit in memory.
    baselines.check_count(int(number) ** (num_lambdas if form == "grid" else 1),
                          f"--lambdas={text}")
  if form == "rays":
    partitions = hparams.flags.parse_count(number, f"--lambdas={text}: rays:P")
    if partitions < 1:
      raise errors.InputError(f"--lambdas={text}: P must be ≥ 1")
    # Das–Dennis: the points of K coefficients in steps of 1/P.
    baselines.check_count(math.comb(partitions + num_lambdas, num_lambdas),
                          f"--lambdas={text}")
    lam = hparams.lambdas_from_coefficients(hparams.das_dennis(partitions, num_lambdas + 1))
    # Ratios such as 1/3 read back as typed in the stored config.
    return [tuple(round(float(v), 6) for v in row) for row in lam]
  lam = hparams.parse_lambdas(text, num_lambdas, flag="--lambdas")
  hparams.check_lambda(lam, name=f"--lambdas={text}: λ")
  if form == "grid":
    # Where λ_k = 1 the later λ do not count: one Unet per loss weighting.
    kept = hparams.distinct(lam)
    if len(kept) < len(lam):
      print(f"--lambdas={text}: {len(lam)} λ, {len(kept)} distinct loss weightings "
            f"(where λ_k = 1 the later λ do not count): training {len(kept)} Unets",
            file=sys.stderr)
      lam = lam[kept]
  else:
    # The user's own list: a λ given twice, or two λ of one weighting, is a
    # mistake in it, named as typed.
    first = {}
    for row in lam:
      key, shown = hparams.weighting(row), ":".join(f"{float(v):g}" for v in row)
      if key in first:
        same = "is given twice" if first[key] == shown else f"weights the loss as {first[key]}"
        raise errors.InputError(
            f"--lambdas={text}: λ = {shown} {same} (where λ_k = 1 the later λ do not "
            "count), so one Unet would answer for both; give each loss weighting once")
      first[key] = shown
  return [tuple(float(v) for v in row) for row in lam]


def main(argv):
  cli.quiet_libraries()
  from hyperrecon_jax import train
  from hyperrecon_jax.train import baselines
  with cli.user_errors():
    config = cli_config.checked_config(_CONFIG)
    cli_unread.refuse_section(_CONFIG, "segmenter", "baselines.py",
                             "the segmenter is trained by experiments/segmenter.py")
    cli_unread.refuse_task(_CONFIG, config, "baselines.py")
    if config.hparams.baselines:
      from hyperrecon_jax import errors
      # The stack's λ come from --lambdas (or the one-hot default), which
      # replace the field: an override here would have no effect. A flat
      # (0.5, 1.0) is the same mistake, so it is named as given, not unpacked.
      given = tuple(config.hparams.baselines)
      shown = tuple(tuple(lam) if isinstance(lam, (tuple, list)) else lam for lam in given)
      raise errors.InputError(
          f"--config.hparams.baselines={shown}: baselines.py trains the λ of --lambdas "
          "(default: the one-hot λ); give them there, e.g. --lambdas="
          + ",".join(":".join(f"{v:g}" for v in lam) if isinstance(lam, tuple) else f"{lam:g}"
                     for lam in shown))
  if _SCALES.value == "gradient":
    with cli.user_errors():
      if _LAMBDAS.value is not None:
        from hyperrecon_jax import errors
        raise errors.InputError("--scales=gradient trains no Unets: drop --lambdas")
    return gradient(config, _WORKDIR.value)
  with cli.user_errors():
    lambdas = (None if _LAMBDAS.value is None else
               parse_lambdas(_LAMBDAS.value, train.num_lambdas(config)))
    if lambdas is None:
      result = baselines.compute_loss_scales(config, _WORKDIR.value)
    else:
      result = baselines.train_baselines(config, _WORKDIR.value, lambdas)
  for lam, terms in zip(result["lambdas"], result["terms"]):
    values = ", ".join(f"{k} {v:.4g}" for k, v in terms.items())
    print(f"λ = ({', '.join(f'{v:g}' for v in lam)}): validation {values}")
  print(f"wrote {os.path.join(_WORKDIR.value, baselines.RESULT_FILE)} "
        f"(checkpoint step {result['step']})")
  if result["loss_scales"] is not None:
    print("loss scales s_k (the one-hot Unets' validation terms); to train "
          "with them:")
    print(baselines.override_flag(result["loss_scales"]))


def gradient(config, workdir: str) -> None:
  """``--scales=gradient``: measures, writes and prints the gradient-matched scales."""
  from hyperrecon_jax.train import baselines
  from hyperrecon_jax.train import gradient_scales
  with cli.user_errors():
    gradient_scales.check_folder(workdir)
    result = gradient_scales.gradient_scales(config)
    path = gradient_scales.write(result, workdir)
  norms = ", ".join(f"{n} {g:.4g}" for n, g in zip(result["losses"], result["gradient_norms"]))
  print(f"gradient norms at initialization ({result['num_batches']} validation "
        f"batches, λ = {result['lambda']}): {norms}")
  print(f"wrote {path}")
  print("loss scales s_k with equal gradient norms; to train with them:")
  print(baselines.override_flag(result["loss_scales"]))


if __name__ == "__main__":
  cli.run(main)
