r"""What each part of a training step costs: the step timed with one part changed.

  python benchmarks/ablate_step.py --sizes=S --image_size=64 --batch=8 --channels=32
  python benchmarks/ablate_step.py --quick                        # seconds on a CPU

On several cores the traced times of a CPU step (`profile_step.py`) do not add
up to the step: XLA's CPU runtime runs independent operations at once. This
script measures instead. Each variant changes one part of the model or loss,
its step is compiled once, and the variants' steps are then called once and
timed in turns within one process (``--rounds`` rounds of ``--iters`` steps
each), so a drift of the machine's speed falls on every variant alike. A
part's cost (``ms_saved``) is the median over the rounds of the unchanged
step's time minus the variant's. Variants:

  no_batchnorm      every BatchNorm an identity (its statistics, normalization
                    and their gradients gone);
  no_ssim           the SSIM term computed as a second MAE (its Gaussian
                    filters and their gradients gone);
  nearest_upsample  nearest-neighbour instead of bilinear ×2 upsampling (its
                    gathers and their gathered gradients gone);
  shared_weights    a plain Unet of the same width: one weight set for the
                    batch, no hypernetwork and no per-sample convolutions;
  default_schedule  the same step in XLA's default order of operations instead
                    of the memory-optimized one `compilation.training_options`
                    asks for on the CPU (a negative cost is what that order
                    saves).

One JSON line per variant. These are measurements of parts, not options: a
variant trains a different model (``default_schedule`` alone computes the
same bits).
"""

import contextlib
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  (its flags: --sizes, --image_size, --batch, ...)

VARIANTS = ("unchanged", "no_batchnorm", "no_ssim", "nearest_upsample", "shared_weights",
            "default_schedule")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"Some of {VARIANTS}.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed rounds; each times every variant once.")


@contextlib.contextmanager
def _replaced(owner, name, value):
  old = getattr(owner, name)
  setattr(owner, name, value)
  try:
    yield
  finally:
    setattr(owner, name, old)


def _change(variant: str):
  """The context in which ``variant``'s model and step are built and traced."""
  from hyperrecon_jax import compilation
  from hyperrecon_jax import losses
  from hyperrecon_jax.models import normalization
  from hyperrecon_jax.models import resampling
  if variant == "no_batchnorm":
    return _replaced(normalization.BatchNorm, "__call__",
                     lambda self, x, *, use_running_average: x)
  if variant == "no_ssim":
    return _replaced(losses, "TERMS", {**losses.TERMS, "ssim": losses.TERMS["mae"]})
  if variant == "nearest_upsample":
    return _replaced(resampling, "upsample2x",
                     lambda x: jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
  if variant == "default_schedule":
    options = {k: v for k, v in compilation.training_options().items()
               if k != compilation.SCHEDULER_OPTION}
    return _replaced(compilation, "training_options", lambda: options)
  return contextlib.nullcontext()


def _compiled_step(config, variant: str):
  """(compiled step, initial state, batch, rng) of ``variant``."""
  from hyperrecon_jax import compilation
  from hyperrecon_jax import physics
  from hyperrecon_jax import train
  size = config.data.image_size
  with _change(variant):
    model = train.build_model(config)
    operator = physics.make_operator(config.task, (size, size))
    state = train.create_state(config, model, jax.random.key(0))
    batch = {"image": jax.random.uniform(jax.random.key(1),
                                         (config.train.batch_size, size, size))}
    rng = jax.random.key(2)
    step = jax.jit(train.make_train_step(config, model, operator),
                   compiler_options=compilation.training_options())  # as train.py
    return step.lower(state, batch, rng).compile(), state, batch, rng


def main(argv):
  del argv
  unknown = set(_VARIANTS.value) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
  image, batch, channels = (throughput._IMAGE.value, throughput._BATCH.value,
                            throughput._CHANNELS.value)
  size, iters, rounds = throughput._SIZES.value[0], throughput._ITERS.value, _ROUNDS.value
  if throughput._QUICK.value:
    image, batch, channels, size, iters, rounds = 32, 2, 8, "S", 2, 2
  variants = ["unchanged"] + [v for v in _VARIANTS.value if v != "unchanged"]
  runs, models = {}, {}
  for variant in variants:
    model_size = models[variant] = "unet" if variant == "shared_weights" else size
    config = throughput._config(model_size, image, batch, "float32",
                                throughput._STRATEGY.value, channels)
    runs[variant] = list(_compiled_step(config, variant))
  for run in runs.values():  # a first call of each, outside the timing
    run[1], metrics = run[0](*run[1:])
    jax.block_until_ready(metrics)
  times = {v: [] for v in variants}
  for _ in range(rounds):
    for variant in variants:
      step, state, data, rng = runs[variant]
      t0 = time.perf_counter()
      for _ in range(iters):
        state, metrics = step(state, data, rng)
      jax.block_until_ready(metrics)
      times[variant].append((time.perf_counter() - t0) / iters)
      runs[variant][1] = state
  for variant in variants:
    sec = statistics.median(times[variant])
    # Within a round the variants run seconds apart: the median of the
    # per-round differences follows a drifting machine better than the
    # difference of the medians.
    saved = statistics.median(a - b for a, b in zip(times["unchanged"], times[variant]))
    print(json.dumps({
        "benchmark": "ablate_train_step", "variant": variant, "model": models[variant],
        "image_size": image, "channels": channels, "batch": batch,
        "device": jax.devices()[0].device_kind,
        "ms_per_step": round(sec * 1e3, 2), "samples_per_s": round(batch / sec, 1),
        "ms_saved": round(saved * 1e3, 2),
        "ms_range": [round(min(times[variant]) * 1e3, 2), round(max(times[variant]) * 1e3, 2)],
    }))


if __name__ == "__main__":
  app.run(main)
