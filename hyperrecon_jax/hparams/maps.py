"""λ ↔ loss coefficients, and the one validator of each.

* K = 2 (paper Eq. 9): ``L = (1 − λ)·L1 + λ·L2``, so λ weights the *second* term.
* K = 3 (paper Eq. 10): ``L = λ1·L1 + (1 − λ1)·λ2·L2 + (1 − λ1)·(1 − λ2)·L3``.
* K ≥ 3 in general (stick-breaking, extends Eq. 10):
  ``c_k = λ_k · Π_{j<k} (1 − λ_j)`` for k < K and ``c_K = Π_{j<K} (1 − λ_j)``.

Note that Eq. 9 is *not* the K = 2 case of the stick-breaking form (that would be
``(λ, 1 − λ)``); both follow the paper. Every form gives non-negative
coefficients summing to 1, i.e. a point of the simplex Δ^(K−1);
`lambdas_from_coefficients` goes back.
"""

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors

# How far a row of coefficients may sum from 1. Decimals a person types are not
# exact in binary, and ones typed to four places (0.3333:0.3333:0.3333, sum
# 0.9999) are off by up to 1e-4; float32 roundoff (~K·6e-8) is far smaller.
# A genuine mistake (0.3:0.3:0.3) is far larger.
SUM_TOLERANCE = 1e-4


def is_concrete(x) -> bool:
  """Whether ``x`` has values here (not a tracer inside ``jit``)."""
  return not isinstance(x, jax.core.Tracer)


def as_array(values, name: str):
  """``values`` as they are if they have a shape (arrays, tracers), else as a NumPy array.

  Nested lists and tuples are then checked as the array they stand for.

  Args:
    values: an array, a tracer, or nested sequences of numbers.
    name: what to call them in the message.

  Raises:
    InputError: sequences of unequal lengths, which make no array.
  """
  if hasattr(values, "shape"):
    return values
  try:
    return np.asarray(values)
  except ValueError:
    raise errors.InputError(f"{name} must be an array of numbers, got rows of unequal "
                            f"lengths: {values!r}") from None


def check_lambda(lam, name: str = "lam"):
  """Raises ``ValueError`` if ``lam`` is not (B, K−1) with values in [0, 1].

  Lists are taken as the array they stand for. The range check runs only on
  concrete values (outside ``jit``), so it costs nothing in compiled code.
  """
  lam = as_array(lam, name)
  shape = getattr(lam, "shape", None)
  if shape is None or len(shape) != 2 or shape[1] < 1:
    raise errors.InputError(f"{name} must have shape (B, K-1) with K-1 ≥ 1, got shape "
                            f"{shape}")
  if is_concrete(lam):
    values = np.asarray(lam)
    if values.size and not np.all(np.isfinite(values)):
      raise errors.InputError(f"{name} must lie in [0, 1], got "
                              f"{np.count_nonzero(~np.isfinite(values))} value(s) that are "
                              "not finite numbers (NaN or ±inf)")
    if values.size and (values.min() < 0 or values.max() > 1):
      raise errors.InputError(f"{name} must lie in [0, 1], got values in "
                              f"[{values.min():.7g}, {values.max():.7g}]")


def check_coefficients(coeffs, name: str = "coeffs"):
  """Raises ``InputError`` unless ``coeffs`` is (B, K), K ≥ 2, rows on the simplex.

  A row is on the simplex when its entries are finite, ``c_k ≥ 0`` and
  ``|Σ_k c_k − 1| ≤ 1e-4`` (`SUM_TOLERANCE`: loose enough for coefficients
  typed as decimals, e.g. 0.33:0.33:0.34 or 0.3333:0.3333:0.3333). For a
  floating-point array the tolerance grows by ``K·eps`` of its dtype, the
  rounding of K such decimals to it. As `check_lambda`, the value checks run
  only on concrete values (outside ``jit``).

  Args:
    coeffs: (B, K) coefficients: an array, or nested lists taken as one.
    name: what to call them in the message.

  Raises:
    InputError: naming the shape, or the first bad row and its values or sum.
  """
  coeffs = as_array(coeffs, name)
  shape = getattr(coeffs, "shape", None)
  if shape is None or len(shape) != 2 or shape[1] < 2:
    raise errors.InputError(f"{name} must have shape (B, K) with K ≥ 2, got shape {shape}")
  if not is_concrete(coeffs):
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
  # jnp's, not NumPy's: NumPy does not count ml_dtypes' bfloat16 as floating.
  eps = float(jnp.finfo(dtype).eps) if jnp.issubdtype(dtype, jnp.floating) else 0.0
  with np.errstate(over="ignore"):  # finite values whose sum is past float64's range: inf
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
  lam = jnp.asarray(lam, jnp.float32) if is_concrete(lam) else lam
  check_lambda(lam)
  if lam.shape[1] == 1:
    return jnp.concatenate([1.0 - lam, lam], axis=1)
  remaining = jnp.cumprod(1.0 - lam, axis=1)  # Π_{j≤k} (1 − λ_j)
  before = jnp.concatenate([jnp.ones_like(lam[:, :1]), remaining[:, :-1]],
                           axis=1)
  return jnp.concatenate([lam * before, remaining[:, -1:]], axis=1)


