"""Tests of the training loop (hyperrecon_jax.train.loop and writer).

Every run here trains the same tiny configuration (mni152 at 32×32, 4 channels,
hypernetwork width 4, batch 4) in its own workdir; the embedded dataset is
built once per module in a temporary folder. The loop builds a fresh
``jax.jit`` per run, so XLA executables go to a persistent compilation cache in
pytest's temporary folder: the first run compiles, the others (and the
subprocesses on one device) load the executables.

Run A (6 steps, uninterrupted) is the reference of the resume, data-parallel
and SIGTERM tests.
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import data
from hyperrecon_jax import models
from hyperrecon_jax import train
from hyperrecon_jax import workdir as workdir_lib
from hyperrecon_jax.train import loop as loop_lib
from hyperrecon_jax.train import writer as writer_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32
BATCH = 4
STEPS = 6
EVAL_STEPS = (3, 6)
CHECKPOINT_STEPS = (2, 4, 6)


# XLA executables persist across the module's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The embedded mni152 dataset at 32×32, built once for the module."""
  path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
  config = make_config(path)
  next(data.batches(config.data, "train", batch_size=BATCH))
  return path


def make_config(data_dir, **train_overrides):
  config = train.default_config()
  config.data.data_dir = data_dir
  config.data.image_size = SIZE
  config.data.num_threads = 0
  config.model.channels = 4
  config.model.hyper_dim = 4
  # 'vmap' compiles ~3× faster on CPU than the CPU default 'loop' (as in the
  # :quick experiment variants); tests/test_models.py covers 'loop'.
  config.model.strategy = "vmap"
  config.train.update(dict(
      batch_size=BATCH, num_steps=STEPS, log_every=1, eval_every=3,
      checkpoint_every=2, eval_batches=1, max_to_keep=3))
  config.train.update(train_overrides)
  return config


def host(tree):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def assert_trees_close(a, b, rtol=1e-6, atol=0.0):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol)


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def restore(workdir, like, step=None):
  """(step, state, data_state, config_dict) of a workdir's checkpoint.

  Args:
    workdir: a run's folder.
    like: a state of the same structure (e.g. run A's final state).
    step: which checkpoint; the latest when None.
  """
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                     sharding=device), like)
  mngr = checkpoints.manager(workdir)
  try:
    return checkpoints.restore(mngr, abstract, step)
  finally:
    mngr.close()


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
  """The reference: 6 uninterrupted steps."""
  del two_devices  # started first, to overlap with run A
  workdir = str(tmp_path_factory.mktemp("run_a"))
  config = make_config(data_dir)
  state = train.train_and_evaluate(config, workdir)
  return dict(workdir=workdir, config=config, state=host(state))


# --- what a run writes -----------------------------------------------------------


def test_run_writes_config_json(run_a):
  with open(os.path.join(run_a["workdir"], "config.json")) as f:
    assert json.load(f) == json.loads(run_a["config"].to_json())


def test_run_state_has_taken_every_step(run_a):
  state = run_a["state"]
  assert int(state.step) == STEPS
  assert int(state.bad_step) == -1
  for leaf in jax.tree_util.tree_leaves(state.params):
    assert np.all(np.isfinite(leaf))


def test_metrics_jsonl_has_one_record_per_logged_step(run_a):
  records = read_metrics(run_a["workdir"])
  assert [r["step"] for r in records] == list(range(1, STEPS + 1))
  val_keys = {f"val_{m}_{lam}" for m in ("psnr", "ssim")
              for lam in ("0", "0.5", "1", "spread")} | {"val_psnr_zf"}
  for r in records:
    for key in ("loss", "loss_mae", "loss_ssim", "grad_norm", "lr",
                "steps_per_s"):
      assert key in r, (r["step"], key)
    assert all(isinstance(v, (int, float)) and np.isfinite(v)
               for v in r.values()), r
    assert r["steps_per_s"] > 0
    np.testing.assert_allclose(r["lr"], 1e-3, rtol=1e-6)
    got_val = {k for k in r if k.startswith("val_")}
    if r["step"] in EVAL_STEPS:
      assert got_val == val_keys, r["step"]
      assert 0 < r["val_psnr_zf"] < 100
      for lam in ("0", "0.5", "1"):
        assert -1 <= r[f"val_ssim_{lam}"] <= 1
      for m in ("psnr", "ssim"):
        values = [r[f"val_{m}_{lam}"] for lam in ("0", "0.5", "1")]
        assert r[f"val_{m}_spread"] == pytest.approx(max(values) - min(values))
      assert r["weight_spread"] > 0
    else:
      assert not got_val and "weight_spread" not in r, r["step"]
  # The zero-filled PSNR depends on the data and the fixed validation key only.
  by_step = {r["step"]: r for r in records}
  assert by_step[3]["val_psnr_zf"] == by_step[6]["val_psnr_zf"]


