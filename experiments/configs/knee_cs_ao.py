r"""Amortized optimization on fastMRI knee: DC + weight-ℓ1 + TV, K = 3, with DHS.

No ground truth enters the loss: the data-consistency term
‖M·F(x̂) − y‖², the ℓ1 norm of the generated weights and anisotropic TV,
weighted by Eq. 10 over (λ1, λ2). DHS keeps the 8 of 32 samples with the
lowest data-consistency loss.

  python experiments/train.py --config=experiments/configs/knee_cs_ao.py \
      --workdir=workdirs/knee_cs_ao --config.data.manual_dir=/path/to/singlecoil
  # on the embedded brain:  --config.data.name=mni152
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
  c.losses = ("dc", "weight_l1", "tv")
  # Hand-set magnitudes of each term at 256×256 (s_k, α_k = 1/s_k); measure
  # them for your data with experiments/baselines.py (note that a
  # weight-ℓ1-only baseline drives the weights towards 0: its s_k is small).
  c.loss_scales = (10.0, 1.0e4, 1.0e3)
  c.hparams.fixed = (0.5, 0.5)
  c.sampling.method = "dhs"
  c.sampling.top_b = 8
  return default.variant(c, arg)
