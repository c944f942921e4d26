"""Tests of the jitted training step (hyperrecon_jax.train.step / state).

One compiled step per configuration, shared by the tests of this module
(`train_step_support`); the DHS step is tested in tests/test_train_step_dhs.py. XLA
executables go to a persistent compilation cache in the pytest process's
temporary folder, so a program compiled by one of these modules is not compiled
again by another in the same process (the loop builds a fresh ``jax.jit`` per
run).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_step_support import FAST_COMPILE
from train_step_support import SIZE
from train_step_support import assert_trees_equal
from train_step_support import compiled_ahead
from train_step_support import fresh
from train_step_support import host
from train_step_support import images
from train_step_support import make_config

from hyperrecon_jax import physics
from hyperrecon_jax import train
from hyperrecon_jax.train import state as state_lib
from hyperrecon_jax.train import step as step_lib

# XLA executables persist across the module's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")


# Every configuration the tests train, by name: (task, family, options).
CONFIGS = {
    "csmri-sl": ("csmri", "sl", {}),
    "csmri-ao": ("csmri", "ao", {}),
    "denoise-ao": ("denoise", "ao", {}),
    "superres-ao": ("superres", "ao", {}),
    "unet": ("csmri", "sl", dict(hyper_dim=0)),
    "unet_lam0": ("csmri", "sl", dict(hyper_dim=0, fixed=(0.0,))),
    "stack": ("csmri", "sl", dict(hyper_dim=0, baselines=((0.5,), (0.0,)))),
}


@pytest.fixture(scope="module")
def compiled():
  """Every configuration of CONFIGS, compiled ahead (`train_step_support.compiled_ahead`)."""
  with compiled_ahead(CONFIGS) as get:
    yield get


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
  # p(step) = p0 + (p1 − p0)·min(step / (num_steps − 1), 1) with p0 = 1,
  # p1 = 0: every λ an endpoint at the first update (step 0), none at the last
  # (step 100 of 101; a uniform draw is never exactly 0 or 1), half at mid-run.
  # For 4,096 draws at p = 0.5 the endpoint fraction has a standard deviation
  # of 0.0078; 0.04 is five of them.
  config = make_config("csmri", "sl")
  config.hparams.sampler = "endpoints"
  config.hparams.endpoint_prob, config.hparams.endpoint_prob_final = 1.0, 0.0
  config.train.num_steps = 101
  train.check_config(config)
  draw = jax.jit(lambda step: train.step.sample_lambdas(config, jax.random.key(0), 4096, step))
  ends = lambda step: float(np.mean(np.isin(np.asarray(draw(step)), (0.0, 1.0))))
  assert ends(0) == 1.0 and ends(100) == 0.0 and ends(150) == 0.0
  assert ends(99) > 0.0
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


def test_the_finiteness_check_is_computed_once(compiled):
  # `_updated` keeps each state leaf or its update with a select on one
  # scalar. XLA copies cheap scalar arithmetic into each fusion that reads
  # it; an AND over the leaves' checks, so copied, makes every leaf's select
  # read every leaf's check: hundreds of fusions with a parameter per leaf, a
  # program four times longer and compiled two to three times slower. The
  # program is counted, not timed: a few fusions may read every leaf (the
  # sums of the check and of the gradient norm), a select per leaf may not.
  c = compiled("csmri-sl")
  leaves = len(jax.tree_util.tree_leaves((c.state.params, c.state.batch_stats)))
  fusions = re.split(r"\n(?=%fused_computation)", c.step.as_text())[1:]
  wide = [f.split("(", 1)[0] for f in fusions
          if f.split("\n\n", 1)[0].count(" parameter(") >= leaves // 2]
  assert len(wide) <= 4, f"{len(wide)} fusions read ≥ {leaves // 2} buffers: {wide[:5]}"


def test_the_finiteness_check_finds_one_non_finite_element():
  # Against NumPy's answer, for every kind of non-finite value at every
  # place, and for the finite extremes (which a sum of the values would
  # overflow on): the check counts non-finite elements, it sums no values.
  tree = {"a": np.float32([3.4e38, -3.4e38, 1e-45, -0.0]).reshape(2, 2),
          "b": [np.zeros(3, np.float32), np.ones((2, 3), np.float32)]}
  check = jax.jit(step_lib._all_finite)
  assert bool(check(tree)) == all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree))
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  for bad in (np.nan, np.inf, -np.inf):
    for i, leaf in enumerate(leaves):
      for j in range(leaf.size):
        changed = [x.copy() for x in leaves]
        changed[i].flat[j] = bad
        want = all(np.isfinite(x).all() for x in changed)
        assert not want
        assert bool(check(jax.tree_util.tree_unflatten(treedef, changed))) == want, (bad, i, j)


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


# --- hand-computed references of the step's parts ----------------------------------------


def test_the_endpoint_probability_is_held_at_its_final_value_after_the_last_step():
  # p(step) = p0 + (p1 − p0)·min(step / (num_steps − 1), 1), by hand for
  # p0 = 0.2, p1 = 0.6, num_steps = 11: 0.2 at step 0, 0.4 at 5, 0.6 at the
  # last update (10) and after it (the DHS replay of the final checkpoint
  # draws at step num_steps = 11). Unclamped, step 20 would give 1.0. float32
  # arithmetic on values < 1: error ≤ a few ulp (6e-8 each); 1e-6 bounds it.
  config = make_config("csmri", "sl")
  config.hparams.sampler = "endpoints"
  config.hparams.endpoint_prob, config.hparams.endpoint_prob_final = 0.2, 0.6
  config.train.num_steps = 11
  for step, want in [(0, 0.2), (5, 0.4), (10, 0.6), (11, 0.6), (20, 0.6), (None, 0.2)]:
    np.testing.assert_allclose(float(step_lib._endpoint_prob(config, step)), want, atol=1e-6,
                               err_msg=f"step {step}")


def _numpy_coefficients(lam):
  """Stick-breaking by hand: c_k = λ_k·Π_{j<k}(1 − λ_j), c_K = Π_j(1 − λ_j).

  One λ maps to [1 − λ, λ].
  """
  lam = np.asarray(lam, np.float64)
  if lam.size == 1:
    return np.array([1.0 - lam[0], lam[0]])
  before = np.concatenate([[1.0], np.cumprod(1.0 - lam)[:-1]])
  return np.concatenate([lam * before, [np.prod(1.0 - lam)]])


@pytest.mark.parametrize("num", [0, -1])
def test_validation_lambdas_of_no_hyperparameter_are_refused(num):
  # 0 gave three empty λ, validated as if they were three points.
  with pytest.raises(ValueError, match=rf"needs ≥ 1 hyperparameter, got {num}"):
    step_lib.validation_lambdas(num)


@pytest.mark.parametrize("num", [1, 2, 3, 4])
def test_validation_lambdas_are_the_corners_or_the_vertices_and_the_centre(num):
  lams = step_lib.validation_lambdas(num)
  if num == 1:
    assert lams == [(0.0,), (0.5,), (1.0,)]
    return
  if num == 2:
    # Three corners of the square and its centre; (1, 1) would repeat (1, 0).
    assert lams == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (0.5, 0.5)]
    return
  # From three λ on: each term alone, then equal weights 1/K. The λ are
  # rounded to 6 decimals, which moves a coefficient by ≤ K·5e-7; 3e-6 bounds it.
  k = num + 1
  want = np.concatenate([np.eye(k), np.full((1, k), 1.0 / k)])
  got = np.array([_numpy_coefficients(lam) for lam in lams])
  np.testing.assert_allclose(got, want, atol=3e-6)


def _tiny_state(config, params):
  """A train state of one parameter vector and one BatchNorm statistic (no network)."""
  return state_lib.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats={"mean": jnp.zeros(2)},
      opt_state=state_lib.optimizer(config).init(params), bad_step=jnp.full((), -1, jnp.int32))


def test_an_update_is_adam_with_the_decayed_step_size_written_out():
  # Adam (β1 0.9, β2 0.999, ε 1e-8) by hand in float64, from parameters at 0 so
  # that the new parameters are the updates themselves: float32 rounding of a
  # handful of operations, ~1e-6 relative; rtol 1e-5. The step size halves
  # after every update (lr_decay_every 1, factor 0.5): 1e-3, then 5e-4.
  config = make_config()
  config.train.lr, config.train.lr_decay_every, config.train.lr_decay_factor = 1e-3, 1, 0.5
  tx = state_lib.optimizer(config)
  update = jax.jit(step_lib._updated, static_argnums=1)  # one program, not ~100 dispatches
  grads = [np.array([0.5, -2.0, 1e-3], np.float32), np.array([-1.0, 4.0, 3e-3], np.float32)]
  state = _tiny_state(config, {"w": jnp.zeros(3)})
  b1, b2, eps = 0.9, 0.999, 1e-8
  m = v = want = np.zeros(3)
  for t, (g, lr) in enumerate(zip(grads, (1e-3, 5e-4)), 1):
    g64 = g.astype(np.float64)
    m, v = b1 * m + (1 - b1) * g64, b2 * v + (1 - b2) * g64**2
    want = want - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    stats = {"batch_stats": {"mean": jnp.full(2, float(t))}}
    state, grad_norm = update(state, tx, jnp.float32(1.0), {"w": jnp.asarray(g)}, stats)
    np.testing.assert_allclose(np.asarray(state.params["w"]), want, rtol=1e-5)
    # ‖g‖₂ of the whole gradient tree, in float32 (rtol 1e-6).
    np.testing.assert_allclose(float(grad_norm), np.linalg.norm(g64), rtol=1e-6)
    # The running statistics are the forward pass's new ones.
    np.testing.assert_array_equal(np.asarray(state.batch_stats["mean"]), [t, t])
    assert int(state.step) == t and int(state.bad_step) == -1


def test_the_first_non_finite_step_stays_recorded_after_another():
  # A run that diverged at update 1 says so in its checkpoints; a second
  # non-finite step (3) must not overwrite the step the trouble began at.
  config = make_config()
  tx = state_lib.optimizer(config)
  update = jax.jit(step_lib._updated, static_argnums=1)
  state = _tiny_state(config, {"w": jnp.ones(3)})
  good, bad = {"w": jnp.ones(3)}, {"w": jnp.array([1.0, np.nan, 1.0])}
  stats = {"batch_stats": {"mean": jnp.ones(2)}}
  recorded = []
  for grads in (good, bad, good, bad):
    state, _ = update(state, tx, jnp.float32(1.0), grads, stats)
    recorded.append(int(state.bad_step))
  assert recorded == [-1, 1, 1, 1]
  assert int(state.step) == 4


def test_the_step_counter_changes_the_lambda_and_the_noise_of_a_step(compiled):
  # The step's RNG is fold_in(rng, state.step): the loop may pass one key
  # for a whole run, and each update must still draw its own λ and noise.
  _, _, _, step, state0, _ = compiled("csmri-sl")
  batch, key = {"image": images()}, jax.random.key(1)
  _, at_0 = step(fresh(state0), batch, key)
  _, at_5 = step(fresh(state0).replace(step=jnp.full((), 5, jnp.int32)), batch, key)
  assert float(at_5["loss"]) != float(at_0["loss"])


def test_unstack_gives_the_unet_and_the_lambda_of_its_index():
  config = make_config(hyper_dim=0, baselines=((0.5,), (0.0,), (0.25,)))
  variables = {"params": {"w": jnp.arange(6.0).reshape(3, 2)}}
  plain, model, one = train.unstack(config, variables, 2)
  assert tuple(plain.hparams.fixed) == (0.25,) and tuple(plain.hparams.baselines) == ()
  assert type(model).__name__ == "Unet"
  np.testing.assert_array_equal(np.asarray(one["params"]["w"]), [4.0, 5.0])
  assert len(config.hparams.baselines) == 3  # the stack's config is left as it was
  # A JAX array indexed past its end clamps: the index is checked first.
  for index in (3, -1):
    with pytest.raises(IndexError, match="the stack has 3 Unets, no Unet"):
      train.unstack(config, variables, index)


def test_the_memory_floor_of_a_stack_counts_every_unets_rows_rounded_up_per_device():
  # The activations the backward pass keeps per 16×16 image of a 4-channel
  # Unet (the convolutions' inputs, as tests/test_train_loop_workdir.py
  # counts them at 32×32): enc0 16²·6, enc1 8²·8, enc2 4²·8, enc3 2²·8,
  # dec0 4²·12, dec1 8²·12, dec2 16²·12, head 16²·4.
  kept = 256 * 6 + 64 * 8 + 16 * 8 + 4 * 8 + 16 * 12 + 64 * 12 + 256 * 12 + 256 * 4
  assert kept == 7264
  config = make_config(hyper_dim=0, baselines=((0.5,), (0.0,)), batch=3)
  model = train.build_model(config)
  # 3 rows over 2 devices: the fuller device holds 2; each of the 2 Unets
  # keeps its own activations; float32.
  _, activations = state_lib.memory_floor_parts(config, model, num_devices=2)
  assert activations == 2 * 2 * kept * 4


@pytest.mark.parametrize("section, field", [("model", "channels"), ("train", "lr"),
                                            (None, "hparams")])
def test_a_field_the_config_lacks_is_a_config_error_naming_it(section, field):
  # build_model, create_state and make_train_step (and its step, as traced)
  # raised ml_collections' bare AttributeError "'channels'" for a config built
  # by hand; library.md promises a ConfigError that names the field.
  config = make_config()
  with (config[section] if section else config).unlocked():
    del (config[section] if section else config)[field]
  operator = physics.make_operator(config.task, (SIZE, SIZE))
  with pytest.raises(train.ConfigError, match=rf"the config lacks a field .*\({field}\)"):
    model = train.build_model(config)
    state = train.create_state(config, model, jax.random.key(0))
    step = train.make_train_step(config, model, operator)
    jax.eval_shape(step, state, {"image": images()}, jax.random.key(1))
