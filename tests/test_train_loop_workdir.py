"""Tests of a finished workdir's protections: reruns that write nothing, the
trainer's lock, the config stored with the checkpoint. See loop_support.py."""

import json
import os
import re
import shutil
import socket

import jax
import loop_support
from loop_support import CHECKPOINT_STEPS
from loop_support import STEPS
from loop_support import assert_trees_close
from loop_support import host
from loop_support import make_config
from loop_support import read_metrics
from loop_support import snapshot
import pytest

from hyperrecon_jax import checkpoints
from hyperrecon_jax import checksums
from hyperrecon_jax import errors
from hyperrecon_jax import train
from hyperrecon_jax import workdir_lock
from hyperrecon_jax.data import split_record
from hyperrecon_jax.train import loop as loop_lib
from hyperrecon_jax.train import memory_checks
from hyperrecon_jax.train import state as state_lib

# XLA executables persist across the session's runs (see conftest.py).
pytestmark = pytest.mark.usefixtures("compilation_cache")




@pytest.fixture()
def finished_copy(run_a, tmp_path):
  """A copy of run A's finished workdir and a snapshot of its files."""
  workdir = str(tmp_path / "run_a_copy")
  shutil.copytree(run_a["workdir"], workdir)
  return workdir, snapshot(workdir)


def test_rerunning_a_finished_run_changes_nothing(run_a, data_dir,
                                                  finished_copy, capfd):
  workdir, before = finished_copy
  # Fields that may change between runs (lr) do not matter when no step is
  # left: nothing trains, so nothing is written, config.json included.
  state = train.train_and_evaluate(make_config(data_dir, lr=1e-4), workdir)
  assert "nothing to do" in capfd.readouterr().err
  assert int(state.step) == STEPS
  assert_trees_close(host(state.params), run_a["state"].params, rtol=0)
  assert snapshot(workdir) == before


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
  assert snapshot(workdir) == before


def test_a_second_trainer_is_refused_and_writes_nothing(data_dir,
                                                        finished_copy):
  workdir, before = finished_copy
  with workdir_lock.lock(workdir):
    with pytest.raises(workdir_lock.WorkdirBusyError, match=str(os.getpid())):
      train.train_and_evaluate(make_config(data_dir, num_steps=STEPS + 2),
                               workdir)
    after = snapshot(workdir)
    del after[workdir_lock.LOCK_FILE]  # ours
    assert after == before


def test_a_resume_whose_checkpoints_cannot_be_written_is_refused_before_any_work(
    data_dir, finished_copy, read_only_folder):
  workdir, before = finished_copy
  folder = checkpoints.checkpoint_dir(workdir)
  read_only_folder(folder)
  with pytest.raises(errors.InputError, match=rf"cannot write in the folder {re.escape(folder)} "
                                              r"\(Read-only file system\)"):
    train.train_and_evaluate(make_config(data_dir, num_steps=STEPS + 2), workdir)
  assert snapshot(workdir) == before


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


def test_loading_a_workdir_that_is_missing_empty_or_a_file_says_which(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"'.*missing' does not exist: give the --workdir"):
    train.load_trained(str(tmp_path / "missing"))
  (tmp_path / "file").write_text("")
  with pytest.raises(FileNotFoundError, match=r"'.*file' is a file: give the --workdir"):
    train.load_trained(str(tmp_path / "file"))
  with pytest.raises(FileNotFoundError, match=r"checkpoints holds no checkpoint: train first"):
    train.load_trained(str(tmp_path))
  # A trainer at work, its first checkpoint not written yet: not "train first".
  from hyperrecon_jax import workdir_lock
  with open(tmp_path / workdir_lock.LOCK_FILE, "w") as f:
    json.dump({"pid": os.getppid(), "host": socket.gethostname(), "started": "then"}, f)
  with pytest.raises(FileNotFoundError, match=rf"checkpoints holds no checkpoint yet: "
                                              rf"{re.escape(str(tmp_path))} is being trained "
                                              rf"by process {os.getppid()} on .*; wait for its "
                                              r"first checkpoint"):
    train.load_trained(str(tmp_path))
  os.remove(tmp_path / workdir_lock.LOCK_FILE)
  # An exported model (export_pretrained.py) is loaded with --pretrained: told
  # "train first", its user had nowhere to go.
  from hyperrecon_jax import pretrained
  exported = tmp_path / "exports" / "mine"
  shutil.copytree(os.path.join(pretrained.FOLDER, "mni152_csmri8x_dc_tv"), exported)
  with pytest.raises(FileNotFoundError, match=r"'.*mine' holds an exported model "
                                              r"\(export_pretrained\.py\), not a training run: "
                                              r"give it as --pretrained=.*mine"):
    train.load_trained(str(exported))


