r"""fastMRI single-coil knee, 4× super-resolution (bicubic down, nearest up), MAE + SSIM.

  python experiments/train.py --config=experiments/configs/knee_sr_sl.py \
      --workdir=workdirs/knee_sr_sl --config.data.manual_dir=/path/to/singlecoil
"""

from hyperrecon_jax.train import apply_variant
from hyperrecon_jax.train import default_config


def get_config(arg=None):
  c = default_config()
  c.data.name = "fastmri_knee"
  c.data.image_size = 256
  c.task.name = "superres"
  c.task.factor = 4
  return apply_variant(c, arg)
