"""How well a model recovers a user's scan from its own simulated measurements.

`hyperrecon_jax.reconstruct` degrades a scan with the model's task, so the
scan itself is the ground truth: each reconstruction is scored against it
slice by slice on the model's grid (the slices of `scans.Scan.images`), as a
report scores a dataset split (`hyperrecon_jax.grid`) and the explorer a
slice. The scored slices are those with enough foreground (`Scan.kept`, the
slices the data pipeline would keep) that are not constant; all of them when
none is left.

Metrics (`hyperrecon_jax.metrics`): PSNR and SSIM (higher is better) and HFEN
(lower is better), each the mean over the scored slices.
"""

import numpy as np

from hyperrecon_jax import compilation
from hyperrecon_jax import hparams
from hyperrecon_jax import metrics
from hyperrecon_jax import results

METRICS = ("psnr", "ssim", "hfen")


@compilation.inference_jit
def _slice_scores(recon, target):
  return {m: getattr(metrics, m)(recon, target) for m in METRICS}


def scored_slices(scan) -> tuple[np.ndarray, str]:
  """The scan's slices that are scored, and which they are, in words.

  The kept ones (a fastMRI file keeps every slice) that are not constant: a
  constant slice (an all-zero one, or a NIfTI slice of one value) has no edges,
  so its HFEN is undefined, and CS-MRI recovers it exactly from the centre of
  k-space, an infinite PSNR. One such slice would make every mean over the
  slices infinite or meaningless. When no slice is left, every slice.
  """
  flat = np.asarray(scan.images).reshape(len(scan.images), -1)
  constant = flat.max(axis=1) == flat.min(axis=1)
  kept = np.asarray(scan.kept, bool)
  chosen = np.flatnonzero(kept & ~constant)
  if chosen.size:
    which = "slices with foreground" if scan.kind == "nifti" else "slices that are not constant"
    return chosen, which
  return np.arange(len(scan.images)), "every slice (none has enough foreground)"


def slice_scores(recon, target) -> dict[str, np.ndarray]:
  """Every metric of each slice: ``{metric: (S,) float64}``.

  Args:
    recon: (S, H, W) reconstructions (or inputs) on the model's grid.
    target: (S, H, W) the scan's slices.
  """
  out = _slice_scores(np.asarray(recon, np.float32), np.asarray(target, np.float32))
  return {m: np.asarray(v, np.float64) for m, v in out.items()}


def moments(scores: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
  """``{metric: (mean, std)}`` over the slices of a `slice_scores` dict.

  What a λ keeps of its scores: a million λ of one slice each hold no more
  than their means.
  """
  return {m: (float(np.mean(v)), float(np.std(v))) for m, v in scores.items()}


def summarize(per_lambda, zero_filled, lambdas, num_slices: int, which: str) -> dict:
  """The sidecar's ``scores``: means per λ, the input's, and the best λ per metric.

  Args:
    per_lambda: the `moments` of each λ's `slice_scores`, in order.
    zero_filled: the `moments` of the zero-filled input's magnitude.
    lambdas: (L, K − 1) the λ values.
    num_slices: how many slices were scored.
    which: which slices they are, in words (`scored_slices`).

  Returns:
    ``{'slices', 'which', 'metrics', 'zero_filled': {metric: mean},
    'mean': {metric: [L]}, 'std': {metric: [L]}, 'best': {metric: {'index',
    'lambda', 'value'}}}`` of JSON types, non-finite values as None; a metric
    without a finite mean (or PSNR's +inf) has no best.
  """
  lambdas = np.asarray(lambdas, np.float64)
  mean = {m: np.array([s[m][0] for s in per_lambda]) for m in METRICS}
  best = {}
  for m in METRICS:
    higher = m not in results.LOWER_IS_BETTER
    # A mean can be best if finite, or the best possible (+inf PSNR: exact).
    usable = np.isfinite(mean[m]) | (mean[m] == (np.inf if higher else -np.inf))
    if not usable.any():
      continue
    values = np.where(usable, mean[m], -np.inf if higher else np.inf)
    i = int(np.argmax(values) if higher else np.argmin(values))
    # λ to float32's 7 digits, as the sidecar's rows (a typed 0.1, not 0.10000000149).
    best[m] = {"index": i, "lambda": [float(f"{v:.7g}") for v in lambdas[i]],
               "value": results.floats(mean[m][i])}
  # Strict JSON, as a report's: an exact reconstruction's infinite PSNR is null.
  return {
      "slices": int(num_slices),
      "which": which,
      "metrics": list(METRICS),
      "zero_filled": {m: results.floats(zero_filled[m][0]) for m in METRICS},
      "mean": {m: results.floats(mean[m]) for m in METRICS},
      "std": {m: results.floats([s[m][1] for s in per_lambda]) for m in METRICS},
      "best": best,
  }


def describe(scores: dict, size: int, input_name: str = "zero-filled") -> str:
  """One line for the terminal: the input's PSNR and SSIM and the best λ of each.

  Args:
    scores: `score`'s result.
    size: the model's slice size.
    input_name: what the network's input is called (`physics.input_name`).
  """
  def lam(b):
    text = ":".join(f"{v:g}" for v in b["lambda"])
    if len(b["lambda"]) < 2:
      return text
    # From three terms on λ is a stick-breaking code: the weights say more.
    coeffs = np.asarray(hparams.coefficients(np.asarray([b["lambda"]], np.float32)))[0]
    return f"{text} (c = {':'.join(f'{v:.3g}' for v in coeffs)})"

  def value(v, fmt):  # null: infinite (an exact reconstruction) or NaN
    return "∞" if v is None else f"{v:{fmt}}"

  name = input_name if input_name.endswith("input") else f"{input_name} input"
  parts = [f"{name} PSNR {value(scores['zero_filled']['psnr'], '.2f')} dB, "
           f"SSIM {value(scores['zero_filled']['ssim'], '.3f')}"]
  for m, unit, fmt in (("psnr", " dB", ".2f"), ("ssim", "", ".3f")):
    if m in scores["best"]:
      b = scores["best"][m]
      parts.append(f"best {m.upper()} {value(b['value'], fmt)}{unit} at λ = {lam(b)}")
  which = scores["which"]
  if scores["slices"] == 1:
    which = which.replace("slices", "slice", 1).replace("that are", "that is")
  return (f"scores against the scan, on the model's {size}×{size} slices "
          f"({scores['slices']} {which}): " + "; ".join(parts))
