"""Tests of the jitted training step (hyperrecon_jax.train.step / state).

Tiny shapes (16×16 images, 4 channels, hypernetwork width 4, batch 2 or 4) and
one compiled step per configuration, shared by the tests of this module. XLA
executables go to a persistent compilation cache in the pytest process's
temporary folder, so a program compiled by one of these modules is not compiled
again by another in the same process (the loop builds a fresh ``jax.jit`` per
run).
"""

import concurrent.futures
import re
from typing import Any
from typing import NamedTuple

import configs
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperrecon_jax import hparams
from hyperrecon_jax import losses
from hyperrecon_jax import physics
from hyperrecon_jax import train

SIZE = 16
BATCH = 2
FAMILIES = {
    # name: (losses, loss_scales, fixed λ of a plain Unet)
    "sl": (("mae", "ssim"), (0.0556, 0.322), (0.5,)),
    "ao": (("dc", "weight_l1", "tv"), (1.0, 100.0, 10.0), (0.5, 0.5)),
}


# XLA executables persist across the module's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")


def make_config(task="csmri", family="sl", *, hyper_dim=4, batch=BATCH,
                batch_norm=True, method="uhs", top_b=1, fixed=None,
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


# Every configuration the tests train, by name: (task, family, options).
CONFIGS = {
    "csmri-sl": ("csmri", "sl", {}),
    "csmri-ao": ("csmri", "ao", {}),
    "denoise-ao": ("denoise", "ao", {}),
    "superres-ao": ("superres", "ao", {}),
    "unet": ("csmri", "sl", dict(hyper_dim=0)),
    "unet_lam0": ("csmri", "sl", dict(hyper_dim=0, fixed=(0.0,))),
    "stack": ("csmri", "sl", dict(hyper_dim=0, baselines=((0.5,), (0.0,)))),
    "dhs": ("csmri", "ao", dict(batch=4, batch_norm=False, method="dhs",
                                top_b=2)),
    # The shipped knee_cs_ao recipe: DHS with BatchNorm.
    "dhs_bn": ("csmri", "ao", dict(batch=4, method="dhs", top_b=2)),
}


def _build(name):
  task, family, options = CONFIGS[name]
  config = make_config(task, family, **options)
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (SIZE, SIZE))
  state = train.create_state(config, model, jax.random.key(0))
  args = (state, {"image": images(config.train.batch_size)}, jax.random.key(0))
  step = jax.jit(train.make_train_step(config, model, operator),
                 donate_argnums=0).lower(*args).compile(FAST_COMPILE)
  extra = None
  if name in ("dhs", "dhs_bn"):
    reference = _naive_reference if name == "dhs" else _kept_rows_reference
    extra = reference(config, model, operator, config.sampling.top_b).lower(
        state, args[1]["image"], args[2]).compile(FAST_COMPILE)
  return Compiled(config, model, operator, step, state, extra)


@pytest.fixture(scope="module")
def compiled():
  """Compiles every configuration ahead of time, two at a time.

  XLA compiles on one core and releases the GIL, so on the 2-core CI machines
  two threads cut the module's wall time by up to half (less when the cores
  are busy). Each test waits only for its own configuration (submitted in the
  order the tests use them).
  """
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
  try:
    futures = {name: pool.submit(_build, name) for name in CONFIGS}
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


# A 3×3 convolution's bias in front of BatchNorm: ['enc0_a_bias'] of a plain
# Unet, ['hypernetwork']['enc0_a_bias']['bias'] of a HyperUnet.
BATCH_NORMED_BIAS = re.compile(r"\['(enc|dec)\d_[ab]_bias'\](\['bias'\])?$")


def _leaves_with_paths(before, after):
  flat_a = jax.tree_util.tree_flatten_with_path(before)[0]
  flat_b = jax.tree_util.tree_leaves(after)
  assert len(flat_a) == len(flat_b)
  return [(jax.tree_util.keystr(p), np.asarray(a), np.asarray(b))
          for (p, a), b in zip(flat_a, flat_b)]


def leaves_changed(before, after):
  """Fraction of leaves of two pytrees that differ anywhere."""
  a = jax.tree_util.tree_leaves(before)
  b = jax.tree_util.tree_leaves(after)
  assert len(a) == len(b)
  return np.mean([not np.array_equal(x, y) for x, y in zip(a, b)])


def assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def check_good_step(config, state_before, new_state, metrics, step_before=0):
  names = tuple(config.losses)
  metrics = host(metrics)
  assert set(metrics) == {"loss", "grad_norm", *(f"loss_{n}" for n in names)}
  for name, value in metrics.items():
    assert value.shape == (), name
    assert np.isfinite(value), (name, value)
  assert metrics["grad_norm"] > 0
  assert int(new_state.step) == step_before + 1
  assert int(new_state.bad_step) == -1
  # Every parameter with a gradient moves (Adam moves any non-zero gradient
  # by about lr). Exempt, with BatchNorm only: the biases of the 3×3
  # convolutions (a plain Unet's, and the constant part of the hypernetwork's
  # bias heads), whose gradient the batch mean removes exactly; rounding
  # noise may or may not move them.
  for path, old, new in _leaves_with_paths(state_before.params, host(new_state.params)):
    if config.model.batch_norm and BATCH_NORMED_BIAS.search(path):
      continue
    assert not np.array_equal(old, new), f"{path} did not move"
  for leaf in jax.tree_util.tree_leaves(new_state.params):
    assert np.all(np.isfinite(np.asarray(leaf)))
  if config.model.batch_norm:
    # Training mode updates the running statistics.
    assert leaves_changed(state_before.batch_stats,
                          host(new_state.batch_stats)) == 1.0


# --- sample_coefficients ---------------------------------------------------------


def test_sample_coefficients_of_a_hypernetwork_are_random_rows_summing_to_one():
  config = make_config("csmri", "ao")
  c = np.asarray(train.sample_coefficients(config, jax.random.key(3), 8))
  assert c.shape == (8, 3)
  np.testing.assert_allclose(c.sum(axis=1), 1.0, rtol=1e-6)
  assert np.all(c >= 0)
  assert len({tuple(row) for row in c.round(6)}) == 8  # one λ per element
  np.testing.assert_array_equal(
      c, np.asarray(train.sample_coefficients(config, jax.random.key(3), 8)))


def test_an_annealed_endpoint_probability_moves_from_the_first_to_the_last_step():
  # p(step) = p0 + (p1 − p0)·min(step / num_steps, 1) with p0 = 1, p1 = 0:
  # every λ an endpoint at step 0, none at the end (a uniform draw is never
  # exactly 0 or 1), half at mid-run. For 4,096 draws at p = 0.5 the endpoint
  # fraction has a standard deviation of 0.0078; 0.04 is five of them.
  config = make_config("csmri", "sl")
  config.hparams.sampler = "endpoints"
  config.hparams.endpoint_prob, config.hparams.endpoint_prob_final = 1.0, 0.0
  config.train.num_steps = 100
  train.check_config(config)
  draw = jax.jit(lambda step: train.step.sample_lambdas(config, jax.random.key(0), 4096, step))
  ends = lambda step: float(np.mean(np.isin(np.asarray(draw(step)), (0.0, 1.0))))
  assert ends(0) == 1.0 and ends(100) == 0.0 and ends(150) == 0.0
  assert abs(ends(50) - 0.5) < 0.04
  # Outside training (no step: the DHS replay) the first probability holds.
  assert float(np.mean(np.isin(np.asarray(
      train.step.sample_lambdas(config, jax.random.key(0), 64)), (0.0, 1.0)))) == 1.0
  config.hparams.sampler = "uniform"
  with pytest.raises(ValueError, match="anneals the 'endpoints' sampler"):
    train.check_config(config)


def test_sample_coefficients_of_a_plain_unet_are_the_fixed_lambda():
  config = make_config("csmri", "sl", hyper_dim=0)
  config.hparams.fixed = (0.25,)
  c = np.asarray(train.sample_coefficients(config, jax.random.key(3), 3))
  np.testing.assert_allclose(c, [[0.75, 0.25]] * 3)


# --- one step per task and loss family ----------------------------------------------


# Every task (its operator) with the family that uses the operator in its loss
# (ao: data consistency), and the supervised family once: a supervised loss
# reads the operator only to make the input, as ao's does, so the other two
# pairs would compile ~15 s each to test no other code.
@pytest.mark.parametrize("task, family", [("csmri", "sl"), ("csmri", "ao"),
                                          ("denoise", "ao"), ("superres", "ao")])
def test_one_step_per_task_and_family(compiled, task, family):
  config, _, _, step, state0, _ = compiled(f"{task}-{family}")
  before = host(state0)
  state, metrics = step(fresh(state0), {"image": images()}, jax.random.key(1))
  check_good_step(config, before, state, metrics)
  # The returned state feeds the next step (donation-safe, counter moves on).
  after_one = host(state)
  state, metrics = step(state, {"image": images(seed=1)}, jax.random.key(1))
  check_good_step(config, after_one, state, metrics, step_before=1)


def test_create_state_can_be_traced_for_its_shapes(compiled):
  # trained.load_trained (and any caller wanting a checkpoint's abstract
  # state without initializing) runs jax.eval_shape over create_state.
  config, model, _, _, state0, _ = compiled("csmri-sl")
  abstract = jax.eval_shape(
      lambda: train.create_state(config, model, jax.random.key(0)))
  assert (jax.tree_util.tree_structure(abstract)
          == jax.tree_util.tree_structure(state0))
  for a, b in zip(jax.tree_util.tree_leaves(abstract),
                  jax.tree_util.tree_leaves(state0)):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)