def test_weight_spread_is_the_distance_of_the_generated_unets(run_a):
  # Independently of the loop: the plain Unets that the hypernetwork
  # generates at λ = 0, 0.5 and 1 (models.unet_variables), as NumPy vectors.
  config = run_a["config"]
  net = train.build_model(config).module
  variables = {"params": run_a["state"].params,
               "batch_stats": run_a["state"].batch_stats}

  def unet(lam):
    coeffs = np.array([[1.0 - lam, lam]], np.float32)
    params = models.unet_variables(net, variables, coeffs)["params"]
    return np.concatenate([np.ravel(v) for k, v in sorted(params.items())
                           if not k.startswith("body")])

  w0, w_half, w1 = unet(0.0), unet(0.5), unet(1.0)
  pairs = [(w0, w_half), (w0, w1), (w_half, w1)]
  want = max(np.linalg.norm(a - b) for a, b in pairs) / np.linalg.norm(w_half)
  last = read_metrics(run_a["workdir"])[-1]
  np.testing.assert_allclose(last["weight_spread"], want, rtol=1e-4)


def _read_event_scalars(path):
  """{tag: [(step, value), ...]} of a TensorBoard event file (TFRecords)."""
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  scalars = {}
  with open(path, "rb") as f:
    blob = f.read()
  pos = 0
  while pos < len(blob):
    (length,) = struct.unpack("<Q", blob[pos:pos + 8])
    pos += 12  # length and its CRC
    event = event_pb2.Event.FromString(blob[pos:pos + length])
    pos += length + 4  # record and its CRC
    for value in event.summary.value:
      scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def test_tensorboard_event_files_hold_the_logged_scalars(run_a):
  pytest.importorskip("tensorboardX")
  events = [f for f in os.listdir(run_a["workdir"])
            if f.startswith("events.out.tfevents")]
  assert events
  scalars = {}
  for name in events:
    for tag, values in _read_event_scalars(
        os.path.join(run_a["workdir"], name)).items():
      scalars.setdefault(tag, []).extend(values)
  records = {r["step"]: r for r in read_metrics(run_a["workdir"])}
  assert [s for s, _ in sorted(scalars["loss"])] == list(range(1, STEPS + 1))
  for step, value in scalars["loss"]:
    np.testing.assert_allclose(value, records[step]["loss"], rtol=1e-6)
  assert sorted(s for s, _ in scalars["val_psnr_0.5"]) == list(EVAL_STEPS)
  assert "lr" in scalars and "loss_ssim" in scalars


def test_checkpoints_hold_the_final_state_and_data_position(run_a):
  ckpt_dir = os.path.join(run_a["workdir"], "checkpoints")
  assert sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) == list(
      CHECKPOINT_STEPS)
  step, state, data_state, config_dict = restore(run_a["workdir"],
                                                 run_a["state"])
  assert step == STEPS
  assert_trees_close(host(state), run_a["state"], rtol=0)
  assert data_state == {"next_index": STEPS}  # batches read
  assert config_dict == json.loads(run_a["config"].to_json())
  assert checkpoints.load_config(run_a["workdir"]) == config_dict


# --- resume ----------------------------------------------------------------------


