"""The result of a λ-grid evaluation: statistics, best λ, JSON round trip.

`evaluate.evaluate_grid` computes per-slice metrics; this module turns them
into one dict of JSON types (its schema: `summarize`) and reads it back.
"""

import hashlib
import json
from typing import NamedTuple

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax import hparams

METRICS = ("psnr", "ssim", "mae", "nmse", "hfen", "rpsnr")
LOWER_IS_BETTER = frozenset({"mae", "nmse", "hfen"})
FORMAT = "hyperrecon_jax.lambda_grid/1"


def floats(x):
  """Nested lists of Python floats; non-finite values become None (strict JSON)."""
  x = np.asarray(x, np.float64)
  if x.ndim == 0:
    return float(x) if np.isfinite(x) else None
  return [floats(v) for v in x]


def reconstructions_not_finite(psnr) -> np.ndarray:
  """(S, G) True where a reconstruction is not finite, read from its PSNR.

  With images in [0, 1] a reconstruction's PSNR is NaN when it holds NaN,
  and −inf when it holds ±inf or values so large that its float32 squared
  error overflows; +inf, an exact match, does not come from a model.

  Args:
    psnr: [S][G] per-slice PSNR, None or NaN where not finite (`floats`).
  """
  values = [[np.nan if v is None else v for v in row] for row in psnr]
  return ~np.isfinite(np.array(values, np.float64).reshape(len(values), -1) if values
                      else np.zeros((0, 0)))


def _py(v):
  return v.item() if isinstance(v, np.generic) else v


@np.errstate(invalid="ignore", divide="ignore")  # a volume without a scored slice: NaN
def _summary(per_slice, volume_rows, keep):
  """Mean, std, quartiles over the kept slices and means per volume of (S, ...) arrays."""
  per_slice, volume_rows = per_slice[keep], [r[keep] for r in volume_rows]
  if not keep.any():
    nan = np.full(per_slice.shape[1:], np.nan)
    return {"mean": floats(nan), "std": floats(nan), "q25": floats(nan),
            "q75": floats(nan), "volume_mean": floats(np.stack([nan] * len(volume_rows)))}
  q25, q75 = np.percentile(per_slice, [25, 75], axis=0)
  volume_mean = np.stack([per_slice[r].sum(0) / r.sum() for r in volume_rows])
  return {"mean": floats(per_slice.mean(0)), "std": floats(per_slice.std(0)),
          "q25": floats(q25), "q75": floats(q75), "volume_mean": floats(volume_mean)}


def summarize(grid, zero_filled, lam_grid, volumes, slices, *, per_slice: bool = True):
  """Builds the `evaluate_grid` result from per-slice metric arrays.

  Args:
    grid: ``{metric: (S, G)}`` for every metric of `METRICS`, and optionally
      more (``dice``; higher is better), listed after them.
    zero_filled: ``{metric: (S,)}``, the zero-filled baseline, for the same
      metrics.
    lam_grid: (G, n) hyperparameters.
    volumes: S volume ids.
    slices: S slice indices.
    per_slice: keep the per-slice arrays.

  Returns:
    A dict of JSON types only (non-finite numbers as None; `to_json`):
    ``format``; ``metrics`` (names); ``lower_is_better`` (names);
    ``lambdas`` (G × n); ``coeffs`` (G × K); ``num_slices``; ``num_volumes``;
    ``volumes`` (ids, in order of first appearance); ``slices``:
    ``{'volume': [S], 'slice': [S]}``; ``unscored``: ``{metric: [[volume,
    slice], ...]}``, the slices left out of a metric's statistics because its
    value is not finite at some λ (e.g. NMSE of an all-zero ground truth, HFEN
    of a constant one);
    ``mean``, ``std``, ``q25``, ``q75``: ``{metric: [G]}`` over the scored
    slices; ``volume_mean``: ``{metric: V × G}``, the mean over each volume's
    slices; ``per_slice``: ``{metric: S × G}`` (only with ``per_slice``);
    ``best``: ``{metric: {'index', 'lam', 'value'}}`` on ``mean``;
    ``zero_filled``: the same statistics of the zero-filled magnitude,
    ``{'mean': {metric: x}, 'std', 'q25', 'q75', 'volume_mean': {metric: [V]},
    'per_slice': {metric: [S]}}``.
  """
  lam = np.asarray(lam_grid, np.float32)
  s_count = len(volumes)
  names = METRICS + tuple(m for m in grid if m not in METRICS)
  for m in names:
    if m not in grid or m not in zero_filled:
      raise errors.InputError(f"grid and zero_filled need every metric of {names}, lack {m!r}.")
    if np.shape(grid[m]) != (s_count, lam.shape[0]) or np.shape(zero_filled[m]) != (s_count,):
      raise errors.InputError(f"grid[{m!r}] must be (S, G) = {(s_count, lam.shape[0])} and "
                              f"zero_filled[{m!r}] ({s_count},), got {np.shape(grid[m])} and "
                              f"{np.shape(zero_filled[m])}.")
  if len(slices) != s_count or s_count == 0:
    raise errors.InputError(f"volumes and slices must be equally long and non-empty, got "
                            f"{s_count} and {len(slices)}.")
  volumes, slices = [_py(v) for v in volumes], [_py(s) for s in slices]
  order = list(dict.fromkeys(volumes))
  volume_rows = [np.array([v == u for v in volumes]) for u in order]
  fields = ("mean", "std", "q25", "q75", "volume_mean")
  # A slice whose metric is not finite at some λ or for the zero-filled input
  # (NMSE of an all-zero ground truth, HFEN of a constant one, PSNR of an
  # exact match) is left out of that metric's statistics, for every λ alike,
  # and listed.
  keep = {m: np.isfinite(np.asarray(grid[m], np.float64)).all(1)
          & np.isfinite(np.asarray(zero_filled[m], np.float64)) for m in names}
  unscored = {m: [[volumes[i], slices[i]] for i in np.flatnonzero(~keep[m])]
              for m in names if not keep[m].all()}
  stats = {m: _summary(np.asarray(grid[m], np.float64), volume_rows, keep[m])
           for m in names}
  zstats = {m: _summary(np.asarray(zero_filled[m], np.float64), volume_rows, keep[m])
            for m in names}
  result = {
      "format": FORMAT,
      "metrics": list(names),
      "lower_is_better": sorted(LOWER_IS_BETTER),
      "lambdas": floats(lam),
      "coeffs": floats(hparams.coefficients(lam)),
      "num_slices": s_count,
      "num_volumes": len(order),
      "volumes": order,
      "slices": {"volume": volumes, "slice": slices},
      "unscored": unscored,
  }
  result.update({f: {m: stats[m][f] for m in names} for f in fields})
  if per_slice:
    result["per_slice"] = {m: floats(grid[m]) for m in names}
  # None where no slice could be scored for a metric.
  result["best"] = {m: best_lambda(result, m)._asdict() if keep[m].any() else None
                    for m in names}
  result["zero_filled"] = {f: {m: zstats[m][f] for m in names} for f in fields}
  result["zero_filled"]["per_slice"] = {m: floats(zero_filled[m]) for m in names}
  return result


