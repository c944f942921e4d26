"""Model construction and the train state (parameters, statistics, optimizer)."""

from collections.abc import Callable
import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from hyperrecon_jax import hparams
from hyperrecon_jax import models
from hyperrecon_jax.train import configuration


@dataclasses.dataclass(frozen=True)
class UnetStack:
  """L plain Unets trained together (the per-λ baselines), called like a module.

  Every variable has a leading axis of size L (the Unets are initialized
  independently, as separate runs would be); ``coeffs`` is (L, B, K) and the
  outputs gain the same leading axis. ``init`` and ``apply`` take a flax
  module's arguments. ``strategy`` (resolved as for ``HyperUnet``) runs the
  stack as one vmap or as L unrolled Unets; it changes speed only.

  Attributes:
    unet: the plain ``Unet`` every member is.
    lambdas: the λ vector of each member.
    strategy: 'auto', 'vmap' or 'loop'.
  """
  unet: models.Unet
  lambdas: tuple
  strategy: str = "auto"

  def init(self, key, zf, coeffs=None):
    del coeffs
    keys = jax.random.split(key, len(self.lambdas))
    return jax.vmap(lambda k: self.unet.init(k, zf))(keys)

  def apply(self, variables, zf, coeffs, *, train: bool = False,
            return_weights: bool = False, mutable=False):
    one = lambda v, c: self.unet.apply(v, zf, c, train=train,
                                       return_weights=return_weights, mutable=mutable)
    if models.resolve_strategy(self.strategy) == "vmap":
      return jax.vmap(one)(variables, coeffs)
    # XLA's CPU convolution of a batch of weights against a batch of inputs
    # (the grouped convolution vmap lowers to) is far slower than L ordinary
    # ones (docs/performance.md): unroll the stack, as the 'loop' strategy does.
    outs = [one(jax.tree_util.tree_map(lambda x, i=i: x[i], variables), coeffs[i])
            for i in range(len(self.lambdas))]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)

  def member(self, variables, lam):
    """The variables of the member whose λ is nearest ``lam`` (traceable)."""
    stack = jnp.asarray(self.lambdas, jnp.float32)
    index = jnp.argmin(jnp.sum(jnp.abs(stack - jnp.asarray(lam, jnp.float32)), -1))
    return jax.tree_util.tree_map(lambda v: v[index], variables)


def stack_lambdas(model) -> tuple:
  """The λ vectors of a `UnetStack`; () for a single network."""
  return model.lambdas if isinstance(model, UnetStack) else ()


def build_model(config, *, strategy: str | None = None):
  """The network of ``config.model``: ``HyperUnet``, or for hyper_dim 0 ``Unet``
  (a `UnetStack` of them when ``config.hparams.baselines`` lists λ vectors).

  Every model is called the same way, flax's: ``model.apply(variables, zf,
  coeffs, train=..., return_weights=..., mutable=...)`` (a plain Unet ignores
  ``coeffs``); in training pass ``mutable=['batch_stats']`` and get
  ``(output, updates)`` back.

  Args:
    config: full experiment config.
    strategy: overrides ``config.model.strategy``.

  Returns:
    A flax module, or a `UnetStack`.
  """
  m = config.model
  dtype = jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32
  if m.hyper_dim == 0:
    unet = models.Unet(channels=m.channels, batch_norm=m.batch_norm,
                       init_scheme=m.init_scheme, dtype=dtype)
    lambdas = baseline_lambdas(config)
    return UnetStack(unet, lambdas, strategy or m.strategy) if lambdas else unet
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
