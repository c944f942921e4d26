r"""Evaluates a trained workdir over a grid of λ and draws the figures.

  python experiments/evaluate.py --workdir=workdirs/demo [--grid=100] [--split=test]

Writes ``<workdir>/eval/lambda_grid.json`` (metrics per λ: means over slices,
per volume, per slice, the zero-filled baseline, the best λ per metric) and
``eval/curves.png`` (one hyperparameter) or ``eval/landscape.png`` (two),
``eval/slices.png`` (ground truth, input, reconstructions at several λ),
``eval/diverse.png`` (the two most different of the best reconstructions,
the paper's Fig. 7) and ``eval/range.png`` (where λ changes the image).
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of a training run.")
_GRID = flags.DEFINE_integer("grid", None, "λ values per hyperparameter "
                             "(default: the config's eval.grid).")
_SPLIT = flags.DEFINE_enum("split", None, ["train", "validation", "test"],
                           "Split to evaluate (default: the config's).")
_CHUNK = flags.DEFINE_integer("chunk", None, "Model batch of one call "
                              "(default: the config's eval.chunk).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_SHOWN = flags.DEFINE_integer("panel_lambdas", 5, "λ values in slices.png.")
flags.mark_flags_as_required(["workdir"])


def _write_json(path, text):
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)  # never a half-written result


def evaluate(workdir, grid, split, chunk, step, shown):
  """Runs the evaluation; returns the result dict."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from hyperrecon_jax import data, evaluate as ev, hparams, metrics, physics, plots, train  # pylint: disable=g-import-not-at-top,g-multiple-import

  config, model, variables, step = train.load_trained(workdir, step)
  grid = grid or config.eval.grid
  split = split or config.eval.split
  chunk = chunk or config.eval.chunk
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  num_lambdas = len(tuple(config.losses)) - 1
  if config.model.hyper_dim:
    lam_grid = hparams.grid(grid, num_lambdas)
    apply_fn = model.module.apply
  else:  # a plain Unet has one λ: the one it was trained at
    lam_grid = np.asarray([config.hparams.fixed], np.float32)
    apply_fn = lambda v, zf, coeffs: model.module.apply(v, zf)
  batches = data.batches(config.data, split, batch_size=config.train.batch_size,
                         training=False)
  key = jax.random.key(int(config.train.seed) + 3)
  result = ev.evaluate_grid(apply_fn, variables, operator, batches, lam_grid,
                            key=key, chunk=chunk)
  result["checkpoint_step"] = step
  result["split"] = split
  out = os.path.join(workdir, "eval")
  os.makedirs(out, exist_ok=True)
  _write_json(os.path.join(out, "lambda_grid.json"), ev.to_json(result))

  if num_lambdas == 1 and len(lam_grid) > 1:
    plots.metric_curves(result, os.path.join(out, "curves.png"))
  elif num_lambdas == 2:
    plots.landscape(result, os.path.join(out, "landscape.png"))

  # Figures of one slice: the middle one of the split.
  middle = result["num_slices"] // 2
  source = data.load_split(config.data, split)
  image = np.asarray(source[middle]["image"], np.float32)[None]
  zf = operator.zero_filled(operator.measure(image, ev.batch_key(key, 0)))
  coeffs = hparams.coefficients(lam_grid)
  recons = np.asarray(ev.reconstruct_grid(apply_fn, variables, zf[0], coeffs,
                                          chunk=chunk))
  zf_mag = np.asarray(ev.magnitude(zf))[0]
  picks = np.unique(np.linspace(0, len(lam_grid) - 1, shown).round().astype(int))
  plots.slice_panel(image[0], zf_mag, recons[picks], lam_grid[picks],
                    os.path.join(out, "slices.png"), errors=True)
  psnrs = np.asarray(metrics.psnr(recons, np.broadcast_to(image, recons.shape)))
  i, j, _ = ev.diverse_pair(recons, psnrs)
  plots.slice_panel(image[0], zf_mag, recons[[i, j]], lam_grid[[i, j]],
                    os.path.join(out, "diverse.png"), errors=True)
  if len(lam_grid) > 1:
    plots.range_map(recons, os.path.join(out, "range.png"))
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_libraries()
  with cli.user_errors():
    result = evaluate(_WORKDIR.value, _GRID.value, _SPLIT.value, _CHUNK.value,
                      _STEP.value, _SHOWN.value)
  zf = result["zero_filled"]["mean"]
  print(f"{result['num_slices']} slices of {result['split']} "
        f"(checkpoint step {result['checkpoint_step']}), "
        f"{len(result['lambdas'])} λ values")
  print(f"zero-filled: PSNR {zf['psnr']:.2f} dB, SSIM {zf['ssim']:.4f}")
  for metric in ("psnr", "ssim", "hfen"):
    best = result["best"][metric]
    lam = ", ".join(f"{v:.3g}" for v in best["lam"])
    print(f"best {metric}: {best['value']:.4g} at λ = ({lam})")
  print(f"written: {os.path.join(_WORKDIR.value, 'eval')}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
