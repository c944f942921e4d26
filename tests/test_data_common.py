"""hyperrecon_jax.data.common: where datasets live, and the folders a run records."""

import os

from hyperrecon_jax.data import common


def test_the_data_folder_of_the_environment_is_absolute(monkeypatch, tmp_path):
  # A run records it in its config: a relative folder would build the
  # datasets again under every folder a later command starts in.
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv(common.DATA_DIR_ENV, "datasets")
  assert common.default_data_dir() == str(tmp_path / "datasets")
  monkeypatch.setenv(common.DATA_DIR_ENV, "~/datasets")
  assert common.default_data_dir() == str(tmp_path / "home" / "datasets")
  monkeypatch.delenv(common.DATA_DIR_ENV)
  assert common.default_data_dir() == str(
      tmp_path / "home" / ".cache" / "hyperrecon_jax" / "tensorflow_datasets")


def test_absolute_folder_keeps_an_unset_folder_unset(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert common.absolute_folder("") == "" and common.absolute_folder(None) is None
  assert common.absolute_folder("scans/") == str(tmp_path / "scans")
  assert common.absolute_folder("~/scans") == str(tmp_path / "home" / "scans")
  assert common.absolute_folder(str(tmp_path / "a" / ".." / "b")) == str(tmp_path / "b")
  assert os.path.isabs(common.absolute_folder("."))
