"""The commands that need a model, as a user runs them: evaluate, segmenter, export.

One tiny run (the demo's ``:quick`` variant, 32×32, 4 steps) is trained for
the module, its XLA executables cached; the shipped 64×64 model is evaluated
without training. Each command runs in a subprocess.
"""

import glob
import json
import os
import signal
import subprocess
import sys

from cli_support import DEMO
from cli_support import REPO
from cli_support import assert_one_error_line
from cli_support import run
from cli_support import script
from cli_support import script_env
import loop_support
import pytest


@pytest.fixture(scope="module")
def env(tmp_path_factory, compilation_cache):
  return script_env(tmp_path_factory, compilation_cache)


def test_evaluating_a_missing_or_untrained_workdir_is_one_line(env, tmp_path):
  proc = run(env, "evaluate", f"--workdir={tmp_path / 'typo'}")
  assert_one_error_line(proc, "does not exist")
  assert not (tmp_path / "typo").exists()
  (tmp_path / "untrained").mkdir()
  proc = run(env, "evaluate", f"--workdir={tmp_path / 'untrained'}")
  assert_one_error_line(proc, "no checkpoint: train first")
  assert not os.listdir(tmp_path / "untrained")


def test_evaluate_needs_one_model_and_an_out_folder_for_a_pretrained_one(env, tmp_path):
  proc = run(env, "evaluate", "--pretrained=mni152_csmri8x_dc_tv")
  assert_one_error_line(proc, r"give --out=DIR")
  proc = run(env, "evaluate", f"--workdir={tmp_path}", "--pretrained=mni152_csmri8x_dc_tv",
             f"--out={tmp_path / 'r'}")
  assert_one_error_line(proc, "exactly one of --workdir and --pretrained")
  proc = run(env, "evaluate", "--pretrained=nope", f"--out={tmp_path / 'r'}")
  assert_one_error_line(proc, r"no pretrained model 'nope': the package ships \[")
  assert not (tmp_path / "r").exists()


