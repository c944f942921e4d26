"""Tests of what the processes of a run compare (hyperrecon_jax.train.sharded), on one process.

The all-gather and the coordination service's key-value store are stood in
for, so each test plays the part of one process of a run of two whose peer's
answers are given; tests/test_train_multiprocess.py runs real processes.
"""

import hashlib
import json

import configs
from coordination_support import KeyValueStore
import jax
from jax.experimental import multihost_utils
import numpy as np
import pytest

from hyperrecon_jax import data
from hyperrecon_jax import train
from hyperrecon_jax.train import sharded


def _record(train=("a.nii.gz", "b.nii.gz", "c.nii.gz"), digest="0"):
  return {"dataset": "nifti", "manual_dir": "/site",
          "splits": {"train": list(train), "validation": ["d.nii.gz"], "test": ["e.nii.gz"]},
          "sha256": {"train": [digest * 64] * len(train), "validation": ["1" * 64],
                     "test": ["2" * 64]}}


@pytest.fixture
def as_process(monkeypatch):
  """Makes this process process ``index`` of two, whose peer shares ``peer_record``."""
  store = KeyValueStore()
  monkeypatch.setattr(sharded, "coordination_client", lambda: store)
  monkeypatch.setattr(jax, "process_count", lambda: 2)

  def become(index, peer_record):
    monkeypatch.setattr(jax, "process_index", lambda: index)
    peer = 1 - index
    calls = []

    def allgather(digest):
      # The peer posts its record under the same check's folder, then both
      # gather the digests; the peer's digest is taken from its record.
      folder = max((k.rsplit("/", 2)[1] for k in store.values), key=int)
      store.values.setdefault(f"hyperrecon/data_splits/{folder}/{peer}", _text(peer_record))
      own = store.values[f"hyperrecon/data_splits/{folder}/{index}"]
      digests = {index: _digest(own), peer: _digest(_text(peer_record))}
      calls.append(folder)
      return np.asarray([[digests[0]], [digests[1]]], np.uint32)

    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    return calls
  return become


def _text(record):
  return json.dumps({k: record[k] for k in ("splits", "sha256")}, sort_keys=True)


def _digest(text):
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def test_processes_that_read_the_same_volumes_pass_run_after_run(as_process):
  # A script may train two runs on one coordination service: a key is set
  # once, so each check has its own.
  calls = as_process(0, _record())
  sharded.check_same_data(_record())
  sharded.check_same_data(_record())
  assert len(calls) == 2 and calls[0] != calls[1]


@pytest.mark.parametrize("index", [0, 1])
def test_a_process_that_read_other_volumes_is_named_on_both(as_process, index):
  # Process 1 saw two volumes more in the training split.
  records = [_record(), _record(train=("a.nii.gz", "b.nii.gz", "c.nii.gz", "f.nii.gz",
                                       "g.nii.gz"))]
  as_process(index, records[1 - index])
  with pytest.raises(data.DataError) as info:
    sharded.check_same_data(records[index])
  assert str(info.value) == (
      "the processes of this run read different volumes in /site: process 1 built another "
      "dataset (its train split is not process 0's: 2 joined it: f.nii.gz, g.nii.gz): every "
      "process must read the same files (one folder shared by every host, or identical copies)")


def test_a_volume_rewritten_on_one_host_is_named(as_process):
  as_process(0, _record(digest="9"))
  with pytest.raises(data.DataError, match=r"its train split is not process 0's: 3 of its "
                                           r"files changed content: a\.nii\.gz, b\.nii\.gz, "
                                           r"c\.nii\.gz"):
    sharded.check_same_data(_record())


def test_one_process_or_a_dataset_not_split_by_volume_compares_nothing(as_process,
                                                                        monkeypatch):
  as_process(0, _record())
  sharded.check_same_data(None)  # the embedded MNI152 data: nothing recorded
  monkeypatch.setattr(jax, "process_count", lambda: 1)
  sharded.check_same_data(_record())
  assert sharded.coordination_client().values == {}


# --- check_same_run: one all-gather of the counts, one of a digest per field ------------------


