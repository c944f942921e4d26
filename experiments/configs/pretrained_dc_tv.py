r"""The shipped model's recipe: the CPU demo's task and model, trained on one GPU.

The same task, loss, loss scales, architecture (d = 32, 16 channels) and λ
sampling as ``demo_ao.py`` (CS-MRI 8× on 64×64 MNI152 slices, data
consistency + total variation, half of the λ drawn at 0 or 1), with batch 32
and 20,000 steps: 640,000 samples, about 7,400 epochs of the 86 training
slices, against the demo's 12,000 samples (the paper trains ~1,000 epochs).
One GPU runs it in a few minutes; `benchmarks/gpu_train.sh` runs it, the
uniform-λ control and the per-λ Unets, and evaluates them:

  python experiments/train.py --config=experiments/configs/pretrained_dc_tv.py \
      --workdir=workdirs/pretrained_dc_tv

``:quick`` is a few steps at 32×32 for tests.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default
import demo_ao


def get_config(arg=None):
  c = demo_ao.get_config()
  c.train.batch_size = 32
  c.train.num_steps = 20_000
  c.train.log_every = 250
  c.train.eval_every = 2_500
  c.train.checkpoint_every = 2_500
  return default.variant(c, arg)
