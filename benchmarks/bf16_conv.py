r"""Is a bfloat16 convolution faster when its result is bfloat16 too?

  python benchmarks/bf16_conv.py                       # 256², batch 32, 32 channels
  python benchmarks/bf16_conv.py --size=32 --batch=4 --iters=2   # seconds on a CPU

A bfloat16 convolution can be asked for a float32 result
(``preferred_element_type=float32``), then have the bias added and be cast to
bfloat16. If the convolution writes that float32 result to memory before the
cast, a layer moves 4 + 4 + 2 bytes per output element where a bfloat16 result
would move 2, and bfloat16 activations gain little over float32. This times
one 3×3 'SAME' convolution with bias, forward and backward, three ways:
float32; bfloat16 with a float32 result then cast; bfloat16 with a bfloat16
result (the way of `models.layers`; the accelerator still accumulates in
float32). Each both shared (one kernel for the batch)
and per-sample (one kernel per row, ``vmap``: one grouped convolution, the
GPU strategy). One JSON line per measurement.
"""

import json
import os
import statistics
import sys
import time

from absl import flags
import jax
import jax.numpy as jnp
import provenance

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                "experiments"))
import cli  # noqa: E402  (one-line flag errors, as the other benchmarks)

_SIZE = flags.DEFINE_integer("size", 256, "Image side.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.")
_CHANNELS = flags.DEFINE_integer("channels", 32, "Input and output channels.")
_ITERS = flags.DEFINE_integer("iters", 50, "Calls per timed run.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs (median reported).",
                                 lower_bound=1)


def _conv(x, kernel, bias, way):
  if way == "float32":
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias
  bf16 = jnp.bfloat16
  if way == "bf16_via_f32":
    y = jax.lax.conv_general_dilated(x.astype(bf16), kernel.astype(bf16), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     preferred_element_type=jnp.float32)
    return (y + bias).astype(bf16)
  y = jax.lax.conv_general_dilated(x.astype(bf16), kernel.astype(bf16), (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return (y.astype(jnp.float32) + bias).astype(bf16)


def _program(way, per_sample):
  def loss(x, kernel, bias):
    if per_sample:
      out = jax.vmap(lambda xi, ki: _conv(xi[None], ki, bias, way)[0])(x, kernel)
    else:
      out = _conv(x, kernel, bias, way)
    return jnp.sum(out.astype(jnp.float32) ** 2)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def main(argv):
  del argv
  provenance.quiet_logs()
  b, s, c = _BATCH.value, _SIZE.value, _CHANNELS.value
  dtype = jnp.bfloat16
  k1, k2 = jax.random.split(jax.random.key(0))
  for per_sample in (False, True):
    kshape = (b, 3, 3, c, c) if per_sample else (3, 3, c, c)
    for way in ("float32", "bf16_via_f32", "bf16"):
      # Activations between layers are what the model stores: bfloat16 for
      # the two bfloat16 ways.
      x = jax.random.normal(k1, (b, s, s, c), jnp.float32 if way == "float32" else dtype)
      kernel = 0.1 * jax.random.normal(k2, kshape, jnp.float32)
      bias = jnp.zeros((c,), jnp.float32)
      fn = _program(way, per_sample)
      t0 = time.perf_counter()
      jax.block_until_ready(fn(x, kernel, bias))
      compile_s = time.perf_counter() - t0
      times = []
      for _ in range(_REPEATS.value):
        t0 = time.perf_counter()
        for _ in range(_ITERS.value):
          out = fn(x, kernel, bias)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / _ITERS.value)
      print(json.dumps({
          "benchmark": "bf16_conv", "way": way, "per_sample": per_sample,
          "ms": round(1e3 * statistics.median(times), 4), "size": s, "batch": b,
          "channels": c, **provenance.fields(),
          "compile_s": round(compile_s, 2)}))


if __name__ == "__main__":
  cli.run(main)
