"""What the tests of the training step share: tiny configs, test images, and
steps compiled ahead, two at a time (tests/test_train_step.py, tests/test_train_step_dhs.py).

Tiny shapes: 16×16 images, 4 channels, hypernetwork width 4, batch 2 or 4.
"""

import concurrent.futures
import contextlib
from typing import Any
from typing import NamedTuple

import configs
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import physics
from hyperrecon_jax import train

SIZE = 16
BATCH = 2
FAMILIES = {
    # name: (losses, loss_scales, fixed λ of a plain Unet)
    "sl": (("mae", "ssim"), (0.0556, 0.322), (0.5,)),
    "ao": (("dc", "weight_l1", "tv"), (1.0, 100.0, 10.0), (0.5, 0.5)),
}


def make_config(task="csmri", family="sl", *, hyper_dim=4, batch=BATCH,
                batch_norm=True, method="uhs", top_b=1, normalize="kept", fixed=None,
                baselines=()):
  config = configs.default()
  config.task.name = task
  config.task.factor = 2
  config.data.image_size = SIZE
  config.data.num_threads = 0
  config.model.channels = 4
  config.model.hyper_dim = hyper_dim
  config.model.batch_norm = batch_norm
  # The per-sample convolution of GPUs (one grouped convolution), which also
  # compiles ~3× faster on CPU than the CPU default 'loop' (covered by
  # tests/test_models.py).
  config.model.strategy = "vmap"
  names, scales, family_fixed = FAMILIES[family]
  config.losses = names
  config.loss_scales = scales
  config.hparams.fixed = family_fixed if fixed is None else fixed
  config.sampling.method = method
  config.hparams.baselines = baselines
  config.sampling.top_b = top_b
  config.sampling.normalize = normalize
  config.train.batch_size = batch
  train.check_config(config)
  return config


# XLA's backend optimizations take a third of the compile time and buy nothing
# at these sizes (each step is compiled once and run a few times).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


class Compiled(NamedTuple):
  config: Any
  model: Any
  operator: Any
  step: Any  # the step, jitted with donate_argnums=0 and compiled
  state: Any  # the initial state; tests pass copies (``fresh``)
  extra: Any = None


def build_step(task, family, options, reference=None):
  """One configuration's step, compiled ahead for its first batch, and its initial state.

  Args:
    task, family, options: `make_config`'s arguments.
    reference: optional ``(config, model, operator, top_b) -> jitted function`` of
      ``(state, images, rng)``, compiled too and returned as ``extra``.
  """
  config = make_config(task, family, **options)
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (SIZE, SIZE))
  state = train.create_state(config, model, jax.random.key(0))
  args = (state, {"image": images(config.train.batch_size)}, jax.random.key(0))
  step = jax.jit(train.make_train_step(config, model, operator),
                 donate_argnums=0).lower(*args).compile(FAST_COMPILE)
  extra = None
  if reference is not None:
    extra = reference(config, model, operator, config.sampling.top_b).lower(
        state, args[1]["image"], args[2]).compile(FAST_COMPILE)
  return Compiled(config, model, operator, step, state, extra)


@contextlib.contextmanager
def compiled_ahead(builds):
  """Compiles every configuration of ``builds`` (name → build_step arguments), two at a time.

  XLA compiles on one core and releases the GIL, so on the 2-core CI machines
  two threads cut a module's wall time by up to half (less when the cores
  are busy). Yields ``name -> Compiled``: each test waits only for its own
  configuration (submitted in the order of ``builds``).
  """
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
  try:
    futures = {name: pool.submit(build_step, *args) for name, args in builds.items()}
    yield lambda name: futures[name].result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def fresh(state):
  return jax.tree_util.tree_map(jnp.copy, state)


def images(batch=BATCH, seed=0):
  """Smooth test images in [0, 1] with a little texture."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
  out = []
  for _ in range(batch):
    fx, fy, phase = rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0), rng.uniform(
        0, np.pi)
    img = 0.5 + 0.3 * np.sin(2 * np.pi * fx * xx + phase) * np.cos(
        2 * np.pi * fy * yy) + 0.05 * rng.standard_normal((SIZE, SIZE))
    out.append(np.clip(img, 0.0, 1.0))
  return jnp.asarray(np.stack(out), jnp.float32)


def host(tree):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
