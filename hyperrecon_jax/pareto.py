"""Pareto analysis of K loss terms: the non-dominated set and its hypervolume.

Every objective is minimized (loss terms, or metrics negated where higher is
better). A point ``b`` dominates ``a`` iff ``b_k <= a_k`` for every objective
``k`` and ``b_k < a_k`` for at least one. The hypervolume of a set ``P`` with
respect to a reference point ``r`` is the Lebesgue measure of the part of
objective space that the set dominates and ``r`` bounds,
``HV(P, r) = vol(∪_{p in P} [p_1, r_1] × ... × [p_K, r_K])``; the larger,
the better the set covers the trade-offs.

Convention of the project: hypervolumes are reported on normalized
objectives. HyperRecon's values and the per-λ baselines' values are mapped
to one common scale with `bounds` and `normalize` (the range of each
objective over the finite rows of both sets becomes [0, 1]), and the
reference point is `REFERENCE` = 1.1 in every coordinate, not 1.0, so that
the extreme points of the common range (a normalized value of 1 in some
objective) still contribute a box of width 0.1 there. `hypervolume_ratio`
does all of this in one call.

Host-side NumPy throughout: the sets are small (a λ design of at most some
thousands of points) and the algorithms are branchy.
"""

import bisect
import math

import numpy as np

from hyperrecon_jax import errors

REFERENCE = 1.1

# Rows of the block in `_first_of_front`: a block is compared with the front
# found so far as a (front, block) boolean array, a few MB at most.
_BLOCK = 256


def _check_points(points, name: str = "points") -> np.ndarray:
  """``points`` as an (N, K) float64 array with K >= 1, or an InputError."""
  p = np.asarray(points, np.float64)
  if p.ndim != 2 or p.shape[1] < 1:
    raise errors.InputError(f"{name} must have shape (N, K) with K >= 1 objectives, got shape "
                            f"{p.shape}.")
  return p


def _non_dominated_distinct(u: np.ndarray) -> np.ndarray:
  """Non-dominated mask of lexicographically sorted, pairwise distinct rows.

  With rows sorted lexicographically (first objective first) and distinct, a
  dominator of a row always comes before it, and every earlier row is <= in
  the first objective; so a row is dominated iff some earlier row is <= in
  objectives 2..K. Rows are filtered in blocks against the front found so far
  (dominance is transitive, so dominated rows need not be kept as dominators),
  which is O(N · F · K) for a front of F rows, vectorized.

  Args:
    u: (M, K) rows, sorted lexicographically and pairwise distinct.

  Returns:
    (M,) bool, True where no other row dominates.
  """
  m, k = u.shape
  keep = np.zeros(m, bool)
  if m == 0:
    return keep
  if k == 1:
    keep[0] = True  # distinct and sorted: only the minimum is undominated
    return keep
  if k == 2:
    # A row survives iff its second objective is below that of every earlier row
    # (the first always does, even at +inf).
    keep[0] = True
    keep[1:] = u[1:, 1] < np.minimum.accumulate(u[:-1, 1])
    return keep
  rest = u[:, 1:]
  front = np.empty((0, k - 1))
  for start in range(0, m, _BLOCK):
    block = rest[start:start + _BLOCK]
    b = len(block)
    # within[j, i]: block row j <= block row i in objectives 2..K; only j < i counts.
    within = np.ones((b, b), bool)
    beaten = np.ones((len(front), b), bool)
    for c in range(k - 1):
      within &= block[:, None, c] <= block[None, :, c]
      beaten &= front[:, None, c] <= block[None, :, c]
    dominated = np.triu(within, 1).any(axis=0) | beaten.any(axis=0)
    keep[start:start + b] = ~dominated
    front = np.concatenate([front, block[~dominated]])
  return keep


