"""Tests of the training loop (hyperrecon_jax.train.loop and writer): what a run
writes, resume, configuration errors, non-finite losses. See loop_support.py."""

import itertools
import json
import os
import re
import shutil
import struct
import time
import types

import jax
import jax.numpy as jnp
from loop_support import BATCH
from loop_support import CHECKPOINT_STEPS
from loop_support import EVAL_STEPS
from loop_support import STEPS
from loop_support import NanAfter
from loop_support import assert_trees_close
from loop_support import host
from loop_support import make_config
from loop_support import read_metrics
from loop_support import restore
import numpy as np
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import data
from hyperrecon_jax import hparams
from hyperrecon_jax import models
from hyperrecon_jax import train
from hyperrecon_jax import workdir as workdir_lib
from hyperrecon_jax.evaluators import validation
from hyperrecon_jax.train import loop as loop_lib
from hyperrecon_jax.train import writer as writer_lib

# XLA executables persist across the session's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")




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
                "steps_per_s", "input_wait"):
      assert key in r, (r["step"], key)
    assert all(isinstance(v, (int, float)) and np.isfinite(v)
               for v in r.values()), r
    assert r["steps_per_s"] > 0
    # A share of the interval's wall time (its waits lie inside it).
    assert 0 <= r["input_wait"] <= 1
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
  net = train.build_model(config)
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


def _independent_validation(config, net, variables, lams):
  """Each validation slice measured with the key folded from its own (volume,
  slice) ids, reconstructed by ``model.apply`` at each λ, scored by
  scikit-image; means over the real (not padding) rows."""
  from skimage.metrics import peak_signal_noise_ratio as sk_psnr
  from skimage.metrics import structural_similarity as sk_ssim

  from hyperrecon_jax import hparams
  from hyperrecon_jax import physics
  from hyperrecon_jax import streams
  operator = physics.make_operator(config.task, (config.data.image_size,) * 2)
  key = streams.key(config, "validation")
  apply = jax.jit(net.apply)
  psnr, ssim, psnr_zf = {lam: [] for lam in lams}, {lam: [] for lam in lams}, []
  batches = data.batches(config.data, "validation", batch_size=BATCH, training=False)
  for batch in list(batches)[:config.train.eval_batches]:
    for x, volume, slice_, valid in zip(batch["image"], batch["volume"], batch["slice"],
                                        batch["valid"]):
      if not valid:
        continue
      x = np.asarray(x, np.float64)
      k = jax.random.fold_in(jax.random.fold_in(key, int(volume)), int(slice_))
      zf = operator.zero_filled(operator.measure(jax.numpy.asarray(x[None], np.float32), k))
      psnr_zf.append(sk_psnr(x, np.linalg.norm(np.asarray(zf[0]), axis=-1), data_range=1.0))
      for lam in lams:
        recon = np.asarray(apply(variables, zf, hparams.coefficients(
            np.asarray([lam], np.float32))), np.float64)[0]
        psnr[lam].append(sk_psnr(x, recon, data_range=1.0))
        ssim[lam].append(sk_ssim(x, recon, data_range=1.0, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False))
  return ({lam: np.mean(v) for lam, v in psnr.items()},
          {lam: np.mean(v) for lam, v in ssim.items()}, np.mean(psnr_zf))


def _assert_validation(got, want, lams):
  psnr, ssim, psnr_zf = want
  tag = lambda lam: "_".join(f"{v:g}" for v in lam)
  assert set(got) == ({f"val_{m}_{tag(lam)}" for m in ("psnr", "ssim") for lam in lams}
                      | {"val_psnr_zf", "val_psnr_spread", "val_ssim_spread"})
  # float32 network and metrics against float64 scikit-image: 1e-4 relative
  # is ~1e-3 dB of PSNR, far below any change a bug in the noise or the
  # averaging would make (another key changes the zero-filled PSNR by ~0.1 dB);
  # SSIM agrees with scikit-image to 1e-4 (tests/test_metrics.py).
  np.testing.assert_allclose(got["val_psnr_zf"], psnr_zf, rtol=1e-4)
  for lam in lams:
    np.testing.assert_allclose(got[f"val_psnr_{tag(lam)}"], psnr[lam], rtol=1e-4)
    np.testing.assert_allclose(got[f"val_ssim_{tag(lam)}"], ssim[lam], atol=1e-4)
  values = [got[f"val_psnr_{tag(lam)}"] for lam in lams]
  assert got["val_psnr_spread"] == pytest.approx(max(values) - min(values))


