"""Tests of the split record: a run never resumes on, or is scored on, reassigned volumes.

A folder of six tiny NIfTI volumes, grown to seven: at the default fractions
(0.7, 0.1, 0.2) and seed, that moves a training volume into the test split
(`splits.split_volumes`), the case the record exists for.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import loop_support
import nibabel as nib
import numpy as np
import pytest

from hyperrecon_jax import data
from hyperrecon_jax import report
from hyperrecon_jax import segmentation
from hyperrecon_jax import segmenter_files
from hyperrecon_jax import train
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import split_record
from hyperrecon_jax.data import splits
from hyperrecon_jax.evaluators import baselines
from hyperrecon_jax.train import baselines as train_baselines

SHAPE = (20, 24, 16)


def _write_volume(folder, index, name=None):
  """A noisy ellipsoid with brain on 10 axial slices, as ``name`` or ``sub-<index>.nii.gz``."""
  rng = np.random.default_rng(index)
  x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
  inside = x ** 2 / 0.8 + y ** 2 / 0.9 + z ** 2 < 0.8
  inside[..., :3] = inside[..., 13:] = False
  image = np.where(inside, 100.0 + rng.normal(0, 5, SHAPE), 0.0).astype(np.float32)
  path = folder / (name or f"sub-{index:02d}.nii.gz")
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(image, np.eye(4)), str(path))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """(six-volume folder, the same folder grown to seven, a data_dir for both)."""
  six = tmp_path_factory.mktemp("six")
  seven = tmp_path_factory.mktemp("seven")
  for i in range(6):
    _write_volume(six, i)
    _write_volume(seven, i)
  _write_volume(seven, 6)
  return six, seven, str(tmp_path_factory.mktemp("tfds"))


def _config(manual_dir, data_dir, **train_overrides):
  config = loop_support.make_config(data_dir, **train_overrides)
  config.data.update(name="nifti", manual_dir=str(manual_dir))
  return config


@pytest.fixture(scope="module")
def records(folders):
  six, seven, data_dir = folders
  return (split_record.current(_config(six, data_dir).data),
          split_record.current(_config(seven, data_dir).data))


def _names(n):
  return [f"sub-{i:02d}.nii.gz" for i in range(n)]


def test_current_lists_the_volumes_of_every_split(records, folders):
  for record, n in zip(records, (6, 7)):
    # The permutation of `split_volumes`, computed here from its definition.
    expected = splits.split_volumes(n, (0.7, 0.1, 0.2), 0)
    assert record["dataset"] == "nifti"
    assert record["splits"] == {s: [_names(n)[i] for i in expected[s]]
                                for s in config_fields.SPLITS}
  six, seven, _ = folders
  for record, folder in zip(records, (six, seven)):
    for split in config_fields.SPLITS:  # the digests of the files' bytes, in the same order
      assert record["sha256"][split] == [
          hashlib.sha256((folder / n).read_bytes()).hexdigest()
          for n in record["splits"][split]]
      # and of their voxels: the same image in both folders, the same digest
      assert len(record["content_sha256"][split]) == len(record["splits"][split])
  contents = [dict(zip(r["splits"][s], r["content_sha256"][s]))
              for r in records for s in config_fields.SPLITS]
  six_contents = {k: v for c in contents[:3] for k, v in c.items()}
  seven_contents = {k: v for c in contents[3:] for k, v in c.items()}
  assert all(seven_contents[n] == d for n, d in six_contents.items())
  assert len(set(seven_contents.values())) == 7


def test_a_renamed_training_volume_is_known_by_its_content(records, folders, tmp_path):
  six, _, data_dir = folders
  # sub-04 (train) renamed sub-01b: six files still, but sorted otherwise, so
  # the permutation puts it in the test split under its new name.
  folder = tmp_path / "scans"
  shutil.copytree(six, folder)
  (folder / "sub-04.nii.gz").rename(folder / "sub-01b.nii.gz")
  assert "sub-04.nii.gz" in records[0]["splits"]["train"]
  renamed = split_record.current(_config(folder, data_dir).data)
  assert renamed["splits"]["test"] == ["sub-01b.nii.gz"]
  (tmp_path / split_record.FILE).write_text(split_record.to_json(records[0]))
  with pytest.raises(data.DataError, match=r"holds 1 of the volumes .*\(sub-01b\.nii\.gz, a copy "
                                           r"of sub-04\.nii\.gz\)"):
    split_record.check_unseen(str(tmp_path), _config(folder, data_dir).data, "test")
  # Resuming on it is refused too: a name left the training split.
  with pytest.raises(data.DataError, match=r"1 left it: sub-04\.nii\.gz; 1 joined it"):
    split_record.check_resume(str(tmp_path), renamed)


def test_a_training_volume_rewritten_in_place_stops_a_resume(records, folders, tmp_path):
  six, _, data_dir = folders
  folder = tmp_path / "scans"
  shutil.copytree(six, folder)
  name = records[0]["splits"]["train"][0]
  _write_volume(folder, 99)  # other voxels…
  (folder / "sub-99.nii.gz").replace(folder / name)  # …under the training volume's name
  now = split_record.current(_config(folder, data_dir).data)
  assert now["splits"] == records[0]["splits"]
  (tmp_path / split_record.FILE).write_text(split_record.to_json(records[0]))
  with pytest.raises(data.DataError, match=rf"1 of its files changed content: {name}"):
    split_record.check_resume(str(tmp_path), now)
  split_record.check_resume(str(tmp_path), records[0])


def test_the_grown_folder_moves_a_training_volume_into_test(records):
  # The premise of the tests below; if the permutation changed, they would
  # test nothing.
  six, seven = records
  assert set(six["splits"]["train"]) & set(seven["splits"]["test"])
  assert six["splits"]["train"] != seven["splits"]["train"]


def test_mni152_is_not_split_by_volume(data_dir):
  assert split_record.current(loop_support.make_config(data_dir).data) is None


def test_unseen_splits_pass_and_reassigned_volumes_are_refused(records, folders, tmp_path):
  six, seven, data_dir = folders
  (tmp_path / split_record.FILE).write_text(split_record.to_json(records[0]))
  workdir = str(tmp_path)
  for split in config_fields.SPLITS:  # the folder it trained on
    split_record.check_unseen(workdir, _config(six, data_dir).data, split)
  moved = sorted(set(records[0]["splits"]["train"]) & set(records[1]["splits"]["test"]))
  with pytest.raises(data.DataError) as err:
    split_record.check_unseen(workdir, _config(seven, data_dir).data, "test")
  message = str(err.value)
  assert f"the test split of {seven} holds {len(moved)} of the volumes" in message
  assert all(name in message for name in moved), message
  assert os.path.join(workdir, split_record.FILE) in message
  # Scoring the training split is the caller's choice; nothing to check.
  split_record.check_unseen(workdir, _config(seven, data_dir).data, "train")


def test_another_folder_is_checked_by_content_alone(records, folders, tmp_path):
  six, _, data_dir = folders
  (tmp_path / split_record.FILE).write_text(split_record.to_json(records[0]))
  trained = records[0]["splits"]["train"]
  site = tmp_path / "site"  # another site, scored whole (data.EVALUATION_ONLY)
  site.mkdir()
  _write_volume(site, 50)  # a new subject under a training volume's name
  (site / "sub-50.nii.gz").rename(site / trained[0])
  def scored():
    config = _config(site, data_dir).data
    config.split_fractions = data.EVALUATION_ONLY
    return config

  split_record.check_unseen(str(tmp_path), scored(), "test")
  shutil.copy(six / trained[1], site / "copy.nii.gz")  # a training volume's copy
  with pytest.raises(data.DataError, match=rf"{site} holds 1 of the volumes .* learned from "
                                           rf"\(copy\.nii\.gz, a copy of {trained[1]}\), so"):
    split_record.check_unseen(str(tmp_path), scored(), "test")
  # Refused from the folder's files, before its dataset is built.
  assert not os.path.exists(data.make_builder(scored()).data_dir)
  # The same voxels in other bytes: a training volume gunzipped.
  (site / "copy.nii.gz").unlink()
  image = nib.load(str(six / trained[2]))
  nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine), str(site / "plain.nii"))
  assert (hashlib.sha256((site / "plain.nii").read_bytes()).hexdigest()
          not in records[0]["sha256"]["train"])
  with pytest.raises(data.DataError, match=rf"\(plain\.nii, a copy of {trained[2]}\)"):
    split_record.check_unseen(str(tmp_path), scored(), "test")
  # The folder the run read, scored whole: every volume it trained or
  # validated on is named.
  whole = _config(six, data_dir).data
  whole.split_fractions = data.EVALUATION_ONLY
  learned = len(trained) + len(records[0]["splits"]["validation"])
  with pytest.raises(data.DataError, match=rf"{six} is the folder the run in .* learned from, "
                                           rf"and {learned} of its volumes were trained"):
    split_record.check_unseen(str(tmp_path), whole, "test")
  # Also through a link to it.
  (tmp_path / "link").symlink_to(six, target_is_directory=True)
  whole.manual_dir = str(tmp_path / "link")
  with pytest.raises(data.DataError, match=r"link is the folder the run in .* learned from"):
    split_record.check_unseen(str(tmp_path), whole, "test")


def test_validation_volumes_count_as_learned_from_for_the_test_split(records, folders, tmp_path):
  six, _, data_dir = folders
  record = json.loads(split_record.to_json(records[0]))
  test_volume = record["splits"]["test"][0]
  record["splits"]["validation"].append(test_volume)
  for key in ("sha256", "content_sha256"):
    record[key]["validation"].append(record[key]["test"][0])
  (tmp_path / split_record.FILE).write_text(json.dumps(record))
  with pytest.raises(data.DataError, match=f"holds 1 of the volumes .*{test_volume}"):
    split_record.check_unseen(str(tmp_path), _config(six, data_dir).data, "test")
  split_record.check_unseen(str(tmp_path), _config(six, data_dir).data, "validation")


def test_resume_is_refused_when_a_split_it_learns_from_changed(records, tmp_path):
  (tmp_path / split_record.FILE).write_text(split_record.to_json(records[0]))
  split_record.check_resume(str(tmp_path), records[0])
  split_record.check_resume(str(tmp_path), None)  # not split by volume
  left = sorted(set(records[0]["splits"]["train"]) - set(records[1]["splits"]["train"]))
  assert left
  with pytest.raises(data.DataError, match=rf"the train split of .* is not the one .* "
                                           rf"\({len(left)} left it: {left[0]}"):
    split_record.check_resume(str(tmp_path), records[1])


def test_no_record_checks_nothing_and_a_damaged_one_is_named(records, folders, tmp_path):
  _, seven, data_dir = folders
  split_record.check_unseen(str(tmp_path), _config(seven, data_dir).data, "test")
  split_record.check_resume(str(tmp_path), records[1])
  path = tmp_path / split_record.FILE
  for text in ("{not json", '{"splits": {"train": ["a"]}}', '{"splits": {"train": [1], '
               '"validation": [], "test": []}}'):
    path.write_text(text)
    with pytest.raises(data.DataError, match=rf"{path} cannot be read as the record"):
      split_record.check_unseen(str(tmp_path), _config(seven, data_dir).data, "test")


def test_per_lambda_baselines_are_held_to_their_own_record(records, folders, tmp_path):
  six, seven, data_dir = folders
  stack = tmp_path / "stack"
  (stack / "checkpoints").mkdir(parents=True)
  (stack / split_record.FILE).write_text(split_record.to_json(records[0]))
  with pytest.raises(data.DataError, match=rf"learned from .*{stack}"):
    baselines.load(str(stack), _config(seven, data_dir))


def test_per_lambda_baselines_must_have_learned_from_the_model_s_volumes(records, folders,
                                                                          tmp_path):
  # Unets trained on another folder passed: data.manual_dir is a machine
  # setting, so the configs compared equal, and the report drew them as the
  # model's baselines.
  six, _, data_dir = folders
  config = _config(six, data_dir)
  stack = loop_support.save_untrained(
      train_baselines.stack_config(config, [(0.0,), (1.0,)]), str(tmp_path / "stack"))
  record_file = tmp_path / "stack" / split_record.FILE
  record_file.write_text(split_record.to_json(records[0]))
  baselines.load(stack, config, learned=records[0])  # the same volumes: accepted
  train_names = records[0]["splits"]["train"]
  n = len(train_names)
  with pytest.raises(data.DataError, match=rf"the baselines in {stack} learned from other "
                                           rf"data than the model: in the train split, 1 of "
                                           rf"its {n} volumes are not the model's: "
                                           rf"{train_names[0]}"):
    baselines.load(stack, config, learned=_without(records[0], train_names[0]))
  record_file.write_text(split_record.to_json(_without(records[0], train_names[0])))
  with pytest.raises(data.DataError, match=rf"in the train split, it lacks 1 of the model's "
                                           rf"{n} volumes"):
    baselines.load(stack, config, learned=records[0])
  record_file.write_text(split_record.to_json(records[0]))
  # Another folder of as many volumes, named alike: told apart by the voxels' digests.
  other = json.loads(json.dumps(records[0]))
  other["content_sha256"]["train"][1] = hashlib.sha256(b"another subject").hexdigest()
  with pytest.raises(data.DataError, match=rf"in the train split, 1 of its {n} volumes are not "
                                           rf"the model's: {train_names[1]}"):
    baselines.load(stack, config, learned=other)
  # The same volumes compressed again (other bytes, the same voxels) are the same data.
  recompressed = json.loads(json.dumps(records[0]))
  recompressed["sha256"]["train"] = [hashlib.sha256(d.encode()).hexdigest()
                                     for d in recompressed["sha256"]["train"]]
  baselines.load(stack, config, learned=recompressed)
  # Without the voxels' digests, the files' decide; without either, the names.
  files_only = {k: v for k, v in recompressed.items() if k != "content_sha256"}
  with pytest.raises(data.DataError, match=rf"{n} of its {n} volumes are not the model's"):
    baselines.load(stack, config, learned=files_only)
  bare = {k: v for k, v in other.items() if k not in ("sha256", "content_sha256")}
  baselines.load(stack, config, learned=bare)
  # A model or a stack without a record (a shipped model) is not compared.
  split_record.check_same_data(None, records[0], "x")
  split_record.check_same_data(records[0], None, "x")


def _without(record, name):
  """``record`` with volume ``name`` left out of its train split (names and digests)."""
  out = json.loads(json.dumps(record))
  index = out["splits"]["train"].index(name)
  for key in ("splits", "sha256", "content_sha256"):
    if key in out:
      del out[key]["train"][index]
  return out


def test_a_segmenter_records_its_splits_and_is_held_to_them(records, folders, tmp_path):
  six, seven, data_dir = folders
  # Labels: the volume's foreground, in files beside the images.
  for i in range(6):
    image = nib.load(str(six / f"sub-{i:02d}.nii.gz"))
    label = (np.asarray(image.dataobj) > 0).astype(np.int16)
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / f"sub-{i:02d}_seg.nii.gz"))
    shutil.copy(six / f"sub-{i:02d}.nii.gz", tmp_path)
  config = _config(tmp_path, data_dir).data
  trained = segmentation.train(config, num_classes=2, channels=2, steps=1, batch_size=2,
                               lr=1e-3, seed=0)
  assert trained.info["data_splits"]["splits"] == records[0]["splits"]
  segmenter_files.check_data(trained, config, "a run", "test")
  # The same segmenter, held against the grown folder's test split.
  grown = trained._replace(info=dict(trained.info, data=json.loads(
      _config(seven, data_dir).data.to_json())))
  with pytest.raises(data.DataError, match=r"the test split of .* holds \d+ of the volumes "
                                           r"the segmenter learned from"):
    segmenter_files.check_data(grown, _config(seven, data_dir).data, "a run", "test")


def test_a_run_records_its_splits_and_is_guarded_by_them(records, folders, tmp_path,
                                                         compilation_cache, monkeypatch,
                                                         capsys):
  six, _, data_dir = folders
  folder = tmp_path / "scans"  # the user's folder, which grows after training
  shutil.copytree(six, folder)
  workdir = str(tmp_path / "run")
  monkeypatch.chdir(tmp_path)  # the folders given relative to where training starts
  train.train_and_evaluate(_config("scans", os.path.relpath(data_dir), num_steps=2,
                                   eval_every=2), workdir)
  with open(os.path.join(workdir, split_record.FILE)) as f:
    recorded = json.load(f)
  assert recorded["splits"] == records[0]["splits"]
  assert recorded["manual_dir"] == str(folder)
  # config.json names it absolute: evaluate.py started elsewhere reads the same folder.
  with open(os.path.join(workdir, "config.json")) as f:
    stored = json.load(f)["data"]
  assert stored["manual_dir"] == str(folder) and stored["data_dir"] == data_dir
  counts = [f"{split} {len(records[0]['splits'][split])} volume" for split in data.SPLITS]
  summary = [line for line in capsys.readouterr().err.splitlines() if line.startswith("data:")]
  assert len(summary) == 1 and summary[0].startswith(f"data: nifti {folder}: "), summary
  assert all(count in summary[0] for count in counts), summary
  _write_volume(folder, 6)
  moved = set(records[0]["splits"]["train"]) & set(records[1]["splits"]["test"])
  # Resuming on the grown folder is refused with the workdir as it was.
  before = loop_support.snapshot(workdir)
  capsys.readouterr()
  with pytest.raises(data.DataError, match="the train split of .* is not the one"):
    train.train_and_evaluate(_config(folder, data_dir, num_steps=4, eval_every=2), workdir)
  assert loop_support.snapshot(workdir) == before
  # Nor does it say it resumes, before the refusal.
  assert "resuming" not in capsys.readouterr().err
  # A report of its test split is refused before it writes anything.
  message = f"holds {len(moved)} of the volumes the run in {workdir} learned from"
  with pytest.raises(data.DataError, match=message):
    report.run(workdir, progress=False)
  assert loop_support.snapshot(workdir) == before
  # And so is the explorer of its test split, in one line.
  proc = subprocess.run(
      [sys.executable, os.path.join(loop_support.REPO, "experiments", "explore.py"),
       f"--workdir={workdir}", "--port=0"],
      env=loop_support.child_env(compilation_cache), capture_output=True, text=True,
      timeout=120, check=False)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


def _two_scans_per_subject(folder):
  """A BIDS folder of four subjects with two sessions each: (folder, the volumes' paths)."""
  names = [f"sub-{s:02d}/ses-{t}/anat/sub-{s:02d}_ses-{t}_T1w.nii.gz"
           for s in range(1, 5) for t in (1, 2)]
  for i, name in enumerate(names):
    _write_volume(folder, 100 + i, name)
  return folder, names


def test_a_run_whose_splits_put_a_subject_in_two_is_refused_as_such(folders, tmp_path):
  # Two sessions of each of four BIDS subjects. Split volume by volume (the
  # record of a run that began so, written here from that permutation),
  # sub-02 was in validation and test; split by subject, sub-01's training
  # volumes are in the test split.
  _, _, data_dir = folders
  folder, names = _two_scans_per_subject(tmp_path / "bids")
  by_volume = splits.split_volumes(len(names), (0.7, 0.1, 0.2), 0)
  began = {"dataset": "nifti", "manual_dir": str(folder),
           "splits": {s: [names[i] for i in ids] for s, ids in by_volume.items()}}
  assert began["splits"]["validation"] == [names[2]]  # sub-02, ses-1
  assert names[3] in began["splits"]["test"]  # sub-02, ses-2
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / split_record.FILE).write_text(split_record.to_json(began))
  config = _config(folder, data_dir)
  now = split_record.current(config.data)
  assert now["splits"]["test"] == names[:2]  # sub-01, trained on
  with pytest.raises(data.DataError, match=r"the run began with splits that put volumes of one "
                                           r"subject into two \(sub-02 in validation and test\)"
                                           r", and the build keeps each BIDS subject's volumes "
                                           r"in one split.*train in a new --workdir"):
    split_record.check_resume(str(workdir), now)
  with pytest.raises(data.DataError, match=r"holds 2 of the volumes .*sub-01_ses-1_T1w.*: the "
                                           r"run began with splits that put volumes of one "
                                           r"subject into two \(sub-02 in validation and "
                                           r"test\).*train again"):
    split_record.check_unseen(str(workdir), config.data, "test")


