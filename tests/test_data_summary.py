"""Tests of hyperrecon_jax.data.summary: a folder build's splits in words."""

import configs
import loop_support
import nibabel as nib
import numpy as np

from hyperrecon_jax import report
from hyperrecon_jax.data import sources
from hyperrecon_jax.data import summary

SIZE = 32


def _padded(site, seed):
  """``site``'s volume of ``seed`` padded into a field of view 10× as wide on each side.

  The brain of `loop_support.write_site` covers about half of each of its
  20 × 24 planes; padded to 200 × 240 it covers 0.5 %, below the default
  min_foreground of 1 %, so the volume keeps no slice.
  """
  path = f"{site}/sub-{seed:02d}.nii.gz"
  image = np.asarray(nib.load(path).dataobj)
  big = np.zeros((200, 240, image.shape[2]), image.dtype)
  big[90:110, 108:132] = image
  nib.save(nib.Nifti1Image(big, np.eye(4)), f"{site}/sub-{seed:02d}-wide.nii.gz")


def test_describe_counts_each_split_and_names_a_volume_without_a_slice(tmp_path):
  site = loop_support.write_site(tmp_path / "site", (1, 2, 3))
  _padded(site, 2)
  cfg = configs.folder_data("nifti", site, tmp_path / "tfds", SIZE)
  lines = summary.describe(cfg)
  # The counts, computed here from the build's own volume lists.
  expected = []
  for split in ("train", "validation", "test"):
    volumes = sources.volumes(cfg, split)
    n, slices = len(volumes), sum(len(v.slices) for v in volumes)
    expected.append(f"{split} {n} volume{'s' * (n != 1)}, {slices} slice{'s' * (slices != 1)}")
    if any(v.name == "sub-02-wide.nii.gz" for v in volumes):
      where = split
  assert lines[0] == f"data: nifti {site}: {'; '.join(expected)}"
  assert lines[1].startswith(f"warning: 1 volume kept no slice and is neither trained on nor "
                             f"scored: sub-02-wide.nii.gz ({where}). Every plane had less "
                             f"foreground than data.min_foreground={cfg.min_foreground:g}")
  assert cfg.min_foreground == 0.01  # the default, which the padded volume is below
  assert len(lines) == 2


def test_describe_says_nothing_of_the_embedded_template(tmp_path):
  cfg = configs.default().data
  assert summary.describe(cfg) == []


def test_a_report_of_a_folder_names_its_volumes_without_a_slice():
  result = {"best": {"psnr": None},
            "data": {"without_slices": ["a.nii.gz", "b.nii"], "min_foreground": 0.05}}
  assert report.volume_lines(result, "zero-filled") == [
      "warning: 2 volumes kept no slice and are neither trained on nor scored: a.nii.gz, "
      "b.nii. Every plane had less foreground than data.min_foreground=0.05 (a volume "
      "padded far beyond its head, or a very dark one)"]
