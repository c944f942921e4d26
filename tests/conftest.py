"""Shared test settings and fixtures: CPU only, persistent compilation cache."""

import errno
import gc
import os
import tempfile
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Every program goes into the persistent compilation cache (`compilation_cache`
# below), not only those that took over a second to compile (JAX's default):
# a subprocess the tests start (a command, a training process) otherwise
# compiles its hundred small programs again, about a third of a cached
# `train.py` launch's CPU time (7.5 instead of 10.5 s for the demo's quick run).
# Inherited by the subprocesses; a value set in the environment already is kept.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# LLVM's optimization of the compiled kernels (XLA's "backend optimization")
# costs compile time and buys nothing at the tests' tiny shapes (without it
# tests/test_models.py runs in 67 instead of 100 s on 2 cores). The optimized
# HLO program (fusions, layouts, YNNPACK calls) is the one users get, to the
# character for a HyperUnet training gradient; only each kernel's machine
# code is less optimized. Inherited by the subprocesses the tests start; a
# level set in XLA_FLAGS already is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

# Under pytest-xdist (`-n 2`) each worker builds its datasets in a folder of
# its own: two processes writing the same TFDS dataset at once would race.
if os.environ.get("PYTEST_XDIST_WORKER"):
  from hyperrecon_jax.data import locations as _data_locations
  os.environ[_data_locations.DATA_DIR_ENV] = os.path.join(
      _data_locations.default_data_dir(), os.environ["PYTEST_XDIST_WORKER"])

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cc
import pytest

# The integration tier: modules that train runs, start subprocesses or drive a
# browser. `pytest -m "not slow" tests` runs the unit tier alone (a few minutes
# on 2 cores); CI and the README's command run both.
SLOW_MODULES = frozenset({
    "test_baselines", "test_checkpoints", "test_checkpoints_damage", "test_cli",
    "test_cli_reconstruct", "test_cli_runs", "test_cli_signals",
    "test_data_damage", "test_explorer", "test_explorer_browser", "test_explorer_many_terms",
    "test_gradient_scales",
    "test_hypernetwork", "test_models",
    "test_pretrained", "test_report", "test_segmentation", "test_train_loop",
    "test_train_loop_processes", "test_train_loop_workdir", "test_train_multiprocess",
    "test_train_step", "test_train_step_dhs",
})


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: an integration test (training runs, subprocesses, the browser)")


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """A persistent XLA compilation cache in pytest's temporary folder, for every test.

  Training loops build a fresh ``jax.jit`` per run, and modules compile the
  same small models' programs: with the cache a program is compiled once per
  worker and loaded afterwards, by later runs, later modules and the
  subprocesses given ``JAX_COMPILATION_CACHE_DIR`` (measured: 249 instead of
  287 s of CPU time for test_models, test_hypernetwork, test_grid,
  test_pretrained, test_reconstruct, test_evaluate and test_gradient_scales
  in one process). Each pytest-xdist worker has a
  temporary folder, so a cache, of its own: JAX writes a cache entry in
  place, and another process could read it half-written.
  """
  path = tmp_path_factory.getbasetemp() / "jax_compilation_cache"
  path.mkdir(exist_ok=True)
  old = jax.config.jax_compilation_cache_dir
  old_min = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_compilation_cache_dir", str(path))
  # As the environment above says (JAX may have been imported before it).
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
  jax_cc.reset_cache()
  yield path
  jax.config.update("jax_compilation_cache_dir", old)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)
  jax_cc.reset_cache()


# The training-loop tests' run (tests/loop_support.py), built once per module.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The embedded mni152 dataset at 32×32 in a temporary folder."""
  import loop_support
  return loop_support.build_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def run_a(data_dir, tmp_path_factory, compilation_cache):
  """Run A: 6 uninterrupted training steps, the reference of the loop tests.

  Built in every module that asks for it; through the persistent compilation
  cache only the first build of the session compiles its programs.
  """
  del compilation_cache
  import loop_support
  return loop_support.train_run_a(data_dir, tmp_path_factory)


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
  """Drops every compiled program and trace when a test module ends.

  jit keeps each program it compiled (and the constants baked into it) for
  the life of the process; over the ~50 modules of the suite they, not the
  modules' data, are what grows the process. Modules rarely share a program,
  so little is compiled twice.
  """
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture
def own_terms():
  """Restores the registry of loss terms after a test that registers its own.

  ``tests/own_terms.py`` is imported afresh by each user (its module is
  dropped with the terms it registered), so every test sees the built-in
  terms alone unless it registers more.
  """
  import sys

  from hyperrecon_jax import losses
  needs = (losses.NEEDS_TARGET, losses.NEEDS_MEASUREMENT, losses.NEEDS_WEIGHTS)
  saved = dict(losses.TERMS._terms), [set(names._names) for names in needs]
  sys.modules.pop("own_terms", None)
  yield losses
  sys.modules.pop("own_terms", None)
  losses.TERMS._terms.clear()
  losses.TERMS._terms.update(saved[0])
  for names, before in zip(needs, saved[1]):
    names._names.clear()
    names._names.update(before)


@pytest.fixture
def read_only_folder(monkeypatch):
  """Makes a given folder read-only as a read-only mount does, for the write probes.

  Permission bits do not bind root, whom CI runs as, so the refusal is made
  where the probes ask: creating a file (`tempfile.mkstemp`) fails with
  EROFS, ``os.access(folder, W_OK)`` is False and ``os.statvfs`` says
  read-only.

  Returns:
    a function of a folder that makes it read-only for the rest of the test.
  """
  create, access, statvfs, refused = tempfile.mkstemp, os.access, os.statvfs, set()

  def mkstemp(*args, dir=None, **kwargs):
    if dir is not None and os.path.abspath(dir) in refused:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    return create(*args, dir=dir, **kwargs)

  def asked(path, mode, **kwargs):
    if os.path.abspath(path) in refused and mode & os.W_OK:
      return False
    return access(path, mode, **kwargs)

  def stat(path):
    result = statvfs(path)
    if os.path.abspath(path) not in refused:
      return result
    return types.SimpleNamespace(f_flag=result.f_flag | os.ST_RDONLY)
  monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
  monkeypatch.setattr(os, "access", asked)
  monkeypatch.setattr(os, "statvfs", stat)
  return lambda folder: refused.add(os.path.abspath(folder))
