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
op's kind (``convolution``, ``fusion``, ``dot``, …) and by name. Each of the
top operations is described by its instruction in the compiled program
(``top_ops_hlo``: result shape, window, groups, the fused operations), so that
``cudnn-conv.39`` says which convolution it is; ``--hlo_dir`` writes the
whole optimized program.

On a GPU, XLA launches sequences of kernels as CUDA graphs ("command buffers"), and a
trace sees one ``command_buffer_N`` event for each, whatever it holds; the
profiled step is therefore compiled without them (``--command_buffers`` keeps
them: the step as `train.py` runs it, its operations hidden). The untraced
wall time is of the step as profiled.
"""

import collections
import json
import os
import re
import sys
import tempfile
import time

from absl import flags
import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                "experiments"))
import cli  # noqa: E402
import provenance
import throughput  # noqa: E402  (its flags: --sizes, --image_size, --batch, ...)

_STEPS = flags.DEFINE_integer("steps", 5, "Profiled steps (after 2 warm-up steps).",
                              lower_bound=1)
_TOP = flags.DEFINE_integer("top", 15, "Operations listed.")
_COMMAND_BUFFERS = flags.DEFINE_bool(
    "command_buffers", False,
    "Keep XLA's GPU command buffers (CUDA graphs) in the profiled step: its "
    "operations are then traced as opaque command_buffer_N events.")
_HLO_DIR = cli.define_path(
    "hlo_dir", None, "Write each profiled step's optimized HLO text here.")

COMMAND_BUFFER_OPTION = "xla_gpu_enable_command_buffer"


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
  # Python frames ('$file:line') and the runtime's own ('Class::Method',
  # 'ParseArguments', 'Handle inputs'): HLO instruction names are lowercase
  # words joined by '.', '_' or '-' ('fusion.12', 'copy_fusion').
  for plane in profile.planes:
    if plane.name.startswith("/host:CPU"):
      for line in plane.lines:
        for event in line.events:
          if re.fullmatch(r"[a-z][a-z0-9_.\-]*", event.name):
            yield event.name, event.duration_ns * 1e-9


def _layout(profile) -> dict:
  """Plane → line names of a trace: printed when no operation was found."""
  return {p.name: sorted({line.name for line in p.lines})[:20] for p in profile.planes}


def _kind(name: str) -> str:
  """``'%fusion.12'`` → ``'fusion'``; ``'convolution.3'`` → ``'convolution'``."""
  return re.sub(r"[.\d]+$", "", name.lstrip("%")) or name


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_ATTRIBUTES = ("window", "dim_labels", "feature_group_count", "batch_group_count",
               "custom_call_target")


def _head(rhs: str) -> tuple[str, str]:
  """``(result shape, opcode)`` of an instruction's text after ``name =``."""
  head = re.match(r"(.*?)\s([\w\-]+)\(", rhs)
  return (head.group(1), head.group(2)) if head else ("", "")


def _attributes(rhs: str, shapes: dict) -> list:
  """Operand shapes, convolution attributes, custom-call target and source op of an instruction.

  Args:
    rhs: the instruction's text after ``name =``.
    shapes: instruction name → result shape, for operands printed by name.
  """
  call = re.search(r"\s[\w\-]+\(([^)]*)\)", rhs)
  # Operands print as '%name' or, in some versions, as 'f32[1,2]{1,0} %name'.
  pairs = re.findall(r"(?:([a-z]+\d*\[[\d,]*\])(?:\{[^}]*\})?\s+)?%([\w.\-]+)",
                     call.group(1) if call else "")
  operands = [shape or shapes.get(name, "?").split("{")[0] for shape, name in pairs]
  found = (re.search(rf"{name}=(\"[^\"]*\"|\{{[^}}]*\}}|[^,\s]+)", rhs)
           for name in _ATTRIBUTES)
  parts = [f"operands {', '.join(operands)}"] if operands else []
  parts += [f"{name}={match.group(1)}" for name, match in zip(_ATTRIBUTES, found) if match]
  source = re.search(r'op_name="([^"]*)"', rhs)
  if source:  # the JAX operation it came from, e.g. .../HyperUnet/body/conv_general_dilated
    parts.append("from " + source.group(1)[-120:])
  return parts