def _front(p: np.ndarray) -> np.ndarray:
  """The distinct non-dominated rows of NaN-free ``p``, sorted lexicographically."""
  if len(p) <= 1:
    return p
  u = p[np.lexsort(p.T[::-1])]
  u = u[np.concatenate(([True], np.any(u[1:] != u[:-1], axis=1)))]
  return u[_non_dominated_distinct(u)]


def non_dominated(points) -> np.ndarray:
  """Which points no other point dominates (all objectives minimized).

  ``b`` dominates ``a`` iff ``b_k <= a_k`` for every k and ``b_k < a_k`` for
  some k. Rows holding a NaN are never on the front and never dominate;
  identical rows do not dominate each other, so duplicates of a front point
  are all kept. Infinities compare as numbers.

  Rows are sorted lexicographically, duplicates collapsed, and each distinct
  row tested against the front of the rows before it, a block at a time:
  O(N log N + N · F · K) for a front of F rows.

  Args:
    points: (N, K) objective values.

  Returns:
    (N,) bool, True for the non-dominated rows.

  Raises:
    InputError: ``points`` is not (N, K) with K >= 1.
  """
  p = _check_points(points)
  result = np.zeros(len(p), bool)
  rows = np.flatnonzero(~np.isnan(p).any(axis=1))
  if rows.size == 0:
    return result
  q = p[rows]
  order = np.lexsort(q.T[::-1])
  s = q[order]
  first = np.concatenate(([True], np.any(s[1:] != s[:-1], axis=1)))
  group = np.cumsum(first) - 1  # the distinct row each sorted row equals
  keep = _non_dominated_distinct(s[first])[group]
  result[rows[order[keep]]] = True
  return result


def _hv2(p: np.ndarray, ref: np.ndarray) -> float:
  """2-D hypervolume of rows strictly inside ``ref``: one sort and a staircase sum."""
  p = p[np.lexsort((p[:, 1], p[:, 0]))]
  p = p[_non_dominated_distinct(p)]  # the staircase: x increasing, y decreasing
  widths = np.diff(np.append(p[:, 0], ref[0]))
  return float(np.sum(widths * (ref[1] - p[:, 1])))


def _hv3(p: np.ndarray, ref: np.ndarray) -> float:
  """3-D hypervolume of rows strictly inside ``ref`` by a sweep along the third objective.

  Points enter in increasing z; the region the entered points dominate in
  (x, y) is a staircase kept in two sorted lists with its area updated by
  the part each new point adds, and every slab between consecutive z values
  adds ``area × thickness``. O(N log N) searches plus list edits whose total
  is O(N) removals (Beume et al. 2009's dimension sweep, lists for the tree).
  """
  p = p[np.lexsort((p[:, 1], p[:, 0], p[:, 2]))]
  rx, ry, rz = (float(v) for v in ref)
  # Sentinels bound the staircase: every point lies right of the first and left
  # of the last, so the searches below never run off either end.
  xs, ys = [-math.inf, rx], [ry, -math.inf]
  area = volume = 0.0
  z_prev = float(p[0, 2])
  for x, y, z in p.tolist():
    volume += area * (z - z_prev)
    z_prev = z
    if ys[bisect.bisect_right(xs, x) - 1] <= y:
      continue  # weakly dominated in (x, y) by a point with no larger z
    lo = hi = bisect.bisect_left(xs, x)
    # Walk the steps that the new point covers, summing the uncovered area
    # above each: step i spans [xs[i], xs[i + 1]) at height ys[i].
    left, height, gain = x, ys[lo - 1], 0.0
    while ys[hi] >= y:
      gain += (xs[hi] - left) * (height - y)
      left, height = xs[hi], ys[hi]
      hi += 1
    area += gain + (xs[hi] - left) * (height - y)
    xs[lo:hi] = [x]
    ys[lo:hi] = [y]
  return volume + area * (rz - z_prev)


