r"""Ships a trained workdir as a pretrained model of the package.

  python experiments/export_pretrained.py --workdir=workdirs/demo \
      --name=mni152_csmri8x_dc_tv --baselines=workdirs/demo_baselines \
      --description="..."

Writes ``hyperrecon_jax/pretrained/<name>/`` (config, float16 weights, and
``info.json`` with their SHA-256), evaluates the *exported* model on the
test split (with the Unets of ``--baselines`` beside it) and records the
mean metrics per λ in ``info.json``. The folder appears only when all of this
is done: a failed or interrupted export leaves nothing. Refuses a name that is
already shipped or an existing folder, and a run that has not reached its
``config.train.num_steps`` (unless ``--unfinished``).
"""

import json
import os
import sys
import tempfile

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli

_WORKDIR = cli.define_path("workdir", None, "A finished training run.")
_NAME = flags.DEFINE_string("name", None, "The model's name (a folder name).")
_DESCRIPTION = flags.DEFINE_string("description", None, "Data, task, loss, training.")
_BASELINES = cli.define_path("baselines", None, "Per-λ Unets to score beside it.")
_FOLDER = cli.define_path("folder", None, "Where to write (default: the package's "
                          "hyperrecon_jax/pretrained).")
_UNFINISHED = flags.DEFINE_bool("unfinished", False, "Ship a run whose newest checkpoint is "
                                "short of its config.train.num_steps.")
flags.mark_flags_as_required(["workdir", "name", "description"])


def main(argv):
  cli.quiet_libraries()
  from hyperrecon_jax import pretrained
  from hyperrecon_jax import report
  from hyperrecon_jax import train
  from hyperrecon_jax.data import split_record
  from hyperrecon_jax.evaluators import baselines
  folder = _FOLDER.value or pretrained.FOLDER

  def test_scores(staging):
    with tempfile.TemporaryDirectory() as tmp:
      result = report.run(pretrained=_NAME.value, folder=staging,
                          out=os.path.join(tmp, "eval"),
                          overrides={"evals.baselines.workdir": _BASELINES.value or ""})
    pretrained.check_finite_reconstructions(result["per_slice"]["psnr"], result["lambdas"],
                                            _WORKDIR.value, f"the {result['split']} slices")
    for line in result.get("warnings", ()):  # also kept in info.json's test
      print(f"warning: {line}", file=sys.stderr)
    return {"test": pretrained.summary(result)}

  with cli.user_errors():
    pretrained.check_new_name(_NAME.value, folder)
    if _BASELINES.value:  # before the export's work, not after it
      baselines.load(_BASELINES.value, train.load_trained(_WORKDIR.value)[0],
                     learned=split_record.read(_WORKDIR.value), flag="--baselines")
    written = pretrained.export(_WORKDIR.value, _NAME.value, description=_DESCRIPTION.value,
                                folder=folder, unfinished=_UNFINISHED.value,
                                score=test_scores)
  with open(os.path.join(folder, _NAME.value, pretrained.CONFIG_FILE)) as f:
    task = json.load(f)["task"]["name"]
  from hyperrecon_jax import physics
  print(_scores_line(written["test"], physics.input_name(task)))
  print(f"wrote {os.path.join(folder, _NAME.value)} ({written['bytes']:,} bytes of weights)")


def _scores_line(test: dict, input_name: str) -> str:
  """One line of the exported model's test scores; info.json's ``test`` holds them all."""
  import numpy as np
  psnr = np.array([np.nan if v is None else v for v in test["mean"]["psnr"]], np.float64)
  best = int(np.nanargmax(psnr)) if np.isfinite(psnr).any() else None
  lam = test["lambdas"][best] if best is not None else None
  where = ("" if lam is None else
           f", best at λ = {':'.join(f'{v:.4g}' for v in np.atleast_1d(lam))}")
  number = lambda v: "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"
  lo, hi = (np.nanmin(psnr), np.nanmax(psnr)) if best is not None else (None, None)
  return (f"{test['split']} split, {test['num_slices']} slices at {len(psnr)} λ: mean PSNR "
          f"{number(lo)}–{number(hi)} dB{where}; {input_name} "
          f"{number(test['zero_filled']['psnr'])} dB (every mean in info.json's test)")


if __name__ == "__main__":
  cli.run(main)
