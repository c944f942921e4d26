"""hyperrecon_jax.run_paths: readers write nothing inside a training run but its own report."""

import json
import os

import pytest

from hyperrecon_jax import run_paths


def _run_folder(path, **files):
  """A folder holding what `run_paths.is_run_folder` knows a run by, and ``files``."""
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps({"task": {}, "data": {}, "model": {}}))
  for name, text in files.items():
    (path / name).write_text(text)
  return path


def test_nothing_is_written_inside_a_run_but_its_own_report(tmp_path):
  run = _run_folder(tmp_path / "run")
  other = _run_folder(tmp_path / "other")
  (tmp_path / "tool").mkdir()
  (tmp_path / "tool" / "config.json").write_text('{"task": 1}')  # another tool's config
  _run_folder(tmp_path / "exported", **{"info.json": "{}"})  # an exported model
  os.symlink(run, tmp_path / "link")
  assert run_paths.run_holding(str(run / "eval_grid5")) == str(run)
  assert run_paths.run_holding(str(run / "eval" / "deep" / "x.nii.gz")) == str(run)
  assert run_paths.run_holding(str(tmp_path / "link" / "x.nii.gz")) == str(run)
  # The run's folder itself is no place inside it: a report there is refused
  # for what it holds (`figures.check_out`), a trainer's files.
  for outside in (run, tmp_path / "tool" / "r", tmp_path / "exported" / "r", tmp_path / "r"):
    assert run_paths.run_holding(str(outside)) is None
    run_paths.check_outside_runs(str(outside), "the report folder", "--out")
  # Its own report folder, of that run only, however the run is named.
  run_paths.check_outside_runs(str(run / "eval"), "the report folder", "--out",
                               report_of=str(tmp_path / "link"))
  cases = [
      (run / "eval_grid5", str(run), rf"lies inside the training run {run}, which readers "
       rf"never write into \(its next train.py would refuse the folder\): give --out outside "
       rf"the run \(or its own report folder {run}/eval\)$"),
      (run / "eval" / "sub", str(run), "lies inside the training run"),
      (run / "eval", str(other), rf"is the report folder of the training run {run}, not of "
       r"the model evaluated: give --out outside that run$"),
      (run / "eval", None, "is the report folder of the training run"),
  ]
  for path, report_of, message in cases:
    with pytest.raises(ValueError, match=rf"^the report folder {path} {message}"):
      run_paths.check_outside_runs(str(path), "the report folder", "--out", report_of=report_of)
  assert sorted(os.listdir(run)) == ["config.json"]
