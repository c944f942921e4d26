"""Training in subprocesses: data parallelism on 2 simulated devices, SIGTERM and
resume. See loop_support.py."""

import re
import signal
import subprocess
import sys
import time

import jax
from loop_support import ADAM_STEP_BOUND
from loop_support import STEPS
from loop_support import TRAJECTORY_RTOL
from loop_support import assert_trees_close
from loop_support import child_env
from loop_support import host
from loop_support import make_config
from loop_support import read_metrics
from loop_support import train_run_a
import numpy as np
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import train

# XLA executables persist across the session's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")



# --- subprocesses: data parallelism on 2 devices, SIGTERM ------------------------------

_CHILD = r'''
import json, signal, sys, time
import numpy as np
import jax
import ml_collections
from hyperrecon_jax import data
from hyperrecon_jax import models
from hyperrecon_jax import train

mode, config_path, workdir, out = sys.argv[1:5]
print("device_count", jax.device_count(), flush=True)
with open(config_path) as f:
  config = ml_collections.ConfigDict(json.load(f))

if mode == "wait":
  # The parent's SIGTERM must arrive after step 2 (the first checkpoint) and
  # before the end of the run. The loop asks for the batch of step 3 once step
  # 2 and its checkpoint are done: then the iterator writes a marker file for
  # the parent and waits until the signal has reached the loop's handler.
  batches = data.batches

  class WaitForSignal:
    def __init__(self, it):
      self._it, self._count = it, 0
    def __iter__(self):
      return self
    def __next__(self):
      self._count += 1
      if self._count == 3:
        loop_handler, received = signal.getsignal(signal.SIGTERM), []
        def handler(signum, frame):
          received.append(signum)
          loop_handler(signum, frame)
        signal.signal(signal.SIGTERM, handler)
        with open(out + ".ready", "w"):
          pass
        deadline = time.time() + 300
        while not received and time.time() < deadline:
          time.sleep(0.01)
      return next(self._it)
    def get_state(self):
      return self._it.get_state()
    def set_state(self, s):
      self._it.set_state(s)

  def patched(data_config, split, **kwargs):
    it = batches(data_config, split, **kwargs)
    return WaitForSignal(it) if split == "train" else it

  data.batches = patched

state = train.train_and_evaluate(config, workdir)
np.savez(out, *[np.asarray(x) for x in jax.tree_util.tree_leaves(
    jax.device_get(state.params))])
print("done", flush=True)
'''


def _start_child(tmp_path, mode, config, workdir, cache_dir, devices):
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  out = tmp_path / "params.npz"
  log = open(tmp_path / f"{mode}.log", "w")
  proc = subprocess.Popen(
      [sys.executable, str(script), mode, str(config_path), str(workdir),
       str(out)], env=child_env(cache_dir, devices), stdout=log,
      stderr=subprocess.STDOUT, cwd=str(tmp_path))
  return proc, out, log


def _load_params(path, like):
  with np.load(path) as f:
    leaves = [f[f"arr_{i}"] for i in range(len(f.files))]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like),
                                      leaves)


@pytest.fixture(scope="module")
def two_devices(data_dir, tmp_path_factory, compilation_cache):
  """Run A's configuration in a subprocess on 2 devices, started early.

  The child compiles its own (sharded) programs; it runs in the background,
  while this process compiles run A, and is collected by its test.
  """
  tmp_path = tmp_path_factory.mktemp("two_devices")
  proc, out, log = _start_child(tmp_path, "plain", make_config(data_dir),
                                tmp_path / "two_devices", compilation_cache, 2)
  log.close()  # the child holds its own handle
  yield proc, out, tmp_path / "plain.log"
  if proc.poll() is None:
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def run_a(data_dir, tmp_path_factory, two_devices):
  del two_devices  # started first, to overlap with run A
  return train_run_a(data_dir, tmp_path_factory)


