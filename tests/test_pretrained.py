"""Tests of hyperrecon_jax.pretrained: export, load, integrity, the shipped model.

A tiny trained run (conftest's ``run_a``: 6 steps at 32×32) is exported into a
temporary folder; the model shipped with the package is loaded as a user
would load it.
"""

import hashlib
import json
import os
import re
import shutil
import sys

import configs
import flax.serialization
import flax.traverse_util
import jax
import loop_support
import numpy as np
import pytest

from hyperrecon_jax import atomic_writes
from hyperrecon_jax import models
from hyperrecon_jax import pretrained
from hyperrecon_jax import report
from hyperrecon_jax import train

SHIPPED = "mni152_csmri8x_dc_tv"
SHIPPED_256 = "mni152_csmri8x_dc_tv_256"


@pytest.fixture(scope="module")
def exported(run_a, tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("pretrained"))
  written = pretrained.export(run_a["workdir"], "tiny", description="6 steps",
                              folder=folder)
  return folder, written, run_a


def test_export_writes_a_model_folder(exported):
  folder, written, _ = exported
  assert pretrained.names(folder) == ["tiny"]
  assert sorted(os.listdir(os.path.join(folder, "tiny"))) == [
      "config.json", "info.json", "weights.msgpack"]
  assert written["step"] == written["num_steps"] == 6 and written["bytes"] == os.path.getsize(
      os.path.join(folder, "tiny", "weights.msgpack"))
  assert pretrained.info("tiny", folder) == written
  with open(os.path.join(folder, "tiny", "config.json"), "rb") as f:
    assert written["config_sha256"] == hashlib.sha256(f.read()).hexdigest()
  with open(os.path.join(folder, "tiny", "config.json")) as f:
    assert json.load(f)["data"]["data_dir"] == ""  # the trainer's cache is not shipped


def test_an_exported_model_loads_by_its_folder(exported, tmp_path, monkeypatch):
  # How a user names a model exported with --folder: `--pretrained=FOLDER/NAME`.
  folder, written, _ = exported
  by_name = pretrained.load("tiny", folder=folder)
  monkeypatch.chdir(folder)
  for path in (os.path.join(folder, "tiny"), "tiny"):  # absolute, or relative to the cwd
    config, _, variables, step = pretrained.load(path)
    assert step == by_name[3] == written["step"] and config == by_name[0]
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(by_name[2])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert pretrained.info(path) == written
  # The CLI records the folder by its absolute path (a reconstruction's
  # sidecar read elsewhere named "tiny"), a shipped model by its name.
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments"))
  import cli
  assert cli.load_model(None, "tiny")[4] == os.path.join(folder, "tiny")
  assert cli.load_model(None, SHIPPED)[4] == SHIPPED
  # A folder named like a shipped model is the shipped one, unless given as ./NAME.
  os.rename(os.path.join(folder, "tiny"), os.path.join(folder, SHIPPED))
  try:
    assert pretrained.load(SHIPPED)[3] != written["step"]
    assert pretrained.load(os.path.join(os.curdir, SHIPPED))[3] == written["step"]
  finally:
    os.rename(os.path.join(folder, SHIPPED), os.path.join(folder, "tiny"))
  with pytest.raises(ValueError, match=r"'nothing' is no folder of an exported model \(one "
                                       r"holding info\.json"):
    pretrained.load("nothing")
  with pytest.raises(ValueError, match=r"tiny is a model already: delete it or choose"):
    pretrained.check_new_name("tiny", folder)


