"""Tests of how the processes of a run tell each other their end (experiments/cli_ending.py).

The coordination service's key-value store is replaced by a dict: these check
what a process posts and what it says of its peers' posts, without starting
processes (tests/test_train_multiprocess.py ends real ones). The last tests
start two real processes of a run and end their work, well or not.
"""

import os
import subprocess
import sys
import threading

from coordination_support import KeyValueStore
from loop_support import REPO
from loop_support import child_env
from loop_support import free_port
import pytest

from hyperrecon_jax.train import sharded

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import cli_ending  # noqa: E402 (the scripts' folder first)


@pytest.fixture
def store(monkeypatch):
  store = KeyValueStore()
  monkeypatch.setattr(sharded, "coordination_client", lambda: store)
  monkeypatch.setattr(cli_ending, "_ending", {})
  return store


def _as_process(monkeypatch, index):
  import jax
  monkeypatch.setattr(jax, "process_index", lambda: index)


def test_an_end_is_posted_with_its_status_origin_and_reason(store, monkeypatch):
  _as_process(monkeypatch, 2)
  cli_ending._post_end(2, "nifti: no volume in 'x'\nsecond line kept")
  assert store.values == {"hyperrecon/ended/2": "2\n2\nnifti: no volume in 'x'\nsecond line kept"}
  assert cli_ending._ended_peers() == {2: (2, 2, "nifti: no volume in 'x'\nsecond line kept")}
  cli_ending._post_end(1, "again")  # posted once: the first end stands
  assert cli_ending._ended_peers()[2][0] == 2


def test_a_peer_that_ended_with_another_is_said_as_that_one(store, monkeypatch, capsys):
  # Three processes: process 2 stopped on its error, process 0 ended with it.
  # Process 1 reads both posts and names process 2 and its reason, not process
  # 0's acknowledgement (it said "process 0 … stopped: stopped with process 2").
  _as_process(monkeypatch, 2)
  cli_ending._post_end(2, "[Errno 20] Not a directory: '/x'")
  _as_process(monkeypatch, 0)
  cli_ending._say_peer_end(cli_ending._ended_peers())
  _as_process(monkeypatch, 1)
  capsys.readouterr()
  ended = cli_ending._peer_posts()
  assert set(ended) == {0, 2}
  cli_ending._say_peer_end(ended)
  assert capsys.readouterr().err == (
      "error: process 2 of this run stopped: [Errno 20] Not a directory: '/x'\n")
  assert cli_ending._ending["code"] == 2
  assert store.values["hyperrecon/ended/1"] == "2\n2\n[Errno 20] Not a directory: '/x'"


def test_who_ends_a_process_is_decided_once(store):
  assert cli_ending._claim("peer") == "peer"
  assert cli_ending._claim("self") == "peer"


# Gloo's message when process 1 of a two-process run was killed (kill -9) during
# process 0's all-reduce, as jax 0.10 raised it.
GLOO_RESET = ("UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:538] "
              "Read error [127.0.0.1]:6575: Connection reset by peer")


@pytest.mark.parametrize("words", cli_ending.LOST_CONNECTION)
def test_a_broken_connection_in_a_collective_is_told_without_its_source_location(words):
  import jax
  error = jax.errors.JaxRuntimeError(GLOO_RESET.replace("Connection reset by peer", words))
  assert cli_ending.lost_connection(error) == (
      f"Gloo all-reduce failed: Read error [127.0.0.1]:6575: {words}")
  # A bug in a handler that ran while it unwound keeps its traceback: only the
  # runtime error itself is told in one line.
  try:
    try:
      raise error
    except jax.errors.JaxRuntimeError:
      raise TypeError("a handler's bug")  # noqa: B904 (chained implicitly)
  except TypeError as outer:
    assert outer.__context__ is error and cli_ending.lost_connection(outer) is None


def test_a_broken_connection_in_a_jitted_all_gather_is_told_too():
  # A peer killed during a checkpoint save: orbax's barrier, a jitted
  # all-gather, raised the runtime's status as a ValueError (jax 0.10), and
  # the process printed ~150 lines of traceback instead of the one line.
  gather = GLOO_RESET.replace("all-reduce", "AllGather")
  assert cli_ending.lost_connection(ValueError(gather)) == (
      "Gloo AllGather failed: Read error [127.0.0.1]:6575: Connection reset by peer")