def test_evaluate_a_pretrained_model_without_training(env, tmp_path):
  # On the test split the Unets stored with the model are reported, as stored.
  # (--grid is the shorthand of --config.eval.grid; --split's is run with a
  # segmenter below.)
  out = tmp_path / "report"
  proc = run(env, "evaluate", "--pretrained=mni152_csmri8x_dc_tv", f"--out={out}", "--grid=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "slices of test" in proc.stdout and "2 λ values" in proc.stdout
  assert ("Unet at λ = (0.25) (stored in the info.json of mni152_csmri8x_dc_tv): PSNR "
          "20.70 dB, SSIM 0.6035") in proc.stdout, proc.stdout
  with open(out / "lambda_grid.json") as f:
    result = json.load(f)
  assert result["pretrained"] == "mni152_csmri8x_dc_tv" and "workdir" not in result
  # On a folder of the user's volumes: every volume, and no stored Unets,
  # which were scored on the model's own test split.
  site = loop_support.write_site(tmp_path / "site", (11, 12))
  proc = run(env, "evaluate", "--pretrained=mni152_csmri8x_dc_tv", f"--out={tmp_path / 's'}",
             "--grid=2", f"--data={site}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (f"slices of every volume of {site} (2 volumes, nifti) (checkpoint step"
          in proc.stdout), proc.stdout
  assert "Unet at λ" not in proc.stdout
  # Each volume's PSNR, the input's and the model's at the best λ, lowest first.
  with open(tmp_path / "s" / "lambda_grid.json") as f:
    result = json.load(f)
  best = result["best"]["psnr"]["index"]
  rows = sorted((result["volume_mean"]["psnr"][k][best],
                 result["zero_filled"]["volume_mean"]["psnr"][k],
                 result["data"]["volume_names"][str(v)])
                for k, v in enumerate(result["volumes"]))
  printed = proc.stdout.split("lowest first:\n")[1].splitlines()[:2]
  assert printed == [f"  {name}: {zf:.2f} → {model:.2f}" for model, zf, name in rows]


# --- a trained run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
  home = tmp_path_factory.mktemp("demo")
  workdir = str(home / "run")
  # Given as ~/run: a shell leaves the ~ after `--workdir=` to the command.
  proc = run(dict(env, HOME=str(home)), "train", f"--config={DEMO}", "--workdir=~/run")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith(f"done: {workdir}")
  assert not os.path.exists(os.path.join(REPO, "~"))
  return workdir


def _files(workdir):
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        out[os.path.relpath(os.path.join(root, name), workdir)] = f.read()
  return out


def test_a_design_report_names_its_gallery_slice_by_volume_and_number(env, tmp_path):
  # The gallery's slice is a row of the scored slices; the line names the
  # volume and the slice number a viewer shows, as the unscored warnings do.
  site = loop_support.write_site(tmp_path / "site", (11, 12))
  proc = run(env, "evaluate", "--pretrained=mni152_csmri8x_dc_tv", f"--out={tmp_path / 's'}",
             "--samples=3", f"--data={site}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "s" / "lambda_grid.json") as f:
    result = json.load(f)
  row = result["gallery"]["slice"]
  volume, number = result["slices"]["volume"][row], result["slices"]["slice"][row]
  name = result["data"]["volume_names"][str(volume)]
  assert f"gallery of {name} slice {number}: " in proc.stdout, proc.stdout
  # The split's gallery is of the folder here: the line said "of the split".
  assert "gallery_split" in result
  assert "gallery of the folder (" in proc.stdout and "of the split" not in proc.stdout
  # The shipped model stopped at 9,701 of its 10,000 steps, as its info.json
  # says: it is what the package ships, not a run short of its training.
  assert "warning: the run is at step" not in proc.stderr


def test_evaluate_writes_the_report(env, trained, tmp_path):
  out = tmp_path / "report"
  proc = run(env, "evaluate", f"--workdir={trained}", f"--out={out}", "--config.eval.grid=3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "slices of test (checkpoint step 4), 3 λ values" in proc.stdout
  assert sorted(os.listdir(out)) == ["curves.png", "diverse.png",
                                     "lambda_grid.json", "range.png",
                                     "slices.png"]
  with open(out / "lambda_grid.json") as f:
    result = json.load(f)
  assert result["checkpoint_step"] == 4 and len(result["lambdas"]) == 3
  assert not os.path.exists(os.path.join(trained, "eval"))  # --out honoured
  # diverse.png is in every report: a grid's names its slice as a design's does.
  row = result["gallery"]["slice"]
  volume, number = result["slices"]["volume"][row], result["slices"]["slice"][row]
  assert f"gallery of volume {volume} slice {number}: " in proc.stdout, proc.stdout


def test_evaluate_scores_segmentation_dice_with_a_segmenter(env, trained, tmp_path):
  seg = tmp_path / "segmenter"
  # Its folders given under the home folder, ~ (which a shell leaves as it is
  # after `--flag=`): the commands read it as the home.
  home = dict(env, HOME=str(tmp_path))
  proc = run(home, "segmenter", f"--config={DEMO}", "--workdir=~/segmenter",
             "--config.segmenter.steps=2", "--config.segmenter.channels=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "validation Dice" in proc.stdout
  proc = run(env, "segmenter", f"--config={DEMO}", f"--workdir={seg}",
             "--config.segmenter.steps=2")
  assert_one_error_line(proc, "already holds a trained segmenter")
  out = tmp_path / "report"
  # The train split is scored as asked (both learned from it), and said to be.
  proc = run(home, "evaluate", f"--workdir={trained}", "--out=~/report", "--config.eval.grid=3",
             "--config.evals.lambda_set.segmenter=~/segmenter", "--split=train")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "segmentation Dice: zero-filled" in proc.stdout
  assert ("slices of train, the split the model learned from and so did the segmenter: not "
          "a held-out score") in proc.stdout
  with open(out / "lambda_grid.json") as f:
    result = json.load(f)
  assert len(result["mean"]["dice"]) == 3 and "ground_truth_dice" in result
  assert result["segmenter"] == str(seg)
  proc = run(env, "evaluate", f"--workdir={trained}", f"--out={tmp_path / 'r2'}",
             f"--config.evals.lambda_set.segmenter={tmp_path / 'nothing'}")
  assert_one_error_line(proc, "holds no trained segmenter")
  assert not (tmp_path / "r2").exists()


def test_a_segmenter_learns_a_labelled_folder_and_scores_a_run_on_it(env, tmp_path):
  import configs
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3), labels=(3, 2, 1))
  data = [f"--config.data.{k}={v}" for k, v in (("name", "nifti"), ("manual_dir", site))]
  seg = tmp_path / "segmenter"
  proc = run(env, "segmenter", f"--config={DEMO}", f"--workdir={seg}", *data,
             "--config.segmenter.steps=2", "--config.segmenter.channels=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "validation Dice (ground-truth slices, classes 1, 2, 3): " in proc.stdout
  with open(seg / "segmenter.json") as f:
    assert json.load(f)["num_classes"] == 4
  # A model of the same data (untrained: the scores need not be good) is
  # scored by Dice with it.
  config = configs.load("demo", "quick")
  config.data.update(name="nifti", manual_dir=site, data_dir=env["HYPERRECON_DATA_DIR"])
  workdir = loop_support.save_untrained(config, str(tmp_path / "run"))
  proc = run(env, "evaluate", f"--workdir={workdir}", f"--out={tmp_path / 'report'}",
             "--grid=2", f"--config.evals.lambda_set.segmenter={seg}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "segmentation Dice: zero-filled" in proc.stdout


def test_an_export_names_its_own_flags_in_its_errors(env, trained, tmp_path):
  folder = tmp_path / "models"
  proc = run(env, "export_pretrained", f"--workdir={trained}", "--name=mine",
             "--description=d", f"--folder={folder}", f"--baselines={tmp_path / 'none'}")
  assert_one_error_line(proc, r"--baselines=.*none: no such folder")
  proc = run(env, "export_pretrained", f"--workdir={trained}", "--name=mine",
             "--description=d", f"--folder={folder}", "--unfinished")
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = run(env, "export_pretrained", f"--workdir={trained}", "--name=mine",
             "--description=d", f"--folder={folder}")
  assert_one_error_line(proc, r"models/mine is a model already: delete it or choose another")


def test_sigterm_during_an_export_leaves_nothing_and_exits_143(env, trained, tmp_path):
  # SIGTERM's default ended the process on the spot, leaving the staged model
  # folder behind; now it unwinds as Ctrl-C does, with the shell's code 143.
  folder = tmp_path / "models"
  proc = subprocess.Popen(
      [sys.executable, script("export_pretrained"), f"--workdir={trained}", "--name=mine",
       "--description=d", f"--folder={folder}"], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, cwd=REPO)
  # Once the staging folder holds the weights, the export is scoring them.
  staged = str(folder / ".mine.export-*" / "mine" / "weights.msgpack")
  stderr = loop_support.signal_when(proc, lambda: glob.glob(staged), signal.SIGTERM)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == "interrupted", stderr[-3000:]
  assert not folder.exists()  # made by the export, and removed with what it staged


def test_a_rejected_rerun_leaves_the_finished_run_as_it_was(env, trained):
  before = _files(trained)
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={trained}",
             "--config.task.acceleration=4")
  assert_one_error_line(proc, r"task\.acceleration: 8\.0 in the workdir, 4\.0 now")
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={trained}",
             "--config.hparams.endpoint_prob=2")
  assert_one_error_line(proc, "endpoint_prob")
  proc = run(env, "train", f"--config={DEMO}", f"--workdir={trained}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "nothing to do" in proc.stderr
  assert _files(trained) == before
