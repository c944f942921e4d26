"""hyperrecon_jax.data.locations: where datasets live, and the folders a run records."""

import os

from hyperrecon_jax.data import locations


def test_the_data_folder_of_the_environment_is_absolute(monkeypatch, tmp_path):
  # A run records it in its config: a relative folder would build the
  # datasets again under every folder a later command starts in.
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv(locations.DATA_DIR_ENV, "datasets")
  assert locations.default_data_dir() == str(tmp_path / "datasets")
  monkeypatch.setenv(locations.DATA_DIR_ENV, "~/datasets")
  assert locations.default_data_dir() == str(tmp_path / "home" / "datasets")
  monkeypatch.delenv(locations.DATA_DIR_ENV)
  assert locations.default_data_dir() == str(
      tmp_path / "home" / ".cache" / "hyperrecon_jax" / "tensorflow_datasets")


def test_absolute_folder_keeps_an_unset_folder_unset(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert locations.absolute_folder("") == "" and locations.absolute_folder(None) is None
  assert locations.absolute_folder("scans/") == str(tmp_path / "scans")
  assert locations.absolute_folder("~/scans") == str(tmp_path / "home" / "scans")
  assert locations.absolute_folder(str(tmp_path / "a" / ".." / "b")) == str(tmp_path / "b")
  assert os.path.isabs(locations.absolute_folder("."))
