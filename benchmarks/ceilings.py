r"""What the device can do at best: the ceilings a roofline compares with.

  python benchmarks/ceilings.py                  # sizes for a GPU
  python benchmarks/ceilings.py --quick          # seconds on a CPU

One JSON line per ceiling (``benchmark: "ceiling"``, ``kind``, ``dtype``):
  matmul: TFLOP/s of one square matrix product (2·n³ operations) at JAX's
    default precision (on a GPU a float32 product may use TF32 tensor cores,
    as may the model's float32 convolutions).
  conv3x3: TFLOP/s of the Unet's common convolution alone, 3×3 'SAME',
    ``--channels`` → ``--channels`` at ``--conv_size``², batch
    ``--conv_batch``, forward (2·9·C·C operations per output pixel): the
    rate a network made only of such convolutions would reach.
  conv3x3_gradient: the same convolution forward and both of its gradients
    (input and kernel: three times the operations), compiled as training
    steps are: a training step's ceiling. Each conv line names the
    ``convolutions`` its compiled program runs (3 here, 1 forward), so a
    convolution XLA deleted cannot pass as work done.
  elementwise: TB/s of ``x + 1`` over a large array, in place, counting the
    bytes read and the bytes written: the memory bandwidth a fused
    elementwise program sees (a roofline's memory ceiling).
`benchmarks/throughput.py --cost` reports the work per sample or pair of the
training step and of ``evaluate``'s path; dividing a ceiling by it gives the
rate the device could reach if that resource were the only limit. Times are
medians over ``--repeats`` runs of ``--iters`` calls after a warm-up call.
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

from hyperrecon_jax import compilation

_MATMUL = flags.DEFINE_integer("matmul_size", 8192, "Side n of the n×n matrix product.")
_ELEMENTS = flags.DEFINE_integer("elementwise_mib", 1024, "MiB of the float32 array read and "
                                 "written by the elementwise program.")
_CONV_SIZE = flags.DEFINE_integer("conv_size", 256, "Image side of the convolution.")
_CONV_BATCH = flags.DEFINE_integer("conv_batch", 32, "Batch of the convolution.")
_CHANNELS = flags.DEFINE_integer("channels", 32, "Input and output channels of the convolution.")
_DTYPE = flags.DEFINE_multi_enum("dtype", ["float32", "bfloat16"], ["float32", "bfloat16"],
                                 "Dtypes of the matrix product and the convolution.")
_ITERS = flags.DEFINE_integer("iters", 20, "Calls per timed run.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs (median reported).",
                                 lower_bound=1)
_QUICK = flags.DEFINE_bool("quick", False, "Small sizes that finish in seconds on a CPU.")


def _seconds(fn, args, iters, repeats):
  """Median seconds per call of ``fn``, jitted or compiled (after one untimed call)."""
  jax.block_until_ready(fn(*args))
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(iters):
      out = fn(*args)
    jax.block_until_ready(out)
    runs.append((time.perf_counter() - t0) / iters)
  return statistics.median(runs)


def matmul(n, dtype, iters, repeats):
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  sec = _seconds(jax.jit(jnp.matmul), (a, b), iters, repeats)
  return 2 * n ** 3 / sec / 1e12, {"n": n}


def _conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv3x3(size, batch, channels, dtype, iters, repeats, *, gradient=False):
  x = jax.random.normal(jax.random.key(0), (batch, size, size, channels), dtype)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, channels), dtype)
  flops = 2 * 9 * channels ** 2 * batch * size ** 2
  if gradient:  # the forward and both gradients of <conv(x, k), g>: three convolutions
    g = jax.random.normal(jax.random.key(2), (batch, size, size, channels), dtype)
    # The value is returned so that the forward convolution runs: the loss is
    # linear in it, so with the gradients alone XLA deletes it (two
    # convolutions' time counted as three's work).
    program = jax.jit(jax.value_and_grad(
        lambda x, k: jnp.vdot(_conv(x, k), g).astype(jnp.float32), argnums=(0, 1)),
        compiler_options=compilation.training_options())
    flops *= 3
  else:
    # Compiled as the model's programs are (on the CPU, forward programs use
    # XLA's own multi-threaded convolutions: `hyperrecon_jax.compilation`).
    program = jax.jit(_conv, compiler_options=compilation.inference_options())
  compiled = program.lower(x, kernel).compile()  # once: timed, and its convolutions counted
  sec = _seconds(compiled, (x, kernel), iters, repeats)
  return flops / sec / 1e12, {"image_size": size, "batch": batch, "channels": channels,
                              "convolutions": _convolutions(compiled)}


def _convolutions(compiled) -> int:
  """How many convolutions a compiled program runs (3 forward and gradients, else 1)."""
  return sum(1 for line in compiled.as_text().splitlines()
             if " convolution(" in line or ("custom-call" in line and "conv" in line.lower()))


def elementwise(mib, iters, repeats):
  # In place (the input donated): a fresh output buffer per call would time
  # the allocator's page faults too.
  add = jax.jit(lambda x: x + 1, donate_argnums=0)
  holder = [jnp.zeros((mib * 2 ** 18,), jnp.float32)]  # 4-byte elements
  nbytes = holder[0].nbytes

  def step():
    holder[0] = add(holder[0])
    return holder[0]

  sec = _seconds(step, (), iters, repeats)
  return 2 * nbytes / sec / 1e12, {"mib": mib}


def main(argv):
  del argv
  provenance.quiet_logs()
  n, mib, iters, repeats = _MATMUL.value, _ELEMENTS.value, _ITERS.value, _REPEATS.value
  size, batch, channels = _CONV_SIZE.value, _CONV_BATCH.value, _CHANNELS.value
  if _QUICK.value:
    n, mib, iters, repeats, size, batch = 512, 64, 3, 1, 64, 4
  lines = []
  for dtype in _DTYPE.value:
    lines.append(("matmul", dtype, *matmul(n, jnp.dtype(dtype), iters, repeats)))
    for gradient in (False, True):
      lines.append(("conv3x3_gradient" if gradient else "conv3x3", dtype,
                    *conv3x3(size, batch, channels, jnp.dtype(dtype), iters, repeats,
                             gradient=gradient)))
  lines.append(("elementwise", "float32", *elementwise(mib, iters, repeats)))
  for kind, dtype, value, settings in lines:
    print(json.dumps({
        "benchmark": "ceiling", "kind": kind, "dtype": dtype, "value": round(value, 4),
        "unit": "TB/s" if kind == "elementwise" else "TFLOP/s", **settings,
        **provenance.fields(),
    }), flush=True)


if __name__ == "__main__":
  cli.run(main)
