"""Building blocks of the reconstruction Unet: convolution strategies, upsampling, initializers.

The Unet's convolutions take their weights as arguments so that the same code runs
with ordinary parameters (one weight set for the whole batch) or with weights
generated per sample by the hypernetwork (a leading batch axis on every kernel).
"""

import functools
import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import errors

Strategy = Literal["auto", "vmap", "loop"]
STRATEGIES = ("auto", "vmap", "loop")
INITS = ("torch", "flax")


def resolve_strategy(strategy: str) -> str:
  """Maps ``'auto'`` to the fastest per-sample strategy on the default backend.

  On GPU/TPU a vmapped convolution lowers to one grouped convolution, which costs
  little more than a shared-weight convolution. XLA's CPU grouped convolution is
  far slower than B ordinary ones, so the CPU default is an unrolled loop
  (docs/performance.md).

  Args:
    strategy: one of ``STRATEGIES``.

  Returns:
    ``'vmap'`` or ``'loop'``.
  """
  if strategy not in STRATEGIES:
    raise errors.InputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
  if strategy == "auto":
    return "loop" if jax.default_backend() == "cpu" else "vmap"
  return strategy


def _conv(x, kernel, bias, dtype):
  """'SAME' 2-D convolution of one NHWC batch with one HWIO kernel, plus bias.

  Computes in ``dtype`` and returns ``dtype``; the products are summed in
  float32 (cuDNN and XLA's CPU convolutions accumulate bfloat16 in float32).
  The convolution's own result is ``dtype`` too: asked for a float32 result
  (``preferred_element_type``), a bfloat16 convolution runs as slowly as a
  float32 one on a GPU, and only a bfloat16 result makes it faster
  (docs/performance.md). The bias is added in float32.
  """
  y = jax.lax.conv_general_dilated(
      x.astype(dtype), kernel.astype(dtype), window_strides=(1, 1),
      padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return (y.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)


def _unrolled_conv(x, kernel):
  zero = jnp.zeros(kernel.shape[-1], jnp.float32)
  return jnp.concatenate([_conv(x[i:i + 1], kernel[i], zero, jnp.float32)
                          for i in range(x.shape[0])], axis=0)


@jax.custom_vjp
def _per_sample_conv(x, kernel):
  """B ordinary 'SAME' convolutions, unrolled: (B, H, W, C), (B, k, k, C, O) → (B, H, W, O).

  The kernel gradient is computed as its own convolution: the input's
  channels as the batch and the output gradient as the window (the results
  are bit-identical to XLA's). Alone the two forms cost the same on an idle
  CPU, but inside HyperRecon's training step at 16 channels this one makes
  the step much faster (no change at 32 channels; docs/changelog.md).
  """
  return _unrolled_conv(x, kernel)


def _per_sample_conv_fwd(x, kernel):
  return _unrolled_conv(x, kernel), (x, kernel)


def _kernel_gradient(x, dy, size: int):
  """d(loss)/d(kernel) of one 'SAME' convolution: Σ_hw x[h+i, w+j, c] · dy[h, w, o]."""
  lo = (size - 1) // 2
  # (1, H + k − 1, W + k − 1, C) read as C images of one feature: the
  # dimension numbers say so ("CHWN"), so XLA chooses the layout instead of
  # an explicit transpose of every row, which is slower for the same bits.
  lhs = jnp.pad(x, ((lo, size - 1 - lo), (lo, size - 1 - lo), (0, 0)))[None]
  rhs = dy[:, :, None, :]  # (H, W, 1, O): the output gradient as the window
  out = jax.lax.conv_general_dilated(lhs, rhs, window_strides=(1, 1), padding="VALID",
                                     dimension_numbers=("CHWN", "HWIO", "CHWN"))
  return jnp.transpose(out, (1, 2, 3, 0))  # (O, k, k, C) → (k, k, C, O)


def _input_gradient(x, kernel, dy):
  """d(loss)/dx of one 'SAME' convolution of (1, H, W, C) ``x`` (its transpose)."""
  zero = jnp.zeros(kernel.shape[-1], jnp.float32)
  return jax.vjp(lambda v: _conv(v, kernel, zero, jnp.float32), x)[1](dy)[0]


def _per_sample_conv_bwd(residuals, dy):
  x, kernel = residuals
  # Each row's input gradient on its own, then concatenated: the VJP of the
  # whole unrolled forward would transpose its row slices into B zero-padded
  # full-batch arrays and sum them (B² rows of traffic, a sizeable share of
  # HyperRecon's CPU training step).
  dx = jnp.concatenate([_input_gradient(x[i:i + 1], kernel[i], dy[i:i + 1])
                        for i in range(x.shape[0])])
  dk = jnp.stack([_kernel_gradient(x[i], dy[i], kernel.shape[1])
                  for i in range(x.shape[0])])
  return dx, dk


_per_sample_conv.defvjp(_per_sample_conv_fwd, _per_sample_conv_bwd)


def conv2d(x, kernel, bias, *, per_sample: bool, strategy: str,
           dtype=jnp.float32):
  """Convolution with either shared or per-sample weights.

  Args:
    x: (B, H, W, C_in) activations.
    kernel: (k, k, C_in, C_out) shared, or (B, k, k, C_in, C_out) per sample.
    bias: (C_out,) shared, or (B, C_out) per sample.
    per_sample: whether ``kernel`` and ``bias`` carry a leading batch axis.
    strategy: ``'vmap'`` (one grouped convolution) or ``'loop'`` (B ordinary
      convolutions, unrolled at trace time); ignored for shared weights.
    dtype: computation and output dtype (sums accumulate in float32).

  Returns:
    (B, H, W, C_out) of ``dtype``.
  """
  if not per_sample:
    return _conv(x, kernel, bias, dtype)
  if kernel.shape[1] == 1 and kernel.shape[2] == 1:
    # A per-sample 1×1 convolution is a batched matrix product. Written as
    # one, it also avoids XLA's SPMD partitioner mis-splitting a vmapped
    # (grouped) 1×1 convolution with a single output channel.
    y = jnp.einsum("bhwi,bio->bhwo", x.astype(dtype),
                   kernel[:, 0, 0].astype(dtype))  # a ``dtype`` result, as _conv
    return (y.astype(jnp.float32) + bias.astype(jnp.float32)[:, None, None, :]).astype(dtype)
  if strategy == "vmap":
    one = lambda xi, ki, bi: _conv(xi[None], ki, bi, dtype)[0]
    return jax.vmap(one)(x, kernel, bias)
  if strategy == "loop":
    if jnp.dtype(dtype) == jnp.float32:
      return _per_sample_conv(x.astype(jnp.float32), kernel.astype(jnp.float32)) + (
          bias.astype(jnp.float32)[:, None, None, :])
    return jnp.concatenate(
        [_conv(x[i:i + 1], kernel[i], bias[i], dtype)
         for i in range(x.shape[0])], axis=0)
  raise errors.InputError(f"per-sample convolution needs strategy 'vmap' or 'loop', "
                          f"got {strategy!r}")


@functools.cache
def align_corners_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """Linear interpolation taps with PyTorch's ``align_corners=True`` grid.

  Output sample ``i`` sits at source coordinate ``s_i = i·(n_in−1)/(n_out−1)``,
  so the first and last samples of input and output coincide, and
  ``out[i] = (1 − f_i)·in[lo_i] + f_i·in[lo_i + 1]`` with
  ``lo_i = min(⌊s_i⌋, n_in − 2)`` and ``f_i = s_i − lo_i``.

  Args:
    n_in: input length, at least 2.
    n_out: output length, at least 2.

  Returns:
    ``(lo, f)``: (n_out,) int32 indices and (n_out,) float32 fractions.
  """
  src = np.arange(n_out) * (n_in - 1) / (n_out - 1)
  lo = np.clip(np.floor(src).astype(np.int64), 0, n_in - 2)
  return lo.astype(np.int32), (src - lo).astype(np.float32)


def _upsample_axis(x, axis: int):
  n = x.shape[axis]
  if n == 1:  # a single sample: every output sample is it
    return jnp.repeat(x, 2, axis=axis)
  lo, f = align_corners_taps(n, 2 * n)
  f = jnp.asarray(f).reshape((-1,) + (1,) * (x.ndim - 1 - axis))
  a, b = jnp.take(x, lo, axis=axis), jnp.take(x, lo + 1, axis=axis)
  return a + f * (b - a)


def upsample2x(x):
  """Bilinear ×2 upsampling of (B, H, W, C) with ``align_corners=True``.

  Two taps per output sample along each axis (`align_corners_taps`), not
  ``jax.image.resize``, whose grid is half-pixel. Gathers and an
  elementwise blend move each activation a few times; the dense
  interpolation matrices used before cost ``2·H`` multiply-adds per output
  sample at full float32 precision. Computed in float32, returned in the
  input's dtype.
  """
  y = _upsample_axis(_upsample_axis(x.astype(jnp.float32), 1), 2)
  return y.astype(x.dtype)


def _windows(x):
  """(B, H, W, C) → (B, H/2, 2, W/2, 2, C), an odd last row or column dropped."""
  b, h, w, c = x.shape
  return x[:, :h - h % 2, :w - w % 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool2x(x):
  """2×2 max-pooling with stride 2 of (B, H, W, C) ('VALID': odd edges dropped).

  The gradient goes to the first maximum of each window in row-major order,
  as XLA's and PyTorch's do. It is computed with comparisons against the
  pooled values; XLA's own gradient of a max ``reduce_window`` builds four
  index arrays of the input's size and reduces them, a visible part of a
  CPU training step (docs/changelog.md).
  """
  return jnp.max(_windows(x), axis=(2, 4))


def _max_pool2x_fwd(x):
  y = max_pool2x(x)
  return y, (x, y)


def _max_pool2x_bwd(residuals, dy):
  x, y = residuals
  win = _windows(x)
  hit = win == y[:, :, None, :, None, :]
  taken = jnp.zeros_like(y, bool)
  grads = []
  for i in range(2):
    row = []
    for j in range(2):
      first = hit[:, :, i, :, j] & ~taken
      taken = taken | first
      row.append(jnp.where(first, dy, jnp.zeros_like(dy)))
    grads.append(jnp.stack(row, axis=3))
  dx = jnp.stack(grads, axis=2).reshape(win.shape[0], win.shape[1] * 2, win.shape[3] * 2, -1)
  return (jnp.pad(dx, ((0, 0), (0, x.shape[1] - dx.shape[1]), (0, x.shape[2] - dx.shape[2]),
                       (0, 0))),)


max_pool2x.defvjp(_max_pool2x_fwd, _max_pool2x_bwd)


def torch_uniform(fan_in: int):
  """PyTorch's default Linear/Conv initializer: U(−1/√fan_in, 1/√fan_in).

  Used for weights and biases alike, as ``torch.nn.Linear.reset_parameters``
  and ``torch.nn.Conv2d.reset_parameters`` do.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def initializers(init: str, fan_in: int):
  """(kernel_init, bias_init) for a layer with the given fan-in.

  Args:
    init: ``'torch'`` (uniform ±1/√fan_in for weight and bias, the reference's
      choice) or ``'flax'`` (lecun-normal weight, zero bias).
    fan_in: number of inputs feeding one output unit.

  Returns:
    A pair of Flax initializers.
  """
  if init == "torch":
    return torch_uniform(fan_in), torch_uniform(fan_in)
  if init == "flax":
    return jax.nn.initializers.lecun_normal(), jax.nn.initializers.zeros
  raise errors.InputError(f"init must be one of {INITS}, got {init!r}")


BATCH_NORM_EPSILON = 1e-5  # PyTorch's default, the reference's


class BatchNorm(nn.Module):
  """BatchNorm over every axis but the last, with PyTorch's running statistics.

  Training mode normalizes with the batch statistics over ``n`` = all but the
  channel axis (``B·H·W`` values per channel)::

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
    x32 = x.astype(jnp.float32)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axes)
      # Two passes, as PyTorch: E[x²] − E[x]² (Flax's default) cancels
      # catastrophically when the mean is large against the spread, and turns
      # float32 roundoff of the convolution into relative errors of 1e-5.
      var = jnp.mean(jnp.square(x32 - mean), axes)
      n = x.size // c
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * mean
        ra_var.value = m * ra_var.value + (1 - m) * var * (n / max(n - 1, 1))
    # Statistics and arithmetic in float32; out in the input's dtype, so that
    # bfloat16 activations stay bfloat16 between layers.
    y = (x32 - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
    return y.astype(x.dtype)