def test_plain_unet_baseline_trains(compiled):
  config, _, _, step, state0, _ = compiled("unet")
  assert "hypernetwork" not in str(jax.tree_util.tree_structure(state0.params))
  before = host(state0)
  state, metrics = step(fresh(state0), {"image": images()}, jax.random.key(1))
  check_good_step(config, before, state, metrics)


def test_step_is_a_function_of_state_batch_and_rng(compiled):
  _, _, _, step, state0, _ = compiled("csmri-sl")
  x = {"image": images()}
  s1, m1 = step(fresh(state0), x, jax.random.key(1))
  s2, m2 = step(fresh(state0), x, jax.random.key(1))
  assert_trees_equal(host(s1), host(s2))
  assert_trees_equal(host(m1), host(m2))
  _, m3 = step(fresh(state0), x, jax.random.key(2))  # other λ and noise
  assert float(m3["loss"]) != float(m1["loss"])


def test_learning_rate_schedule_decays_stepwise():
  config = make_config()
  config.train.lr = 1e-3
  config.train.lr_decay_every = 10
  config.train.lr_decay_factor = 0.5
  lr = train.learning_rate(config)
  np.testing.assert_allclose([float(lr(s)) for s in (0, 9, 10, 19, 20)],
                             [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4], rtol=1e-6)


# --- DHS against a naive masked implementation -------------------------------------


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


def _naive_reference(config, model, operator, top_b):
  """Masked DHS written out: all B forward, mask the b lowest DC, grad."""
  names = tuple(config.losses)
  scales = jnp.asarray(config.loss_scales, jnp.float32)

  @jax.jit
  def reference(state, x, rng):
    y, zf, coeffs = _step_inputs(config, operator, state, x, rng)

    def per_example(params):
      recon, weights = model.apply(
          {"params": params}, zf, coeffs, train=True, return_weights=True)
      terms = losses.compute_terms(names, recon, x, operator=operator,
                                   measurement=y, weights=weights)
      total = losses.composite(terms, coeffs, scales)
      return total, operator.data_consistency(recon, y)

    _, dc = per_example(state.params)
    lowest = jnp.argsort(dc, stable=True)[:top_b]
    mask = jnp.zeros_like(dc).at[lowest].set(1.0)

    def masked_mean(params, mask):
      total, _ = per_example(params)
      return jnp.sum(mask * total) / jnp.sum(mask)

    loss, grads = jax.value_and_grad(masked_mean)(state.params, mask)
    _, grads_all = jax.value_and_grad(masked_mean)(state.params,
                                                   jnp.ones_like(mask))
    return loss, grads, grads_all, dc, mask

  return reference