def metric_array(result, metric: str, field: str = "mean") -> np.ndarray:
  """A result entry as a float64 array, None (non-finite) read back as NaN.

  Args:
    result: a dict from `evaluate_grid` or `from_json`.
    metric: one of ``result['metrics']``.
    field: ``'mean'``, ``'std'``, ``'q25'``, ``'q75'``, ``'volume_mean'`` or
      ``'per_slice'``.

  Returns:
    (G,), (V, G) or (S, G) array.
  """
  names = result.get("metrics", ())
  if metric not in names:
    raise errors.InputError(f"metric must be one of {list(names)}, got {metric!r}.")
  if field not in result:
    raise errors.InputError(f"result has no field {field!r} (per_slice=False drops 'per_slice').")
  return np.array(result[field][metric], dtype=np.float64)


class Best(NamedTuple):
  """The best grid point for a metric: its index, λ vector and value."""
  index: int
  lam: list
  value: float


def best_lambda(result, metric: str, field: str = "mean") -> Best:
  """The λ with the best mean value of a metric (argmin for MAE, NMSE, HFEN).

  Args:
    result: a dict from `evaluate_grid` or `from_json`.
    metric: a metric name of ``result['metrics']``.
    field: the (G,) statistic to optimize, normally ``'mean'``.

  Returns:
    ``Best(index, lam, value)``; NaN entries are skipped.
  """
  values = metric_array(result, metric, field)
  if values.ndim != 1 or np.all(np.isnan(values)):
    raise errors.InputError(f"{field!r} of {metric!r} must be a (G,) vector with a finite "
                            f"value, got shape {values.shape}.")
  lower = result.get("lower_is_better", LOWER_IS_BETTER)
  index = int(np.nanargmin(values) if metric in lower else np.nanargmax(values))
  return Best(index, list(result["lambdas"][index]), float(values[index]))


# The SHA-256 of the result's own content, written with it: a digit changed in
# the file (by hand, or a flipped bit) was read back as a measured number.
DIGEST = "content_sha256"


def _digest(result) -> str:
  """SHA-256 of a result in canonical JSON (sorted keys, no spaces), without `DIGEST`."""
  content = {k: v for k, v in result.items() if k != DIGEST}
  text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
  return hashlib.sha256(text.encode()).hexdigest()


def to_json(result, **kwargs) -> str:
  """Strict JSON text of an `evaluate_grid` result, with its digest (``json.dumps`` kwargs pass on).

  The digest (`DIGEST`) is of the content in canonical form, so `from_json`
  finds any value changed since, whatever the text's layout.
  """
  return json.dumps({**result, DIGEST: _digest(result)}, allow_nan=False, **kwargs)


def _refuse_constant(name: str):
  """``json.loads``'s reader of NaN and ±Infinity, which strict JSON lacks.

  Python's ``json.dump`` writes them by default, so a report rewritten by hand
  may hold them; its digest (strict JSON, `_digest`) could not be computed.
  """
  raise errors.InputError(f"{name} is not a number of strict JSON, which a report writes as "
                          "null")


def from_json(text: str, path: str = "the result"):
  """Reads `to_json` output back, without its digest.

  Args:
    text: the JSON text.
    path: the file it was read from, named in the errors.

  Raises:
    InputError: another format, no digest, or content that differs from its
      digest.
  """
  try:
    result = json.loads(text, parse_constant=_refuse_constant)
  except ValueError as e:
    raise errors.InputError(f"{path} is not valid JSON ({e}).") from None
  if not isinstance(result, dict) or result.get("format") != FORMAT:
    raise errors.InputError(f"{path} is not a λ-grid result of format {FORMAT!r}.")
  stored = result.pop(DIGEST, None)
  # Without it, deleting the key would switch the check off.
  if stored is None:
    raise errors.InputError(f"{path} holds no digest of its content ({DIGEST}): it was edited, "
                            "or written before reports recorded one; write it anew with "
                            "experiments/evaluate.py (hyperrecon_jax.report.run).")
  if stored != _digest(result):
    raise errors.InputError(f"{path}: its content differs from the digest it was written "
                            f"with ({DIGEST}): it was edited or damaged since.")
  return result
