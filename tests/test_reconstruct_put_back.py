"""hyperrecon_jax.reconstruct.put_back: model-grid slices back in the input's units and grid.

Two inputs the put-back must not treat as the model's own: a fastMRI ``.h5``
image whose intensities are far from [0, 1], and a NIfTI volume whose
in-plane voxels are not square. Orientation and memory are in
tests/test_reconstruct.py.
"""

import nibabel as nib
import numpy as np
from test_scans import data_config
from test_scans import h5_file
from test_scans import head

from hyperrecon_jax import reconstruct as rc


def test_an_h5_image_comes_back_in_its_own_units(tmp_path):
  # A target of intensities up to ~100 on the model's own 32×32 grid: no
  # resampling, so the slices are the image divided by its maximum, and
  # putting them back must multiply that maximum in again.
  image = (head((32, 32, 2)).transpose(2, 0, 1) * 100).astype(np.float32)
  scan = rc.read_input(h5_file(tmp_path / "scan.h5", reconstruction_esc=image), data_config(32))
  assert scan.kind == "h5" and scan.scale == float(image.max()) and scan.scale > 90
  back = rc.put_back(scan, scan.images)
  # Divided and multiplied again in float32: two roundings of 2^-24 relative each.
  np.testing.assert_allclose(back, image, rtol=1e-6, atol=0)


def test_anisotropic_voxels_come_back_on_their_own_grid(tmp_path):
  # 0.5 mm × 1 mm in-plane voxels: the 60 × 30 axial plane is 30 mm square.
  # A ramp linear in both axes, 30 to 100, on a block with a zero border; the
  # 100th percentile makes the scale the ramp's maximum, so nothing is clipped.
  ras = np.zeros((60, 30, 4), np.float32)
  x, y = np.mgrid[0:48, 0:24].astype(np.float32)
  ras[6:-6, 3:-3, :] = (30 + 70 * (x / 47 + y / 23) / 2)[..., None]
  path = str(tmp_path / "aniso.nii.gz")
  nib.save(nib.Nifti1Image(ras, np.diag([0.5, 1.0, 1.0, 1.0])), path)
  scan = rc.read_input(path, data_config(32, percentile=100.0))
  assert scan.plane_spacing == (1.0, 0.5) and scan.box == (0, 30, 2, 58)
  assert scan.scale == 100.0
  back = rc.put_back(scan, scan.images)
  # Away from the block's edges every step is a normalized weighting of
  # ramp values (the anti-alias Gaussian, linear interpolation both ways),
  # which reproduces a linear function, so only float32 roundoff is left:
  # ~1e-5 on values ≤ 100 (1e-3 leaves 100× that), where a plane put back on
  # square voxels is off by whole units. How far an edge reaches: along x the
  # box's 56 voxels become 30 pixels (1.87 voxels each), each pixel reading
  # voxels within 3 of it (the Gaussian, σ = 0.43 truncated at 4σ, then
  # interpolation) and each voxel the pixels within 1.87 of it: 5 voxels.
  # Along y 30 rows become 32 pixels, unfiltered: 2 voxels.
  inner = (slice(6 + 5, 54 - 5), slice(3 + 2, 27 - 2))
  np.testing.assert_allclose(back[inner], ras[inner], atol=1e-3)