def test_validation_is_the_mean_over_slices_measured_by_their_ids(run_a):
  config = run_a["config"]
  net = train.build_model(config)
  variables = {"params": run_a["state"].params,
               "batch_stats": run_a["state"].batch_stats}
  lams = [(0.0,), (1.0,)]
  got = validation.metrics(config, net, variables, lams)
  _assert_validation(got, _independent_validation(config, net, variables, lams), lams)


def test_validation_of_two_hyperparameters_covers_each_loss_once(data_dir):
  # Three loss terms: λ has two entries and validation runs at the corners
  # of the square, each a loss of its own ((1, 1) weights as (1, 0) does),
  # and its centre.
  from hyperrecon_jax.train import step as step_lib
  config = make_config(data_dir)
  config.losses = ("mae", "ssim", "tv")
  config.loss_scales = (1.0, 1.0, 1.0)
  net = train.build_model(config)
  state = train.create_state(config, net, jax.random.key(0))
  lams = step_lib.validation_lambdas(2)
  assert sorted(lams) == [(0.0, 0.0), (0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
  for num in (1, 2, 3):
    assert len(hparams.distinct(np.asarray(step_lib.validation_lambdas(num)))) == num + 2
  got = validation.metrics(config, net, state.variables(), lams)
  _assert_validation(got, _independent_validation(config, net, state.variables(), lams), lams)


def test_a_spread_over_a_nan_mean_is_nan_in_any_order(monkeypatch):
  # Python's max and min gave 2.0, 1.0 or 0.0 by where the NaN sat.
  from hyperrecon_jax import evaluate
  config = make_config("")
  for order in ([None, 3.0, 1.0], [3.0, None, 1.0], [3.0, 1.0, None]):
    monkeypatch.setattr(evaluate, "evaluate_grid", lambda *args, order=order, **kwargs: {
        "zero_filled": {"mean": {"psnr": 1.0}},
        "mean": {"psnr": order, "ssim": [0.5, 0.25, 0.75]}})
    monkeypatch.setattr(validation, "batches", lambda config: None)
    got = validation.metrics(config, None, None, [(0.0,), (0.5,), (1.0,)])
    assert np.isnan(got["val_psnr_spread"]) and got["val_ssim_spread"] == 0.5


def test_validation_names_tell_apart_lambdas_that_differ_in_float32():
  # Six digits (`:g`) named 0.30000004 as 0.3: one stack Unet's scores
  # replaced the other's in the log, under one name.
  names = [validation._tag(lam) for lam in [(0.3,), (0.30000004,), (0.5, 1.0), (1e-05,)]]
  assert names == ["0.3", "0.30000004", "0.5_1", "1e-05"]
  # The name reads back as the float32 value (compared in float32: NumPy 1 compares a
  # Python float with a float32 in float64).
  assert np.float32(names[1]) == np.float32(0.30000004)
  # Values that are one float32 keep the short name.
  assert validation._tag((0.30000001,)) == "0.3"


def _read_events(path):
  """The events of a TensorBoard event file (TFRecords), in order."""
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  with open(path, "rb") as f:
    blob = f.read()
  events, pos = [], 0
  while pos < len(blob):
    (length,) = struct.unpack("<Q", blob[pos:pos + 8])
    # A cut-off record (as tf.data's reader, a DataLossError).
    assert pos + 12 + length + 4 <= len(blob), f"{path}: record at byte {pos} is cut off"
    pos += 12  # length and its CRC
    events.append(event_pb2.Event.FromString(blob[pos:pos + length]))
    pos += length + 4  # record and its CRC
  return events


def _read_event_scalars(path):
  """{tag: [(step, value), ...]} of a TensorBoard event file (TFRecords)."""
  scalars = {}
  for event in _read_events(path):
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
  assert data_state == {"examples": STEPS * BATCH}  # examples of the training stream read
  assert config_dict == json.loads(run_a["config"].to_json())
  assert checkpoints.saved_config(run_a["workdir"]) == config_dict


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
  # The one field changed since the checkpoint is said (it is stored from now on).
  assert (f"resuming from step 4; changed since that checkpoint: train.num_steps: 4 → {STEPS}\n"
          in capfd.readouterr().err)
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


class _Recorded:
  """A training iterator that lists the (volume, slice) of every batch taken from it."""

  def __init__(self, it, seen):
    self._it, self._seen = it, seen

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    self._seen.extend(zip(batch["volume"].tolist(), batch["slice"].tolist()))
    return batch

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


def test_a_resume_with_another_batch_size_reads_on_from_the_examples_read(
    data_dir, tmp_path, monkeypatch):
  # The data position was stored in batches and counted again in batches of
  # the new size: resumed at batch 8 after 2 steps of 4, the run skipped
  # examples 8-15 of the epoch (at a smaller batch it repeated some).
  config = make_config(data_dir)
  stream = [ids for b in itertools.islice(data.batches(
      config.data, "train", batch_size=4, seed=int(config.train.seed), labels=False), 6)
            for ids in zip(b["volume"].tolist(), b["slice"].tolist())]
  seen, batches = [], data.batches
  monkeypatch.setattr(data, "batches", lambda data_config, split, **kwargs: (
      _Recorded(batches(data_config, split, **kwargs), seen) if split == "train"
      else batches(data_config, split, **kwargs)))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(make_config(data_dir, num_steps=2), workdir)
  final = train.train_and_evaluate(make_config(data_dir, num_steps=4, batch_size=8), workdir)
  assert seen == stream[:24]  # 2 batches of 4, then 2 of 8: examples 0-7, then 8-23
  assert restore(workdir, host(final))[2] == {"examples": 24}


@pytest.mark.parametrize("data_state, examples", [
    ({}, 0), ({"examples": 20}, 20),
    ({"next_index": 3}, 12),  # written before: batches of the run's 4 then
])
def test_the_examples_a_checkpoint_read_in_either_of_its_forms(data_state, examples):
  assert loop_lib.examples_read(data_state, {"train": {"batch_size": 4}}) == examples


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


def test_a_report_of_a_checkpoint_past_the_resumed_step_is_set_aside(tmp_path, capsys):
  # Checkpoint 6 damaged, the run resumes from 4: the report of step 6 scored
  # weights that are gone, and read as the report of the step 6 written again.
  workdir = str(tmp_path)
  os.makedirs(os.path.join(workdir, "eval"))

  def report(step):
    with open(os.path.join(workdir, "eval", "lambda_grid.json"), "w") as f:
      json.dump({"checkpoint_step": step}, f)

  report(4)
  writer_lib.MetricWriter(workdir, start_step=4).close()
  assert os.path.isdir(os.path.join(workdir, "eval"))  # of the step resumed from: kept
  report(6)
  writer_lib.MetricWriter(workdir, start_step=4).close()
  assert not os.path.exists(os.path.join(workdir, "eval"))
  with open(os.path.join(workdir, "eval.1.old", "lambda_grid.json")) as f:
    assert json.load(f) == {"checkpoint_step": 6}
  assert "scored the checkpoint of step 6, past step 4 that this run resumes from: it is " \
         "kept as eval.1.old" in capsys.readouterr().err
  workdir_lib.check_folder(workdir, "training run", workdir_lib.RUN_ENTRIES)  # still a run's


def test_a_last_record_without_its_newline_is_kept_and_ended_on_resume(tmp_path):
  workdir = str(tmp_path)
  # Killed after step 2's record but before its newline: the record is whole,
  # and step 3's must start a line of its own, not extend step 2's.
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}')
  w = writer_lib.MetricWriter(workdir, start_step=2)
  w.write(3, {"loss": 3.0})
  w.close()
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert f.read() == ('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n'
                        '{"step": 3, "loss": 3.0}\n')
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3]


