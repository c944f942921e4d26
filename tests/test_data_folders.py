"""hyperrecon_jax.data.folders: a folder of a user's volumes, read without a build.

The folders are tiny synthetic NIfTI volumes (`loop_support.write_site`) and
empty ``.h5`` files (a folder's kind is told by its file names). The refusals
through a report (an empty, mixed or missing folder, the MNI152 template) are
in `tests/test_report.py`.
"""

import gzip
import os
import re
import shutil

import configs
import loop_support
import nibabel as nib
import numpy as np
import pytest

import hyperrecon_jax as hr
from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors
from hyperrecon_jax.data import folders


def _nifti_config(folder):
  cfg = configs.default().data
  cfg.update(name="nifti", manual_dir=str(folder), image_size=32, percentile=99.5)
  return cfg


def test_a_folder_s_kind_is_told_by_its_files(tmp_path):
  site = loop_support.write_site(tmp_path / "site", (1,))
  assert folders.folder_dataset(site) == "nifti"
  knee = tmp_path / "knee"
  (knee / "deep").mkdir(parents=True)
  (knee / "deep" / "file1000.h5").write_bytes(b"")
  assert folders.folder_dataset(str(knee)) == "fastmri_knee"
  with pytest.raises(data_errors.DataError, match=r"sub-01.nii.gz: a file; give a folder"):
    folders.folder_dataset(os.path.join(site, "sub-01.nii.gz"))


def test_volume_files_are_the_volumes_in_id_order_without_labels(tmp_path):
  site = loop_support.write_site(tmp_path / "site", (3, 1, 2), labels=(3, 2, 1))
  assert folders.volume_files(_nifti_config(site)) == [
      "sub-01.nii.gz", "sub-02.nii.gz", "sub-03.nii.gz"]
  cfg = _nifti_config(site)
  cfg.name = "mni152"
  with pytest.raises(data_errors.DataError, match="mni152 is not a folder of volumes"):
    folders.volume_files(cfg)


def test_a_volume_s_digest_is_that_of_its_voxels(tmp_path):
  site = loop_support.write_site(tmp_path / "site", (1, 2))
  cfg = _nifti_config(site)
  first, second = (folders.content_digest(cfg, f"sub-0{i}.nii.gz") for i in (1, 2))
  assert len(first) == 64 and first != second
  # The same voxels in other bytes: gunzipped, and scaled by 2 (the percentile
  # normalization divides the factor out exactly, a power of two).
  with gzip.open(os.path.join(site, "sub-01.nii.gz")) as f:
    (tmp_path / "site" / "plain.nii").write_bytes(f.read())
  image = nib.load(os.path.join(site, "sub-01.nii.gz"))
  nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 2, image.affine),
           os.path.join(site, "double.nii.gz"))
  assert folders.content_digest(cfg, "plain.nii") == first
  assert folders.content_digest(cfg, "double.nii.gz") == first


def test_folder_config_scores_the_folder_as_the_model_s_data(tmp_path):
  site = loop_support.write_site(tmp_path / "site", (1,))
  trained = _nifti_config(tmp_path / "elsewhere")
  trained.update(image_size=48, axis="coronal", percentile=99.0, min_foreground=0.05)
  scored = folders.folder_config(trained, site)
  assert scored.name == "nifti" and scored.manual_dir == os.path.abspath(site)
  assert tuple(scored.split_fractions) == config_fields.EVALUATION_ONLY == (0.0, 0.0, 1.0)
  for field in ("image_size", "axis", "percentile", "min_foreground"):
    assert scored[field] == trained[field], field
  assert trained.manual_dir == str(tmp_path / "elsewhere")  # the model's config is kept
  # A model of fastMRI knees does not score brain volumes, read and scaled otherwise.
  knee_model = _nifti_config(tmp_path / "knees")
  knee_model.name = "fastmri_knee"
  with pytest.raises(data_errors.DataError, match=r"the model learned from fastMRI \.h5 files and "
                                             r".*site holds NIfTI volumes"):
    folders.folder_config(knee_model, site)
  shutil.rmtree(site)
  with pytest.raises(data_errors.DataError, match=r"site: no such folder"):
    folders.folder_config(trained, site)


def test_a_folder_under_the_home_is_named_with_a_tilde(tmp_path, monkeypatch):
  # `--data=~/site` reaches the library as it is: bash expands `~` only at
  # the start of a word or after `=` of an assignment, not after `--data=`.
  monkeypatch.setenv("HOME", str(tmp_path))
  site = loop_support.write_site(tmp_path / "site", (1, 2))
  assert folders.folder_dataset("~/site") == "nifti"
  scored = folders.folder_config(_nifti_config(tmp_path / "elsewhere"), "~/site")
  assert scored.manual_dir == site
  assert folders.volume_files(scored) == ["sub-01.nii.gz", "sub-02.nii.gz"]
  with pytest.raises(data_errors.DataError, match=rf"^{re.escape(str(tmp_path / 'nope'))}: no such "
                                             r"folder"):
    folders.folder_config(_nifti_config(site), "~/nope")


def test_a_relative_folder_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
  # The report and the split checks read the folder again, maybe from
  # another working directory.
  loop_support.write_site(tmp_path / "site", (1,))
  monkeypatch.chdir(tmp_path)
  scored = folders.folder_config(_nifti_config(tmp_path / "elsewhere"), "site")
  assert scored.manual_dir == str(tmp_path / "site")


def test_a_model_of_the_embedded_template_scores_a_folder_as_nifti(tmp_path):
  site = loop_support.write_site(tmp_path / "site", (1,))
  trained = configs.default().data
  assert trained.name == "mni152"
  scored = folders.folder_config(trained, site)
  assert scored.name == "nifti" and trained.name == "mni152"


def test_a_folder_scored_whole_lists_its_volumes_whatever_their_labels(tmp_path):
  # Labels play no part in a folder scored whole: some volumes with a label
  # file and some without are listed, not refused.
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3), labels=(3, 2, 1))
  os.remove(os.path.join(site, "sub-02_seg.nii.gz"))
  assert folders.volume_files(_nifti_config(site)) == [
      "sub-01.nii.gz", "sub-02.nii.gz", "sub-03.nii.gz"]


def test_a_volume_s_digest_is_the_build_s_at_the_model_s_percentile(tmp_path):
  # The split checks compare these digests with a build's, so they must
  # normalize by the config's percentile, not the default 99.5.
  site = loop_support.write_site(tmp_path / "site", (1, 2))
  trained = _nifti_config(tmp_path / "elsewhere")
  trained.update(percentile=90.0, data_dir=str(tmp_path / "tfds"), num_threads=0)
  scored = folders.folder_config(trained, site)
  built = {v.name: v.content_sha256 for v in hr.data.volumes(scored, "test")}
  assert sorted(built) == ["sub-01.nii.gz", "sub-02.nii.gz"]
  for name, digest in built.items():
    assert folders.content_digest(scored, name) == digest
    # The percentile changes the voxels, so the digest tells them apart.
    assert folders.content_digest(dict(scored.to_dict(), percentile=99.5), name) != digest