def test_a_run_split_volume_by_volume_on_unchanged_bids_files_is_not_told_to_restore_them(
    folders, tmp_path):
  # Two sessions of sub-00 and four single volumes. Split volume by volume
  # (a run that began so), sub-00 was in one split, yet the subjects'
  # permutation gives the same files other splits: the message named changed
  # files, and told the user to restore a folder nobody had touched.
  _, _, data_dir = folders
  folder = tmp_path / "bids"
  names = ["sub-00_ses-1_T1w.nii.gz", "sub-00_ses-2_T1w.nii.gz"] + [f"x{i:02d}.nii.gz"
                                                                   for i in range(4)]
  for i, name in enumerate(names):
    _write_volume(folder, 200 + i, name)
  by_volume = splits.split_volumes(len(names), (0.7, 0.1, 0.2), 0)
  began = {"dataset": "nifti", "manual_dir": str(folder),
           "splits": {s: [names[i] for i in ids] for s, ids in by_volume.items()}}
  assert any(set(ids) >= {0, 1} for ids in by_volume.values())  # sub-00 in one split
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / split_record.FILE).write_text(split_record.to_json(began))
  config = _config(folder, data_dir)
  now = split_record.current(config.data)
  assert now["splits"] != began["splits"]
  reason = (r"the folder's files are those the run began with, but its splits were made "
            r"volume by volume, and the build now permutes BIDS subjects, keeping each "
            r"subject's volumes in one split \(sub-00 has 2 volumes\)")
  with pytest.raises(data.DataError, match=reason + r", so the run cannot go on with its data: "
                                           r"train in a new --workdir") as e:
    split_record.check_resume(str(workdir), now)
  assert "Restore" not in str(e.value)
  with pytest.raises(data.DataError, match=r"holds 1 of the volumes .*: " + reason +
                                           r": train again") as e:
    split_record.check_unseen(str(workdir), config.data, "test")
  assert "as it was" not in str(e.value)


