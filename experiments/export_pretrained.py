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
  print(pretrained.scores_line(written["test"], physics.input_name(task)))
  print(f"wrote {os.path.join(folder, _NAME.value)} ({written['bytes']:,} bytes of weights)")


if __name__ == "__main__":
  cli.run(main)
