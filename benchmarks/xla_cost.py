"""The work of a compiled program, from XLA's cost analysis: throughput.py's ``--cost``."""

import math
import re

import jax
import jax.numpy as jnp


def work(compiled) -> tuple[float, float]:
  """(operations, bytes accessed) of a compiled program without loops of any size.

  XLA's cost analysis counts a loop's body once, so a program with a loop
  over sizeable arrays is refused; the random number generator's loops
  (threefry's rounds, a few words each) are counted once, and are negligible.
  """
  for line in compiled.as_text().splitlines():
    if " while(" in line:
      carried = line.split(" while(")[0]
      elements = sum(math.prod(int(d) for d in dims.split(",") if d)
                     for dims in re.findall(r"[a-z]+[0-9]*\[([0-9,]*)\]", carried))
      if elements > 2 ** 16:
        raise ValueError(f"the program loops over {elements} elements; XLA's cost analysis "
                         "counts a loop's body once")
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one per device
  if not cost or "flops" not in cost or "bytes accessed" not in cost:
    raise ValueError(f"XLA's cost analysis gave {cost!r}")
  return float(cost["flops"]), float(cost["bytes accessed"])


def per_item(work, items, sec=None) -> dict:
  """The --cost fields of a line: ``work()`` done for ``items`` in ``sec`` seconds.

  Without ``sec`` (a program compiled, not run: ``memory``), the work alone.

  Where the work cannot be counted, the line says why (``cost``) and keeps
  its rate: a one-off GPU run loses no measurement to it.
  """
  try:
    flops, nbytes = work()
  except Exception as e:  # any backend's refusal is reported, not raised
    return {"cost": f"not counted: {e}"}
  out = {"gflop": round(flops / items / 1e9, 4), "gbyte": round(nbytes / items / 1e9, 4)}
  if sec is not None:
    out.update(tflops=round(flops / sec / 1e12, 4), tbytes_per_s=round(nbytes / sec / 1e12, 4))
  return out


def evaluate_work(model, variables, zf, target, coeffs, order) -> tuple[float, float]:
  """(operations, bytes) of `grid.grid_metrics`' program: its loop bodies × their trips.

  One program over every λ; `evaluate.evaluate_grid` runs the same pairs in
  balanced blocks of λ, so its work per pair is this one's (up to the weights
  generated once per block, and the repeats of a block that wraps around).
  """
  from hyperrecon_jax import compilation
  from hyperrecon_jax import grid as grid_lib
  from hyperrecon_jax import physics
  s_count, g_count = zf.shape[0], coeffs.shape[0]
  chunk = grid_lib.default_chunk()
  order = grid_lib.resolve_order(order, s_count, chunk)
  options = compilation.inference_options()
  zf_mag = physics.magnitude(zf)
  rows = grid_lib._call_size(order, chunk, s_count, s_count * g_count)  # as grid_metrics
  if order == "lambda":
    block = grid_lib.balanced(grid_lib.LAMBDA_BLOCK, g_count)
    blocks = -(-g_count // block)
    generate = jax.jit(lambda v, c: model.apply(v, c, method="evaluation_weights"),
                       compiler_options=options)
    weights = generate.lower(variables, coeffs[:block]).compile()
    one = jax.tree_util.tree_map(lambda w: jax.ShapeDtypeStruct(w.shape[1:], w.dtype),
                                 weights.out_info)  # one λ's weights
    call = jax.jit(lambda v, w, z, t, m: grid_lib._slice_metrics(
        model.apply(v, w, z, method="reconstruct_with"), t, m), compiler_options=options)
    body = call.lower(variables, one, zf[:rows], target[:rows], zf_mag[:rows]).compile()
    trips = blocks * block * -(-s_count // rows)
    return tuple(blocks * a + trips * b for a, b in zip(work(weights), work(body)))
  call = jax.jit(lambda v, z, c, t, m: grid_lib._slice_metrics(model.apply(v, z, c), t, m),
                 compiler_options=options)
  s, g = jnp.arange(rows) // g_count % s_count, jnp.arange(rows) % g_count  # as the program
  body = call.lower(variables, zf[s], coeffs[g], target[s], zf_mag[s]).compile()
  return tuple(-(-s_count * g_count // rows) * b for b in work(body))
