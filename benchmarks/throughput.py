r"""Throughput of HyperRecon training and λ-grid inference; one JSON line each.

  python benchmarks/throughput.py                 # paper scale: 256², batch 32, grid 100
  python benchmarks/throughput.py --quick         # seconds on a CPU
  python benchmarks/throughput.py --sizes=L --dtype=bfloat16 --strategy=vmap
  python benchmarks/throughput.py --sizes=L --dtype=float32 --dtype=bfloat16
  python benchmarks/throughput.py --sizes=unet,stack5 --benchmarks=train_step  # per-λ baselines
  python benchmarks/throughput.py --recipe=experiments/configs/pretrained_dc_tv.py \
      --benchmarks=train_step    # a config's own step, against train.py's steps/s

Measurements (``benchmark`` field):
  train_step: samples/s of the jitted training step (forward in training mode,
    MAE + SSIM with one λ per sample, backward, Adam) on random images. For
    ``stackN`` (N per-λ baseline Unets in one program) a sample counts once
    per Unet, so the value compares with N separate ``unet`` runs.
  grid: reconstructions/s for one slice at ``--grid`` λ values through
    `grid.reconstruct_grid`, the path of reconstruct.py and the explorer's single points
    (calls of the default chunk, ``--order``). A plain Unet, which ignores λ,
    reconstructs ``--grid`` different slices at one λ instead: as many
    forward passes, and no identical rows for XLA to share work between
    (one slice repeated runs faster than as many different slices);
    likewise its ``evaluate`` scores ``--batch``·``--grid`` slices at one λ.
  latency: milliseconds for one slice at one λ (one generated weight set),
    compiled as the explorer compiles it (`compilation.inference_jit`).
  memory: GiB the compiled training step needs on this backend (XLA's
    memory analysis: temporaries plus arguments and outputs not aliased to
    them), without running it: where the batch stops fitting.
  evaluate: (slice, λ) pairs/s scored by the path ``evaluate.py`` runs,
    `evaluate.evaluate_grid` (each slice measured with its own noise, then
    `grid.grid_metrics`: reconstruction and every metric, in its blocks of
    λ) of one batch of ``--batch`` slices at the ``--grid`` λ per
    hyperparameter (``lambdas`` of them: G, or G² for two hyperparameters),
    in calls of the default chunk, ``--order`` λ-major or slice-major (the
    line's ``order`` is the one that ran).
With ``--cost``, a train_step or evaluate line also has the work of one
sample or pair (a memory line, of one sample of the step it compiles without
running it), from XLA's cost analysis of the compiled programs on this
backend: ``gflop`` (operations; a convolution's multiply-adds count two) and
``gbyte`` (bytes its operations read and write, after fusion: on a GPU an
estimate of the memory traffic; on a CPU the caches absorb much of it), and
the rates reached, ``tflops`` and ``tbytes_per_s``. Compared with the
device's ceilings (`benchmarks/ceilings.py`), they say whether arithmetic or
memory bounds the program (a roofline). XLA counts a loop's body once, so
``evaluate``'s work is that of its loop bodies (one model call of the
default chunk with its metrics, one block of generated weights) times the
number of times the program runs them, padding included.
Each line also has the backend, device kind, jax version, the code's git
commit (None outside a checkout), compile seconds and settings (``iters`` and
``repeats`` of the timed ones).
Times are medians over ``--repeats`` timed runs of ``--iters`` calls, after a
warm-up call that compiles.
"""

import json
import os
import statistics
import sys
import time

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

# The benchmarked configs start from the experiments' complete default config;
# a mistake in the flags is one error line, as in the experiments' scripts.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments", "configs"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import cli
import default
import provenance
import xla_cost

_SIZES = flags.DEFINE_list("sizes", ["unet", "S", "M", "L"],
                           "Models: unet, S (d=4), M (d=32), L (d=128), stackN "
                           "(N baseline Unets trained together; train_step "
                           "only).")
_IMAGE = flags.DEFINE_integer("image_size", 256, "Image side.")
_BATCH = flags.DEFINE_integer("batch", 32, "Training batch size.")
_GRID = flags.DEFINE_integer("grid", 100, "λ values per slice for 'grid'.", lower_bound=1)
_DTYPE = flags.DEFINE_multi_enum("dtype", ["float32"], ["float32", "bfloat16"],
                                 "Activation dtype; repeat the flag to measure "
                                 "several in one process.")
_STRATEGY = flags.DEFINE_enum("strategy", "auto",
                              ["auto", "vmap", "loop"],
                              "Per-sample convolution strategy.")
_CHANNELS = flags.DEFINE_integer("channels", 32, "Unet features per level.")
_ITERS = flags.DEFINE_integer("iters", 20, "Calls per timed run.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs (median reported).",
                                 lower_bound=1)