def _kept_rows_reference(config, model, operator, top_b):
  """DHS with BatchNorm written out: rank all B, then train on the b kept rows.

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
    return value, grads, updates["batch_stats"], all_rows["batch_stats"], dc

  return reference


def _relative_error(a, b):
  diff = sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2) for x, y in zip(
      jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
  norm = sum(np.sum(np.asarray(y) ** 2) for y in jax.tree_util.tree_leaves(b))
  return float(np.sqrt(diff / norm))


def test_dhs_step_equals_naive_masked_gradient(compiled):
  # Without BatchNorm only: with BatchNorm the step's gradient pass normalizes
  # over the b kept samples (the discarded ones never enter it), while a masked
  # forward of all B would normalize over all B, so the two differ by design.
  # Without batch coupling every sample's loss depends on its own input only,
  # and gathering b samples equals masking the other B - b.
  config, _, _, step, state0, reference = compiled("dhs")
  batch, top_b = config.train.batch_size, config.sampling.top_b
  assert (batch, top_b) == (4, 2)
  assert not state0.batch_stats
  x = images(batch, seed=5)
  rng = jax.random.key(7)
  ref_loss, ref_grads, grads_all, dc, mask = host(reference(state0, x, rng))
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


def test_dhs_with_batch_norm_normalizes_over_the_kept_rows(compiled):
  config, _, _, step, state0, reference = compiled("dhs_bn")
  assert state0.batch_stats and config.sampling.top_b == 2
  x = images(config.train.batch_size, seed=5)
  rng = jax.random.key(7)
  ref_loss, ref_grads, ref_stats, all_rows_stats, dc = host(reference(state0, x, rng))
  assert len(np.unique(dc)) == config.train.batch_size  # an unambiguous selection
  state, metrics = step(fresh(state0), {"image": x}, rng)
  # The same float32 arithmetic as the step (gather, then a training-mode
  # pass): roundoff apart, 1e-5 relative as in the test without BatchNorm.
  np.testing.assert_allclose(host(metrics)["loss"], ref_loss, rtol=1e-5)
  assert _relative_error(_adam_gradient(host(state.opt_state)), ref_grads) < 1e-5
  got_stats = host(state.batch_stats)
  assert jax.tree_util.tree_structure(got_stats) == jax.tree_util.tree_structure(ref_stats)
  assert _relative_error(got_stats, ref_stats) < 1e-5
  # The test can tell: running statistics updated from all B rows are others.
  assert _relative_error(all_rows_stats, ref_stats) > 1e-4


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


# --- non-finite losses -----------------------------------------------------------------


def test_non_finite_loss_freezes_the_state_and_records_the_step(compiled):
  _, _, _, step, state0, _ = compiled("csmri-sl")
  good = {"image": images()}
  state, metrics = step(fresh(state0), good, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  last_good = host(state)

  bad_image = np.array(images())
  bad_image[0, 3, 4] = np.nan
  state, metrics = step(state, {"image": jnp.asarray(bad_image)},
                        jax.random.key(1))
  assert not np.isfinite(float(metrics["loss"]))
  assert int(state.step) == 2
  assert int(state.bad_step) == 1  # the update that started at step 1
  assert_trees_equal(host(state.params), last_good.params)
  assert_trees_equal(host(state.batch_stats), last_good.batch_stats)
  assert_trees_equal(host(state.opt_state), last_good.opt_state)

  # Later finite steps do not move the frozen state either.
  for _ in range(2):
    state, metrics = step(state, good, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"]))
  assert int(state.step) == 4
  assert int(state.bad_step) == 1
  assert_trees_equal(host(state.params), last_good.params)
  assert_trees_equal(host(state.batch_stats), last_good.batch_stats)
  assert_trees_equal(host(state.opt_state), last_good.opt_state)


def test_a_finite_loss_with_non_finite_updated_parameters_freezes_the_state():
  # An infinite learning rate (rejected by `validate`, so set afterwards)
  # turns the first finite gradient into infinite parameters: that update
  # must be refused like a non-finite loss, or it would reach a checkpoint.
  config = make_config()
  config.train.lr = float("inf")
  model = train.build_model(config)
  operator = physics.make_operator(config.task, (SIZE, SIZE))
  state0 = train.create_state(config, model, jax.random.key(0))
  step = jax.jit(train.make_train_step(config, model, operator)).lower(
      state0, {"image": images()}, jax.random.key(0)).compile(FAST_COMPILE)
  state, metrics = step(state0, {"image": images()}, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  assert int(state.bad_step) == 0
  assert_trees_equal(host(state.params), host(state0.params))
  assert_trees_equal(host(state.opt_state), host(state0.opt_state))



def test_a_stack_trains_each_unet_as_its_own_run(compiled):
  # The stack at λ = (0.5, 0) against the single Unets at 0.5 and at 0, from
  # the same initial parameters, on the same batch and key: the forward pass
  # (losses, BatchNorm statistics) and the gradient norms are the same maths.
  # Only the order of float32 sums differs (the stack's convolutions run as
  # one convolution with L·C output channels), ~1e-7 relative; this tiny
  # Unet normalizes 8 values per channel at its deepest level (16×16 input,
  # batch 2), which amplifies that ~100× (measured: 5e-6 on the outputs, 2e-5
  # on the gradient norm). 2e-4 leaves 10×; a wrong or missing gradient path
  # changes these by percents.
  config, model, _, step, state0, _ = compiled("stack")
  assert model.lambdas == ((0.5,), (0.0,))
  singles = [compiled("unet"), compiled("unet_lam0")]
  batch, key = {"image": images()}, jax.random.key(3)
  state, metrics = step(fresh(state0), batch, key)
  want_loss, want_norm2 = [], 0.0
  for index, single in enumerate(singles):
    pick = lambda tree, index=index: jax.tree_util.tree_map(lambda v: v[index], tree)
    one = single.state.replace(params=pick(state0.params),
                               batch_stats=pick(state0.batch_stats))
    new, m = single.step(fresh(one), batch, key)
    want_loss.append(float(m["loss"]))
    want_norm2 += float(m["grad_norm"]) ** 2
    got_stats = jax.tree_util.tree_map(lambda v, index=index: v[index], state.batch_stats)
    for got, want in zip(jax.tree_util.tree_leaves(got_stats),
                         jax.tree_util.tree_leaves(new.batch_stats)):
      np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
  np.testing.assert_allclose(float(metrics["loss"]), np.mean(want_loss), rtol=2e-4)
  np.testing.assert_allclose(float(metrics["grad_norm"]) ** 2, want_norm2, rtol=4e-4)
