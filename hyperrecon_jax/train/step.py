"""The training step and the λ it draws.

`make_train_step` builds the step function (the caller jits it); with it, the
λ sampling of a batch, DHS's selection and its replay on saved parameters
(`dhs_selected_lambdas`), and the λ at which validation reports.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import sampling
from hyperrecon_jax.train import configuration
from hyperrecon_jax.train import state as state_lib


def sample_coefficients(config, key, batch: int, step=None):
  """Loss coefficients for a batch: sampled λ, or the baseline's fixed λ.

  ``step`` (updates done so far, may be traced) sets an annealed endpoint
  probability (`sample_lambdas`).

  Returns:
    (B, K); for a stack of L baselines (L·B, K), L blocks of B rows, block l
    at the stack's λ_l (the layout `models.UnetStack` trains on; the train
    step repeats the data batch once per block).
  """
  k = configuration.num_coeffs(config)
  stack = state_lib.baseline_lambdas(config)
  if stack:
    coeffs = hparams.coefficients(jnp.asarray(stack, jnp.float32))
    return jnp.repeat(coeffs, batch, axis=0)
  if config.model.hyper_dim == 0:
    return hparams.coefficients(jnp.broadcast_to(
        jnp.asarray(config.hparams.fixed, jnp.float32), (batch, k - 1)))
  # The draw's own coefficients: a simplex sampler's would lose their smallest
  # terms to float32 in a round trip through λ (`hparams.sample_coefficients`).
  return hparams.sample_coefficients(key, batch, k, config.hparams.sampler,
                                     endpoint_prob=_endpoint_prob(config, step),
                                     log_min=config.hparams.log_min, alpha=config.hparams.alpha)


def sample_lambdas(config, key, batch: int, step=None):
  """The (B, K − 1) λ a HyperRecon run draws for a batch (``config.hparams``).

  Args:
    config: the run's config.
    key: PRNG key.
    batch: B.
    step: the number of updates done so far (may be traced). With
      ``hparams.endpoint_prob_final`` set, the endpoint probability is
      ``p0 + (p1 − p0)·min(step / (num_steps − 1), 1)``: p0 at the first
      update, p1 at the last (step num_steps − 1) and after; None uses
      ``p0 = hparams.endpoint_prob``.
  """
  return hparams.sample(key, batch, configuration.num_lambdas(config),
                        config.hparams.sampler, endpoint_prob=_endpoint_prob(config, step),
                        log_min=config.hparams.log_min, alpha=config.hparams.alpha)


def _endpoint_prob(config, step):
  """The endpoint probability at ``step``, annealed if the config says so (`sample_lambdas`)."""
  p = config.hparams.endpoint_prob
  final = config.hparams.endpoint_prob_final
  if final is not None and step is not None:
    last = max(int(config.train.num_steps) - 1, 1)
    progress = jnp.minimum(jnp.asarray(step, jnp.float32) / last, 1.0)
    p = p + (final - p) * progress
  return p


def dhs_keep(model, variables, operator, zf, y, coeffs, top_b: int):
  """DHS: the ``top_b`` batch rows a training step keeps, those of lowest data consistency.

  A forward pass of the whole batch in training mode (batch statistics, as
  in the step) without gradient ranks the rows by ``‖A x̂ − y‖²``.

  Returns:
    (top_b,) row indices.
  """
  recon, _ = model.apply(variables, zf, coeffs, train=True, mutable=["batch_stats"])
  dc = operator.data_consistency(jax.lax.stop_gradient(recon), y)
  return sampling.select_lowest(dc, top_b)


@configuration.names_missing_fields
def make_train_step(config, model, operator):
  """Builds ``train_step(state, batch, rng) -> (state, metrics)`` (not jitted).

  Per step: measure the images with ``operator`` (noise from ``rng``), draw one
  λ per element, reconstruct in training mode, compute the per-example terms
  of ``config.losses`` and their weighted sum ``Σ_k c_k(λ)·L_k / s_k``, and take
  an Adam step on the batch mean. With DHS the loss is the mean over the
  ``top_b`` elements of lowest data consistency ``‖A x̂ − y‖²`` (the ranking
  without gradient). ``config.sampling.normalize`` says over which rows
  BatchNorm normalizes: ``'kept'``, a gradient-free pass of the whole batch
  ranks and the kept rows go forward again with gradients (they alone form
  the normalization batch and the running statistics' update); ``'batch'``,
  as the authors' code, one pass of the whole batch (BatchNorm over all B),
  the loss gathered from the kept rows.

  The RNG of a step is ``fold_in(rng, state.step)``, so a run is a function of
  (seed, step) and resumes reproducibly. A non-finite loss, gradient or
  updated parameter freezes the state and records the step in
  ``state.bad_step`` instead of forcing a host check on every step.

  Args:
    config: full experiment config.
    model: from ``state.build_model``.
    operator: forward model of the task (a pytree, see ``physics``).

  Returns:
    The step function; ``metrics`` holds scalars ``loss``, ``loss_<term>`` for
    every term (mean over the elements that took part) and ``grad_norm``.
  """
  names = tuple(config.losses)
  tx = state_lib.optimizer(config)
  loss_fn = _loss_fn(config, model, operator)
  dhs = config.sampling.method == "dhs"
  # DHS over the whole batch's pass gathers the kept rows' losses in loss_fn;
  # over the kept rows, _step_inputs keeps them before the gradient pass.
  top_b = int(config.sampling.top_b) if dhs and config.sampling.normalize == "batch" else None

  @configuration.names_missing_fields  # fields read as the step is traced
  def train_step(state, batch, rng):
    x, zf, y, coeffs = _step_inputs(config, model, operator, state, batch, rng)
    rows = x.shape[0]
    # One data row per coefficient row: a stack's blocks each get the batch.
    repeats = coeffs.shape[0] // rows
    x, zf, y = jax.tree_util.tree_map(
        lambda a: jnp.tile(a, (repeats,) + (1,) * (a.ndim - 1)), (x, zf, y))
    (loss, (terms, updates)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params, state.batch_stats, x, zf, y, coeffs, rows, top_b)
    new_state, grad_norm = _updated(state, tx, loss, grads, updates)
    # Reported per Unet: a stack's loss is the mean over its Unets.
    out = {"loss": loss / repeats, "grad_norm": grad_norm}
    for i, name in enumerate(names):
      out[f"loss_{name}"] = jnp.mean(terms[:, i])
    return new_state, out

  return train_step


def _step_inputs(config, model, operator, state, batch, rng):
  """The step's images, zero-filled inputs, measurements and coefficients.

  DHS normalizing over the kept rows keeps them here (`dhs_keep`).
  """
  rng = jax.random.fold_in(rng, state.step)
  k_measure, k_lambda = jax.random.split(rng)
  x = batch["image"].astype(jnp.float32)
  y = operator.measure(x, k_measure)
  zf = operator.zero_filled(y)
  coeffs = sample_coefficients(config, k_lambda, x.shape[0], state.step)
  if config.sampling.method == "dhs" and config.sampling.normalize == "kept":
    keep = dhs_keep(model, state.variables(), operator, zf, y, coeffs,
                    int(config.sampling.top_b))
    x, zf, y, coeffs = sampling.take((x, zf, y, coeffs), keep)
  return x, zf, y, coeffs


def _loss_fn(config, model, operator):
  """``loss(params, batch_stats, x, zf, y, coeffs, rows, top_b) -> (loss, (terms, updates))``.

  ``top_b``: None, every row's loss (UHS, or DHS whose rows were kept
  before); for DHS over the whole batch's pass, how many rows of lowest data
  consistency the loss averages (``terms`` then holds those rows only).
  """
  names = tuple(config.losses)
  scales = jnp.asarray(config.loss_scales, jnp.float32)
  needs_weights = bool(losses.NEEDS_WEIGHTS & set(names))

  def loss_fn(params, batch_stats, x, zf, y, coeffs, rows, top_b=None):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    out, updates = model.apply(variables, zf, coeffs, train=True,
                               return_weights=needs_weights, mutable=["batch_stats"])
    recon, weights = out if needs_weights else (out, None)
    if top_b is not None:
      # DHS: rank by data consistency (no gradient through the choice), keep
      # the top_b rows' losses; every row stays in the forward pass.
      keep = sampling.select_lowest(
          operator.data_consistency(jax.lax.stop_gradient(recon), y), top_b)
      recon, x, y, coeffs = sampling.take((recon, x, y, coeffs), keep)
      if weights is not None:
        weights = sampling.take(weights, keep)
      rows = top_b
    terms = losses.compute_terms(names, recon, x, operator=operator, measurement=y,
                                 weights=weights)
    total = losses.composite(terms, coeffs, scales)
    # The sum over rows / the data batch: the batch mean for one network; a
    # stack sums its Unets' batch means, so each Unet's parameters get exactly
    # the gradient of its own loss, as in a separate run (Adam is elementwise).
    return jnp.sum(total) / rows, (terms, updates)

  return loss_fn


def _updated(state, tx, loss, grads, updates):
  """The state after an Adam step, or frozen at its last good value: (state, grad norm)."""
  # Written out: optax renamed its global-norm helper across versions.
  grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
  updates_opt, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates_opt)
  batch_stats = updates.get("batch_stats", state.batch_stats)
  # A finite loss can still give non-finite parameters (an overflowing
  # update): such a state must never reach a checkpoint either.
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            & _all_finite((params, batch_stats)))
  ok = finite & (state.bad_step < 0)
  keep_old = lambda new, old: jax.tree_util.tree_map(
      lambda a, b: jnp.where(ok, a, b), new, old)
  new_state = state.replace(
      step=state.step + 1,
      params=keep_old(params, state.params),
      batch_stats=keep_old(batch_stats, state.batch_stats),
      opt_state=keep_old(opt_state, state.opt_state),
      bad_step=jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step))
  return new_state, grad_norm


def dhs_selected_lambdas(config, model, variables, operator,
                         batches, key, *, num_batches: int, step=None):
  """The λ that DHS keeps with these parameters: the paper's Fig. 6 histogram.

  Replays the selection of the training step on ``num_batches`` batches:
  measure (noise from ``key``), draw λ as ``config.hparams`` says, keep the
  ``config.sampling.top_b`` rows of lowest data consistency.

  Args:
    config: the run's config (DHS or not: the selection is the same).
    model: the ``HyperUnet``.
    variables: its variables (the checkpoint to replay).
    operator: the task's operator.
    batches: an iterator of batches with ``image`` (e.g. the train split).
    key: PRNG key of the replay.
    num_batches: batches to replay.
    step: the updates behind ``variables`` (a checkpoint's step): λ are drawn
      as the next training step would draw them (`sample_lambdas`, an
      annealed endpoint probability included).

  Returns:
    ``(sampled, kept)``: (num_batches·B, K − 1) and (num_batches·top_b, K − 1)
    λ arrays.
  """
  top_b = int(config.sampling.top_b)

  @jax.jit
  def one(variables, x, key):
    k_measure, k_lambda = jax.random.split(key)
    y = operator.measure(x, k_measure)
    # The λ of the histograms and the coefficients training gives the model: one draw.
    lam = sample_lambdas(config, k_lambda, x.shape[0], step)
    keep = dhs_keep(model, variables, operator, operator.zero_filled(y), y,
                    sample_coefficients(config, k_lambda, x.shape[0], step), top_b)
    return lam, lam[keep]

  sampled, kept = [], []
  for i in range(num_batches):
    lam, chosen = one(variables, jnp.asarray(next(batches)["image"], jnp.float32),
                      jax.random.fold_in(key, i))
    sampled.append(lam)
    kept.append(chosen)
  return jnp.concatenate(sampled), jnp.concatenate(kept)


def _all_finite(tree):
  """Whether every element of ``tree`` is finite: one scalar, computed once.

  The count of non-finite elements passes through a square root before the
  comparison with 0 because XLA copies cheap scalar arithmetic into every
  fusion that reads its result, and `_updated` reads this one in a select per
  state leaf: an AND of per-leaf checks would be copied into each of those
  hundreds of fusions (a program four times longer, compiled two to three
  times slower: docs/performance.md). XLA computes a square root once. A
  float32 count of positive terms is never rounded to 0.
  """
  count = sum(jnp.sum(~jnp.isfinite(x), dtype=jnp.float32)
              for x in jax.tree_util.tree_leaves(tree))
  return jnp.sqrt(count) == 0


def validation_lambdas(num_lambdas: int):
  """λ at which validation reports: endpoints and middle (corners + centre).

  For two hyperparameters, three corners of the λ square: (1, 0) and (1, 1)
  are one loss (λ1 = 1 leaves λ2 no weight), so (1, 1) would repeat (1, 0)'s
  numbers as if λ2 had no effect. From three hyperparameters on, the cube's
  corners are not the simplex's vertices (most map to the same
  coefficients): the K vertices (each term alone) and the centroid (equal
  coefficients) instead.

  Raises:
    ValueError: ``num_lambdas`` < 1 (a loss of one term has no λ to vary).
  """
  if num_lambdas < 1:
    raise ValueError(f"validation_lambdas needs ≥ 1 hyperparameter, got {num_lambdas}")
  if num_lambdas == 2:
    return [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (0.5, 0.5)]
  if num_lambdas >= 3:
    k = num_lambdas + 1
    coeffs = np.concatenate([np.eye(k), np.full((1, k), 1.0 / k)]).astype(np.float32)
    lam = np.asarray(hparams.lambdas_from_coefficients(coeffs), np.float64)
    return [tuple(float(v) for v in row) for row in lam.round(6)]
  return [(v,) * num_lambdas for v in (0.0, 0.5, 1.0)]