def _event_files(workdir):
  return sorted(os.path.join(workdir, f) for f in os.listdir(workdir)
                if f.startswith("events.out.tfevents."))


def _seconds_later(monkeypatch, seconds):
  """tensorboardX's clock, ``seconds`` ahead: it names event files by the second,
  and a writer opened within the same second would overwrite the earlier file."""
  event_file_writer = pytest.importorskip("tensorboardX.event_file_writer")
  monkeypatch.setattr(event_file_writer, "time",
                      types.SimpleNamespace(time=lambda: time.time() + seconds))


def test_a_resumed_run_cuts_the_earlier_event_files_back_to_its_step(tmp_path, monkeypatch):
  pytest.importorskip("tensorboardX")
  workdir = str(tmp_path)
  w = writer_lib.MetricWriter(workdir)
  for step in range(1, 6):
    w.write(step, {"loss": float(step)})
  w.close()
  (first,) = _event_files(workdir)
  with open(first, "rb") as f:
    written = f.read()
  # Killed in the middle of writing step 5's record: its last 5 bytes are missing.
  os.truncate(first, len(written) - 5)
  warnings = []
  monkeypatch.setattr(writer_lib.logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
  # Resumed from the checkpoint of step 3: steps 4 and 5 are written again.
  _seconds_later(monkeypatch, 10)
  w = writer_lib.MetricWriter(workdir, start_step=3)
  w.write(4, {"loss": 40.0})
  w.close()
  assert _event_files(workdir)[0] == first
  # The earlier file reads to its end: steps 1-3, byte for byte as written.
  with open(first, "rb") as f:
    cut = f.read()
  assert written.startswith(cut)
  assert _read_event_scalars(first) == {"loss": [(1, 1.0), (2, 2.0), (3, 3.0)]}
  (warning,) = warnings
  assert warning.startswith(f"{first}: the record at byte ") and "cut off" in warning
  # Every event file together holds what metrics.jsonl holds, each step once.
  scalars = sorted(v for path in _event_files(workdir)
                   for v in _read_event_scalars(path)["loss"])
  assert scalars == [(r["step"], r["loss"]) for r in read_metrics(workdir)] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]

  # Files within the step are left as they are (resumed from step 4).
  warnings.clear()
  written = {}
  for path in _event_files(workdir):
    with open(path, "rb") as f:
      written[path] = f.read()
  _seconds_later(monkeypatch, 20)
  writer_lib.MetricWriter(workdir, start_step=4).close()
  for path, contents in written.items():
    with open(path, "rb") as f:
      assert f.read() == contents
  # Resumed from step 2: the later files hold nothing but their headers up to
  # step 2 (then the purge markers at 4 and 5, and step 4) and are removed; the
  # first keeps steps 1-2.
  _seconds_later(monkeypatch, 30)
  writer_lib.MetricWriter(workdir, start_step=2).close()
  assert warnings == []
  files = _event_files(workdir)
  assert files[0] == first and len(files) == 2  # and this resume's own
  assert _read_event_scalars(first) == {"loss": [(1, 1.0), (2, 2.0)]}
  assert _read_event_scalars(files[1]) == {}


