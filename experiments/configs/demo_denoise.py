r"""CPU demo where every λ has its own image: denoising with data consistency + TV.

The task is Gaussian denoising (σ = 0.1 on images in [0, 1]) of the embedded
MNI152 brain at 64×64, the loss the amortized-optimization pair of
``demo_ao.py``: data consistency ‖x − y‖² (λ = 0 keeps the noisy image) and
total variation (λ = 1 asks for a flat image). Between them is the classic
total-variation denoiser, whose objective has one minimizer per image for
every λ < 1, so λ decides the image and HyperRecon can be held against a
Unet trained at each λ. (In CS-MRI, ``demo_ao.py``, data consistency alone
is flat along the unmeasured k-space: at λ = 0 any de-aliased image that
agrees with the measurements is optimal, and networks with equal objectives
differ by 0.3–0.7 dB in PSNR; docs/results.md. Here only λ = 1 is like that:
every constant image has zero total variation.) The best λ lies inside the
range (0.85 in two seeds: 4.2–5.0 dB above the noisy image), which is the
method's point: train once, then choose. The loss scales are the validation
terms of the single-term Unets (the paper's α_k = 1/s_k), measured with

  python experiments/baselines.py --config=experiments/configs/demo_denoise.py \
      --workdir=workdirs/demo_denoise_scales --config.train.num_steps=500 \
      --config.loss_scales="(1.0, 1.0)"

Train it, the Unets at five λ in one program, and evaluate both (minutes on
a 2-core CPU; docs/results.md):

  python experiments/train.py --config=experiments/configs/demo_denoise.py \
      --workdir=workdirs/demo_denoise
  python experiments/baselines.py --config=experiments/configs/demo_denoise.py \
      --workdir=workdirs/demo_denoise_baselines --lambdas=0,0.25,0.5,0.75,1
  python experiments/evaluate.py --workdir=workdirs/demo_denoise \
      --baselines=workdirs/demo_denoise_baselines

``:quick`` is a few steps at 32×32 for tests.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default
import demo_ao


def get_config(arg=None):
  c = demo_ao.get_config()
  c.task.name = "denoise"
  c.task.sigma = 0.1
  c.loss_scales = (1.156, 84.55)  # s_dc, s_tv: see the docstring
  return default.variant(c, arg)
