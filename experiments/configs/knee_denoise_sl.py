r"""fastMRI single-coil knee, Gaussian denoising (σ = 0.1), MAE + SSIM.

  python experiments/train.py --config=experiments/configs/knee_denoise_sl.py \
      --workdir=workdirs/knee_denoise_sl --config.data.manual_dir=/path/to/singlecoil
"""

from hyperrecon_jax.train import apply_variant
from hyperrecon_jax.train import default_config


def get_config(arg=None):
  c = default_config()
  c.data.name = "fastmri_knee"
  c.data.image_size = 256
  c.task.name = "denoise"
  c.task.sigma = 0.1
  return apply_variant(c, arg)