def test_a_resumed_run_s_purge_keeps_the_checkpointed_step_s_scalars(tmp_path, monkeypatch):
  pytest.importorskip("tensorboardX")
  workdir = str(tmp_path)
  w = writer_lib.MetricWriter(workdir)
  for step in (1, 2, 3):
    w.write(step, {"loss": float(step)})
  w.close()
  (earlier,) = _event_files(workdir)
  # Resumed from the checkpoint of step 2. TensorBoard hides the events at and
  # after a SessionLog START's step: at step 3, step 2's scalars stay.
  _seconds_later(monkeypatch, 10)
  writer_lib.MetricWriter(workdir, start_step=2).close()
  (resumed,) = [path for path in _event_files(workdir) if path != earlier]
  assert [e.step for e in _read_events(resumed) if e.WhichOneof("what") == "session_log"
          and e.session_log.status == e.session_log.START] == [3]
  assert _read_event_scalars(earlier) == {"loss": [(1, 1.0), (2, 2.0)]}


def test_a_run_started_again_from_step_0_keeps_the_earlier_runs_event_files_apart(
    tmp_path, capsys):
  pytest.importorskip("tensorboardX")
  workdir = str(tmp_path)
  w = writer_lib.MetricWriter(workdir)
  w.write(1, {"loss": 3.6})
  w.close()
  (earlier,) = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents.")]
  # Left beside the new run's events, the old run's curves were drawn into
  # the new run's at the same steps, with no purge between them.
  w = writer_lib.MetricWriter(workdir)
  w.write(1, {"loss": 3.3})
  w.close()
  assert ("kept: its metrics as metrics.jsonl.1.old and its TensorBoard events in "
          "events.1.old") in capsys.readouterr().err
  assert os.listdir(os.path.join(workdir, "events.1.old")) == [earlier]
  assert len([f for f in os.listdir(workdir) if f.startswith("events.out.tfevents.")]) == 1
  assert _read_event_scalars(os.path.join(workdir, "events.1.old", earlier))["loss"] == [
      (1, pytest.approx(3.6))]
  assert read_metrics(workdir) == [{"step": 1, "loss": 3.3}]
  # The next restart takes the next n free for both.
  writer_lib.MetricWriter(workdir).close()
  assert sorted(f for f in os.listdir(workdir) if f.endswith(".old")) == [
      "events.1.old", "events.2.old", "metrics.jsonl.1.old", "metrics.jsonl.2.old"]


