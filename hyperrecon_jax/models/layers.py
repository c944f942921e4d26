"""Convolutions of the reconstruction Unet (shared or per-sample weights) and their initializers.

The Unet's convolutions take their weights as arguments so that the same code runs
with ordinary parameters (one weight set for the whole batch) or with weights
generated per sample by the hypernetwork (a leading batch axis on every kernel).
"""

import math
from typing import Literal

import jax
import jax.numpy as jnp

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

  The kernel gradient is computed as its own convolution (`_kernel_gradient`)
  instead of by autodiff of the unrolled forward: inside HyperRecon's training
  step at 16 channels that made the step much faster (no change at 32
  channels), and putting the narrower operand in as its batch shortens a
  one-core step further (docs/changelog.md).
  """
  return _unrolled_conv(x, kernel)


def _per_sample_conv_fwd(x, kernel):
  return _unrolled_conv(x, kernel), (x, kernel)


def _kernel_gradient(x, dy, size: int):
  """d(loss)/d(kernel) of one 'SAME' convolution: Σ_hw x[h+i−lo, w+j−lo, c] · dy[h, w, o].

  One convolution whose window is the whole image: the operand with fewer
  channels goes in as the batch, which XLA's CPU convolution needs transposed
  (channels first), and the other as the window in its own layout. So the
  decoder's 2c → c convolutions transpose dy, not their twice as wide input.

  Args:
    x: (H, W, C) input of one row.
    dy: (H, W, O) its output gradient.
    size: the kernel's height and width (lo = (size − 1) // 2 rows of padding
      above, size − 1 − lo below, as 'SAME').

  Returns:
    (size, size, C, O).
  """
  lo = (size - 1) // 2
  hi = size - 1 - lo
  if x.shape[-1] <= dy.shape[-1]:
    # x's C channels as C images of one feature ("CHWN"), dy as an (H, W, 1, O)
    # window: out[c, i, j, o] = Σ_hw xpad[h+i, w+j, c] · dy[h, w, o].
    lhs = jnp.pad(x, ((lo, hi), (lo, hi), (0, 0)))[None]
    out = jax.lax.conv_general_dilated(lhs, dy[:, :, None, :], window_strides=(1, 1),
                                       padding="VALID",
                                       dimension_numbers=("CHWN", "HWIO", "CHWN"))
    return jnp.transpose(out, (1, 2, 3, 0))  # (O, k, k, C) → (k, k, C, O)
  # dy's O channels as the images, x as an (H, W, 1, C) window: with dy padded
  # by (hi, lo), out[a, b, c, o] = Σ_uv dypad[a+u, b+v, o] · x[u, v, c] is the
  # gradient at i = size − 1 − a, j = size − 1 − b.
  lhs = jnp.pad(dy, ((hi, lo), (hi, lo), (0, 0)))[None]
  out = jax.lax.conv_general_dilated(lhs, x[:, :, None, :], window_strides=(1, 1),
                                     padding="VALID",
                                     dimension_numbers=("CHWN", "HWIO", "HWCN"))
  return out[::-1, ::-1]


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
  if strategy == "vmap" or x.shape[0] == 0:  # an unrolled loop of no rows has nothing to join
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
