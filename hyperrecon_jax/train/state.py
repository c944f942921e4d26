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


@flax.struct.dataclass
class Model:
  """A reconstruction network behind one calling convention.

  ``apply(variables, zf, coeffs, train, return_weights)`` returns the
  reconstruction and the per-sample convolution weights (for weight-ℓ1), plus
  the updated ``batch_stats`` when ``train``. A plain ``Unet`` ignores
  ``coeffs`` and reports its own weights for every sample.

  A *stack* (``lambdas`` non-empty) is one plain Unet per λ of ``lambdas``,
  trained together: every variable has a leading axis of size L, ``coeffs``
  is (L, B, K) and the outputs gain the same leading axis. ``strategy``
  (resolved as for ``HyperUnet``) runs a stack as one vmap or as L unrolled
  Unets; it changes speed only.
  """
  module: Any = flax.struct.field(pytree_node=False)
  hyper: bool = flax.struct.field(pytree_node=False)
  lambdas: tuple = flax.struct.field(pytree_node=False, default=())
  strategy: str = flax.struct.field(pytree_node=False, default="auto")

  def init(self, key, zf, coeffs):
    if self.lambdas:  # independent initializations, as separate runs would be
      keys = jax.random.split(key, len(self.lambdas))
      return jax.vmap(lambda k: self.module.init(k, zf))(keys)
    if self.hyper:
      return self.module.init(key, zf, coeffs)
    return self.module.init(key, zf)

  def single(self) -> "Model":
    """The model of one element of a stack."""
    return self.replace(lambdas=())

  def apply(self, variables, zf, coeffs, *, train: bool,
            return_weights: bool = False):
    """Returns ``(recon, weights or None, batch_stats updates)``."""
    if self.lambdas:
      one = self.single()
      apply = lambda v, c: one.apply(v, zf, c, train=train,
                                     return_weights=return_weights)
      if models.resolve_strategy(self.strategy) == "vmap":
        return jax.vmap(apply)(variables, coeffs)
      # XLA's CPU convolution of a batch of weights against a batch of inputs
      # (the grouped convolution vmap lowers to) is 10–30× slower than L
      # ordinary ones: unroll the stack, as the 'loop' strategy does.
      outs = [apply(jax.tree_util.tree_map(lambda x, i=i: x[i], variables),
                    coeffs[i]) for i in range(len(self.lambdas))]
      return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)
    mutable = ["batch_stats"] if train else False
    if self.hyper:
      out = self.module.apply(variables, zf, coeffs, train=train,
                              return_weights=return_weights, mutable=mutable)
    else:
      out = self.module.apply(variables, zf, train=train, mutable=mutable)
    out, updates = out if train else (out, {})
    if self.hyper:
      recon, weights = out if return_weights else (out, None)
    else:
      recon = out
      weights = (_unet_weights(variables["params"], zf.shape[0])
                 if return_weights else None)
    return recon, weights, updates


def _unet_weights(params, batch):
  """A plain Unet's convolution weights, repeated for each of ``batch`` samples."""
  weights = {}
  for spec in models.conv_specs(params["head_kernel"].shape[2]):
    weights[spec.name] = {
        key: jnp.broadcast_to(params[f"{spec.name}_{key}"],
                              (batch,) + params[f"{spec.name}_{key}"].shape)
        for key in ("kernel", "bias")}
  return weights


def build_model(config, *, strategy: str | None = None) -> Model:
  """The network of ``config.model``: ``HyperUnet``, or for hyper_dim 0 ``Unet``
  (a stack of them when ``config.hparams.baselines`` lists λ vectors).

  Args:
    config: full experiment config.
    strategy: overrides ``config.model.strategy``.

  Returns:
    A ``Model``.
  """
  m = config.model
  dtype = jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32
  if m.hyper_dim == 0:
    return Model(models.Unet(channels=m.channels, batch_norm=m.batch_norm,
                             init_scheme=m.init_scheme, dtype=dtype), False,
                 baseline_lambdas(config), strategy or m.strategy)
  return Model(models.HyperUnet(
      hyper_dim=m.hyper_dim, num_coeffs=configuration.num_coeffs(config),
      channels=m.channels, batch_norm=m.batch_norm, init_scheme=m.init_scheme,
      strategy=strategy or m.strategy, dtype=dtype), True)


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


def create_state(config, model: Model, key) -> TrainState:
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
  # ops take ~15 s to compile on a CPU) and XLA's backend optimizations are
  # off. Still a deterministic function of ``key`` on a given backend.
  init_key = jax.random.wrap_key_data(
      jax.random.bits(key, (4,), jnp.uint32), impl="unsafe_rbg")
  if isinstance(init_key, jax.core.Tracer):  # under eval_shape: shapes only
    variables = model.init(init_key, zf, coeffs)
  else:
    init = jax.jit(model.init).lower(init_key, zf, coeffs).compile(
        compiler_options={"xla_backend_optimization_level": 0})
    variables = init(init_key, zf, coeffs)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=optimizer(config).init(params),
      bad_step=jnp.full((), -1, jnp.int32))
