"""Hyperparameters λ ∈ [0, 1]^(K−1) and the K loss coefficients they stand for.

The hypernetwork's input is the coefficient vector, not λ (as in the reference).

* K = 2 (paper Eq. 9): ``L = (1 − λ)·L1 + λ·L2``, so λ weights the *second* term.
* K = 3 (paper Eq. 10): ``L = λ1·L1 + (1 − λ1)·λ2·L2 + (1 − λ1)·(1 − λ2)·L3``.
* K ≥ 3 in general (stick-breaking, extends Eq. 10):
  ``c_k = λ_k · Π_{j<k} (1 − λ_j)`` for k < K and ``c_K = Π_{j<K} (1 − λ_j)``.

Note that Eq. 9 is *not* the K = 2 case of the stick-breaking form (that would be
``(λ, 1 − λ)``); both follow the paper. Every form gives non-negative
coefficients summing to 1.
"""

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors

SAMPLERS = ("uniform", "endpoints", "log_uniform")


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


def sample(key, batch: int, num_lambdas: int, method: str = "uniform", *,
           endpoint_prob: float = 0.1, log_min: float = 1e-3):
  """Draws one λ vector per batch element.

  Args:
    key: a JAX PRNG key.
    batch: B.
    num_lambdas: K − 1.
    method: ``'uniform'``: U[0, 1]^(K−1) (the paper's UHS);
      ``'endpoints'``: uniform, but each coordinate is replaced by exactly 0 or
      1 (equally likely) with probability ``endpoint_prob`` so the extremes of
      the λ range are trained as often as a fixed-λ baseline would be;
      ``'log_uniform'``: log10 λ uniform on [log10 ``log_min``, 0], for terms
      whose useful weights span orders of magnitude.
    endpoint_prob: probability of an endpoint, for ``'endpoints'`` (a
      scalar, which may be traced: an annealed schedule).
    log_min: smallest λ, for ``'log_uniform'``.

  Returns:
    (B, K−1) float32 hyperparameters in [0, 1].
  """
  shape = (batch, num_lambdas)
  if method == "uniform":
    return jax.random.uniform(key, shape)
  if method == "endpoints":
    if _is_concrete(endpoint_prob) and not 0.0 <= endpoint_prob <= 1.0:
      raise errors.InputError(f"endpoint_prob must be in [0, 1], got {endpoint_prob}")
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
  raise errors.InputError(f"method must be one of {SAMPLERS}, got {method!r}")


def grid(num: int, num_lambdas: int = 1):
  """A regular λ grid: ``num`` points on [0, 1], or a num×num lattice for two.

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
  raise errors.InputError(f"grid supports 1 or 2 hyperparameters, got {num_lambdas}")


def parse_lambdas(text: str, num_lambdas: int, *, flag: str = "--lam") -> np.ndarray:
  """A command line's list of λ values as a (L, num_lambdas) float32 array.

  ``0.3``; ``0,0.5,1`` (L values); ``grid:N`` (`grid`); for two
  hyperparameters ``a:b`` pairs, e.g. ``0.2:0.4,1:0``. The values are not
  range-checked here (the caller knows what it accepts).

  Args:
    text: the flag's value.
    num_lambdas: the model's number of hyperparameters.
    flag: the flag's name, for the messages.

  Raises:
    InputError: naming the bad item: not a number, the wrong count of values,
      or a bad ``grid:N``.
  """
  text = str(text).strip()
  if text.startswith("grid:"):
    try:
      n = int(text[5:])
    except ValueError:
      raise errors.InputError(f"{flag}={text}: grid:N needs an integer N") from None
    if n < 2:
      raise errors.InputError(f"{flag}={text}: N must be ≥ 2 (0 and 1 at least)")
    return grid(n, num_lambdas)
  rows = []
  for item in text.split(","):
    try:
      lam = [float(v) for v in item.split(":")]
    except ValueError:
      raise errors.InputError(f"{flag}={text}: {item!r} is not a number") from None
    if len(lam) != num_lambdas:
      raise errors.InputError(
          f"{flag}={text}: {item!r} has {len(lam)} values, the model's loss has "
          f"{num_lambdas} hyperparameter(s) (a:b for two)")
    rows.append(lam)
  return np.asarray(rows, np.float32)
