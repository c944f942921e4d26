"""Tests of hyperrecon_jax.atomic_writes: files written whole, and what killed writers left."""

import errno
import os
import re
import subprocess
import sys

import pytest

from hyperrecon_jax import atomic_writes


def test_write_text_replaces_the_file_whole(tmp_path):
  path = str(tmp_path / "config.json")
  atomic_writes.write_text(path, "old")
  atomic_writes.write_text(path, "new text")
  with open(path) as f:
    assert f.read() == "new text"
  assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
  # The kernel's ENOSPC from a write carries no file name: a segmenter's save
  # on a full disk printed "error: [Errno 28] No space left on device" alone.
  path = str(tmp_path / "segmenter.msgpack")
  atomic_writes.write_bytes(path, b"old")

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError) as info:
    atomic_writes.write_bytes(path, b"new")
  assert info.value.errno == errno.ENOSPC and info.value.filename == path
  assert str(info.value) == f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}: '{path}'"
  with open(path, "rb") as f:
    assert f.read() == b"old"
  assert os.listdir(tmp_path) == ["segmenter.msgpack"]


def test_a_write_stopped_half_way_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = str(tmp_path / "segmenter.json")
  atomic_writes.write_text(path, "old")

  def interrupted(src, dst):
    raise KeyboardInterrupt  # Ctrl-C between the write and the rename

  monkeypatch.setattr(os, "replace", interrupted)
  with pytest.raises(KeyboardInterrupt):
    atomic_writes.write_text(path, "new")
  assert os.listdir(tmp_path) == ["segmenter.json"]
  with open(path) as f:
    assert f.read() == "old"


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
    mine = atomic_writes.staging_folder(str(tmp_path), ".m.export-")
    for folder in (dead, running, elsewhere, other_name):
      (folder / "weights").mkdir(parents=True)
    assert atomic_writes.sweep_staging(str(tmp_path), ".m.export-", dry_run=True) == [str(dead)]
    assert dead.exists()
    assert atomic_writes.sweep_staging(str(tmp_path), ".m.export-") == [str(dead)]
    assert not dead.exists()
    assert all(p.exists() for p in (running, elsewhere, other_name)) and os.path.isdir(mine)
    assert os.path.basename(mine).startswith(f".m.export-{host}-{os.getpid()}-")
  finally:
    live.kill()
    live.wait()
