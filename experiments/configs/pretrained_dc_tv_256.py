r"""The 256×256 shipped model's recipe: the paper's image size and Unet width on one GPU.

The task, loss and λ sampling of ``pretrained_dc_tv.py`` (CS-MRI 8×, data
consistency + total variation, half of the λ drawn at 0 or 1) at the paper's
scale: 256×256 axial slices of the embedded MNI152 template (its 1 mm slices,
193×229, fitted into the square: slightly upsampled), the paper's Unet of 32
channels, and a hypernetwork of width d = 32 (HyperRecon-M: 4.9 million
parameters, 9.8 MB in float16). Batch 32, 4,000 steps: 128,000 samples, about
1,500 epochs of the 86 training slices (the paper trains ~1,000).

The loss scales depend on the image size (both terms are sums, over the
image's pixels for TV and over the measured k-space samples for DC), so the
ones here, measured at 64×64 for ``demo_ao.py``, are placeholders: `benchmarks/gpu_train.sh` with
``SCALES=measure`` first trains the one-hot Unets at 256×256 and trains with
their validation losses instead. The shipped ``mni152_csmri8x_dc_tv_256`` was
trained so on one H200 (scales (18.54, 127); docs/results.md):

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
  return default.variant(c, arg)
