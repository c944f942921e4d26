"""A slice reconstructed and scored: at one point of the simplex, or over the whole λ set.

Every reconstruction is scored by PSNR, SSIM and HFEN against the slice, and
with a segmenter also by ``dice``: the foreground Dice of its segmentation
against the slice's true labels.
"""

import numpy as np

from hyperrecon_jax import compilation
from hyperrecon_jax import grid as grid_lib
from hyperrecon_jax import metrics

METRICS = ("psnr", "ssim", "hfen")  # every reconstruction's; "dice" with a segmenter


@compilation.inference_jit
def _point_metrics(recon, target):
  recon, target = recon[None], target[None]
  return metrics.psnr(recon, target)[0], metrics.ssim(recon, target)[0], metrics.hfen(
      recon, target)[0]


def score_point(model, variables, zf, image, coeffs):
  """One slice at (K,) ``coeffs``, reconstructed by `grid.reconstruct_grid`.

  Args:
    model: the model.
    variables: its variables.
    zf: (H, W, 2) the slice's network input.
    image: (H, W) the slice.
    coeffs: (K,) float32 loss coefficients.

  Returns:
    ``(recon (H, W), psnr, ssim, hfen)``.
  """
  recon = grid_lib.reconstruct_grid(model, variables, zf, np.asarray(coeffs)[None], chunk=1)[0]
  return (recon, *_point_metrics(recon, image))


def score_grid(model, variables, zf, image, coeffs, *, chunk, segmenter=None,
               labels=None) -> dict:
  """One slice over the λ set: ``recons`` (G, H, W) and each metric (G,) float64.

  Scored by `grid.grid_metrics`, a call of ``chunk`` reconstructions at a
  time, so the metrics' work takes one call's memory whatever G is.

  Args:
    model: the model.
    variables: its variables.
    zf: (H, W, 2) the slice's network input.
    image: (H, W) the slice.
    coeffs: (G, K) the λ set's coefficients.
    chunk: model batch (`grid.reconstruct_grid`).
    segmenter: a `segmentation.Trained`, for ``dice``; or None.
    labels: (H, W) the slice's true labels, with ``segmenter``.
  """
  out = grid_lib.grid_metrics(model, variables, np.asarray(zf)[None], np.asarray(image)[None],
                              coeffs, chunk=chunk, segmenter=segmenter,
                              labels=None if labels is None else np.asarray(labels)[None],
                              keep_recons=True)
  names = METRICS + ("dice",) * (segmenter is not None)
  return {"recons": out["recons"][0], **{m: out[m][0] for m in names}}


def dice(segmenter, recons, labels) -> np.ndarray:
  """(B,) float64 foreground Dice of the segmentations of (B, H, W) images."""
  from hyperrecon_jax import segmentation
  pred = segmentation.labels(segmenter, recons)
  return np.asarray(segmentation.foreground_dice(pred, labels, segmenter.num_classes),
                    np.float64)
