r"""CPU demo: CS-MRI 8× (Poisson disc) on the embedded MNI152 brain, MAE + SSIM.

A small HyperRecon (d = 32, 16 channels) at 64×64 that trains to a useful model
on a 2-core CPU in about ten minutes, with no download:

  python experiments/train.py --config=experiments/configs/demo.py \
      --workdir=workdirs/demo
  python experiments/evaluate.py --workdir=workdirs/demo

``:quick`` is a few steps at 32×32 for tests.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default


def get_config(arg=None):
  c = default.get_config()
  c.data.name = "mni152"
  c.data.image_size = 64
  c.data.augment_flip = True
  c.task.name = "csmri"
  c.task.acceleration = 8.0
  c.task.mask = "poisson"
  c.model.hyper_dim = 32
  c.model.channels = 16
  c.train.batch_size = 8
  c.train.num_steps = 1500
  c.train.lr = 1e-3
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.eval.grid = 21
  return default.variant(c, arg)
