"""Tests of hyperrecon_jax.report: the evaluation of a workdir, written as one set.

The workdir is made without training: an initialized model saved as its
checkpoint, which is all `report.run` reads. The embedded dataset is built at
32×32 once for the module.
"""

import os
import re
import shutil
import subprocess
import sys
import warnings

import configs
import jax
import loop_support
import ml_collections
import numpy as np
import pytest

from hyperrecon_jax import data
from hyperrecon_jax import errors
from hyperrecon_jax import evaluate
from hyperrecon_jax import physics
from hyperrecon_jax import plots
from hyperrecon_jax import pretrained
from hyperrecon_jax import report
from hyperrecon_jax import results
from hyperrecon_jax import train
from hyperrecon_jax.train import baselines

plots_spread_map = plots.spread_map

pytestmark = pytest.mark.usefixtures("compilation_cache")
FILES = ["curves.png", "diverse.png", "lambda_grid.json", "range.png",
         "slices.png"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  config = configs.default()
  config.data.data_dir = str(tmp_path_factory.mktemp("tensorflow_datasets"))
  config.data.image_size = 32
  config.data.num_threads = 0
  config.model.channels = 4
  config.model.hyper_dim = 4
  config.model.strategy = "vmap"
  config.train.batch_size = 8
  config.eval.grid = 3
  config.eval.chunk = 8
  return config


@pytest.fixture(scope="module")
def workdir(config, tmp_path_factory):
  return loop_support.save_untrained(config, str(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def stack(config, tmp_path_factory):
  """Per-λ Unets at λ = 0 and 1 (untrained) for the same problem."""
  c = baselines.stack_config(config, [(0.0,), (1.0,)])
  return loop_support.save_untrained(c, str(tmp_path_factory.mktemp("stack")))


def _snapshot(folder):
  out = {}
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), "rb") as f:
      out[name] = f.read()
  return out


def test_run_writes_the_report_and_reports_progress(workdir, capfd):
  result = report.run(workdir)
  out = os.path.join(workdir, "eval")
  assert sorted(os.listdir(out)) == FILES
  assert result["checkpoint_step"] == 1 and result["split"] == "test"
  assert result["input_name"] == "zero-filled"  # the run is CS-MRI
  assert len(result["lambdas"]) == 3
  total = result["num_slices"] * 3
  assert f"evaluated {total:,}/{total:,} (slice, λ) pairs" in capfd.readouterr().err
  # Only the report is new in the workdir, and nothing is left beside it.
  assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json", "eval"]


def test_an_interrupted_report_leaves_the_previous_one_whole(workdir,
                                                             monkeypatch):
  report.run(workdir, progress=False)
  out = os.path.join(workdir, "eval")
  before = _snapshot(out)

  def interrupt(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(plots, "spread_map", interrupt)  # the last figure
  with pytest.raises(KeyboardInterrupt):
    report.run(workdir, overrides={"eval.grid": 4}, progress=False)
  assert _snapshot(out) == before
  assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json", "eval"]


@pytest.mark.parametrize("where", ["the workdir", "its parent", "a user's folder", "a file",
                                   "under a file"])
def test_a_folder_a_report_would_destroy_is_refused_before_any_work(
    workdir, tmp_path, where):
  """The report replaces its folder whole: only a new or empty folder, or an earlier report."""
  user = tmp_path / "mine"
  user.mkdir()
  (user / "notes.txt").write_text("keep me")
  (tmp_path / "file").write_text("keep me")
  out, message = {
      "the workdir": (workdir, r"holds checkpoints, config\.json.*which no report writes"),
      "its parent": (os.path.dirname(workdir), "which no report writes"),
      "a user's folder": (str(user), r"holds notes\.txt, which no report writes"),
      "a file": (str(tmp_path / "file"), "is a file; give a folder"),
      "under a file": (str(tmp_path / "file" / "eval"), "file is a file"),
  }[where]
  before = sorted(os.listdir(workdir)), sorted(os.listdir(tmp_path)), _snapshot(user)
  with pytest.raises(ValueError, match=message):
    report.run(workdir, out=out, progress=False)
  after = sorted(os.listdir(workdir)), sorted(os.listdir(tmp_path)), _snapshot(user)
  assert after == before and (tmp_path / "file").read_text() == "keep me"


def test_a_run_that_cannot_be_written_here_is_pointed_to_out(workdir, monkeypatch):
  # A colleague's run opened read-only: the refusal of its eval/ said only
  # "cannot write in the folder", not that --out takes the report elsewhere.
  import tempfile

  def refused(*args, **kwargs):
    raise PermissionError(13, "Permission denied")

  before = sorted(os.listdir(workdir))
  monkeypatch.setattr(tempfile, "mkstemp", refused)
  with pytest.raises(errors.InputError, match=r"cannot write in the folder .*Permission "
                     r"denied.*--out=DIR") as info:
    report.run(workdir, progress=False)
  assert "\n" not in str(info.value) and sorted(os.listdir(workdir)) == before


def test_a_report_inside_the_run_is_refused_and_the_run_stays_resumable(workdir):
  """A report folder beside the run's own (``R/eval_grid5``) made its next train.py refuse R."""
  from hyperrecon_jax import workdir as workdir_lib
  before = sorted(os.listdir(workdir))
  for out in ("eval_grid5", "checkpoints/r", "eval/sub"):
    with pytest.raises(errors.InputError, match=rf"^the report folder {workdir}/{out} lies "
                                                rf"inside the training run {workdir}, .*"
                                                rf"give --out outside the run"):
      report.run(workdir, out=os.path.join(workdir, out), progress=False)
  assert sorted(os.listdir(workdir)) == before
  workdir_lib.check_folder(workdir, "training run", workdir_lib.RUN_ENTRIES)


def test_a_moved_data_folder_is_named_as_the_one_the_model_learned_from(config, tmp_path):
  """A reader was told the dataset's first-download instructions ("ABIDE …")."""
  c = config.copy_and_resolve_references()
  c.data.name, c.data.manual_dir = "nifti", str(tmp_path / "volumes")
  run = loop_support.save_untrained(c, str(tmp_path / "run"))
  folder = tmp_path / "volumes"
  for make, what in [(lambda: None, "no longer exists"),
                     (lambda: folder.write_text("x"), "is no folder"),
                     (lambda: (folder.unlink(), folder.symlink_to(tmp_path / "gone")),
                      f"is a symbolic link to {tmp_path / 'gone'}, which is no folder")]:
    make()
    with pytest.raises(data.DataError, match=(
        rf"^the run in {run} learned from the nifti folder {folder}, which {what}: put the "
        rf"folder back there, or link it there \(ln -s NEW_PLACE {folder}\), to score or show "
        r"the model's splits$")):
      report.run(run, out=str(tmp_path / "r"), progress=False)
    assert not (tmp_path / "r").exists()
  # A new training run's missing folder keeps the dataset's instructions.
  with pytest.raises(data.DataError, match=r"^nifti: manual_dir .* is not a folder\. Put NIfTI"):
    data.volumes(c.data, "test")


def test_an_empty_folder_takes_the_report(workdir, tmp_path):
  report.run(workdir, out=str(tmp_path), progress=False)
  assert sorted(os.listdir(tmp_path)) == FILES


def test_a_link_given_as_the_folder_is_the_folder_it_names(workdir, tmp_path):
  # The link was replaced by the report (the folder it named kept the old
  # one) and a link to that folder was left beside it as a hidden `.old`.
  target = tmp_path.resolve() / "disk" / "eval"
  target.mkdir(parents=True)
  link = tmp_path / "results"
  link.symlink_to(target)
  report.run(workdir, out=str(link), progress=False)
  assert link.is_symlink() and os.readlink(link) == str(target)
  assert sorted(os.listdir(target)) == FILES
  assert sorted(os.listdir(tmp_path)) == ["disk", "results"]
  assert os.listdir(target.parent) == ["eval"]


def test_the_current_folder_or_one_above_it_is_refused(workdir, tmp_path, monkeypatch):
  # A report replaces its folder whole: --out=. left the shell in a removed folder.
  here = tmp_path.resolve() / "reports" / "empty"
  here.mkdir(parents=True)
  monkeypatch.chdir(here)
  with pytest.raises(ValueError, match=rf"^the report folder {re.escape(str(here))} is the "
                                       r"current folder: a report replaces its folder whole"):
    report.run(workdir, out=".", progress=False)
  with pytest.raises(ValueError, match=rf"^the report folder {re.escape(str(here.parent))} is "
                                       rf"a folder above the current one, {re.escape(str(here))}"):
    report.run(workdir, out="..", progress=False)
  assert os.listdir(here.parent) == ["empty"] and not os.listdir(here)


@pytest.mark.parametrize("field, value, message", [
    ("eval.grid", 0, "eval.grid must be an integer ≥ 2"),
    ("eval.chunk", -1, "eval.chunk must be an integer ≥ 1"),
    ("evals.figures.panel_lambdas", 0, "panel_lambdas must be an integer ≥ 1"),
    ("eval.split", "tset", "eval.split must be one of"),
    ("evals.dhs_replay.batches", 0, "batches must be an integer ≥ 1"),
    ("eval.gallery_size", 0, "eval.gallery_size must be an integer ≥ 1, got 0"),
    ("eval.gallery_tolerance_db", float("nan"), "gallery_tolerance_db must be a finite number"),
    ("eval.samples", 10**11, r"eval.samples=100,000,000,000: more than 1,000,000 λ"),
    ("eval.grid", 1_000_001, r"eval.grid=1,000,001 gives 1,000,001 λ, more than 1,000,000"),
    ("evals.nothing.x", 1, "nothing"),
    ("model.channels", 3, "not the model's"),
])
def test_bad_settings_fail_before_any_work(workdir, tmp_path, field, value, message):
  with pytest.raises(ValueError, match=message):
    report.run(workdir, out=str(tmp_path / "out"), overrides={field: value}, progress=False)
  assert not (tmp_path / "out").exists()


def test_a_file_given_as_the_workdir_is_named_as_such(tmp_path):
  # It said "cannot create the report folder <file>/eval: <file> is a file".
  (tmp_path / "run").write_text("x")
  with pytest.raises(ValueError, match=r"^'.*run' is a file: give the --workdir of a training "
                                       r"run \(its folder\)$"):
    report.run(str(tmp_path / "run"), progress=False)


def test_config_evals_chooses_the_evaluators(config, tmp_path):
  # Without split_gallery and dhs_replay: no gallery of the split; the
  # figures are still written, as one set.
  c = config.copy_and_resolve_references()
  del c.evals["split_gallery"]
  path = loop_support.save_untrained(c, str(tmp_path / "run"))
  result = report.run(path, progress=False)
  assert "gallery_split" not in result and "mean" in result
  assert sorted(os.listdir(os.path.join(path, "eval"))) == FILES
  # Without lambda_set nothing can run.
  del c.evals["lambda_set"]
  path = loop_support.save_untrained(c, str(tmp_path / "bare"))
  with pytest.raises(ValueError, match="must hold lambda_set"):
    report.run(path, progress=False)
  assert not os.path.exists(os.path.join(path, "eval"))


def test_the_hyperrecon_row_above_the_unets_is_at_their_own_lambdas(config, workdir, tmp_path,
                                                                     monkeypatch):
  # The report's grid (0, 0.5, 1) lacks a Unet's λ of 0.3: HyperRecon was shown
  # at 0.5 above the Unet of 0.3, two loss weightings in one column.
  stack_03 = loop_support.save_untrained(baselines.stack_config(config, [(0.0,), (0.3,)]),
                                         str(tmp_path / "stack"))
  seen = {}
  draw = plots.slice_panel

  def record(target, zf, recons, lams, path, *args, **kwargs):
    seen.update(recons=np.asarray(recons), lams=np.asarray(lams), **kwargs)
    return draw(target, zf, recons, lams, path, *args, **kwargs)

  monkeypatch.setattr(plots, "slice_panel", record)
  result = report.run(workdir, out=str(tmp_path / "report"),
                      overrides={"evals.baselines.workdir": stack_03}, progress=False)
  assert 0.3 not in np.asarray(result["lambdas"], np.float32)[:, 0]
  np.testing.assert_array_equal(seen["lams"], np.array([[0.0], [0.3]], np.float32))
  assert seen.get("baseline_lams") is None  # each column at one λ
  assert seen["baseline"].shape == seen["recons"].shape == (2, 32, 32)


def test_baselines_are_scored_on_the_same_slices_and_drawn(workdir, stack,
                                                           tmp_path, monkeypatch):
  out = str(tmp_path / "report")
  # Given relative to the current folder, as a shell user gives it: the
  # report, read later from elsewhere, names the folder itself.
  monkeypatch.chdir(os.path.dirname(stack))
  result = report.run(workdir, out=out,
                      overrides={"evals.baselines.workdir": os.path.basename(stack)},
                      progress=False)
  b = result["baselines"]
  assert b["lambdas"] == [[0.0], [1.0]] and b["checkpoint_step"] == 1
  assert len(b["per_slice"]["psnr"]) == result["num_slices"]
  # The stack is a checkpoint at step 1 of the default config's 100,000 steps:
  # scored as it is, but said to be unfinished (only checkpoint_step told it).
  assert b["num_steps"] == train.load_trained(stack)[0].train.num_steps == 100_000
  # So is the HyperRecon run itself, looked at while it trains (only
  # checkpoint_step told it).
  total = train.load_config(workdir).train.num_steps
  assert result["checkpoint_step"] < total
  assert result["warnings"] == [
      f"the run is at step {result['checkpoint_step']} of its config.train.num_steps="
      f"{total} (still training, or stopped): these are not the finished model's scores",
      f"the per-λ Unets of {stack} are at step 1 of their config.train.num_steps=100000 (an "
      "unfinished baselines.py run: rerun it to finish)"]
  # Independently: the λ = 1 Unet through the plain evaluator, same key.
  _, model, variables, _ = train.load_trained(stack)
  config = train.load_config(workdir)
  again = evaluate.evaluate_grid(
      model, variables, physics.make_operator(config.task, (32, 32)),
      data.batches(config.data, "test", batch_size=8, training=False),
      np.array([[1.0]], np.float32), key=jax.random.key(config.train.seed + 3))
  np.testing.assert_allclose(b["mean"]["psnr"][1], again["mean"]["psnr"][0], rtol=1e-6)
  assert sorted(os.listdir(out)) == FILES

  # The objective at each baseline λ: the Unet's validation terms are those
  # the baselines program measures (`validation_term_means` of the Unet
  # alone), and L(λ) = Σ c_k(λ) term_k / s_k, written out by hand.
  o = result["objective"]
  assert o["lambdas"] == [[0.0], [1.0]] and o["losses"] == list(config.losses)
  c_stack, _, _, _ = train.load_trained(stack)
  unets = baselines.validation_term_means(c_stack, model, variables, o["lambdas"])
  for i, (lam, unet) in enumerate(zip(o["lambdas"], unets)):
    for name, value in unet.items():
      # The same program on the same slices: float32 sums, rtol 1e-6.
      np.testing.assert_allclose(o["baselines"][i]["terms"][name], value, rtol=1e-6)
    for who in ("hyperrecon", "baselines"):
      t = o[who][i]["terms"]
      by_hand = ((1 - lam[0]) * t[config.losses[0]] / config.loss_scales[0]
                 + lam[0] * t[config.losses[1]] / config.loss_scales[1])
      np.testing.assert_allclose(o[who][i]["objective"], by_hand, rtol=1e-6)


def test_a_dhs_run_reports_the_lambdas_it_keeps(config, tmp_path):
  c = config.copy_and_resolve_references()
  c.sampling.method = "dhs"
  c.sampling.top_b = 2
  c.losses = ("dc", "tv")
  c.loss_scales = (1.0, 1.0)
  path = loop_support.save_untrained(c, str(tmp_path / "dhs"))
  result = report.run(path, overrides={"evals.dhs_replay.batches": 7}, progress=False)
  assert sorted(os.listdir(os.path.join(path, "eval"))) == sorted(FILES + ["dhs_lambdas.png"])
  dhs = result["dhs"]
  assert dhs["batches"] == 7
  assert len(dhs["sampled"]) == 7 * c.train.batch_size
  assert len(dhs["kept"]) == 7 * 2
  # Every kept λ is one of the sampled ones.
  assert set(map(tuple, dhs["kept"])) <= set(map(tuple, dhs["sampled"]))
  # A report on another folder replays DHS on the run's own training data,
  # the same batches: the folder has no training split.
  site = loop_support.write_site(tmp_path / "site", (11,))
  other = report.run(path, out=str(tmp_path / "site_report"), data=site,
                     overrides={"evals.dhs_replay.batches": 7}, progress=False)
  assert other["dhs"] == dhs and len(other["data"]["volume_names"]) == 1


def test_baselines_of_another_problem_are_refused(workdir, config, tmp_path):
  other = config.copy_and_resolve_references()
  other.task.acceleration = 4.0
  path = loop_support.save_untrained(baselines.stack_config(other, [(0.0,), (1.0,)]),
                         str(tmp_path / "stack4x"))
  with pytest.raises(ValueError, match="task.acceleration"):
    report.run(workdir, out=str(tmp_path / "out"),
               overrides={"evals.baselines.workdir": path}, progress=False)
  with pytest.raises(ValueError, match="not a run of per-λ baselines"):
    report.run(workdir, out=str(tmp_path / "out"),
               overrides={"evals.baselines.workdir": workdir}, progress=False)
  # Other loss scales: harmless at λ = 0 and 1 (one term each) and when
  # proportional; at a λ that mixes the terms the Unet minimized another loss.
  from hyperrecon_jax.evaluators import baselines as baselines_evaluator
  scales = np.asarray(config.loss_scales, np.float64)
  for lams, factors, refused in (([(0.0,), (1.0,)], (1.0, 3.0), False),
                                 ([(0.5,)], (2.0, 2.0), False),
                                 ([(0.0,), (0.5,)], (1.0, 3.0), True)):
    stack = baselines.stack_config(config, lams)
    stack.loss_scales = tuple(float(v) for v in scales * factors)
    folder = loop_support.save_untrained(stack, str(tmp_path / f"scales_{len(lams)}_{refused}"))
    if refused:
      with pytest.raises(ValueError, match=r"trained with loss_scales .*: the Unets at λ = "
                                           r"\(0\.5\), which mix the terms, minimized"):
        baselines_evaluator.load(folder, config)
    else:
      baselines_evaluator.load(folder, config)
  assert not (tmp_path / "out").exists()


def test_a_model_not_finite_at_some_lambda_gets_its_report_with_notes(workdir, config,
                                                                      tmp_path, monkeypatch):
  # A model whose output is NaN wherever the second coefficient is positive:
  # every slice left the means (NaN at λ = 0.5 and 1), and the report died in
  # the split's gallery after all the scoring ("no λ of this slice has a
  # finite PSNR"), or drew empty curves and a range bar reading below 0.
  from hyperrecon_jax import plots
  load_trained = train.load_trained

  def broken(path, step=None):
    c, model, variables, step = load_trained(path, step)
    kernel = variables["params"]["hypernetwork"]["dense0"]["kernel"]
    variables["params"]["hypernetwork"]["dense0"]["kernel"] = kernel.at[1].set(1e30)
    return c, model, variables, step

  monkeypatch.setattr(train, "load_trained", broken)
  drawn = {}
  monkeypatch.setattr(plots, "spread_map", lambda spread, path, **kw: drawn.update(
      spread=np.asarray(spread)) or plots_spread_map(spread, path, **kw))
  result = report.run(workdir, out=str(tmp_path / "out"), progress=False)
  assert result["best"]["psnr"] is None and result["mean"]["psnr"] == [None] * 3
  assert result["notes"] == [
      "no gallery of the split: no λ has a mean PSNR (every slice's PSNR is not finite at "
      "some λ; see 'unscored')",
      "no curves.png: no λ has a mean PSNR (every slice's PSNR is not finite at some λ; see "
      "'unscored')"]
  written = sorted(os.listdir(tmp_path / "out"))
  assert "curves.png" not in written and "lambda_grid.json" in written
  stored = results.from_json((tmp_path / "out" / "lambda_grid.json").read_text())
  assert stored["notes"] == result["notes"]  # the report's file, not only the return value
  # evaluate.py's warnings: the first says why, not "e.g. a constant slice".
  n = result["num_slices"]
  lines = report.unscored_lines(result)
  assert lines[0] == (f"the model's reconstructions are not finite (NaN, ±inf, or too large "
                      f"for float32) on {n} of {n} slices at some λ: it diverged or overflows "
                      "on these inputs, and their scores are left out")
  assert lines[1].startswith(f"{n} slice(s) left out of psnr (not finite at some λ or for the "
                             "input, e.g. a constant ground truth slice): volume ")
  # The shown slice is finite at λ = 0: its gallery is that one λ.
  assert "diverse.png" in written and result["gallery"]["indices"] == [0]
  # The range over the finite λ alone: one, so 0 everywhere, not NaN.
  assert "range.png" in written and np.array_equal(drawn["spread"], np.zeros_like(
      drawn["spread"]))


def test_slices_left_out_for_their_input_alone_are_not_blamed_on_the_model():
  # A constant slice (volume 3, slice 7): its HFEN is not finite, its PSNR is.
  result = {"per_slice": {"psnr": [[20.0, 21.0], [30.0, 31.0]]},
            "unscored": {"hfen": [[3, 7]]}}
  assert report.unscored_lines(result) == [
      "1 slice(s) left out of hfen (not finite at some λ or for the input, e.g. a constant "
      "ground truth slice): volume 3 slice 7"]
  result["per_slice"]["psnr"][1][0] = None
  assert report.unscored_lines(result)[0].startswith(
      "the model's reconstructions are not finite (NaN, ±inf, or too large for float32) on "
      "1 of 2 slices at some λ")


@pytest.mark.parametrize("count, tail", [
    (5, ""),  # as many as are named: nothing more to count
    (7, " and 2 more"),
])
def test_slices_left_out_are_named_up_to_five_and_the_rest_counted(count, tail):
  result = {"per_slice": {"psnr": [[20.0]] * 10},
            "unscored": {"hfen": [[v, v + 10] for v in range(count)]}}
  assert report.unscored_lines(result) == [
      f"{count} slice(s) left out of hfen (not finite at some λ or for the input, e.g. a "
      "constant ground truth slice): volume 0 slice 10, volume 1 slice 11, volume 2 slice "
      f"12, volume 3 slice 13, volume 4 slice 14{tail}"]


def test_a_report_on_a_full_disk_names_its_folder_and_keeps_the_earlier_one(workdir, tmp_path,
                                                                           monkeypatch):
  # A figure's write on a full disk raised "[Errno 28] No space left on
  # device" alone (PIL's write names no file).
  import errno

  from hyperrecon_jax import plots
  out = tmp_path / "out"
  out.mkdir()
  (out / "lambda_grid.json").write_text("earlier")

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(plots, "spread_map", full)
  with pytest.raises(OSError) as info:
    report.run(workdir, out=str(out), progress=False)
  assert info.value.errno == errno.ENOSPC and info.value.filename == str(out)
  assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == ["lambda_grid.json"]
  assert (out / "lambda_grid.json").read_text() == "earlier"


def test_baselines_that_are_a_file_or_a_segmenter_are_named(workdir, tmp_path):
  (tmp_path / "file").write_text("x")
  (tmp_path / "seg").mkdir()
  (tmp_path / "seg" / "segmenter.json").write_text("{}")
  for path, message in ((tmp_path / "file", r"baselines\.workdir=.*file: is a file"),
                        (tmp_path / "seg", r"holds a segmenter, not per-λ Unets")):
    with pytest.raises(ValueError, match=message):
      report.run(workdir, out=str(tmp_path / "out"),
                 overrides={"evals.baselines.workdir": str(path)}, progress=False)
  with pytest.raises(FileNotFoundError, match=r"holds a segmenter \(experiments/segmenter\.py\), "
                                              r"not a training run: evaluate\.py takes it as "
                                              r"--config\.evals\.lambda_set\.segmenter, "
                                              r"explore\.py as --segmenter"):
    report.run(str(tmp_path / "seg"), out=str(tmp_path / "out"), progress=False)
  assert not (tmp_path / "out").exists()


def test_a_segmenter_of_other_images_is_refused_before_the_data_checks(workdir, config,
                                                                      tmp_path, monkeypatch):
  # The split and slice checks read the dataset, and build it when the folder
  # changed (label files renumbered since the segmenter learned them): a
  # segmenter that cannot label the data is refused before them.
  import json

  from hyperrecon_jax import segmentation
  from hyperrecon_jax import segmenter_files
  from hyperrecon_jax.data import split_record
  module = segmentation.Segmenter(num_classes=4, channels=4)
  variables = module.init(jax.random.key(0), np.zeros((1, 64, 64), np.float32))
  other = json.loads(config.data.to_json()) | {"image_size": 64}
  segmenter_files.save(segmentation.Trained(module, variables, {
      "num_classes": 4, "channels": 4, "data": other}), str(tmp_path / "seg"))

  def refuse_the_data_checks(*args, **kwargs):
    raise AssertionError("the data checks ran before the segmenter's")

  monkeypatch.setattr(split_record, "check_unseen", refuse_the_data_checks)
  with pytest.raises(ValueError, match=r"the segmenter was trained on other images than .*: "
                                       r"data\.image_size: 64 vs 32"):
    report.run(workdir, out=str(tmp_path / "out"), progress=False,
               overrides={"evals.lambda_set.segmenter": str(tmp_path / "seg")})
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("step, num_steps, unfinished", [
    (8, 12, True), (12, 12, False),
    # Resumed with a smaller --config.train.num_steps: trained past it, finished.
    (12, 10, False)])
def test_only_a_stack_short_of_its_steps_is_warned_about(step, num_steps, unfinished):
  from hyperrecon_jax.evaluators import baselines as baselines_evaluator
  got = baselines_evaluator.unfinished("runs/unets", step, num_steps)
  assert got == (f"the per-λ Unets of runs/unets are at step {step} of their "
                 f"config.train.num_steps={num_steps} (an unfinished baselines.py run: rerun "
                 "it to finish)" if unfinished else None)


def test_a_stack_of_one_unet_is_reported_as_the_plain_unet_it_is(config, tmp_path):
  # baselines.py --lambdas=0.3 trains one Unet; its report is that Unet's at
  # λ = 0.3, as for train.py's plain Unet (it was refused as a stack).
  path = loop_support.save_untrained(baselines.stack_config(config, [(0.3,)]),
                                     str(tmp_path / "one"))
  result = report.run(path, out=str(tmp_path / "out"), progress=False)
  np.testing.assert_allclose(result["lambdas"], [[0.3]], rtol=1e-7)
  # Independently: the stack itself (its one Unet answers every λ) on the
  # report's slices and key; the same float32 program, rtol 1e-6.
  stack_config, model, variables, _ = train.load_trained(path)
  again = evaluate.evaluate_grid(
      model, variables, physics.make_operator(stack_config.task, (32, 32)),
      data.batches(stack_config.data, "test", batch_size=8, training=False),
      np.array([[0.3]], np.float32), key=jax.random.key(stack_config.train.seed + 3))
  for m in ("psnr", "ssim"):
    np.testing.assert_allclose(result["mean"][m], again["mean"][m], rtol=1e-6)
  plain, unet, one = train.unstack(stack_config, variables)
  assert tuple(plain.hparams.fixed) == (0.3,) and not plain.hparams.baselines
  assert type(unet).__name__ == "Unet" and train.describe_model(plain).startswith("a plain Unet")
  assert jax.tree_util.tree_structure(one) == jax.tree_util.tree_structure(
      jax.eval_shape(lambda: train.create_state(plain, unet, jax.random.key(0)).variables()))
  with pytest.raises(IndexError, match="the stack has 1 Unets, no Unet 1"):
    train.unstack(stack_config, variables, 1)


def test_a_stack_of_unets_is_no_model_to_report_on_or_to_ship(stack, tmp_path):
  # Its Unets would answer the report's λ with the nearest member's image.
  with pytest.raises(ValueError, match=r"is a stack of 2 per-λ Unets .*: score it beside a "
                                       r"HyperRecon model \(evaluate\.py --workdir=HYPER "
                                       r"--baselines="):
    report.run(stack, out=str(tmp_path / "out"), progress=False)
  with pytest.raises(ValueError, match=r"is a stack of 2 per-λ Unets .*: a shipped model is"):
    pretrained.export(stack, "stack", description="x", folder=str(tmp_path / "models"))
  assert not (tmp_path / "out").exists() and not (tmp_path / "models" / "stack").exists()


K4_FILES = ["diverse.png", "lambda_grid.json", "pareto.png", "range.png", "slices.png"]


@pytest.fixture(scope="module")
def config_k4(config):
  c = config.copy_and_resolve_references()
  # The weight term not last: every section lists the terms in this order.
  c.losses = ("dc", "weight_l1", "tv", "wavelet")
  c.loss_scales = (1.0, 4.0, 1.0, 2.0)
  c.eval.samples = 12
  return c


def test_a_design_over_four_terms_reports_the_pareto_set_hypervolume_and_gallery(
    config_k4, tmp_path, capsys, monkeypatch):
  from hyperrecon_jax import hparams
  from hyperrecon_jax import losses
  from hyperrecon_jax import models
  from hyperrecon_jax import pareto
  path = loop_support.save_untrained(config_k4, str(tmp_path / "run"))
  rays = hparams.lambdas_from_coefficients(hparams.das_dennis(1, 4))  # the 4 vertices
  b_config = baselines.stack_config(config_k4, [tuple(map(float, r)) for r in rays])
  stack_path = loop_support.save_untrained(b_config, str(tmp_path / "stack"))
  # A grid asked for replaces the model's design (eval.samples: 12), and is
  # refused for four terms instead of dropped; a grid and a design together too.
  with pytest.raises(ValueError, match="grids stop at two.*--samples=N"):
    report.run(path, overrides={"eval.grid": 3}, progress=False)
  with pytest.raises(ValueError, match=r"a grid \(config\.eval\.grid=3, --grid\) and a design "
                                       r"\(config\.eval\.samples=5, --samples\) both choose"):
    report.run(path, overrides={"eval.samples": 5, "eval.grid": 3}, progress=False)
  monkeypatch.setenv("HOME", str(tmp_path))  # the Unets' folder given as ~/stack
  result = report.run(path, overrides={"evals.baselines.workdir": "~/stack"},
                      progress=False)  # eval.samples: 12
  assert result["baselines"]["workdir"] == stack_path
  assert sorted(os.listdir(os.path.join(path, "eval"))) == K4_FILES
  assert result["design"]["kind"] == "samples" and len(result["lambdas"]) == 12
  coeffs = np.asarray(result["coeffs"])
  np.testing.assert_allclose(coeffs[:4], np.eye(4), atol=1e-6)  # the vertices come first
  names = list(config_k4.losses)
  terms = result["loss_terms"]
  assert terms["names"] == names == result["baselines"]["loss_terms"]["names"]
  # weight-ℓ1 of each λ: the ℓ1 norm of the weights the hypernetwork generates.
  _, model, variables, _ = train.load_trained(path)
  direct = losses.weight_l1(model.apply(variables, coeffs.astype(np.float32),
                                        method=models.HyperUnet.generate))
  np.testing.assert_allclose(terms["mean"]["weight_l1"], direct, rtol=1e-5)
  # The Pareto set and the hypervolume ratio recomputed from the stored points.
  points = np.stack([terms["mean"][n] for n in names], 1)
  b_points = np.stack([result["baselines"]["loss_terms"]["mean"][n] for n in names], 1)
  p = result["pareto"]
  assert p["terms"] == names
  assert p["front"] == list(np.flatnonzero(pareto.non_dominated(points)))
  assert p["hypervolume"] == pareto.hypervolume_ratio(points, b_points)
  # Best λ of each slice, and the gallery of the shown slice among its good λ.
  assert set(result["best_per_slice"]) == set(result["metrics"])
  psnr = np.array(result["per_slice"]["psnr"], np.float64)
  np.testing.assert_array_equal(result["best_per_slice"]["psnr"], psnr.argmax(1))
  g = result["gallery"]
  row = psnr[g["slice"]]
  assert g["indices"][0] == int(np.argmax(row))
  assert all(row[i] >= row.max() - config_k4.eval.gallery_tolerance_db for i in g["indices"])
  assert len(set(g["indices"])) == len(g["indices"]) <= config_k4.eval.gallery_size

  # summarize.py's weight spreads are the scored checkpoint's, not a newer one's.
  from hyperrecon_jax import checkpoints
  from hyperrecon_jax.train import spread
  mngr = checkpoints.manager(path)
  checkpoints.save(mngr, 2, train.create_state(config_k4, model, jax.random.key(5)), {},
                   config_k4)
  mngr.close()
  proc = subprocess.run(
      [sys.executable, os.path.join(loop_support.REPO, "experiments", "summarize.py"),
       f"--workdirs={path}"], env=loop_support.child_env(tmp_path / "cache"),
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  row = [cell.strip() for cell in proc.stdout.splitlines()[-1].split("|")]
  spreads = spread.direction_spreads(model, variables["params"], tuple(names))
  assert row[4] == "1", row  # the report's step, where the newest is 2
  assert row[10] == " / ".join(f"{spreads[f'weight_spread_{n}']:.3f}" for n in names), row
  assert row[2] == f"{config_k4.hparams.sampler}, {config_k4.sampling.method.upper()}", row
  assert proc.stdout.splitlines()[0] == (
      f"{', '.join(names)} · test split · a design of 12 points · Unets: "
      f"{os.path.realpath(stack_path)} (step 1)")

  # The command's table in this process (the run above was its own process).
  sys.path.insert(0, os.path.join(loop_support.REPO, "experiments"))
  import summarize

  def table(*workdirs):
    with warnings.catch_warnings():
      warnings.simplefilter("error", RuntimeWarning)  # NumPy's "All-NaN slice", say
      return summarize.table([str(w) for w in workdirs])

  def edited(name, change):
    """A copy of the run whose report ``change`` edits (it stays the copy's own)."""
    copy = tmp_path / name
    shutil.copytree(path, copy)
    report_path = copy / "eval" / "lambda_grid.json"
    stored = results.from_json(report_path.read_text())
    stored["workdir"] = os.path.realpath(copy)
    change(stored)
    report_path.write_text(results.to_json(stored))  # with the digest of what it holds now
    return copy

  # Another run's report in a run's eval/ (evaluate.py --out=B/eval for run A)
  # printed A's numbers in B's row.
  foreign = tmp_path / "foreign"
  shutil.copytree(path, foreign)
  with pytest.raises(errors.InputError, match=rf".*foreign/eval/lambda_grid\.json is the "
                     rf"report of {re.escape(str(path))}, not of .*foreign"):
    table(foreign)
  # Reports of another split sat beside each other as two runs.
  other_split = edited("other_split", lambda r: r.update(split="validation"))
  with pytest.raises(errors.InputError,
                     match=r"the reports differ in their split \(.*: test; .*: validation\)"):
    table(path, other_split)
  # Reports of one stack of Unets at two checkpoints (trained on between the
  # two reports) sat in one table under one header.
  later_unets = edited("later_unets", lambda r: r["baselines"].update(checkpoint_step=30))
  with pytest.raises(errors.InputError, match=r"the reports differ in their Unets \(.*: .* "
                                              r"\(step 1\); .*: .* \(step 30\)\)"):
    table(path, later_unets)
  def refit(name, change):
    """A copy of the run without Unets, its checkpoint of the config ``change`` edits."""
    copy = edited(name, lambda r: r.pop("baselines"))
    shutil.rmtree(copy / "checkpoints")
    changed = ml_collections.ConfigDict(config_k4.to_dict())
    change(changed)
    mngr = checkpoints.manager(str(copy))
    checkpoints.save(mngr, 1, train.create_state(changed, model, jax.random.key(0)), {},
                     changed)
    mngr.close()
    return copy

  # Runs of another acceleration (or task), without Unets to refuse them, sat
  # in one table: the zero-filled inputs alone differ by dBs.
  without_unets = edited("without_unets", lambda r: r.pop("baselines"))
  with pytest.raises(errors.InputError, match=r"the reports differ in their task \(.*: "
                                              r"acceleration=8\.0, .*; .*: acceleration=4\.0, "):
    table(without_unets, refit("other_task", lambda c: c.task.update(acceleration=4.0)))
  # So did runs of other slices or intensities of one dataset: every field
  # its build reads decides them.
  percentile = float(config_k4.data.percentile)
  with pytest.raises(errors.InputError, match=rf"the reports differ in their data \(.*: "
                     rf".*percentile={percentile}; .*: .*percentile={percentile - 0.5}\)"):
    table(without_unets,
          refit("other_data", lambda c: c.data.update(percentile=percentile - 0.5)))
  # A field the task's operator does not read (denoising's σ, for CS-MRI) makes
  # no other problem: such runs are compared.
  table(without_unets, refit("other_sigma", lambda c: c.task.update(sigma=c.task.sigma * 2)))
  # Every vertex beside its Unet, found by loss weighting: λ = (1, 0.5, 0.3)
  # weights the first term alone, as (1, 0, 0) does, and lost its Unet.
  assert row[9].count("(") == 4, row
  same_weights = edited("same_weights",
                        lambda r: r["baselines"]["lambdas"].__setitem__(0, [1.0, 0.5, 0.3]))
  text = table(same_weights)
  assert text.splitlines()[-1].split("|")[9] == row[9].join("  "), text
  # A NaN mean (null in the strict JSON of a report) is said, not only printed as nan.
  nan = edited("nan", lambda r: r["mean"]["psnr"].__setitem__(1, None))
  capsys.readouterr()
  table(nan)
  assert "the mean PSNR is not a number at 1 of 12 λ" in capsys.readouterr().err
  # None at every λ: the row says n/a, without NumPy's "All-NaN slice" lines.
  all_nan = edited("all_nan", lambda r: r["mean"].__setitem__("psnr", [None] * 12))
  text = table(all_nan)
  assert [c.strip() for c in text.splitlines()[-1].split("|")][7:9] == ["n/a", "n/a"]


def test_the_split_gallery_compares_the_same_slices_at_its_good_lambdas(workdir, config,
                                                                       tmp_path):
  from hyperrecon_jax import gallery
  from hyperrecon_jax import grid
  from hyperrecon_jax import hparams
  from hyperrecon_jax import streams
  from hyperrecon_jax.evaluators import split_gallery
  result = report.run(workdir, out=str(tmp_path / "out"), progress=False)
  g = result["gallery_split"]
  assert g["slices"] == sorted(set(g["slices"])) and len(g["slices"]) <= split_gallery.NUM_SLICES
  mean = np.asarray(result["mean"]["psnr"], np.float64)
  assert g["indices"][0] == int(np.argmax(mean))
  # Recomputed independently: the slices' reconstructions at every λ, then
  # farthest-point sampling among the λ within the tolerance of the best mean.
  _, model, variables, _ = train.load_trained(workdir)
  images, volumes, slices = split_gallery.slices_of(config, "test", g["slices"])
  operator = physics.make_operator(config.task, images.shape[1:])
  zf = evaluate.measure_slices(operator, images, evaluate.slice_keys(
      streams.key(config, "evaluation"), volumes, slices))
  lam = np.asarray(result["lambdas"], np.float32)
  recons = np.swapaxes(np.asarray(grid.reconstruct_grid(
      model, variables, zf, hparams.coefficients(lam), chunk=8)), 0, 1)
  want = gallery.diverse(recons, mean, config.eval.gallery_size,
                         tolerance_db=config.eval.gallery_tolerance_db)
  assert g["indices"] == list(want.indices)



def test_another_folder_is_scored_whole_as_the_model_slices_its_data(workdir, config,
                                                                    tmp_path):
  from skimage.metrics import peak_signal_noise_ratio

  from hyperrecon_jax.data import nifti
  from hyperrecon_jax.data import slicing
  # Two volumes: too few for a training folder's three splits, enough to score.
  site = loop_support.write_site(tmp_path / "site", (11, 12))
  out = str(tmp_path / "out")
  result = report.run(workdir, out=out, data=site, progress=False)
  assert result["data"] == {"dataset": "nifti", "folder": site,
                            "volume_names": {"0": "sub-11.nii.gz", "1": "sub-12.nii.gz"},
                            "without_slices": [],
                            "min_foreground": config.data.min_foreground}
  assert result["split"] == "test" and sorted(os.listdir(out)) == FILES
  # Every slice of both volumes that the model's slicing settings keep, once
  # each, in file order: read and cut here with the settings of the model's
  # config (its image size, axis, intensity percentile, foreground threshold).
  d = config.data
  expected = []
  for v, name in enumerate(sorted(os.listdir(site))):
    image, _, spacing = nifti.read_volume(site, name, None, d.percentile)
    expected += [(v, s.index, s.image) for s in slicing.volume_slices(
        image, axis=d.axis, size=d.image_size, min_foreground=d.min_foreground,
        spacing=spacing)]
  assert {v for v, _, _ in expected} == {0, 1}
  assert list(zip(result["slices"]["volume"], result["slices"]["slice"])) == [
      (v, s) for v, s, _ in expected]
  # The zero-filled input's PSNR of each slice, from NumPy's FFT through the
  # model's sampling mask and scikit-image: float32 against float64 FFTs
  # differ by ~1e-7 of the error's energy, ~1e-6 dB.
  mask = np.fft.ifftshift(np.asarray(physics.make_operator(config.task, (32, 32)).mask))
  for i, (_, _, image) in enumerate(expected):
    zf = np.abs(np.fft.ifft2(mask * np.fft.fft2(image, norm="ortho"), norm="ortho"))
    np.testing.assert_allclose(
        result["zero_filled"]["per_slice"]["psnr"][i],
        peak_signal_noise_ratio(image.astype(np.float64), zf, data_range=1.0), atol=1e-4)


def test_another_folder_is_refused_when_it_cannot_be_scored_whole(workdir, tmp_path):
  site = loop_support.write_site(tmp_path / "site", (11,))
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=r"--data=.* is scored whole, as the test split .* "
                                       r"config\.eval\.split='validation' does not apply"):
    report.run(workdir, out=str(out), data=site, overrides={"eval.split": "validation"},
               progress=False)
  with pytest.raises(ValueError, match=r"Dice is scored on the data the segmenter was "
                                       r"trained for, not on another folder"):
    report.run(workdir, out=str(out), data=site, progress=False,
               overrides={"evals.lambda_set.segmenter": str(tmp_path)})
  (tmp_path / "mixed").mkdir()
  (tmp_path / "mixed" / "a.h5").write_bytes(b"")
  (tmp_path / "mixed" / "b.nii").write_bytes(b"")
  (tmp_path / "knee").mkdir()
  (tmp_path / "knee" / "a.h5").write_bytes(b"")
  (tmp_path / "empty").mkdir()
  for folder, message in (
      (tmp_path / "none", "no such folder"),
      (tmp_path / "empty", r"holds no NIfTI volume \(\.nii, \.nii\.gz\) and no fastMRI file"),
      (tmp_path / "mixed", r"holds both NIfTI volumes and fastMRI files \(\.nii or \.nii\.gz: "
                           r"1, \.h5: 1\): give a folder of one kind"),
      # Read and scaled otherwise than the brain volumes the model learned from.
      (tmp_path / "knee", r"the model learned from NIfTI brain volumes \(mni152\) and .* "
                          r"holds fastMRI \.h5 files")):
    with pytest.raises(data.DataError, match=message):
      report.run(workdir, out=str(out), data=str(folder), progress=False)
  assert not out.exists()


def test_a_folder_holding_the_template_a_model_learned_from_is_refused(workdir, tmp_path):
  import shutil

  from hyperrecon_jax.data import mni152
  site = loop_support.write_site(tmp_path / "site", (11,))
  shutil.copy(mni152.template_paths()["t1"], os.path.join(site, "mni.nii.gz"))
  out = tmp_path / "out"
  with pytest.raises(data.DataError, match=rf"{site} holds the MNI152 template that the "
                                           r"model learned from \(mni\.nii\.gz\)"):
    report.run(workdir, out=str(out), data=site, progress=False)
  # Also gunzipped: the same voxels in other bytes.
  import gzip
  with gzip.open(os.path.join(site, "mni.nii.gz")) as f:
    (tmp_path / "site" / "mni.nii").write_bytes(f.read())
  os.remove(os.path.join(site, "mni.nii.gz"))
  with pytest.raises(data.DataError, match=r"holds the MNI152 template .* \(mni\.nii\)"):
    report.run(workdir, out=str(out), data=site, progress=False)
  assert not out.exists()


def test_a_folder_holding_a_padded_copy_of_the_template_is_refused(workdir, tmp_path):
  # Zeros added along y: another file and other voxels, yet the build crops
  # each slice to its foreground box, so the training slices come back whole.
  import nibabel as nib

  from hyperrecon_jax.data import mni152
  site = loop_support.write_site(tmp_path / "site", (11,))
  t1 = nib.load(mni152.template_paths()["t1"])
  padded = np.pad(np.asarray(t1.dataobj), ((0, 0), (6, 0), (0, 0)))
  nib.save(nib.Nifti1Image(padded, t1.affine), os.path.join(site, "padded.nii.gz"))
  out = tmp_path / "out"
  with pytest.raises(data.DataError, match=r"of the \d+ slices of .*site are, bit for bit or to "
                                           r"float32 rounding, slices the run in .* trained or "
                                           r"validated on: padded\.nii\.gz \(\d+ slices\)"):
    report.run(workdir, out=str(out), data=site, progress=False)
  assert not out.exists()


def test_a_folder_holding_the_template_at_another_scale_is_refused(workdir, tmp_path):
  # The template's voxels (uint8) times 0.7, stored as float32, as a converter
  # with its own scale would: normalized by their own percentile, 0.86 M of
  # them differ from the original's by one float32 unit in the last place, so
  # neither the volume's digest nor the slices' matched, and the folder was
  # scored as a new subject.
  import nibabel as nib

  from hyperrecon_jax.data import mni152
  site = loop_support.write_site(tmp_path / "site", (11,))
  t1 = nib.load(mni152.template_paths()["t1"])
  voxels = np.asarray(t1.dataobj).astype(np.float32) * np.float32(0.7)
  nib.save(nib.Nifti1Image(voxels, t1.affine), os.path.join(site, "rescaled.nii.gz"))
  out = tmp_path / "out"
  with pytest.raises(data.DataError, match=r"of the \d+ slices of .*site are, bit for bit or to "
                                           r"float32 rounding, slices the run in .* trained or "
                                           r"validated on: rescaled\.nii\.gz \(\d+ slices\)"):
    report.run(workdir, out=str(out), data=site, progress=False)
  assert not out.exists()


def test_on_another_folder_baselines_and_objectives_are_scored_on_it(workdir, stack,
                                                                      tmp_path):
  site = loop_support.write_site(tmp_path / "site", (11, 12, 13))
  result = report.run(workdir, out=str(tmp_path / "out"), data=site,
                      overrides={"evals.baselines.workdir": stack}, progress=False)
  assert len(result["data"]["volume_names"]) == 3
  b = result["baselines"]
  assert len(b["per_slice"]["psnr"]) == result["num_slices"]
  # The objectives on the folder's slices: the same program as the Unets'
  # validation terms, pointed at the folder's (only) split.
  o = result["objective"]
  assert o["split"] == "test"
  c = train.load_config(workdir)
  c.data.update(name="nifti", manual_dir=site, split_fractions=data.EVALUATION_ONLY)
  _, model, variables, _ = train.load_trained(stack)
  unets = baselines.validation_term_means(c, model, variables, o["lambdas"], split="test")
  for i, unet in enumerate(unets):
    for name, value in unet.items():
      np.testing.assert_allclose(o["baselines"][i]["terms"][name], value, rtol=1e-6)


def test_a_report_on_a_folder_lists_its_lowest_and_highest_volumes():
  # 12 volumes (ids 0..11) at two λ; the best mean PSNR is λ index 1.
  model = [[0.0, 20.0 + v] for v in range(12)]
  model[3][1] = None  # a volume without a scored slice goes last
  result = {"best": {"psnr": {"index": 1, "lam": [0.5], "value": 25.0}},
            "volumes": list(range(12)),
            "volume_mean": {"psnr": model},
            "zero_filled": {"volume_mean": {"psnr": [10.0 + v for v in range(12)]}},
            "data": {"volume_names": {str(v): f"s{v}.nii" for v in range(12)}}}
  row = lambda v: f"  s{v}.nii: {10 + v:.2f} → {20 + v:.2f}"
  assert report.volume_lines(result, "zero-filled") == [
      "per volume, PSNR (dB) zero-filled → model at λ = (0.5), lowest first:",
      *map(row, (0, 1, 2, 4, 5)),
      "  … 2 more in lambda_grid.json (volume_mean)",
      *map(row, (8, 9, 10, 11)),
      "  s3.nii: 13.00 → n/a"]
  assert report.volume_lines(result, "zero-filled", shown=20)[1:] == [
      *map(row, (0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11)), "  s3.nii: 13.00 → n/a"]


def test_a_report_writer_killed_between_its_renames_leaves_the_earlier_report(tmp_path):
  # kill -9 between _publish's renames left no eval/ and the earlier report in
  # a hidden folder; the next report writer puts it back, and removes the
  # finished staging folder of the killed process.
  import socket

  from hyperrecon_jax.evaluators import figures
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
  staging = tmp_path / f".eval.eval-{host}-{proc.pid}-x1y2"
  (staging / "lambda_grid.json").parent.mkdir()
  (staging / "lambda_grid.json").write_text("new")
  old = tmp_path / f"{staging.name}.old"
  old.mkdir()
  (old / "lambda_grid.json").write_text("earlier")
  out = tmp_path / "eval"
  assert figures.stranded_report(str(out)) == str(old)
  # summarize.py said "has not been evaluated" of the run meanwhile.
  (tmp_path / "config.json").write_text("{}")
  proc = subprocess.run(
      [sys.executable, os.path.join(loop_support.REPO, "experiments", "summarize.py"),
       f"--workdirs={tmp_path}"], env=loop_support.child_env(tmp_path / "cache"),
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert f"report is in {old}, where an evaluation killed while it replaced the report left " \
         f"it: move it back (mv {old} {out})" in proc.stderr, proc.stderr[-2000:]
  figures._recover(str(out), ".eval.eval-")
  assert (out / "lambda_grid.json").read_text() == "earlier"
  assert figures.stranded_report(str(out)) is None
  assert sorted(os.listdir(tmp_path)) == ["config.json", "eval"]


def _earlier_and_new_report(tmp_path):
  """``(out, staging)``: a report "earlier" in ``out``, a finished one "new" beside it."""
  out, staging = tmp_path / "eval", tmp_path / ".eval.eval-host-1-x1y2"
  for folder, text in ((out, "earlier"), (staging, "new")):
    folder.mkdir()
    (folder / "lambda_grid.json").write_text(text)
  return out, staging


def test_a_report_published_meanwhile_by_another_writer_is_kept_and_named(tmp_path,
                                                                           monkeypatch):
  # Two evaluate.py with one --out: the slower one's second rename failed with
  # a bare "[Errno 39] Directory not empty", and the report it had moved aside
  # stayed in a hidden .old folder.
  from hyperrecon_jax.evaluators import figures
  out, staging = _earlier_and_new_report(tmp_path)
  replace = os.replace

  def other_writer_between(src, dst):
    replace(src, dst)
    if dst.endswith(".old"):  # the other writer publishes now
      os.mkdir(out)
      (out / "lambda_grid.json").write_text("theirs")

  monkeypatch.setattr(figures.os, "replace", other_writer_between)
  with pytest.raises(errors.InputError, match=r"eval: another report was written there while "
                                              r"this one was finishing \(a second "
                                              r"experiments/evaluate.py with this --out\?\): "
                                              r"that one is kept, this one is discarded"):
    figures._publish(str(staging), str(out))
  assert (out / "lambda_grid.json").read_text() == "theirs"
  # The staging folder is the caller's to remove; no .old is left.
  assert sorted(os.listdir(tmp_path)) == [staging.name, "eval"]


@pytest.mark.parametrize("when", ["after the first rename", "in the second rename"])
def test_an_interrupted_report_writer_puts_the_earlier_report_back(tmp_path, monkeypatch,
                                                                   when):
  # Ctrl-C between _publish's renames left no eval/ and the earlier report in
  # <staging>.old, though the earlier report is to stay until the new one is
  # complete.
  from hyperrecon_jax.evaluators import figures
  out, staging = _earlier_and_new_report(tmp_path)
  replace = os.replace

  def interrupted(src, dst):
    if when == "after the first rename":
      replace(src, dst)
      if dst.endswith(".old"):
        raise KeyboardInterrupt
    elif src == str(staging):
      raise OSError(28, "No space left on device")  # before it renames anything
    else:
      replace(src, dst)

  monkeypatch.setattr(figures.os, "replace", interrupted)
  with pytest.raises(KeyboardInterrupt if when == "after the first rename" else OSError):
    figures._publish(str(staging), str(out))
  monkeypatch.undo()
  assert (out / "lambda_grid.json").read_text() == "earlier"
  # The new report is left to the caller, which removes its staging folder.
  assert sorted(os.listdir(tmp_path)) == [staging.name, "eval"]
  assert figures.stranded_report(str(out)) is None
  # Uninterrupted, the new report replaces the earlier one and nothing is left.
  figures._publish(str(staging), str(out))
  assert (out / "lambda_grid.json").read_text() == "new"
  assert os.listdir(tmp_path) == ["eval"]


@pytest.mark.parametrize("side", [2, 5, 11])
def test_slices_of_a_two_hyperparameter_grid_are_on_its_diagonal(side):
  # configs.md: slices.png shows a two-hyperparameter grid's diagonal. Spaced
  # over the flattened 11 × 11 grid (paper Fig. 6's), it showed (0.2, 0.8) and
  # (0.8, 0.2) instead.
  from hyperrecon_jax import hparams
  from hyperrecon_jax.evaluators import figures
  lams = np.asarray(hparams.grid(side, 2))
  shown = lams[figures.panel_picks(len(lams), 2, "grid", 5)]
  assert (shown[:, 0] == shown[:, 1]).all()
  assert shown[0].tolist() == [0, 0] and shown[-1].tolist() == [1, 1]
  assert len(shown) == min(side, 5)
  one = np.asarray(hparams.grid(21, 1))
  np.testing.assert_allclose(one[figures.panel_picks(21, 1, "grid", 5)][:, 0],
                             [0, 0.25, 0.5, 0.75, 1])
  assert figures.panel_picks(20, 3, "samples", 5).tolist() == [0, 1, 2, 3]
  # Seven λ pairs are no grid: spaced over the list, within it.
  assert figures.panel_picks(7, 2, "grid", 5).tolist() == [0, 2, 3, 4, 6]