_BENCH = flags.DEFINE_list("benchmarks", ["train_step", "grid", "latency", "evaluate"],
                           "Which measurements.")
_ORDER = flags.DEFINE_enum("order", "auto", ["auto", "slice", "lambda"],
                           "Order of the (slice, λ) pairs for 'evaluate' and 'grid'.")
_TAG = flags.DEFINE_string("tag", "", "A label copied into every line (e.g. the "
                           "code's commit when comparing trees).")
_COST = flags.DEFINE_bool("cost", False,
                          "Add the work per sample or pair and the rates reached "
                          "(train_step, evaluate; see the module docstring).")
cli.expand_home(sys.argv, "recipe")  # --recipe=~/file: the home folder, as --config's
_RECIPE = config_flags.DEFINE_config_file(
    "recipe", None, "A training config (e.g. experiments/configs/pretrained_dc_tv.py): its "
    "own model, task, loss, batch and image size instead of --sizes, to compare with "
    "the steps/s train.py logs for it.", lock_config=False)
_QUICK = flags.DEFINE_bool("quick", False,
                           "Tiny settings that finish in seconds on a CPU.")

HYPER_DIMS = {"unet": 0, "S": 4, "M": 32, "L": 128}
BENCHMARKS = ("train_step", "grid", "latency", "evaluate", "memory")


def _config(size: str, image: int, batch: int, dtype: str, strategy: str,
            channels: int):
  from hyperrecon_jax import hparams
  from hyperrecon_jax import train
  c = default.get_config()
  c.data.image_size = image
  if size.startswith("stack"):
    c.model.hyper_dim = 0
    c.hparams.baselines = tuple(tuple(float(v) for v in lam) for lam in
                                hparams.grid(int(size[5:]), 1))
  else:
    c.model.hyper_dim = HYPER_DIMS[size]
  c.model.channels = channels
  c.model.dtype = dtype
  c.model.strategy = strategy
  c.train.batch_size = batch
  train.check_config(c)
  return c


def _time(fn, iters: int, repeats: int, *, each: bool = False):
  """(median seconds per call, compile+first-call seconds).

  Calls are dispatched back to back and waited for at the end (a rate: the
  next call's dispatch overlaps this one's work), or with ``each`` one at a
  time (a latency: what one request waits, dispatch and work together).
  """
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  compile_s = time.perf_counter() - t0
  runs = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(iters):
      out = fn()
      if each:
        jax.block_until_ready(out)
    jax.block_until_ready(out)
    runs.append((time.perf_counter() - t0) / iters)
  return statistics.median(runs), compile_s


def _training_options(model) -> dict:
  """The XLA options ``train.py`` of the library under test compiles its step with.

  `gpu_suite.sh` times older trees with this script (``BASE=``): one from
  before `hyperrecon_jax.compilation` has none, and in older ones
  ``training_options`` takes the model.
  """
  try:
    from hyperrecon_jax import compilation
  except ImportError:
    return {}
  try:
    return compilation.training_options()
  except TypeError:
    return compilation.training_options(model)


def bench_train_step(config, state, iters, repeats):
  from hyperrecon_jax import physics
  from hyperrecon_jax import train
  size = config.data.image_size
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (size, size))
  step = jax.jit(train.make_train_step(config, model, operator), donate_argnums=0,
                 compiler_options=_training_options(model))  # as train.py
  holder = [state]
  batch = {"image": jax.random.uniform(jax.random.key(1),
                                       (config.train.batch_size, size, size))}
  rng = jax.random.key(2)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()  # what step(...) runs
  lower_s = time.perf_counter() - t0

  def run():
    holder[0], metrics = compiled(holder[0], batch, rng)
    return metrics["loss"]

  sec, compile_s = _time(run, iters, repeats)
  samples = _samples_per_step(model, config)
  cost = xla_cost.per_item(lambda: xla_cost.work(compiled), samples, sec) if _COST.value else {}
  return samples / sec, "samples/s", lower_s + compile_s, cost


def _samples_per_step(model, config) -> int:
  """Samples one training step trains: its batch, once for each Unet of a stack."""
  from hyperrecon_jax import train
  return max(len(train.stack_lambdas(model)), 1) * int(config.train.batch_size)


