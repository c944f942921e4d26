"""Training on two real processes (jax.distributed, CPU collectives) against one.

Two processes on this machine join one run through a local coordinator, as a
user starts them (``experiments/train.py --coordinator=127.0.0.1:PORT
--num_processes=2 --process_id=I``), each with one CPU device, and train the
demo's ``:quick`` config (32×32, d = 4, 4 channels, a global batch of 4: 2 rows
per process, 4 steps, checkpoints at steps 2 and 4). Gradients, BatchNorm
statistics and losses are summed across the processes by JAX's CPU collectives
(gloo).

The launches of both processes, each a subprocess as a user starts it:
- run P, uninterrupted. A wrapper (`_CHILD`) records the global batch of
  every step and every file a process writes outside ``checkpoints/``.
- run K, in a copy of run P's workdir without its last checkpoint: it resumes
  from step 2; process 1 is killed in step 3, and process 0 ends itself.
- run R, both relaunched: they resume from step 2 and finish.
The reference, one process, runs next to K and R.

Run K starts from run P's checkpoint rather than from step 0 because each
launch of process 1 compiles the training step anew: process 0 writes the
persistent compilation cache, but JAX keys a CPU executable by a topology
fingerprint that differs between the processes, so process 1 never finds it.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import configs
import jax
from loop_support import ADAM_STEP_BOUND
from loop_support import REPO
from loop_support import TRAJECTORY_RTOL
from loop_support import child_env
from loop_support import free_port
from loop_support import read_metrics
from loop_support import signal_when
import numpy as np
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import data
from hyperrecon_jax import workdir_lock
from hyperrecon_jax.train import sharded
from hyperrecon_jax.train import state as state_lib

pytestmark = pytest.mark.usefixtures("compilation_cache")

TRAIN = os.path.join(REPO, "experiments", "train.py")
DEMO = os.path.join(REPO, "experiments", "configs", "demo.py") + ":quick"
TIMEOUT = 600  # seconds, per launch

# Runs experiments/train.py as one process of a run, observed:
#   argv: OUT STALL TRAIN_PY flags...
# - OUT/writes.<id>.txt: every file the process creates, writes, renames or
#   removes in the workdir, outside checkpoints/ (where every process writes
#   its shards);
# - OUT/batch.<id>.<n>.npy: the global batch of the n-th step of the launch,
#   gathered from both processes after `sharded.global_batch` assembled it;
# - STALL = 1: process 1 writes OUT/stalled instead of reading its first
#   training batch, and waits there to be killed; STALL = 2: it waits there
#   until OUT/go exists, then reads the batch.
_CHILD = r'''
import os, runpy, sys, time
import numpy as np

out, stall, train_py = sys.argv[1], int(sys.argv[2]), sys.argv[3]
flags = sys.argv[4:]
option = lambda name: next(f.split("=", 1)[1] for f in flags if f.startswith(f"--{name}="))
pid = int(option("process_id"))
workdir = os.path.abspath(option("workdir"))
log = open(os.path.join(out, f"writes.{pid}.txt"), "a", buffering=1)
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def in_run(path):
  try:
    rel = os.path.relpath(os.path.abspath(os.fsdecode(path)), workdir)
  except TypeError:  # a file descriptor
    return None
  if rel == os.curdir or rel.startswith(os.pardir):
    return None
  if rel == "checkpoints" or rel.startswith("checkpoints" + os.sep):
    return None
  return rel


def audit(event, args):
  if event == "open":
    path, mode, flags = args
    if not ((isinstance(mode, str) and set(mode) & set("wax+"))
            or (isinstance(flags, int) and flags & WRITE)):
      return
    paths = [path]
  elif event == "os.rename":
    paths = args[:2]
  elif event in ("os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
    paths = args[:1]
  else:
    return
  for p in paths:
    rel = in_run(p)
    if rel is not None:
      log.write(f"{event} {rel}\n")


sys.addaudithook(audit)

from jax.experimental import multihost_utils
from hyperrecon_jax import data
from hyperrecon_jax.train import sharded
from hyperrecon_jax.train import state as state_lib

assembled = sharded.global_batch
steps = [0]


def recorded(batch, sharding, batch_size):
  arrays = assembled(batch, sharding, batch_size)
  steps[0] += 1
  np.save(os.path.join(out, f"batch.{pid}.{steps[0]}.npy"),
          multihost_utils.process_allgather(arrays["image"], tiled=True))
  return arrays


sharded.global_batch = recorded

if stall and pid == 1:
  batches = data.batches

  def stalled(data_config, split, **kwargs):
    it = batches(data_config, split, **kwargs)
    if split != "train":
      return it

    class Stalled:
      waited = False

      def __next__(self):
        if not self.waited:
          with open(os.path.join(out, "stalled"), "w"):
            pass
          while stall == 1 or not os.path.exists(os.path.join(out, "go")):
            time.sleep(0.05)
          self.waited = True
        return next(it)

      def set_state(self, state):
        it.set_state(state)

      def get_state(self):
        return it.get_state()
    return Stalled()

  data.batches = stalled

sys.argv = [train_py, *flags]
runpy.run_path(train_py, run_name="__main__")
'''



class _Pair:
  """The two processes of one launch, their logs and what the wrapper recorded."""

  def __init__(self, tmp_path, name, workdir, flags, cache_dir, stall=0, extra=((), ())):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    self.out = tmp_path / name
    self.out.mkdir()
    self.workdir = str(workdir)
    port = free_port()
    self.procs = []
    for i in range(2):
      with open(self.out / f"process{i}.log", "w") as log:
        self.procs.append(subprocess.Popen(
            [sys.executable, str(script), str(self.out), str(stall), TRAIN, *flags, *extra[i],
             f"--workdir={workdir}", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={i}"],
            env=child_env(cache_dir), stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path)))

  def wait(self, timeout=TIMEOUT):
    """Exit codes of both processes; kills what is left after ``timeout`` s."""
    deadline = time.time() + timeout
    try:
      for p in self.procs:
        p.wait(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
      pass
    finally:
      self.kill()
    return [p.returncode for p in self.procs]

  def wait_stalled(self):
    """Returns once process 1 stalls at its first training batch."""
    deadline = time.time() + TIMEOUT
    stalled = self.out / "stalled"
    while (not stalled.exists() and time.time() < deadline
           and all(p.poll() is None for p in self.procs)):
      time.sleep(0.05)
    assert stalled.exists(), self.logs()

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()

  def log(self, i):
    return (self.out / f"process{i}.log").read_text()

  def logs(self):
    return "\n".join(f"--- process {i}:\n{self.log(i)[-3000:]}" for i in range(2))

  def writes(self, i):
    path = self.out / f"writes.{i}.txt"
    return path.read_text().splitlines() if path.exists() else []

  def batches(self, i):
    n = len(list(self.out.glob(f"batch.{i}.*.npy")))
    return [np.load(self.out / f"batch.{i}.{k}.npy") for k in range(1, n + 1)]


def _config(data_dir):
  config = configs.load("demo", "quick")
  config.data.data_dir = data_dir
  config.train.log_every = 1  # every step's loss, step 1's from identical parameters
  return config


def _flags(data_dir):
  return [f"--config={DEMO}", f"--config.data.data_dir={data_dir}",
          "--config.train.log_every=1"]


def _final_state(workdir, config):
  """The newest checkpoint of a workdir, restored here as evaluate.py restores it.

  The state's abstract value has no shardings: a checkpoint of two processes
  must load on one.
  """
  model = state_lib.build_model(config)
  abstract = jax.eval_shape(lambda: state_lib.create_state(config, model, jax.random.key(0)))
  mngr = checkpoints.reader(str(workdir))
  try:
    return checkpoints.restore(mngr, abstract)
  finally:
    mngr.close()


def _from_step_2(pair, path):
  """A copy of run P's workdir without its last checkpoint: a launch there resumes at step 2."""
  shutil.copytree(pair.workdir, path)
  shutil.rmtree(path / "checkpoints" / "4")
  return path


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory, compilation_cache):
  """Run P; then runs K, R and S next to the reference (one process).

  The reference runs while K and R leave a core idle (process 1 stalls, then
  process 0 waits while process 1 compiles), not while both processes of run
  P compile.
  """
  config = _config(data_dir)
  next(data.batches(config.data, "train", batch_size=4))  # built before the processes read it
  flags = _flags(data_dir)
  tmp_path = tmp_path_factory.mktemp("multiprocess")
  pair = _Pair(tmp_path, "p", tmp_path / "p_run", flags, compilation_cache)
  codes = pair.wait()
  assert codes == [0, 0], pair.logs()

  reference_dir = tmp_path / "one_process"
  with open(tmp_path / "one_process.log", "w") as log:
    reference = subprocess.Popen(
        [sys.executable, TRAIN, *flags, f"--workdir={reference_dir}"],
        env=child_env(compilation_cache), stdout=log, stderr=subprocess.STDOUT,
        cwd=str(tmp_path))
  try:
    killed_dir = _from_step_2(pair, tmp_path / "k_run")
    killed = _Pair(tmp_path, "k", killed_dir, flags, compilation_cache, stall=1)
    try:
      killed.wait_stalled()
      # The lock while both processes hold the run: process 0's, and only one.
      with open(killed_dir / workdir_lock.LOCK_FILE) as f:
        lock_pid = json.load(f)["pid"]
      try:
        with workdir_lock.lock(str(killed_dir)):
          busy = None
      except workdir_lock.WorkdirBusyError as e:
        busy = str(e)
      killed.procs[1].send_signal(signal.SIGKILL)
      # Process 0's collective fails on the broken connection: it ends itself,
      # after waiting PEER_GRACE_S for an end the dead peer never posts.
      killed_codes = killed.wait(timeout=60)
    finally:
      killed.kill()
    relaunched = _Pair(tmp_path, "r", killed_dir, flags, compilation_cache)
    relaunched_codes = relaunched.wait()
    assert relaunched_codes == [0, 0], relaunched.logs()

    signalled_dir = _from_step_2(pair, tmp_path / "s_run")
    # Trained on to 5 steps: a stop voted for in step 3 lands in step 4, not
    # the last, which would leave the run finished.
    five = ("--config.train.num_steps=5",)
    signalled = _Pair(tmp_path, "s", signalled_dir, flags, compilation_cache, stall=2,
                      extra=(five, five))
    try:
      signalled.wait_stalled()
      signalled.procs[1].send_signal(signal.SIGTERM)
      (signalled.out / "go").touch()
      signalled_codes = signalled.wait()
    finally:
      signalled.kill()
    assert reference.wait(timeout=TIMEOUT) == 0, (tmp_path / "one_process.log").read_text()
  finally:
    if reference.poll() is None:
      reference.kill()
      reference.wait()
  return dict(config=config, pair=pair, workdir=pair.workdir, reference_dir=str(reference_dir),
              killed=killed, killed_codes=killed_codes, relaunched=relaunched,
              resumed_dir=str(killed_dir), lock_pid=lock_pid, busy=busy,
              signalled=signalled, signalled_codes=signalled_codes,
              signalled_dir=str(signalled_dir))


