"""hyperrecon_jax.data.nifti_files: which files a folder of NIfTI volumes holds, how they pair.

On tiny synthetic NIfTI volumes (`test_data_nifti.synthetic_volume`).
"""

import os
import re

import numpy as np
import pytest
from test_data_nifti import BRAIN_Z
from test_data_nifti import nifti_config
from test_data_nifti import save_nifti
from test_data_nifti import synthetic_volume

import hyperrecon_jax as hr
from hyperrecon_jax.data import nifti_files


def test_seg_suffix_convention(tmp_path):
  rng = np.random.default_rng(1)
  for i in range(3):
    image, label = synthetic_volume(rng)
    save_nifti(image, tmp_path / f"s{i}.nii.gz")
    save_nifti(label, tmp_path / f"s{i}_seg.nii.gz")
  cfg = nifti_config(tmp_path, tmp_path / "tfds")
  assert hr.data.has_labels(cfg)
  assert sum(hr.data.num_examples(cfg, s) for s in hr.data.SPLITS) == 3 * len(BRAIN_Z)


def test_some_labels_missing(tmp_path):
  rng = np.random.default_rng(3)
  for i in range(3):
    image, label = synthetic_volume(rng)
    save_nifti(image, tmp_path / f"s{i}.nii.gz")
    if i:
      save_nifti(label, tmp_path / f"s{i}_seg.nii.gz")
  with pytest.raises(hr.data.DataError, match="s0.nii.gz"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))


def test_missing_or_empty_manual_dir(tmp_path):
  (tmp_path / "notes.txt").write_text("no volumes here")
  for folder in ("", str(tmp_path / "nope"), str(tmp_path)):
    with pytest.raises(hr.data.DataError, match="ABIDE") as info:
      hr.data.num_examples(nifti_config(folder, tmp_path / "tfds"), "train")
    assert ".nii" in str(info.value)


def test_hidden_folders_are_not_searched_and_linked_ones_are_once(tmp_path):
  rng = np.random.default_rng(9)
  site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
  for folder in (site / ".Trash-1000" / "files", site / ".snapshot", elsewhere):
    folder.mkdir(parents=True)
  for rel in ("sub-00.nii.gz", "sub-01.nii.gz", ".Trash-1000/files/sub-01.nii.gz",
              ".snapshot/sub-00.nii.gz", "../elsewhere/sub-02.nii.gz"):
    save_nifti(synthetic_volume(rng)[0], site / rel)
  os.symlink(elsewhere, site / "scanner2")  # a site's scans linked in
  os.symlink(elsewhere, site / "scanner2_again")  # the same folder twice
  os.symlink(site, site / "scanner2" / "back")  # a cycle
  found = [image for image, _ in nifti_files.find_files(str(site), labels=False)]
  assert found == ["scanner2/sub-02.nii.gz", "sub-00.nii.gz", "sub-01.nii.gz"]


def test_a_link_to_a_volume_that_is_gone_is_named_as_such(tmp_path):
  # It read "[Errno 2] No such file or directory: '…/sub-08.nii.gz'", of a
  # file the user could see listed.
  rng = np.random.default_rng(11)
  for i in range(3):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  os.symlink(tmp_path / "moved" / "s3.nii.gz", tmp_path / "s3.nii.gz")
  with pytest.raises(hr.data.DataError, match=r"s3\.nii\.gz is a symbolic link to "
                                              r"'.*moved/s3\.nii\.gz', which does not exist"):
    nifti_files.find_files(str(tmp_path), labels=False)


def test_a_suffix_in_another_case_is_named_not_left_out(tmp_path):
  # A.NII and B.Nii.Gz were left out of the build without a word.
  rng = np.random.default_rng(12)
  for name in ("A.NII", "B.Nii.Gz", "c.nii"):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"{name.lower()}.tmp.nii")
    os.rename(tmp_path / f"{name.lower()}.tmp.nii", tmp_path / name)  # nibabel mends the case
  with pytest.raises(hr.data.DataError, match=rf"{re.escape(str(tmp_path))} holds A\.NII, "
                                              r"B\.Nii\.Gz, whose suffix is not in lower case "
                                              r"\(\.nii\.gz, \.nii\): rename them"):
    nifti_files.find_files(str(tmp_path), labels=False)


