r"""Where a training step's device time goes: the top operations of a profile.

  python benchmarks/profile_step.py --sizes=L --dtype=float32 --dtype=bfloat16
  python benchmarks/profile_step.py --quick                       # seconds on a CPU

Runs a few training steps of `benchmarks/throughput.py`'s models under
``jax.profiler.trace`` and reads the trace back with ``jax.profiler.ProfileData``
(no TensorBoard needed): on a GPU the ``XLA Ops`` line of the device plane,
whose events are the HLO operations each kernel belongs to; on a CPU the
host threads' events. Prints one JSON line per model with the wall time of a step
(untraced), the total traced operation time per step (below the wall time,
the device waits for the host) and the operations that take most of it, grouped by the HLO
op's kind (``convolution``, ``fusion``, ``dot``, …) and by name.
"""

import collections
import json
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  (its flags: --sizes, --image_size, --batch, ...)

_STEPS = flags.DEFINE_integer("steps", 5, "Profiled steps (after 2 warm-up steps).")
_TOP = flags.DEFINE_integer("top", 15, "Operations listed.")


def _device_events(profile):
  """(name, seconds) of every traced device operation.

  On a GPU: the ``XLA Ops`` line of each device plane when the trace has one,
  else every kernel of its ``Stream`` lines, named by the HLO op it belongs to
  (the event's ``hlo_op`` stat) where the trace says so.
  """
  gpu = [p for p in profile.planes if p.name.startswith("/device:GPU")]
  if gpu:
    for plane in gpu:
      lines = [line for line in plane.lines if line.name == "XLA Ops"] or [
          line for line in plane.lines if line.name.startswith("Stream")]
      for line in lines:
        for event in line.events:
          stats = dict(event.stats)
          yield str(stats.get("hlo_op", event.name)), event.duration_ns * 1e-9
    return
  # On a CPU the XLA operations are events of the host threads, beside the
  # Python frames ('$file:line') and the runtime's own ('Class::Method').
  for plane in profile.planes:
    if plane.name.startswith("/host:CPU"):
      for line in plane.lines:
        for event in line.events:
          if not (event.name.startswith("$") or "::" in event.name
                  or "(" in event.name):
            yield event.name, event.duration_ns * 1e-9


def _layout(profile) -> dict:
  """Plane → line names of a trace: printed when no operation was found."""
  return {p.name: sorted({line.name for line in p.lines})[:20] for p in profile.planes}


def _kind(name: str) -> str:
  """``'%fusion.12'`` → ``'fusion'``; ``'convolution.3'`` → ``'convolution'``."""
  return re.sub(r"[.\d]+$", "", name.lstrip("%")) or name


def profile_train_step(config, state, steps):
  """Traces ``steps`` training steps.

  Returns:
    ``(by_name, by_kind, wall)``: traced seconds per step by operation name and
    by kind, and the untraced wall-clock seconds per step.
  """
  from hyperrecon_jax import compilation
  from hyperrecon_jax import physics
  from hyperrecon_jax import train
  size = config.data.image_size
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (size, size))
  step = jax.jit(train.make_train_step(config, model, operator), donate_argnums=0,
                 compiler_options=compilation.training_options())  # as train.py
  batch = {"image": jax.random.uniform(jax.random.key(1),
                                       (config.train.batch_size, size, size))}
  rng = jax.random.key(2)
  for _ in range(2):  # compile and warm up outside the trace
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(metrics)
  wall = (time.perf_counter() - t0) / steps
  with tempfile.TemporaryDirectory() as folder:
    with jax.profiler.trace(folder):
      for _ in range(steps):
        state, metrics = step(state, batch, rng)
      jax.block_until_ready(metrics)
    paths = [os.path.join(d, f) for d, _, files in os.walk(folder)
             for f in files if f.endswith(".xplane.pb")]
    if not paths:
      raise RuntimeError(f"jax.profiler.trace wrote no .xplane.pb under {folder}")
    profile = jax.profiler.ProfileData.from_file(paths[0])
    by_name, by_kind = collections.Counter(), collections.Counter()
    for name, sec in _device_events(profile):
      by_name[name] += sec / steps
      by_kind[_kind(name)] += sec / steps
    if not by_name:
      print(f"no device operations found in the trace; its layout: {_layout(profile)}",
            file=sys.stderr)
  return by_name, by_kind, wall


def main(argv):
  del argv
  from hyperrecon_jax import train
  image, batch = throughput._IMAGE.value, throughput._BATCH.value
  channels = throughput._CHANNELS.value
  sizes, steps = throughput._SIZES.value, _STEPS.value
  if throughput._QUICK.value:
    image, batch, channels, sizes, steps = 32, 2, 8, ["S"], 2
  for size, dtype in [(s, d) for s in sizes for d in throughput._DTYPE.value]:
    config = throughput._config(size, image, batch, dtype, throughput._STRATEGY.value,
                                channels)
    state = train.create_state(config, train.build_model(config), jax.random.key(0))
    by_name, by_kind, wall = profile_train_step(config, state, steps)
    total = sum(by_kind.values())
    ms = lambda v: round(v * 1e3, 3)
    print(json.dumps({
        "benchmark": "profile_train_step", "model": size, "image_size": image,
        "channels": channels, "batch": batch, "dtype": dtype,
        "device": jax.devices()[0].device_kind,
        "wall_ms_per_step": ms(wall), "traced_ms_per_step": ms(total),
        "by_kind_ms": {k: ms(v) for k, v in by_kind.most_common(_TOP.value)},
        "top_ops_ms": {k: ms(v) for k, v in by_name.most_common(_TOP.value)},
    }), flush=True)


if __name__ == "__main__":
  app.run(main)