@pytest.mark.parametrize("address", ["notahostport", "localhost:abc", "localhost:99999"])
def test_a_bad_coordinator_is_one_error_line(tmp_path, address):
  """JAX failed on these with an IndexError, a segmentation fault, or not at all."""
  proc = subprocess.run(
      [sys.executable, TRAIN, f"--config={DEMO}", f"--workdir={tmp_path / 'run'}",
       f"--coordinator={address}", "--num_processes=2", "--process_id=0"],
      env=child_env(tmp_path / "cache"), capture_output=True, text=True, timeout=120,
      cwd=REPO, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and f"--coordinator={address}: expected HOST:PORT" in errors[0], (
      proc.stderr[-3000:])
  assert not (tmp_path / "run").exists()


def test_a_coordinator_host_without_an_address_is_named_at_once(tmp_path, monkeypatch):
  """It waited --join_timeout, then blamed processes that never joined."""
  import types
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import cli_processes

  from hyperrecon_jax import errors

  def unknown(host, port, *args, **kwargs):
    assert (host, port) == ("nosuchhost.invalid", 23458)
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

  # The real resolver, with no lookup: an empty label is a UnicodeError of the IDNA codec.
  holders = {name: types.SimpleNamespace(value=value) for name, value in dict(
      coordinator="host..x:23458", num_processes=2, process_id=1, distributed=False,
      join_timeout=5).items()}
  with pytest.raises(errors.InputError, match=r"--coordinator=host\.\.x:23458: the host "
                                              r"host\.\.x cannot be resolved \("):
    cli_processes.join_processes(holders)
  monkeypatch.setattr(socket, "getaddrinfo", unknown)
  for index in (0, 1):
    holders = {name: types.SimpleNamespace(value=value) for name, value in dict(
        coordinator="nosuchhost.invalid:23458", num_processes=2, process_id=index,
        distributed=False, join_timeout=5).items()}
    with pytest.raises(errors.InputError, match=r"--coordinator=nosuchhost\.invalid:23458: the "
                                                r"host nosuchhost\.invalid cannot be resolved "
                                                r"\(Name or service not known\)"):
      cli_processes.join_processes(holders)


def test_a_process_given_another_process_count_is_refused_on_both(data_dir, tmp_path):
  """A process given --num_processes=3 joined process 0's run of 2 and trained on."""
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, TRAIN, *_flags(data_dir), f"--workdir={tmp_path / 'run'}",
       f"--coordinator=127.0.0.1:{port}", f"--num_processes={count}", f"--process_id={index}"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
      for index, count in ((0, 2), (1, 3))]
  outputs = [proc.communicate(timeout=TIMEOUT)[1] for proc in procs]
  line = ("process 1 was given --num_processes=3, but process 0 started a run of 2: give "
          "every process the same --num_processes")
  assert [proc.returncode for proc in procs] == [2, 2], outputs
  assert outputs[0].strip().splitlines()[-1] == f"error: process 1 of this run stopped: {line}"
  assert outputs[1].strip().splitlines()[-1] == f"error: {line}"
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_incomplete_process_flags_are_one_error_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, TRAIN, f"--config={DEMO}", f"--workdir={tmp_path / 'run'}",
       "--coordinator=127.0.0.1:1", "--num_processes=2"],
      env=child_env(tmp_path / "cache"), capture_output=True, text=True, timeout=120,
      cwd=REPO, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "--process_id" in errors[0], proc.stderr[-3000:]
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("given, missing", [
    (dict(coordinator="127.0.0.1:1"), "--coordinator=127.0.0.1:1 needs --num_processes and "
                                      "--process_id: "),
    (dict(num_processes=2, process_id=1), "--num_processes=2 --process_id=1 need "
                                          "--coordinator: ")])