def test_a_folder_that_cannot_be_listed_is_named_not_left_out(tmp_path, monkeypatch):
  # os.walk skipped a folder it could not list: its volumes were left out of
  # the build without a word, and a user with other permissions got other
  # splits. A scandir that fails stands for `chmod 000`, which root ignores.
  rng = np.random.default_rng(13)
  (tmp_path / "site2").mkdir()
  (tmp_path / "lost+found").mkdir()  # a file system's root: root's alone, and no subject
  for rel in ("s0.nii.gz", "s1.nii.gz", "site2/s2.nii.gz"):
    save_nifti(synthetic_volume(rng)[0], tmp_path / rel)
  scandir, unreadable = os.scandir, {"lost+found"}

  def failing(path):
    if os.path.basename(os.fspath(path)) in unreadable:
      raise PermissionError(13, "Permission denied", os.fspath(path))
    return scandir(path)

  monkeypatch.setattr(os, "scandir", failing)
  found = [image for image, _ in nifti_files.find_files(str(tmp_path), labels=False)]
  assert found == ["s0.nii.gz", "s1.nii.gz", "site2/s2.nii.gz"]
  unreadable.add("site2")
  with pytest.raises(hr.data.DataError, match=rf"{re.escape(str(tmp_path / 'site2'))} cannot be "
                                              r"searched \(Permission denied\): the volumes in "
                                              r"it would be left out"):
    nifti_files.find_files(str(tmp_path), labels=False)


def test_a_name_that_is_not_utf8_is_refused_before_the_build(tmp_path):
  # TFDS failed on it after reading every earlier volume, with a traceback
  # that named no file.
  rng = np.random.default_rng(14)
  for name in ("s0.nii.gz", "s1.nii.gz"):
    save_nifti(synthetic_volume(rng)[0], tmp_path / name)
  os.rename(os.fsencode(tmp_path / "s1.nii.gz"), os.fsencode(tmp_path) + b"/s_pl\xe9in.nii.gz")
  with pytest.raises(hr.data.DataError, match=r"holds 's_pl\\xe9in\.nii\.gz', whose path is "
                                              r"not valid UTF-8 .*: rename them"):
    nifti_files.find_files(str(tmp_path), labels=False)


@pytest.mark.parametrize("labelled", [(1, 2), (0,)])
def test_a_folder_with_some_volumes_unlabelled_is_refused(tmp_path, labelled):
  rng = np.random.default_rng(18)
  for i in range(3):
    image, label = synthetic_volume(rng)
    save_nifti(image, tmp_path / f"s{i}.nii.gz")
    if i in labelled:
      save_nifti(label, tmp_path / f"s{i}_seg.nii.gz")
  missing = [f"s{i}.nii.gz" for i in range(3) if i not in labelled]
  with pytest.raises(hr.data.DataError, match=re.escape(
      f"nifti: {len(missing)} of 3 volumes in {str(tmp_path)!r} have no label volume "
      f"(e.g. {missing}); give every volume a label or none.")):
    nifti_files.find_files(str(tmp_path))


@pytest.mark.parametrize("label_name", ["labels/sub-01.nii.gz", "sub-01_seg.nii.gz",
                                        "labels/site/s0.nii.gz"])
def test_a_label_volume_of_no_image_is_named_not_left_unread(tmp_path, label_name):
  # Labels named after the subject (sub-01_seg) for images named after the
  # scan (sub-01_T1w) paired with nothing: every image went unlabelled, and
  # the folder was built as one without labels, without a word.
  rng = np.random.default_rng(30)
  (tmp_path / "labels" / "site").mkdir(parents=True)
  for name in ("sub-00_T1w.nii.gz", "sub-01_T1w.nii.gz", "s0.nii.gz"):
    save_nifti(synthetic_volume(rng)[0], tmp_path / name)
  save_nifti(synthetic_volume(rng)[1], tmp_path / label_name)
  with pytest.raises(hr.data.DataError, match=re.escape(
      f"nifti: {str(tmp_path)!r} holds {label_name}, named as a label volume but of no image "
      "(the label of <dir>/<stem>.nii.gz is <dir>/<stem>_seg.nii.gz or "
      "labels/<dir>/<stem>.nii.gz, either suffix): rename them")):
    nifti_files.find_files(str(tmp_path))
  # A folder that is only scored reads no label: the same files are fine.
  found = [image for image, _ in nifti_files.find_files(str(tmp_path), labels=False)]
  assert found == ["s0.nii.gz", "sub-00_T1w.nii.gz", "sub-01_T1w.nii.gz"]