def test_a_run_without_a_record_on_a_folder_of_several_volumes_per_subject_is_refused(
    folders, tmp_path):
  # A run that began before runs recorded their splits was split volume by
  # volume: with two sessions per subject, today's test split (by subject)
  # held its training volumes, and it was scored and resumed unchecked.
  _, _, data_dir = folders
  folder, names = _two_scans_per_subject(tmp_path / "bids")
  by_volume = splits.split_volumes(len(names), (0.7, 0.1, 0.2), 0)
  config = _config(folder, data_dir)
  now = split_record.current(config.data)
  # The volume-by-volume rule trained on volumes the subject rule tests on.
  assert set(now["splits"]["test"]) & {names[i] for i in by_volume["train"]}
  workdir = tmp_path / "run"
  workdir.mkdir()
  reason = (r"it began before runs recorded their splits \(or the record was deleted\), when a "
            r"NIfTI folder was split volume by volume, and the build now keeps each BIDS "
            r"subject's volumes in one split \(sub-01 has 2 volumes in .*bids\)")
  with pytest.raises(data.DataError, match=rf"the run in {workdir} recorded no splits \(no "
                                           rf"data_splits\.json\): {reason}, so it would go on "
                                           r"with other training volumes: train in a new "
                                           r"--workdir"):
    split_record.check_resume(str(workdir), now)
  with pytest.raises(data.DataError, match=rf"the run in {workdir} recorded no splits \(no "
                                           rf"{workdir}/data_splits\.json\): {reason}, so the "
                                           r"test split can hold volumes it learned from: train "
                                           r"again, or score volumes of other subjects"):
    split_record.check_unseen(str(workdir), config.data, "test")
  # Scored whole as another folder (--data), it is not the folder split then.
  split_record.check_unseen(str(workdir), data.folder_config(config.data, str(folder)), "test")
