"""How the programs are compiled on the CPU: XLA options chosen by measurement.

On the CPU, jaxlib 0.10's XLA hands the larger convolutions (all of a Unet's at 32
channels) to YNNPACK, which runs each one on a single thread; XLA's own
(Eigen's) convolutions use every core. On the 2-core development machine one
3×3 convolution, 8 × 64² × 32 → 32 channels, takes 5.9 ms forward through
YNNPACK (on one core or two alike) and 3.6 ms through Eigen
(docs/performance.md, "CPU: single-threaded convolutions").

YNNPACK also takes the reductions, and there it is the fast path: with no
YNNPACK fusion at all, XLA rewrites each per-channel sum of a training step
(BatchNorm's statistics and their gradients, the bias gradients) into a
strided ``reduce-window`` that costs 0.9 ms per 8 × 64² × 32 array against
0.07–0.5 ms through YNNPACK: 26 ms of a plain Unet's 237 ms one-core step.
So:

- ``inference_options()``: no YNNPACK fusion, for the programs that only run
  models forward (the λ grid, the explorer, ``reconstruct``, the segmenter's
  labels, the baselines' objective); their sums are small. `evaluate_grid`
  λ-major for HyperRecon-M: 225 → 315–356 (slice, λ) pairs/s.
- ``training_options()``: YNNPACK for the reductions only, for every
  training step (plain Unet, HyperRecon, the stacked baseline Unets). At 32
  channels: Unet 62 → 67, HyperRecon-S 57 → 61, -M 48 → 55 samples/s; at 16
  channels (where XLA keeps the convolutions anyway) no change.

Both are empty on other backends, with a jaxlib that does not know the
option, and when ``XLA_FLAGS`` already sets it (the user's choice wins).
"""

import functools
import os

import jax
import numpy as np

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_REDUCTIONS = "LIBRARY_FUSION_TYPE_REDUCE"  # the option's value: reductions only


def _usable(options: dict[str, str]) -> dict[str, str]:
  """``options`` where they apply on the default backend, else ``{}``."""
  if jax.default_backend() != "cpu":
    return {}
  if YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
    return {}
  try:
    jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
  except RuntimeError:  # "No such compile option" (or value) from another jaxlib
    return {}
  return options


@functools.cache
def inference_options() -> dict[str, str]:
  """XLA compile options of the forward-only programs on the default backend.

  Returns:
    ``{option: value}`` for ``jax.jit(..., compiler_options=...)``; ``{}``
    where none applies (see the module docstring).
  """
  return _usable({YNN_FUSION_OPTION: ""})  # no operation is given to YNNPACK


@functools.cache
def training_options() -> dict[str, str]:
  """XLA compile options of every training step on the default backend.

  Returns:
    ``{option: value}``: only the reductions go to YNNPACK (see the module
    docstring); ``{}`` where none applies.
  """
  return _usable({YNN_FUSION_OPTION: YNN_REDUCTIONS})


def inference_jit(fun=None, /, **jit_kwargs):
  """``jax.jit`` with `inference_options`, resolved at the first call.

  Usable as ``@inference_jit``, ``@inference_jit(static_argnames=...)`` or
  ``inference_jit(f)``. The options are looked up on the first call, not at
  import, so importing the library does not start a backend.

  Args:
    fun: the function to compile.
    **jit_kwargs: further ``jax.jit`` arguments (``static_argnames``, ...).

  Returns:
    The compiled function.
  """
  if fun is None:
    return functools.partial(inference_jit, **jit_kwargs)
  jitted = None

  @functools.wraps(fun)
  def call(*args, **kwargs):
    nonlocal jitted
    if jitted is None:
      jitted = jax.jit(fun, compiler_options=inference_options(), **jit_kwargs)
    return jitted(*args, **kwargs)

  return call
