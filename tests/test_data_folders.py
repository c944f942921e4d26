"""hyperrecon_jax.data.folders: a folder of a user's volumes, read without a build.

The folders are tiny synthetic NIfTI volumes (`loop_support.write_site`) and
empty ``.h5`` files (a folder's kind is told by its file names). The refusals
through a report (an empty, mixed or missing folder, the MNI152 template) are
in `tests/test_report.py`.
"""

import gzip
import os
import shutil

import configs
import loop_support
import nibabel as nib
import numpy as np
import pytest

from hyperrecon_jax.data import common
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
  with pytest.raises(common.DataError, match=r"sub-01.nii.gz: a file; give a folder"):
    folders.folder_dataset(os.path.join(site, "sub-01.nii.gz"))


def test_volume_files_are_the_volumes_in_id_order_without_labels(tmp_path):
  site = loop_support.write_site(tmp_path / "site", (3, 1, 2), labels=(3, 2, 1))
  assert folders.volume_files(_nifti_config(site)) == [
      "sub-01.nii.gz", "sub-02.nii.gz", "sub-03.nii.gz"]
  cfg = _nifti_config(site)
  cfg.name = "mni152"
  with pytest.raises(common.DataError, match="mni152 is not a folder of volumes"):
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
  assert tuple(scored.split_fractions) == common.EVALUATION_ONLY == (0.0, 0.0, 1.0)
  for field in ("image_size", "axis", "percentile", "min_foreground"):
    assert scored[field] == trained[field], field
  assert trained.manual_dir == str(tmp_path / "elsewhere")  # the model's config is kept
  # A model of fastMRI knees does not score brain volumes, read and scaled otherwise.
  knee_model = _nifti_config(tmp_path / "knees")
  knee_model.name = "fastmri_knee"
  with pytest.raises(common.DataError, match=r"the model learned from fastMRI \.h5 files and "
                                             r".*site holds NIfTI volumes"):
    folders.folder_config(knee_model, site)
  shutil.rmtree(site)
  with pytest.raises(common.DataError, match=r"site: no such folder"):
    folders.folder_config(trained, site)
