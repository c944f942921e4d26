"""experiments/summarize.py: what it refuses to put in a table, in this process.

`summarize.table` is what the command prints; its error messages are the
command's ``error:`` lines (`cli.user_errors`; tests/test_cli.py runs the
command once). A whole table of evaluated runs, and the reports it refuses to
compare, are in tests/test_report.py, beside the runs it reports.
"""

import os
import re
import sys

import pytest

from hyperrecon_jax import errors
from hyperrecon_jax import results

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import summarize  # noqa: E402


def test_a_report_changed_since_it_was_written_is_refused(tmp_path):
  # One digit changed by hand (best PSNR 18.79 → 19.79) was printed as measured.
  (tmp_path / "eval").mkdir(parents=True)
  text = results.to_json({"format": results.FORMAT, "mean": {"psnr": [18.79, 12.01]}})
  (tmp_path / "eval" / "lambda_grid.json").write_text(text.replace("18.79", "19.79"))
  with pytest.raises(errors.InputError, match=r"eval/lambda_grid\.json: its content differs "
                     r"from the digest it was written with \(content_sha256\): it was edited "
                     r"or damaged since; evaluate the run again"):
    summarize.table([str(tmp_path)])


@pytest.mark.parametrize("files, pattern", [
    (None, r"run: no such folder; give the workdirs of evaluated training runs"),
    (["config.json"], r"run has not been evaluated \(no eval/lambda_grid\.json\); evaluate a "
                      r"run first: experiments/evaluate\.py --workdir=.*run --samples=N"),
    (["notes.txt"], r"run is not a training run \(no eval/lambda_grid\.json\)"),
    (["config.json", "baselines.json"],
     r"run holds per-λ Unets \(baselines\.py\): summarize reads HyperRecon runs"),
    # It was told to evaluate the segmenter.
    (["segmenter.json", "segmenter.msgpack"],
     r"run holds a segmenter \(segmenter\.py\), not a training run: summarize compares "
     r"evaluated HyperRecon runs$"),
    (["config.json", "info.json"],
     r"run is an exported model \(export_pretrained\.py\), not a training run: evaluate it "
     r"with experiments/evaluate\.py --pretrained=.*run --samples=N --out=DIR"),
])
def test_it_says_what_a_folder_is_instead_of_a_report(tmp_path, files, pattern):
  # Each read "eval/lambda_grid.json: no report; run evaluate.py … first".
  run_dir = tmp_path / "run"
  if files is not None:
    run_dir.mkdir()
    for name in files:
      (run_dir / name).write_text("{}")
  with pytest.raises(errors.InputError, match=pattern):
    summarize.table([str(run_dir)])


def test_an_empty_entry_is_refused(tmp_path):
  # A trailing comma read as the current folder.
  with pytest.raises(errors.InputError, match=r"--workdirs=.*, has an empty entry \(a doubled "
                                              r"or trailing comma\)"):
    summarize.table([str(tmp_path), ""])
  with pytest.raises(errors.InputError, match=r"has an empty entry"):
    summarize.table([str(tmp_path), " "])  # "a, ,b" on the command line


def test_a_run_listed_twice_is_refused(tmp_path):
  with pytest.raises(errors.InputError, match=rf"--workdirs lists {tmp_path} twice"):
    summarize.table([str(tmp_path), f"{tmp_path}/"])


def test_the_same_run_through_a_link_is_refused(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "link").symlink_to(tmp_path / "run")
  with pytest.raises(errors.InputError, match=rf"--workdirs lists {tmp_path}/run twice"):
    summarize.table([str(tmp_path / "run"), str(tmp_path / "link")])


def _fake_rows(splits):
  """A stand-in for `summarize._row`: each workdir's row, its report of split ``splits[w]``."""
  def row(workdir):
    return f"| {workdir} |", {"loss terms": ("dc", "tv"), "split": splits[workdir],
                              "design": "8 points", "Unets": "none", "task": "csmri",
                              "data": "mni152"}
  return row