def test_event_files_without_events_are_removed_not_kept_as_a_run(tmp_path, capsys,
                                                                  monkeypatch):
  pytest.importorskip("tensorboardX")
  workdir = str(tmp_path)
  # A run stopped before it logged anything leaves its event file's header
  # alone (the record of the format's version), or an empty file.
  writer_lib.MetricWriter(workdir).close()
  (header_only,) = _event_files(workdir)
  with open(header_only, "rb") as f:
    header = f.read()
  empty = os.path.join(workdir, "events.out.tfevents.1.killed")
  open(empty, "wb").close()
  # Started again from step 0: there is no earlier run to keep.
  _seconds_later(monkeypatch, 10)
  w = writer_lib.MetricWriter(workdir)
  w.write(1, {"loss": 1.0})
  w.close()
  assert "kept" not in capsys.readouterr().err
  assert not any(name.endswith(".old") for name in os.listdir(workdir))
  (events,) = _event_files(workdir)
  assert events not in (header_only, empty)
  assert _read_event_scalars(events) == {"loss": [(1, 1.0)]}
  # Resumed from step 1, with nothing to cut: a header-only file goes too.
  stray = os.path.join(workdir, "events.out.tfevents.2.stopped")
  with open(stray, "wb") as f:
    f.write(header)
  _seconds_later(monkeypatch, 20)
  writer_lib.MetricWriter(workdir, start_step=1).close()
  assert not os.path.exists(stray)
  assert _read_event_scalars(events) == {"loss": [(1, 1.0)]}
  # Kept as an earlier run's: a file whose one record is an event, not the
  # header, and one whose header's length field is damaged (nothing tells its
  # records apart then).
  with open(events, "rb") as f:
    blob = f.read()
  second = 12 + struct.unpack("<Q", blob[:8])[0] + 4
  lone = os.path.join(workdir, "events.out.tfevents.3.lone")
  with open(lone, "wb") as f:
    f.write(blob[second:second + 12 + struct.unpack("<Q", blob[second:second + 8])[0] + 4])
  damaged = os.path.join(workdir, "events.out.tfevents.4.damaged")
  with open(damaged, "wb") as f:
    f.write(blob[:5] + bytes([blob[5] ^ 1]) + blob[6:])
  before = _event_files(workdir)  # the resume's own too: its purge markers
  assert {events, lone, damaged} < set(before)
  _seconds_later(monkeypatch, 30)
  writer_lib.MetricWriter(workdir).close()
  assert sorted(os.listdir(os.path.join(workdir, "events.1.old"))) == sorted(
      os.path.basename(path) for path in before)
  assert _read_event_scalars(os.path.join(workdir, "events.1.old", os.path.basename(lone))) == {
      "loss": [(1, 1.0)]}


