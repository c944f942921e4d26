r"""CPU demo with four loss terms (three hyperparameters): CS-MRI 8× on the embedded brain.

The amortized-optimization loss with the classic compressed-sensing priors:
data consistency (trust the measurements), total variation (piecewise
constant images), ℓ1 of the image's Daubechies-2 wavelet detail coefficients
(sparse in a wavelet basis) and ℓ1 of the generated Unet weights (the paper's
weight regularizer). λ lives on the simplex of the four loss coefficients;
training draws them with the sampler chosen in docs/results.md, evaluation
scores a 1,000-point design on the simplex (its four vertices included), the
Pareto set of the four terms, its hypervolume against ten Unets trained at the
rays of a Das–Dennis design (the vertices and the edge midpoints), and the
gallery of the most different good reconstructions.

The loss scales follow the paper (α_k = 1/s_k, s_k the validation value of
term k of the Unet trained on that term alone), measured with

  python experiments/baselines.py --config=experiments/configs/demo_k4.py \
      --workdir=workdirs/demo_k4_scales --config.train.num_steps=500 \
      --config.loss_scales="(1.0, 1.0, 1.0, 1.0)"

which gives validation dc 5.867, tv 40.86, wavelet 20.5 for the single-term
Unets, except for weight-ℓ1: its single-term optimum is the trivial network
(weights near 0, weight-ℓ1 4.61), so that rule would weight it 300× a
trained Unet's value (1,426-1,442 in the three other single-term Unets) and
every λ with a visible weight-ℓ1 coefficient would collapse to the trivial
network. Its scale is the typical value it has when not penalized, 1,430.

The demo (train, ten Unets in one program, evaluation):

  python experiments/train.py --config=experiments/configs/demo_k4.py \
      --workdir=workdirs/demo_k4
  python experiments/baselines.py --config=experiments/configs/demo_k4.py \
      --workdir=workdirs/demo_k4_baselines --lambdas=rays:2
  python experiments/evaluate.py --workdir=workdirs/demo_k4 --samples=1000 \
      --baselines=workdirs/demo_k4_baselines

``:quick`` is a few steps at 32×32 for tests.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default
import demo


def get_config(arg=None):
  c = demo.get_config()
  c.losses = ("dc", "tv", "wavelet", "weight_l1")
  c.loss_scales = (5.867, 40.86, 20.5, 1430.0)  # see the docstring
  c.hparams.sampler = "faces"
  c.hparams.endpoint_prob = 0.5
  c.hparams.alpha = 1.0
  c.eval.samples = 1000
  return default.variant(c, arg)