@pytest.fixture
def peer_of(monkeypatch):
  """Makes this process process 0 of two whose peer was given ``peer_config`` and ``peer_workdir``.

  The peer's all-gathered arrays are what `check_same_run` itself sends for
  the peer's config, recorded first with an all-gather that echoes its input.
  """
  monkeypatch.setattr(jax, "process_count", lambda: 2)

  def become(peer_config, peer_workdir):
    sent = []

    def record(x):
      sent.append(np.asarray(x))
      return np.stack([x, x])
    monkeypatch.setattr(multihost_utils, "process_allgather", record)
    sharded.check_same_run(peer_config, peer_workdir)
    peer = iter(sent)
    monkeypatch.setattr(multihost_utils, "process_allgather",
                        lambda x: np.stack([np.asarray(x), next(peer)]))
  return become


def test_processes_that_differ_only_in_their_machines_settings_are_one_run(peer_of):
  mine, theirs = configs.default(), configs.default()
  theirs.data.data_dir, theirs.data.num_threads = "/scratch/other", 3
  theirs.train.distributed = not mine.train.distributed
  peer_of(theirs, "/runs/a/")  # the same folder, written otherwise
  sharded.check_same_run(mine, "/runs/a")


def test_processes_given_another_setting_or_workdir_are_refused_naming_them(peer_of):
  mine, theirs = configs.default(), configs.default()
  theirs.train.lr = mine.train.lr * 10
  peer_of(theirs, "/runs/b")
  with pytest.raises(train.ConfigError, match=r"different settings: train\.lr, --workdir of "
                                               r"process 1 differ from process 0's"):
    sharded.check_same_run(mine, "/runs/a")


def test_one_relative_workdir_from_two_working_folders_is_two_workdirs(peer_of, tmp_path,
                                                                       monkeypatch):
  """``--workdir=run`` from two folders: two runs' halves, which hung at the first checkpoint."""
  mine = configs.default()
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  monkeypatch.chdir(tmp_path / "a")
  peer_of(mine, "run")
  monkeypatch.chdir(tmp_path / "b")
  with pytest.raises(train.ConfigError, match=r"different settings: --workdir of process 1"):
    sharded.check_same_run(mine, "run")


def test_a_relative_and_an_absolute_name_of_one_workdir_are_one_run(peer_of, tmp_path,
                                                                    monkeypatch):
  mine = configs.default()
  monkeypatch.chdir(tmp_path)
  peer_of(mine, str(tmp_path / "run"))
  sharded.check_same_run(mine, "run")


def test_processes_whose_configs_have_other_fields_are_refused_before_comparing_them(peer_of):
  # Digest arrays of other lengths cannot be all-gathered (the collective
  # would never return): the counts are compared first.
  mine, theirs = configs.default(), configs.default()
  with theirs.unlocked():
    theirs.train.added_later = 1
  peer_of(theirs, "/runs/a")
  with pytest.raises(train.ConfigError, match="were given configs with other fields"):
    sharded.check_same_run(mine, "/runs/a")


# --- process_shard: the rows of this process's devices, as grain's shard --------------------


class _Sharding:
  """A sharding whose devices on this process hold ``blocks`` of rows (start, stop)."""

  def __init__(self, *blocks):
    self.blocks = blocks

  def addressable_devices_indices_map(self, shape):
    del shape
    return {f"device{i}": (slice(a, b),) for i, (a, b) in enumerate(self.blocks)}


@pytest.mark.parametrize("blocks, index, count", [
    (((4, 6), (6, 8)), 1, 2),   # the second half of 8 rows on two devices
    (((2, 4),), 1, 4),          # the second quarter
    (((0, 8),), 0, 1),
])
def test_process_shard_is_the_block_of_rows_of_this_process(blocks, index, count):
  pytest.importorskip("grain")
  shard = sharded.process_shard(_Sharding(*blocks), 8)
  assert (shard.shard_index, shard.shard_count) == (index, count)


@pytest.mark.parametrize("blocks", [
    ((0, 2), (6, 8)),  # devices 0 and 3 of 4: rows 0–8 in all, but not one block
    ((0, 2), (4, 6)),  # interleaved with another process
    ((1, 4),),         # not a whole shard's rows
])
def test_process_shard_of_a_mesh_that_splits_the_rows_otherwise_is_refused(blocks):
  pytest.importorskip("grain")
  with pytest.raises(train.ConfigError, match="must give each process one block of rows"):
    sharded.process_shard(_Sharding(*blocks), 8)


def test_one_process_stops_at_the_step_its_signal_arrived_in():
  # No vote, no lag: the answer is the flag itself.
  stop = sharded.stop_agreement(sharded.data_mesh())
  assert [stop(flag) for flag in (False, True)] == [False, True]
