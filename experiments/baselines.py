r"""Trains one plain Unet per loss term and measures the loss scales s_k.

  python experiments/baselines.py --config=experiments/configs/demo.py \
      --workdir=workdirs/demo_baselines [--config.train.num_steps=2000 ...]

Baseline k (the λ whose loss coefficients are e_k) trains in
``<workdir>/term_<k>_<name>``; s_k is its mean validation value of term k (the
paper's α_k = 1/s_k). Writes ``<workdir>/loss_scales.json`` and prints the
override that uses the scales:

  python experiments/train.py --config=... --config.loss_scales="(0.0512, 0.297)"

Rerunning the same command resumes unfinished baselines and skips finished ones.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the baselines.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_libraries()
  from hyperrecon_jax.train import baselines  # pylint: disable=g-import-not-at-top
  with cli.user_errors():
    result = baselines.compute_loss_scales(_CONFIG.value, _WORKDIR.value)
  for name, scale in zip(result["losses"], result["loss_scales"]):
    subdir = os.path.join(_WORKDIR.value, result["baselines"][name])
    print(f"s_{name} = {scale:.6g}  (mean validation {name} of {subdir}, "
          f"step {result['steps'][name]})")
  print(f"wrote {os.path.join(_WORKDIR.value, baselines.RESULT_FILE)}")
  print(baselines.override_flag(result["loss_scales"]))


if __name__ == "__main__":
  cli.run(main)
