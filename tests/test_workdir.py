"""Tests of hyperrecon_jax.workdir: what a trainer may write into (`check_folder`)."""

import os
import re

import pytest

from hyperrecon_jax import workdir


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
