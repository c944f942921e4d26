r"""The 256×256 shipped model's recipe: the paper's image size and Unet width on one GPU.

The task, loss and λ sampling of ``pretrained_dc_tv.py`` (CS-MRI 8×, data
consistency + total variation, half of the λ drawn at 0 or 1) at the paper's
scale: 256×256 axial slices of the embedded MNI152 template (its 1 mm slices,
193×229, fitted into the square: slightly upsampled), the paper's Unet of 32
channels, and a hypernetwork of width d = 32 (HyperRecon-M: 4.9 million
parameters, 9.8 MB in float16). Batch 32, 4,000 steps: 128,000 samples, about
1,500 epochs of the 86 training slices (the paper trains ~1,000).

The loss scales depend on the image size (both terms are sums, over the
image's pixels for TV and over the measured k-space samples for DC), so
``demo_ao.py``'s, measured at 64×64, do not hold here. The ones here, (18.54,
127), are those the shipped ``mni152_csmri8x_dc_tv_256`` was trained with:
`benchmarks/gpu_train.sh` with ``SCALES=measure`` first trained the one-hot
Unets at 256×256 on one H200 and took their validation losses
(docs/results.md), so ``train.py`` with this file trains with the shipped
model's loss. The command, which measures them anew:

  CONFIG=experiments/configs/pretrained_dc_tv_256.py NAME=mni152_csmri8x_dc_tv_256 \
      SCALES=measure UNIFORM=0 BASELINE_STEPS=1500 BUDGET=280 bash benchmarks/gpu_train.sh

(its five Unets, sharing the card, reached step 1,375 of 1,500 in those 280 s).

``:quick`` is a few steps at 32×32 for tests.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default
import pretrained_dc_tv


def get_config(arg=None):
  c = pretrained_dc_tv.get_config()
  c.data.image_size = 256
  c.model.channels = 32
  c.model.hyper_dim = 32
  c.train.num_steps = 4_000
  c.train.eval_every = 1_000
  c.train.checkpoint_every = 1_000
  c.loss_scales = (18.54, 127.0)  # s_dc, s_tv at 256×256: see the docstring
  return default.variant(c, arg)
