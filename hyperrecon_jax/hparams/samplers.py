"""Training's λ draws: on the cube (the paper's UHS and variants) or on the simplex."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors
from hyperrecon_jax.hparams.maps import coefficients
from hyperrecon_jax.hparams.maps import is_concrete
from hyperrecon_jax.hparams.maps import lambdas_from_coefficients

SAMPLERS = ("uniform", "endpoints", "log_uniform", "dirichlet", "faces")
SIMPLEX_SAMPLERS = ("dirichlet", "faces")


def _check_prob(value, name: str):
  if is_concrete(value) and not 0.0 <= value <= 1.0:
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
    λ ∈ {0, 1}; for K = 2 (and α = 1) it has the distribution of 'endpoints'
    (not the same draws for one seed; the vertices are
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
  if method in SIMPLEX_SAMPLERS:
    return lambdas_from_coefficients(
        _simplex_coefficients(key, batch, num_lambdas, method, endpoint_prob, alpha))
  raise errors.InputError(f"method must be one of {SAMPLERS}, got {method!r}")


def _simplex_coefficients(key, batch, num_lambdas, method, endpoint_prob, alpha):
  """(B, K) coefficients of a simplex sampler's draw (see `sample`)."""
  if num_lambdas < 1:
    raise errors.InputError(f"the {method!r} sampler needs num_lambdas ≥ 1 (K ≥ 2 loss "
                            f"terms), got {num_lambdas}")
  if np.ndim(alpha) != 0 or (is_concrete(alpha) and not 0 < alpha < np.inf):
    raise errors.InputError(f"alpha must be a finite scalar > 0, got {alpha}")
  num_coeffs = num_lambdas + 1
  if method == "dirichlet":
    return jax.random.dirichlet(key, jnp.full((num_coeffs,), alpha, jnp.float32), (batch,))
  _check_prob(endpoint_prob, "endpoint_prob")
  return _faces(key, batch, num_coeffs, endpoint_prob, alpha)


def sample_coefficients(key, batch: int, num_coeffs: int, method: str = "uniform", *,
                        endpoint_prob: float = 0.1, log_min: float = 1e-3, alpha: float = 1.0):
  """The (B, K) loss coefficients of `sample`'s draw, what training weights its terms by.

  For the cube samplers, `coefficients` of the λ `sample` draws. For the
  simplex samplers, the coefficients drawn themselves, not their round trip
  through λ: in float32 a coefficient below 2⁻²⁴ of the one before it comes
  back from λ as exactly 0 (Dirichlet(0.2) over K = 4 terms would switch the
  last term off in 1.8 % of the rows instead of almost never, and 'faces'
  would put more rows on the faces than ``endpoint_prob`` says).

  Args:
    key: a JAX PRNG key (the same key gives the draw `sample` gives).
    batch: B.
    num_coeffs: K ≥ 2.
    method, endpoint_prob, log_min, alpha: as for `sample`.

  Returns:
    (B, K) float32 coefficients on the simplex.
  """
  if method in SIMPLEX_SAMPLERS:
    return _simplex_coefficients(key, batch, num_coeffs - 1, method, endpoint_prob, alpha)
  return coefficients(sample(key, batch, num_coeffs - 1, method, endpoint_prob=endpoint_prob,
                             log_min=log_min, alpha=alpha))
