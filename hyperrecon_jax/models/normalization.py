"""BatchNorm with PyTorch's running statistics and a written-out training gradient."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

BATCH_NORM_EPSILON = 1e-5  # PyTorch's default, the reference's


def _batch_statistics(x):
  """Per-channel mean and biased variance of (…, C) ``x``, in two passes.

  Two passes, as PyTorch: E[x²] − E[x]² (Flax's default) cancels
  catastrophically when the mean is large against the spread, and turns
  float32 roundoff of the convolution into relative errors of 1e-5.
  """
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  return mean, jnp.mean(jnp.square(x - mean), axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_normalize(x, scale, bias, epsilon):
  """Training-mode BatchNorm of float32 (…, C) ``x`` with its batch statistics.

  ``y = (x − μ) · γ / sqrt(σ² + ε) + β`` with ``μ``, ``σ²`` the mean and
  biased variance over every axis but the last. Its gradient is written out
  (with ``x̂ = (x − μ)/sqrt(σ² + ε)`` over the ``n`` values of a channel)::

    dβ = Σ dy,   dγ = Σ dy·x̂,
    dx = γ/sqrt(σ² + ε) · (dy − (dβ + x̂·dγ)/n) + dμ/n + dσ²·2(x − μ)/n

  (``dμ``, ``dσ²``: the cotangents of the returned statistics): two passes
  over the activations, where autodiff of the two-pass statistics takes
  more (docs/changelog.md).

  Args:
    x: (…, C) float32 activations.
    scale: (C,) γ.
    bias: (C,) β.
    epsilon: ε, added to the variance.

  Returns:
    ``(y, mean, var)``: normalized ``x`` and the batch's (C,) mean and biased
    variance.
  """
  return _batch_normalize_fwd(x, scale, bias, epsilon)[0]


def _batch_normalize_fwd(x, scale, bias, epsilon):
  mean, var = _batch_statistics(x)
  inv = jax.lax.rsqrt(var + epsilon)
  y = (x - mean) * (scale * inv) + bias
  return (y, mean, var), (x, scale, mean, inv)


def _batch_normalize_bwd(epsilon, residuals, cotangents):
  del epsilon  # in the residuals' inverse standard deviation
  x, scale, mean, inv = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  centred = x - mean
  xhat = centred * inv
  dbias = jnp.sum(dy, axes)
  dscale = jnp.sum(dy * xhat, axes)
  dx = ((scale * inv) * (dy - (dbias + xhat * dscale) / n)
        + dmean / n + dvar * (2.0 / n) * centred)
  return dx, dscale, dbias


batch_normalize.defvjp(_batch_normalize_fwd, _batch_normalize_bwd)


class BatchNorm(nn.Module):
  """BatchNorm over every axis but the last, with PyTorch's running statistics.

  Training mode normalizes with the batch statistics over ``n`` = all but the
  channel axis (``B·H·W`` values per channel; `batch_normalize`)::

    y = (x - mean_B) / sqrt(var_B + eps) * scale + bias,   var_B = mean((x - mean_B)^2)

  and updates the running statistics as ``torch.nn.BatchNorm2d`` does, with
  the *unbiased* batch variance (Flax's ``nn.BatchNorm`` keeps the biased
  one)::

    mean <- m * mean + (1 - m) * mean_B
    var  <- m * var  + (1 - m) * var_B * n / (n - 1)

  Evaluation mode uses the running statistics. ``m = 0.9`` is PyTorch's
  momentum 0.1. The variables are named as Flax's (``params``: scale, bias;
  ``batch_stats``: mean, var), so checkpoints keep their layout.

  Attributes:
    momentum: weight of the old running statistics.
    epsilon: added to the variance.
  """
  momentum: float = 0.9
  epsilon: float = BATCH_NORM_EPSILON

  @nn.compact
  def __call__(self, x, *, use_running_average: bool):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    # Statistics and arithmetic in float32; out in the input's dtype, so that
    # bfloat16 activations stay bfloat16 between layers.
    x32 = x.astype(jnp.float32)
    if use_running_average:
      y = (x32 - ra_mean.value) * (scale * jax.lax.rsqrt(ra_var.value + self.epsilon)) + bias
      return y.astype(x.dtype)
    y, mean, var = batch_normalize(x32, scale, bias, self.epsilon)
    if not self.is_initializing():
      m, n = self.momentum, x.size // c
      ra_mean.value = m * ra_mean.value + (1 - m) * mean
      ra_var.value = m * ra_var.value + (1 - m) * var * (n / max(n - 1, 1))
    return y.astype(x.dtype)
