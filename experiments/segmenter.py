r"""Trains the segmentation Unet that scores reconstructions by Dice (paper §5.5.1).

  python experiments/segmenter.py --config=experiments/configs/demo_ao.py \
      --workdir=workdirs/demo_segmenter [--config.segmenter.steps=1000]

Trains on the ground-truth slices and labels of the config's data (the
embedded MNI152 template has four tissue classes: background, other brain,
gray and white matter; a NIfTI folder with label volumes has the classes 0 up
to its largest label value, at most ``segmentation.MAX_CLASSES``) and writes
``segmenter.msgpack`` and ``segmenter.json`` (with its validation Dice) into
``--workdir``. Then

  python experiments/evaluate.py --workdir=HYPER \
      --config.evals.lambda_set.segmenter=workdirs/demo_segmenter

adds the Dice of every reconstruction's segmentation to the λ curves.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli
import cli_config
import cli_unread

_CONFIG = cli_config.define_config_file(
    "Experiment config file (path[:arg]); its segmenter section, data "
    "and train.batch_size/seed are used (e.g. --config.segmenter.steps=2000).")
_WORKDIR = cli.define_path("workdir", None, "Folder of the segmenter.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.quiet_libraries()
  from hyperrecon_jax import data
  from hyperrecon_jax import segmentation
  from hyperrecon_jax import segmenter_files
  with cli.user_errors():
    config = cli_config.checked_config(_CONFIG)
    # What the segmenter reads of config.train; its own steps and rate are config.segmenter's.
    cli_unread.refuse_section(
        _CONFIG, "train", "segmenter.py", "its steps and learning rate are "
        "--config.segmenter.steps and --config.segmenter.lr", read=("train.batch_size",
                                                                   "train.seed"))
    settings = segmentation.settings(config)  # Its errors before the data's.
    segmenter_files.check_folder(_WORKDIR.value)
    # The classes are the data's (segmentation.label_classes).
    trained = segmenter_files.train_into(_WORKDIR.value, config.data,
                                         log=segmentation.log_to_stderr, **settings)
  names = (data.MNI152_CLASSES[1:] if config.data.name == "mni152"
           else [str(c) for c in range(1, trained.num_classes)])
  print(f"validation Dice (ground-truth slices, classes "
        f"{', '.join(names)}): {trained.info['validation_dice']:.4f}")
  print(f"wrote {os.path.join(_WORKDIR.value, segmenter_files.INFO_FILE)}")


if __name__ == "__main__":
  cli.run(main)