def test_some_process_flags_without_the_rest_are_refused_before_joining(given, missing,
                                                                         capfd):
  """JAX refused them only at the join ("Number of processes must be defined")."""
  import types
  sys.path.insert(0, os.path.join(REPO, "experiments"))
  import cli_processes

  from hyperrecon_jax import errors
  value = dict(coordinator=None, num_processes=None, process_id=None, distributed=False,
               join_timeout=5)
  value.update(given)
  holders = {name: types.SimpleNamespace(value=v) for name, v in value.items()}
  with pytest.raises(errors.InputError, match="^" + re.escape(missing)):
    cli_processes.join_processes(holders)
  assert "joining" not in capfd.readouterr().err


def _one_process(data_dir, tmp_path, name, port, index, timeout):
  """One process of a run of two, started alone: (Popen, its workdir)."""
  workdir = tmp_path / name
  return subprocess.Popen(
      [sys.executable, TRAIN, *_flags(data_dir), f"--workdir={workdir}",
       f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={index}",
       f"--join_timeout={timeout}"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path)), workdir


@pytest.mark.parametrize("index", [0, 1])
def test_a_process_whose_run_never_assembles_is_one_error_line(data_dir, tmp_path, index):
  """Alone, process 0 or 1 waited 300 s, then JAX aborted it with a C++ stack dump."""
  proc, workdir = _one_process(data_dir, tmp_path, "run", free_port(), index, timeout=3)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 2, stderr[-3000:]
  assert "Check failure" not in stderr and "Traceback" not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1].startswith(
      "error: not every process of the run joined within 3 s at 127.0.0.1:"), stderr[-3000:]
  assert "start each of --process_id=0 and 1 once" in stderr
  assert not workdir.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_waiting_for_the_run_to_join_ends_the_process_at_once(data_dir, tmp_path,
                                                                              signum):
  """Inside jax.distributed.initialize the signal waited for --join_timeout (300 s)."""
  proc, workdir = _one_process(data_dir, tmp_path, "run", free_port(), 0, timeout=120)
  said = []

  def waiting():
    said.append(proc.stderr.readline())
    time.sleep(1)  # into the wait
    return True

  # Well before the 120 s join timeout, which ended the process with status 2.
  stderr = signal_when(proc, waiting, signum, timeout=60)
  assert said[0].startswith("joining a run of 2 processes at 127.0.0.1:"), said
  assert proc.returncode == 128 + signum, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == "interrupted", stderr[-3000:]
  assert not workdir.exists()


