r"""How many training images per second the input pipeline delivers; one JSON line each.

  python benchmarks/input_pipeline.py      # the 256×256 recipe's batches of 32
  python benchmarks/input_pipeline.py --config=experiments/configs/pretrained_dc_tv.py \
      --threads=0 --threads=2 --labels=false --labels=true

The training loop (`experiments/train.py`) reads its batches from
`hyperrecon_jax.data.batches` on the host while the device runs the previous
step, so the pipeline's rate bounds the end-to-end rate: a GPU that trains
3,540 samples/s needs a host that delivers more. This times the iterator the
loop reads (the config's split, augmentation and batch size; without labels,
as the loop asks, unless ``--labels=true``; as many batches read ahead as the
loop, or as threads where there are more), after one batch that decodes the
split, in ``--repeats`` runs of ``--batches`` batches (median reported).

The config is checked as ``train.py`` checks it: a config file that does not
load, an unknown field or a setting training refuses is one ``error:`` line
with exit status 2, before anything is read.
"""

import json
import os
import statistics
import sys
import time

from absl import flags

# The config flag and its one-line errors are the experiments' scripts'.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import cli
import cli_config
import provenance

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = cli_config.define_config_file(
    "The training config whose data and batch size are read.",
    default=os.path.join(_ROOT, "experiments", "configs", "pretrained_dc_tv_256.py"))
_THREADS = flags.DEFINE_multi_integer("threads", [2], "Reader threads (0: the caller's "
                                      "thread); repeat to measure several.")
_LABELS = flags.DEFINE_multi_enum("labels", ["false"], ["false", "true"],
                                  "Batches with the split's labels (the training loop "
                                  "reads none); repeat to measure both.")
_BATCHES = flags.DEFINE_integer("batches", 150, "Batches per timed run.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs (median reported).", lower_bound=1)


def main(argv):
  del argv
  provenance.quiet_logs()
  from hyperrecon_jax import train
  with cli.user_errors():
    config = cli_config.checked_config(_CONFIG)
    train.check_config(config)
    # A missing or damaged dataset is the user's to fix too.
    _measure(config)


def _measure(config) -> None:
  """Prints one JSON line for each of ``--labels`` and ``--threads``."""
  from hyperrecon_jax import data
  from hyperrecon_jax.data import pipeline
  batch_size = int(config.train.batch_size)
  for labels in _LABELS.value:
    for threads in _THREADS.value:
      it = data.batches(config.data, "train", batch_size=batch_size,
                        seed=int(config.train.seed), num_threads=threads,
                        # grain uses at most as many threads as batches read ahead
                        prefetch=max(pipeline.DEFAULT_PREFETCH, threads),
                        labels=labels == "true")
      next(it)
      rates = []
      for _ in range(_REPEATS.value):
        t0 = time.perf_counter()
        for _ in range(_BATCHES.value):
          next(it)
        rates.append(_BATCHES.value * batch_size / (time.perf_counter() - t0))
      print(json.dumps({
          "benchmark": "input_pipeline", "value": round(statistics.median(rates), 1),
          "unit": "images/s", "runs": [round(r, 1) for r in rates],
          "data": config.data.name, "image_size": int(config.data.image_size),
          "batch": batch_size, "threads": threads, "labels": labels == "true",
          "flip": bool(config.data.augment_flip),
          "intensity": float(config.data.augment_intensity), "cpus": os.cpu_count(),
          **provenance.fields(),
      }), flush=True)


if __name__ == "__main__":
  cli.run(main)
