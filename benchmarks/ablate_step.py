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
                    saves; on a GPU the two are the same program);
  thin_patches      another form of the same model: every per-sample 3×3
                    convolution with at most 8 input channels (the first,
                    2 → c) as one batched matrix product of its input's 3×3
                    patches and the kernel, instead of a grouped convolution
                    with 2 channels per group (a negative cost is what the
                    form saves);
  thin_padded       the same function again: those convolutions' inputs and
                    kernels padded with zero channels to 8 input channels,
                    a grouped convolution with 8 channels per group.

One JSON line per variant, with the seconds its step took to trace and
compile (``compile_s``; the variants compile one after the other, the first
one also warms up the process). These are measurements of parts, not options: a
variant trains a different model (``default_schedule``, ``thin_patches`` and
``thin_padded`` alone compute the same function). ``--dtype=bfloat16`` ablates
the step with bfloat16 activations.
"""

import contextlib
import json
import os
import statistics
import sys
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                "experiments"))
import cli
import provenance
import throughput  # noqa: E402  (its flags: --sizes, --image_size, --batch, ...)

VARIANTS = ("unchanged", "no_batchnorm", "no_ssim", "nearest_upsample", "shared_weights",
            "default_schedule", "thin_patches", "thin_padded")
THIN = 8  # thin_*: per-sample convolutions with at most this many input channels
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"Some of {VARIANTS}.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed rounds; each times every variant once.",
                               lower_bound=1)


@contextlib.contextmanager
def _replaced(owner, name, value):
  old = getattr(owner, name)
  setattr(owner, name, value)
  try:
    yield
  finally:
    setattr(owner, name, old)


def patches_conv(x, kernel, bias, dtype):
  """A per-sample 'SAME' convolution as one batched product of patches and kernels.

  ``y[b, h, w, o] = Σ_{i, j, c} xpad[b, h + i, w + j, c] · kernel[b, i, j, c, o] + bias[b, o]``,
  the 3×3 patches stacked along the channels in the kernel's (i, j, c) order.

  Args:
    x: (B, H, W, C) activations.
    kernel: (B, k, k, C, O) per-sample kernels.
    bias: (B, O) per-sample biases.
    dtype: computation and result dtype (`layers.conv2d`'s).

  Returns:
    (B, H, W, O) of ``dtype``.
  """
  b, h, w, c = x.shape
  k, o = kernel.shape[1], kernel.shape[-1]
  lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
  padded = jnp.pad(x.astype(dtype), ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  patches = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(k)
                             for j in range(k)], axis=-1)
  y = jnp.einsum("bhwp,bpo->bhwo", patches, kernel.reshape(b, k * k * c, o).astype(dtype))
  return (y.astype(jnp.float32) + bias.astype(jnp.float32)[:, None, None, :]).astype(dtype)


def padded_conv(conv2d, x, kernel, bias, *, strategy, dtype):
  """A per-sample convolution with its input channels zero-padded to ``THIN``.

  The added input channels are zero and so are their kernel taps: the same
  function, as a grouped convolution of ``THIN`` channels per group.
  """
  extra = THIN - x.shape[-1]
  x = jnp.pad(x, ((0, 0),) * 3 + ((0, extra),))
  kernel = jnp.pad(kernel, ((0, 0),) * 3 + ((0, extra), (0, 0)))
  return conv2d(x, kernel, bias, per_sample=True, strategy=strategy, dtype=dtype)


def _thin_conv2d(conv2d, form: str):
  """`layers.conv2d` with its thin per-sample 3×3 convolutions in another form.

  Args:
    conv2d: the original `layers.conv2d`.
    form: ``'patches'`` (`patches_conv`) or ``'padded'`` (`padded_conv`).
  """
  def replaced(x, kernel, bias, *, per_sample, strategy, dtype=jnp.float32):
    if per_sample and kernel.shape[1] > 1 and kernel.shape[3] <= THIN:
      if form == "patches":
        return patches_conv(x, kernel, bias, dtype)
      return padded_conv(conv2d, x, kernel, bias, strategy=strategy, dtype=dtype)
    return conv2d(x, kernel, bias, per_sample=per_sample, strategy=strategy, dtype=dtype)
  return replaced


def check_thin_forms():
  """Raises if `patches_conv` or `padded_conv` is not `layers.conv2d`'s per-sample convolution.

  A (2, 16, 16, 2) → 8 float32 case on the default device, at full float32
  precision (a GPU's default lets convolutions and products round their
  inputs to TF32's 10-bit mantissa); the forms then differ by the order of 18
  float32 products' sum only (tolerance 1e-5 on values of order 1).
  """
  from hyperrecon_jax.models import layers
  keys = jax.random.split(jax.random.key(3), 3)
  x = jax.random.normal(keys[0], (2, 16, 16, 2))
  kernel = jax.random.normal(keys[1], (2, 3, 3, 2, 8)) / 3
  bias = jax.random.normal(keys[2], (2, 8))
  with jax.default_matmul_precision("highest"):
    want = layers.conv2d(x, kernel, bias, per_sample=True, strategy="vmap")
    forms = (patches_conv(x, kernel, bias, jnp.float32),
             padded_conv(layers.conv2d, x, kernel, bias, strategy="vmap", dtype=jnp.float32))
  for got in forms:
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5)


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
  if variant in ("thin_patches", "thin_padded"):
    from hyperrecon_jax.models import layers
    return _replaced(layers, "conv2d", _thin_conv2d(layers.conv2d, variant[5:]))
  if variant == "default_schedule":
    options = {k: v for k, v in compilation.training_options().items()
               if k != compilation.SCHEDULER_OPTION}
    return _replaced(compilation, "training_options", lambda: options)
  return contextlib.nullcontext()


def _compiled_step(config, variant: str):
  """``variant``'s (compiled step, initial state, batch, rng, seconds to trace and compile)."""
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
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    return compiled, state, batch, rng, time.perf_counter() - t0


def main(argv):
  del argv
  provenance.quiet_logs()
  from hyperrecon_jax import errors
  from hyperrecon_jax.models import layers
  image, batch, channels = (throughput._IMAGE.value, throughput._BATCH.value,
                            throughput._CHANNELS.value)
  sizes, iters, rounds = throughput._SIZES.value, throughput._ITERS.value, _ROUNDS.value
  # One HyperRecon: without --sizes, throughput's list starts with the plain
  # Unet, and 'shared_weights' would compare a Unet with itself.
  if not flags.FLAGS["sizes"].present:
    sizes = ["S"]
  with cli.user_errors():
    unknown = set(_VARIANTS.value) - set(VARIANTS)
    if unknown:
      raise errors.InputError(f"--variants: unknown {sorted(unknown)}; choose from {VARIANTS}")
    if len(sizes) != 1 or sizes[0] not in ("S", "M", "L"):
      raise errors.InputError(
          f"--sizes must name one HyperRecon (S, M or L), got {','.join(sizes)}")
  size = sizes[0]
  if throughput._QUICK.value:
    image, batch, channels, size, iters, rounds = 32, 2, 8, "S", 2, 2
  variants = ["unchanged"] + [v for v in _VARIANTS.value if v != "unchanged"]
  dtype = throughput._DTYPE.value[0]
  if {"thin_patches", "thin_padded"} & set(variants):
    check_thin_forms()
  runs, models, compile_s = {}, {}, {}
  for variant in variants:
    model_size = models[variant] = "unet" if variant == "shared_weights" else size
    config = throughput._config(model_size, image, batch, dtype,
                                throughput._STRATEGY.value, channels)
    *run, compile_s[variant] = _compiled_step(config, variant)
    runs[variant] = run
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
        "image_size": image, "channels": channels, "batch": batch, "dtype": dtype,
        "strategy": layers.resolve_strategy(throughput._STRATEGY.value),
        **provenance.fields(),
        "ms_per_step": round(sec * 1e3, 2), "samples_per_s": round(batch / sec, 1),
        "ms_saved": round(saved * 1e3, 2),
        "ms_range": [round(min(times[variant]) * 1e3, 2), round(max(times[variant]) * 1e3, 2)],
        "compile_s": round(compile_s[variant], 2),
    }))


if __name__ == "__main__":
  cli.run(main)
