"""Tests of hyperrecon_jax.checkpoints: save/restore of state, data position, config.

Damaged checkpoints are tested in test_checkpoints_damage.py.
"""

import asyncio
import json
import os

from checkpoint_support import assert_trees_equal
from checkpoint_support import make_config
from checkpoint_support import perturbed_state
from checkpoint_support import saved_states
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import errors
from hyperrecon_jax import train

# XLA executables persist across the module's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")


@pytest.fixture(scope="module")
def states():
  return saved_states()


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
  assert checkpoints.saved_config(str(tmp_path)) == config_dict
  assert os.path.isdir(tmp_path / "checkpoints" / "7")


def test_close_waits_for_the_removal_of_an_interrupted_save(tmp_path, monkeypatch):
  # An interrupted save's temporary folder, which the manager removes in
  # orbax's thread; the removal is made slow, as of a large step.
  tmp = tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp-1234" / "state"
  tmp.mkdir(parents=True)
  (tmp / "manifest.ocdbt").write_bytes(b"x" * 10)
  try:
    from orbax.checkpoint._src.path import async_path
  except ImportError:
    async_path = None  # orbax before 0.12 removes the folder in the constructor itself
  if async_path is not None:
    rmtree = async_path.rmtree

    async def slow_rmtree(path, **kwargs):
      await asyncio.sleep(0.5)
      await rmtree(path, **kwargs)

    monkeypatch.setattr(async_path, "rmtree", slow_rmtree)
  mngr = checkpoints.manager(str(tmp_path))
  mngr.close()
  # A process may end at once (os._exit): nothing of the folder is left.
  assert os.listdir(tmp_path / "checkpoints") == []


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
  assert checkpoints.saved_config(str(tmp_path / "other")) is None


def test_load_config_of_a_missing_workdir_creates_nothing(tmp_path):
  # A read-only query (e.g. of a mistyped --workdir) must not create folders.
  workdir = tmp_path / "typo"
  assert checkpoints.saved_config(str(workdir)) is None
  assert not workdir.exists()


def test_load_config_of_a_given_step(states, tmp_path):
  config, saved, _ = states
  mngr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mngr, 1, saved, {}, config)
  config2 = make_config()
  config2.train.num_steps = 12345
  checkpoints.save(mngr, 2, saved, {}, config2)
  mngr.close()
  assert checkpoints.saved_config(str(tmp_path))["train"]["num_steps"] == 12345
  assert checkpoints.saved_config(str(tmp_path), step=1) == json.loads(
      config.to_json())


def test_a_run_stored_before_a_field_was_added_loads(states, tmp_path):
  # Runs stored before the stacks of plain Unets have no hparams.baselines.
  config, saved, _ = states
  old = config.copy_and_resolve_references()
  del old.hparams.baselines
  mngr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mngr, 1, saved, {}, old)
  mngr.close()
  assert "baselines" not in checkpoints.saved_config(str(tmp_path))["hparams"]
  loaded, _, variables, step = train.load_trained(str(tmp_path))
  assert step == 1 and loaded.hparams.baselines == ()
  assert_trees_equal(variables, saved.variables())
  assert train.load_config(str(tmp_path)).to_json() == config.to_json()


# --- keep-all, finiteness, read-only readers -------------------------------------------


def test_max_to_keep_0_keeps_every_checkpoint(states, tmp_path):
  config, saved, _ = states
  mngr = checkpoints.manager(str(tmp_path), max_to_keep=0)
  for step in range(1, 6):
    checkpoints.save(mngr, step, saved, {}, config)
  assert mngr.all_steps() == [1, 2, 3, 4, 5]
  mngr.close()
  # The project's InputError with its own message, not orbax's error about
  # the same value.
  with pytest.raises(errors.InputError,
                     match=r"^max_to_keep must be ≥ 0 \(0 keeps all\), got -1$"):
    checkpoints.manager(str(tmp_path), max_to_keep=-1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_state_is_never_written(states, tmp_path, bad):
  config, saved, _ = states
  leaves, treedef = jax.tree_util.tree_flatten(saved.params)
  leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(bad)
  broken = saved.replace(params=jax.tree_util.tree_unflatten(treedef, leaves))
  mngr = checkpoints.manager(str(tmp_path))
  with pytest.raises(checkpoints.CheckpointError, match="NaN or ±Inf"):
    checkpoints.save(mngr, 1, broken, {}, config)
  assert mngr.all_steps() == []
  mngr.close()


def test_a_reader_creates_nothing_and_leaves_a_save_in_progress_alone(
    states, tmp_path):
  config, saved, fresh = states
  mngr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mngr, 1, saved, {}, config)
  mngr.close()
  # What a trainer's save looks like while orbax is writing it.
  in_progress = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234"
  (in_progress / "state").mkdir(parents=True)
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  reader = checkpoints.reader(str(tmp_path))
  step, state, _, _ = checkpoints.restore(reader, fresh)
  reader.close()
  assert step == 1
  assert_trees_equal(state, saved)
  assert in_progress.is_dir()
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
  assert checkpoints.reader(str(tmp_path / "none")) is None
  assert not (tmp_path / "none").exists()


_FAILED_WRITE = r"""
import json, os, resource, sys
sys.path.insert(0, sys.argv[2])
from checkpoint_support import saved_states
from hyperrecon_jax import checkpoints
config, saved, _ = saved_states()
mngr = checkpoints.manager(sys.argv[1], max_to_keep=0)
checkpoints.save(mngr, 1, saved, {}, config)
# Files may grow to 2 KiB: the pending record fits, the step's arrays do not.
# Python ignores SIGXFSZ, so a write past the limit fails with EFBIG.
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, resource.RLIM_INFINITY))
try:
  checkpoints.save(mngr, 2, saved, {}, config)
except OSError as e:
  out = {"errno": e.errno, "message": str(e)}
finally:
  mngr.close()  # as the training loop does, before the process ends
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
# A reader: a writing manager starts removing the failed step's temporary
# folder in a thread of its own, which the interpreter's exit interrupts.
reader = checkpoints.reader(sys.argv[1])
out["steps"] = [int(s) for s in reader.all_steps()]
reader.close()
print(json.dumps(out))
"""


def test_a_write_that_fails_is_an_os_error_in_one_sentence(tmp_path):
  # A full disk during a save was a ValueError from tensorstore, which the
  # command line took for a bug: a traceback of ~250 lines, and orbax's,
  # asyncio's and tensorstore's logs of every other array's failed write
  # (1,600 lines on stderr for the demo). A file size limit fails the writes
  # the same way without a small file system to fill.
  import subprocess
  import sys
  tests = os.path.dirname(os.path.abspath(__file__))
  proc = subprocess.run([sys.executable, "-c", _FAILED_WRITE, str(tmp_path / "run"), tests],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["errno"] == 27  # EFBIG: "File too large"
  assert out["message"].startswith(
      f"[Errno 27] checkpoint 2 could not be written to {tmp_path / 'run' / 'checkpoints'}: "
      "File too large (")
  assert out["message"].endswith("the checkpoints before it are intact, and the same command "
                                 "resumes from the newest once the cause is fixed")
  assert out["steps"] == [1]
  noise = [line for line in proc.stderr.splitlines()
           if "os_error_code" in line or "Event loop is closed" in line or "Traceback" in line]
  assert not noise, "\n".join(noise[:20])
