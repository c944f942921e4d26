r"""fastMRI single-coil knee, 4× super-resolution (bicubic down, nearest up), MAE + SSIM.

  python experiments/train.py --config=experiments/configs/knee_sr_sl.py \
      --workdir=workdirs/knee_sr_sl --config.data.manual_dir=/path/to/singlecoil
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default


def get_config(arg=None):
  c = default.get_config()
  c.data.name = "fastmri_knee"
  c.data.image_size = 256
  c.task.name = "superres"
  c.task.factor = 4
  return default.variant(c, arg)
