"""How the programs are compiled on the CPU: XLA options chosen by measurement.

On the CPU, jaxlib 0.10's XLA hands the larger convolutions (all of a Unet's at 32
channels) to YNNPACK, which runs each one on a single thread; with the option
below it uses Eigen's convolutions, which use every core. On the 2-core
development machine one 3×3 convolution, 8 × 64² × 32 → 32 channels, takes
5.9 ms forward through YNNPACK (on one core or two alike) and 3.6 ms through
Eigen (docs/performance.md, "CPU: single-threaded convolutions"). Programs
that only run models forward gain: `evaluate_grid` λ-major 225 → 315–356
(slice, λ) pairs/s for HyperRecon-M. Of the training steps only a plain
Unet's is compiled this way (`training_options`; 54–56 → 63–64 samples/s):
in HyperRecon's and the stacked baseline Unets' steps YNNPACK's
single-threaded convolutions of independent rows (one per sample, or one per
Unet) already run side by side on the cores, and Eigen was no faster there
(HyperRecon-S −7 to +4 %, -M −10 to −12 %, three stacked Unets −5 to −17 %).

``inference_options()`` is empty on other backends, with a jaxlib that does
not know the option, and when ``XLA_FLAGS`` already sets it (the user's
choice wins).
"""

import functools
import os

import jax
import numpy as np

from hyperrecon_jax import models

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def inference_options() -> dict[str, str]:
  """XLA compile options of the forward-only programs on the default backend.

  Returns:
    ``{option: value}`` for ``jax.jit(..., compiler_options=...)``; ``{}``
    where none applies (see the module docstring).
  """
  if jax.default_backend() != "cpu":
    return {}
  if YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
    return {}
  options = {YNN_FUSION_OPTION: ""}  # no operation is given to YNNPACK
  try:
    jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
  except RuntimeError:  # "No such compile option" from another jaxlib
    return {}
  return options


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


def training_options(model) -> dict[str, str]:
  """XLA compile options of ``model``'s training step on the default backend.

  `inference_options` for a plain ``models.Unet`` (one chain of batch-wide
  convolutions, which Eigen splits across the cores); ``{}`` for
  ``HyperUnet`` and the stacked baseline Unets (see the module docstring).
  """
  return inference_options() if isinstance(model, models.Unet) else {}