def bench_memory(config):
  """GiB of device memory the compiled training step needs (nothing runs)."""
  from hyperrecon_jax import physics
  from hyperrecon_jax import train
  size = config.data.image_size
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (size, size))
  state = jax.eval_shape(lambda: train.create_state(config, model, jax.random.key(0)))
  batch = {"image": jax.ShapeDtypeStruct((config.train.batch_size, size, size), jnp.float32)}
  t0 = time.perf_counter()
  compiled = jax.jit(train.make_train_step(config, model, operator), donate_argnums=0,
                     compiler_options=_training_options(model)).lower(  # as train.py
      state, batch, jax.random.key(2)).compile()
  m = compiled.memory_analysis()
  need = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
          - m.alias_size_in_bytes)
  cost = {}
  if _COST.value:
    cost = xla_cost.per_item(lambda: xla_cost.work(compiled), _samples_per_step(model, config))
  return need / 2 ** 30, "GiB", time.perf_counter() - t0, cost


def bench_grid(config, variables, grid, iters, repeats, order, *, latency=False):
  from hyperrecon_jax import compilation
  from hyperrecon_jax import grid as grid_lib
  from hyperrecon_jax import hparams
  from hyperrecon_jax import physics
  from hyperrecon_jax import train
  size = config.data.image_size
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (size, size))
  plain = config.model.hyper_dim == 0
  x = jax.random.uniform(jax.random.key(1), (grid if plain else 1, size, size))
  zf = operator.zero_filled(operator.measure(x, jax.random.key(2)))
  coeffs = hparams.coefficients(jnp.asarray(hparams.grid(max(grid, 2),
                                                         train.num_lambdas(config))[:grid]))
  if latency:
    apply = compilation.inference_jit(model.apply)
    sec, compile_s = _time(lambda: apply(variables, zf[:1], coeffs[0]), iters, repeats,
                           each=True)
    return sec * 1e3, "ms", compile_s, {}
  if plain:  # every slice once (see the module docstring)
    run = lambda: grid_lib.reconstruct_grid(model, variables, zf, coeffs[:1], order=order)
  else:
    run = lambda: grid_lib.reconstruct_grid(model, variables, zf[0], coeffs, order=order)
  sec, compile_s = _time(run, iters, repeats)
  ran = grid_lib.resolve_order(order, grid if plain else 1, grid_lib.default_chunk())
  return grid / sec, "reconstructions/s", compile_s, {"order": ran}


def bench_evaluate(config, variables, grid, iters, repeats, order):
  from hyperrecon_jax import evaluate
  from hyperrecon_jax import grid as grid_lib
  from hyperrecon_jax import hparams
  from hyperrecon_jax import physics
  from hyperrecon_jax import train
  size, batch = config.data.image_size, config.train.batch_size
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (size, size))
  lam = hparams.grid(grid, train.num_lambdas(config))
  if config.model.hyper_dim == 0:  # a plain Unet: batch·grid slices at one λ (see `grid`)
    batch, lam = batch * len(lam), lam[:1]
  x = np.asarray(jax.random.uniform(jax.random.key(1), (batch, size, size)))
  batches = [{"image": x, "volume": np.zeros(batch, np.int32),
              "slice": np.arange(batch), "valid": np.ones(batch, bool)}]
  run = lambda: evaluate.evaluate_grid(model, variables, operator, batches, lam,
                                       key=jax.random.key(2), per_slice=False, order=order)
  sec, compile_s = _time(run, iters, repeats)
  pairs = batch * len(lam)
  cost = {}
  if _COST.value:
    zf = operator.zero_filled(operator.measure(jnp.asarray(x), jax.random.key(2)))
    coeffs = hparams.coefficients(lam)
    cost = xla_cost.per_item(
        lambda: xla_cost.evaluate_work(model, variables, zf, x, coeffs, order), pairs, sec)
  ran = grid_lib.resolve_order(order, batch, grid_lib.default_chunk())
  return pairs / sec, "pairs/s", compile_s, {"lambdas": len(lam), "order": ran, **cost}


def _small(size: str) -> bool:
  return size in ("unet", "S") or size.startswith("stack")


