"""Hyperparameters λ ∈ [0, 1]^(K−1) and the K loss coefficients they stand for.

The hypernetwork's input is the coefficient vector, not λ (as in the reference).

* K = 2 (paper Eq. 9): ``L = (1 − λ)·L1 + λ·L2``, so λ weights the *second* term.
* K = 3 (paper Eq. 10): ``L = λ1·L1 + (1 − λ1)·λ2·L2 + (1 − λ1)·(1 − λ2)·L3``.
* K ≥ 3 in general (stick-breaking, extends Eq. 10):
  ``c_k = λ_k · Π_{j<k} (1 − λ_j)`` for k < K and ``c_K = Π_{j<K} (1 − λ_j)``.

Note that Eq. 9 is *not* the K = 2 case of the stick-breaking form (that would be
``(λ, 1 − λ)``); both follow the paper. Every form gives non-negative
coefficients summing to 1, i.e. a point of the simplex Δ^(K−1);
`lambdas_from_coefficients` goes back.

Training draws λ (`sample`) on the cube or, through the inverse map, on the
simplex ('dirichlet', 'faces'). Evaluation uses a `grid` for K ≤ 3 and a design
on the simplex beyond (`simplex_design`, `das_dennis`). Command lines give λ
(`parse_lambdas`) or coefficients (`parse_coefficients`).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors

SAMPLERS = ("uniform", "endpoints", "log_uniform", "dirichlet", "faces")

# How far a row of coefficients may sum from 1. Decimals a person types are not
# exact in binary, and ones typed to four places (0.3333:0.3333:0.3333, sum
# 0.9999) are off by up to 1e-4; float32 roundoff (~K·6e-8) is far smaller.
# A genuine mistake (0.3:0.3:0.3) is far larger.
SUM_TOLERANCE = 1e-4


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_lambda(lam, name: str = "lam"):
  """Raises ``ValueError`` if ``lam`` is not (B, K−1) with values in [0, 1].

  The range check runs only on concrete values (outside ``jit``), so it costs
  nothing in compiled code.
  """
  shape = getattr(lam, "shape", None)
  if shape is None or len(shape) != 2 or shape[1] < 1:
    raise errors.InputError(f"{name} must have shape (B, K-1) with K-1 ≥ 1, got shape "
                            f"{shape}")
  if _is_concrete(lam):
    values = np.asarray(lam)
    if values.size and (not np.all(np.isfinite(values)) or values.min() < 0
                        or values.max() > 1):
      raise errors.InputError(f"{name} must lie in [0, 1], got values in "
                              f"[{values.min():.4g}, {values.max():.4g}]")


def check_coefficients(coeffs, name: str = "coeffs"):
  """Raises ``InputError`` unless ``coeffs`` is (B, K), K ≥ 2, rows on the simplex.

  A row is on the simplex when its entries are finite, ``c_k ≥ 0`` and
  ``|Σ_k c_k − 1| ≤ 1e-4`` (`SUM_TOLERANCE`: loose enough for coefficients
  typed as decimals, e.g. 0.33:0.33:0.34 or 0.3333:0.3333:0.3333). For a
  floating-point array the tolerance grows by ``K·eps`` of its dtype, the
  rounding of K such decimals to it. As `check_lambda`, the value checks run
  only on concrete values (outside ``jit``).

  Args:
    coeffs: (B, K) coefficients.
    name: what to call them in the message.

  Raises:
    InputError: naming the shape, or the first bad row and its values or sum.
  """
  shape = getattr(coeffs, "shape", None)
  if shape is None or len(shape) != 2 or shape[1] < 2:
    raise errors.InputError(f"{name} must have shape (B, K) with K ≥ 2, got shape {shape}")
  if not _is_concrete(coeffs):
    return
  values = np.asarray(coeffs)
  if not values.size:
    return
  finite = np.isfinite(values).all(axis=1)
  if not finite.all():
    row = int(np.flatnonzero(~finite)[0])
    raise errors.InputError(f"{name} must be finite, row {row} is {values[row].tolist()}")
  negative = (values < 0).any(axis=1)
  if negative.any():
    row = int(np.flatnonzero(negative)[0])
    raise errors.InputError(f"{name} must be ≥ 0, row {row} is {values[row].tolist()}")
  dtype = values.dtype
  eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else 0.0
  sums = values.astype(np.float64).sum(axis=1)
  off = np.abs(sums - 1.0) > SUM_TOLERANCE + shape[1] * eps
  if off.any():
    row = int(np.flatnonzero(off)[0])
    raise errors.InputError(f"{name} rows must sum to 1 (within {SUM_TOLERANCE:g}), row {row} "
                            f"sums to {sums[row]:.6g}")


def coefficients(lam):
  """Maps hyperparameters to loss coefficients (Eq. 9, Eq. 10, stick-breaking).

  Args:
    lam: (B, K−1) hyperparameters in [0, 1].

  Returns:
    (B, K) float32 coefficients, non-negative, each row summing to 1.
  """
  lam = jnp.asarray(lam, jnp.float32) if _is_concrete(lam) else lam
  check_lambda(lam)
  if lam.shape[1] == 1:
    return jnp.concatenate([1.0 - lam, lam], axis=1)
  remaining = jnp.cumprod(1.0 - lam, axis=1)  # Π_{j≤k} (1 − λ_j)
  before = jnp.concatenate([jnp.ones_like(lam[:, :1]), remaining[:, :-1]],
                           axis=1)
  return jnp.concatenate([lam * before, remaining[:, -1:]], axis=1)


def lambdas_from_coefficients(coeffs):
  """Maps loss coefficients back to hyperparameters: the inverse of `coefficients`.

  * K = 2 (Eq. 9): ``λ = c_2``.
  * K ≥ 3 (stick-breaking): ``λ_k = c_k / r_k`` for k < K, with the mass left
    for terms k…K ``r_k = 1 − Σ_{j<k} c_j``. It is computed as the tail sum
    ``Σ_{j≥k} c_j``: equal on the simplex, but without the cancellation of
    ``1 − Σ``, so a small ``r_k`` keeps its relative precision and an empty
    tail is exactly 0. Where ``r_k = 0`` (the point lies on a face where
    terms k…K are all 0), every λ_k gives the same coefficients; this returns
    ``λ_k = 0``. The tail-sum form also divides out a row sum that is off 1 by
    roundoff.

  Then ``coefficients(lambdas_from_coefficients(c)) == c`` and, for λ in
  (0, 1)^(K−1), ``lambdas_from_coefficients(coefficients(λ)) == λ``, both to
  float32 roundoff: with u = 2⁻²⁴, within ``K(K + 2)·u`` absolutely and
  ``3(K + 1)·u`` relatively (derived in tests/test_hparams.py). Works on
  concrete arrays (checked with `check_coefficients`) and under ``jit``.

  Args:
    coeffs: (B, K) coefficients on the simplex, K ≥ 2.

  Returns:
    (B, K−1) float32 hyperparameters, clipped to [0, 1].
  """
  coeffs = jnp.asarray(coeffs, jnp.float32)
  check_coefficients(coeffs)
  return _lambdas_from_coefficients(coeffs)


@jax.jit  # one compiled call instead of a dispatch per operation outside jit
def _lambdas_from_coefficients(coeffs):
  # Tiny negative roundoff from a caller's arithmetic (only possible under jit,
  # where nothing is checked) must not turn into a negative λ.
  c = jnp.maximum(coeffs, 0.0)
  if c.shape[1] == 2:
    lam = c[:, 1:]
  else:
    tail = jnp.cumsum(c[:, ::-1], axis=1)[:, ::-1][:, :-1]  # r_k = Σ_{j≥k} c_j, k < K
    empty = tail <= 0.0
    lam = jnp.where(empty, 0.0, c[:, :-1] / jnp.where(empty, 1.0, tail))
  return jnp.clip(lam, 0.0, 1.0)


def _check_prob(value, name: str):
  if _is_concrete(value) and not 0.0 <= value <= 1.0:
    raise errors.InputError(f"{name} must be in [0, 1], got {value}")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _faces(key, batch: int, num_coeffs: int, prob, alpha):
  """(B, K) coefficients of the 'faces' sampler (see `sample`)."""
  k_face, k_dim, k_perm, k_gamma = jax.random.split(key, 4)
  on_face = jax.random.bernoulli(k_face, prob, (batch, 1))
  dim = jax.random.randint(k_dim, (batch, 1), 0, num_coeffs - 1)  # m ∈ {0, …, K−2}
  # The ranks of i.i.d. uniforms are a uniformly random permutation, so the
  # terms of rank ≤ m are a uniformly random subset of m + 1 terms.
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_perm, (batch, num_coeffs)), axis=1),
                     axis=1)
  keep = jnp.logical_or(~on_face, rank <= dim)
  # Gamma(α) draws normalized over the kept terms are Dirichlet(α) on that
  # face; in log space (softmax) so that small α neither underflows nor
  # divides by zero, and dropped terms (−inf) come out exactly 0.
  log_g = jax.random.loggamma(k_gamma, jnp.full((batch, num_coeffs), alpha, jnp.float32))
  return jax.nn.softmax(jnp.where(keep, log_g, -jnp.inf), axis=1)


def sample(key, batch: int, num_lambdas: int, method: str = "uniform", *,
           endpoint_prob: float = 0.1, log_min: float = 1e-3, alpha: float = 1.0):
  """Draws one λ vector per batch element.

  On the cube:

  * ``'uniform'``: U[0, 1]^(K−1) (the paper's UHS). For K ≥ 3 this is *not*
    uniform on the simplex: stick-breaking of uniform λ piles mass on the
    first terms (``E[c_k] = 2^−k`` for k < K, e.g. E[c_1] = 1/2 whatever K).
  * ``'endpoints'``: uniform, but each coordinate is replaced by exactly 0 or
    1 (equally likely) with probability ``endpoint_prob`` so the extremes of
    the λ range are trained as often as a fixed-λ baseline would be.
  * ``'log_uniform'``: log10 λ uniform on [log10 ``log_min``, 0], for terms
    whose useful weights span orders of magnitude.

  On the simplex (the coefficients are drawn, then returned as λ through
  `lambdas_from_coefficients`, so the rest of the code still speaks λ):

  * ``'dirichlet'``: ``c ~ Dirichlet(α·1_K)``. α = 1 is uniform on the
    simplex; α < 1 moves mass toward the vertices and edges (Pareto
    HyperNetworks train with α = 0.2), α > 1 toward the centre
    ``(1/K, …, 1/K)``. Each ``c_k`` has mean 1/K and variance
    ``(K − 1) / (K²·(Kα + 1))``.
  * ``'faces'``: with probability ``endpoint_prob`` a row lies on a random
    proper face of the simplex: a face dimension m uniform in {0, …, K−2}
    (m = 0 a vertex, i.e. one loss term alone; m = 1 an edge; …), a uniformly
    random subset of m + 1 terms, and Dirichlet(α) on those terms with zeros
    elsewhere; otherwise Dirichlet(α) on the whole simplex. The boundary, where
    some terms are off, is thus trained as deliberately as 'endpoints' trains
    λ ∈ {0, 1}; for K = 2 (and α = 1) it *is* 'endpoints' (the vertices are
    λ = 0 and λ = 1). A row is on a vertex with probability
    ``endpoint_prob / (K − 1)``.

  Args:
    key: a JAX PRNG key.
    batch: B.
    num_lambdas: K − 1 (≥ 1 for the simplex samplers).
    method: one of `SAMPLERS`, as above.
    endpoint_prob: probability of an endpoint, for ``'endpoints'``, or of a
      proper face, for ``'faces'`` (a scalar, which may be traced: an annealed
      schedule).
    log_min: smallest λ, for ``'log_uniform'``.
    alpha: the symmetric Dirichlet concentration α > 0, for ``'dirichlet'``
      and ``'faces'`` (a scalar, which may be traced).

  Returns:
    (B, K−1) float32 hyperparameters in [0, 1].
  """
  shape = (batch, num_lambdas)
  if method == "uniform":
    return jax.random.uniform(key, shape)
  if method == "endpoints":
    _check_prob(endpoint_prob, "endpoint_prob")
    k_u, k_pick, k_end = jax.random.split(key, 3)
    lam = jax.random.uniform(k_u, shape)
    pick = jax.random.bernoulli(k_pick, endpoint_prob, shape)
    ends = jax.random.bernoulli(k_end, 0.5, shape).astype(jnp.float32)
    return jnp.where(pick, ends, lam)
  if method == "log_uniform":
    if not 0.0 < log_min < 1.0:
      raise errors.InputError(f"log_min must be in (0, 1), got {log_min}")
    u = jax.random.uniform(key, shape, minval=np.log10(log_min), maxval=0.0)
    return 10.0 ** u
  if method in ("dirichlet", "faces"):
    if num_lambdas < 1:
      raise errors.InputError(f"the {method!r} sampler needs num_lambdas ≥ 1 (K ≥ 2 loss "
                              f"terms), got {num_lambdas}")
    if np.ndim(alpha) != 0 or (_is_concrete(alpha) and not alpha > 0):
      raise errors.InputError(f"alpha must be a scalar > 0, got {alpha}")
    num_coeffs = num_lambdas + 1
    if method == "dirichlet":
      coeffs = jax.random.dirichlet(key, jnp.full((num_coeffs,), alpha, jnp.float32), (batch,))
    else:
      _check_prob(endpoint_prob, "endpoint_prob")
      coeffs = _faces(key, batch, num_coeffs, endpoint_prob, alpha)
    return lambdas_from_coefficients(coeffs)
  raise errors.InputError(f"method must be one of {SAMPLERS}, got {method!r}")


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
  """
  if num < 2:
    raise errors.InputError(f"grid needs at least 2 points, got {num}")
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


def _check_num_coeffs(num_coeffs):
  if isinstance(num_coeffs, bool) or not isinstance(num_coeffs, (int, np.integer)) \
      or num_coeffs < 2:
    raise errors.InputError(f"num_coeffs must be an integer ≥ 2, got {num_coeffs!r}")


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
  _check_num_coeffs(num_coeffs)
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
  _check_num_coeffs(num_coeffs)
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


def _example(count: int) -> str:
  letters = "abcdefghijklmnopqrstuvwxyz"
  return ":".join(letters[:count]) if count <= len(letters) else f"v1:v2:…:v{count}"


def parse_lambdas(text: str, num_lambdas: int, *, flag: str = "--lam") -> np.ndarray:
  """A command line's list of λ values as a (L, num_lambdas) float32 array.

  ``0.3``; ``0,0.5,1`` (L values); ``grid:N`` (`grid`, up to two
  hyperparameters); ``samples:N`` (the λ of `simplex_design`\\ (N, K), any K,
  N ≥ K); for K − 1 ≥ 2 hyperparameters ``a:b`` pairs, ``a:b:c`` triples, …,
  e.g. ``0.2:0.4,1:0``. The values are not range-checked here (the caller
  knows what it accepts).

  Args:
    text: the flag's value.
    num_lambdas: the model's number of hyperparameters.
    flag: the flag's name, for the messages.

  Raises:
    InputError: naming the bad item: not a number, the wrong count of values,
      or a bad ``grid:N`` or ``samples:N``.
  """
  text = str(text).strip()
  if text.startswith("grid:"):
    try:
      n = int(text[5:])
    except ValueError:
      raise errors.InputError(f"{flag}={text}: grid:N needs an integer N") from None
    if n < 2:
      raise errors.InputError(f"{flag}={text}: N must be ≥ 2 (0 and 1 at least)")
    try:
      return grid(n, num_lambdas)
    except errors.InputError as e:
      raise errors.InputError(f"{flag}={text}: {e}") from None
  if text.startswith("samples:"):
    try:
      n = int(text[8:])
    except ValueError:
      raise errors.InputError(f"{flag}={text}: samples:N needs an integer N") from None
    try:
      design = simplex_design(n, num_lambdas + 1)
    except errors.InputError as e:
      raise errors.InputError(f"{flag}={text}: {e}") from None
    return np.asarray(lambdas_from_coefficients(design), np.float32)
  rows = []
  for item in text.split(","):
    try:
      lam = [float(v) for v in item.split(":")]
    except ValueError:
      raise errors.InputError(f"{flag}={text}: {item!r} is not a number") from None
    if len(lam) != num_lambdas:
      how = ("one value per item" if num_lambdas == 1
             else f"write {num_lambdas} values as {_example(num_lambdas)}")
      raise errors.InputError(
          f"{flag}={text}: {item!r} has {len(lam)} values, the model's loss has "
          f"{num_lambdas} hyperparameter(s) ({how})")
    rows.append(lam)
  return np.asarray(rows, np.float32)


def parse_coefficients(text: str, num_coeffs: int, *, flag: str = "--coeffs") -> np.ndarray:
  """A command line's list of coefficient vectors as a (L, K) float32 array.

  Comma-separated vectors ``c1:c2:…:cK`` of non-negative numbers summing to 1
  (within `SUM_TOLERANCE`), e.g. ``1:0:0,0.33:0.33:0.34`` for K = 3.

  Args:
    text: the flag's value.
    num_coeffs: the model's number of loss terms K ≥ 2.
    flag: the flag's name, for the messages.

  Returns:
    (L, K) float32 coefficients, checked with `check_coefficients`.

  Raises:
    InputError: naming the bad item: not a number, the wrong count of values,
      a negative value, or a sum other than 1 (with the sum).
  """
  _check_num_coeffs(num_coeffs)
  text = str(text).strip()
  rows = []
  for item in text.split(","):
    try:
      c = [float(v) for v in item.split(":")]
    except ValueError:
      raise errors.InputError(f"{flag}={text}: {item!r} is not a number") from None
    if not all(math.isfinite(v) for v in c):
      raise errors.InputError(f"{flag}={text}: {item!r} is not a finite number")
    if len(c) != num_coeffs:
      raise errors.InputError(
          f"{flag}={text}: {item!r} has {len(c)} values, the model's loss has {num_coeffs} "
          f"terms (write {num_coeffs} coefficients as {_example(num_coeffs)})")
    if min(c) < 0:
      raise errors.InputError(f"{flag}={text}: {item!r} has a negative coefficient "
                              f"({min(c):g}); coefficients are ≥ 0")
    total = math.fsum(c)
    if abs(total - 1.0) > SUM_TOLERANCE:
      raise errors.InputError(f"{flag}={text}: {item!r} sums to {total:.6g}; coefficients "
                              f"must sum to 1 (within {SUM_TOLERANCE:g})")
    rows.append(c)
  coeffs = np.asarray(rows, np.float64)
  check_coefficients(coeffs, name=flag)
  return coeffs.astype(np.float32)