def test_a_loaded_run_builds_its_data_where_this_machine_keeps_datasets(run_a, tmp_path,
                                                                         monkeypatch):
  # Unset, the run's own setting; set, this machine's.
  monkeypatch.delenv("HYPERRECON_DATA_DIR", raising=False)
  with open(os.path.join(run_a["workdir"], "config.json")) as f:
    stored = json.load(f)["data"]["data_dir"]
  assert train.load_trained(run_a["workdir"])[0].data.data_dir == stored
  monkeypatch.setenv("HYPERRECON_DATA_DIR", str(tmp_path / "here"))
  assert train.load_trained(run_a["workdir"])[0].data.data_dir == str(tmp_path / "here")


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


def test_another_seed_in_existing_workdir_is_refused(data_dir, tmp_path):
  # Every random stream of a run derives from train.seed (hr.streams): a
  # resume under another seed would read other batches, λ and noise.
  workdir = tmp_path / "seeded"
  workdir.mkdir()
  (workdir / "config.json").write_text(make_config(data_dir).to_json())
  with pytest.raises(train.ConfigError,
                     match=re.escape("(train.seed: 0 in the workdir, 5 now)")):
    loop_lib.check_workdir(make_config(data_dir, seed=5), str(workdir))
  loop_lib.check_workdir(make_config(data_dir, seed=0, lr=1e-4), str(workdir))


# --- checkpoints without checksums, damaged checkpoints, refused runs ------------------


def test_evaluation_skips_a_step_without_checksums_and_the_trainer_verifies_it(
    data_dir, finished_copy, capfd):
  workdir, _ = finished_copy
  os.remove(os.path.join(workdir, "checkpoints", str(STEPS), checksums.CHECKSUMS))
  before = snapshot(workdir)
  assert train.load_trained(workdir)[3] == CHECKPOINT_STEPS[-2]
  assert f"warning: checkpoint {STEPS} was skipped" in capfd.readouterr().err
  assert snapshot(workdir) == before  # a reader writes nothing
  # The trainer (here with nothing left to train) verifies the step.
  train.train_and_evaluate(make_config(data_dir), workdir)
  assert "nothing to do" in capfd.readouterr().err
  assert checksums.verify(os.path.join(workdir, "checkpoints", str(STEPS)))
  assert train.load_trained(workdir)[3] == STEPS