def test_scans_of_another_format_in_the_folder_are_named_not_left_out(tmp_path):
  # FreeSurfer's brain.mgz, an Analyze pair and a fastMRI file beside the
  # NIfTI volumes were left out of the build without a word.
  rng = np.random.default_rng(33)
  for name in ("s0.nii.gz", "s1.nii", "s2.nii.gz"):
    save_nifti(synthetic_volume(rng)[0], tmp_path / name)
  (tmp_path / "notes.txt").write_text("scanned 2026-11-02")  # not a scan: no matter
  (tmp_path / "sourcedata").mkdir()
  (tmp_path / "sourcedata" / "s0.dcm").write_bytes(b"")  # BIDS keeps DICOMs beside NIfTI
  assert len(nifti_files.find_files(str(tmp_path))) == 3
  (tmp_path / "fs").mkdir()
  for name in ("fs/brain.mgz", "s3.hdr", "s3.img", "knee.h5"):
    (tmp_path / name).write_bytes(b"")
  for labels in (True, False):
    with pytest.raises(hr.data.DataError, match=re.escape(
        f"nifti: {str(tmp_path)!r} holds fs/brain.mgz, knee.h5, s3.hdr and 1 more, scans of "
        "another format (Analyze, FreeSurfer, HDF5, fastMRI's) than the .nii.gz, .nii files "
        "that nifti reads: they would be left out of the dataset. Convert them, or move them "
        "out of the folder.")):
      nifti_files.find_files(str(tmp_path), labels=labels)


def test_an_image_with_two_label_volumes_is_refused(tmp_path):
  # labels/s1.nii.gz won over s1_seg.nii.gz without a word.
  rng = np.random.default_rng(31)
  (tmp_path / "labels").mkdir()
  for i in range(3):
    image, label = synthetic_volume(rng)
    save_nifti(image, tmp_path / f"s{i}.nii.gz")
    save_nifti(label, tmp_path / f"s{i}_seg.nii.gz")
  save_nifti(synthetic_volume(rng)[1], tmp_path / "labels" / "s1.nii")
  with pytest.raises(hr.data.DataError, match=re.escape(
      f"nifti: s1.nii.gz in {str(tmp_path)!r} has 2 label volumes, labels/s1.nii and "
      "s1_seg.nii.gz: keep one.")):
    nifti_files.find_files(str(tmp_path))


@pytest.mark.parametrize("labels", [True, False])
def test_masks_and_segmentations_named_as_bids_names_them_are_not_taken_for_scans(tmp_path,
                                                                                 labels):
  # fMRIPrep's folder holds sub-00_desc-brain_mask.nii.gz and sub-00_dseg.nii.gz
  # beside the image: each was one more scan to train on and to score.
  rng = np.random.default_rng(32)
  (tmp_path / "anat").mkdir()
  for name in ("sub-00_desc-preproc_T1w.nii.gz", "anat/sub-01_T1w.nii.gz", "sub-02_T1w.nii"):
    image, label = synthetic_volume(rng)
    save_nifti(image, tmp_path / name)
    save_nifti(label, tmp_path / name.replace("_T1w.nii", "_T1w_seg.nii"))
  for name in ("sub-00_desc-brain_mask.nii.gz", "sub-00_dseg.nii",
               "anat/sub-01_label-GM_probseg.nii.gz", "sub-02_brainmask.nii.gz"):
    save_nifti(synthetic_volume(rng)[1], tmp_path / name)
  pairs = nifti_files.find_files(str(tmp_path), labels=labels)
  images = ["anat/sub-01_T1w.nii.gz", "sub-00_desc-preproc_T1w.nii.gz", "sub-02_T1w.nii"]
  assert [image for image, _ in pairs] == images
  assert [label for _, label in pairs] == ([
      "anat/sub-01_T1w_seg.nii.gz", "sub-00_desc-preproc_T1w_seg.nii.gz", "sub-02_T1w_seg.nii"]
      if labels else [None] * 3)