def test_a_second_process_0_on_the_port_is_refused_at_once(data_dir, tmp_path):
  """Two processes 0 shared the port without a word and both waited for peers."""
  port = free_port()
  first, _ = _one_process(data_dir, tmp_path, "first", port, 0, timeout=60)
  try:
    deadline = time.time() + 60
    while first.poll() is None and time.time() < deadline:
      with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:  # the first one listens
          break
      time.sleep(0.05)
    second, workdir = _one_process(data_dir, tmp_path, "second", port, 0, timeout=60)
    _, stderr = second.communicate(timeout=60)
  finally:
    first.kill()
    first.wait()
  assert second.returncode == 2, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == (
      f"error: port {port} of --coordinator=127.0.0.1:{port} is in use on this machine: "
      "another process 0 holds it (give each process its own --process_id) or another "
      "program does (give another port)"), stderr[-3000:]
  assert not workdir.exists()


# --- the data: each process its shard of every batch ---------------------------------


@pytest.mark.parametrize("split", ["train", "validation"])
def test_process_shards_concatenate_to_the_one_process_batches(data_dir, split):
  """grain's per-process sharding: rows [i·B/n, (i+1)·B/n) of each batch on process i.

  Also after a restore of the position, which counts global batches.
  """
  cfg = _config(data_dir).data
  grain = pytest.importorskip("grain")
  whole = data.batches(cfg, split, batch_size=4, num_threads=0)
  shards = [data.batches(cfg, split, batch_size=4, num_threads=0,
                         shard=grain.sharding.ShardOptions(i, 2)) for i in range(2)]
  count = 0
  for count, (one, *parts) in enumerate(zip(whole, *shards), 1):
    assert all(len(p["image"]) == 2 for p in parts)
    for key in one:
      np.testing.assert_array_equal(one[key], np.concatenate([p[key] for p in parts]))
    if count == 5:
      break
  assert count == (5 if split == "train" else 3)  # validation: 12 slices, 3 batches
  if split == "train":
    assert [s.get_state() for s in shards] == [whole.get_state()] * 2
    again = data.batches(cfg, split, batch_size=4, num_threads=0,
                         shard=grain.sharding.ShardOptions(1, 2))
    again.set_state(whole.get_state())
    np.testing.assert_array_equal(next(again)["image"], next(whole)["image"][2:])


