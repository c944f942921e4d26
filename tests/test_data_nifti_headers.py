"""hyperrecon_jax.data.nifti_headers: a folder's NIfTI headers, checked before a build.

On tiny synthetic NIfTI volumes (`test_data_nifti.synthetic_volume`).
"""

import re

import nibabel as nib
import numpy as np
import pytest
from test_data_nifti import nifti_config
from test_data_nifti import save_nifti
from test_data_nifti import synthetic_volume

import hyperrecon_jax as hr
from hyperrecon_jax.data import nifti_headers


@pytest.mark.parametrize("kind", ["garbage", "2d", "label_shape", "label_axes"])
def test_bad_file_is_named(tmp_path, kind):
  rng = np.random.default_rng(4)
  for i in range(3):
    image, label = synthetic_volume(rng)
    save_nifti(image, tmp_path / f"s{i}.nii.gz")
    if kind == "label_shape":
      save_nifti(label[:, :, :5] if i == 1 else label, tmp_path / f"s{i}_seg.nii.gz")
    if kind == "label_axes":
      # The image's voxels under a header whose first axis points left: it was
      # turned to RAS mirrored against its image.
      affine = np.diag([-1.0, 1.0, 1.0, 1.0]) if i == 1 else np.eye(4)
      nib.save(nib.Nifti1Image(label, affine), str(tmp_path / f"s{i}_seg.nii.gz"))
  if kind == "garbage":
    (tmp_path / "s1.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
  elif kind == "2d":
    save_nifti(np.ones((8, 8), np.float32), tmp_path / "s1.nii.gz")
  bad = "s1_seg.nii.gz" if kind.startswith("label") else "s1.nii.gz"
  if kind == "label_axes":
    bad += r": its voxel axes point LAS, those of the image .*s1\.nii\.gz RAS"
  with pytest.raises(hr.data.DataError, match=bad):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))


@pytest.mark.parametrize("affine, problem", [
    (np.diag([1.0, 1.0, 0.0, 1.0]), "is singular"),  # a zero voxel size
    (np.array([[1.0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]]), "is singular"),
    (np.diag([1.0, np.nan, 1.0, 1.0]), "holds NaN or ±Inf"),
])
@pytest.mark.parametrize("which", ["s1.nii.gz", "s1_seg.nii.gz"])
def test_a_volume_without_orientation_is_named_by_the_build(tmp_path, affine, problem, which):
  # It read "cannot be read as a NIfTI image (sequence item 0: expected str
  # instance, NoneType found)".
  rng = np.random.default_rng(6)
  for i in range(3):
    image, label = synthetic_volume(rng)
    for array, name in ((image, f"s{i}.nii.gz"), (label, f"s{i}_seg.nii.gz")):
      img = nib.Nifti1Image(array, np.eye(4) if name != which else None)
      if name == which:  # the header alone: nibabel builds no image of such an affine
        img.header.set_sform(affine, 2)
        img.header.set_qform(None, 0)
      nib.save(img, str(tmp_path / name))
  np.testing.assert_array_equal(nib.load(str(tmp_path / which)).affine, affine)
  with pytest.raises(hr.data.DataError, match=rf"^{re.escape(str(tmp_path / which))}: its "
                                              rf"affine \(the header's voxel-to-world matrix\) "
                                              rf"{problem}.*, so the volume has no orientation; "
                                              r"fix the header\.$"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))


@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.2), (0.0, 0.0, 1.0)])
def test_a_reconstruct_output_in_the_folder_is_refused_not_taken_for_a_scan(tmp_path, fractions):
  # reconstruct.py --output=site/a_recon.nii.gz beside site/a.nii.gz: the
  # model's own output would be scored (evaluate.py --data) or trained on as
  # another subject's scan. Its header's description says what it is.
  rng = np.random.default_rng(14)
  for i in range(3):
    save_nifti(synthetic_volume(rng)[0], tmp_path / f"s{i}.nii.gz")
  recon = nib.Nifti1Image(synthetic_volume(rng)[0], np.eye(4))
  recon.header["descrip"] = b"hyperrecon lam=0.5"
  nib.save(recon, str(tmp_path / "s0_recon.nii.gz"))
  with pytest.raises(hr.data.DataError, match=r"s0_recon\.nii\.gz: .*reconstruct\.py's output "
                                              r"\(its header says 'hyperrecon lam=0\.5'\)"):
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds", split_fractions=fractions))
  assert not list((tmp_path / "tfds").glob("nifti/*"))


