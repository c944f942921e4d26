"""How the programs are compiled on the CPU: XLA options chosen by measurement.

On the CPU, jaxlib 0.10's XLA hands the larger convolutions (all of a Unet's at 32
channels) to YNNPACK, which runs each one on a single thread; XLA's own
(Eigen's) convolutions use every core, so on the multi-core development
machine they are the faster ones (docs/performance.md, "CPU: single-threaded
convolutions and the compile options").

YNNPACK also takes the reductions, and there it is the fast path: with no
YNNPACK fusion at all, XLA rewrites each per-channel sum of a training step
(BatchNorm's statistics and their gradients, the bias gradients) into a
strided ``reduce-window``, several times slower than YNNPACK's reduction and a
visible part of a training step. So:

- ``inference_options()``: no YNNPACK fusion, for the programs that only run
  models forward (the λ grid, the explorer, ``reconstruct``, the segmenter's
  labels, the baselines' objective); their sums are small, so the faster
  convolutions win.
- ``training_options()``: YNNPACK for the reductions only, for every
  training step (plain Unet, HyperRecon, the stacked baseline Unets): faster
  at 32 channels, and no change at 16 channels (where XLA keeps the
  convolutions anyway). These programs are also scheduled to use the least
  memory (XLA's memory-optimized scheduler): a backward pass keeps every
  activation alive, and the smaller working set (60 instead of 92 MiB for
  HyperRecon-S at 64², batch 8) stays in the cache; the order of the
  operations changes, not their arithmetic. The forward-only programs keep
  XLA's default schedule: the memory-optimized one measured no faster there.

An option is left out on other backends, with a jaxlib that does not know it,
and when ``XLA_FLAGS`` already sets it (the user's choice wins).
"""

import functools
import os
import re

import jax
import numpy as np

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
YNN_REDUCTIONS = "LIBRARY_FUSION_TYPE_REDUCE"  # the option's value: reductions only
SCHEDULER_OPTION = "xla_cpu_scheduler_type"
MEMORY_OPTIMIZED = "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


def _usable(options: dict[str, str]) -> dict[str, str]:
  """Those of ``options`` that apply on the default backend (see the module docstring)."""
  if jax.default_backend() != "cpu":
    return {}
  flags = os.environ.get("XLA_FLAGS", "")
  usable = {}
  for name, value in options.items():
    # The option itself, not a flag whose text holds its name (a dump folder).
    if re.search(rf"(^|\s)--?{re.escape(name)}(=|\s|$)", flags):
      continue
    try:
      jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(np.float32(0)).compile()
    except RuntimeError:  # "No such compile option" (or value) from another jaxlib
      continue
    usable[name] = value
  return usable


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
    ``{option: value}``: only the reductions go to YNNPACK, and the program
    is scheduled for the least memory (see the module docstring); ``{}``
    where none applies.
  """
  return _usable({YNN_FUSION_OPTION: YNN_REDUCTIONS, SCHEDULER_OPTION: MEMORY_OPTIMIZED})


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
