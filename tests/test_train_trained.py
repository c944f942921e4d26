"""Tests of what a reader of a trained run is told about its folders.

hyperrecon_jax.train.trained; loading runs is tested in tests/test_train_loop_workdir.py.
"""

import os

import configs
import pytest

from hyperrecon_jax import data
from hyperrecon_jax import train
from hyperrecon_jax.train import trained


def _config(name, manual_dir):
  config = configs.default()
  config.data.name = name
  with config.data.unlocked():
    config.data.manual_dir = str(manual_dir)
  return config


def test_a_volume_folder_that_is_still_there_or_a_dataset_without_one_passes(tmp_path):
  trained.check_data_folder(_config("nifti", tmp_path), "the run in /r")
  # mni152 is built from embedded data: its manual_dir names nothing it reads.
  trained.check_data_folder(_config("mni152", tmp_path / "gone"), "the run in /r")


@pytest.mark.parametrize("make, what", [
    (lambda path: None, "no longer exists"),
    (lambda path: path.write_text("x"), "is no folder"),
    (lambda path: os.symlink(path.parent / "nowhere", path),
     "is a symbolic link to .*nowhere, which is no folder"),
])
def test_a_volume_folder_that_is_gone_is_told_with_how_to_put_it_back(tmp_path, make, what):
  folder = tmp_path / "volumes"
  make(folder)
  with pytest.raises(data.DataError, match=(
      rf"the run in /r learned from the nifti folder {folder}, which {what}: put the folder "
      r"back there, or link it there \(ln -s NEW_PLACE")):
    trained.check_data_folder(_config("nifti", folder), "the run in /r")


def test_not_a_folder_says_whether_the_path_is_a_file_or_nothing(tmp_path):
  assert trained.not_a_folder(str(tmp_path)) is None
  (tmp_path / "f").write_text("x")
  assert "is a file" in trained.not_a_folder(str(tmp_path / "f"))
  assert "does not exist" in trained.not_a_folder(str(tmp_path / "g"))


def test_a_config_json_that_is_not_json_is_a_config_error(tmp_path):
  # Without a checkpoint the run's config.json is read: damaged, it is named
  # as a config error (the commands' one-line error), not a JSON traceback.
  (tmp_path / "config.json").write_text('{"model": ')
  with pytest.raises(train.ConfigError, match=r"config\.json is not a valid config"):
    trained.load_config(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="is .* the --workdir of a training run"):
    trained.load_config(str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("inside", ["eval", "checkpoints", os.path.join("checkpoints", "4")])
def test_a_folder_inside_a_run_names_the_run_to_give(tmp_path, inside):
  # `evaluate.py --workdir=RUN/checkpoints` (or RUN/eval, a step's folder) said
  # "RUN/checkpoints/checkpoints holds no checkpoint: train first".
  run = tmp_path / "run"
  (run / inside).mkdir(parents=True)
  (run / "config.json").write_text('{"task": {}, "data": {}, "model": {}}')
  with pytest.raises(FileNotFoundError, match=(
      rf"^{run / inside} is a folder inside the training run {run}, not a run: give "
      rf"--workdir={run}")) as info:
    trained.load_trained(str(run / inside))
  assert ("--step=4 of evaluate.py" in str(info.value)) == inside.endswith("4")