def test_other_errors_are_not_taken_for_a_broken_connection():
  import jax
  # A bug that mentions the words is still a bug (its traceback is printed),
  # and so is any other runtime error of XLA's.
  assert cli_ending.lost_connection(ValueError("reading the batch: Connection reset by peer")) \
      is None
  assert cli_ending.lost_connection(
      jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9 bytes")) is None
  # Raised from a lost connection, another error is still that error.
  wrapped = ValueError("a value")
  wrapped.__cause__ = jax.errors.JaxRuntimeError(GLOO_RESET)
  assert cli_ending.lost_connection(wrapped) is None


def _watches():
  return [t for t in threading.enumerate() if t.name == "peer-watch"]


def test_a_process_that_ends_well_stops_its_watch(store, monkeypatch):
  _as_process(monkeypatch, 1)
  monkeypatch.setattr(cli_ending, "PEER_POLL_S", 0.001)
  assert not _watches()
  with cli_ending.ending_with_the_run(True):
    assert len(_watches()) == 1  # polling a store where no peer posts
  assert not _watches()
  assert not store.values  # an end that went well is not posted


@pytest.mark.parametrize("raised, code, line", [
    ("ValueError('a bug in the step')", 1,
     "error: this process of a multi-process run stopped on the error above; if another "
     "process of the run died, rerun every process's command"),
    ("ValueError('UNKNOWN: Gloo AllGather failed: Connection reset by peer')", 1,
     "error: the connection to another process of the run broke in a collective (Gloo "
     "AllGather failed: Connection reset by peer)"),
    ("SystemExit(2)", 2, None),
    ("SystemExit()", 0, None),
])
def test_a_process_of_a_multi_process_run_ends_at_once_on_an_error(tmp_path, raised, code,
                                                                    line):
  """A peer's death failed this process's next collective; the interpreter's
  shutdown then waited ~3 min in JAX's distributed shutdown (here: an atexit
  hook that would hang) and aborted."""
  program = tmp_path / "peer_lost.py"
  program.write_text(
      "import atexit, sys, time\n"
      f"sys.path.insert(0, {os.path.join(REPO, 'experiments')!r})\n"
      "import cli_ending\n"
      "atexit.register(time.sleep, 600)\n"
      "with cli_ending.ending_with_the_run(True):\n"
      f"  raise {raised}\n")
  proc = subprocess.run([sys.executable, str(program)], capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == code, proc.stderr
  if line:
    # A bug keeps its traceback above the line; a broken connection is the line alone.
    assert ("Traceback" in proc.stderr) == ("bug" in raised), proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith(line), proc.stderr


# Two processes of a run: FAIL (or none, -1) fails DELAY s after the other's
# work ended well. The watches poll the service every POLL s.
_ENDS = r"""
import sys, time
import jax
port, index, fail, delay, poll, experiments = sys.argv[1:]
sys.path.insert(0, experiments)
import cli
import cli_ending
from hyperrecon_jax import errors
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=int(index))
cli_ending.PEER_POLL_S = float(poll)
with cli_ending.ending_with_the_run(True), cli.user_errors():
  if index == fail:
    time.sleep(float(delay))
    raise errors.InputError("a late failure")
print("done", flush=True)
"""



def _run_pair(tmp_path, fail, delay, poll):
  """Exit statuses and outputs of both processes."""
  script = tmp_path / "ends.py"
  script.write_text(_ENDS)
  port = str(free_port())
  procs = [subprocess.Popen(
      [sys.executable, str(script), port, str(i), str(fail), str(delay), str(poll),
       os.path.join(REPO, "experiments")],
      env=child_env(tmp_path / "cache"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  return [p.returncode for p in procs], outputs


@pytest.mark.slow
def test_processes_that_end_well_exit_with_status_0(tmp_path):
  # With the watches polling without pause, a watch inside the client's call
  # when the interpreter exits aborted process 1 ("FATAL: exception not
  # rethrown", status -6) in 9 of 10 tries (jax 0.10.2, Python 3.11; once in
  # CI with the 0.5 s poll): all 3 pairs pass by chance with probability 0.001.
  for _ in range(3):
    codes, outputs = _run_pair(tmp_path, fail=-1, delay=0, poll=0.0)
    assert codes == [0, 0], outputs
    assert all(out.rstrip().endswith("done") for out in outputs), outputs


@pytest.mark.slow
def test_a_process_0_that_fails_after_its_peer_ended_well_ends_it_too(tmp_path):
  # Process 1 waits in JAX's shutdown for process 0, which still writes the
  # run's files: its watch must still hear process 0's end. Stopped before the
  # shutdown, it did not, and JAX aborted process 1 with a C++ stack dump.
  codes, outputs = _run_pair(tmp_path, fail=0, delay=2, poll=0.5)
  assert codes == [2, 2], outputs
  assert outputs[0].rstrip().splitlines()[-1] == "error: a late failure", outputs
  assert outputs[1].rstrip().splitlines()[-1] == (
      "error: process 0 of this run stopped: a late failure"), outputs