def test_resume_reaches_the_uninterrupted_result(run_a, data_dir, tmp_path,
                                                capfd):
  workdir = str(tmp_path / "run_b")
  train.train_and_evaluate(make_config(data_dir, num_steps=4), workdir)
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3, 4]
  # The process died while writing a record: a cut-off last line.
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "loss": 0.3')
  capfd.readouterr()
  state = train.train_and_evaluate(make_config(data_dir), workdir)
  assert "resuming from step 4" in capfd.readouterr().err
  assert int(state.step) == STEPS
  assert_trees_close(host(state.params), run_a["state"].params, rtol=1e-6,
                     atol=1e-7)
  assert_trees_close(host(state.batch_stats), run_a["state"].batch_stats,
                     rtol=1e-6, atol=1e-7)
  records = read_metrics(workdir)
  assert [r["step"] for r in records] == list(range(1, STEPS + 1))
  # Steps 5 and 6 saw the same batches and λ as run A's.
  want = {r["step"]: r for r in read_metrics(run_a["workdir"])}
  for r in records:
    np.testing.assert_allclose(r["loss"], want[r["step"]]["loss"], rtol=1e-5)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["train"]["num_steps"] == STEPS


def _snapshot(workdir):
  """{relative path: bytes} of every file of a workdir."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


@pytest.fixture()
def finished_copy(run_a, tmp_path):
  """A copy of run A's finished workdir and a snapshot of its files."""
  workdir = str(tmp_path / "run_a_copy")
  shutil.copytree(run_a["workdir"], workdir)
  return workdir, _snapshot(workdir)


def test_rerunning_a_finished_run_changes_nothing(run_a, data_dir,
                                                  finished_copy, capfd):
  workdir, before = finished_copy
  # Fields that may change between runs (lr) do not matter when no step is
  # left: nothing trains, so nothing is written, config.json included.
  state = train.train_and_evaluate(make_config(data_dir, lr=1e-4), workdir)
  assert "nothing to do" in capfd.readouterr().err
  assert int(state.step) == STEPS
  assert_trees_close(host(state.params), run_a["state"].params, rtol=0)
  assert _snapshot(workdir) == before


def _other_task(c):
  c.task.acceleration = 4.0


def _other_loss_scales(c):
  c.loss_scales = (1.0, 1.0)


def _impossible(c):
  c.hparams.endpoint_prob = 2.0


@pytest.mark.parametrize("change, error", [
    (_other_task, "task.acceleration: 8.0 in the workdir, 4.0 now"),
    (_other_loss_scales, "loss_scales"),
    (_impossible, "endpoint_prob"),
])
def test_a_rejected_rerun_of_a_finished_run_writes_nothing(
    data_dir, finished_copy, change, error):
  workdir, before = finished_copy
  config = make_config(data_dir, num_steps=STEPS + 2)
  change(config)
  with pytest.raises(train.ConfigError, match=error):
    train.train_and_evaluate(config, workdir)
  assert _snapshot(workdir) == before


def test_a_second_trainer_is_refused_and_writes_nothing(data_dir,
                                                        finished_copy):
  workdir, before = finished_copy
  with workdir_lib.lock(workdir):
    with pytest.raises(workdir_lib.WorkdirBusyError, match=str(os.getpid())):
      train.train_and_evaluate(make_config(data_dir, num_steps=STEPS + 2),
                               workdir)
    after = _snapshot(workdir)
    del after[workdir_lib.LOCK_FILE]  # ours
    assert after == before


def test_evaluation_uses_the_config_stored_with_the_checkpoint(finished_copy):
  workdir, _ = finished_copy
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    edited = json.load(f)
  edited["task"]["acceleration"] = 4.0  # e.g. edited by hand
  with open(path, "w") as f:
    json.dump(edited, f)
  config, _, _, step = train.load_trained(workdir)
  assert step == STEPS
  assert config.task.acceleration == 8.0