def test_a_run_whose_checkpoints_were_all_damaged_starts_again_and_says_so(
    data_dir, finished_copy, capfd):
  workdir, _ = finished_copy
  metrics = os.path.join(workdir, "metrics.jsonl")
  with open(metrics) as f:
    old_metrics = f.read()
  # The earlier run's report scored weights that the new run replaces: left as
  # eval/, it read as this run's (summarize paired its numbers with the new
  # run's checkpoint of the same step).
  os.makedirs(os.path.join(workdir, "eval"))
  with open(os.path.join(workdir, "eval", "lambda_grid.json"), "w") as f:
    f.write("{}")
  for step in CHECKPOINT_STEPS:
    with open(os.path.join(workdir, "checkpoints", str(step), "_CHECKPOINT_METADATA"),
              "a") as f:
      f.write(" ")
  with pytest.raises(checkpoints.CheckpointError,
                     match="every checkpoint is damaged and was moved to"):
    train.train_and_evaluate(make_config(data_dir), workdir)
  assert checkpoints.quarantined(workdir) == [str(s) for s in CHECKPOINT_STEPS]
  capfd.readouterr()
  state = train.train_and_evaluate(make_config(data_dir, num_steps=2), workdir)
  err = capfd.readouterr().err
  assert re.search(r"warning: .* has no usable checkpoint: the damaged ones \(steps 2, 4, 6\) "
                   r"are in .*checkpoints\.damaged; training starts again from step 0", err), err
  assert "is kept: its metrics as metrics.jsonl.1.old" in err
  assert "its report in eval.1.old" in err
  assert not os.path.exists(os.path.join(workdir, "eval"))
  assert os.listdir(os.path.join(workdir, "eval.1.old")) == ["lambda_grid.json"]
  with open(metrics + ".1.old") as f:
    assert f.read() == old_metrics
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2]
  assert int(state.step) == 2


def test_a_run_refused_after_start_up_removes_only_a_folder_it_created(data_dir, tmp_path):
  # The missing data folder is found after the trainer took the lock, which
  # created the workdir.
  config = make_config(data_dir)
  config.data.name = "nifti"
  config.data.manual_dir = str(tmp_path / "missing")
  with pytest.raises(errors.Error, match="missing"):
    train.train_and_evaluate(config, str(tmp_path / "new" / "run"))
  assert sorted(os.listdir(tmp_path)) == []
  (tmp_path / "existing").mkdir()
  with pytest.raises(errors.Error, match="missing"):
    train.train_and_evaluate(config, str(tmp_path / "existing"))
  assert sorted(os.listdir(tmp_path)) == ["existing"]
  assert not os.listdir(tmp_path / "existing")


def test_a_resumed_run_writes_its_deleted_split_record_again(data_dir, tmp_path, capsys):
  folder = loop_support.write_site(tmp_path / "site", range(3))
  config = make_config(data_dir, num_steps=2, eval_every=2)
  config.data.update(name="nifti", manual_dir=folder)
  workdir = str(tmp_path / "run")
  path = os.path.join(workdir, split_record.FILE)
  train.train_and_evaluate(config, workdir)
  with open(path) as f:
    began = f.read()
  assert json.loads(began)["splits"]["train"]  # a record of a folder split by volume
  os.remove(path)
  capsys.readouterr()
  config.train.num_steps = 4
  train.train_and_evaluate(config, workdir)
  with open(path) as f:
    assert f.read() == began  # the folder is unchanged: the splits the run began with
  assert (f"note: {path} was missing; it is written with the splits the run goes on with "
          "from step 2") in capsys.readouterr().err


# --- refused before anything is written ------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused_with_its_files_untouched(data_dir, tmp_path):
  folder = tmp_path / "mine"
  folder.mkdir()
  # A user's project: a config.json and metrics.jsonl of another program.
  (folder / "config.json").write_text('{"epochs": 3}')
  (folder / "metrics.jsonl").write_text('{"loss": 1}\n')
  (folder / "notes.txt").write_text("mine")
  before = snapshot(str(folder))
  with pytest.raises(errors.InputError, match=r"holds notes\.txt, which is not a training run's"):
    train.train_and_evaluate(make_config(data_dir), str(folder))
  assert snapshot(str(folder)) == before
  # Without the other file, its config.json still says it is no run's.
  (folder / "notes.txt").unlink()
  before = snapshot(str(folder))
  with pytest.raises(train.ConfigError, match=r"config\.json is not the config of a run \(it "
                                              r"has no data, task, losses"):
    train.train_and_evaluate(make_config(data_dir), str(folder))
  assert snapshot(str(folder)) == before