def test_a_report_unlike_the_others_is_refused_wherever_it_is_listed(tmp_path, monkeypatch):
  runs = [str(tmp_path / name) for name in ("a", "b", "c")]
  monkeypatch.setattr(summarize, "_row", _fake_rows(dict.fromkeys(runs, "test")))
  lines = summarize.table(runs).splitlines()
  assert lines[:2] == ["dc, tv · test split · a design of 8 points · Unets: none", ""]
  assert lines[-3:] == [f"| {w} |" for w in runs]
  # The middle one differs: the first and the last agree.
  monkeypatch.setattr(summarize, "_row", _fake_rows(
      {runs[0]: "test", runs[1]: "validation", runs[2]: "test"}))
  with pytest.raises(errors.InputError, match=rf"the reports differ in their split "
                                              rf"\({runs[0]}: test; {runs[1]}: validation; "
                                              rf"{runs[2]}: test\)"):
    summarize.table(runs)


def test_runs_that_differ_in_more_than_the_sampler_are_warned_about(tmp_path, monkeypatch,
                                                                    capsys):
  # A UHS run of another width and learning rate was tabled beside a DHS run
  # without a word: the rows read as UHS against DHS.
  import configs
  uhs, dhs = configs.load("demo_ao", "quick"), configs.load("demo_ao", "quick")
  dhs.sampling.method, dhs.sampling.top_b = "dhs", 2
  recipes = {"uhs": summarize._recipe(uhs), "dhs": summarize._recipe(dhs)}
  runs = [str(tmp_path / name) for name in recipes]

  def row(workdir):
    _, shared = _fake_rows(dict.fromkeys(runs, "test"))(workdir)
    return f"| {workdir} |", {**shared, "recipe": recipes[os.path.basename(workdir)]}
  monkeypatch.setattr(summarize, "_row", row)
  # The sampling method alone, and DHS's own settings: the table, no warning.
  assert summarize.table(runs).splitlines()[-2:] == [f"| {w} |" for w in runs]
  assert capsys.readouterr().err == ""
  uhs.model.hyper_dim, uhs.train.lr = 2 * dhs.model.hyper_dim, 10 * dhs.train.lr
  recipes["uhs"] = summarize._recipe(uhs)
  assert summarize.table(runs).splitlines()[-2:] == [f"| {w} |" for w in runs]
  err = capsys.readouterr().err
  assert err.startswith("warning: the runs differ in more than the columns")
  assert (f"model.hyper_dim ({runs[0]}: {uhs.model.hyper_dim}, {runs[1]}: "
          f"{dhs.model.hyper_dim}); train.lr ({runs[0]}: {uhs.train.lr!r}, {runs[1]}: "
          f"{dhs.train.lr!r})") in err
  assert err.count("\n") == 1


def test_a_report_folder_given_as_a_run_is_named_as_such(tmp_path):
  # results.md's Fig. 6 commands write reports with --out=W/ao3_uhs_eval: given
  # to summarize, such a folder was "not a training run", with the advice to run
  # evaluate.py --workdir=<that report folder>.
  report = tmp_path / "ao3_uhs_eval"
  report.mkdir()
  (report / "lambda_grid.json").write_text(results.to_json(
      {"format": results.FORMAT, "workdir": str(tmp_path / "ao3_uhs"),
       "mean": {"psnr": [18.79]}}))
  name = re.escape(str(report))
  with pytest.raises(errors.InputError, match=rf"^{name} is a report folder \(evaluate\.py "
                                              r"--out\), not a training run: summarize reads "
                                              r"a run's own report, <workdir>/eval"):
    summarize.table([str(report)])


def test_a_moved_run_is_told_the_evaluation_that_gives_its_report_back(tmp_path):
  # A colleague's copy of a run: the advice was `evaluate.py --workdir=RUN
  # --samples=N`, which drops the design's size and the Unets it was scored
  # with (a report without them differs from the other rows' in its Unets).
  run_dir = tmp_path / "copy"
  (run_dir / "eval").mkdir(parents=True)
  (run_dir / "config.json").write_text("{}")
  (run_dir / "eval" / "lambda_grid.json").write_text(results.to_json(
      {"format": results.FORMAT, "workdir": str(tmp_path / "original"),
       "mean": {"psnr": [18.79] * 6}, "coeffs": [[1.0, 0.0]] * 6, "pareto": {},
       "design": {"kind": "samples", "num": 6, "method": "sobol", "seed": 0},
       "baselines": {"workdir": str(tmp_path / "unets"), "checkpoint_step": 4}}))
  with pytest.raises(errors.InputError, match=rf"is the report of .*original, not of .*copy "
                     rf".*experiments/evaluate\.py --workdir=.*copy --samples=6 "
                     rf"--baselines={re.escape(str(tmp_path / 'unets'))}$"):
    summarize.table([str(run_dir)])
