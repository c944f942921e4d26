r"""Trains a HyperRecon model (or a plain Unet baseline) from a config file.

  python experiments/train.py --config=experiments/configs/demo.py \
      --workdir=workdirs/demo [--config.train.num_steps=2000 ...]

Rerunning the same command in the same workdir resumes from the latest
checkpoint (after Ctrl-C, SIGTERM or kill -9).

Several processes (one per host, or several on one machine) train one run
together, each on its own shard of every batch: start the same command in
each, with the workdir on a file system all of them reach, and

  --coordinator=HOST:PORT --num_processes=N --process_id=I

(HOST: where process 0 runs; I = 0 … N-1), or ``--distributed`` where JAX finds
these itself (Slurm, Open MPI, TPU). If one process dies the others stop too;
rerun all of them to resume from the last checkpoint.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli
import cli_config
import cli_ending
import cli_processes
import cli_unread

_CONFIG = cli_config.define_config_file("Experiment config file (path[:arg]).")
_WORKDIR = cli.define_path("workdir", None, "Folder of the run.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = cli_processes.define_distributed_flags()


def main(argv):
  cli.quiet_libraries()
  with cli.user_errors():
    config = cli_config.checked_config(_CONFIG)
    cli_unread.refuse_section(_CONFIG, "segmenter", "train.py",
                             "the segmenter is trained by experiments/segmenter.py")
    cli_unread.refuse_task(_CONFIG, config, "train.py")
    cli_unread.refuse_sampling(_CONFIG, config, "train.py")
    # Before anything else touches JAX: the backend must start knowing its peers.
    joined = cli_processes.join_processes(_DISTRIBUTED, config.train.distributed)
  from hyperrecon_jax import train
  with cli_ending.ending_with_the_run(joined), cli.user_errors():
    if joined:
      cli_processes.check_process_count(_DISTRIBUTED)
    train.train_and_evaluate(config, _WORKDIR.value)
  print(f"done: {_WORKDIR.value}")


if __name__ == "__main__":
  cli.run(main)
