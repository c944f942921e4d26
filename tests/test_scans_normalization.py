"""hyperrecon_jax.scans: a NIfTI volume's intensities as the model reads them.

What the percentile scale and the clip to [0, 1] do to voxels at the edges of
the intensity range: negative ones beside the foreground, and a noise floor
too faint to count as positive. The rest of reading a scan is in
tests/test_scans.py.
"""

import nibabel as nib
import numpy as np
from test_scans import data_config
from test_scans import head

from hyperrecon_jax import scans


def test_negative_voxels_are_zero_before_the_slices_are_resized(tmp_path):
  # A 4-voxel border of −500 around a head of 200–1000: the 40×40 plane is
  # resized to 32×32, whose anti-alias filter and interpolation mix the
  # border into the head's edge. Clipped to [0, 1] first, as the data
  # pipeline's volumes are, the border reads as the zeros of a volume that
  # never had negative voxels (the same scale: negative voxels are not
  # positive, nor the maximum).
  clean = head() * 1000
  negative = np.where(clean > 0, clean, np.float32(-500))
  for name, volume in (("clean", clean), ("negative", negative)):
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / f"{name}.nii"))
  want = scans.read_input(str(tmp_path / "clean.nii"), data_config(32))
  got = scans.read_input(str(tmp_path / "negative.nii"), data_config(32))
  assert got.scale == want.scale
  np.testing.assert_array_equal(got.images, want.images)


def test_a_noise_floor_is_not_counted_among_the_positive_voxels(tmp_path):
  # 200 voxels of 1–2 and a floor of at most 1e-6 everywhere else: below
  # `slicing.POSITIVE_FRACTION` (1e-6) of the maximum (≥ 1), so not positive.
  # The scale warning counts 200 positive voxels, 1.0 of them above the
  # 99.5th percentile (200 · 0.005), not the 800 voxels above 0.
  rng = np.random.default_rng(0)
  volume = rng.uniform(1e-9, 1e-6, (20, 20, 2)).astype(np.float32)
  volume[5:15, 5:15, :] = rng.uniform(1, 2, (10, 10, 2))
  nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "floor.nii.gz"))
  (line,) = scans.read_input(str(tmp_path / "floor.nii.gz"), data_config(16)).warnings
  assert "rests on 1 of the scan's 200 positive voxels" in line, line