def test_a_task_whose_mask_cannot_be_drawn_leaves_no_folder(data_dir, tmp_path):
  config = make_config(data_dir)
  config.task.acceleration = 1e9  # the calibration box alone samples more
  with pytest.raises(errors.InputError, match="calib"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert os.listdir(tmp_path) == []
  # The corrected command is not blocked by anything the refused one left.
  loop_lib.check_workdir(make_config(data_dir), str(tmp_path / "run"))


def test_memory_floor_counts_the_state_and_one_set_of_gradients(data_dir):
  config = make_config(data_dir)
  model = state_lib.build_model(config)
  state = state_lib.create_state(config, model, jax.random.key(0))
  leaves = jax.tree_util.tree_leaves
  # Every leaf of the real state is float32 or int32: 4 bytes per value. The
  # convolutions' inputs per 32×32 image, 4 channels (enc<l> at level l, dec0
  # at level 2, dec2 and the head at full size): enc0 32²·(2 + 4), enc1 16²·8,
  # enc2 8²·8, enc3 4²·8, dec0 8²·12, dec1 16²·12, dec2 32²·12, head 32²·4.
  kept = 1024 * 6 + 256 * 8 + 64 * 8 + 16 * 8 + 64 * 12 + 256 * 12 + 1024 * 12 + 1024 * 4
  assert kept == 29056
  want = 4 * (sum(x.size for x in leaves(state)) + sum(x.size for x in leaves(state.params))
              + 4 * kept)  # batch 4, float32
  assert state_lib.memory_floor(config, model) == want
  assert state_lib.memory_floor_parts(config, model) == (want - 4 * 4 * kept, 4 * 4 * kept)
  # Split over two devices, each keeps the activations of half the batch.
  assert state_lib.memory_floor(config, model, num_devices=2) == want - 4 * 2 * kept
  # DHS normalizing over its kept rows runs the whole batch without
  # gradients; only the top_b rows keep activations (a floor of the whole
  # batch refused runs that fit: 218 MiB against the 116 MiB XLA compiled).
  config.sampling.method, config.sampling.top_b = "dhs", 2
  config.sampling.normalize = "kept"
  assert state_lib.memory_floor(config, model) == want - 4 * 2 * kept
  config.sampling.normalize = "batch"  # one pass of the whole batch, with gradients
  assert state_lib.memory_floor(config, model) == want


@pytest.mark.parametrize("floor, pattern", [
    # This model at batch 4: 194 KiB of state and gradients, 454 KiB of kept
    # activations, the larger part: the batch is what to lower.
    (None, r"the parameters, gradients, optimizer state and kept activations of this model "
           r"alone take \d+ KiB, more than the 1 KiB of a 1 KiB test device; lower "
           r"config\.train\.batch_size \(now 4\): the activations its rows keep for the "
           r"backward pass take \d+ KiB"),
    # The model the larger part: the model is what to shrink.
    ((5000, 1000), r"alone take 6 KiB, more than the 1 KiB of a 1 KiB test device; use a "
                   r"smaller model \(config\.model\.channels, config\.model\.hyper_dim\)"),
    # The compiled step's own need (its temporaries too), checked before
    # config.json: at batch 100,000 of this model `memory_floor` was 10.8 GiB
    # and the step needed 29.6 GiB, and XLA's out-of-memory traceback came
    # after the run's files. Here the floor passes.
    ((0, 0), r"one training step needs [\d.]+ [KM]iB \(XLA's memory analysis of the "
             r"compiled step\), more than the 1 KiB of a 1 KiB test device; lower "
             r"config\.train\.batch_size \(now 4\)"),
])
def test_a_model_or_step_beyond_the_devices_memory_is_refused_before_any_work(
    data_dir, tmp_path, monkeypatch, floor, pattern):
  if floor is not None:
    monkeypatch.setattr(state_lib, "memory_floor_parts", lambda *args, **kwargs: floor)
  monkeypatch.setattr(memory_checks, "device_memory", lambda: (2**10, "a 1 KiB test device"))
  with pytest.raises(train.ConfigError, match=pattern):
    train.train_and_evaluate(make_config(data_dir), str(tmp_path / "run"))
  assert os.listdir(tmp_path) == []