def test_process_shard_of_one_process_is_the_whole_batch():
  mesh = sharded.data_mesh()
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  shard = sharded.process_shard(sharding, 4)
  assert (shard.shard_index, shard.shard_count) == (0, 1)


def test_global_batch_of_two_processes_is_the_one_process_batch(runs):
  """What each process assembled with make_array_from_process_local_data, gathered.

  Wrong rows on the wrong device would train without any error; here every
  step's global batch equals the batch one process reads, on both processes.
  """
  config = runs["config"]
  want = data.batches(config.data, "train", batch_size=config.train.batch_size,
                      seed=config.train.seed)
  got = [runs["pair"].batches(i) for i in range(2)]
  assert len(got[0]) == len(got[1]) == config.train.num_steps
  for step, (a, b) in enumerate(zip(*got), 1):
    expected = next(want)["image"]
    np.testing.assert_array_equal(a, expected, err_msg=f"step {step}, process 0")
    np.testing.assert_array_equal(b, expected, err_msg=f"step {step}, process 1")


# --- training: the same run as one process --------------------------------------------


def test_two_processes_train_like_one_process(runs):
  """Two processes, 2 rows each, against one process with the same batch of 4.

  The batches are the same (above) and so is the arithmetic, except the order
  of the sums over the global batch: BatchNorm's statistics and every loss
  reduce 4 × 32 × 32 = 4,096 terms, which the two processes sum in halves and
  then across. A sum of n like-signed float32 terms reduced in a tree is off
  by about log2(n)·2⁻²⁴ ≈ 7e-7 relative; a loss or gradient norm passes through
  a few dozen such sums, so at step 1, from identical parameters, each agrees
  to 1e-5 relative (measured: at most 4e-7), which also shows that BatchNorm
  normalizes over the whole batch (statistics of 2 rows change the loss by
  percents). Later steps are nearby trajectories (`TRAJECTORY_RTOL`,
  loop_support.py: Adam amplifies the rounding noise below).

  The parameters are bounded only by both runs' Adam steps: a gradient that is
  zero in exact arithmetic (the hypernetwork's bias-head biases, cancelled by
  the training-mode BatchNorm behind them) is rounding noise that Adam turns
  into steps of up to lr·(1 − β1)/√(1 − β2) = 3.16·lr (measured: 0.006, the
  bound 0.025). Validation is compared only on the zero-filled input: in
  evaluation mode the running mean no longer cancels those biases.
  """
  records = read_metrics(runs["workdir"])
  want = read_metrics(runs["reference_dir"])
  assert [r["step"] for r in records] == [r["step"] for r in want] == [1, 2, 3, 4]
  for got, ref in zip(records, want):
    for key, later in TRAJECTORY_RTOL.items():
      rtol = 1e-5 if got["step"] == 1 else later
      np.testing.assert_allclose(got[key], ref[key], rtol=rtol,
                                 err_msg=f"step {got['step']}: {key}")
    np.testing.assert_allclose(got["lr"], ref["lr"], rtol=1e-7)
  assert "val_psnr_zf" in records[-1]  # validation ran on both processes
  np.testing.assert_allclose(records[-1]["val_psnr_zf"], want[-1]["val_psnr_zf"], rtol=1e-5)

  config = runs["config"]
  got = _final_state(runs["workdir"], config)
  want = _final_state(runs["reference_dir"], config)
  assert got.step == want.step == config.train.num_steps
  bound = 2 * config.train.num_steps * ADAM_STEP_BOUND * config.train.lr
  for (path, ref), value in zip(jax.tree_util.tree_leaves_with_path(want.state.params),
                                jax.tree_util.tree_leaves(got.state.params)):
    assert np.max(np.abs(np.asarray(value) - np.asarray(ref))) <= bound, jax.tree_util.keystr(path)


