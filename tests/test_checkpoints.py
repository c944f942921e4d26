"""Tests of hyperrecon_jax.checkpoints: save/restore of state, data position, config."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import train

SIZE = 16


# XLA executables persist across the module's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")


def make_config(batch_norm=True):
  # Configurations of tests/test_train_step.py ('csmri-sl' and, without
  # BatchNorm, 'dhs'), so that their compiled initializations are shared.
  config = train.default_config()
  config.data.image_size = SIZE
  config.data.num_threads = 0
  config.model.channels = 4
  config.model.hyper_dim = 4
  config.model.batch_norm = batch_norm
  config.model.strategy = "vmap"
  config.train.batch_size = 2
  config.sampling.top_b = 1
  if not batch_norm:
    config.losses = ("dc", "weight_l1", "tv")
    config.loss_scales = (1.0, 100.0, 10.0)
  return config


def perturbed_state(config, seed):
  """A TrainState whose every leaf differs from a freshly created one."""
  model = train.build_model(config)
  state = train.create_state(config, model, jax.random.key(0))
  leaves, treedef = jax.tree_util.tree_flatten(state)
  rng = np.random.default_rng(seed)
  out = []
  for leaf in leaves:
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.floating):
      leaf = leaf + rng.standard_normal(leaf.shape).astype(leaf.dtype)
    else:
      leaf = leaf + rng.integers(3, 10, size=leaf.shape).astype(leaf.dtype)
    out.append(jnp.asarray(leaf))
  return jax.tree_util.tree_unflatten(treedef, out), state


def assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def states():
  config = make_config()
  saved, fresh = perturbed_state(config, seed=1)
  return config, saved, fresh


def test_roundtrip_of_state_data_state_and_config(states, tmp_path):
  config, saved, fresh = states
  assert isinstance(saved.opt_state[0], optax.ScaleByAdamState)
  mngr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mngr, 7, saved, {"next_index": 28}, config)
  mngr.close()

  mngr = checkpoints.manager(str(tmp_path))
  step, state, data_state, config_dict = checkpoints.restore(mngr, fresh)
  mngr.close()
  assert step == 7
  assert isinstance(state, train.TrainState)
  assert_trees_equal(state, saved)
  assert data_state == {"next_index": 28}
  assert config_dict == json.loads(config.to_json())
  assert checkpoints.load_config(str(tmp_path)) == config_dict
  assert os.path.isdir(tmp_path / "checkpoints" / "7")


def test_restore_accepts_an_abstract_state(states, tmp_path):
  config, saved, fresh = states
  mngr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mngr, 1, saved, {"next_index": 4}, config)
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      fresh)
  step, state, _, _ = checkpoints.restore(mngr, abstract)
  mngr.close()
  assert step == 1
  assert_trees_equal(state, saved)


def test_restore_accepts_shapes_without_shardings(states, tmp_path):
  # What jax.eval_shape(create_state) gives (trained.load_trained uses it).
  config, saved, fresh = states
  mngr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mngr, 1, saved, {"next_index": 4}, config)
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
  step, state, _, _ = checkpoints.restore(mngr, abstract)
  mngr.close()
  assert step == 1
  assert_trees_equal(state, saved)


def test_roundtrip_without_batch_norm_statistics(tmp_path):
  config = make_config(batch_norm=False)
  saved, fresh = perturbed_state(config, seed=2)
  assert not saved.batch_stats
  mngr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mngr, 3, saved, None, config)
  step, state, data_state, _ = checkpoints.restore(mngr, fresh)
  mngr.close()
  assert step == 3
  assert_trees_equal(state, saved)
  assert not state.batch_stats
  assert state.variables().keys() == {"params"}
  assert data_state == {}  # None is stored as an empty position


def test_restore_picks_the_requested_or_latest_step_and_keeps_max_to_keep(
    states, tmp_path):
  config, saved, fresh = states
  mngr = checkpoints.manager(str(tmp_path), max_to_keep=2)
  for step in (2, 4, 6):
    marked = saved.replace(step=jnp.asarray(step, jnp.int32))
    checkpoints.save(mngr, step, marked, {"next_index": 10 * step}, config)
  assert mngr.all_steps() == [4, 6]
  step, state, data_state, _ = checkpoints.restore(mngr, fresh)
  assert (step, int(state.step), data_state) == (6, 6, {"next_index": 60})
  step, state, data_state, _ = checkpoints.restore(mngr, fresh, step=4)
  assert (step, int(state.step), data_state) == (4, 4, {"next_index": 40})
  mngr.close()


def test_restore_and_load_config_on_an_empty_workdir_return_none(states,
                                                                 tmp_path):
  _, _, fresh = states
  mngr = checkpoints.manager(str(tmp_path / "empty"))
  assert checkpoints.restore(mngr, fresh) is None
  mngr.close()
  assert checkpoints.load_config(str(tmp_path / "other")) is None


def test_load_config_of_a_missing_workdir_creates_nothing(tmp_path):
  # A read-only query (e.g. of a mistyped --workdir) must not create folders.
  workdir = tmp_path / "typo"
  assert checkpoints.load_config(str(workdir)) is None
  assert not workdir.exists()


def test_load_config_of_a_given_step(states, tmp_path):
  config, saved, _ = states
  mngr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mngr, 1, saved, {}, config)
  config2 = make_config()
  config2.train.num_steps = 12345
  checkpoints.save(mngr, 2, saved, {}, config2)
  mngr.close()
  assert checkpoints.load_config(str(tmp_path))["train"]["num_steps"] == 12345
  assert checkpoints.load_config(str(tmp_path), step=1) == json.loads(
      config.to_json())
