"""Tests of hyperrecon_jax.workdir: the trainer's lock and atomic writes."""

import errno
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from hyperrecon_jax import workdir

# Holds the lock of argv[1] until killed; says so on stdout first.
_HOLDER = r"""
import sys, time
from hyperrecon_jax import workdir
with workdir.lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(600)
"""


def _lock_path(path):
  return os.path.join(path, workdir.LOCK_FILE)


def test_lock_creates_the_workdir_names_its_owner_and_cleans_up(tmp_path):
  path = str(tmp_path / "run")
  with workdir.lock(path):
    with open(_lock_path(path)) as f:
      owner = json.load(f)
    assert owner["pid"] == os.getpid()
    assert owner["host"] and owner["started"]
  assert os.listdir(path) == []


def test_abandon_undoes_what_a_live_lock_would_undo_on_an_error(tmp_path):
  # A process ended by another process's end exits without unwinding
  # (cli.exit_now): its new workdir stayed, holding the lock file.
  made = tmp_path / "a" / "run"
  with workdir.lock(str(made)):
    workdir.abandon()
    assert not (tmp_path / "a").exists()  # every folder the lock made, while empty
  kept = tmp_path / "kept"
  with workdir.lock(str(kept)):
    (kept / "config.json").write_text("{}")
    workdir.abandon()
    assert os.listdir(kept) == ["config.json"]  # the lock file alone is removed
  with workdir.lock(str(kept)):
    pass
  workdir.abandon()  # no live lock: nothing to undo
  assert os.listdir(kept) == ["config.json"]


def test_a_second_lock_is_refused_at_once_naming_the_owner(tmp_path):
  path = str(tmp_path)
  with workdir.lock(path):
    with pytest.raises(workdir.WorkdirBusyError,
                       match=rf"process {os.getpid()} on .*use another --workdir"):
      with workdir.lock(path):
        pass
    assert os.path.exists(_lock_path(path))  # the owner's lock is untouched
  with workdir.lock(path):  # released: free again
    pass


def test_live_owner_is_a_trainer_alive_on_this_machine(tmp_path):
  # A reader of a run without a checkpoint yet said "train first" while a
  # trainer was at work on it.
  path = str(tmp_path / "run")
  assert workdir.live_owner(path) is None  # no folder, no lock file
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, path], stdout=subprocess.PIPE,
                          text=True)
  try:
    assert proc.stdout.readline() == "locked\n"
    assert re.match(rf"process {proc.pid} on \S+ \(started ", workdir.live_owner(path))
  finally:
    proc.kill()
    proc.wait()
  assert os.path.exists(_lock_path(path))  # what kill -9 leaves: not an owner
  assert workdir.live_owner(path) is None
  with open(_lock_path(path), "w") as f:  # alive, but of another machine: unknown here
    json.dump({"pid": os.getppid(), "host": "elsewhere", "started": "then"}, f)
  assert workdir.live_owner(path) is None


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
  path = str(tmp_path)
  with open(_lock_path(path), "w") as f:  # what kill -9 leaves behind
    json.dump({"pid": 999999, "host": "elsewhere", "started": "then"}, f)
  with workdir.lock(path):
    with open(_lock_path(path)) as f:
      assert json.load(f)["pid"] == os.getpid()


def test_the_lock_of_another_process_is_freed_by_kill_9(tmp_path):
  path = str(tmp_path)
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, path],
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(workdir.WorkdirBusyError, match=f"process {proc.pid} "):
      with workdir.lock(path):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    with workdir.lock(path):  # the kernel released the dead owner's lock
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
    with workdir.run_lock(str(tmp_path / "run")):
      pass
  assert info.value.filename == str(tmp_path / "run" / workdir.LOCK_FILE)
  assert os.listdir(tmp_path) == []  # the folder it made, too


def test_a_lock_that_cannot_be_removed_keeps_the_error_that_ended_the_run(tmp_path,
                                                                          monkeypatch):
  # A folder made read-only during training: the checkpoint's error was
  # replaced by "[Errno 30] Read-only file system: '…/train.lock'".
  def read_only(path):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

  with pytest.raises(OSError, match="the checkpoint's write"):
    with workdir.run_lock(str(tmp_path)):
      monkeypatch.setattr(os, "remove", read_only)
      raise OSError(errno.EROFS, "the checkpoint's write")