def test_process_0_alone_writes_the_run_files_and_both_write_checkpoints(runs):
  launches = {"P": runs["pair"], "K": runs["killed"], "R": runs["relaunched"],
              "S": runs["signalled"]}
  for name, pair in launches.items():
    assert pair.writes(1) == [], (name, pair.writes(1))
  written = {line.split(" ", 1)[1] for line in runs["pair"].writes(0)}
  assert {"config.json", "metrics.jsonl", workdir_lock.LOCK_FILE} <= written, written
  try:
    import tensorboardX  # noqa: F401
  except ImportError:
    pass
  else:
    events = [f for f in os.listdir(runs["workdir"]) if f.startswith("events.out.tfevents")]
    assert len(events) == 1 and events[0] in written, (events, written)
  for step in (2, 4):
    state_dir = os.path.join(runs["workdir"], "checkpoints", str(step), "state")
    for i in range(2):
      shards = os.path.join(state_dir, f"ocdbt.process_{i}")
      assert os.path.isdir(shards) and os.listdir(shards), (step, i, os.listdir(state_dir))


# --- killed and relaunched ---------------------------------------------------------


def test_process_0_holds_the_one_lock(runs):
  killed = runs["killed"]
  assert runs["lock_pid"] == killed.procs[0].pid
  assert runs["busy"] is not None and f"process {killed.procs[0].pid}" in runs["busy"]


def test_resume_after_killing_one_process_is_exact(runs):
  """Relaunched after process 1 was killed in step 3: the uninterrupted run, bit for bit."""
  assert runs["killed_codes"][1] == -signal.SIGKILL
  for pair in (runs["killed"], runs["relaunched"]):
    for i in range(2):
      assert "resuming from step 2" in pair.log(i), pair.logs()
  got = _final_state(runs["resumed_dir"], runs["config"])
  want = _final_state(runs["workdir"], runs["config"])
  assert got.step == want.step == runs["config"].train.num_steps
  assert got.data_state == want.data_state
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want.state),
                          jax.tree_util.tree_leaves(got.state)):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=jax.tree_util.keystr(path))
  records = read_metrics(runs["resumed_dir"])
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  for got_record, want_record in zip(records, read_metrics(runs["workdir"])):
    for key in ("loss", "grad_norm"):
      assert got_record[key] == want_record[key], (got_record["step"], key)


def test_the_survivor_of_a_killed_process_says_the_connection_broke(runs):
  """Process 0 of run K: its collective failed on the connection to the killed process 1.

  Process 1 is killed at its first training batch, where process 0 waits for
  it in a collective of Gloo's: one line, no traceback, status 1.
  """
  survivor = runs["killed"].log(0)
  assert runs["killed_codes"][0] == 1, survivor
  assert "Traceback" not in survivor, survivor
  assert re.fullmatch(
      r"error: the connection to another process of the run broke in a collective \(Gloo "
      r"[^\n]*(Connection reset by peer|Connection closed by peer|Broken pipe)[^\n]*\): "
      r"that process died or its host cannot be reached; rerun every process's command to "
      r"resume from the last checkpoint", survivor.strip().splitlines()[-1]), survivor


# --- a signal to one process ----------------------------------------------------------


def test_signal_to_one_process_stops_both_at_one_step_with_its_checkpoint(runs):
  """SIGTERM to process 1 in step 3 of run S (resumed from step 2, trained on to 5 steps).

  Both processes stop at step 4 (`sharded.LaggedVote`: the vote of step 3 is
  read in step 4), each exits as interrupted, and the checkpoint they saved
  there is the uninterrupted run's, bit for bit.
  """
  signalled = runs["signalled"]
  assert runs["signalled_codes"] == [130, 130], signalled.logs()
  assert "stopped by a signal to another process at step 4" in signalled.log(0), signalled.logs()
  assert f"stopped by signal {int(signal.SIGTERM)} at step 4" in signalled.log(1), signalled.logs()
  for i in range(2):
    shards = os.path.join(runs["signalled_dir"], "checkpoints", "4", "state",
                          f"ocdbt.process_{i}")
    assert os.path.isdir(shards) and os.listdir(shards), i
  got = _final_state(runs["signalled_dir"], runs["config"])
  want = _final_state(runs["workdir"], runs["config"])
  assert got.step == want.step == 4
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want.state),
                          jax.tree_util.tree_leaves(got.state)):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=jax.tree_util.keystr(path))