def _wfg(p: np.ndarray, ref: np.ndarray) -> float:
  """Hypervolume of distinct non-dominated rows strictly inside ``ref``, by WFG.

  WFG (While, Bradstreet and Barone 2012): the volume is the sum of each
  point's exclusive volume relative to the points after it,
  ``HV(P) = Σ_i [vol(box(p_i)) − HV(limit_i)]`` with
  ``limit_i = {max(p_i, p_j) : j > i}`` (the part of ``p_i``'s box the later
  points already cover), each limited set cut to its non-dominated rows
  before the recursion. Sorting by the last objective, largest first, makes
  every later point <= ``p_i`` there, so a limited set is flat in it and the
  recursion drops one objective: ``vol = (r_K − p_iK) × (K−1)-D volume``.
  Two and three objectives end in `_hv2` and `_hv3`.
  """
  n, k = p.shape
  if n == 0:
    return 0.0
  if k == 1:
    return float(ref[0] - p[:, 0].min())
  if k == 2:
    return _hv2(p, ref)
  if k == 3:
    return _hv3(p, ref)
  p = p[np.lexsort(p.T)[::-1]]  # last objective decreasing (ties: a fixed order)
  head, head_ref = p[:, :-1], ref[:-1]
  depth = ref[-1] - p[:, -1]
  box = np.prod(head_ref - head, axis=1)
  total = 0.0
  for i in range(n):
    covered = 0.0
    if i + 1 < n:
      covered = _wfg(_front(np.maximum(head[i + 1:], head[i])), head_ref)
    total += depth[i] * (box[i] - covered)
  return float(total)


def _check_reference(reference, k: int) -> np.ndarray:
  ref = np.asarray(reference, np.float64)
  if ref.ndim == 0:
    ref = np.full(k, float(ref))
  if ref.shape != (k,):
    raise errors.InputError(f"reference must be a number or have shape ({k},) to match the "
                            f"{k} objectives of points, got shape {ref.shape}.")
  if not np.all(np.isfinite(ref)):
    raise errors.InputError(f"reference must be finite, got {ref.tolist()}.")
  return ref


def hypervolume(points, reference) -> float:
  """The exact hypervolume that ``points`` dominate, bounded by ``reference``.

  ``HV(P, r) = vol(∪_{p in P} [p_1, r_1] × ... × [p_K, r_K])``, all
  objectives minimized. Only points strictly better than ``r`` in every
  objective contribute (the others have an empty box), as do only
  non-dominated ones; rows with a NaN are ignored.

  Algorithm: the rows are cut to the distinct non-dominated ones
  (`non_dominated`), then K = 1 is ``r − min``, K = 2 a sort and a staircase
  sum (O(N log N)), K = 3 a dimension sweep (O(N log N)), and K >= 4 the WFG
  algorithm (exclusive volumes of limited sets, one objective fewer per
  level) down to the 3-D sweep.

  Args:
    points: (N, K) objective values.
    reference: the reference point, (K,) or one number for every objective.

  Returns:
    The hypervolume (0.0 when no point is strictly better than ``reference``).

  Raises:
    InputError: bad shapes, a non-finite reference, or a contributing point
      with a -inf objective (its volume is unbounded).
  """
  p = _check_points(points)
  ref = _check_reference(reference, p.shape[1])
  p = p[~np.isnan(p).any(axis=1)]
  p = p[np.all(p < ref, axis=1)]
  if np.isinf(p).any():
    rows = np.flatnonzero(np.isinf(p).any(axis=1))
    raise errors.InputError(f"points hold -inf (e.g. {p[rows[0]].tolist()}): the hypervolume "
                            "is unbounded.")
  return _wfg(_front(p), ref)


def _check_bound(value, name: str, k: int) -> np.ndarray:
  b = np.asarray(value, np.float64)
  if b.shape != (k,):
    raise errors.InputError(f"{name} must have shape ({k},) to match the {k} objectives of "
                            f"points, got shape {b.shape}.")
  if not np.all(np.isfinite(b)):
    raise errors.InputError(f"{name} must be finite, got {b.tolist()}.")
  return b