def test_write_text_replaces_the_file_whole(tmp_path):
  path = str(tmp_path / "config.json")
  workdir.write_text(path, "old")
  workdir.write_text(path, "new text")
  with open(path) as f:
    assert f.read() == "new text"
  assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
  # The kernel's ENOSPC from a write carries no file name: a segmenter's save
  # on a full disk printed "error: [Errno 28] No space left on device" alone.
  path = str(tmp_path / "segmenter.msgpack")
  workdir.write_bytes(path, b"old")

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError) as info:
    workdir.write_bytes(path, b"new")
  assert info.value.errno == errno.ENOSPC and info.value.filename == path
  assert str(info.value) == f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}: '{path}'"
  with open(path, "rb") as f:
    assert f.read() == b"old"
  assert os.listdir(tmp_path) == ["segmenter.msgpack"]


def test_a_write_stopped_half_way_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = str(tmp_path / "segmenter.json")
  workdir.write_text(path, "old")

  def interrupted(src, dst):
    raise KeyboardInterrupt  # Ctrl-C between the write and the rename

  monkeypatch.setattr(os, "replace", interrupted)
  with pytest.raises(KeyboardInterrupt):
    workdir.write_text(path, "new")
  assert os.listdir(tmp_path) == ["segmenter.json"]
  with open(path) as f:
    assert f.read() == "old"


# --- check_folder: what a trainer may write into ---------------------------------------


def test_check_folder_accepts_a_new_an_empty_or_an_own_folder(tmp_path):
  workdir.check_folder(str(tmp_path / "new" / "run"), "training run", workdir.RUN_ENTRIES)
  workdir.check_folder(str(tmp_path), "training run", workdir.RUN_ENTRIES)
  for name in ("config.json", "metrics.jsonl", "metrics.jsonl.2.old", "baselines.json",
               "gradient_scales.json", "data_splits.json",
               "events.out.tfevents.123.host", "config.json.tmp4242", ".eval-x1y2",
               "train.log", "nohup.out"):
    (tmp_path / name).write_text("{}")
  for name in ("checkpoints", "checkpoints.damaged", "eval"):
    (tmp_path / name).mkdir()
  workdir.check_folder(str(tmp_path), "training run", workdir.RUN_ENTRIES)


@pytest.mark.parametrize("entries, kind, foreign", [
    (workdir.RUN_ENTRIES, "training run", ["notes.txt"]),
    (workdir.RUN_ENTRIES, "training run", ["segmenter.json", "segmenter.msgpack"]),
    (workdir.SEGMENTER_ENTRIES, "segmenter", ["config.json", "checkpoints"]),
])
def test_check_folder_refuses_what_its_kind_does_not_write(tmp_path, entries, kind, foreign):
  for name in foreign:
    (tmp_path / name).write_text("mine")
  before = sorted(os.listdir(tmp_path))
  first = re.escape(sorted(foreign)[0])  # named in sorted order
  with pytest.raises(ValueError, match=rf"--workdir {re.escape(str(tmp_path))} holds {first}"
                                       rf".*, which is not a {kind}'s"):
    workdir.check_folder(str(tmp_path), kind, entries)
  assert sorted(os.listdir(tmp_path)) == before


def test_check_folder_names_three_foreign_entries_and_counts_the_rest(tmp_path):
  for name in ("a.txt", "b.txt", "c.txt"):
    (tmp_path / name).write_text("mine")
  path = re.escape(str(tmp_path))
  with pytest.raises(ValueError, match=rf"^--workdir {path} holds a\.txt, b\.txt, c\.txt, "
                                       r"which is not a training run's;"):
    workdir.check_folder(str(tmp_path), "training run", workdir.RUN_ENTRIES)
  (tmp_path / "d.txt").write_text("mine")
  with pytest.raises(ValueError, match=rf"^--workdir {path} holds a\.txt, b\.txt, c\.txt and 1 "
                                       r"more, which is not a training run's;"):
    workdir.check_folder(str(tmp_path), "training run", workdir.RUN_ENTRIES)


