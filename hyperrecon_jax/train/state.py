"""Model construction and the train state (parameters, statistics, optimizer)."""

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from hyperrecon_jax import hparams
from hyperrecon_jax import models
from hyperrecon_jax.train import configuration


def stack_lambdas(model) -> tuple:
  """The λ vectors of a `models.UnetStack`; () for a single network."""
  return tuple(model.lambdas) if isinstance(model, models.UnetStack) else ()


def unstack(config, variables, index: int = 0):
  """Unet ``index`` of a stack of per-λ Unets, as the plain Unet it is.

  Args:
    config: the stack's config (``config.hparams.baselines`` lists its λ).
    variables: the stack's variables (every leaf with the Unets on its first axis).
    index: which Unet.

  Returns:
    ``(config, model, variables)`` of a plain Unet trained at that λ
    (``config.hparams.fixed``), as `build_model` and a plain run's checkpoint give.
  """
  lambdas = tuple(tuple(lam) for lam in config.hparams.baselines)
  if not 0 <= index < len(lambdas):
    raise IndexError(f"the stack has {len(lambdas)} Unets, no Unet {index}")
  config = config.copy_and_resolve_references()
  config.hparams.fixed = lambdas[index]
  config.hparams.baselines = ()
  variables = jax.tree_util.tree_map(lambda v: v[index], variables)
  return config, build_model(config), variables


@configuration.names_missing_fields
def build_model(config, *, strategy: str | None = None):
  """The network of ``config.model``: ``HyperUnet``, or for hyper_dim 0 ``Unet``
  (a `models.UnetStack` of them when ``config.hparams.baselines`` lists λ
  vectors).

  Every model is called the same way (`hyperrecon_jax.models`):
  ``model.apply(variables, zf, coeffs, train=..., return_weights=...,
  mutable=...)``; in training pass ``mutable=['batch_stats']`` and get
  ``(output, updates)`` back.

  Args:
    config: full experiment config.
    strategy: overrides ``config.model.strategy``.

  Returns:
    A flax module.
  """
  m = config.model
  dtype = jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32
  if m.hyper_dim == 0:
    lambdas = baseline_lambdas(config)
    if lambdas:
      return models.UnetStack(lambdas, channels=m.channels, batch_norm=m.batch_norm,
                              init_scheme=m.init_scheme, strategy=strategy or m.strategy,
                              dtype=dtype)
    return models.Unet(channels=m.channels, batch_norm=m.batch_norm,
                       init_scheme=m.init_scheme, dtype=dtype)
  return models.HyperUnet(
      hyper_dim=m.hyper_dim, num_coeffs=configuration.num_coeffs(config),
      channels=m.channels, batch_norm=m.batch_norm, init_scheme=m.init_scheme,
      strategy=strategy or m.strategy, dtype=dtype, hyper_init=m.hyper_init,
      conditioned=m.conditioned)


def baseline_lambdas(config) -> tuple:
  """The λ vectors of a stack of plain Unets (``config.hparams.baselines``)."""
  if config.model.hyper_dim:
    return ()
  return tuple(tuple(float(v) for v in lam) for lam in config.hparams.baselines)


@flax.struct.dataclass
class TrainState:
  """Everything training changes, as one pytree.

  Attributes:
    step: number of updates applied.
    params: trainable parameters.
    batch_stats: BatchNorm running statistics (empty without BatchNorm).
    opt_state: optimizer state.
    bad_step: −1, or the first step whose loss was non-finite; from then on
      updates are skipped so the state stays at its last good value.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  bad_step: jax.Array

  def variables(self):
    out = {"params": self.params}
    if self.batch_stats:
      out["batch_stats"] = self.batch_stats
    return out


def learning_rate(config) -> Callable[[int], float]:
  """Adam step size with the reference's step decay (×factor every N steps)."""
  return optax.exponential_decay(
      init_value=config.train.lr, transition_steps=config.train.lr_decay_every,
      decay_rate=config.train.lr_decay_factor, staircase=True)


def optimizer(config) -> optax.GradientTransformation:
  return optax.adam(learning_rate(config))


@configuration.names_missing_fields
def create_state(config, model, key) -> TrainState:
  """Initializes parameters, statistics and optimizer state.

  Args:
    config: full experiment config.
    model: from ``build_model``.
    key: PRNG key for the initialization.

  Returns:
    A ``TrainState`` at step 0.
  """
  size = config.data.image_size
  k = configuration.num_coeffs(config)
  zf = jnp.zeros((1, size, size, 2), jnp.float32)
  coeffs = hparams.coefficients(jnp.full((1, k - 1), 0.5))
  # Initialization runs once, so it is compiled for compile speed: one
  # threefry draw seeds an 'unsafe_rbg' key (threefry's per-parameter random
  # ops are slow to compile). Still a deterministic function of ``key`` on a
  # given backend.
  init_key = jax.random.wrap_key_data(
      jax.random.bits(key, (4,), jnp.uint32), impl="unsafe_rbg")
  if isinstance(init_key, jax.core.Tracer):  # under eval_shape: shapes only
    variables = model.init(init_key, zf, coeffs)
  else:
    # On a CPU, XLA's backend optimizations cost more compile time than they
    # save once. On a GPU, turning them off leaves every operation its own
    # kernel, and compiling all those kernels takes far longer than the
    # optimizations do (docs/changelog.md).
    options = ({"xla_backend_optimization_level": 0}
               if jax.default_backend() == "cpu" else None)
    init = jax.jit(model.init).lower(init_key, zf, coeffs).compile(
        compiler_options=options)
    variables = init(init_key, zf, coeffs)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=optimizer(config).init(params),
      bad_step=jnp.full((), -1, jnp.int32))


def memory_floor(config, model, num_devices: int = 1) -> int:
  """Bytes that training ``model`` needs on each device at least.

  The sum of `memory_floor_parts`.
  """
  return sum(memory_floor_parts(config, model, num_devices))


def memory_floor_parts(config, model, num_devices: int = 1) -> tuple[int, int]:
  """The two parts of `memory_floor`: the model's, and the batch's.

  The train state (parameters, BatchNorm statistics, Adam's two moments) and
  one set of gradients, all replicated on every device, and the activations
  the backward pass keeps for this device's rows of the batch (of the
  ``top_b`` kept rows, for DHS normalizing over them): every
  convolution's input (`models.kept_activations`), in the model's
  compute dtype, per Unet of a stack. BatchNorm's and ReLU's outputs and
  XLA's temporaries come on top, so the real need is larger; this bound only
  refuses what can never fit. Computed from shapes alone (``jax.eval_shape``),
  so even a stack of 10⁵ Unets costs nothing to measure.

  Args:
    config: full experiment config.
    model: from ``build_model``.
    num_devices: the devices the batch is split over.

  Returns:
    ``(model_bytes, activation_bytes)``: the train state and its gradients,
    and the kept activations, which grow with the batch.
  """
  state = jax.eval_shape(lambda key: create_state(config, model, key),
                         jax.random.key(0))

  def size(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))
  rows = int(config.train.batch_size)
  if config.sampling.method == "dhs" and config.sampling.normalize == "kept":
    # The whole batch's ranking pass keeps nothing for a backward pass: only
    # the top_b kept rows go forward again with gradients.
    rows = min(rows, int(config.sampling.top_b))
  rows = -(-rows // num_devices)
  kept = models.kept_activations(int(config.model.channels), int(config.data.image_size))
  activations = (rows * kept * jnp.dtype(config.model.dtype).itemsize
                 * max(1, len(stack_lambdas(model))))
  return size(state) + size(state.params), activations