def normalize(points, lower, upper) -> np.ndarray:
  """Objectives mapped to a common scale, ``(v_k − lower_k) / (upper_k − lower_k)``.

  Args:
    points: (N, K) objective values (NaN and infinities pass through).
    lower: (K,) the value of each objective that maps to 0.
    upper: (K,) the value that maps to 1, above ``lower``.

  Returns:
    (N, K) float64 normalized values.

  Raises:
    InputError: bad shapes, non-finite bounds, or ``upper_k <= lower_k``.
  """
  p = _check_points(points)
  k = p.shape[1]
  lo, hi = _check_bound(lower, "lower", k), _check_bound(upper, "upper", k)
  bad = np.flatnonzero(hi <= lo)
  if bad.size:
    c = int(bad[0])
    raise errors.InputError(f"upper must exceed lower in every objective; objective {c} has "
                            f"lower {lo[c]} and upper {hi[c]} (is it constant over the sets?).")
  return (p - lo) / (hi - lo)


def bounds(*point_sets) -> tuple[np.ndarray, np.ndarray]:
  """Per-objective minimum and maximum over the finite rows of all the sets.

  Args:
    *point_sets: one or more (N_i, K) arrays with the same K; rows holding a
      NaN or an infinity are left out.

  Returns:
    ``(lower, upper)``, each (K,) float64.

  Raises:
    InputError: no set, bad shapes, different K, or no finite row at all.
  """
  if not point_sets:
    raise errors.InputError("bounds needs at least one set of points.")
  sets = [_check_points(s, f"point set {i}") for i, s in enumerate(point_sets)]
  ks = {s.shape[1] for s in sets}
  if len(ks) > 1:
    raise errors.InputError(f"point sets must have the same number of objectives, got shapes "
                            f"{[s.shape for s in sets]}.")
  finite = np.concatenate([s[np.isfinite(s).all(axis=1)] for s in sets])
  if not len(finite):
    raise errors.InputError("the point sets hold no finite row to take bounds from.")
  return finite.min(axis=0), finite.max(axis=0)


def hypervolume_ratio(points, baseline_points) -> dict:
  """HyperRecon's hypervolume against the baselines', on their common normalized scale.

  Both sets are normalized with the `bounds` of the two together and measured
  against `REFERENCE` in every objective (the module's convention); the ratio
  is ``HV(hyperrecon) / HV(baselines)``, above 1 where HyperRecon's trade-offs
  cover more.

  Args:
    points: (N, K) HyperRecon's objective values (e.g. over a λ design).
    baseline_points: (M, K) the baselines' objective values.

  Returns:
    A JSON-friendly dict: ``hyperrecon`` and ``baselines`` (the two
    hypervolumes), ``ratio``, and ``lower``, ``upper``, ``reference`` (lists
    of K floats; ``lower`` and ``upper`` in the original units).

  Raises:
    InputError: bad shapes, different K, a set without a finite row, an
      objective that is constant over both sets, or a -inf value.
  """
  p = _check_points(points, "points")
  b = _check_points(baseline_points, "baseline_points")
  for name, s in (("points", p), ("baseline_points", b)):
    if not np.isfinite(s).all(axis=1).any():
      raise errors.InputError(f"{name} hold no finite row: the ratio is undefined.")
  lower, upper = bounds(p, b)
  ref = np.full(p.shape[1], REFERENCE)
  hv = hypervolume(normalize(p, lower, upper), ref)
  hv_b = hypervolume(normalize(b, lower, upper), ref)
  # hv_b >= (REFERENCE - 1)^K > 0: a finite baseline row lies in [0, 1]^K.
  return {"hyperrecon": hv, "baselines": hv_b, "ratio": hv / hv_b, "lower": lower.tolist(),
          "upper": upper.tolist(), "reference": ref.tolist()}
