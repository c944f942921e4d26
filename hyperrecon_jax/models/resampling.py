"""Resampling between the Unet's levels: bilinear ×2 upsampling and 2×2 max-pooling.

Both write their own gradients: autodiff of a gather (upsampling) or of a max
``reduce_window`` (pooling) builds scatters and index arrays that are among
the slowest passes of a CPU training step (docs/changelog.md).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


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


@functools.cache
def align_corners_adjoint_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """The transpose of `align_corners_taps`' interpolation, as taps.

  Input sample ``k`` feeds the output samples ``i`` with ``lo_i = k``
  (weight ``1 − f_i``) or ``lo_i + 1 = k`` (weight ``f_i``), so the gradient
  of the interpolation is ``dx[k] = Σ_j w[j, k] · dy[idx[j, k]]`` over the
  ``m`` rows of taps; an input sample with fewer than ``m`` outputs has taps
  of weight 0.

  Args:
    n_in: input length, at least 2.
    n_out: output length, at least 2.

  Returns:
    ``(idx, w)``: (m, n_in) int32 output indices and (m, n_in) float32 weights.
  """
  lo, f = align_corners_taps(n_in, n_out)
  taps = [[] for _ in range(n_in)]
  for i, (k, fi) in enumerate(zip(lo, f)):
    taps[k].append((i, 1.0 - fi))
    taps[k + 1].append((i, fi))
  m = max(len(t) for t in taps)
  idx, w = np.zeros((m, n_in), np.int32), np.zeros((m, n_in), np.float32)
  for k, t in enumerate(taps):
    for j, (i, wi) in enumerate(t):
      idx[j, k], w[j, k] = i, wi
  return idx, w


def _along(v, axis: int, ndim: int):
  """A (n,) vector shaped to broadcast along ``axis`` of an ``ndim``-D array."""
  return jnp.asarray(v).reshape((-1,) + (1,) * (ndim - 1 - axis))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _interpolate_axis(x, axis: int):
  """×2 linear interpolation along ``axis`` (length ≥ 2), ``align_corners=True``.

  Its gradient gathers the output gradient through the adjoint taps instead
  of scatter-adding it, as autodiff of a gather would: a scatter-add is the
  slowest pass of the CPU training step's upsampling (docs/changelog.md).
  """
  n = x.shape[axis]
  lo, f = align_corners_taps(n, 2 * n)
  a, b = jnp.take(x, lo, axis=axis), jnp.take(x, lo + 1, axis=axis)
  return a + _along(f, axis, x.ndim) * (b - a)


def _interpolate_axis_fwd(x, axis):
  return _interpolate_axis(x, axis), None


def _interpolate_axis_bwd(axis, _, dy):
  n = dy.shape[axis] // 2
  idx, w = align_corners_adjoint_taps(n, 2 * n)
  dx = sum(_along(w[j], axis, dy.ndim) * jnp.take(dy, idx[j], axis=axis)
           for j in range(idx.shape[0]))
  return (dx,)


_interpolate_axis.defvjp(_interpolate_axis_fwd, _interpolate_axis_bwd)


def _upsample_axis(x, axis: int):
  if x.shape[axis] == 1:  # a single sample: every output sample is it
    return jnp.repeat(x, 2, axis=axis)
  return _interpolate_axis(x, axis)


def upsample2x(x):
  """Bilinear ×2 upsampling of (B, H, W, C) with ``align_corners=True``.

  Two taps per output sample along each axis (`align_corners_taps`), not
  ``jax.image.resize``, whose grid is half-pixel. Gathers and an
  elementwise blend move each activation a few times, in both directions
  (`align_corners_adjoint_taps`); dense interpolation matrices would
  cost ``2·H`` multiply-adds per output sample at full float32
  precision. Computed in float32, returned in the input's dtype.
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
