r"""What bfloat16 activations cost in accuracy: one trained model, both dtypes.

  python benchmarks/bf16_accuracy.py --pretrained=mni152_csmri8x_dc_tv
  python benchmarks/bf16_accuracy.py --workdir=workdirs/demo --split=validation
  python benchmarks/bf16_accuracy.py --workdir=workdirs/demo_k4 --samples=64

Evaluates the same weights twice through `evaluate.evaluate_grid` (the path
``evaluate.py`` runs, same slices, same measurement noise): once as trained
(``config.model.dtype``, normally float32) and once with ``model.dtype =
'bfloat16'`` (activations between layers in bfloat16; parameters, BatchNorm
statistics, the output and the metrics in float32). Prints one JSON line with
the mean PSNR and SSIM of both at every λ and the largest differences; the
issue's bar is 0.05 dB of PSNR.
"""

import json
import os
import sys

from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir, "experiments"))
import cli
import provenance

_WORKDIR, _PRETRAINED, _STEP = cli.define_model_flags()
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "validation", "test"],
                           "Split to evaluate.")
_GRID = flags.DEFINE_integer("grid", 5, "λ values per hyperparameter (one or two "
                             "hyperparameters).", lower_bound=2)
_SAMPLES = flags.DEFINE_integer("samples", 0, "Instead of a grid: N points of a design on the "
                                "simplex, as evaluate.py --samples (any number of loss terms).",
                                lower_bound=0)


def main(argv):
  del argv
  cli.quiet_libraries()
  import numpy as np

  from hyperrecon_jax import data
  from hyperrecon_jax import errors
  from hyperrecon_jax import evaluate as ev
  from hyperrecon_jax import physics
  from hyperrecon_jax import streams
  from hyperrecon_jax import train
  from hyperrecon_jax.evaluators import lambda_set

  with cli.user_errors():
    config, model, variables, step, name = cli.load_model(
        _WORKDIR.value, _PRETRAINED.value, _STEP.value)
    if not config.model.hyper_dim:
      raise errors.InputError(f"{name}: a plain Unet has no λ grid: give a HyperRecon model")
  low = config.copy_and_resolve_references()
  low.model.dtype = "bfloat16"
  low_model = train.build_model(low)
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  config.eval.grid, config.eval.samples = _GRID.value, _SAMPLES.value
  with cli.user_errors():
    # evaluate.py's λ: a grid up to two hyperparameters, else a design.
    lams, _ = lambda_set.lambda_set(config)
  key = streams.key(config, "evaluation")
  means = {}
  for dtype, m in ((str(config.model.dtype), model), ("bfloat16", low_model)):
    result = ev.evaluate_grid(
        m, variables, operator,
        data.batches(config.data, _SPLIT.value, batch_size=int(config.train.batch_size),
                     training=False),
        lams, key=key, chunk=int(config.eval.chunk))
    means[dtype] = {k: np.asarray(result["mean"][k], np.float64).tolist()
                    for k in ("psnr", "ssim")}
  ref, low_means = means[str(config.model.dtype)], means["bfloat16"]
  print(json.dumps({
      "benchmark": "bf16_accuracy", "model": name, "checkpoint_step": step,
      "split": _SPLIT.value, **provenance.fields(),
      "lambdas": np.asarray(lams).tolist(), "reference_dtype": str(config.model.dtype),
      "reference": ref, "bfloat16": low_means,
      "max_abs_diff_psnr_db": max(abs(a - b) for a, b in zip(ref["psnr"], low_means["psnr"])),
      "max_abs_diff_ssim": max(abs(a - b) for a, b in zip(ref["ssim"], low_means["ssim"])),
  }))


if __name__ == "__main__":
  cli.run(main)