def test_processes_given_different_settings_are_refused_on_every_process(data_dir, tmp_path,
                                                                          compilation_cache):
  """Process 1 with another learning rate and step count: both refuse, naming the fields.

  Before the check, such a run trained with two diverging copies of the
  parameters (another ``train.lr``), or hung with one process waiting for the
  other (another ``train.num_steps``).
  """
  workdir = tmp_path / "run"
  pair = _Pair(tmp_path, "d", workdir, _flags(data_dir), compilation_cache,
               extra=((), ("--config.train.lr=0.01", "--config.train.num_steps=5")))
  codes = pair.wait(timeout=120)
  assert codes == [2, 2], pair.logs()  # a user error's exit status (experiments/cli.py)
  for i in range(2):
    lines = pair.log(i).strip().splitlines()
    assert lines[-1] == (
        "error: the processes of this run were given different settings: train.lr, "
        "train.num_steps of process 1 differ from process 0's; start every process with "
        "the same command (--config, its overrides and --workdir)"), pair.logs()
  assert not workdir.exists()


# --- an error on one process ends both --------------------------------------------------


def _error_lines(log):
  return [line for line in log.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("case", ["both", "process_1"])
def test_an_error_of_one_process_ends_every_process_with_its_line(data_dir, tmp_path,
                                                                  compilation_cache, case):
  """An empty data folder (each process at its own moment), or process 1's unusable cache.

  Process 0 hosts the run's coordination service: when it ended on the error
  first, JAX aborted process 1 with a C++ stack dump and status 134 (4 of 4
  tries of the empty folder); when process 1 ended alone, process 0 failed in
  its next collective with a traceback and status 1.
  """
  empty = tmp_path / "empty"
  empty.mkdir()
  (tmp_path / "a_file").write_text("not a folder")
  if case == "both":
    extra = (("--config.data.name=nifti", f"--config.data.manual_dir={empty}"),) * 2
    wanted = ["no .nii or .nii.gz volume in", "no .nii or .nii.gz volume in"]
  else:
    extra = ((), (f"--config.data.data_dir={tmp_path / 'a_file' / 'x'}",))
    named = (f"config.data.data_dir={tmp_path / 'a_file' / 'x'}: {tmp_path / 'a_file'} is a "
             "file, not a folder")
    wanted = [f"error: process 1 of this run stopped: {named}", f"error: {named}"]
  pair = _Pair(tmp_path, "e", tmp_path / "run", _flags(data_dir), compilation_cache,
               extra=extra)
  codes = pair.wait(timeout=180)
  assert codes == [2, 2], pair.logs()  # a user error's status, on both
  for i in range(2):
    log = pair.log(i)
    assert not any(crash in log for crash in ("Check failure", "Fatal Python error",
                                               "Traceback", "Terminating process")), pair.logs()
    assert any(wanted[i] in line for line in _error_lines(log)), pair.logs()
  # Process 0, ended by process 1's end without unwinding, left the workdir
  # it had made, holding its lock file, for a run that never started.
  assert not (tmp_path / "run").exists(), os.listdir(tmp_path / "run")


# Runs experiments/train.py as one process of a run whose data folder changes
# between the two processes' reads of it: argv OUT NEW FOLDER TRAIN_PY flags...
# Process 0 writes OUT/read once it has read FOLDER; process 1 waits for that,
# moves the volumes of the folder NEW into FOLDER and then reads it.
_CHANGING = r'''
import os, runpy, sys, time

out, new, folder, train_py = sys.argv[1:5]
flags = sys.argv[5:]
pid = int(next(f.split("=", 1)[1] for f in flags if f.startswith("--process_id=")))
from hyperrecon_jax.data import split_record
current = split_record.current


def changing(data_config):
  if pid == 1:
    while not os.path.exists(os.path.join(out, "read")):
      time.sleep(0.05)
    for name in os.listdir(new):
      os.rename(os.path.join(new, name), os.path.join(folder, name))
  record = current(data_config)
  if pid == 0:
    open(os.path.join(out, "read"), "w").close()
  return record


split_record.current = changing
sys.argv = [train_py, *flags]
runpy.run_path(train_py, run_name="__main__")
'''


def test_processes_that_read_different_volumes_are_refused(tmp_path, compilation_cache):
  """The folder gained two volumes between process 0's read and process 1's.

  Each process built its own dataset and the run trained on batches of both:
  process 1's training split held volumes that ``data_splits.json``, process
  0's record, does not list (a helper's probe, with two hosts whose copies of
  the folder differed).
  """
  from loop_support import write_site
  folder = write_site(tmp_path / "site", range(5))
  new = write_site(tmp_path / "new", range(5, 7))
  script = tmp_path / "changing.py"
  script.write_text(_CHANGING)
  out = tmp_path / "out"
  out.mkdir()
  workdir = tmp_path / "run"
  port = free_port()
  flags = [f"--config={DEMO}", f"--config.data.data_dir={tmp_path / 'tfds'}",
           "--config.data.name=nifti", f"--config.data.manual_dir={folder}",
           f"--workdir={workdir}", f"--coordinator=127.0.0.1:{port}", "--num_processes=2"]
  procs = [subprocess.Popen(
      [sys.executable, str(script), str(out), new, folder, TRAIN, *flags, f"--process_id={i}"],
      env=child_env(compilation_cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True, cwd=str(tmp_path)) for i in range(2)]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [2, 2], logs
  for log in logs:
    (line,) = [line for line in _error_lines(log) if "read different volumes" in line] or [""]
    assert re.search(
        rf"the processes of this run read different volumes in {re.escape(folder)}: process 1 "
        r"built another dataset \(its (train|validation|test) split is not process 0's: "
        r"(1|2) joined it: (sub-05.nii.gz|sub-06.nii.gz)", line), logs
    assert "every process must read the same files" in line
    assert not any(crash in log for crash in ("Check failure", "Fatal Python error",
                                               "Traceback")), logs
  assert not (workdir / "data_splits.json").exists() and not (workdir / "checkpoints").exists()


# Runs experiments/train.py as one process of a run: process 1 writes
# OUT/waiting when it comes to read its data (start-up, before training) and
# waits there for a signal. argv: OUT TRAIN_PY flags...
_WAITING = r'''
import os, runpy, sys, time

out, train_py = sys.argv[1:3]
flags = sys.argv[3:]
pid = int(next(f.split("=", 1)[1] for f in flags if f.startswith("--process_id=")))
from hyperrecon_jax.data import split_record
current = split_record.current


def waiting(data_config):
  if pid == 1:
    open(os.path.join(out, "waiting"), "w").close()
    while True:
      time.sleep(0.05)
  return current(data_config)


split_record.current = waiting
sys.argv = [train_py, *flags]
runpy.run_path(train_py, run_name="__main__")
'''


def test_a_signal_to_one_process_at_start_up_ends_every_process(data_dir, tmp_path,
                                                                compilation_cache):
  """SIGTERM to process 1 before training: both end with 143, process 0 saying why.

  JAX's preemption notifier took SIGTERM over when the process joined the
  run: the signal was only logged, and the run trained to its end (a helper's
  probe). A SIGINT to process 0 at start-up had JAX abort process 1.
  """
  script = tmp_path / "waiting.py"
  script.write_text(_WAITING)
  out = tmp_path / "out"
  out.mkdir()
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, str(script), str(out), TRAIN, *_flags(data_dir),
       f"--workdir={tmp_path / 'run'}", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
       f"--process_id={i}"],
      env=child_env(compilation_cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True, cwd=str(tmp_path)) for i in range(2)]
  try:
    deadline = time.time() + TIMEOUT
    while not (out / "waiting").exists() and time.time() < deadline and procs[1].poll() is None:
      time.sleep(0.05)
    assert (out / "waiting").exists()
    procs[1].send_signal(signal.SIGTERM)
    logs = [p.communicate(timeout=120)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  assert [p.returncode for p in procs] == [143, 143], logs
  assert logs[1].strip().splitlines()[-1] == "interrupted", logs
  assert "error: process 1 of this run stopped: interrupted (SIGTERM)" in _error_lines(logs[0])
  for log in logs:
    assert not any(crash in log for crash in ("Check failure", "Fatal Python error",
                                               "Terminating process")), logs


def test_lagged_vote_returns_the_previous_steps_outcome():
  vote = sharded.LaggedVote(sharded.data_mesh())
  assert [vote(flag) for flag in (False, True, False, False)] == [False, False, True, False]
