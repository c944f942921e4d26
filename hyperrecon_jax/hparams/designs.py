"""Evaluation's λ sets: a grid for up to two hyperparameters, designs on the simplex for any K."""

import operator

import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.hparams.maps import check_num_coeffs


def grid(num: int, num_lambdas: int = 1):
  """A regular λ grid: ``num`` points on [0, 1], or a num×num lattice for two.

  Grids stop at two hyperparameters: num^(K−1) points soon outgrow any
  evaluation, so for K ≥ 4 use a design on the simplex (`simplex_design`).

  Args:
    num: points per hyperparameter (≥ 2).
    num_lambdas: 1 or 2.

  Returns:
    (num^num_lambdas, num_lambdas) float32; for two hyperparameters the
    second varies fastest.

  Raises:
    InputError: a ``num`` that is not an integer ≥ 2 (Python's, NumPy's or
      an integer array's scalar), or ``num_lambdas`` other than 1 or 2.
  """
  try:
    count = None if isinstance(num, (bool, np.bool_)) else operator.index(num)
  except TypeError:  # a float, a string, None: no integer to take
    count = None
  if count is None or count < 2:
    raise errors.InputError(f"grid needs an integer number of points ≥ 2, got {num!r}")
  num = count
  axis = np.linspace(0.0, 1.0, num, dtype=np.float32)
  if num_lambdas == 1:
    return axis[:, None]
  if num_lambdas == 2:
    a, b = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1)
  if num_lambdas >= 3:
    raise errors.InputError(
        f"grids stop at two hyperparameters, got {num_lambdas} ({num}^{num_lambdas} points); "
        f"use a design on the simplex instead: hparams.simplex_design(N, {num_lambdas + 1}), "
        f"or evaluate.py --config.eval.samples=N")
  raise errors.InputError(f"grid supports 1 or 2 hyperparameters, got {num_lambdas}")


def _compositions(total: int, parts: int):
  """All tuples of ``parts`` non-negative integers summing to ``total``, first entry falling."""
  if parts == 1:
    yield (total,)
    return
  for first in range(total, -1, -1):
    for rest in _compositions(total - first, parts - 1):
      yield (first, *rest)


def das_dennis(partitions: int, num_coeffs: int) -> np.ndarray:
  """The Das–Dennis design: every point of the simplex on a lattice of step 1/p.

  All ``c`` with entries in {0, 1/p, …, 1} and ``Σ_k c_k = 1``; there are
  ``C(p + K − 1, K − 1)`` of them (e.g. K = 4, p = 2: 10).

  Args:
    partitions: p ≥ 1.
    num_coeffs: K ≥ 2.

  Returns:
    (C(p + K − 1, K − 1), K) float32: the K vertices first (``e_1, …, e_K``),
    then the other points in falling lexicographic order of ``p·c``.
  """
  check_num_coeffs(num_coeffs)
  if isinstance(partitions, bool) or not isinstance(partitions, (int, np.integer)) \
      or partitions < 1:
    raise errors.InputError(f"partitions must be an integer ≥ 1, got {partitions!r}")
  p, k = int(partitions), int(num_coeffs)
  rest = [c for c in _compositions(p, k) if max(c) < p]
  points = np.concatenate([np.eye(k), np.asarray(rest, np.float64).reshape(-1, k) / p])
  return points.astype(np.float32)


def simplex_design(num: int, num_coeffs: int, *, seed: int = 0) -> np.ndarray:
  """A low-discrepancy design of ``num`` points on the simplex, vertices included.

  The K vertices (each loss term alone) come first, then ``num − K`` points of
  a scrambled Sobol sequence in [0, 1)^(K−1) mapped to the simplex by sorted
  spacings: with ``u_(1) ≤ … ≤ u_(K−1)`` the sorted coordinates, ``u_(0) = 0``
  and ``u_(K) = 1``, ``c_k = u_(K−k+1) − u_(K−k)``. This map sends the uniform
  distribution on the cube to the uniform one on the simplex; for K = 2 it is
  ``c = (1 − u, u)``, i.e. λ = u, the Sobol value itself.

  Args:
    num: number of points, ≥ K.
    num_coeffs: K ≥ 2.
    seed: the scrambling's seed; the design is deterministic for a seed.

  Returns:
    (num, K) float32 coefficients, rows summing to 1.
  """
  check_num_coeffs(num_coeffs)
  k = int(num_coeffs)
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < k:
    raise errors.InputError(f"simplex_design needs num ≥ num_coeffs (the {k} vertices come "
                            f"first), got num={num!r}, num_coeffs={k}")
  n = int(num) - k
  points = [np.eye(k)]
  if n:
    from scipy.stats import qmc  # here: scipy.stats is slow to import, only designs need it

    # The first n points of the sequence, drawn as the next power of two
    # because scipy warns about the balance of any other count.
    u = qmc.Sobol(d=k - 1, scramble=True, seed=seed).random_base2((n - 1).bit_length())[:n]
    edges = np.concatenate([np.zeros((n, 1)), np.sort(u, axis=1), np.ones((n, 1))], axis=1)
    points.append(np.diff(edges, axis=1)[:, ::-1])
  return np.concatenate(points).astype(np.float32)
