r"""fastMRI knee, CS-MRI 4× (random Cartesian): four loss terms, three hyperparameters.

The compressed-sensing loss of `demo_k4.py` at the paper's scale, on the
fastMRI single-coil knee data: data consistency, total variation, ℓ1 of the
Daubechies-2 wavelet details and ℓ1 of the generated weights, no ground truth
in the loss. λ is drawn on the simplex of the four coefficients with half of
the rows on its vertices, edges and faces ('faces', the sampler of
docs/results.md's four-term study); evaluation scores a 1,000-point design and
its Pareto set against ten Unets at the Das–Dennis rays.

  python experiments/baselines.py --config=experiments/configs/knee_cs_k4.py \
      --workdir=workdirs/knee_k4_scales --config.data.manual_dir=/path/to/singlecoil \
      --config.train.num_steps=5000 --config.loss_scales="(1.0, 1.0, 1.0, 1.0)"
  python experiments/train.py --config=experiments/configs/knee_cs_k4.py \
      --workdir=workdirs/knee_k4 --config.data.manual_dir=/path/to/singlecoil \
      --config.loss_scales="(s_dc, s_tv, s_wavelet, s_weight)"
  python experiments/baselines.py --config=experiments/configs/knee_cs_k4.py \
      --workdir=workdirs/knee_k4_baselines --lambdas=rays:2 \
      --config.data.manual_dir=/path/to/singlecoil --config.loss_scales=...
  python experiments/evaluate.py --workdir=workdirs/knee_k4 --samples=1000 \
      --baselines=workdirs/knee_k4_baselines

The scales below are placeholders of the right order at 256×256 until measured
on your data (as knee_cs_ao.py's): the single-term Unets of the first command
give s_dc, s_tv and s_wavelet; weight-ℓ1's single-term Unet drives its weights
to 0, so its scale is the weight-ℓ1 the other single-term Unets have
(demo_k4.py explains why).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default
import knee_cs_ao


def get_config(arg=None):
  c = knee_cs_ao.get_config()  # fastMRI knee, 256², CS-MRI 4×, random Cartesian mask
  c.losses = ("dc", "tv", "wavelet", "weight_l1")
  c.loss_scales = (10.0, 1.0e3, 5.0e2, 1.0e4)
  c.sampling.method = "uhs"
  c.hparams.sampler = "faces"
  c.hparams.endpoint_prob = 0.5
  c.hparams.fixed = (0.5, 0.5, 0.5)
  c.eval.samples = 1000
  return default.variant(c, arg)