def test_metric_writer_drops_records_after_the_resumed_step(tmp_path):
  workdir = str(tmp_path)
  w = writer_lib.MetricWriter(workdir)
  for step in range(1, 6):
    w.write(step, {"loss": float(step)})
  w.close()
  # Resume from the checkpoint of step 3: records 4 and 5 will be rewritten.
  w = writer_lib.MetricWriter(workdir, start_step=3)
  w.write(4, {"loss": 40.0})
  w.close()
  assert read_metrics(workdir) == [
      {"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0},
      {"step": 3, "loss": 3.0}, {"step": 4, "loss": 40.0}]
  # A fresh run (start 0) starts a fresh log.
  writer_lib.MetricWriter(workdir).close()
  assert read_metrics(workdir) == []


# --- configuration errors ----------------------------------------------------------


def test_incompatible_config_in_existing_workdir_is_refused(run_a, data_dir,
                                                            tmp_path):
  workdir = tmp_path / "existing"
  workdir.mkdir()
  shutil.copy(os.path.join(run_a["workdir"], "config.json"), workdir)
  before = (workdir / "config.json").read_bytes()
  config = make_config(data_dir)
  config.model.channels = 8
  with pytest.raises(train.ConfigError, match="model.channels"):
    train.train_and_evaluate(config, str(workdir))
  assert (workdir / "config.json").read_bytes() == before
  assert sorted(os.listdir(workdir)) == ["config.json"]
  # Other structural fields too; non-structural ones may change.
  config = make_config(data_dir)
  config.losses = ("mae", "mse")
  with pytest.raises(train.ConfigError, match="losses"):
    loop_lib.check_workdir(config, str(workdir))
  loop_lib.check_workdir(make_config(data_dir, num_steps=100, lr=1e-4),
                         str(workdir))


def _unknown_loss(c):
  c.losses = ("mae", "foo")


def _dhs_without_dc(c):
  c.sampling.method = "dhs"
  c.sampling.top_b = 2


def _superres_not_divisible(c):
  c.task.name = "superres"
  c.data.image_size = 40
  c.task.factor = 16


def _top_b_too_large(c):
  c.losses = ("dc", "weight_l1", "tv")
  c.loss_scales = (1.0, 1.0, 1.0)
  c.sampling.method = "dhs"
  c.sampling.top_b = BATCH + 1


@pytest.mark.parametrize("change,match", [
    (_unknown_loss, "foo"),
    (_dhs_without_dc, "'dc'"),
    (_superres_not_divisible, "factor"),
    (_top_b_too_large, "top_b"),
])
def test_impossible_config_raises_config_error_and_writes_nothing(
    data_dir, tmp_path, change, match):
  config = make_config(data_dir)
  change(config)
  workdir = tmp_path / "never"
  with pytest.raises(train.ConfigError, match=match):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


# --- non-finite loss -------------------------------------------------------------------


class _NanAfter:
  """A training iterator whose batches from the ``first``-th on hold NaN."""

  def __init__(self, it, first):
    self._it, self._first, self._count = it, first, 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = dict(next(self._it))
    self._count += 1
    if self._count >= self._first:
      batch["image"] = np.full_like(batch["image"], np.nan)
    return batch

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


@pytest.fixture(scope="module")
def nan_run(data_dir, tmp_path_factory):
  """A run whose training batches from loop step 5 on are NaN.

  Returns the workdir and the NonFiniteLossError it raised.
  """
  workdir = str(tmp_path_factory.mktemp("nan") / "run")
  batches = data.batches

  def patched(data_config, split, **kwargs):
    it = batches(data_config, split, **kwargs)
    return _NanAfter(it, 5) if split == "train" else it  # validation clean

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(data, "batches", patched)
    with pytest.raises(train.NonFiniteLossError) as info:
      train.train_and_evaluate(make_config(data_dir), workdir)
  return workdir, info.value


def test_non_finite_loss_raises_and_keeps_the_last_good_checkpoint(
    run_a, nan_run):
  workdir, error = nan_run
  assert "checkpoint is step 4" in str(error)
  records = read_metrics(workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert all(np.isfinite(r["loss"]) for r in records)
  step, state, _, _ = restore(workdir, run_a["state"])
  assert step == 4
  assert int(state.bad_step) == -1
  # The kept checkpoint is the good state of step 4 (run A's, same batches).
  _, want, _, _ = restore(run_a["workdir"], run_a["state"], step=4)
  assert_trees_close(host(state), host(want), rtol=0)


def test_non_finite_first_step_says_no_checkpoint_was_written(data_dir,
                                                               tmp_path):
  workdir = str(tmp_path / "run")
  batches = data.batches

  def patched(data_config, split, **kwargs):
    it = batches(data_config, split, **kwargs)
    return _NanAfter(it, 1) if split == "train" else it

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(data, "batches", patched)
    with pytest.raises(train.NonFiniteLossError,
                       match="step 1; .*no checkpoint was written"):
      train.train_and_evaluate(make_config(data_dir, checkpoint_every=1),
                               workdir)
  assert not os.listdir(os.path.join(workdir, "checkpoints"))


def test_non_finite_loss_error_names_the_step_as_the_loop_counts_it(nan_run):
  # Loop step s is the s-th update: metrics.jsonl, checkpoints/<s> and the
  # progress log all call the update that saw the first NaN batch "step 5"
  # (and checkpoint 4, the state before it, is good).
  _, error = nan_run
  assert re.search(r"non-finite at step 5\b", str(error)), str(error)


# --- subprocesses: data parallelism on 2 devices, SIGTERM ------------------------------

_CHILD = r'''
import json, sys, time
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

if mode == "slow":
  # Slow steps after the first checkpoint (step 2), so that the parent's
  # SIGTERM arrives well before the end of the run.
  batches = data.batches

  class Slow:
    def __init__(self, it):
      self._it, self._count = it, 0
    def __iter__(self):
      return self
    def __next__(self):
      self._count += 1
      if self._count > 2:
        time.sleep(2.0)
      return next(self._it)
    def get_state(self):
      return self._it.get_state()
    def set_state(self, s):
      self._it.set_state(s)

  def patched(data_config, split, **kwargs):
    it = batches(data_config, split, **kwargs)
    return Slow(it) if split == "train" else it

  data.batches = patched

state = train.train_and_evaluate(config, workdir)
np.savez(out, *[np.asarray(x) for x in jax.tree_util.tree_leaves(
    jax.device_get(state.params))])
print("done", flush=True)
'''


def _child_env(cache_dir, devices):
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if "xla_force_host_platform_device_count" not in f]
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def _start_child(tmp_path, mode, config, workdir, cache_dir, devices):
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  config_path = tmp_path / "config.json"
  config_path.write_text(config.to_json())
  out = tmp_path / "params.npz"
  log = open(tmp_path / f"{mode}.log", "w")
  proc = subprocess.Popen(
      [sys.executable, str(script), mode, str(config_path), str(workdir),
       str(out)], env=_child_env(cache_dir, devices), stdout=log,
      stderr=subprocess.STDOUT, cwd=str(tmp_path))
  return proc, out, log


def _load_params(path, like):
  with np.load(path) as f:
    leaves = [f[f"arr_{i}"] for i in range(len(f.files))]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like),
                                      leaves)