def test_export_refuses_a_taken_name_or_an_unfinished_run(run_a, tmp_path, monkeypatch):
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=r"mine exists and is no model: delete it or choose "
                                       r"another name"):
    pretrained.export(run_a["workdir"], "mine", description="x", folder=str(tmp_path))
  assert os.listdir(tmp_path / "mine") == ["notes.txt"]
  with pytest.raises(ValueError, match=r"is at step 4 of config\.train\.num_steps=6: finish"):
    pretrained.export(run_a["workdir"], "early", description="x", folder=str(tmp_path),
                      step=4)
  # One step short is unfinished too (run_a checkpoints steps 2, 4 and 6 only).
  config, model, variables, _ = train.load_trained(run_a["workdir"])
  monkeypatch.setattr(train, "load_trained",
                      lambda workdir, step=None: (config, model, variables, 5))
  with pytest.raises(ValueError, match=r"is at step 5 of config\.train\.num_steps=6: finish"):
    pretrained.export(run_a["workdir"], "early", description="x", folder=str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["mine"]


@pytest.mark.parametrize("name", ["", " ", "a b", "-x", ".hidden", "..", "a/b", "x" * 101])
def test_a_model_name_is_what_a_user_can_type(name, tmp_path):
  with pytest.raises(ValueError, match=r"a model's name is up to 100 letters, digits"):
    pretrained.check_new_name(name, str(tmp_path))
  pretrained.check_new_name("mni152_csmri8x_dc-tv.v2", str(tmp_path))
  pretrained.check_new_name("x" * 100, str(tmp_path))


def test_an_export_folder_that_is_a_file_is_named(tmp_path):
  """It had been "[Errno 17] File exists" from the export's makedirs."""
  (tmp_path / "afile").write_text("x")
  with pytest.raises(ValueError, match=r"afile is a file: export into a folder"):
    pretrained.check_new_name("model", str(tmp_path / "afile"))


def test_an_export_that_fails_leaves_no_model_folder(run_a, tmp_path):
  seen = []

  def failing_score(staging):
    # The model is complete and loads from where it is staged, unpublished.
    seen.append(pretrained.load("tiny", folder=staging)[3])
    assert pretrained.names(str(tmp_path)) == []
    raise ValueError("the report failed")

  with pytest.raises(ValueError, match="the report failed"):
    pretrained.export(run_a["workdir"], "tiny", description="x", folder=str(tmp_path),
                      score=failing_score)
  assert seen == [6] and os.listdir(tmp_path) == []
  written = pretrained.export(run_a["workdir"], "tiny", description="x", folder=str(tmp_path),
                              step=4, unfinished=True, score=lambda staging: {"test": {}})
  assert written["step"] == 4 and pretrained.info("tiny", str(tmp_path))["test"] == {}
  # Exported short of its training, and its info.json says so beside the step.
  assert written["num_steps"] == 6
  assert os.listdir(tmp_path) == ["tiny"]


def test_an_export_that_cannot_write_names_the_model_and_leaves_no_folder(run_a, tmp_path,
                                                                         monkeypatch):
  # A full disk or a read-only folder gave "[Errno 28] …" on a hidden staging
  # path, and left the new folders the export had made.
  (tmp_path / "afile").write_text("x")
  with pytest.raises(ValueError, match=r"afile/sub/tiny: cannot create the folder "
                                       r".*afile/sub \(Not a directory\)"):
    pretrained.export(run_a["workdir"], "tiny", description="x",
                      folder=str(tmp_path / "afile" / "sub"))
  real_write = atomic_writes.write_bytes

  def full_disk(path, data):
    if path.endswith(pretrained.WEIGHTS_FILE):
      raise OSError(28, "No space left on device", path)
    return real_write(path, data)

  monkeypatch.setattr(atomic_writes, "write_bytes", full_disk)
  new = tmp_path / "new" / "models"
  with pytest.raises(ValueError, match=rf"{re.escape(str(new / 'tiny'))}: the export failed and "
                                       r"wrote nothing \(No space left on device\)"):
    pretrained.export(run_a["workdir"], "tiny", description="x", folder=str(new))
  assert sorted(os.listdir(tmp_path)) == ["afile"]


@pytest.mark.parametrize("value", [7e4, -7e4])
def test_an_export_refuses_parameters_beyond_float16(run_a, tmp_path, monkeypatch, value):
  # float16 holds ±70000 as ±inf: the model loaded and reconstructed NaN.
  config, model, variables, step = train.load_trained(run_a["workdir"])
  params = jax.tree_util.tree_map(np.array, variables["params"])
  leaf = sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: str(kv[0]))[0]
  leaf[1].flat[0] = value
  monkeypatch.setattr(train, "load_trained",
                      lambda workdir, step=None: (config, model,
                                                  {**variables, "params": params}, 6))
  with pytest.raises(ValueError, match=r"at step 6: parameter \S+ reaches 70000; a shipped "
                                       r"model stores its parameters in float16 \(at most "
                                       r"65504\)"):
    pretrained.export(run_a["workdir"], "tiny", description="x", folder=str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_an_export_refuses_a_model_whose_reconstructions_are_not_finite(run_a, tmp_path,
                                                                         monkeypatch):
  # Finite parameters, NaN reconstructions (a BatchNorm variance of −2 folds
  # to rsqrt(−2 + eps)): the model was shipped, with null scores in info.json.
  config, model, variables, step = train.load_trained(run_a["workdir"])
  stats = jax.tree_util.tree_map(np.array, variables["batch_stats"])
  stats["body"]["bn_enc0_a"]["var"][:] = -2.0
  monkeypatch.setattr(train, "load_trained",
                      lambda workdir, step=None: (config, model,
                                                  {**variables, "batch_stats": stats}, 6))
  with pytest.raises(ValueError, match=r"at step 6: the model's reconstructions are not finite "
                                       r"\(NaN, ±inf, or too large for float32\) on \d+ of "
                                       r"\d+ of its first test "
                                       r"slices, first at λ = 0: it diverged or overflows on "
                                       r"these inputs; nothing was exported"):
    pretrained.export(run_a["workdir"], "tiny", description="x", folder=str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_finite_reconstructions_are_read_from_the_psnr_of_each_slice():
  # None is how a result file stores a PSNR that is not finite.
  pretrained.check_finite_reconstructions([[20.0, 25.0], [21.0, 22.0]], [[0.0], [1.0]],
                                          "m", "the test slices")
  for bad in (None, float("nan"), -float("inf")):
    with pytest.raises(ValueError, match=r"^m: the model's reconstructions are not finite "
                                         r"\(NaN, ±inf, or too large for float32\) on 1 of 3 "
                                         r"of the test slices, "
                                         r"first at λ = 0\.5:"):
      pretrained.check_finite_reconstructions([[20.0, 25.0, 21.0], [21.0, 22.0, bad],
                                               [19.0, 23.0, 24.0]], [[0.0], [0.25], [0.5]],
                                              "m", "the test slices")


def test_load_gives_the_trained_model_to_float16_precision(exported):
  folder, _, run_a = exported
  config, model, variables, step = pretrained.load("tiny", folder=folder)
  _, _, want, want_step = train.load_trained(run_a["workdir"])
  assert step == want_step and config.model.to_dict() == run_a["config"].model.to_dict()
  assert isinstance(model, models.HyperUnet)
  got_p, want_p = jax.tree_util.tree_leaves(variables["params"]), jax.tree_util.tree_leaves(
      want["params"])
  for g, w in zip(got_p, want_p):
    assert g.dtype == np.float32
    # float16 keeps 11 significant bits: relative error ≤ 2^-11 ≈ 4.9e-4 for
    # normal numbers; values under float16's normal range (6.1e-5) keep an
    # absolute error ≤ 2^-25 ≈ 3e-8.
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2 ** -11, atol=3e-8)
  for g, w in zip(jax.tree_util.tree_leaves(variables["batch_stats"]),
                  jax.tree_util.tree_leaves(want["batch_stats"])):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))  # float32 as trained