# float32's relative spacing, and the affines' tolerance for 1 mm voxels at
# the origin: 4·sqrt(3·2⁻²³) mm (nifti_headers._affine_tolerance).
EPS32 = 2.0 ** -23
TOLERANCE_1MM = 4 * np.sqrt(3 * EPS32)


@pytest.mark.parametrize("affine, differ", [
    (np.diag([1.2, 1.2, 1.2, 1.0]), r"voxel sizes \(1\.2, 1\.2, 1\.2\) mm, origin \(0, 0, 0\) mm"),
    (np.array([[1.0, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
     r"voxel sizes \(1, 1, 1\) mm, origin \(0\.5, 0, 0\) mm"),
    (np.array([[1.0, 0, 0, 0.0025], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
     r"voxel sizes \(1, 1, 1\) mm, origin \(0\.0025, 0, 0\) mm"),
])
def test_a_label_of_another_grid_of_the_same_shape_is_refused(tmp_path, affine, differ):
  rng = np.random.default_rng(15)
  for i in range(3):
    image, label = synthetic_volume(rng)
    save_nifti(image, tmp_path / f"s{i}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine if i == 1 else np.eye(4)),
             str(tmp_path / f"s{i}_seg.nii.gz"))
  assert TOLERANCE_1MM < 0.0025  # 2.39e-3 mm: the last case is just beyond it
  with pytest.raises(hr.data.DataError) as info:
    hr.data.prepare(nifti_config(tmp_path, tmp_path / "tfds"))
  assert re.fullmatch(
      rf"{re.escape(str(tmp_path / 's1_seg.nii.gz'))}: its affine \(voxel-to-world matrix\) "
      rf"differs from that of the image {re.escape(str(tmp_path / 's1.nii.gz'))} by up to .* "
      rf"mm, more than float32 storage explains \(0\.00239 mm\): the label's {differ}, the "
      r"image's voxel sizes \(1, 1, 1\) mm, origin \(0, 0, 0\) mm; a label of another scan\? "
      r".*save it with the image's header \(affine\)\.", str(info.value)), str(info.value)
  assert not list((tmp_path / "tfds").glob("nifti/*"))


def test_a_label_on_its_image_s_grid_passes_whichever_header_form_holds_it(tmp_path):
  # An oblique grid near a half turn about x: the image keeps it as float32
  # rows (sform), the label as a float32 quaternion (qform), which nibabel
  # reads back 1e-3 mm off, about 8,400 float32 steps, yet within
  # 4·sqrt(3·2⁻²³) = 2.39e-3 mm.
  from scipy.spatial.transform import Rotation
  affine = np.eye(4)
  affine[:3, :3] = Rotation.from_rotvec([np.pi - 1e-3, 0, 0]).as_matrix()
  affine[:3, 3] = (-10.0, 12.0, 8.0)
  image, label = synthetic_volume(np.random.default_rng(16))
  as_sform = nib.Nifti1Image(image, affine)
  as_sform.header.set_qform(None, code=0)
  as_qform = nib.Nifti1Image(label, None)
  as_qform.header.set_qform(affine, code=1)
  as_qform.header.set_sform(None, code=0)
  nib.save(as_sform, str(tmp_path / "s0.nii.gz"))
  nib.save(as_qform, str(tmp_path / "s0_seg.nii.gz"))
  stored = [nib.load(str(tmp_path / n)).affine for n in ("s0.nii.gz", "s0_seg.nii.gz")]
  difference = np.abs(stored[0] - stored[1]).max()
  assert 1000 * EPS32 < difference < TOLERANCE_1MM + 2 * EPS32 * 12, difference
  nifti_headers.check_header(str(tmp_path), "s0.nii.gz", "s0_seg.nii.gz", "axial")


def test_planes_as_wide_as_the_minimum_are_kept(tmp_path):
  # Coronal planes of an (X, Y, Z) RAS volume are X×Z: Z = 8 is just wide
  # enough, Z = 7 a strip.
  from hyperrecon_jax.data import slicing
  assert slicing.MIN_PLANE == 8
  image, _ = synthetic_volume(np.random.default_rng(19))
  for z in (8, 7):
    save_nifti(image[..., :z], tmp_path / f"z{z}.nii.gz")
  nifti_headers.check_header(str(tmp_path), "z8.nii.gz", None, "coronal")
  with pytest.raises(hr.data.DataError, match=r"z7\.nii\.gz: has RAS shape \(20, 24, 7\), so "
                                              r"its coronal planes are 20×7 voxels, narrower "
                                              r"than 8"):
    nifti_headers.check_header(str(tmp_path), "z7.nii.gz", None, "coronal")