# Adam's step is bounded by lr·(1 − β1)/√(1 − β2) = 3.16·lr per update for
# optax's defaults (Kingma & Ba 2015, §2.1), whatever the gradient.
ADAM_STEP_BOUND = 0.1 / np.sqrt(1e-3)


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
  In both cases the loss is (to first order) insensitive to those parameters,
  so the training losses still agree to roundoff, with the same tolerance.
  The parameters themselves are bounded only by Adam's step bound (below),
  and validation in evaluation mode is not compared: there the running mean
  does not cancel b (the metrics differed by up to 6 % between machines).
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
    for key in ("loss", "loss_mae", "loss_ssim", "grad_norm", "lr"):
      np.testing.assert_allclose(got[key], ref[key], rtol=1e-5,
                                 err_msg=f"step {got['step']}: {key}")
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
  """A run stopped by SIGTERM after its first checkpoint, then resumed."""
  tmp_path = tmp_path_factory.mktemp("sigterm")
  workdir = tmp_path / "run"
  proc, _, log = _start_child(tmp_path, "slow", run_a["config"], workdir,
                              compilation_cache, 1)
  try:
    deadline = time.time() + 240
    first = workdir / "checkpoints" / "2"
    while not first.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert first.exists(), (tmp_path / "slow.log").read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
  finally:
    log.close()
    if proc.poll() is None:
      proc.kill()
  output = (tmp_path / "slow.log").read_text()
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
  assert 2 < step < STEPS
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