def test_a_full_disk_under_the_metrics_names_the_file(tmp_path):
  workdir = str(tmp_path)
  w = writer_lib.MetricWriter(workdir)
  w.write(1, {"loss": 1.0})
  w._file.close()
  w._file = open("/dev/full", "a")  # every flush: ENOSPC, as a full disk's write
  if w._tb is not None:  # the event file on the same full disk

    def full():
      raise OSError(28, "No space left on device")
    w._tb.close = full
  with pytest.raises(OSError, match=r"No space left on device: '.*metrics\.jsonl'"):
    w.write(2, {"loss": 2.0})
  # Said once: closing fails again neither on the line it could not write nor
  # on the event file, whose error named the wrong file.
  w.close()
  assert read_metrics(workdir) == [{"step": 1, "loss": 1.0}]



def test_a_full_disk_under_the_event_files_names_the_file_and_ends_tensorboard(tmp_path,
                                                                              monkeypatch):
  pytest.importorskip("tensorboardX")
  workdir = str(tmp_path)
  w = writer_lib.MetricWriter(workdir)
  w.write(1, {"loss": 1.0})
  w.close()
  # Resumed: the earlier run's event file stays beside the one being written,
  # and is older by its modification time, whatever the clock's resolution.
  (earlier,) = _event_files(workdir)
  os.utime(earlier, (time.time() - 3600,) * 2)
  _seconds_later(monkeypatch, 10)
  w = writer_lib.MetricWriter(workdir, start_step=1)
  (events,) = [os.path.basename(path) for path in _event_files(workdir) if path != earlier]

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")  # as the kernel's: no file named
  w._tb.add_scalar = full
  with pytest.raises(OSError, match=rf"No space left on device: '.*{re.escape(events)}'$"):
    w.write(2, {"loss": 2.0})
  w.write(3, {"loss": 3.0})  # the metrics go on; TensorBoard logging has ended
  w.close()
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3]


def test_the_terminal_summary_is_the_loss_then_validation_then_spreads():
  assert writer_lib.summary({"loss": 0.1234, "val_psnr": 25.0}) == "loss=0.1234 val_psnr=25"
  # Four significant digits (0.0123456 rounds to 0.01235); other keys are left out.
  assert writer_lib.summary({"weight_spread": 0.0123456, "lr": 0.001, "val_psnr_b": 21.0,
                             "val_psnr_a": 20.5, "loss": 12.3456}) == (
      "loss=12.35 val_psnr_a=20.5 val_psnr_b=21 weight_spread=0.01235")
  assert writer_lib.summary({"val_psnr": 25.0}) == "val_psnr=25"


# --- configuration errors ----------------------------------------------------------


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


@pytest.fixture(scope="module")
def nan_run(data_dir, tmp_path_factory):
  """A run whose training batches from loop step 5 on are NaN.

  Returns the workdir and the NonFiniteLossError it raised.
  """
  workdir = str(tmp_path_factory.mktemp("nan") / "run")
  batches = data.batches

  def patched(data_config, split, **kwargs):
    it = batches(data_config, split, **kwargs)
    return NanAfter(it, 5) if split == "train" else it  # validation clean

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(data, "batches", patched)
    with pytest.raises(train.NonFiniteLossError) as info:
      train.train_and_evaluate(make_config(data_dir), workdir)
  return workdir, info.value


