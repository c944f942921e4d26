"""The evaluator of the training loop: validation PSNR and SSIM at a few λ.

Every ``train.eval_every`` steps the loop scores the validation split at the
λ of `train.step.validation_lambdas` through the report's program
(`evaluate.evaluate_grid`), and before every checkpoint checks that the
model's reconstructions of a validation batch are finite.
"""

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import hparams
from hyperrecon_jax import physics
from hyperrecon_jax import streams


def _tag(lam) -> str:
  """A λ vector as it appears in metric names: ``(0.5, 1.0)`` → ``0.5_1``.

  Each value in at most six digits where they tell its float32 value (the
  precision the model runs at), else in as many as that needs: 0.30000004
  is not 0.3, whose name it would otherwise take.
  """
  def text(v):
    short = f"{float(v):g}"
    if np.float32(short) == np.float32(v):
      return short
    return np.format_float_positional(np.float32(v), unique=True, trim="-")
  return "_".join(text(v) for v in lam)


def metrics(config, model, variables, lams) -> dict[str, float]:
  """Mean PSNR/SSIM of the validation split at a few λ, through the evaluator.

  The loop's validation is a small λ grid of `evaluate.evaluate_grid`, the
  evaluator ``evaluate.py`` runs: the same measurement noise per slice
  (``streams.key(config, 'validation')`` and the slice's ids), evaluation-mode
  BatchNorm, padding rows dropped. A stack of per-λ Unets is scored by each
  Unet at its own λ.

  Args:
    config: the run's config (``train.eval_batches`` limits the batches).
    model: from ``state.build_model``.
    variables: its variables.
    lams: the λ vectors to validate at.

  Returns:
    ``{'val_psnr_zf': …, 'val_psnr_<λ>': …, 'val_ssim_<λ>': …}`` where ``<λ>``
    joins the λ values with ``_``, and with several λ ``val_psnr_spread`` and
    ``val_ssim_spread`` (largest minus smallest mean), which tell a user
    whether λ is being learned. A mean that is not finite is NaN.
  """
  from hyperrecon_jax import evaluate
  size = int(config.data.image_size)
  operator = physics.make_operator(config.task, (size, size))
  result = evaluate.evaluate_grid(
      model, variables, operator, batches(config), np.asarray(lams, np.float32),
      key=streams.key(config, "validation"), chunk=int(config.eval.chunk), per_slice=False)
  number = lambda v: float("nan") if v is None else float(v)
  out = {"val_psnr_zf": number(result["zero_filled"]["mean"]["psnr"])}
  for metric in ("psnr", "ssim"):
    values = [number(v) for v in result["mean"][metric]]
    out.update({f"val_{metric}_{_tag(lam)}": v for lam, v in zip(lams, values)})
    if len(lams) > 1:
      # NaN where a mean is: Python's max and min return a value that depends
      # on where the NaN sits in the list.
      out[f"val_{metric}_spread"] = float(np.max(values) - np.min(values))
  return out


def reconstructions_finite(config, model, operator, lams):
  """What makes a state good to checkpoint, besides finite values.

  Parameters can be finite and still so large that the model's outputs in
  evaluation mode overflow (e.g. after a too large learning rate): such a
  state would be kept as the "last good checkpoint" and every reconstruction
  of it would be NaN.

  Returns:
    A function of the model variables: whether the reconstructions of the
    first validation batch at every validation λ are all finite.
  """
  from hyperrecon_jax import grid
  images = jnp.asarray(next(batches(config))["image"], jnp.float32)
  zf = operator.zero_filled(operator.measure(images, streams.key(config, "validation")))
  coeffs = hparams.coefficients(jnp.asarray(lams, jnp.float32))

  def check(variables) -> bool:
    recon = grid.reconstruct_grid(model, variables, zf, coeffs, chunk=int(config.eval.chunk))
    return bool(jax.device_get(jnp.all(jnp.isfinite(recon))))
  return check


def batches(config):
  """The validation split's batches, at most ``train.eval_batches`` of them (0: all)."""
  from hyperrecon_jax import data
  it = data.batches(config.data, "validation",
                    batch_size=config.train.batch_size, training=False)
  limit = int(config.train.eval_batches)
  for i, batch in enumerate(it):
    if limit and i >= limit:
      break
    yield batch
