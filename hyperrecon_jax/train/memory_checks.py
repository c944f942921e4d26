"""Whether a training run fits its device: checked before the run writes anything."""

import os

import jax

from hyperrecon_jax import memory
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import state as state_lib


def device_memory() -> tuple[int, str]:
  """``(bytes, what)``: the memory of one device, or the machine's RAM for a CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"]), f"one {jax.local_devices()[0].device_kind}"
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM"


def check_memory(config, model) -> None:
  """Raises ``ConfigError`` if training cannot fit in one device's memory.

  A lower bound (`state.memory_floor_parts`: the train state, its gradients,
  the convolutions' inputs): a run refused here could never train, while one
  that passes may still need more. The message says what to shrink: the
  stack, the batch when its activations are the larger part, or the model.
  Without it, a stack of 10⁵ Unets (``baselines.py --lambdas=grid:100000``)
  ran minutes into its initialization before it ran out of memory.
  """
  model_bytes, activations = state_lib.memory_floor_parts(config, model, len(jax.devices()))
  need = model_bytes + activations
  limit, what = device_memory()
  if need > limit:
    count = len(state_lib.stack_lambdas(model))
    if count > 1:
      fewer = f"; train fewer than its {count} Unets"
    elif activations > model_bytes:
      fewer = (f"; lower config.train.batch_size (now {config.train.batch_size}): the "
               f"activations its rows keep for the backward pass take "
               f"{memory.byte_size(activations)}")
    else:
      fewer = "; use a smaller model (config.model.channels, config.model.hyper_dim)"
    raise configuration.ConfigError(
        f"the parameters, gradients, optimizer state and kept activations of this model "
        f"alone take {memory.byte_size(need)}, more than the {memory.byte_size(limit)} of "
        f"{what}{fewer}")


def check_step_memory(config, compiled) -> None:
  """Raises ``ConfigError`` if the compiled training step needs more than a device has.

  XLA's memory analysis of the step: its arguments, outputs (less those that
  reuse the donated state's buffers) and temporaries. `check_memory`'s bound
  leaves out the temporaries, which at a large batch dominate: at batch
  100,000 of the demo's ``:quick`` model the bound was 10.8 GiB and the step
  needed 29.6 GiB.

  Args:
    config: the run's config.
    compiled: the compiled training step.
  """
  analysis = compiled.memory_analysis()
  if analysis is None:  # a backend without the analysis
    return
  need = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
          + analysis.output_size_in_bytes - analysis.alias_size_in_bytes)
  limit, what = device_memory()
  if need > limit:
    raise configuration.ConfigError(
        f"one training step needs {memory.byte_size(need)} (XLA's memory analysis of the "
        f"compiled step), more than the {memory.byte_size(limit)} of {what}; lower "
        f"config.train.batch_size (now {config.train.batch_size}) or use a smaller model")