def check_flags(quick_keeps=_small) -> tuple[list[str], tuple[int, int, int, int, int, int]]:
  """The models to measure and their settings, from the flags, refused before any work.

  Args:
    quick_keeps: whether ``--quick`` keeps a model of ``--sizes``; by default
      unet, S and stackN, the ones small enough for a smoke test.

  Returns:
    ``sizes`` (without those ``--quick`` leaves out) and ``(image, batch,
    grid, iters, repeats, channels)``.

  Raises:
    InputError: naming the flag, for settings ``--recipe`` or ``--quick``
      would ignore, a ``--quick`` with no model left, an unknown model or
      measurement.
  """
  from hyperrecon_jax import errors
  image, batch, grid = _IMAGE.value, _BATCH.value, _GRID.value
  iters, repeats, channels = _ITERS.value, _REPEATS.value, _CHANNELS.value
  sizes = _SIZES.value
  settings = ("sizes", "image_size", "batch", "channels", "dtype", "strategy")
  given = [f"--{n}" for n in settings if flags.FLAGS[n].present]
  if _RECIPE.value is not None and given:
    raise errors.InputError(f"--recipe takes its model and settings from the config; "
                            f"{', '.join(given)} would be ignored: override the recipe "
                            "instead, e.g. --recipe.model.channels=16")
  # Checked before anything runs: a misspelt name would otherwise stop the
  # script only after the measurements before it had compiled and run.
  unknown = [name for name in _BENCH.value if name not in BENCHMARKS]
  if unknown:
    raise errors.InputError(f"--benchmarks: unknown {unknown[0]!r}; use {list(BENCHMARKS)}")
  if _QUICK.value:  # smoke test: every code path, numbers meaningless
    overridden = [f"--{n}" for n in ("image_size", "batch", "grid", "iters", "repeats",
                                     "channels") if flags.FLAGS[n].present]
    if overridden:
      raise errors.InputError(f"--quick sets its own tiny {', '.join(overridden)}: drop it, "
                              "or drop --quick")
    image, batch, grid, iters, repeats, channels = 32, 2, 4, 2, 1, 8
    dropped = [s for s in sizes if not quick_keeps(s)]
    sizes = [s for s in sizes if s not in dropped]
    if not sizes and _RECIPE.value is None:
      kept = [s for s in (*HYPER_DIMS, "stackN") if quick_keeps(s)]
      raise errors.InputError(f"--quick measures {', '.join(kept)} only: nothing is left of "
                              f"--sizes={','.join(_SIZES.value)}")
    if dropped:
      print(f"--quick: {', '.join(dropped)} left out",
            file=sys.stderr)
  for size in sizes:
    if size not in HYPER_DIMS and not (size.startswith("stack")
                                       and size[5:].isdigit()):
      raise errors.InputError(f"--sizes: unknown model {size!r}; use "
                              f"{list(HYPER_DIMS)} or stackN")
    if size.startswith("stack") and int(size[5:]) < 2:
      raise errors.InputError(f"--sizes: {size} stacks {int(size[5:])} Unets; "
                              "a stack needs at least 2 (stack2, stack5, ...)")
  return sizes, (image, batch, grid, iters, repeats, channels)


def main(argv):
  del argv
  provenance.quiet_logs()
  from hyperrecon_jax import train
  from hyperrecon_jax.models import layers
  with cli.user_errors():
    sizes, (image, batch, grid, iters, repeats, channels) = check_flags()
    if _RECIPE.value is not None:  # the recipe's own settings, as train.py runs it
      train.check_config(_RECIPE.value)
      runs = [("recipe " + config_flags.get_config_filename(flags.FLAGS["recipe"]),
               _RECIPE.value)]
    else:
      runs = [(s, _config(s, image, batch, d, _STRATEGY.value, channels))
              for s in sizes for d in _DTYPE.value]
  for size, config in runs:
    # One initialization per model (the strategy does not change parameters);
    # the training benchmark donates its copy, so it runs last.
    state = train.create_state(config, train.build_model(config),
                               jax.random.key(0))
    variables = jax.tree_util.tree_map(jnp.copy, state.variables())
    names = sorted(_BENCH.value, key=lambda n: n == "train_step")
    for name in names:
      if name == "train_step":
        value, unit, compile_s, cost = bench_train_step(config, state, iters, repeats)
      elif name == "memory":
        value, unit, compile_s, cost = bench_memory(config)
      elif size.startswith("stack"):
        continue  # a stack is for training; its evaluation is the unet's
      elif name == "evaluate":
        value, unit, compile_s, cost = bench_evaluate(config, variables, grid, iters,
                                                      repeats, _ORDER.value)
      elif name in ("grid", "latency"):
        value, unit, compile_s, cost = bench_grid(config, variables, grid, iters, repeats,
                                                  _ORDER.value, latency=name == "latency")
      print(json.dumps({
          "benchmark": name, "model": size, "value": round(value, 3),
          "unit": unit, "image_size": int(config.data.image_size),
          "channels": int(config.model.channels),
          "batch": int(config.train.batch_size)
                   if name in ("train_step", "evaluate", "memory") else (
                       1 if name == "latency" else grid),
          **({"grid": grid} if name == "evaluate" else {}),
          "dtype": str(config.model.dtype),
          "strategy": ("one λ" if name == "latency" and size != "unet" else
                       layers.resolve_strategy(config.model.strategy)),
          **provenance.fields(),
          **({"iters": iters, "repeats": repeats} if name != "memory" else {}),
          "compile_s": round(compile_s, 2), **cost,
          **({"tag": _TAG.value} if _TAG.value else {}),
      }), flush=True)


if __name__ == "__main__":
  cli.run(main)
