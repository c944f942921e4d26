r"""Paper scale: CS-MRI 8× on brain slices, MAE + SSIM, HyperRecon-L (GPU).

256×256, batch 32, d = 128, Adam 1e-3 halved every 128 epochs of 256 steps:

  python experiments/train.py --config=experiments/configs/brain_cs_sl.py \
      --workdir=workdirs/brain_cs_sl
  # ABIDE-style NIfTI brains instead of the embedded template:
  #   --config.data.name=nifti --config.data.manual_dir=/path/to/nifti

``:quick`` shrinks everything to run in seconds on a CPU.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default


def get_config(arg=None):
  c = default.get_config()
  c.data.name = "mni152"
  c.data.image_size = 256
  c.task.name = "csmri"
  c.task.acceleration = 8.0
  c.model.hyper_dim = 128
  c.train.batch_size = 32
  return default.variant(c, arg)