def test_a_signal_while_the_finished_run_s_files_close_is_noted(data_dir, tmp_path, capsys,
                                                               monkeypatch):
  # The loop's handler took it, then the old handlers came back: the signal
  # was dropped without a word.
  import signal
  close = writer_lib.MetricWriter.close

  def close_then_signal(self):
    close(self)
    signal.raise_signal(signal.SIGTERM)

  monkeypatch.setattr(writer_lib.MetricWriter, "close", close_then_signal)
  workdir = str(tmp_path / "run")
  state = train.train_and_evaluate(make_config(data_dir, num_steps=2), workdir)
  assert int(state.step) == 2 and os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]
  assert ("note: signal 15 arrived while the finished run's files were closed; the run is "
          "complete and saved" in capsys.readouterr().err)


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
    return NanAfter(it, 1) if split == "train" else it

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
  # A NaN batch makes every term NaN, and the error names them.
  assert "At step 5 the loss term(s) mae, ssim were not finite" in str(error), str(error)


def test_a_loss_term_that_is_not_finite_is_named(data_dir, tmp_path, own_terms):
  # A term of one's own that returns NaN beside a finite one: named, not lost
  # in the advice to lower the learning rate.
  own_terms.register_term("nan_term", lambda recon, target, **_: jnp.sum(
      recon, axis=(1, 2)) * jnp.nan)
  config = make_config(data_dir, num_steps=2, checkpoint_every=1)
  config.losses, config.loss_scales = ("mae", "nan_term"), (1.0, 1.0)
  with pytest.raises(train.NonFiniteLossError, match=(
      r"non-finite at step 1; training stopped and no checkpoint was written\. At step 1 the "
      r"loss term\(s\) nan_term were not finite: check them")):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_a_run_whose_own_term_changed_since_training_is_refused(data_dir, tmp_path, own_terms):
  # The run stores the term's name; its values on a fixed probe tell whether
  # the module still computes what it trained on (train/term_probes.py).
  config = make_config(data_dir, num_steps=2, checkpoint_every=2)
  config.losses, config.loss_scales = ("mae", "grad_diff"), (1.0, 1.0)
  config.extensions = ("own_terms",)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    recorded = json.load(f)["term_probes"]
  assert list(recorded) == ["grad_diff"] and len(recorded["grad_diff"]) == 2
  train.load_trained(workdir)
  own_terms.register_term("grad_diff", lambda recon, target, **_: jnp.sum(
      jnp.abs(jnp.diff(recon, axis=2) - jnp.diff(target, axis=2)), axis=(1, 2)),
      needs=("target",), replace=True)
  with pytest.raises(train.ConfigError, match=r"other loss terms under the same names: "
                     r"'grad_diff' gives"):
    train.load_trained(workdir)
  before = sorted(os.listdir(workdir))
  config.train.num_steps = 4
  with pytest.raises(train.ConfigError, match=r"the run in .*run was trained with other loss "
                     r"terms under the same names: 'grad_diff'"):
    train.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(workdir)) == before


def test_a_state_whose_reconstructions_are_not_finite_is_not_kept_as_good(
    run_a, data_dir, tmp_path):
  # Finite parameters can still give NaN reconstructions in evaluation mode
  # (after lr=1e30, say). Here the resumed state's BatchNorm running variances
  # are negative: training, which normalizes with batch statistics, goes on
  # with finite losses and finite values, but every evaluation-mode
  # reconstruction is NaN, so step 8 must not become the last good checkpoint.
  workdir = str(tmp_path / "run")
  shutil.copytree(run_a["workdir"], workdir)
  restore_checkpoint = checkpoints.restore

  def negative_variances(*args, **kwargs):
    restored = restore_checkpoint(*args, **kwargs)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full_like(x, -1e6) if "var" in jax.tree_util.keystr(path) else x,
        restored.state.batch_stats)
    return restored._replace(state=restored.state.replace(batch_stats=stats))

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(checkpoints, "restore", negative_variances)
    with pytest.raises(train.NonFiniteLossError,
                       match=r"reconstructions of a validation batch are not finite at step 8 "
                             r".*the last good checkpoint is step 6"):
      train.train_and_evaluate(make_config(data_dir, num_steps=STEPS + 2), workdir)
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))) == list(
      CHECKPOINT_STEPS)
  records = read_metrics(workdir)
  assert [r["step"] for r in records] == list(range(1, STEPS + 3))
  assert all(np.isfinite(r["loss"]) for r in records)


