"""Tests of hyperrecon_jax.checkpoints with damaged files: checksums, digests, fallbacks.

A damaged step is skipped with a warning naming it, the newest intact one is
used, and the trainer moves damaged steps aside (see the module docstring).
"""

import json
import os
import shutil
import subprocess
import sys

from checkpoint_support import saved_states
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import checksums

# XLA executables persist across the module's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")


@pytest.fixture(scope="module")
def states():
  return saved_states()


# --- damage ------------------------------------------------------------------------------


@pytest.fixture()
def three_steps(states, tmp_path):
  """Checkpoints 1, 2, 3 (state.step marks which) in a fresh workdir."""
  config, saved, fresh = states
  mngr = checkpoints.manager(str(tmp_path))
  for step in (1, 2, 3):
    marked = saved.replace(step=jnp.asarray(step, jnp.int32))
    checkpoints.save(mngr, step, marked, {"next_index": step}, config)
  mngr.close()
  return tmp_path, fresh


def _largest_state_file(step_dir):
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def _flip_a_bit(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_json(path):
  path.write_text('{"next_index": ')


def _data_item(step_dir):
  return next(p for p in (step_dir / "data").rglob("*")
              if p.is_file() and p.name != "commit_success.txt")


@pytest.mark.parametrize("damage, target", [
    (_flip_a_bit, _largest_state_file),
    (_truncate, _largest_state_file),
    (_truncate, lambda d: d / "state" / "manifest.ocdbt"),
    (_garble_json, _data_item),
    (_garble_json, lambda d: d / "_CHECKPOINT_METADATA"),
    (lambda p: p.unlink(), lambda d: d / "state" / "_METADATA"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(
    three_steps, damage, target, capfd):
  workdir, fresh = three_steps
  bad = target(workdir / "checkpoints" / "3")
  damage(bad)
  reader = checkpoints.reader(str(workdir))
  restored = checkpoints.restore(reader, fresh)
  assert (restored.step, int(restored.state.step)) == (2, 2)
  assert restored.data_state == {"next_index": 2}
  err = capfd.readouterr().err
  assert "warning: checkpoint 3 is damaged" in err
  assert os.path.basename(str(bad)) in err  # names the file
  # A given step fails with one line naming the file.
  with pytest.raises(checkpoints.CheckpointError, match=os.path.basename(str(bad))):
    checkpoints.restore(reader, fresh, step=3)
  reader.close()
  assert (workdir / "checkpoints" / "3").is_dir()  # readers move nothing


def _files(workdir):
  return {str(p.relative_to(workdir)): p.read_bytes()
          for p in sorted(workdir.rglob("*")) if p.is_file()}


def _largest_data_file(step_dir):
  """The largest file of array data (OCDBT's data files, not its metadata)."""
  files = [p for p in (step_dir / "state").glob("ocdbt.process_*/d/*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def _flip_64_bytes(path, first):
  """Flips 64 bytes of a file from byte ``first`` on."""
  data = bytearray(path.read_bytes())
  for i in range(first, min(first + 64, len(data))):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _read_by_orbax_alone(step_dir, fresh, saved):
  """What orbax reads of a step's state without checksums or digests.

  Returns:
    'same' (the values saved), 'changed' (other values) or 'error' (nothing).
  """
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      got = checkpointer.restore(step_dir / "state", fresh)
  except Exception:  # orbax raises tensorstore's errors as they come
    return "error"
  pairs = zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(saved))
  return "same" if all(np.array_equal(a, b) for a, b in pairs) else "changed"


class _Killed(Exception):
  pass


def _save_killed_before_checksums(states, workdir, step):
  """What a trainer killed between orbax's rename and the checksums leaves."""
  config, saved, _ = states
  marked = saved.replace(step=jnp.asarray(step, jnp.int32))

  def killed(step_dir):
    raise _Killed(step_dir)

  mngr = checkpoints.manager(str(workdir))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(checksums, "write", killed)
    with pytest.raises(_Killed):
      checkpoints.save(mngr, step, marked, {"next_index": step}, config)
  mngr.close()
  step_dir = workdir / "checkpoints" / str(step)
  assert step_dir.is_dir() and not (step_dir / checksums.CHECKSUMS).exists()
  assert (workdir / checksums.PENDING).exists()
  return step_dir


def test_a_save_cut_short_before_its_checksums_is_verified_by_its_digests(
    states, three_steps, capfd):
  workdir, fresh = three_steps
  step_dir = _save_killed_before_checksums(states, workdir, 4)
  # Readers verify the step without writing anything.
  before = _files(workdir)
  reader = checkpoints.reader(str(workdir))
  restored = checkpoints.restore(reader, fresh)
  reader.close()
  assert (restored.step, int(restored.state.step)) == (4, 4)
  assert restored.data_state == {"next_index": 4}
  assert checkpoints.saved_config(str(workdir)) == restored.config
  assert _files(workdir) == before
  assert "skipped" not in capfd.readouterr().err
  # The trainer completes it: checksums written, digests removed.
  mngr = checkpoints.manager(str(workdir))
  assert checkpoints.restore(mngr, fresh, trainer=True).step == 4
  mngr.close()
  assert checksums.verify(str(step_dir))
  assert not (workdir / checksums.PENDING).exists()


def test_a_save_cut_short_whose_data_item_was_then_edited_is_never_used(
    states, three_steps, capfd):
  # Valid JSON that differs from what was saved: only the digest recorded
  # before the save tells it from the real data position.
  workdir, fresh = three_steps
  step_dir = _save_killed_before_checksums(states, workdir, 4)
  _data_item(step_dir).write_text('{"next_index": 999}')
  reader = checkpoints.reader(str(workdir))
  restored = checkpoints.restore(reader, fresh)
  reader.close()
  assert (restored.step, int(restored.state.step)) == (3, 3)
  assert restored.data_state == {"next_index": 3}
  assert "warning: checkpoint 4 is damaged and was skipped" in capfd.readouterr().err


def _damage_cut_short_step(states, workdir, fresh, where, effect):
  """Step 4 without checksums, 64 bytes of its largest data file flipped.

  Flipped at the ``'start'``, the array cannot be decoded (``effect``
  'error'); flipped in the ``'middle'``, it decodes to other values
  ('changed').
  """
  step_dir = _save_killed_before_checksums(states, workdir, 4)
  saved = states[1].replace(step=jnp.asarray(4, jnp.int32))
  path = _largest_data_file(step_dir)
  original = path.read_bytes()
  # The layout of OCDBT's data files differs from save to save, and they hold
  # bytes that no read reaches: flipped there, the step reads as saved and is
  # rightly used. So the damage moves until it has its effect on what orbax
  # reads (a sixteenth of the file at a time).
  firsts = [0] if where == "start" else [len(original) * k // 16 for k in
                                         (8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15)]
  for first in firsts:
    _flip_64_bytes(path, first)
    if _read_by_orbax_alone(step_dir, fresh, saved) == effect:
      break
    path.write_bytes(original)
  else:
    pytest.fail(f"no 64 flipped bytes of {path} were {effect} for orbax")
  return step_dir


# Read by orbax alone (`_read_by_orbax_alone`, without this package's
# restore), a step that cannot be read leaves the remains of its abandoned
# reads to pytest.
ORBAX_REMAINS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@ORBAX_REMAINS
@pytest.mark.parametrize("where, effect", [("middle", "changed"), ("start", "error")])
def test_a_save_cut_short_and_then_damaged_is_never_used(states, three_steps, capfd, where,
                                                         effect):
  # 64 flipped bytes in the largest data file of a step without checksums
  # used to load as parameters off by 1e35 (values changed) or to end the
  # read in orbax's bare Exception (a frame that cannot be decoded).
  workdir, fresh = three_steps
  step_dir = _damage_cut_short_step(states, workdir, fresh, where, effect)
  before = _files(workdir)
  reader = checkpoints.reader(str(workdir))
  assert checkpoints.restore(reader, fresh).step == 3
  with pytest.raises(checkpoints.CheckpointError, match=r"checkpoints/4"):
    checkpoints.restore(reader, fresh, step=4)
  reader.close()
  assert "warning: checkpoint 4 is damaged and was skipped" in capfd.readouterr().err
  assert _files(workdir) == before  # readers write nothing
  mngr = checkpoints.manager(str(workdir))
  restored = checkpoints.restore(mngr, fresh, trainer=True)
  mngr.close()
  assert (restored.step, int(restored.state.step)) == (3, 3)
  assert (workdir / checkpoints.DAMAGED_DIR / "4").is_dir()
  assert not step_dir.exists() and not (workdir / checksums.PENDING).exists()


@ORBAX_REMAINS
def test_a_step_that_cannot_be_read_is_one_warning_on_stderr(states, three_steps):
  # orbax abandons the reads of the other arrays when one fails; Python used
  # to print each one's remains as a traceback ("Exception ignored in ...",
  # "Event loop is closed"), dozens after the warning, as a user loads a model.
  workdir, fresh = three_steps
  _damage_cut_short_step(states, workdir, fresh, "start", "error")
  # Three loads, then time for tensorstore's threads to finish: how many
  # remains there are, and when they come, varies from run to run.
  script = ("import gc, sys, time\n"
            "from hyperrecon_jax import train\n"
            "for _ in range(3):\n"
            "  print('step', train.load_trained(sys.argv[1])[3])\n"
            "gc.collect()\n"
            "time.sleep(1)\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", script, str(workdir)], env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0 and "step 3" in proc.stdout, proc.stderr[-3000:]
  assert "checkpoint 4 is damaged and was skipped" in proc.stderr
  assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, (
      proc.stderr[-3000:])


def test_digests_of_a_save_that_never_finished_are_dropped_by_the_trainer(
    states, three_steps):
  workdir, fresh = three_steps
  step_dir = _save_killed_before_checksums(states, workdir, 4)
  shutil.rmtree(step_dir)  # as if killed before orbax's rename
  mngr = checkpoints.manager(str(workdir))
  assert checkpoints.restore(mngr, fresh, trainer=True).step == 3
  mngr.close()
  assert not (workdir / checksums.PENDING).exists()


def test_a_step_without_checksums_or_digests_is_used_by_the_trainer_only(
    three_steps, capfd):
  # Written by an older version, which kept no checksums: readers fall back
  # to the newest verified step; the trainer accepts it if its values are
  # finite, and records its checksums.
  workdir, fresh = three_steps
  step_dir = workdir / "checkpoints" / "3"
  (step_dir / checksums.CHECKSUMS).unlink()
  before = _files(workdir)
  reader = checkpoints.reader(str(workdir))
  assert checkpoints.restore(reader, fresh).step == 2
  with pytest.raises(checkpoints.UnverifiedCheckpointError, match="checksums.json"):
    checkpoints.restore(reader, fresh, step=3)
  reader.close()
  err = capfd.readouterr().err
  assert "warning: checkpoint 3 was skipped" in err and str(step_dir) in err
  assert checkpoints.saved_config(str(workdir), step=2) is not None
  assert _files(workdir) == before
  mngr = checkpoints.manager(str(workdir))
  assert checkpoints.restore(mngr, fresh, trainer=True).step == 3
  mngr.close()
  assert checksums.verify(str(step_dir))
  reader = checkpoints.reader(str(workdir))
  assert checkpoints.restore(reader, fresh).step == 3
  reader.close()


def test_without_checksums_anywhere_a_reader_finds_no_checkpoint_it_can_use(three_steps):
  # Unverified steps, none damaged: an error naming them, not "no checkpoint"
  # (None), which a caller would take for a workdir that was never trained.
  workdir, fresh = three_steps
  for step in (1, 2, 3):
    (workdir / "checkpoints" / str(step) / checksums.CHECKSUMS).unlink()
  reader = checkpoints.reader(str(workdir))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"every checkpoint is damaged or unverified: .*checkpoints/3"):
    checkpoints.restore(reader, fresh)
  reader.close()
  with pytest.raises(checkpoints.CheckpointError,
                     match="every checkpoint is damaged or unverified"):
    checkpoints.saved_config(str(workdir))


def test_the_trainer_moves_aside_a_step_without_checksums_that_is_not_finite(
    states, three_steps):
  config, saved, _ = states
  workdir, fresh = three_steps
  leaves, treedef = jax.tree_util.tree_flatten(saved.params)
  leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(np.nan)
  broken = saved.replace(params=jax.tree_util.tree_unflatten(treedef, leaves))
  mngr = checkpoints.manager(str(workdir))
  # As an older version without checksums (nor the finiteness check) wrote it.
  mngr.save(4, args=ocp.args.Composite(
      state=ocp.args.StandardSave(broken), data=ocp.args.JsonSave({}),
      config=ocp.args.JsonSave(json.loads(config.to_json()))))
  mngr.wait_until_finished()
  restored = checkpoints.restore(mngr, fresh, trainer=True)
  mngr.close()
  assert restored.step == 3
  assert (workdir / checkpoints.DAMAGED_DIR / "4").is_dir()


def test_damage_is_found_without_checksums_too(three_steps, capfd):
  # A step without checksums (nor digests) whose data item does not parse.
  workdir, fresh = three_steps
  step_dir = workdir / "checkpoints" / "3"
  (step_dir / checksums.CHECKSUMS).unlink()
  _garble_json(_data_item(step_dir))
  mngr = checkpoints.manager(str(workdir))
  assert checkpoints.restore(mngr, fresh, trainer=True).step == 2
  mngr.close()
  assert "warning: checkpoint 3 is damaged" in capfd.readouterr().err
  assert (workdir / checkpoints.DAMAGED_DIR / "3").is_dir()


def test_the_trainer_moves_damaged_steps_aside_and_can_save_them_again(
    three_steps, states):
  config, saved, _ = states
  workdir, fresh = three_steps
  _truncate(_largest_state_file(workdir / "checkpoints" / "3"))
  mngr = checkpoints.manager(str(workdir))
  assert checkpoints.restore(mngr, fresh, trainer=True).step == 2
  assert (workdir / checkpoints.DAMAGED_DIR / "3").is_dir()
  assert mngr.all_steps() == [1, 2]
  checkpoints.save(mngr, 3, saved, {}, config)
  assert checkpoints.restore(mngr, fresh).step == 3
  mngr.close()


def test_every_checkpoint_damaged_is_one_error(three_steps):
  workdir, fresh = three_steps
  for step in (1, 2, 3):
    _flip_a_bit(_largest_state_file(workdir / "checkpoints" / str(step)))
  reader = checkpoints.reader(str(workdir))
  with pytest.raises(checkpoints.CheckpointError, match="every checkpoint"):
    checkpoints.restore(reader, fresh)
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoint of step 9"):
    checkpoints.restore(reader, fresh, step=9)
  reader.close()
  mngr = checkpoints.manager(str(workdir))
  with pytest.raises(checkpoints.CheckpointError,
                     match="every checkpoint is damaged and was moved to .*again from step 0"):
    checkpoints.restore(mngr, fresh, trainer=True)
  mngr.close()
  assert checkpoints.quarantined(str(workdir)) == ["1", "2", "3"]


def test_a_step_damaged_again_is_moved_aside_under_a_new_name(three_steps, states):
  config, saved, _ = states
  workdir, fresh = three_steps
  mngr = checkpoints.manager(str(workdir))
  for attempt in range(3):
    if attempt:
      checkpoints.save(mngr, 3, saved, {}, config)
    _flip_a_bit(_largest_state_file(workdir / "checkpoints" / "3"))
    assert checkpoints.restore(mngr, fresh, trainer=True).step == 2
  mngr.close()
  assert checkpoints.quarantined(str(workdir)) == ["3", "3.1", "3.2"]


def test_quarantined_steps_are_listed_in_numeric_order(three_steps, states):
  config, saved, _ = states
  workdir, fresh = three_steps
  mngr = checkpoints.manager(str(workdir), max_to_keep=0)  # step 1 stays
  checkpoints.save(mngr, 10, saved, {}, config)
  for step in (1, 2, 3, 10):
    _flip_a_bit(_largest_state_file(workdir / "checkpoints" / str(step)))
  with pytest.raises(checkpoints.CheckpointError, match="every checkpoint is damaged"):
    checkpoints.restore(mngr, fresh, trainer=True)
  mngr.close()
  # Sorted as text, "10" would come before "2".
  assert checkpoints.quarantined(str(workdir)) == ["1", "2", "3", "10"]