def _computations(hlo: str) -> dict:
  """Computation name → ``{instruction name: its text after 'name ='}``, from a module's text."""
  bodies, name = {}, None
  for line in hlo.splitlines():
    instruction = _INSTRUCTION.match(line)
    header = re.match(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if header and not instruction:
      name = header.group(1)
      bodies[name] = {}
    elif line.strip() == "}":
      name = None
    elif name is not None and instruction:
      bodies[name][instruction.group(1)] = instruction.group(2)
  return bodies


def describe_ops(hlo: str, names) -> dict:
  """A short description of each named instruction of an optimized HLO module.

  Args:
    hlo: the module's text (``compiled.as_text()``).
    names: instruction names, as a profile's events give them.

  Returns:
    ``{name: description}``: the instruction's result shape and opcode, its
    convolution attributes (window, dimension labels, groups) and custom-call
    target; for a fusion, the opcodes it fuses with their counts. Names not in
    the module are left out.
  """
  bodies = _computations(hlo)
  lines = {k: rhs for body in bodies.values() for k, rhs in body.items()}
  shapes = {k: _head(rhs)[0] for k, rhs in lines.items()}
  described = {}
  for name in names:
    rhs = lines.get(name.lstrip("%"))
    if rhs is None:
      continue
    shape, opcode = _head(rhs)
    parts = [f"{opcode} {shape}".strip()] + _attributes(rhs, shapes)
    called = re.search(r"calls=%?([\w.\-]+)", rhs)
    if called and called.group(1) in bodies:
      body = bodies[called.group(1)]
      # Names such as param_0 recur in every fused computation: this one's first.
      local = {**shapes, **{k: _head(inner)[0] for k, inner in body.items()}}
      opcodes = collections.Counter()
      for inner in body.values():
        inner_shape, op = _head(inner)
        if op and op not in ("parameter", "constant", "tuple", "get-tuple-element",
                             "bitcast"):
          opcodes[op] += 1
          if op in ("convolution", "custom-call"):
            # A convolution wrapped in a fusion: its shapes and window say which.
            parts += [f"{op} {inner_shape}"] + _attributes(inner, local)
      parts.append("fuses " + ", ".join(f"{k}×{v}" for k, v in opcodes.most_common(8)))
    described[name] = "; ".join(parts)[:600]
  return described


def profile_train_step(config, state, steps, command_buffers: bool = False):
  """Traces ``steps`` training steps.

  Args:
    config: the experiment config of the step.
    state: its initial training state (donated).
    steps: steps traced, and steps timed untraced before them.
    command_buffers: whether a GPU step keeps XLA's command buffers.

  Returns:
    ``(by_name, by_kind, wall, hlo)``: traced seconds per step by operation
    name and by kind, the untraced wall-clock seconds per step, and the
    compiled step's optimized HLO text.
  """
  from hyperrecon_jax import compilation
  from hyperrecon_jax import physics
  from hyperrecon_jax import train
  size = config.data.image_size
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (size, size))
  options = dict(compilation.training_options())  # as train.py
  if not command_buffers and jax.default_backend() == "gpu":
    options[COMMAND_BUFFER_OPTION] = ""  # no command buffer types: every kernel traced
  batch = {"image": jax.random.uniform(jax.random.key(1),
                                       (config.train.batch_size, size, size))}
  rng = jax.random.key(2)
  # The executable whose names the trace reports is the one described.
  step = jax.jit(train.make_train_step(config, model, operator), donate_argnums=0,
                 compiler_options=options).lower(state, batch, rng).compile()
  hlo = step.as_text()
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
  return by_name, by_kind, wall, hlo


def main(argv):
  del argv
  provenance.quiet_logs()
  from hyperrecon_jax import errors
  from hyperrecon_jax import train
  with cli.user_errors():
    if throughput._RECIPE.value is not None:
      raise errors.InputError("--recipe: profile_step.py profiles the --sizes models; a "
                              "recipe's model is throughput.py's")
    sizes, (image, batch, _, _, _, channels) = throughput.check_flags(
        quick_keeps=lambda size: size == "S")
  steps = 2 if throughput._QUICK.value else _STEPS.value
  for size, dtype in [(s, d) for s in sizes for d in throughput._DTYPE.value]:
    config = throughput._config(size, image, batch, dtype, throughput._STRATEGY.value,
                                channels)
    state = train.create_state(config, train.build_model(config), jax.random.key(0))
    by_name, by_kind, wall, hlo = profile_train_step(config, state, steps,
                                                     _COMMAND_BUFFERS.value)
    if _HLO_DIR.value:
      os.makedirs(_HLO_DIR.value, exist_ok=True)
      path = os.path.join(_HLO_DIR.value, f"train_step_{size}_{image}_{batch}_{dtype}.hlo.txt")
      with open(path, "w") as f:
        f.write(hlo)
    total = sum(by_kind.values())
    ms = lambda v: round(v * 1e3, 3)
    top = [name for name, _ in by_name.most_common(_TOP.value)]
    print(json.dumps({
        "benchmark": "profile_train_step", "model": size, "image_size": image,
        "channels": channels, "batch": batch, "dtype": dtype,
        **provenance.fields(),
        "wall_ms_per_step": ms(wall), "traced_ms_per_step": ms(total),
        "by_kind_ms": {k: ms(v) for k, v in by_kind.most_common(_TOP.value)},
        "top_ops_ms": {k: ms(by_name[k]) for k in top},
        "top_ops_hlo": describe_ops(hlo, top),
        "command_buffers": _COMMAND_BUFFERS.value if jax.default_backend() == "gpu" else None,
    }), flush=True)


if __name__ == "__main__":
  cli.run(main)