def test_a_four_term_run_logs_the_spread_along_every_direction(data_dir, tmp_path,
                                                               compilation_cache):
  from hyperrecon_jax.train import spread
  del compilation_cache
  config = make_config(data_dir, num_steps=2, eval_every=2, checkpoint_every=2)
  config.losses = ("dc", "tv", "wavelet", "weight_l1")
  config.loss_scales = (1.0, 10.0, 10.0, 100.0)
  config.hparams.sampler = "faces"
  config.eval.samples = 8  # a report's design: grids stop at two hyperparameters
  state = train.train_and_evaluate(config, str(tmp_path))
  last = read_metrics(str(tmp_path))[-1]
  # Validation at the four vertices (each term alone) and the centroid.
  assert {k for k in last if k.startswith("val_psnr_") and k[9:] not in ("zf", "spread")} == {
      "val_psnr_1_0_0", "val_psnr_0_1_0", "val_psnr_0_0_1", "val_psnr_0_0_0",
      "val_psnr_0.25_0.333333_0.5"}
  want = spread.direction_spreads(train.build_model(config), host(state).params,
                                  config.losses)
  assert set(want) == {f"weight_spread_{n}" for n in config.losses}
  for key, value in want.items():
    np.testing.assert_allclose(last[key], value, rtol=1e-6)
    assert value > 0


def _steps_signalled_in(config, signalled_in, saving_signalled=None):
  """`loop._steps` of 3 counting "steps", a signal arriving during step ``signalled_in``.

  Or during the checkpoint save of step ``saving_signalled``.

  Returns:
    (a function that runs them, the steps checkpointed).
  """
  import types
  saved, received = [], []

  def train_step(state, batch, rng):
    del batch, rng
    if state + 1 == signalled_in:
      received.append(15)
    return state + 1, {}

  def save(state, step):
    saved.append(step)
    if step == saving_signalled:
      received.append(2)

  saver = types.SimpleNamespace(save=save, check_finite=lambda state, record=None, step=None: None)
  writer = types.SimpleNamespace(write=lambda step, record: None)
  return (lambda: loop_lib._steps(config, None, 0, 0, train_step, lambda: None, saver, writer,
                                  [], received, lambda stop: stop)), saved


def test_a_signal_in_the_last_step_leaves_the_run_finished(tmp_path, capsys, monkeypatch):
  # It raised Interrupted ("rerun the same command to resume", status 130) for
  # a run that a rerun finds complete, which stopped `train.py && evaluate.py`.
  config = make_config(str(tmp_path), num_steps=3, log_every=1000, eval_every=1000,
                       checkpoint_every=1000)
  monkeypatch.setattr(loop_lib, "_validation", lambda *args: {})  # the last step validates
  run, saved = _steps_signalled_in(config, 3)
  assert run() == 3 and saved == [3]
  assert ("note: signal 15 arrived during the last step (3); the run is complete and saved"
          in capsys.readouterr().err)
  run, saved = _steps_signalled_in(config, 2)
  with pytest.raises(train.Interrupted, match=r"stopped by signal 15 at step 2; a checkpoint "
                                              r"was saved — rerun the same command to resume"):
    run()
  assert saved == [2]
  # During the last step's save: the signal was dropped without a word, and
  # the command went on as if there had been none.
  run, saved = _steps_signalled_in(config, None, saving_signalled=3)
  assert run() == 3 and saved == [3]
  assert ("note: signal 2 arrived during the last step (3); the run is complete and saved"
          in capsys.readouterr().err)
