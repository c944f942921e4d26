r"""fastMRI single-coil knee, CS-MRI 4× (Cartesian, fastMRI-style), MAE + SSIM.

Needs the fastMRI knee ``.h5`` files (licence at https://fastmri.med.nyu.edu/):

  python experiments/train.py --config=experiments/configs/knee_cs_sl.py \
      --workdir=workdirs/knee_cs_sl --config.data.manual_dir=/path/to/singlecoil
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default


def get_config(arg=None):
  c = default.get_config()
  c.data.name = "fastmri_knee"
  c.data.image_size = 256
  c.task.name = "csmri"
  c.task.acceleration = 4.0
  c.task.mask = "cartesian_random"
  c.task.center_fraction = 0.08
  return default.variant(c, arg)