def test_data_parallel_on_two_devices_equals_one_device(run_a, two_devices):
  """Run A's configuration (batch 4) on 2 simulated CPU devices, 2 examples each.

  What is exact in real arithmetic is checked to float32 reduction error.
  BatchNorm's statistics and every loss are reductions over the global batch
  (4 × 32 × 32 = 4,096 terms), which on 2 devices are summed in another
  order. XLA reduces in trees, so one such sum of like-signed terms is off by
  about log2(4096)·2⁻²⁴ ≈ 7e-7 relative. A loss passes through a few dozen of
  them (BatchNorm at 14 layers, SSIM's filters), so we allow 1e-5 (measured:
  at most 1.3e-6).

  Step 1 starts from identical parameters. It also shows that BatchNorm
  gathers its statistics over both devices: statistics of 2 examples per
  device change the loss by percents.

  Later steps start from parameters that differ where Adam amplifies rounding
  noise:
  - The hypernetwork's bias-head bias b of each 3×3 convolution has a gradient
    that is zero in exact arithmetic. Its bias K·h(λ) + b is followed by
    training-mode BatchNorm, which removes the per-channel constant b, so Adam
    turns the gradient's rounding noise into steps of ±3.16·lr.
  - Any parameter whose gradient is momentarily near zero is amplified the
    same way.
  So later steps are compared as nearby trajectories (`TRAJECTORY_RTOL`,
  loop_support.py), still far below the percents that BatchNorm statistics
  of part of the batch cause. The parameters themselves are bounded only by
  Adam's step bound (below), and validation in evaluation mode is not
  compared: there the running mean does not cancel b (the metrics differed
  by up to 6 % between machines).
  """
  if jax.device_count() != 1:
    pytest.skip("the reference run A must run on one device")
  proc, out, log_path = two_devices
  try:
    rc = proc.wait(timeout=600)
  finally:
    if proc.poll() is None:
      proc.kill()
  output = log_path.read_text()
  assert rc == 0, output[-3000:]
  assert "device_count 2" in output

  records = read_metrics(str(log_path.parent / "two_devices"))
  want = read_metrics(run_a["workdir"])
  assert [r["step"] for r in records] == [r["step"] for r in want]
  for got, ref in zip(records, want):
    assert got.keys() == ref.keys()
    for key, later in TRAJECTORY_RTOL.items():
      rtol = 1e-5 if got["step"] == 1 else later
      np.testing.assert_allclose(got[key], ref[key], rtol=rtol,
                                 err_msg=f"step {got['step']}: {key}")
    np.testing.assert_allclose(got["lr"], ref["lr"], rtol=1e-7)
    if "val_psnr_zf" in ref:  # the data and the validation key only
      np.testing.assert_allclose(got["val_psnr_zf"], ref["val_psnr_zf"],
                                 rtol=1e-5)

  # Both runs start from the same initialization and take STEPS Adam steps.
  bound = 2 * STEPS * ADAM_STEP_BOUND * run_a["config"].train.lr
  params = _load_params(out, run_a["state"].params)
  for (path, ref), got in zip(
      jax.tree_util.tree_leaves_with_path(run_a["state"].params),
      jax.tree_util.tree_leaves(params)):
    assert np.max(np.abs(got - ref)) <= bound, jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def interrupted_run(run_a, data_dir, tmp_path_factory, compilation_cache):
  """A run stopped by SIGTERM during step 3, then resumed."""
  tmp_path = tmp_path_factory.mktemp("sigterm")
  workdir = tmp_path / "run"
  proc, out, log = _start_child(tmp_path, "wait", run_a["config"], workdir,
                                compilation_cache, 1)
  try:
    # The child's own word that step 2 is complete, not a file of the run
    # (checkpoints/2 exists before step 2 has ended).
    ready = tmp_path / (out.name + ".ready")
    deadline = time.time() + 240
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert ready.exists(), (tmp_path / "wait.log").read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
  finally:
    log.close()
    if proc.poll() is None:
      proc.kill()
  output = (tmp_path / "wait.log").read_text()
  mngr = checkpoints.manager(str(workdir))
  latest = mngr.latest_step()
  mngr.close()
  state = train.train_and_evaluate(run_a["config"], str(workdir))
  return dict(rc=rc, output=output, latest=latest, workdir=str(workdir),
              state=host(state))


def test_sigterm_saves_a_checkpoint_and_raises_interrupted(interrupted_run):
  output = interrupted_run["output"]
  assert interrupted_run["rc"] != 0, output[-3000:]
  assert "Interrupted" in output, output[-3000:]
  match = re.search(r"stopped by signal (\d+) at step (\d+)", output)
  assert match, output[-3000:]
  assert int(match.group(1)) == signal.SIGTERM
  step = int(match.group(2))
  assert step == 3  # the step the signal arrived in
  assert interrupted_run["latest"] == step


def test_resume_after_sigterm_reaches_the_uninterrupted_result(
    run_a, interrupted_run):
  state = interrupted_run["state"]
  assert int(state.step) == STEPS
  assert_trees_close(state.params, run_a["state"].params, rtol=1e-6, atol=1e-7)


def test_metrics_after_sigterm_and_resume_read_as_one_run(interrupted_run):
  # The interrupted step was trained and checkpointed; its record belongs in
  # metrics.jsonl like every other step's.
  steps = [r["step"] for r in read_metrics(interrupted_run["workdir"])]
  assert steps == list(range(1, STEPS + 1))
