r"""Trains the segmentation Unet that scores reconstructions by Dice (paper §5.5.1).

  python experiments/segmenter.py --config=experiments/configs/demo_ao.py \
      --workdir=workdirs/demo_segmenter [--config.segmenter.steps=1000]

Trains on the ground-truth slices and tissue labels of the config's data
(the embedded MNI152 template has four classes: background, other brain,
gray and white matter) and writes ``segmenter.msgpack`` and
``segmenter.json`` (with its validation Dice) into ``--workdir``. Then

  python experiments/evaluate.py --workdir=HYPER \
      --config.evals.lambda_set.segmenter=workdirs/demo_segmenter

adds the Dice of every reconstruction's segmentation to the λ curves.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli
import cli_config

from hyperrecon_jax import errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path[:arg]); its segmenter section, data "
    "and train.batch_size/seed are used (e.g. --config.segmenter.steps=2000).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the segmenter.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.quiet_libraries()
  from hyperrecon_jax import data
  from hyperrecon_jax import segmentation
  with cli.user_errors():
    config = cli_config.checked_config(_CONFIG)
    if config.data.name != "mni152":
      raise errors.InputError(f"config.data.name={config.data.name!r}: only the embedded "
                              "mni152 data has tissue labels")
    trained = segmentation.train_into(
        _WORKDIR.value, config.data, num_classes=len(data.MNI152_CLASSES),
        log=segmentation.log_to_stderr, **segmentation.settings(config))
  print(f"validation Dice (ground-truth slices, classes "
        f"{', '.join(data.MNI152_CLASSES[1:])}): {trained.info['validation_dice']:.4f}")
  print(f"wrote {os.path.join(_WORKDIR.value, segmentation.INFO_FILE)}")


if __name__ == "__main__":
  cli.run(main)
