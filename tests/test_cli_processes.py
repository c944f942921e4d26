"""Tests of how the processes of a run tell each other their end (experiments/cli_processes.py).

The coordination service's key-value store is replaced by a dict: these check
what a process posts and what it says of its peers' posts, without starting
processes (tests/test_train_multiprocess.py ends real ones).
"""

import os
import sys

from coordination_support import KeyValueStore
import pytest

from hyperrecon_jax.train import sharded

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import cli_processes  # noqa: E402 (the scripts' folder first)


@pytest.fixture
def store(monkeypatch):
  store = KeyValueStore()
  monkeypatch.setattr(sharded, "coordination_client", lambda: store)
  monkeypatch.setattr(cli_processes, "_ending", {})
  return store


def _as_process(monkeypatch, index):
  import jax
  monkeypatch.setattr(jax, "process_index", lambda: index)


def test_an_end_is_posted_with_its_status_origin_and_reason(store, monkeypatch):
  _as_process(monkeypatch, 2)
  cli_processes._post_end(2, "nifti: no volume in 'x'\nsecond line kept")
  assert store.values == {"hyperrecon/ended/2": "2\n2\nnifti: no volume in 'x'\nsecond line kept"}
  assert cli_processes._ended_peers() == {2: (2, 2, "nifti: no volume in 'x'\nsecond line kept")}
  cli_processes._post_end(1, "again")  # posted once: the first end stands
  assert cli_processes._ended_peers()[2][0] == 2


def test_a_peer_that_ended_with_another_is_said_as_that_one(store, monkeypatch, capsys):
  # Three processes: process 2 stopped on its error, process 0 ended with it.
  # Process 1 reads both posts and names process 2 and its reason, not process
  # 0's acknowledgement (it said "process 0 … stopped: stopped with process 2").
  _as_process(monkeypatch, 2)
  cli_processes._post_end(2, "[Errno 20] Not a directory: '/x'")
  _as_process(monkeypatch, 0)
  cli_processes._say_peer_end(cli_processes._ended_peers())
  _as_process(monkeypatch, 1)
  capsys.readouterr()
  ended = cli_processes._peer_posts()
  assert set(ended) == {0, 2}
  cli_processes._say_peer_end(ended)
  assert capsys.readouterr().err == (
      "error: process 2 of this run stopped: [Errno 20] Not a directory: '/x'\n")
  assert cli_processes._ending["code"] == 2
  assert store.values["hyperrecon/ended/1"] == "2\n2\n[Errno 20] Not a directory: '/x'"


def test_who_ends_a_process_is_decided_once(store):
  assert cli_processes._claim("peer") == "peer"
  assert cli_processes._claim("self") == "peer"
