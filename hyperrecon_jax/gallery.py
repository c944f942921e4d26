"""The k most different good reconstructions, and the best λ of each metric.

A generalisation of the paper's Fig. 7 pair (`evaluate.diverse_pair`) to any
number of images: among the reconstructions within ``tolerance_db`` of the
best PSNR, `diverse` picks k by greedy farthest-point sampling in image
space, so a person sweeping λ sees the range of good answers rather than k
near-copies of the best one. `per_metric_best` gives the λ each metric
prefers.
"""

from collections.abc import Mapping
from collections.abc import Set
import dataclasses
import math

import numpy as np

from hyperrecon_jax import errors

# Candidate rows per distance computation: bounds the float64 temporary to
# about 256 images of the given size, whatever N is.
_ROWS = 256


@dataclasses.dataclass(frozen=True)
class Gallery:
  """A set of good and mutually different reconstructions.

  Attributes:
    indices: indices into the N reconstructions, in pick order; the first is
      the best PSNR.
    min_distance: for each pick, ``min_{j earlier} ||recons[i] − recons[j]||``
      (ℓ2 over all pixels), the distance to the nearest earlier pick; NaN for
      the first pick, which has no earlier one (0.0 would read as a duplicate
      image). Non-increasing after the first, by the greedy rule.
    threshold: the PSNR a reconstruction needed to be a candidate,
      ``max PSNR − tolerance_db``.
    num_candidates: how many reconstructions reached ``threshold``.
  """
  indices: tuple[int, ...]
  min_distance: tuple[float, ...]
  threshold: float
  num_candidates: int


def _squared_distances(x: np.ndarray, row: np.ndarray) -> np.ndarray:
  """``||x_i − row||²`` for every row of (C, P) ``x``, in float64, a block of rows at a time.

  Differences, not the Gram form ``|x|² + |row|² − 2 x·row``, which loses the
  small distances between near-identical images to cancellation.
  """
  out = np.empty(len(x))
  row = row.astype(np.float64)
  for start in range(0, len(x), _ROWS):
    d = x[start:start + _ROWS].astype(np.float64) - row
    out[start:start + _ROWS] = np.einsum("ij,ij->i", d, d)
  return out


def diverse(recons, psnrs, k: int, *, tolerance_db: float = 1.0) -> Gallery:
  """Up to k good reconstructions, each as far from the ones before it as possible.

  Candidates are the reconstructions with ``psnr >= max(psnrs) − tolerance_db``
  (NaN PSNRs excluded). Greedy farthest-point sampling then starts from the
  best PSNR and repeatedly adds the candidate not yet picked whose distance to
  its nearest pick, ``min_j ||recons[i] − recons[j]||`` (ℓ2 over all pixels),
  is largest; ties go to the lower index. Each pick costs one row of
  distances, O(N · pixels), and no N × N matrix is formed.

  Args:
    recons: (N, ...) reconstructions at N λ (any trailing image shape).
    psnrs: (N,) their PSNR in dB.
    k: the most images to return, >= 1.
    tolerance_db: how far below the best PSNR a candidate may be, >= 0.

  Returns:
    A `Gallery` of ``min(k, number of candidates)`` distinct indices. An
    image identical to an earlier pick is picked (with distance 0.0) only
    once every other candidate has been.

  Raises:
    InputError: bad shapes, all PSNRs NaN, ``k < 1``, a negative or
      non-finite tolerance, or a candidate with non-finite pixels.
  """
  recons, psnrs = np.asarray(recons), np.asarray(psnrs, np.float64)
  if recons.ndim < 2 or recons.shape[0] < 1:
    raise errors.InputError(f"recons must have shape (N, ...) with N >= 1 and at least one image "
                            f"axis, got shape {recons.shape}.")
  if psnrs.shape != (recons.shape[0],):
    raise errors.InputError(f"psnrs must have shape ({recons.shape[0]},) to match recons, got "
                            f"shape {psnrs.shape}.")
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise errors.InputError(f"k must be an integer >= 1, got {k!r}.")
  if not (math.isfinite(tolerance_db) and tolerance_db >= 0):
    raise errors.InputError(f"tolerance_db must be finite and >= 0, got {tolerance_db}.")
  if np.all(np.isnan(psnrs)):
    raise errors.InputError("psnrs are all NaN: no reconstruction to choose from.")
  best = int(np.nanargmax(psnrs))
  threshold = float(psnrs[best] - tolerance_db)
  candidates = np.flatnonzero(psnrs >= threshold)  # NaN compares False
  x = recons[candidates].reshape(candidates.size, -1)
  bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
  if bad.size:
    raise errors.InputError(f"recons[{int(candidates[bad[0]])}] holds non-finite values.")
  pick = int(np.searchsorted(candidates, best))
  picks, distances = [pick], [math.nan]
  nearest = _squared_distances(x, x[pick])
  nearest[pick] = -np.inf  # a picked row is never picked again
  while len(picks) < min(k, candidates.size):
    pick = int(np.argmax(nearest))
    picks.append(pick)
    distances.append(math.sqrt(nearest[pick]))
    nearest = np.minimum(nearest, _squared_distances(x, x[pick]))  # -inf of picks stays
    nearest[pick] = -np.inf
  return Gallery(indices=tuple(int(candidates[i]) for i in picks),
                 min_distance=tuple(distances), threshold=threshold,
                 num_candidates=int(candidates.size))


def per_metric_best(values: Mapping[str, np.ndarray], lower_is_better: Set[str]) -> dict[str, int]:
  """The index of the best λ for each metric, NaN ignored.

  Args:
    values: ``{metric: (N,) values at N λ}``, one N for all.
    lower_is_better: names of the metrics to minimize (others are maximized);
      names not in ``values`` are ignored, so `results.LOWER_IS_BETTER` works.

  Returns:
    ``{metric: index}``; ties go to the lower index.

  Raises:
    InputError: a value that is not 1-D, different N, or a metric that is
      empty or NaN at every λ.
  """
  best, n = {}, None
  for name, v in values.items():
    v = np.asarray(v, np.float64)
    if v.ndim != 1 or (n is not None and v.shape[0] != n):
      want = "(N,)" if n is None else f"({n},) like the metrics before it"
      raise errors.InputError(f"values[{name!r}] must have shape {want}, got shape {v.shape}.")
    n = v.shape[0]
    if np.all(np.isnan(v)):
      raise errors.InputError(f"values[{name!r}] has no value that is not NaN: it has no best.")
    best[name] = int(np.nanargmin(v) if name in lower_is_better else np.nanargmax(v))
  return best
