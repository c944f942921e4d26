"""What the checkpoint tests share: a tiny config and states that differ in every leaf."""

import configs
import jax
import jax.numpy as jnp
import numpy as np

from hyperrecon_jax import train

SIZE = 16


def make_config(batch_norm=True):
  # Configurations of tests/test_train_step.py ('csmri-sl' and, without
  # BatchNorm, 'dhs'), so that their compiled initializations are shared.
  config = configs.default()
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


def saved_states():
  """``(config, state to save, fresh state)``: every leaf of the first differs."""
  config = make_config()
  saved, fresh = perturbed_state(config, seed=1)
  return config, saved, fresh