def test_check_folder_probes_the_subfolders_a_run_writes_in(tmp_path, read_only_folder):
  (tmp_path / "checkpoints").mkdir()
  before = os.stat(tmp_path / "checkpoints").st_mtime_ns
  workdir.check_folder(str(tmp_path), "training run", workdir.RUN_ENTRIES,
                       subfolders=("checkpoints",))
  # Asked, not written in: a finished run's rerun leaves the folder's time.
  assert os.stat(tmp_path / "checkpoints").st_mtime_ns == before
  read_only_folder(tmp_path / "checkpoints")
  # Without the subfolder named, the folder itself can be written: accepted.
  workdir.check_folder(str(tmp_path), "training run", workdir.RUN_ENTRIES)
  with pytest.raises(ValueError, match=rf"--workdir {re.escape(str(tmp_path))}: cannot write "
                                       rf"in the folder {re.escape(str(tmp_path))}/checkpoints "
                                       r"\(Read-only file system\)"):
    workdir.check_folder(str(tmp_path), "training run", workdir.RUN_ENTRIES,
                         subfolders=("checkpoints",))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == []
  # A subfolder not made yet is not probed: the run creates it.
  workdir.check_folder(str(tmp_path / "new"), "training run", workdir.RUN_ENTRIES,
                       subfolders=("checkpoints",))


def test_check_folder_names_a_file_given_as_a_folder(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match=r"--workdir .*file is a file"):
    workdir.check_folder(str(tmp_path / "file"), "segmenter", workdir.SEGMENTER_ENTRIES)
  with pytest.raises(ValueError, match=r"cannot create --workdir .*: .*file is a file"):
    workdir.check_folder(str(tmp_path / "file" / "run"), "segmenter",
                         workdir.SEGMENTER_ENTRIES)


def test_check_folder_names_a_broken_symbolic_link(tmp_path):
  (tmp_path / "link").symlink_to(tmp_path / "gone")
  with pytest.raises(ValueError, match=r"--workdir .*link is a symbolic link to .*gone, which "
                                       r"does not exist"):
    workdir.check_folder(str(tmp_path / "link"), "training run", workdir.RUN_ENTRIES)


@pytest.mark.parametrize("stop", [ValueError, KeyboardInterrupt])
def test_made_folder_removes_what_it_made_when_the_block_stops(tmp_path, stop):
  # Ctrl-C is a KeyboardInterrupt, no Exception: it stops an export too.
  (tmp_path / "old").mkdir()
  with pytest.raises(stop):
    with workdir.made_folder(str(tmp_path / "old" / "new" / "models")):
      assert (tmp_path / "old" / "new" / "models").is_dir()
      raise stop
  assert os.listdir(tmp_path) == ["old"] and os.listdir(tmp_path / "old") == []


def _ended_pid():
  """The pid of a process that has ended (and been reaped)."""
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_sweep_staging_removes_only_the_folders_of_ended_processes_here(tmp_path):
  # kill -9 during an export left a hidden 2.4 MB half-built model in the
  # package's folder, which no later export removed.
  import socket
  host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    dead = tmp_path / f".m.export-{host}-{_ended_pid()}-abc"
    running = tmp_path / f".m.export-{host}-{live.pid}-def"
    elsewhere = tmp_path / f".m.export-otherhost-{_ended_pid()}-ghi"
    other_name = tmp_path / f".n.export-{host}-{_ended_pid()}-jkl"
    mine = workdir.staging_folder(str(tmp_path), ".m.export-")
    for folder in (dead, running, elsewhere, other_name):
      (folder / "weights").mkdir(parents=True)
    assert workdir.sweep_staging(str(tmp_path), ".m.export-", dry_run=True) == [str(dead)]
    assert dead.exists()
    assert workdir.sweep_staging(str(tmp_path), ".m.export-") == [str(dead)]
    assert not dead.exists()
    assert all(p.exists() for p in (running, elsewhere, other_name)) and os.path.isdir(mine)
    assert os.path.basename(mine).startswith(f".m.export-{host}-{os.getpid()}-")
  finally:
    live.kill()
    live.wait()
