"""Shared test settings and fixtures: CPU only, persistent compilation cache."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.experimental.compilation_cache import compilation_cache as jax_cc  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
  """A persistent XLA compilation cache in pytest's temporary folder.

  Training loops build a fresh ``jax.jit`` per run; with the cache the first
  run of a module compiles and later runs (and subprocesses given
  ``JAX_COMPILATION_CACHE_DIR``) load the executables.
  """
  path = tmp_path_factory.getbasetemp() / "jax_compilation_cache"
  path.mkdir(exist_ok=True)
  old = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax_cc.reset_cache()
  yield path
  jax.config.update("jax_compilation_cache_dir", old)
  jax_cc.reset_cache()
