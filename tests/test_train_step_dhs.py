"""Tests of the DHS training step (paper §4.2): against masked DHS written out, with
BatchNorm normalizing over the kept rows (the default) or over the whole batch (as
the authors' code), and the replay of its selection.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_step_support import compiled_ahead
from train_step_support import fresh
from train_step_support import host
from train_step_support import images

from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import train

# XLA executables persist across the module's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")


def _configs():
  return {
      "dhs": ("csmri", "ao", dict(batch=4, batch_norm=False, method="dhs", top_b=2),
              _masked_reference),
      # The shipped knee_cs_ao recipe: DHS with BatchNorm over the kept rows.
      "dhs_bn": ("csmri", "ao", dict(batch=4, method="dhs", top_b=2), _kept_rows_reference),
      # ... and over the whole batch, as the authors' code.
      "dhs_bn_batch": ("csmri", "ao", dict(batch=4, method="dhs", top_b=2, normalize="batch"),
                       _masked_reference),
  }


@pytest.fixture(scope="module")
def compiled():
  """The two DHS configurations, each with its reference, compiled ahead."""
  with compiled_ahead(_configs()) as get:
    yield get


def _adam_gradient(opt_state):
  """The gradient of a first Adam step, read back from the first moment.

  From a zero first moment, one update leaves ``mu = (1 - b1) * g`` (b1 = 0.9).
  """
  adam = opt_state[0]
  assert isinstance(adam, optax.ScaleByAdamState)
  assert int(adam.count) == 1
  return jax.tree_util.tree_map(lambda m: np.asarray(m) / 0.1, adam.mu)


def _step_inputs(config, operator, state, x, rng):
  """The measurement, network input and coefficients the step draws."""
  rng = jax.random.fold_in(rng, state.step)
  k_measure, k_lambda = jax.random.split(rng)
  y = operator.measure(x, k_measure)
  return y, operator.zero_filled(y), train.sample_coefficients(config, k_lambda, x.shape[0])


def _masked_reference(config, model, operator, top_b):
  """Masked DHS written out, as the authors' ``DataDriven.process_loss``.

  All B rows go forward in training mode (BatchNorm normalizes over all B and
  its running statistics follow all B); the loss is the mean of the total
  losses of the ``top_b`` rows of lowest data consistency. Also the gradient
  of all B rows' mean, and that of a pass of the kept rows alone (BatchNorm
  over b), for the tests to show they can tell these apart.
  """
  names = tuple(config.losses)
  scales = jnp.asarray(config.loss_scales, jnp.float32)

  @jax.jit
  def reference(state, x, rng):
    y, zf, coeffs = _step_inputs(config, operator, state, x, rng)

    def per_example(params, rows):
      variables = {"params": params}
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
      (recon, weights), updates = model.apply(
          variables, zf[rows], coeffs[rows], train=True, return_weights=True,
          mutable=["batch_stats"])
      terms = losses.compute_terms(names, recon, x[rows], operator=operator,
                                   measurement=y[rows], weights=weights)
      total = losses.composite(terms, coeffs[rows], scales)
      return total, operator.data_consistency(recon, y[rows]), updates

    every = jnp.arange(x.shape[0])
    _, dc, _ = per_example(state.params, every)
    lowest = jnp.argsort(dc, stable=True)[:top_b]
    mask = jnp.zeros_like(dc).at[lowest].set(1.0)

    def masked_mean(params, mask):
      total, _, updates = per_example(params, every)
      return jnp.sum(mask * total) / jnp.sum(mask), updates

    (loss, updates), grads = jax.value_and_grad(masked_mean, has_aux=True)(state.params, mask)
    _, grads_all = jax.value_and_grad(masked_mean, has_aux=True)(state.params,
                                                                 jnp.ones_like(mask))
    kept_only = jax.grad(lambda p: jnp.mean(per_example(p, lowest)[0]))(state.params)
    # What the test can tell apart: a pass of the kept rows alone.
    return {"loss": loss, "grads": grads, "grads_all": grads_all, "mask": mask, "dc": dc,
            "stats": updates.get("batch_stats", {}),
            "other": kept_only}

  return reference


def _kept_rows_reference(config, model, operator, top_b):
  """DHS with BatchNorm over the kept rows written out: rank all B, train on the b kept.

  The ranking pass normalizes over all B (training mode, its statistics
  dropped); the gradient pass sees only the kept rows, so they alone form its
  normalization batch and the running statistics' update.
  """
  names = tuple(config.losses)
  scales = jnp.asarray(config.loss_scales, jnp.float32)

  @jax.jit
  def reference(state, x, rng):
    y, zf, coeffs = _step_inputs(config, operator, state, x, rng)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    recon_all, all_rows = model.apply(variables, zf, coeffs, train=True, mutable=["batch_stats"])
    dc = operator.data_consistency(recon_all, y)
    kept = jnp.argsort(dc, stable=True)[:top_b]

    def loss(params):
      (recon, weights), updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, zf[kept], coeffs[kept],
          train=True, return_weights=True, mutable=["batch_stats"])
      terms = losses.compute_terms(names, recon, x[kept], operator=operator,
                                   measurement=y[kept], weights=weights)
      return jnp.mean(losses.composite(terms, coeffs[kept], scales)), updates

    (value, updates), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    # What the test can tell apart: running statistics updated from all B rows.
    return {"loss": value, "grads": grads, "stats": updates["batch_stats"], "dc": dc,
            "other": all_rows["batch_stats"]}

  return reference


def _relative_error(a, b):
  diff = sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2) for x, y in zip(
      jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
  norm = sum(np.sum(np.asarray(y) ** 2) for y in jax.tree_util.tree_leaves(b))
  return float(np.sqrt(diff / norm))


def test_dhs_step_equals_naive_masked_gradient(compiled):
  config, _, _, step, state0, reference = compiled("dhs")
  batch, top_b = config.train.batch_size, config.sampling.top_b
  assert (batch, top_b) == (4, 2)
  assert not state0.batch_stats
  x = images(batch, seed=5)
  rng = jax.random.key(7)
  ref = host(reference(state0, x, rng))
  ref_loss, ref_grads, grads_all, dc, mask = (ref[k] for k in ("loss", "grads", "grads_all",
                                                               "dc", "mask"))
  assert mask.sum() == top_b
  assert len(np.unique(dc)) == batch  # no ties: the selection is unambiguous

  params0 = host(state0.params)
  state, metrics = step(fresh(state0), {"image": x}, rng)
  metrics = host(metrics)
  step_grads = _adam_gradient(host(state.opt_state))

  np.testing.assert_allclose(metrics["loss"], ref_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss_dc"], np.mean(np.sort(dc)[:top_b]),
                             rtol=1e-5)
  assert _relative_error(step_grads, ref_grads) < 1e-5
  for got, want in zip(jax.tree_util.tree_leaves(step_grads),
                       jax.tree_util.tree_leaves(ref_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max() + 1e-12)
  np.testing.assert_allclose(
      metrics["grad_norm"],
      np.sqrt(sum(np.sum(g ** 2) for g in jax.tree_util.tree_leaves(
          ref_grads))), rtol=1e-5)
  # The test can tell: the gradient of all B samples is a different one.
  assert _relative_error(grads_all, ref_grads) > 1e-2

  # And the parameters are one Adam step along that gradient.
  tx = optax.adam(train.learning_rate(config))
  updates, _ = tx.update(ref_grads, tx.init(params0), params0)
  want_params = optax.apply_updates(params0, updates)
  for got, want in zip(jax.tree_util.tree_leaves(host(state.params)),
                       jax.tree_util.tree_leaves(want_params)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name, normalize, other_of, other_gap", [
    # The default: the kept rows alone form BatchNorm's batch and its running
    # statistics' update; updated from all B rows they would be others.
    ("dhs_bn", "kept", "stats", 1e-4),
    # The authors' code: every row goes forward, BatchNorm over all B; a pass
    # of the kept rows alone would give another gradient.
    ("dhs_bn_batch", "batch", "grads", 1e-2),
])
def test_dhs_with_batch_norm_is_its_step_written_out(compiled, name, normalize, other_of,
                                                     other_gap):
  config, _, _, step, state0, reference = compiled(name)
  assert state0.batch_stats and config.sampling.top_b == 2
  assert config.sampling.normalize == normalize
  x = images(config.train.batch_size, seed=5)
  rng = jax.random.key(7)
  ref = host(reference(state0, x, rng))
  assert len(np.unique(ref["dc"])) == config.train.batch_size  # an unambiguous selection
  state, metrics = step(fresh(state0), {"image": x}, rng)
  # The same float32 arithmetic as the step: roundoff apart, 1e-5 relative as
  # in the test without BatchNorm.
  np.testing.assert_allclose(host(metrics)["loss"], ref["loss"], rtol=1e-5)
  assert _relative_error(_adam_gradient(host(state.opt_state)), ref["grads"]) < 1e-5
  got_stats = host(state.batch_stats)
  assert jax.tree_util.tree_structure(got_stats) == jax.tree_util.tree_structure(ref["stats"])
  assert _relative_error(got_stats, ref["stats"]) < 1e-5
  # The test can tell the two forms apart.
  assert _relative_error(ref["other"], ref[other_of]) > other_gap


def test_dhs_replay_keeps_the_rows_of_lowest_data_consistency(compiled):
  config, model, operator, _, state0, _ = compiled("dhs")
  x = images(config.train.batch_size, seed=6)
  key = jax.random.key(3)
  sampled, kept = host(train.step.dhs_selected_lambdas(
      config, model, state0.variables(), operator, iter([{"image": x}]), key,
      num_batches=1))
  n = len(config.losses) - 1
  assert sampled.shape == (4, n) and kept.shape == (2, n)
  # Independently: the replay's noise and λ, every row's DC, the 2 lowest.
  k_measure, k_lambda = jax.random.split(jax.random.fold_in(key, 0))
  y = operator.measure(jnp.asarray(x), k_measure)
  lam = train.step.sample_lambdas(config, k_lambda, 4)
  np.testing.assert_array_equal(sampled, host(lam))
  recon, _ = model.apply(state0.variables(), operator.zero_filled(y),
                         hparams.coefficients(lam), train=True, mutable=["batch_stats"])
  dc = host(operator.data_consistency(recon, y))
  assert len(np.unique(dc)) == 4  # no ties: the selection is unambiguous
  np.testing.assert_array_equal(kept, sampled[np.argsort(dc)[:2]])  # by increasing DC

  # At a checkpoint the replay draws λ as the next training step would: an
  # annealed endpoint probability (0 → 1 over 10 steps) has reached 1 at step 10.
  annealed = config.copy_and_resolve_references()
  annealed.hparams.sampler = "endpoints"
  annealed.hparams.endpoint_prob, annealed.hparams.endpoint_prob_final = 0.0, 1.0
  annealed.train.num_steps = 10
  for step, endpoints in ((10, True), (0, False)):
    drawn, _ = host(train.step.dhs_selected_lambdas(
        annealed, model, state0.variables(), operator, iter([{"image": x}]), key,
        num_batches=1, step=step))
    assert np.all(np.isin(drawn, (0.0, 1.0))) == endpoints, (step, drawn)
