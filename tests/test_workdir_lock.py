"""Tests of hyperrecon_jax.workdir_lock: the trainer's lock and the folders it makes."""

import errno
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from hyperrecon_jax import workdir_lock

# Holds the lock of argv[1] until killed; says so on stdout first.
_HOLDER = r"""
import sys, time
from hyperrecon_jax import workdir_lock
with workdir_lock.lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(600)
"""


def _lock_path(path):
  return os.path.join(path, workdir_lock.LOCK_FILE)


def test_lock_creates_the_workdir_names_its_owner_and_cleans_up(tmp_path):
  path = str(tmp_path / "run")
  with workdir_lock.lock(path):
    with open(_lock_path(path)) as f:
      owner = json.load(f)
    assert owner["pid"] == os.getpid()
    assert owner["host"] and owner["started"]
  assert os.listdir(path) == []


def test_abandon_undoes_what_a_live_lock_would_undo_on_an_error(tmp_path):
  # A process ended by another process's end exits without unwinding
  # (cli.exit_now): its new workdir stayed, holding the lock file.
  made = tmp_path / "a" / "run"
  with workdir_lock.lock(str(made)):
    workdir_lock.abandon()
    assert not (tmp_path / "a").exists()  # every folder the lock made, while empty
  kept = tmp_path / "kept"
  with workdir_lock.lock(str(kept)):
    (kept / "config.json").write_text("{}")
    workdir_lock.abandon()
    assert os.listdir(kept) == ["config.json"]  # the lock file alone is removed
  with workdir_lock.lock(str(kept)):
    pass
  workdir_lock.abandon()  # no live lock: nothing to undo
  assert os.listdir(kept) == ["config.json"]


def test_a_second_lock_is_refused_at_once_naming_the_owner(tmp_path):
  path = str(tmp_path)
  with workdir_lock.lock(path):
    with pytest.raises(workdir_lock.WorkdirBusyError,
                       match=rf"process {os.getpid()} on .*use another --workdir"):
      with workdir_lock.lock(path):
        pass
    assert os.path.exists(_lock_path(path))  # the owner's lock is untouched
  with workdir_lock.lock(path):  # released: free again
    pass


def test_live_owner_is_a_trainer_alive_on_this_machine(tmp_path):
  # A reader of a run without a checkpoint yet said "train first" while a
  # trainer was at work on it.
  path = str(tmp_path / "run")
  assert workdir_lock.live_owner(path) is None  # no folder, no lock file
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, path], stdout=subprocess.PIPE,
                          text=True)
  try:
    assert proc.stdout.readline() == "locked\n"
    assert re.match(rf"process {proc.pid} on \S+ \(started ", workdir_lock.live_owner(path))
  finally:
    proc.kill()
    proc.wait()
  assert os.path.exists(_lock_path(path))  # what kill -9 leaves: not an owner
  assert workdir_lock.live_owner(path) is None
  with open(_lock_path(path), "w") as f:  # alive, but of another machine: unknown here
    json.dump({"pid": os.getppid(), "host": "elsewhere", "started": "then"}, f)
  assert workdir_lock.live_owner(path) is None


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
  path = str(tmp_path)
  with open(_lock_path(path), "w") as f:  # what kill -9 leaves behind
    json.dump({"pid": 999999, "host": "elsewhere", "started": "then"}, f)
  with workdir_lock.lock(path):
    with open(_lock_path(path)) as f:
      assert json.load(f)["pid"] == os.getpid()


def test_the_lock_of_another_process_is_freed_by_kill_9(tmp_path):
  path = str(tmp_path)
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, path],
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"process {proc.pid} "):
      with workdir_lock.lock(path):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with workdir_lock.lock(path):  # the kernel released the dead owner's lock
      pass
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def test_a_lock_on_a_full_disk_names_its_file_and_leaves_none(tmp_path, monkeypatch):
  # Its owner's line was written before the block that removes the file: a
  # full disk printed "[Errno 28] No space left on device" alone and left an
  # empty train.lock.
  def full(fd, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "write", full)
  with pytest.raises(OSError) as info:
    with workdir_lock.run_lock(str(tmp_path / "run")):
      pass
  assert info.value.filename == str(tmp_path / "run" / workdir_lock.LOCK_FILE)
  assert os.listdir(tmp_path) == []  # the folder it made, too


def test_a_lock_that_cannot_be_removed_keeps_the_error_that_ended_the_run(tmp_path,
                                                                          monkeypatch):
  # A folder made read-only during training: the checkpoint's error was
  # replaced by "[Errno 30] Read-only file system: '…/train.lock'".
  def read_only(path):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

  with pytest.raises(OSError, match="the checkpoint's write"):
    with workdir_lock.run_lock(str(tmp_path)):
      monkeypatch.setattr(os, "remove", read_only)
      raise OSError(errno.EROFS, "the checkpoint's write")


@pytest.mark.parametrize("stop", [ValueError, KeyboardInterrupt])
def test_made_folder_removes_what_it_made_when_the_block_stops(tmp_path, stop):
  # Ctrl-C is a KeyboardInterrupt, no Exception: it stops an export too.
  (tmp_path / "old").mkdir()
  with pytest.raises(stop):
    with workdir_lock.made_folder(str(tmp_path / "old" / "new" / "models")):
      assert (tmp_path / "old" / "new" / "models").is_dir()
      raise stop
  assert os.listdir(tmp_path) == ["old"] and os.listdir(tmp_path / "old") == []