def test_a_damaged_or_unknown_model_is_named(exported, tmp_path):
  folder, _, _ = exported
  with pytest.raises(ValueError, match=r"no pretrained model 'nope': the package ships \['tiny'\]"):
    pretrained.load("nope", folder=folder)
  damaged = tmp_path / "tiny"
  damaged.mkdir()
  for name in ("config.json", "info.json", "weights.msgpack"):
    with open(os.path.join(folder, "tiny", name), "rb") as f:
      (damaged / name).write_bytes(f.read())
  blob = bytearray((damaged / "weights.msgpack").read_bytes())
  blob[len(blob) // 2] ^= 1
  (damaged / "weights.msgpack").write_bytes(bytes(blob))
  with pytest.raises(ValueError, match="weights.msgpack is damaged"):
    pretrained.load("tiny", folder=str(tmp_path))


def test_a_folder_of_another_kind_given_as_a_model_says_what_it_holds(exported, run_a,
                                                                      tmp_path):
  # --pretrained=workdirs/demo (a training run), a segmenter's folder, or an
  # exported model whose info.json was lost: each is named for what it is,
  # as --workdir names an exported model given there.
  folder, _, _ = exported
  with pytest.raises(ValueError, match=r"holds a training run, not an exported model: give "
                                       r"it as --workdir="):
    pretrained.load(run_a["workdir"], folder=folder)
  segmenter = tmp_path / "seg"
  segmenter.mkdir()
  (segmenter / "segmenter.json").write_text("{}")
  with pytest.raises(ValueError, match=r"holds a segmenter \(experiments/segmenter\.py\), not "
                                       r"an exported model"):
    pretrained.load(str(segmenter), folder=folder)
  lost = tmp_path / "lost"
  shutil.copytree(os.path.join(folder, "tiny"), lost)
  os.remove(lost / "info.json")
  with pytest.raises(ValueError, match=r"lost/info\.json is missing: .*export the model again"):
    pretrained.load(str(lost), folder=folder)


def test_a_report_of_a_pretrained_model_needs_an_out_folder(exported, tmp_path):
  folder, _, _ = exported
  with pytest.raises(ValueError, match="give --out=DIR"):
    report.run(pretrained="tiny", folder=folder)
  with pytest.raises(ValueError, match="not both"):
    report.run(str(tmp_path), pretrained="tiny", folder=folder, out=str(tmp_path / "r"))
  assert not (tmp_path / "r").exists()


def test_summary_keeps_the_test_metrics_per_lambda():
  result = {"split": "test", "num_slices": 2, "lambdas": [[0.0], [1.0]],
            "mean": {m: [1.0, 2.0] for m in ("psnr", "ssim", "hfen", "mae")},
            "zero_filled": {"mean": {m: 0.5 for m in ("psnr", "ssim", "hfen", "mae")}},
            "baselines": {"lambdas": [[0.0]],
                          **{stat: {m: [value] for m in ("psnr", "ssim", "hfen")}
                             for stat, value in (("mean", 3.0), ("std", 0.1))}}}
  out = pretrained.summary(result)
  assert out["mean"] == {m: [1.0, 2.0] for m in ("psnr", "ssim", "hfen")}
  assert out["baselines"]["mean"]["psnr"] == [3.0]
  assert out["baselines"]["std"]["psnr"] == [0.1]
  assert "warnings" not in out
  # An unfinished stack's warning was dropped: the export shipped its scores without a word.
  result["warnings"] = ["the per-λ Unets of u are at step 8 of their "
                        "config.train.num_steps=12 (…)"]
  assert pretrained.summary(result)["warnings"] == result["warnings"]


def test_the_export_s_line_gives_the_range_of_mean_psnr_or_its_one_value():
  test = {"split": "test", "num_slices": 24, "lambdas": [[0.0], [0.5], [1.0]],
          "mean": {"psnr": [21.234, None, 18.5]}, "zero_filled": {"psnr": 17.0}}
  assert pretrained.scores_line(test, "zero-filled") == (
      "test split, 24 slices at 3 λ: mean PSNR 18.50–21.23 dB, best at λ = 0; zero-filled "
      "17.00 dB (every mean in info.json's test)")
  # A plain Unet's one λ read "mean PSNR 15.72–15.72 dB".
  test.update(lambdas=[[0.30000001192092896]], mean={"psnr": [15.716]})
  assert pretrained.scores_line(test, "noisy input").startswith(
      "test split, 24 slices at 1 λ: mean PSNR 15.72 dB, best at λ = 0.3; noisy input 17.00 dB")
  test["mean"]["psnr"] = [None]
  assert "mean PSNR n/a dB;" in pretrained.scores_line(test, "zero-filled")


def test_a_report_of_a_pretrained_model_draws_its_stored_unets(exported, tmp_path,
                                                               monkeypatch):
  _, _, run_a = exported
  folder = str(tmp_path / "models")  # beside, not inside, the module's folder
  stored = {"lambdas": [[0.0], [1.0]],
            "mean": {"psnr": [11.0, 12.0], "ssim": [0.1, 0.2], "hfen": [0.9, 0.8]},
            "std": {"psnr": [0.5, 0.5], "ssim": [0.01, 0.01], "hfen": [0.1, 0.1]}}
  pretrained.export(run_a["workdir"], "with_unets", description="6 steps", folder=folder,
                    extra={"test": {"split": "test", "baselines": stored}})
  result = report.run(pretrained="with_unets", folder=folder, out=str(tmp_path / "r"),
                      overrides={"eval.grid": 2}, progress=False)
  assert result["baselines"] == {"stored": "info.json of with_unets", **stored}
  assert (tmp_path / "r" / "curves.png").exists()
  # Scored on another split, the stored scores do not apply.
  other = report.run(pretrained="with_unets", folder=folder, out=str(tmp_path / "v"),
                     overrides={"eval.grid": 2, "eval.split": "validation"}, progress=False)
  assert "baselines" not in other
  # So on another folder's volumes.
  site = loop_support.write_site(tmp_path / "site", (11,))
  elsewhere = report.run(pretrained="with_unets", folder=folder, out=str(tmp_path / "s"),
                         data=site, overrides={"eval.grid": 2}, progress=False)
  assert "baselines" not in elsewhere and len(elsewhere["data"]["volume_names"]) == 1
  # Given by its folder, relative: the report names it absolute, as a workdir
  # (it was recorded as typed, and read from elsewhere named another folder).
  monkeypatch.chdir(tmp_path)
  by_folder = report.run(pretrained=os.path.join("models", "with_unets"), out="f",
                         overrides={"eval.grid": 2}, progress=False)
  assert by_folder["pretrained"] == str(tmp_path / "models" / "with_unets")
  assert by_folder["baselines"]["stored"] == f"info.json of {tmp_path}/models/with_unets"


def test_the_shipped_model_loads_and_says_what_it_scores():
  assert SHIPPED in pretrained.names()
  description = pretrained.info(SHIPPED)
  assert description["bytes"] <= 10 * 2 ** 20  # the size limit
  config, model, variables, _ = pretrained.load(SHIPPED)  # checks the SHA-256
  assert config.data.name == "mni152" and config.task.acceleration == 8
  assert tuple(config.losses) == ("dc", "tv") and isinstance(model, models.HyperUnet)
  psnr = description["test"]["mean"]["psnr"]
  # λ changes the reconstruction: the recorded test PSNR spans several dB.
  assert max(psnr) - min(psnr) > 5.0
  # Its config is complete: the one a user of the wheel, which has no
  # experiments/configs, can start a training run from (check_config's hint).
  train.check_config(config)
  missing = _fields(configs.default()) - _fields(config)
  assert not missing, missing
  # Its segmenter section, which it was stored without, is default.py's.
  assert config.segmenter.to_dict() == configs.default().segmenter.to_dict()


def _fields(node, prefix=""):
  """The dotted names of a config's fields."""
  return {name for key, value in node.items()
          for name in (_fields(value, f"{prefix}{key}.") if hasattr(value, "items")
                       else {prefix + key})}


def test_the_256_model_is_at_the_papers_scale_and_beats_the_zero_filled_input():
  assert SHIPPED_256 in pretrained.names()
  description = pretrained.info(SHIPPED_256)
  config, model, variables, step = pretrained.load(SHIPPED_256)  # checks the SHA-256
  assert (config.data.image_size, config.model.channels, config.model.hyper_dim) == (256, 32, 32)
  assert config.task.acceleration == 8 and tuple(config.losses) == ("dc", "tv")
  assert isinstance(model, models.HyperUnet) and step == description["step"]
  # The package's shipped models fit the 40 MB.
  assert sum(pretrained.info(n)["bytes"] for n in pretrained.names()) <= 40e6
  assert "256x256" in description["description"]
  test = description["test"]
  assert test["split"] == "test" and test["num_slices"] == 24
  # On the 24 test slices the best λ is well above the zero-filled input, and λ
  # moves the reconstruction (the recorded means span several dB).
  psnr = np.asarray(test["mean"]["psnr"])
  assert psnr.max() > test["zero_filled"]["psnr"] + 2 and psnr.max() - psnr.min() > 5
  assert np.asarray(test["baselines"]["lambdas"]).ravel().tolist() == [0, 0.25, 0.5, 0.75, 1]


# Tolerances of `check_scores` on another machine. The recorded scores were
# computed in float32 (also on a GPU: `check_scores` asks for float32 products,
# not TF32), so a machine differs only by float32 summation order: about 1e-6
# relative in each layer (ε·√(9·C_in) for the 3×3 sums), ≤ 2e-5 in the
# reconstruction after the Unet's 15 convolutions. The error image's norm is
# at least 1/32 of the image's up to 30 dB PSNR (images in [0, 1]), so it
# moves by ≤ 6e-4 relative: PSNR by ≤ 20·log10(1 + 6e-4) ≈ 0.006 dB, SSIM
# and HFEN (ratios of such norms) by ≤ 1e-3 relative. A real change (another
# acceleration, other weights, other data) moves them by dB (the recorded λ
# alone span 7 dB or more).
CHECK_TOLERANCE = {"psnr": dict(rtol=0, atol=0.01), "ssim": dict(rtol=1e-3, atol=1e-4),
                   "hfen": dict(rtol=1e-3, atol=0)}


@pytest.mark.parametrize("name", pretrained.names())
def test_every_shipped_model_reconstructs_its_recorded_slices_as_it_did(name):
  recorded = pretrained.info(name)["check"]
  config, model, variables, _ = pretrained.load(name)
  got = pretrained.check_scores(config, model, variables,
                                num_slices=len(recorded["slice"]))
  assert (got["volume"], got["slice"]) == (recorded["volume"], recorded["slice"])
  np.testing.assert_allclose(got["lambdas"], recorded["lambdas"], rtol=0, atol=0)
  for metric, tolerance in CHECK_TOLERANCE.items():
    np.testing.assert_allclose(got[metric], recorded[metric], **tolerance,
                               err_msg=f"{name}: {metric}")
  # The check can tell models apart: λ alone moves every slice's PSNR by more
  # than 100 times the tolerance.
  psnr = np.asarray(recorded["psnr"])
  assert (psnr.max(axis=1) - psnr.min(axis=1)).min() > 100 * CHECK_TOLERANCE["psnr"]["atol"]


def test_an_export_records_the_scores_of_the_model_as_shipped(exported):
  folder, written, run_a = exported
  check = written["check"]
  assert pretrained.info("tiny", folder)["check"] == check
  # Two slices: docs/workdirs.md's "first two test slices".
  assert pretrained.CHECK_SLICES == len(check["slice"]) == len(check["volume"]) == 2
  # λ = 0, 1 (each term alone) and 0.5 (the centroid) for the two terms of run_a.
  np.testing.assert_allclose(check["lambdas"], [[0.0], [1.0], [0.5]], atol=1e-7)
  # The scores are those of the model as a user loads it from the exported
  # folder: recomputed from it on the same machine, they are equal exactly.
  again = pretrained.check_scores(*pretrained.load("tiny", folder=folder)[:3])
  assert again == check
  for metric in pretrained.CHECK_METRICS:
    assert np.shape(check[metric]) == (2, 3)
    assert np.isfinite(check[metric]).all()


@pytest.fixture()
def shipped_copy(tmp_path):
  """A copy of the shipped model's folder, to change."""
  shutil.copytree(os.path.join(pretrained.FOLDER, SHIPPED), tmp_path / SHIPPED)
  return tmp_path


def _edit_config(folder, old, new, *, record=False):
  """Replaces text of the model's config.json; ``record``: in info.json too."""
  path = folder / SHIPPED / "config.json"
  text = path.read_text()
  assert text.count(old) == 1, old
  path.write_bytes(text.replace(old, new).encode())
  if record:
    description = pretrained.info(SHIPPED, str(folder))
    description["config_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    pretrained.write_info(str(folder / SHIPPED), description)


def test_a_changed_config_of_a_shipped_model_is_refused(shipped_copy):
  # The config defines the model as much as the weights: a model of another
  # task must not load as this one.
  _edit_config(shipped_copy, '"acceleration": 8.0', '"acceleration": 4.0')
  with pytest.raises(ValueError, match=r"config\.json is damaged: its SHA-256 differs"):
    pretrained.load(SHIPPED, folder=str(shipped_copy))


def test_a_model_whose_extensions_do_not_import_names_them_not_a_broken_config(shipped_copy):
  # It read "config.json: not a readable model config (config.extensions:
  # importing … failed …)", of a file whose digest had just held.
  _edit_config(shipped_copy, '"losses": [', '"extensions": ["no_such_module_here"],\n  '
               '"losses": [', record=True)
  with pytest.raises(train.ConfigError, match=r"config\.json: config\.extensions: importing "
                                              r"'no_such_module_here' failed") as info:
    pretrained.load(SHIPPED, folder=str(shipped_copy))
  assert "not a readable model config" not in str(info.value)


def test_weights_that_do_not_fit_the_config_name_the_variable(shipped_copy):
  _edit_config(shipped_copy, '"channels": 16', '"channels": 8', record=True)
  with pytest.raises(ValueError) as info:
    pretrained.load(SHIPPED, folder=str(shipped_copy))
  message = str(info.value)
  assert "weights.msgpack does not fit the model of" in message and "config.json" in message
  pattern = r"(params|batch_stats)/\S+ has shape \([\d, ]+\), the model needs \("
  assert re.search(pattern, message), message
  assert "\n" not in message


def _edit_weights(folder, edit):
  """Applies ``edit`` to the model's flat ``{'a/b/c': array}`` weights; records their digest."""
  path = folder / SHIPPED / pretrained.WEIGHTS_FILE
  flat = flax.traverse_util.flatten_dict(
      flax.serialization.msgpack_restore(path.read_bytes()), sep="/")
  edit(flat)
  blob = flax.serialization.msgpack_serialize(flax.traverse_util.unflatten_dict(flat, sep="/"))
  path.write_bytes(blob)
  description = pretrained.info(SHIPPED, str(folder))
  description["sha256"] = hashlib.sha256(blob).hexdigest()
  pretrained.write_info(str(folder / SHIPPED), description)
  return str(path)


def test_weights_of_the_right_size_but_another_shape_name_both_shapes(shipped_copy):
  # A transposed kernel has every value the model needs, in another layout.
  moved = []

  def transpose(flat):
    key = next(k for k, v in sorted(flat.items()) if v.ndim == 2 and v.shape[0] != v.shape[1])
    moved.append((key, flat[key].shape))
    flat[key] = np.ascontiguousarray(flat[key].T)

  weights = _edit_weights(shipped_copy, transpose)
  (key, (rows, cols)), = moved
  with pytest.raises(ValueError, match=rf"^{re.escape(weights)} does not fit the model of "
                                       rf"\S+config\.json: {re.escape(key)} has shape "
                                       rf"\({cols}, {rows}\), the model needs \({rows}, {cols}\)$"):
    pretrained.load(SHIPPED, folder=str(shipped_copy))


def test_weights_with_a_variable_the_model_lacks_are_refused(shipped_copy):
  def add(flat):
    flat["params/hypernetwork/extra/kernel"] = np.ones((4, 2), np.float16)

  weights = _edit_weights(shipped_copy, add)
  with pytest.raises(ValueError, match=rf"^{re.escape(weights)} does not fit the model of "
                                       r"\S+config\.json: params/hypernetwork/extra/kernel "
                                       r"is not a variable of the model$"):
    pretrained.load(SHIPPED, folder=str(shipped_copy))


def test_a_model_whose_info_records_no_config_digest_is_refused(shipped_copy):
  description = pretrained.info(SHIPPED, str(shipped_copy))
  del description["config_sha256"]
  pretrained.write_info(str(shipped_copy / SHIPPED), description)
  with pytest.raises(ValueError, match=r"info\.json records no SHA-256 of config\.json"):
    pretrained.load(SHIPPED, folder=str(shipped_copy))


@pytest.mark.parametrize("step", [None, "abc", -1, True, 3.5])
def test_a_model_whose_info_records_no_whole_step_is_refused(shipped_copy, step):
  # Written by hand with its digest: load ended in a bare KeyError or ValueError.
  description = pretrained.info(SHIPPED, str(shipped_copy))
  if step is None:
    del description["step"]
  else:
    description["step"] = step
  pretrained.write_info(str(shipped_copy / SHIPPED), description)
  with pytest.raises(ValueError, match=rf"info\.json: 'step' must be the checkpoint's step, a "
                                       rf"whole number ≥ 0, got {re.escape(repr(step))}"):
    pretrained.load(SHIPPED, folder=str(shipped_copy))


@pytest.mark.parametrize("name", pretrained.names())
def test_a_shipped_models_info_is_vouched_for_by_its_own_digest(name):
  with open(os.path.join(pretrained.FOLDER, name, pretrained.INFO_FILE)) as f:
    stored = json.load(f)
  digest = stored.pop(pretrained.INFO_DIGEST)
  text = json.dumps(stored, sort_keys=True, separators=(",", ":"))
  assert digest == hashlib.sha256(text.encode()).hexdigest()


def test_an_edited_info_is_refused(shipped_copy):
  # A score changed in info.json loaded and ran: check_scores compares the
  # model with these numbers, and the weights' digest is one of them.
  # Deleting the digest with the edit does not switch the check off.
  path = shipped_copy / SHIPPED / pretrained.INFO_FILE
  stored = json.loads(path.read_text())
  stored["check"]["psnr"][0][0] += 1.0
  for drop_digest, pattern in ((False, r"its content differs from the digest it was written "
                                       r"with \(info_sha256\)"),
                               (True, r"it holds no digest of its content \(info_sha256\): it "
                                      r"was edited")):
    if drop_digest:
      del stored[pretrained.INFO_DIGEST]
    path.write_text(json.dumps(stored, indent=1, sort_keys=True))
    for read in (lambda: pretrained.info(SHIPPED, str(shipped_copy)),
                 lambda: pretrained.load(SHIPPED, folder=str(shipped_copy))):
      with pytest.raises(ValueError, match=r"info\.json: " + pattern):
        read()