def weighting(lam) -> tuple[float, ...]:
  """The part of one λ that decides its loss coefficients: up to its first λ_k = 1.

  With stick-breaking, c_k = λ_k·Π_{j<k}(1 − λ_j): once some λ_k = 1 the
  later coefficients are 0 whatever the later λ, and before it the map is
  one to one. So two λ weight the loss alike exactly when these parts are
  equal, e.g. (1, 0) and (1, 1) for three terms. NumPy only: the config
  checks use it before JAX may start (a multi-process run joins first).

  Args:
    lam: (K−1,) hyperparameters in [0, 1].

  Returns:
    The λ up to and including the first that is 1, as floats (−0.0 as 0.0).
  """
  values = [float(v) + 0.0 for v in np.asarray(lam, np.float64).reshape(-1)]
  ones = [k for k, v in enumerate(values) if v == 1.0]
  return tuple(values[:ones[0] + 1] if ones else values)


def distinct(lam) -> np.ndarray:
  """The rows of ``lam`` whose loss weighting no earlier row has (`weighting`).

  For K ≥ 3 the map from λ to coefficients is not one to one, so a λ grid
  holds copies of one loss, and of one reconstruction: a 5 × 5 grid of three
  terms has five λ that weight the first term alone.

  Args:
    lam: (N, K−1) hyperparameters in [0, 1].

  Returns:
    Increasing indices of the first row of each weighting.
  """
  first = {}
  for i, row in enumerate(np.asarray(lam)):
    first.setdefault(weighting(row), i)
  return np.asarray(sorted(first.values()), np.int64)


def lambdas_from_coefficients(coeffs):
  """Maps loss coefficients back to hyperparameters: the inverse of `coefficients`.

  * K = 2 (Eq. 9): ``λ = c_2``, computed as ``c_2 / (c_1 + c_2)``.
  * K ≥ 3 (stick-breaking): ``λ_k = c_k / r_k`` for k < K, with the mass left
    for terms k…K ``r_k = 1 − Σ_{j<k} c_j``. It is computed as the tail sum
    ``Σ_{j≥k} c_j``: equal on the simplex, but without the cancellation of
    ``1 − Σ``, so a small ``r_k`` keeps its relative precision and an empty
    tail is exactly 0. Where ``r_k = 0`` (the point lies on a face where
    terms k…K are all 0), every λ_k gives the same coefficients; this returns
    ``λ_k = 0``. Both forms divide out a row sum that is off 1 (by roundoff,
    or within `SUM_TOLERANCE` as a user typed it).

  Then ``coefficients(lambdas_from_coefficients(c)) == c`` and, for λ in
  (0, 1)^(K−1), ``lambdas_from_coefficients(coefficients(λ)) == λ``, both to
  float32 roundoff: with u = 2⁻²⁴, within ``K(K + 2)·u`` absolutely and
  ``3(K + 1)·u`` relatively (derived in tests/test_hparams.py), as long as
  the mass left ``Π_{j<k} (1 − λ_j)`` stays in float32's normal range: past
  it (six λ within 2⁻²⁴ of 1, say) the later coefficients are 0 and their λ
  come back as 0, as on a face. Works on
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
    # c_2 over the row's sum, so that a row off 1 keeps its ratio (0.49995,
    # 0.49995 is equal weights) as the tail sums of K ≥ 3 do.
    total = c[:, :1] + c[:, 1:]
    lam = jnp.where(total > 0.0, c[:, 1:] / jnp.where(total > 0.0, total, 1.0), 0.0)
  else:
    tail = jnp.cumsum(c[:, ::-1], axis=1)[:, ::-1][:, :-1]  # r_k = Σ_{j≥k} c_j, k < K
    empty = tail <= 0.0
    lam = jnp.where(empty, 0.0, c[:, :-1] / jnp.where(empty, 1.0, tail))
  return jnp.clip(lam, 0.0, 1.0)


def check_num_coeffs(num_coeffs):
  """Raises ``InputError`` unless ``num_coeffs`` is an integer K ≥ 2."""
  if isinstance(num_coeffs, bool) or not isinstance(num_coeffs, (int, np.integer)) \
      or num_coeffs < 2:
    raise errors.InputError(f"num_coeffs must be an integer ≥ 2, got {num_coeffs!r}")
